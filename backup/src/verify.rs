//! Verifying a backup without restoring it: every object its manifest names is
//! fetched to a scratch folder and checked (size, blake3, readable Parquet with
//! the recorded rows), then deleted. Problems are collected, not fatal, so the
//! report names every bad file.
//!
//! Each verification the server runs leaves a [`VerifyRecord`] in the store
//! beside the history, so what was checked, when, and what was found survives
//! restarts and is visible from any server using the store.
use std::collections::{HashMap, HashSet};

use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::catalog::{Selector, locate};
use crate::error::{BackupError, Result};
use crate::fetch::fetch_file;
use crate::layout::{Folder, Object, verification_of};
use crate::manifest::BackedUpFile;
use crate::restore::{Counter, OnProgress};
use crate::store::Store;
use crate::throttle::Limits;

/// The format of [`VerifyRecord`]s.
pub const VERIFY_RECORD_VERSION: u32 = 1;

/// One file of a backup that would not restore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub table: String,
    pub path: String,
    pub object: String,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub instance: String,
    pub backup_timestamp: String,
    pub backup_micros: i64,
    pub tables: u64,
    pub files: u64,
    pub bytes: u64,
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    /// True when every file checked out: the backup restores.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// A verification's verdict, as `backups()` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifyStatus {
    /// Every file checked out.
    Ok,
    /// At least one file would not restore (see the record's problems).
    Corrupt,
}

impl VerifyStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Corrupt => "corrupt",
        }
    }
}

/// What one verification checked and found (docs/backup-format.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyRecord {
    pub format_version: u32,
    pub backup_micros: i64,
    /// When the verification started and ended.
    pub started_micros: i64,
    pub verified_micros: i64,
    pub status: VerifyStatus,
    pub tables: u64,
    pub files: u64,
    pub bytes: u64,
    pub problems: Vec<Problem>,
}

impl VerifyRecord {
    pub fn new(report: &VerifyReport, started_micros: i64, verified_micros: i64) -> Self {
        Self {
            format_version: VERIFY_RECORD_VERSION,
            backup_micros: report.backup_micros,
            started_micros,
            verified_micros,
            status: if report.ok() {
                VerifyStatus::Ok
            } else {
                VerifyStatus::Corrupt
            },
            tables: report.tables,
            files: report.files,
            bytes: report.bytes,
            problems: report.problems.clone(),
        }
    }
}

impl VerifyRecord {
    fn object(&self) -> Object<'static> {
        Object::Verification {
            backup: self.backup_micros,
            verified: self.verified_micros,
            sound: self.status == VerifyStatus::Ok,
        }
    }
}

/// Stores a verification's record (a new object: records are never overwritten).
pub async fn put_verification(store: &Store, instance: &str, record: &VerifyRecord) -> Result<()> {
    let bytes = serde_json::to_vec(record).map_err(|e| BackupError::Other(e.to_string()))?;
    store.put(instance, record.object(), bytes.into()).await
}

/// What the store holds of an instance's verifications.
#[derive(Debug, Default)]
pub struct StoredVerifications {
    /// The newest record of each backup.
    pub newest: Vec<VerifyRecord>,
    /// When the newest verification that found a backup sound ended.
    pub last_sound_micros: Option<i64>,
}

