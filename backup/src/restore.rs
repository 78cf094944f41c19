//! Restoring backups: a whole database into an empty root (the `_backup_restore`
//! trigger and `strata restore`), or one table into a running database.
//!
//! ```text
//! locate manifest ──► check data id, format, disk space (nothing written yet)
//!                 ──► fetch files in parallel, each verified (size, blake3, Parquet footer)
//!                 ──► whole database: build ROOT/.restore_staging/db, rename to ROOT/db
//!                     one table:      build db/.creating-…, rename or swap in one commit
//! ```
//! A failed whole-database restore moves what it built to `ROOT/.restore_failed/`
//! and lists the failed tables in `ROOT/_restore_failed`.
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::{StreamExt, TryStreamExt};
use storage::{DatabaseBuild, Install, Storage, TableBuild, TableMeta, UnsyncedRestore};

use crate::catalog::{Selector, locate};
use crate::error::{BackupError, Result};
use crate::fetch::fetch_file;
use crate::instance::INSTANCE_NAME_FILE;
use crate::manifest::{BackedUpFile, Manifest, TableEntry};
use crate::store::Store;

/// Called with (bytes restored so far, bytes in total) as files complete.
pub type OnProgress<'a> = &'a (dyn Fn(u64, u64) + Send + Sync);

/// Turns progress callbacks into one report per `step` percent, for logs and
/// non-terminal output.
#[derive(Debug)]
pub struct PercentSteps {
    step: u64,
    last: AtomicU64,
}

impl PercentSteps {
    pub fn new(step: u64) -> Self {
        Self {
            step: step.clamp(1, 100),
            last: AtomicU64::new(0),
        }
    }

    /// The percentage reached when `done` crosses into a new step, else `None`.
    pub fn crossed(&self, done: u64, total: u64) -> Option<u64> {
        let percent = done.saturating_mul(100).checked_div(total).unwrap_or(100);
        let reached = percent / self.step * self.step;
        (self.last.fetch_max(reached, Ordering::Relaxed) < reached).then_some(reached)
    }
}

/// What a restore brought back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreReport {
    pub instance: String,
    pub backup_timestamp: String,
    pub tables: Vec<String>,
    pub files: u64,
    pub rows: u64,
    /// Bytes of data files restored.
    pub bytes: u64,
    /// Bytes fetched from the store (compressed).
    pub fetched_bytes: u64,
}

/// Room kept free beyond the backup's size when restoring.
const DISK_MARGIN: u64 = 16 << 20;

/// Restores the selected backup into `root`, whose database must be empty.
///
/// The database is in place when this returns and can be opened and read, but
/// its files are not yet durable: nothing may commit to it before
/// [`UnsyncedRestore::make_durable`] is done (a server runs that in the
/// background and holds writes until then; a power cut before it leaves a marker
/// that says to restore again).
pub async fn restore_database(
    store: &Store,
    selector: &Selector,
    root: &Path,
    on_progress: OnProgress<'_>,
) -> Result<(RestoreReport, UnsyncedRestore)> {
    let manifest = checked_for_restore(store, selector, root).await?;
    let build = DatabaseBuild::begin(root)?;
    let counter = Counter::new(manifest.bytes(), on_progress);
    let mut report = report_for(&manifest);
    let mut failed = Vec::new();
    for entry in &manifest.tables {
        let files: Vec<&BackedUpFile> = entry.files.iter().collect();
        let restored = async {
            let table = build.table(entry.meta.clone())?;
            let (table, fetched) = fetch_table(store, &manifest.instance, table, &files, &counter).await?;
            build.finish_table(table, entry.commit_version)?;
            Ok::<_, BackupError>(fetched)
        };
        match restored.await {
            Ok(fetched) => report.fetched_bytes += fetched,
            Err(e) => {
                let name = entry.meta.name.clone();
                tracing::error!("restore of table '{name}' failed: {e}");
                failed.push((name, e.to_string()));
            }
        }
    }
    if !failed.is_empty() {
        let dir = build.fail(&failed)?;
        let names: Vec<&str> = failed.iter().map(|(n, _)| n.as_str()).collect();
        let first = &failed[0];
        return Err(BackupError::Restore(format!(
            "restore of backup {} failed for table(s) {} (first error, table '{}': {}); what was restored is in {} \
             and the failed tables are listed in {}",
            manifest.backup_timestamp,
            names.join(", "),
            first.0,
            first.1,
            dir.display(),
            root.join(storage::RESTORE_FAILED_FILE).display()
        )));
    }
    let unsynced = build.finish(&manifest.data_id, &[(INSTANCE_NAME_FILE, manifest.instance.as_bytes())])?;
    Ok((report, unsynced))
}

