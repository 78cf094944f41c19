//! Running one backup.
//!
//! ```text
//! pinned snapshot ──► list objects already in the store (by content hash)
//!                 ──► upload the missing files: read, check hash, zstd (or raw), put / multipart
//!                 ──► confirm every object the manifest will name is present
//!                 ──► write the manifest (the backup now exists)
//!                 ──► retention (cleanup)
//! ```
//! Progress is published in a shared [`BackupRecord`] and written to the
//! store's history at the start, when cleanup starts and at the end, each
//! time as a new object.
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use storage::Snapshot;
use tokio_util::sync::CancellationToken;

use crate::error::{BackupError, Result};
use crate::history::{BackupRecord, Status, put_history};
use crate::layout::{Codec, Folder, HistoryEvent, Object, format_timestamp, object_name, tree_of_object};
use crate::manifest::{BackedUpFile, MANIFEST_FORMAT_VERSION, Manifest, TableEntry};
use crate::retention::CleanupPlan;
use crate::store::Store;
use crate::throttle::Limits;
use crate::tree::{has_tree, tree_size};
use crate::upload::{upload_file, upload_tree};

/// Everything one backup needs.
#[derive(Debug, Clone)]
pub struct BackupJob {
    pub store: Store,
    pub instance: String,
    pub data_id: String,
    pub backup_micros: i64,
    pub snapshot: Snapshot,
    /// Absolute folder of each table in the snapshot.
    pub table_dirs: HashMap<String, PathBuf>,
    pub compression_level: i32,
    pub limits: Limits,
}

/// Live state of a running backup, shared with `backups()`.
pub type Progress = Arc<Mutex<BackupRecord>>;

pub(crate) fn update(progress: &Progress, f: impl FnOnce(&mut BackupRecord)) -> BackupRecord {
    let mut r = progress.lock().unwrap_or_else(|p| p.into_inner());
    f(&mut r);
    r.clone()
}

/// A fresh record for a backup about to start.
pub fn new_record(job: &BackupJob, now_micros: i64) -> BackupRecord {
    let files: Vec<_> = job
        .snapshot
        .tables
        .values()
        .flat_map(|t| t.commit.files.iter())
        .collect();
    BackupRecord {
        backup_micros: job.backup_micros,
        instance: job.instance.clone(),
        status: Status::BackupInProgress,
        start_micros: now_micros,
        end_micros: None,
        backup_error: None,
        cleanup_error: None,
        tables: job.snapshot.tables.len() as u64,
        files_total: files.len() as u64,
        files_uploaded: 0,
        files_done: 0,
        bytes_total: files.iter().map(|f| f.bytes).sum(),
        bytes_uploaded: 0,
    }
}

/// Object names (relative to the instance folder) already in the store, with their sizes.
pub(crate) async fn existing_objects(store: &Store, instance: &str) -> Result<HashMap<String, u64>> {
    Ok(store
        .list(instance, Folder::Files)
        .await?
        .into_iter()
        .map(|m| (m.name, m.size))
        .collect())
}

/// The object already in the store (`existing`: name -> size) that holds `file`,
/// as (name, codec, stored bytes). An empty object for a non-empty file is not
/// one: that is what a local disk leaves of a file whose data never reached it
/// (power loss before a flush), so the file goes up again.
pub(crate) fn stored_object(
    existing: &HashMap<String, u64>,
    file: &storage::DataFile,
    encrypted: bool,
) -> Option<(String, Codec, u64)> {
    [Codec::Zst, Codec::Raw].into_iter().find_map(|codec| {
        let name = object_name(&file.hash, codec, encrypted);
        let size = *existing.get(&name)?;
        (size > 0 || file.bytes == 0).then_some((name, codec, size))
    })
}

/// The objects `file` may be stored as that a power loss left empty (see
/// [`stored_object`]).
pub(crate) fn torn_objects(existing: &HashMap<String, u64>, file: &storage::DataFile, encrypted: bool) -> Vec<String> {
    [Codec::Zst, Codec::Raw]
        .into_iter()
        .map(|codec| object_name(&file.hash, codec, encrypted))
        .filter(|name| file.bytes > 0 && existing.get(name) == Some(&0))
        .collect()
}