/// Reads the newest verification record of each backup of `instance` (only
/// those: the verdicts of the others are in their names). An unreadable one
/// is logged and skipped, like history records.
pub async fn load_verifications(store: &Store, instance: &str) -> Result<StoredVerifications> {
    // Per backup: the newest verification's micros and object.
    let mut newest: HashMap<i64, (i64, Object<'static>)> = HashMap::new();
    let mut out = StoredVerifications::default();
    for listed in store.list(instance, Folder::Verifications).await? {
        let Some(
            object @ Object::Verification {
                backup,
                verified,
                sound,
            },
        ) = verification_of(&listed.name)
        else {
            tracing::warn!("ignoring verification object {} (not named as one)", listed.name);
            continue;
        };
        if sound {
            out.last_sound_micros = out.last_sound_micros.max(Some(verified));
        }
        let kept = newest.entry(backup).or_insert((verified, object));
        if kept.0 < verified {
            *kept = (verified, object);
        }
    }
    for (_, object) in newest.into_values() {
        let read = store.read(instance, object).await.and_then(|bytes| {
            serde_json::from_slice::<VerifyRecord>(&bytes).map_err(|e| BackupError::Other(e.to_string()))
        });
        match read {
            Ok(r) => out.newest.push(r),
            // Deleted by another server's cleanup since the listing, say.
            Err(e) => tracing::warn!("ignoring unreadable verification record {}: {e}", object.key(instance)),
        }
    }
    Ok(out)
}

/// Whether `e` says a stored file would not restore (rather than that the
/// store or the local disk failed while checking it).
fn is_corruption(e: &BackupError) -> bool {
    matches!(
        e,
        BackupError::BadObject { .. }
            | BackupError::Storage(storage::StorageError::Corrupt { .. } | storage::StorageError::Parquet { .. })
    )
}

/// Checks every file of the selected backup, paced by `limits` when given.
/// Problems are files that would not restore; it errors when the backup itself
/// cannot be found or read (no manifest, bad manifest), when the store or the
/// local disk fails while checking, or when the backup was deleted meanwhile.
pub async fn verify(
    store: &Store,
    selector: &Selector,
    limits: Option<&Limits>,
    on_progress: OnProgress<'_>,
) -> Result<VerifyReport> {
    // LATEST is the newest complete backup, not the newest state of the commit log.
    let mut selector = selector.clone();
    if selector.timestamp.is_none() {
        let instance = crate::catalog::resolve_instance(store, selector.instance.as_deref()).await?;
        let newest = crate::retention::complete_backups(store, &instance)
            .await?
            .first()
            .copied();
        selector = Selector {
            instance: Some(instance),
            timestamp: newest.map(crate::layout::format_timestamp),
        };
    }
    let manifest = locate(store, &selector).await?;
    let instance = manifest.instance.as_str();
    // A state between backups (from the commit log) is no backup that could be deleted.
    let is_backup = crate::retention::complete_backups(store, instance)
        .await?
        .contains(&manifest.backup_micros);
    let scratch = tempfile::tempdir().map_err(|e| BackupError::Other(format!("creating a scratch folder: {e}")))?;
    let mut seen = HashSet::new();
    let files: Vec<(String, BackedUpFile)> = manifest
        .tables
        .iter()
        .flat_map(|t| t.files.iter().map(move |f| (t.meta.name.clone(), f.clone())))
        .filter(|(_, f)| seen.insert(f.file.hash.clone()))
        .collect();
    let (count, bytes) = (files.len() as u64, manifest.bytes());
    let counter = Counter::new(files.iter().map(|(_, f)| f.file.bytes).sum(), on_progress);
    let scratch_dir = scratch.path();
    let checked: Vec<Result<Option<Problem>>> = futures::stream::iter(files.into_iter().map(|(table, f)| {
        let counter = &counter;
        async move {
            if let Some(limits) = limits {
                limits.pace(f.stored_bytes).await;
            }
            let path = scratch_dir.join(&f.file.hash);
            let checked = match fetch_file(store, instance, &f, path.clone()).await {
                Ok(_) => {
                    let (t, p, rec) = (table.clone(), path.clone(), f.file.clone());
                    tokio::task::spawn_blocking(move || storage::check_data_file(&t, &p, &rec))
                        .await
                        .map_err(|e| BackupError::Other(e.to_string()))
                        .and_then(|r| r.map_err(BackupError::from))
                }
                Err(e) => Err(e),
            };
            let _ = std::fs::remove_file(&path);
            counter.add(f.file.bytes);
            match checked {
                Ok(()) => Ok(None),
                Err(e) if is_corruption(&e) => Ok(Some(Problem {
                    table,
                    path: f.file.path.clone(),
                    object: f.object.clone(),
                    reason: e.to_string(),
                })),
                Err(e) => Err(e),
            }
        }
    }))
    .buffer_unordered(store.concurrency().download)
    .collect()
    .await;
    let mut problems = Vec::new();
    for c in checked {
        problems.extend(c?);
    }
    // Missing objects of a backup retention or DROP BACKUP deleted meanwhile
    // (manifest first) are not corruption, and a verdict on a backup that no
    // longer exists is worth nothing.
    if is_backup
        && !crate::retention::complete_backups(store, instance)
            .await?
            .contains(&manifest.backup_micros)
    {
        return Err(BackupError::NotFound(format!(
            "backup {} was deleted while it was being verified",
            manifest.backup_timestamp
        )));
    }
    Ok(VerifyReport {
        instance: manifest.instance.clone(),
        backup_timestamp: manifest.backup_timestamp.clone(),
        backup_micros: manifest.backup_micros,
        tables: manifest.tables.len() as u64,
        files: count,
        bytes,
        problems,
    })
}