/// The selected state, once `root` is found empty and with room for it.
async fn checked_for_restore(store: &Store, selector: &Selector, root: &Path) -> Result<Manifest> {
    storage::check_restorable(root)?;
    let manifest = locate(store, selector).await?;
    std::fs::create_dir_all(root).map_err(|e| BackupError::Other(format!("creating {}: {e}", root.display())))?;
    let need = manifest.bytes() + DISK_MARGIN;
    let free = storage::available_space(root)?;
    if free < need {
        return Err(BackupError::Other(format!(
            "not enough disk space in {}: the backup needs {need} bytes, {free} are free",
            root.display()
        )));
    }
    Ok(manifest)
}

/// The name, in the restored `db/`, of the state an instant restore is
/// still fetching files of (the located manifest, as JSON).
pub const HYDRATION_FILE: &str = ".hydration.json";

/// Installs the selected state into `root` (empty) without its data files,
/// for an instant restore: every table's definition and commit as the state
/// has it, and [`HYDRATION_FILE`] naming the files still to fetch. Nothing
/// is fetched but the manifest.
pub async fn restore_catalog(
    store: &Store,
    selector: &Selector,
    root: &Path,
) -> Result<(RestoreReport, Manifest, UnsyncedRestore)> {
    let manifest = checked_for_restore(store, selector, root).await?;
    let state = serde_json::to_vec_pretty(&manifest).map_err(|e| BackupError::Other(e.to_string()))?;
    // Metadata only: a few small files per table.
    let build = DatabaseBuild::begin(root)?;
    for entry in &manifest.tables {
        let mut table = build.table(entry.meta.clone())?;
        for f in &entry.files {
            table.add_absent_file(f.file.clone())?;
        }
        build.finish_table(table, entry.commit_version)?;
    }
    let files = [
        (INSTANCE_NAME_FILE, manifest.instance.as_bytes()),
        (HYDRATION_FILE, state.as_slice()),
    ];
    let unsynced = build.finish(&manifest.data_id, &files)?;
    Ok((report_for(&manifest), manifest, unsynced))
}

fn report_for(m: &Manifest) -> RestoreReport {
    RestoreReport {
        instance: m.instance.clone(),
        backup_timestamp: m.backup_timestamp.clone(),
        tables: m.tables.iter().map(|t| t.meta.name.clone()).collect(),
        files: m.tables.iter().map(|t| t.files.len() as u64).sum(),
        rows: m.rows(),
        bytes: m.bytes(),
        fetched_bytes: 0,
    }
}

/// Progress across concurrent fetches.
pub(crate) struct Counter<'a> {
    done: AtomicU64,
    total: u64,
    on_progress: OnProgress<'a>,
}

impl<'a> Counter<'a> {
    pub(crate) fn new(total: u64, on_progress: OnProgress<'a>) -> Self {
        on_progress(0, total);
        Self {
            done: AtomicU64::new(0),
            total,
            on_progress,
        }
    }

    pub(crate) fn add(&self, bytes: u64) {
        let done = self.done.fetch_add(bytes, Ordering::Relaxed) + bytes;
        (self.on_progress)(done, self.total);
    }
}

/// Fetches `files` into the table being built and checks each one; returns the
/// table and the stored bytes fetched.
async fn fetch_table(
    store: &Store,
    instance: &str,
    mut table: TableBuild,
    files: &[&BackedUpFile],
    counter: &Counter<'_>,
) -> Result<(TableBuild, u64)> {
    let mut targets = Vec::with_capacity(files.len());
    for f in files {
        targets.push(((*f).clone(), table.file_path(&f.file)?));
    }
    let fetched: Vec<u64> = futures::stream::iter(targets.into_iter().map(|(f, path)| async move {
        let n = fetch_file(store, instance, &f, path).await?;
        counter.add(f.file.bytes);
        Ok::<_, BackupError>(n)
    }))
    .buffer_unordered(store.concurrency().download)
    .try_collect()
    .await?;
    let records: Vec<_> = files.iter().map(|f| f.file.clone()).collect();
    let table = tokio::task::spawn_blocking(move || -> Result<TableBuild> {
        for r in records {
            table.add_file(r)?;
        }
        Ok(table)
    })
    .await
    .map_err(|e| BackupError::Other(e.to_string()))??;
    Ok((table, fetched.iter().sum()))
}