/// What a backup now would upload and reuse (`BACKUP DATABASE ESTIMATE`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Estimate {
    pub files_to_upload: u64,
    pub bytes_to_upload: u64,
    pub files_reused: u64,
    pub bytes_reused: u64,
}

/// Compares a snapshot with the store by content hash; reads no data file, uploads nothing.
pub async fn estimate(store: &Store, instance: &str, snapshot: &Snapshot) -> Result<Estimate> {
    let existing = existing_objects(store, instance).await?;
    let mut seen = std::collections::HashSet::new();
    let mut e = Estimate::default();
    for f in snapshot.tables.values().flat_map(|t| t.commit.files.iter()) {
        if !seen.insert(f.hash.as_str()) {
            continue;
        }
        if stored_object(&existing, f, store.encrypts()).is_some() {
            e.files_reused += 1;
            e.bytes_reused += f.bytes;
        } else {
            e.files_to_upload += 1;
            e.bytes_to_upload += f.bytes;
        }
    }
    Ok(e)
}

/// Runs the backup to completion: uploads, manifest. Returns the manifest.
/// Cancelling `cancel` stops it promptly with [`BackupError::Aborted`].
pub async fn run_backup(job: &BackupJob, progress: &Progress, cancel: &CancellationToken) -> Result<Manifest> {
    let existing = existing_objects(&job.store, &job.instance).await?;
    // Decide per distinct hash: reuse or upload.
    let mut objects: HashMap<String, (String, Codec, u64)> = HashMap::new();
    let mut to_upload: Vec<(String, PathBuf, u64)> = Vec::new();
    let mut queued: std::collections::HashSet<String> = std::collections::HashSet::new();
    // Raw objects already stored without a whole tree (stored before trees
    // were, or cut short), with the cut-short tree to delete first.
    let mut trees_to_upload: Vec<(String, PathBuf, Option<String>)> = Vec::new();
    for (name, table) in &job.snapshot.tables {
        let dir = job
            .table_dirs
            .get(name)
            .ok_or_else(|| BackupError::Other(format!("no folder for table '{name}'")))?;
        for f in &table.commit.files {
            if objects.contains_key(&f.hash) || queued.contains(&f.hash) {
                update(progress, |r| r.files_done += 1);
                continue;
            }
            match stored_object(&existing, f, job.store.encrypts()) {
                Some(found) => {
                    // A raw object's tree that is absent, or cut short (a power cut
                    // on a local store), goes up again.
                    if let Some(tree) = tree_of_object(&found.0).filter(|_| has_tree(f.bytes))
                        && existing.get(&tree) != Some(&tree_size(f.bytes))
                    {
                        let torn = existing.contains_key(&tree).then_some(tree);
                        trees_to_upload.push((f.hash.clone(), dir.join(&f.path), torn));
                    }
                    objects.insert(f.hash.clone(), found);
                    update(progress, |r| r.files_done += 1);
                }
                None => {
                    // A create-only PUT would keep a torn object: it goes first.
                    for torn in torn_objects(&existing, f, job.store.encrypts()) {
                        job.store.delete(&job.instance, Object::File(&torn)).await?;
                    }
                    queued.insert(f.hash.clone());
                    to_upload.push((f.hash.clone(), dir.join(&f.path), f.bytes));
                }
            }
        }
    }
    let level = job.compression_level;
    let results = futures::stream::iter(to_upload.into_iter().map(|(hash, path, size)| {
        let limits = job.limits.clone();
        let store = job.store.clone();
        let instance = job.instance.clone();
        let cancel = cancel.clone();
        async move {
            if cancel.is_cancelled() {
                return Err(BackupError::Aborted(String::new()));
            }
            let uploaded = tokio::select! {
                r = upload_file(&store, &instance, &hash, path, size, level, &limits) => r?,
                _ = cancel.cancelled() => return Err(BackupError::Aborted(String::new())),
            };
            update(progress, |r| {
                r.files_done += 1;
                r.files_uploaded += 1;
                r.bytes_uploaded += uploaded.2;
            });
            Ok((hash, uploaded))
        }
    }))
    .buffer_unordered(job.store.concurrency().upload)
    .collect::<Vec<_>>()
    .await;
    let uploaded_any = !results.is_empty();
    for r in results {
        let (hash, obj) = r.map_err(|e| match e {
            BackupError::Aborted(_) => BackupError::Aborted(format_timestamp(job.backup_micros)),
            other => other,
        })?;
        objects.insert(hash, obj);
    }
    // Best effort: the backup restores without them (a ranged read of such an
    // object fetches it whole instead), and the local file may not be there
    // yet (an instant restore still fetching it).
    for (hash, path, torn) in &trees_to_upload {
        if cancel.is_cancelled() {
            break;
        }
        let stored = async {
            if let Some(torn) = torn {
                job.store.delete(&job.instance, Object::File(torn)).await?;
            }
            upload_tree(&job.store, &job.instance, hash, path.clone(), &job.limits).await
        };
        if let Err(e) = stored.await {
            tracing::warn!("could not store the blake3 tree of {}: {e}", path.display());
        }
    }
    if cancel.is_cancelled() {
        return Err(BackupError::Aborted(format_timestamp(job.backup_micros)));
    }
    // The objects must be on disk before a manifest names them, and the manifest
    // before the backup is reported complete (local stores only; S3 PUTs are durable;
    // a local store gives the objects written their names now).
    job.store.make_durable().await?;
    // Confirm presence of everything the manifest names, including reused objects
    // (when nothing went up, the listing this backup started with is that proof).
    let present = if uploaded_any {
        existing_objects(&job.store, &job.instance).await?
    } else {
        existing
    };
    if let Some((hash, (obj, _, _))) = objects.iter().find(|(_, (obj, _, _))| !present.contains_key(obj)) {
        return Err(BackupError::Other(format!(
            "object {obj} (file hash {hash}) is missing from the store after upload"
        )));
    }
    let manifest = Manifest {
        format_version: MANIFEST_FORMAT_VERSION,
        instance: job.instance.clone(),
        data_id: job.data_id.clone(),
        backup_timestamp: format_timestamp(job.backup_micros),
        backup_micros: job.backup_micros,
        snapshot_micros: Some(job.snapshot.taken_at_micros),
        tables: table_entries(&job.snapshot, &objects, job.store.encrypts()),
    };
    // Compact: with 100,000 files, indentation alone would be a third of the manifest.
    let bytes = serde_json::to_vec(&manifest).map_err(|e| BackupError::Other(e.to_string()))?;
    // One PUT: object stores make it visible whole or not at all.
    job.store
        .put(&job.instance, Object::Manifest(job.backup_micros), Bytes::from(bytes))
        .await?;
    job.store.make_durable().await?;
    Ok(manifest)
}

