//! The set of tables under `ROOT/db/`, their creation and removal, snapshots and pins.
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::atomic::{create_dir_durable, fsync_dir, write_atomic, write_durable};
use crate::checkpoint::move_to_trash;
use crate::clock::Clock;
use crate::commit::Commit;
use crate::error::{IoContext, Result, StorageError};
use crate::housekeeping::HousekeepingSettings;
use crate::journal::{ChangeKind, Journal, JournalEntry};
use crate::meta::TableMeta;
use crate::paths::{
    ARRIVING_FILE, COMMIT_FILE, DATA_ID_FILE, DROPPED_MARKER, META_FILE, STAGING_PREFIX, TRASH_DIR, db_dir,
    validate_table_name,
};
use crate::snapshot::{Pin, PinId, Pins, Snapshot, TableSnapshot};
use crate::table::{Shared, Table};

#[derive(Debug)]
pub struct Storage {
    root: PathBuf,
    db_dir: PathBuf,
    data_id: String,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) settings: HousekeepingSettings,
    pub(crate) tables: RwLock<BTreeMap<String, Arc<Table>>>,
    shared: Arc<Shared>,
    pub(crate) pins: Pins,
    next_pin: AtomicU64,
    pub(crate) paused: AtomicUsize,
    /// Unreferenced paths and when housekeeping first saw them (micros).
    pub(crate) orphans: Mutex<HashMap<PathBuf, i64>>,
}

