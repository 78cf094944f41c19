//! Checkpoint records and the `_restore` rollback, for people who copy the root themselves.
//!
//! `CHECKPOINT CREATE` writes `ROOT/.checkpoint/checkpoint.json`: the data id
//! and a [`Snapshot`] (every table's metadata and commit record) at one
//! instant. Its files are pinned and housekeeping is paused, so a copy of the
//! root taken while the record exists holds every file the record names.
//!
//! Rolling a copy back ([`rollback_to_checkpoint`]), offline, before the database opens:
//! 1. validate: for every recorded table find a folder holding all its recorded
//!    files — `db/<table>/` (with a `_dropped` marker if it was dropped during the
//!    checkpoint), or `db/.trash/<table>-<id>/` —
//!    and fail, changing nothing, if any table cannot be found whole;
//! 2. apply: move those folders into place, rewrite their metadata and commit
//!    record as recorded, and move tables created later to `db/.trash/`.
//!
//! Files written after the checkpoint stay on disk unreferenced and are deleted
//! by housekeeping. Applying twice gives the same result, so a crash midway is
//! repaired by running it again.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::atomic::{create_dir_durable, fsync_dir, write_atomic};
use crate::commit::Commit;
use crate::error::{IoContext, Result, StorageError};
use crate::paths::{COMMIT_FILE, DATA_ID_FILE, DROPPED_MARKER, META_FILE, TRASH_DIR, db_dir};
use crate::snapshot::Snapshot;

const CHECKPOINT_DIR: &str = ".checkpoint";
const RECORD_FILE: &str = "checkpoint.json";
const RECORD_FORMAT_VERSION: u32 = 1;

/// What `CHECKPOINT CREATE` records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointRecord {
    pub format_version: u32,
    pub data_id: String,
    pub started_at_micros: i64,
    pub snapshot: Snapshot,
}

impl CheckpointRecord {
    pub fn new(data_id: &str, snapshot: Snapshot) -> Self {
        Self {
            format_version: RECORD_FORMAT_VERSION,
            data_id: data_id.to_string(),
            started_at_micros: snapshot.taken_at_micros,
            snapshot,
        }
    }
}

fn record_path(root: &Path) -> PathBuf {
    root.join(CHECKPOINT_DIR).join(RECORD_FILE)
}

/// Writes the record durably (the checkpoint exists once this returns).
pub fn write_checkpoint(root: &Path, record: &CheckpointRecord) -> Result<()> {
    let path = record_path(root);
    create_dir_durable(&root.join(CHECKPOINT_DIR))?;
    let bytes = serde_json::to_vec(record).map_err(|e| StorageError::Corrupt {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    write_atomic(&path, &bytes)
}

/// Reads the record, if a checkpoint is in progress.
pub fn read_checkpoint(root: &Path) -> Result<Option<CheckpointRecord>> {
    let path = record_path(root);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(StorageError::Io {
                context: format!("reading {}", path.display()),
                source: e,
            });
        }
    };
    let record: CheckpointRecord = serde_json::from_slice(&bytes).map_err(|e| StorageError::Corrupt {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    if record.format_version != RECORD_FORMAT_VERSION {
        return Err(StorageError::Corrupt {
            path,
            reason: format!("unsupported checkpoint format version {}", record.format_version),
        });
    }
    Ok(Some(record))
}

/// Ends checkpoint mode on disk.
pub fn remove_checkpoint(root: &Path) -> Result<()> {
    let dir = root.join(CHECKPOINT_DIR);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => fsync_dir(root),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StorageError::Io {
            context: format!("removing {}", dir.display()),
            source: e,
        }),
    }
}

/// What a rollback did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RollbackReport {
    pub tables_restored: usize,
    pub tables_brought_back: Vec<String>,
    pub tables_removed: Vec<String>,
    pub rows: u64,
}