/// The manifest's record of every table in `snapshot`, its files stored as
/// `objects` (by hash: object, codec, stored bytes).
pub(crate) fn table_entries(
    snapshot: &Snapshot,
    objects: &HashMap<String, (String, Codec, u64)>,
    encrypted: bool,
) -> Vec<TableEntry> {
    snapshot
        .tables
        .values()
        .map(|t| TableEntry {
            meta: t.meta.as_ref().clone(),
            commit_version: t.commit.version,
            files: t
                .commit
                .files
                .iter()
                .map(|f| backed_up(f, objects, encrypted))
                .collect(),
        })
        .collect()
}

/// `file` as stored in `objects` (which holds its hash).
pub(crate) fn backed_up(
    file: &storage::DataFile,
    objects: &HashMap<String, (String, Codec, u64)>,
    encrypted: bool,
) -> BackedUpFile {
    let (object, codec, stored) = objects[&file.hash].clone();
    BackedUpFile {
        file: file.clone(),
        object,
        codec,
        encrypted,
        stored_bytes: stored,
    }
}

/// How a backup ended: its final record (also in the store's history) and,
/// when the backup failed, why.
#[derive(Debug)]
pub struct Outcome {
    pub record: BackupRecord,
    pub error: Option<BackupError>,
    /// What retention deleted, when it ran to its end.
    pub cleaned: Option<CleanupPlan>,
}