impl Storage {
    /// Opens (or creates) the database under `root`, loading every table.
    ///
    /// Every file a commit names must exist. A root copied by hand during a
    /// checkpoint may hold a commit newer than its data files; then the table's
    /// state recorded in `checkpoint` (whose files are pinned, so present) is
    /// used instead, with a warning. Otherwise a missing file is an error.
    pub fn open(
        root: &Path,
        clock: Arc<dyn Clock>,
        settings: HousekeepingSettings,
        checkpoint: Option<&Snapshot>,
    ) -> Result<Arc<Self>> {
        let db = db_dir(root);
        create_dir_durable(&db)?;
        let data_id = load_or_create_data_id(&db)?;
        let shared = Arc::new(Shared::new(clock.clone()));
        let arriving = read_arriving(&db)?;
        let mut tables = BTreeMap::new();
        for entry in std::fs::read_dir(&db).ctx(|| format!("listing {}", db.display()))? {
            let entry = entry.ctx(|| format!("listing {}", db.display()))?;
            let name = entry.file_name().to_string_lossy().to_string();
            let path = entry.path();
            if name.starts_with(STAGING_PREFIX) {
                // A CREATE TABLE that never finished: never visible, safe to remove.
                std::fs::remove_dir_all(&path).ctx(|| format!("removing unfinished {}", path.display()))?;
                continue;
            }
            if name.starts_with('.') || !path.is_dir() || path.join(DROPPED_MARKER).exists() {
                continue;
            }
            let table = load_table(&path, shared.clone(), checkpoint, &arriving)?;
            tables.insert(table.name().to_string(), Arc::new(table));
        }
        Ok(Arc::new(Self {
            root: root.to_path_buf(),
            db_dir: db,
            data_id,
            clock,
            settings,
            tables: RwLock::new(tables),
            shared,
            pins: Pins::default(),
            next_pin: AtomicU64::new(1),
            paused: AtomicUsize::new(0),
            orphans: Mutex::new(HashMap::new()),
        }))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn db_dir(&self) -> &Path {
        &self.db_dir
    }

    /// The UUID naming this database (`ROOT/db/.data_id`).
    pub fn data_id(&self) -> &str {
        &self.data_id
    }

    pub(crate) fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    pub fn table(&self, name: &str) -> Option<Arc<Table>> {
        self.read_tables().get(name).cloned()
    }

    pub fn table_names(&self) -> Vec<String> {
        self.read_tables().keys().cloned().collect()
    }

    pub(crate) fn read_tables(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Table>>> {
        self.tables.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_tables(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<Table>>> {
        self.tables.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes every later commit wait (reads go on) until [`Storage::release_writes`]:
    /// for a restored database served before its files are durable.
    pub fn hold_writes(&self) {
        self.shared.writes.hold();
    }

    /// Lets held commits go on, or with `Err(reason)` refuses them from now on.
    pub fn release_writes(&self, outcome: std::result::Result<(), String>) {
        self.shared.writes.release(outcome);
    }

    /// Whether commits are accepted now (health checks).
    pub fn write_state(&self) -> crate::gate::WriteState {
        self.shared.writes.current()
    }

    /// Waits until commits are allowed; for changes made outside the tables (a checkpoint).
    pub fn wait_writable(&self) -> Result<()> {
        self.shared.writes.wait()
    }

    /// Creates a table durably. With `if_not_exists`, an existing table is returned unchanged.
    pub fn create_table(&self, meta: TableMeta, if_not_exists: bool) -> Result<Arc<Table>> {
        meta.validate()?;
        self.wait_writable()?;
        let mut tables = self.write_tables();
        if let Some(t) = tables.get(&meta.name) {
            return if if_not_exists {
                Ok(t.clone())
            } else {
                Err(StorageError::TableExists(meta.name.clone()))
            };
        }
        let dir = self.db_dir.join(&meta.name);
        if dir.join(DROPPED_MARKER).exists() {
            return Err(StorageError::DroppedDuringCheckpoint(meta.name.clone()));
        }
        if dir.exists() {
            return Err(StorageError::TableExists(meta.name.clone()));
        }
        // Build in a staging folder, then one rename makes the table appear whole.
        let staging = self
            .db_dir
            .join(format!("{STAGING_PREFIX}{}", uuid::Uuid::now_v7().simple()));
        create_dir_durable(&staging)?;
        write_meta(&staging.join(META_FILE), &meta)?;
        Commit::empty().write(&staging.join(COMMIT_FILE))?;
        self.shared.published().record(
            self.clock.as_ref(),
            |micros| JournalEntry {
                meta: Some(meta.clone()),
                ..JournalEntry::new(micros, &meta.name, ChangeKind::Create, 0)
            },
            &staging,
            || {
                std::fs::rename(&staging, &dir)
                    .ctx(|| format!("renaming {} to {}", staging.display(), dir.display()))?;
                fsync_dir(&self.db_dir)
            },
        )?;
        let table = Arc::new(Table::new(meta.clone(), dir, Commit::empty(), self.shared.clone()));
        tables.insert(meta.name.clone(), table.clone());
        Ok(table)
    }

    /// Drops a table. Without pins its folder moves to `db/.trash/` at once and is
    /// deleted by housekeeping after the grace period. While a snapshot is pinned
    /// (a checkpoint copy may be running) nothing is moved: a `_dropped` marker
    /// hides the table, and housekeeping moves the folder once no pin remains.
    /// Returns false if the table did not exist.
    pub fn drop_table(&self, name: &str, if_exists: bool) -> Result<bool> {
        self.wait_writable()?;
        let mut tables = self.write_tables();
        let Some(table) = tables.get(name).cloned() else {
            return if if_exists {
                Ok(false)
            } else {
                Err(StorageError::TableNotFound(name.to_string()))
            };
        };
        table.mark_dropped();
        let pins = self.pins.lock().unwrap_or_else(|p| p.into_inner());
        self.shared.published().record(
            self.clock.as_ref(),
            |micros| JournalEntry::new(micros, name, ChangeKind::Drop, 0),
            table.dir(),
            || {
                if pins.is_empty() {
                    let trash = self.db_dir.join(TRASH_DIR);
                    create_dir_durable(&trash)?;
                    move_to_trash(table.dir(), &trash, name)?;
                    fsync_dir(&self.db_dir)
                } else {
                    let marker = table.dir().join(DROPPED_MARKER);
                    write_durable(&marker, b"")?;
                    fsync_dir(table.dir())
                }
            },
        )?;
        tables.remove(name);
        Ok(true)
    }

    /// Moves folders of tables dropped while pinned to the trash, once nothing is pinned.
    pub(crate) fn trash_dropped_folders(&self) -> Result<()> {
        let tables = self.write_tables();
        if !self.pins.lock().unwrap_or_else(|p| p.into_inner()).is_empty() {
            return Ok(());
        }
        for entry in std::fs::read_dir(&self.db_dir)
            .ctx(|| format!("listing {}", self.db_dir.display()))?
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().to_string();
            if entry.path().join(DROPPED_MARKER).exists() && !tables.contains_key(&name) {
                let trash = self.db_dir.join(TRASH_DIR);
                create_dir_durable(&trash)?;
                move_to_trash(&entry.path(), &trash, &name)?;
                fsync_dir(&self.db_dir)?;
            }
        }
        Ok(())
    }

    /// The committed state of every table at one instant.
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot_of(&self.read_tables())
    }

    fn snapshot_of(&self, tables: &BTreeMap<String, Arc<Table>>) -> Snapshot {
        let mut published = self.shared.published();
        Snapshot {
            // Every change published before has a smaller instant, every later one a larger.
            taken_at_micros: published.tick(self.clock.as_ref()),
            tables: tables
                .iter()
                .map(|(name, t)| {
                    let snap = TableSnapshot {
                        meta: t.meta().clone(),
                        commit: t.commit(),
                    };
                    (name.clone(), snap)
                })
                .collect(),
        }
    }

    /// Takes a snapshot of all tables and pins it in one step, so no file of it
    /// can be deleted between the two. Locks in the order DROP TABLE takes
    /// them (tables, then pins), so the two never wait on each other.
    pub fn pin_current(&self) -> (Pin, Snapshot) {
        let tables = self.read_tables();
        let mut pins = self.pins.lock().unwrap_or_else(|p| p.into_inner());
        let snapshot = self.snapshot_of(&tables);
        let id = PinId(self.next_pin.fetch_add(1, Ordering::SeqCst));
        pins.insert(id, snapshot.clone());
        (Pin::new(id, self.pins.clone()), snapshot)
    }

    /// Pins a snapshot recorded earlier (e.g. reloaded after a restart) while the returned value lives.
    pub fn pin(&self, snapshot: Snapshot) -> Pin {
        let id = PinId(self.next_pin.fetch_add(1, Ordering::SeqCst));
        self.pins.lock().unwrap_or_else(|p| p.into_inner()).insert(id, snapshot);
        Pin::new(id, self.pins.clone())
    }

    /// Stops merges and deletions until a matching `resume_housekeeping`.
    pub fn pause_housekeeping(&self) {
        self.paused.fetch_add(1, Ordering::SeqCst);
    }

    pub fn resume_housekeeping(&self) {
        let _ = self
            .paused
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    }

    /// Every file [`ARRIVING_FILE`] listed has arrived (or is no longer
    /// committed): from now on a missing file is an error again.
    pub fn all_arrived(&self) -> Result<()> {
        let path = self.db_dir.join(ARRIVING_FILE);
        match std::fs::remove_file(&path) {
            Ok(()) => fsync_dir(&self.db_dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).ctx(|| format!("removing {}", path.display())),
        }
    }

    pub fn housekeeping_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst) > 0
    }

    /// Journals every change from now on, for commit shipping (see `journal.rs`):
    /// loads the entries not yet shipped, dropping that of a change a crash cut
    /// short. Call before the database takes changes.
    pub fn enable_journal(&self) -> Result<()> {
        let versions = self
            .read_tables()
            .iter()
            .map(|(name, t)| (name.clone(), t.commit().version))
            .collect();
        let journal = Journal::open(&self.db_dir, &versions)?;
        let mut published = self.shared.published();
        if let Some(newest) = journal.newest() {
            published.tick_after(newest);
        }
        published.journal = Some(journal);
        Ok(())
    }

    /// Keeps every later instant after `micros` (the end of a shipped log,
    /// which may be ahead of this database's clock after a restore or rollback).
    pub fn instants_after(&self, micros: i64) {
        self.shared.published().tick_after(micros);
    }

    /// Removes a journal left from when commits were shipped: with shipping
    /// off, changes are not journaled, so it no longer continues any log.
    pub fn discard_journal(&self) -> Result<()> {
        crate::journal::discard(&self.db_dir)
    }

    /// The journaled changes not yet shipped, oldest first (empty without a journal).
    pub fn journal_pending(&self) -> Vec<JournalEntry> {
        self.shared
            .published()
            .journal
            .as_ref()
            .map(Journal::pending)
            .unwrap_or_default()
    }

    /// How many journaled changes wait to be shipped, and the instant of the oldest.
    pub fn journal_backlog(&self) -> (usize, Option<i64>) {
        match self.shared.published().journal.as_ref() {
            Some(j) => j.backlog(),
            None => (0, None),
        }
    }

    /// Whether the journal continues, without a gap, a log whose last shipped
    /// change was published at `micros`.
    pub fn journal_continues(&self, micros: i64) -> bool {
        self.shared
            .published()
            .journal
            .as_ref()
            .is_some_and(|j| j.continues(micros))
    }

    /// Where the file with `hash` that a pending entry adds can be read.
    pub fn journal_file(&self, hash: &str) -> Option<PathBuf> {
        self.shared.published().journal.as_ref().map(|j| j.file(hash))
    }

    /// Records that every journaled change up to `micros` is in the store.
    pub fn journal_shipped(&self, micros: i64) {
        if let Some(journal) = self.shared.published().journal.as_mut() {
            journal.shipped(micros);
        }
    }
}

fn load_or_create_data_id(db: &Path) -> Result<String> {
    let path = db.join(DATA_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(s) => {
            let id = s.trim().to_string();
            uuid::Uuid::parse_str(&id).map_err(|e| StorageError::Corrupt {
                path: path.clone(),
                reason: format!("not a UUID: {e}"),
            })?;
            Ok(id)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = uuid::Uuid::new_v4().to_string();
            write_atomic(&path, id.as_bytes())?;
            Ok(id)
        }
        Err(e) => Err(StorageError::Io {
            context: format!("reading {}", path.display()),
            source: e,
        }),
    }
}

pub(crate) fn write_meta(path: &Path, meta: &TableMeta) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(meta).map_err(|e| StorageError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    write_atomic(path, &bytes)
}

/// Reads a table folder's metadata and commit record.
pub(crate) fn read_table_files(dir: &Path) -> Result<(TableMeta, Commit)> {
    let meta_path = dir.join(META_FILE);
    let bytes = std::fs::read(&meta_path).ctx(|| format!("reading {}", meta_path.display()))?;
    let meta: TableMeta = serde_json::from_slice(&bytes).map_err(|e| StorageError::Corrupt {
        path: meta_path.clone(),
        reason: e.to_string(),
    })?;
    meta.validate().map_err(|e| StorageError::Corrupt {
        path: meta_path.clone(),
        reason: e.to_string(),
    })?;
    let folder = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    validate_table_name(&folder)?;
    if folder != meta.name {
        return Err(StorageError::Corrupt {
            path: meta_path,
            reason: format!("names table '{}' but lives in folder '{folder}'", meta.name),
        });
    }
    let commit = Commit::read(&dir.join(COMMIT_FILE))?;
    Ok((meta, commit))
}

/// The files [`ARRIVING_FILE`] says may be absent, as `(table, path)`.
fn read_arriving(db: &Path) -> Result<HashSet<(String, String)>> {
    let path = db.join(ARRIVING_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashSet::new()),
        Err(e) => return Err(e).ctx(|| format!("reading {}", path.display())),
    };
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| match l.split_once('\t') {
            Some((t, p)) => Ok((t.to_string(), p.to_string())),
            None => Err(StorageError::Corrupt {
                path: path.clone(),
                reason: format!("line '{l}' is not table<TAB>path"),
            }),
        })
        .collect()
}

