//! Building tables from files that come from elsewhere (a backup) and publishing
//! them whole: one table renamed into place beside the running ones, or a whole
//! `db/` folder built beside the root and renamed into place in one step.
//!
//! The caller writes each data file where [`TableBuild::file_path`] says (after
//! checking its content hash), then [`TableBuild::add_file`] checks it is the
//! Parquet file the record describes. Nothing is visible until the final rename
//! or commit, so a failure or crash never leaves a half-restored table.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::atomic::{create_dir_durable, fsync_dir, sync_filesystem, write_atomic};
use crate::commit::{COMMIT_FORMAT_VERSION, Commit, DataFile};
use crate::error::{IoContext, Result, StorageError};
use crate::journal::{ChangeKind, JournalEntry};
use crate::meta::TableMeta;
use crate::paths::{
    ARRIVING_FILE, COMMIT_FILE, DATA_ID_FILE, DROPPED_MARKER, META_FILE, STAGING_PREFIX, check_rel_path, db_dir,
};
use crate::storage::{Storage, write_meta};
use crate::table::Table;
use crate::writer::new_data_file_rel;

/// Where a whole-database restore is built before it is renamed to `ROOT/db`.
pub const RESTORE_STAGING_DIR: &str = ".restore_staging";
/// Where the tables of a failed restore are kept for inspection.
pub const RESTORE_FAILED_DIR: &str = ".restore_failed";
/// Lists the tables of a failed restore and why they failed.
pub const RESTORE_FAILED_FILE: &str = "_restore_failed";
/// Inside a restored `db/`: the restore completed and is durable; removed once its
/// trigger file is gone.
pub const RESTORED_MARKER: &str = ".restored";
/// Inside a restored `db/`: its files may not have reached disk yet. Written
/// durably before the folder is published, removed once the file system is synced,
/// so after a power cut it says the restore must be done again.
pub const UNSYNCED_MARKER: &str = ".restore_unsynced";

/// One table being assembled in a staging folder.
#[derive(Debug)]
pub struct TableBuild {
    meta: TableMeta,
    dir: PathBuf,
    files: Vec<DataFile>,
    /// Paths of files recorded by [`TableBuild::add_absent_file`].
    absent: Vec<String>,
}

impl TableBuild {
    fn new(meta: TableMeta, dir: PathBuf) -> Result<Self> {
        meta.validate()?;
        create_dir_durable(&dir)?;
        Ok(Self {
            meta,
            dir,
            files: Vec::new(),
            absent: Vec::new(),
        })
    }

    pub fn meta(&self) -> &TableMeta {
        &self.meta
    }

    /// Where the data file `file` must be written; refuses records whose path
    /// would leave the table folder or does not sit in its partition's folder.
    pub fn file_path(&self, file: &DataFile) -> Result<PathBuf> {
        file.check_location(&self.meta.name)?;
        let path = self.dir.join(&file.path);
        if let Some(parent) = path.parent() {
            create_dir_durable(parent)?;
        }
        Ok(path)
    }

    /// Records a data file that is not here yet: it arrives later, in its folder
    /// (an instant restore). Only its location is checked; its partition folder
    /// is made now.
    pub fn add_absent_file(&mut self, file: DataFile) -> Result<()> {
        self.file_path(&file)?;
        self.absent.push(file.path.clone());
        self.files.push(file);
        Ok(())
    }

    /// Records a data file written at `file_path(file)`, after checking that it is
    /// a readable Parquet file of the recorded size and row count.
    pub fn add_file(&mut self, file: DataFile) -> Result<()> {
        let path = self.file_path(&file)?;
        check_data_file(&self.meta.name, &path, &file)?;
        self.files.push(file);
        Ok(())
    }

    /// Makes the data files (written without fsync) and their folders durable:
    /// `syncfs` writes every dirty inode of the file system, directories included.
    fn make_files_durable(&self) -> Result<()> {
        sync_filesystem(&self.dir)
    }

    /// Writes `_meta.json` and `_commit.json` (the data files are not synced here).
    fn seal(&mut self, version: u64) -> Result<()> {
        self.files.sort_by(|a, b| a.path.cmp(&b.path));
        write_meta(&self.dir.join(META_FILE), &self.meta)?;
        let commit = Commit {
            format_version: COMMIT_FORMAT_VERSION,
            version,
            files: self.files.clone(),
        };
        commit.write(&self.dir.join(COMMIT_FILE))
    }
}