/// The whole life of one backup: history record, upload, manifest, retention.
pub async fn backup_and_cleanup(
    job: &BackupJob,
    progress: &Progress,
    cancel: &CancellationToken,
    retention: &crate::Retention,
    now: impl Fn() -> i64,
) -> Outcome {
    let started = progress.lock().unwrap_or_else(|p| p.into_inner()).clone();
    record_history(&job.store, &started, HistoryEvent::Started).await;
    let result = run_backup(job, progress, cancel).await;
    // The shared progress never shows a final status: the caller publishes the
    // returned record when it stops counting this backup as running, so whoever
    // sees a backup finished can start the next one.
    let mut record = finished(
        progress.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        now(),
        &result,
    );
    let mut cleaned = None;
    if let Err(e) = &result {
        tracing::warn!("backup {} failed: {e}", format_timestamp(job.backup_micros));
    } else {
        tracing::info!(
            uploaded_files = record.files_uploaded,
            uploaded_bytes = record.bytes_uploaded,
            total_files = record.files_total,
            "backup {} complete",
            format_timestamp(job.backup_micros)
        );
        match clean_up(job, progress, &mut record, retention).await {
            Ok(plan) => cleaned = plan,
            Err(e) => {
                tracing::warn!("backup {}: cleanup failed: {e}", format_timestamp(job.backup_micros));
                record.status = Status::CleanupFailed;
                record.cleanup_error = Some(e.to_string());
            }
        }
    }
    record_history(&job.store, &record, HistoryEvent::Finished).await;
    Outcome {
        record,
        error: result.err(),
        cleaned,
    }
}

/// Retention after a complete backup; returns what it deleted. The record
/// stays `backup complete` when there is nothing to delete; otherwise it shows
/// `cleanup in progress` while old backups are deleted, then `cleanup complete`.
async fn clean_up(
    job: &BackupJob,
    progress: &Progress,
    record: &mut BackupRecord,
    retention: &crate::Retention,
) -> Result<Option<CleanupPlan>> {
    let Some(plan) = crate::retention::plan_cleanup(&job.store, &job.instance, retention).await? else {
        return Ok(None);
    };
    record.status = Status::CleanupInProgress;
    update(progress, |r| *r = record.clone());
    record_history(&job.store, record, HistoryEvent::Cleaning).await;
    crate::retention::cleanup(&job.store, &job.instance, &plan).await?;
    record.status = Status::CleanupComplete;
    Ok(Some(plan))
}

/// Writes the history record of a backup's `event`; a failure is logged,
/// since the backup itself is decided by its manifest, not by its history.
async fn record_history(store: &Store, record: &BackupRecord, event: HistoryEvent) {
    if let Err(e) = put_history(store, record, event).await {
        tracing::warn!(
            "backup {}: cannot write history: {e}",
            format_timestamp(record.backup_micros)
        );
    }
}

/// The record of a backup that ended at `now` with `result`.
fn finished(mut r: BackupRecord, now: i64, result: &Result<Manifest>) -> BackupRecord {
    r.end_micros = Some(now);
    match result {
        Ok(_) => {
            r.status = Status::BackupComplete;
            r.files_done = r.files_total;
        }
        Err(BackupError::Aborted(_)) => {
            r.status = Status::BackupFailed;
            r.backup_error = Some("aborted".into());
        }
        Err(e) => {
            r.status = Status::BackupFailed;
            r.backup_error = Some(e.to_string());
        }
    }
    r
}