/// `RESTORE TABLE`: what to restore and how to publish it.
#[derive(Clone)]
pub struct TableRequest {
    pub table: String,
    /// The name to restore as (the table's own name when the same).
    pub target: String,
    pub replace: bool,
    /// Only the partitions a `WHERE` on the designated timestamp selects (all when `None`).
    pub partitions: Option<PartitionFilter>,
}

/// Chooses partitions by their time range `[start, end)`.
#[derive(Clone)]
pub struct PartitionFilter {
    /// The column the `WHERE` compares; must be the table's designated timestamp.
    pub column: String,
    pub accept: Arc<dyn Fn(i64, i64) -> bool + Send + Sync>,
}

impl std::fmt::Debug for TableRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableRequest")
            .field("table", &self.table)
            .field("target", &self.target)
            .field("replace", &self.replace)
            .field("partitions", &self.partitions.as_ref().map(|p| &p.column))
            .finish()
    }
}

/// Restores one table of the selected backup (of this database's instance) into
/// the running `storage`. A failure leaves any existing table untouched.
pub async fn restore_table(
    store: &Store,
    selector: &Selector,
    request: &TableRequest,
    storage: &Arc<Storage>,
) -> Result<RestoreReport> {
    let manifest = locate(store, selector).await?;
    let entry = manifest.table(&request.table)?;
    let (files, mut partitions) = select_partitions(entry, request)?;
    match (storage.table(&request.target), &request.partitions) {
        (Some(_), _) if !request.replace => {
            return Err(storage::StorageError::TableExists(request.target.clone()).into());
        }
        // Replacing a time range: the range's partitions absent from the backup go too.
        (Some(existing), Some(filter)) => partitions.extend(
            existing
                .partitions()
                .into_iter()
                .filter(|(_, (start, end))| (filter.accept)(*start, *end))
                .map(|(p, _)| p),
        ),
        _ => {}
    }
    let meta = TableMeta {
        name: request.target.clone(),
        ..entry.meta.clone()
    };
    let total: u64 = files.iter().map(|f| f.file.bytes).sum();
    let counter = Counter::new(total, &|_, _| {});
    let s = storage.clone();
    let build = tokio::task::spawn_blocking(move || s.begin_table_build(meta))
        .await
        .map_err(|e| BackupError::Other(e.to_string()))??;
    let (build, fetched) = fetch_table(store, &manifest.instance, build, &files, &counter).await?;
    let how = if request.replace {
        Install::Replace {
            only_partitions: request.partitions.as_ref().map(|_| partitions.clone()),
        }
    } else {
        Install::Create
    };
    let s = storage.clone();
    tokio::task::spawn_blocking(move || s.install_table(build, how))
        .await
        .map_err(|e| BackupError::Other(e.to_string()))??;
    Ok(RestoreReport {
        instance: manifest.instance.clone(),
        backup_timestamp: manifest.backup_timestamp.clone(),
        tables: vec![request.target.clone()],
        files: files.len() as u64,
        rows: files.iter().map(|f| f.file.rows).sum(),
        bytes: total,
        fetched_bytes: fetched,
    })
}

/// The files of the partitions a request selects, and those partitions' names.
fn select_partitions<'a>(
    entry: &'a TableEntry,
    request: &TableRequest,
) -> Result<(Vec<&'a BackedUpFile>, BTreeSet<String>)> {
    let Some(filter) = &request.partitions else {
        let names = entry.files.iter().map(|f| f.file.partition.clone()).collect();
        return Ok((entry.files.iter().collect(), names));
    };
    if entry.meta.timestamp.as_deref() != Some(filter.column.as_str()) {
        return Err(BackupError::InvalidRequest(match &entry.meta.timestamp {
            Some(ts) => format!(
                "RESTORE TABLE ... WHERE must compare the designated timestamp '{ts}' of table '{}', not '{}'",
                entry.meta.name, filter.column
            ),
            None => format!(
                "table '{}' has no designated timestamp, so no partitions to choose with WHERE",
                entry.meta.name
            ),
        }));
    }
    let by = entry.meta.partition_by;
    let chosen: Vec<&BackedUpFile> = entry
        .files
        .iter()
        .filter(|f| {
            by.range(&f.file.partition)
                .is_some_and(|(start, end)| (filter.accept)(start, end))
        })
        .collect();
    let names = chosen.iter().map(|f| f.file.partition.clone()).collect();
    Ok((chosen, names))
}