/// Checks that `path` is a readable Parquet file with the size and rows `file` records.
pub fn check_data_file(table: &str, path: &Path, file: &DataFile) -> Result<()> {
    let f = std::fs::File::open(path).ctx(|| format!("opening {}", path.display()))?;
    let len = f.metadata().ctx(|| format!("reading {}", path.display()))?.len();
    let corrupt = |reason: String| StorageError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    if len != file.bytes {
        return Err(corrupt(format!("{len} bytes, expected {}", file.bytes)));
    }
    let reader = parquet::file::reader::SerializedFileReader::new(f).map_err(|source| StorageError::Parquet {
        table: table.to_string(),
        path: path.to_path_buf(),
        source,
    })?;
    let rows = parquet::file::reader::FileReader::metadata(&reader)
        .file_metadata()
        .num_rows();
    if u64::try_from(rows).ok() != Some(file.rows) {
        return Err(corrupt(format!("{rows} rows, expected {}", file.rows)));
    }
    Ok(())
}

/// How a table restored online is published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Install {
    /// As a new table; an existing table of that name is an error.
    Create,
    /// Replacing an existing table of the same definition in one commit (readers
    /// see the old or the new files, never a mix): every partition, or only the
    /// listed ones. A missing table is created.
    Replace { only_partitions: Option<BTreeSet<String>> },
}

impl Storage {
    /// A staging folder for a table restored while the database runs
    /// (left-overs are removed at the next start).
    pub fn begin_table_build(&self, meta: TableMeta) -> Result<TableBuild> {
        let staging = self
            .db_dir()
            .join(format!("{STAGING_PREFIX}{}", uuid::Uuid::now_v7().simple()));
        TableBuild::new(meta, staging)
    }

    /// Publishes a built table; returns it. On error the staging folder is removed
    /// and any existing table is unchanged.
    pub fn install_table(&self, mut build: TableBuild, how: Install) -> Result<Arc<Table>> {
        let staging = build.dir.clone();
        let result = self.install(&mut build, how);
        if staging.exists() {
            let _ = std::fs::remove_dir_all(&staging);
        }
        result
    }

    fn install(&self, build: &mut TableBuild, how: Install) -> Result<Arc<Table>> {
        self.wait_writable()?;
        let name = build.meta.name.clone();
        let existing = self.table(&name);
        match (how, existing) {
            (Install::Create, Some(_)) => Err(StorageError::TableExists(name)),
            (Install::Replace { only_partitions }, Some(table)) => {
                replace_files(&table, build, only_partitions.as_ref())?;
                Ok(table)
            }
            (_, None) => {
                let mut tables = self.tables.write().unwrap_or_else(|p| p.into_inner());
                let dir = self.db_dir().join(&name);
                if tables.contains_key(&name) || dir.exists() {
                    return Err(if dir.join(DROPPED_MARKER).exists() {
                        StorageError::DroppedDuringCheckpoint(name)
                    } else {
                        StorageError::TableExists(name)
                    });
                }
                build.make_files_durable()?;
                build.seal(1)?;
                self.shared().published().record(
                    self.clock().as_ref(),
                    |micros| JournalEntry {
                        meta: Some(build.meta.clone()),
                        added: build.files.clone(),
                        ..JournalEntry::new(micros, &name, ChangeKind::Create, 1)
                    },
                    &build.dir,
                    || {
                        std::fs::rename(&build.dir, &dir)
                            .ctx(|| format!("renaming {} to {}", build.dir.display(), dir.display()))?;
                        fsync_dir(self.db_dir())
                    },
                )?;
                let commit = Commit::read(&dir.join(COMMIT_FILE))?;
                let table = Arc::new(Table::new(build.meta.clone(), dir, commit, self.shared()));
                tables.insert(name, table.clone());
                Ok(table)
            }
        }
    }
}

/// Moves the built files into `table`'s folder under fresh names and swaps them in with one commit.
fn replace_files(table: &Table, build: &TableBuild, only: Option<&BTreeSet<String>>) -> Result<()> {
    let (have, want) = (table.meta(), &build.meta);
    if have.columns != want.columns || have.timestamp != want.timestamp || have.partition_by != want.partition_by {
        return Err(StorageError::InvalidData {
            table: have.name.clone(),
            reason: "its definition (columns, designated timestamp or partitioning) differs from the backup's; \
                     restore it under another name, or drop it first"
                .into(),
        });
    }
    // The restored files were written without fsync: make them durable first.
    sync_filesystem(&build.dir)?;
    let mut moved = Vec::with_capacity(build.files.len());
    let mut result = Ok(());
    for f in &build.files {
        let rel = new_data_file_rel(&f.partition);
        table.add_pending(&rel);
        let target = table.dir().join(&rel);
        let step = target
            .parent()
            .map_or(Ok(()), create_dir_durable)
            .and_then(|_| {
                std::fs::rename(build.dir.join(&f.path), &target)
                    .ctx(|| format!("moving restored file to {}", target.display()))
            })
            .and_then(|_| target.parent().map_or(Ok(()), fsync_dir));
        moved.push(DataFile { path: rel, ..f.clone() });
        if let Err(e) = step {
            result = Err(e);
            break;
        }
    }
    if result.is_ok() {
        result = table
            .change(|c| {
                let mut files: Vec<DataFile> = c
                    .files
                    .iter()
                    .filter(|f| only.is_some_and(|p| !p.contains(&f.partition)))
                    .cloned()
                    .collect();
                files.extend(moved.iter().cloned());
                Ok(files)
            })
            .map(|_| ());
    }
    // Committed files are referenced now; uncommitted ones become orphans for housekeeping.
    table.remove_pending(moved.iter().map(|f| f.path.as_str()));
    result
}