/// Rolls every table under `root` back to `record` (see module doc). Offline only.
pub fn rollback_to_checkpoint(root: &Path, record: &CheckpointRecord) -> Result<RollbackReport> {
    let db = db_dir(root);
    let data_id_path = db.join(DATA_ID_FILE);
    let data_id = std::fs::read_to_string(&data_id_path).ctx(|| format!("reading {}", data_id_path.display()))?;
    if data_id.trim() != record.data_id {
        return Err(StorageError::Corrupt {
            path: record_path(root),
            reason: format!(
                "checkpoint belongs to database {} but this root holds database {}",
                record.data_id,
                data_id.trim()
            ),
        });
    }
    let trash = db.join(TRASH_DIR);
    // 1. validate: find every table whole before touching anything.
    let mut sources: BTreeMap<&str, PathBuf> = BTreeMap::new();
    for (name, table) in &record.snapshot.tables {
        let mut candidates = vec![db.join(name)];
        candidates.extend(trash_folders_of(&trash, name)?);
        let found = candidates.into_iter().find(|dir| holds_all(dir, &table.commit));
        match found {
            Some(dir) => {
                sources.insert(name, dir);
            }
            None => {
                let example = table.commit.files.first().map(|f| f.path.as_str()).unwrap_or("");
                return Err(StorageError::Corrupt {
                    path: db.join(name),
                    reason: format!(
                        "table '{name}': files recorded at CHECKPOINT CREATE are missing from this copy \
                         (for example '{example}'); was the copy taken while the checkpoint was in progress?"
                    ),
                });
            }
        }
    }
    // 2. apply. The tables go back in time, so the journal no longer
    // continues any shipped log: the next shipping starts from a full state.
    crate::journal::discard(&db)?;
    let mut report = RollbackReport::default();
    create_dir_durable(&trash)?;
    for entry in std::fs::read_dir(&db)
        .ctx(|| format!("listing {}", db.display()))?
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with('.') || !entry.path().is_dir() {
            continue;
        }
        let keep = sources.get(name.as_str()).is_some_and(|src| *src == entry.path());
        if !keep {
            move_to_trash(&entry.path(), &trash, &name)?;
            if !record.snapshot.tables.contains_key(&name) {
                report.tables_removed.push(name);
            }
        }
    }
    for (name, table) in &record.snapshot.tables {
        let dest = db.join(name);
        let src = &sources[name.as_str()];
        if *src != dest {
            std::fs::rename(src, &dest).ctx(|| format!("moving {} back to {}", src.display(), dest.display()))?;
            fsync_dir(&trash)?;
            report.tables_brought_back.push(name.clone());
        }
        let meta = serde_json::to_vec_pretty(table.meta.as_ref()).map_err(|e| StorageError::Corrupt {
            path: dest.join(META_FILE),
            reason: e.to_string(),
        })?;
        write_atomic(&dest.join(META_FILE), &meta)?;
        table.commit.write(&dest.join(COMMIT_FILE))?;
        let marker = dest.join(DROPPED_MARKER);
        if marker.exists() {
            std::fs::remove_file(&marker).ctx(|| format!("removing {}", marker.display()))?;
            // Durably: a marker back after a power cut would drop the table again.
            fsync_dir(&dest)?;
            report.tables_brought_back.push(name.clone());
        }
        report.tables_restored += 1;
        report.rows += table.commit.rows();
    }
    fsync_dir(&db)?;
    Ok(report)
}

fn holds_all(dir: &Path, commit: &Commit) -> bool {
    dir.is_dir() && commit.files.iter().all(|f| dir.join(&f.path).is_file())
}

/// Trash folders that once were table `name`, newest first.
fn trash_folders_of(trash: &Path, name: &str) -> Result<Vec<PathBuf>> {
    let prefix = format!("{name}-");
    let mut found: Vec<PathBuf> = match std::fs::read_dir(trash) {
        Ok(es) => es
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .strip_prefix(&prefix)
                    .is_some_and(|id| !id.contains('-'))
            })
            .map(|e| e.path())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            return Err(StorageError::Io {
                context: format!("listing {}", trash.display()),
                source: e,
            });
        }
    };
    // Trash ids are UUIDv7: lexical order is time order.
    found.sort();
    found.reverse();
    Ok(found)
}

/// Moves a table's folder into the trash, durably on the trash's side (the
/// caller syncs the folder it came from).
pub(crate) fn move_to_trash(dir: &Path, trash: &Path, name: &str) -> Result<PathBuf> {
    let dest = trash.join(format!("{name}-{}", uuid::Uuid::now_v7().simple()));
    std::fs::rename(dir, &dest).ctx(|| format!("moving {} to {}", dir.display(), dest.display()))?;
    fsync_dir(trash)?;
    Ok(dest)
}