fn load_table(
    dir: &Path,
    shared: Arc<Shared>,
    checkpoint: Option<&Snapshot>,
    arriving: &HashSet<(String, String)>,
) -> Result<Table> {
    let (meta, mut commit) = read_table_files(dir)?;
    let absent =
        |f: &crate::DataFile| !dir.join(&f.path).is_file() && !arriving.contains(&(meta.name.clone(), f.path.clone()));
    if let Some(missing) = commit.files.iter().find(|f| absent(f)) {
        let recorded = checkpoint
            .and_then(|s| s.tables.get(&meta.name))
            .filter(|t| t.meta.as_ref() == &meta && t.commit.files.iter().all(|f| dir.join(&f.path).is_file()));
        match recorded {
            Some(t) => {
                tracing::warn!(
                    "table '{}': data file {} is missing (a copy taken during a checkpoint?); \
                     using the table's state recorded at CHECKPOINT CREATE",
                    meta.name,
                    missing.path
                );
                commit = t.commit.as_ref().clone();
            }
            None => {
                return Err(StorageError::Corrupt {
                    path: dir.join(&missing.path),
                    reason: format!(
                        "table '{}': a committed data file is missing; if this root is a copy taken during \
                         a checkpoint, create an empty file ROOT/_restore to roll it back to the checkpoint",
                        meta.name
                    ),
                });
            }
        }
    }
    Ok(Table::new(meta, dir.to_path_buf(), commit, shared))
}