/// Refuses a whole-database restore into `root` unless its database is empty and
/// no failed restore waits for the operator.
pub fn check_restorable(root: &Path) -> Result<()> {
    check_no_failed_restore(root)?;
    let db = db_dir(root);
    let not_empty =
        db.join(DATA_ID_FILE).exists() || std::fs::read_dir(&db).is_ok_and(|mut entries| entries.next().is_some());
    if not_empty {
        return Err(StorageError::NotEmpty(db));
    }
    Ok(())
}

/// What earlier restores left in a root, asked once at startup.
#[derive(Debug)]
pub enum RestoreState {
    /// Nothing: no restore, or one whose markers are all gone.
    Clean,
    /// A restore failed and left its tables in `dir` and their list in `file`
    /// for the operator; nothing may start until both are removed.
    Failed { dir: PathBuf, file: PathBuf },
    /// A restored database is in place but its files may not have reached disk
    /// (a crash or power cut came before its sync).
    Unsynced(UnsyncedRestore),
    /// A restore completed and is durable; its trigger file and markers may
    /// still be there ([`clear_restore_markers`] once the trigger is gone).
    Completed,
}

/// The state the restore markers of `root` describe.
pub fn restore_state(root: &Path) -> RestoreState {
    let (dir, file) = (root.join(RESTORE_FAILED_DIR), root.join(RESTORE_FAILED_FILE));
    let db = db_dir(root);
    if dir.exists() || file.exists() {
        RestoreState::Failed { dir, file }
    } else if db.join(RESTORED_MARKER).exists() {
        // Written only after the sync, so an unsynced marker beside it is stale.
        RestoreState::Completed
    } else if db.join(UNSYNCED_MARKER).exists() {
        RestoreState::Unsynced(UnsyncedRestore {
            root: root.to_path_buf(),
        })
    } else {
        RestoreState::Clean
    }
}

/// Refuses to go on while the artifacts of a failed restore are in `root`.
fn check_no_failed_restore(root: &Path) -> Result<()> {
    match restore_state(root) {
        RestoreState::Failed { dir, file } => Err(StorageError::FailedRestoreFound { dir, file }),
        _ => Ok(()),
    }
}

/// A whole database being assembled in `ROOT/.restore_staging/db`.
#[derive(Debug)]
pub struct DatabaseBuild {
    root: PathBuf,
    staging: PathBuf,
    /// `table<TAB>path` of every absent file of the finished tables.
    arriving: std::sync::Mutex<Vec<String>>,
}

impl DatabaseBuild {
    /// Starts a restore into `root` (see [`check_restorable`]); a staging folder
    /// left by an interrupted restore is discarded.
    pub fn begin(root: &Path) -> Result<Self> {
        check_restorable(root)?;
        let staging = root.join(RESTORE_STAGING_DIR);
        if staging.exists() {
            std::fs::remove_dir_all(&staging).ctx(|| format!("removing stale {}", staging.display()))?;
        }
        create_dir_durable(&staging.join("db"))?;
        Ok(Self {
            root: root.to_path_buf(),
            staging,
            arriving: Default::default(),
        })
    }

    fn db(&self) -> PathBuf {
        self.staging.join("db")
    }

    /// Starts one table (its name is validated as a folder name).
    pub fn table(&self, meta: TableMeta) -> Result<TableBuild> {
        let dir = self.db().join(&meta.name);
        if dir.exists() {
            return Err(StorageError::TableExists(meta.name));
        }
        TableBuild::new(meta, dir)
    }

    /// Seals a table whose files are all in place, with its commit version.
    pub fn finish_table(&self, mut table: TableBuild, version: u64) -> Result<()> {
        table.seal(version)?;
        let mut arriving = self.arriving.lock().unwrap_or_else(|p| p.into_inner());
        arriving.extend(table.absent.iter().map(|p| format!("{}\t{p}", table.meta.name)));
        Ok(())
    }

