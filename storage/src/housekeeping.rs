//! Housekeeping: merge a partition's small files, delete what nothing references.
//!
//! One cycle (`Storage::housekeep`), skipped entirely while paused:
//! 1. merge: in each partition with at least `merge_min_files` files smaller
//!    than `small_file_bytes`, rewrite those files as one and commit the swap
//!    (only if none of them changed meanwhile);
//! 2. collect: every data file on disk that is neither in a table's commit,
//!    nor being written, nor in a pinned snapshot is an orphan; an orphan is
//!    deleted once it has stayed unreferenced for `orphan_grace_micros`, so
//!    queries planned against an older commit can finish. Dropped tables in
//!    `db/.trash/` go the same way, but only when no snapshot is pinned.
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{IoContext, Result};
use crate::paths::{DATA_EXT, TRASH_DIR};
use crate::storage::Storage;
use crate::table::Table;
use crate::writer::read_data_file;

/// Tunables of the housekeeping cycle.
#[derive(Debug, Clone)]
pub struct HousekeepingSettings {
    /// How long an unreferenced file is kept before deletion.
    pub orphan_grace_micros: i64,
    /// A partition is merged once it holds this many small files.
    pub merge_min_files: usize,
    /// Files at least this big are left alone by merges.
    pub small_file_bytes: u64,
}

impl Default for HousekeepingSettings {
    fn default() -> Self {
        Self {
            orphan_grace_micros: 60_000_000,
            merge_min_files: 4,
            small_file_bytes: 64 << 20,
        }
    }
}

/// What one cycle did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HousekeepingReport {
    pub paused: bool,
    pub partitions_merged: usize,
    pub files_deleted: usize,
    pub bytes_deleted: u64,
}

impl Storage {
    /// Runs one housekeeping cycle (blocking I/O: call from a blocking thread).
    pub fn housekeep(&self) -> Result<HousekeepingReport> {
        let mut report = HousekeepingReport::default();
        if self.housekeeping_paused() || self.shared().writes.is_held() {
            report.paused = true;
            return Ok(report);
        }
        let tables: Vec<Arc<Table>> = self.read_tables().values().cloned().collect();
        for t in &tables {
            // One table's trouble (say, an unreadable file) must not stop the others.
            match self.merge_table(t) {
                Ok(n) => report.partitions_merged += n,
                Err(e) => tracing::warn!("housekeeping: merging table '{}' failed: {e}", t.name()),
            }
        }
        if self.housekeeping_paused() {
            report.paused = true;
            return Ok(report);
        }
        self.trash_dropped_folders()?;
        let now = self.clock.now_micros();
        let mut candidates = Vec::new();
        for t in &tables {
            candidates.extend(self.orphans_of(t)?);
        }
        if self.pins.lock().unwrap_or_else(|p| p.into_inner()).is_empty() {
            candidates.extend(trash_entries(&self.db_dir().join(TRASH_DIR))?);
        }
        let mut orphans = self.orphans.lock().unwrap_or_else(|p| p.into_inner());
        let current: HashSet<&PathBuf> = candidates.iter().collect();
        orphans.retain(|p, _| current.contains(p));
        for path in &candidates {
            let first_seen = *orphans.entry(path.clone()).or_insert(now);
            if now - first_seen < self.settings.orphan_grace_micros {
                continue;
            }
            let bytes = size_of(path);
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(path)
            } else {
                std::fs::remove_file(path)
            };
            match removed {
                Ok(()) => {
                    report.files_deleted += 1;
                    report.bytes_deleted += bytes;
                    orphans.remove(path);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    orphans.remove(path);
                }
                Err(e) => tracing::warn!("housekeeping could not delete {}: {e}", path.display()),
            }
        }
        Ok(report)
    }

    /// Merges every partition of `table` that has enough small files; returns how many.
    fn merge_table(&self, table: &Table) -> Result<usize> {
        let commit = table.commit();
        let mut by_partition: std::collections::BTreeMap<&str, Vec<&crate::DataFile>> = Default::default();
        for f in commit.files.iter().filter(|f| f.bytes < self.settings.small_file_bytes) {
            by_partition.entry(f.partition.as_str()).or_default().push(f);
        }
        let mut merged = 0;
        for (partition, files) in by_partition {
            if files.len() < self.settings.merge_min_files || self.housekeeping_paused() {
                continue;
            }
            let mut batches = Vec::new();
            for f in &files {
                batches.extend(read_data_file(table.meta(), &table.file_path(f))?);
            }
            let combined = arrow::compute::concat_batches(&table.schema(), &batches).map_err(|source| {
                crate::StorageError::Arrow {
                    table: table.name().to_string(),
                    source,
                }
            })?;
            let sorted = crate::writer::split_by_partition(table.meta(), &combined)?;
            let Some(rows) = sorted.get(partition) else {
                continue;
            };
            let new_file = table.write_pending_file(partition, std::slice::from_ref(rows))?;
            let replaced: HashSet<&str> = files.iter().map(|f| f.path.as_str()).collect();
            let result = table.change(|c| {
                let live: HashSet<&str> = c.files.iter().map(|f| f.path.as_str()).collect();
                if !replaced.iter().all(|p| live.contains(p)) {
                    // Truncated or dropped meanwhile: keep the newer state; the merged file becomes an orphan.
                    return Ok(c.files.clone());
                }
                let mut next: Vec<_> = c
                    .files
                    .iter()
                    .filter(|f| !replaced.contains(f.path.as_str()))
                    .cloned()
                    .collect();
                next.push(new_file.clone());
                Ok(next)
            });
            table.remove_pending([new_file.path.as_str()]);
            if result?.files.iter().any(|f| f.path == new_file.path) {
                merged += 1;
            }
        }
        Ok(merged)
    }
}