    /// Writes the data id and `extra` plain files into the new `db/`, then renames
    /// it to `ROOT/db` in one step. The database can be opened and read at once;
    /// its files become durable with [`UnsyncedRestore::make_durable`].
    pub fn finish(self, data_id: &str, extra: &[(&str, &[u8])]) -> Result<UnsyncedRestore> {
        let db = self.db();
        uuid::Uuid::parse_str(data_id).map_err(|e| StorageError::Corrupt {
            path: db.join(DATA_ID_FILE),
            reason: format!("data id '{data_id}' is not a UUID: {e}"),
        })?;
        for (name, bytes) in extra {
            if !check_rel_path(name) || name.contains('/') {
                return Err(StorageError::Corrupt {
                    path: db.join(name),
                    reason: "not a plain file name".into(),
                });
            }
            write_atomic(&db.join(name), bytes)?;
        }
        let arriving = self.arriving.lock().unwrap_or_else(|p| p.into_inner()).join("\n");
        if !arriving.is_empty() {
            write_atomic(&db.join(ARRIVING_FILE), arriving.as_bytes())?;
        }
        write_atomic(&db.join(UNSYNCED_MARKER), b"")?;
        write_atomic(&db.join(DATA_ID_FILE), data_id.as_bytes())?;
        let target = db_dir(&self.root);
        if target.exists() {
            // check_restorable saw it empty.
            std::fs::remove_dir(&target).ctx(|| format!("removing empty {}", target.display()))?;
        }
        std::fs::rename(&db, &target).ctx(|| format!("renaming {} to {}", db.display(), target.display()))?;
        fsync_dir(&self.root)?;
        std::fs::remove_dir_all(&self.staging).ctx(|| format!("removing {}", self.staging.display()))?;
        Ok(UnsyncedRestore { root: self.root })
    }

    /// Gives up: keeps what was built in `ROOT/.restore_failed/` and lists the
    /// failed tables with their reasons in `ROOT/_restore_failed`.
    pub fn fail(self, failed: &[(String, String)]) -> Result<PathBuf> {
        let dir = self.root.join(RESTORE_FAILED_DIR);
        std::fs::rename(self.db(), &dir).ctx(|| format!("moving the failed restore to {}", dir.display()))?;
        let text: String = failed.iter().map(|(t, why)| format!("{t}\t{why}\n")).collect();
        write_atomic(&self.root.join(RESTORE_FAILED_FILE), text.as_bytes())?;
        let _ = std::fs::remove_dir_all(&self.staging);
        Ok(dir)
    }
}

/// A restored database in `ROOT/db` whose files may not have reached disk yet.
#[derive(Debug)]
#[must_use = "the restored files are not durable until make_durable is called"]
pub struct UnsyncedRestore {
    root: PathBuf,
}

impl UnsyncedRestore {
    /// Syncs the file system, then marks the restore complete ([`RestoreState::Completed`]).
    pub fn make_durable(self) -> Result<()> {
        sync_filesystem(&self.root)?;
        let db = db_dir(&self.root);
        write_atomic(&db.join(RESTORED_MARKER), b"")?;
        let marker = db.join(UNSYNCED_MARKER);
        std::fs::remove_file(&marker).ctx(|| format!("removing {}", marker.display()))?;
        fsync_dir(&db)
    }

    /// Removes the restored database (after a power cut it may hold torn files).
    pub fn discard(self) -> Result<()> {
        let db = db_dir(&self.root);
        std::fs::remove_dir_all(&db).ctx(|| format!("removing {}", db.display()))?;
        fsync_dir(&self.root)
    }
}

/// Removes the markers of a completed restore (after its trigger file is gone).
pub fn clear_restore_markers(root: &Path) -> Result<()> {
    let db = db_dir(root);
    for marker in [UNSYNCED_MARKER, RESTORED_MARKER] {
        let path = db.join(marker);
        match std::fs::remove_file(&path) {
            Ok(()) => fsync_dir(&db)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(StorageError::Io {
                    context: format!("removing {}", path.display()),
                    source: e,
                });
            }
        }
    }
    Ok(())
}

/// Bytes free for an unprivileged writer on the file system holding `path`.
pub fn available_space(path: &Path) -> Result<u64> {
    let s = rustix::fs::statvfs(path).map_err(|e| StorageError::Io {
        context: format!("statvfs {}", path.display()),
        source: e.into(),
    })?;
    Ok(s.f_bavail.saturating_mul(s.f_frsize))
}