impl Storage {
    /// Data files in a table folder that nothing references.
    ///
    /// Order matters: list the folder first, then read pins, pending writes and
    /// the commit. A file is registered as pending before it is created and
    /// leaves pending only after a commit names it, and pins are taken
    /// atomically with their snapshot, so a file seen on disk is in at least
    /// one of the three sets read afterwards unless it is truly unreferenced.
    fn orphans_of(&self, table: &Table) -> Result<Vec<PathBuf>> {
        let on_disk = list_data_files(table.dir())?;
        let pinned: HashSet<(String, String)> = {
            let pins = self.pins.lock().unwrap_or_else(|p| p.into_inner());
            pins.values().flat_map(|s| s.file_keys()).collect()
        };
        let pending = table.pending_files();
        let live: HashSet<String> = table.commit().files.iter().map(|f| f.path.clone()).collect();
        let name = table.name().to_string();
        Ok(on_disk
            .into_iter()
            .filter(|rel| {
                !live.contains(rel) && !pending.contains(rel) && !pinned.contains(&(name.clone(), rel.clone()))
            })
            .map(|rel| table.dir().join(rel))
            .collect())
    }
}

/// Relative paths (`<partition>/<file>.parquet`) of the data files in a table folder.
fn list_data_files(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(out); // dropped meanwhile
    };
    for part in entries.flatten() {
        let part_name = part.file_name().to_string_lossy().to_string();
        if part_name.starts_with(['.', '_']) || !part.path().is_dir() {
            continue;
        }
        for f in std::fs::read_dir(part.path())
            .ctx(|| format!("listing {}", part.path().display()))?
            .flatten()
        {
            let file_name = f.file_name().to_string_lossy().to_string();
            if !file_name.ends_with(DATA_EXT) {
                continue;
            }
            out.push(format!("{part_name}/{file_name}"));
        }
    }
    Ok(out)
}

fn trash_entries(trash: &Path) -> Result<Vec<PathBuf>> {
    match std::fs::read_dir(trash) {
        Ok(entries) => Ok(entries.flatten().map(|e| e.path()).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(crate::StorageError::Io {
            context: format!("listing {}", trash.display()),
            source: e,
        }),
    }
}

fn size_of(path: &Path) -> u64 {
    if path.is_dir() {
        std::fs::read_dir(path)
            .map(|es| es.flatten().map(|e| size_of(&e.path())).sum())
            .unwrap_or(0)
    } else {
        std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
    }
}
