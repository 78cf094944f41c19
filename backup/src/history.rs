//! The history of backups, kept in the store next to the manifests (so it survives
//! restarts and is visible to any server pointed at the same store).
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{BackupError, Result};
use crate::layout::{Folder, HistoryEvent, Object, history_object, history_of};
use crate::store::Store;

/// The exact status values `backups()` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    #[serde(rename = "backup in progress")]
    BackupInProgress,
    #[serde(rename = "backup complete")]
    BackupComplete,
    #[serde(rename = "backup failed")]
    BackupFailed,
    #[serde(rename = "cleanup in progress")]
    CleanupInProgress,
    #[serde(rename = "cleanup complete")]
    CleanupComplete,
    #[serde(rename = "cleanup failed")]
    CleanupFailed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BackupInProgress => "backup in progress",
            Self::BackupComplete => "backup complete",
            Self::BackupFailed => "backup failed",
            Self::CleanupInProgress => "cleanup in progress",
            Self::CleanupComplete => "cleanup complete",
            Self::CleanupFailed => "cleanup failed",
        }
    }

    /// True when the backup itself completed (its manifest exists).
    pub fn backup_succeeded(self) -> bool {
        matches!(
            self,
            Self::BackupComplete | Self::CleanupInProgress | Self::CleanupComplete | Self::CleanupFailed
        )
    }
}

/// One row of `backups()`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupRecord {
    pub backup_micros: i64,
    pub instance: String,
    pub status: Status,
    pub start_micros: i64,
    pub end_micros: Option<i64>,
    pub backup_error: Option<String>,
    pub cleanup_error: Option<String>,
    pub tables: u64,
    pub files_total: u64,
    pub files_uploaded: u64,
    /// Files done so far (uploaded or found already in the store), for progress.
    pub files_done: u64,
    pub bytes_total: u64,
    pub bytes_uploaded: u64,
}

impl BackupRecord {
    /// Whole percent of files done, 0-100 (QuestDB's column holds integers);
    /// 100 only once the backup is complete.
    pub fn progress_percent(&self) -> i32 {
        if self.status.backup_succeeded() {
            return 100;
        }
        let done = self
            .files_done
            .saturating_mul(100)
            .checked_div(self.files_total)
            .unwrap_or(0);
        done.min(99) as i32
    }
}

/// Writes the record `event` of a backup's life leaves: a new object each
/// time, so a store that refuses overwrites (object lock) keeps a history.
pub(crate) async fn put_history(store: &Store, record: &BackupRecord, event: HistoryEvent) -> Result<()> {
    let bytes = serde_json::to_vec(record).map_err(|e| BackupError::Other(e.to_string()))?;
    let object = Object::History {
        backup: record.backup_micros,
        event,
    };
    // Durable when this returns (as every `put`): backups() after a power cut
    // shows what was acknowledged.
    store.put(&record.instance, object, bytes.into()).await
}

/// Settles a record a crash or power cut left in progress, and records it: a
/// backup whose manifest is in the store completed (only its final record was
/// lost); any other was interrupted (`why`), and so was a cleanup in progress.
pub async fn settle_interrupted(store: &Store, record: &mut BackupRecord, why: &str) -> Result<()> {
    match record.status {
        Status::BackupInProgress => {
            let manifest = Object::Manifest(record.backup_micros);
            if store.size_of(&record.instance, manifest).await?.is_some() {
                record.status = Status::BackupComplete;
            } else {
                record.status = Status::BackupFailed;
                record.backup_error = Some(why.into());
            }
        }
        Status::CleanupInProgress => {
            record.status = Status::CleanupFailed;
            record.cleanup_error = Some(why.into());
        }
        _ => return Ok(()),
    }
    put_history(store, record, HistoryEvent::Interrupted).await
}

/// The latest event of each backup in `instance`'s history (`None`: only a
/// format 1 record, which comes before every event), by backup micros.
async fn latest_events(store: &Store, instance: &str) -> Result<BTreeMap<i64, Option<HistoryEvent>>> {
    let mut latest = BTreeMap::new();
    for listed in store.list(instance, Folder::History).await? {
        let Some((backup, event)) = history_of(&listed.name) else {
            tracing::warn!("ignoring history object {} (not a backup event's name)", listed.name);
            continue;
        };
        let newest = latest.entry(backup).or_insert(event);
        *newest = (*newest).max(event);
    }
    Ok(latest)
}

/// Every backup's record in `instance`'s history, newest first: for each,
/// the record of its latest event (one read per backup).
pub async fn load_history(store: &Store, instance: &str) -> Result<Vec<BackupRecord>> {
    let mut out = Vec::new();
    for (backup, event) in latest_events(store, instance).await?.into_iter().rev() {
        let object = history_object(backup, event);
        let bytes = store.read(instance, object).await?;
        match serde_json::from_slice::<BackupRecord>(&bytes) {
            Ok(r) => out.push(r),
            Err(e) => tracing::warn!(
                "ignoring unreadable history record {}: {e}",
                store.key_of(instance, object)
            ),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_is_a_whole_percent_that_reaches_100_only_when_complete() {
        let mut r = BackupRecord {
            backup_micros: 1,
            instance: "i".into(),
            status: Status::BackupInProgress,
            start_micros: 0,
            end_micros: None,
            backup_error: None,
            cleanup_error: None,
            tables: 1,
            files_total: 3,
            files_uploaded: 0,
            files_done: 1,
            bytes_total: 0,
            bytes_uploaded: 0,
        };
        assert_eq!(r.progress_percent(), 33);
        r.files_done = 3;
        assert_eq!(r.progress_percent(), 99, "not complete until the manifest is written");
        r.status = Status::BackupComplete;
        assert_eq!(r.progress_percent(), 100);
        r.files_total = 0;
        r.status = Status::BackupInProgress;
        assert_eq!(r.progress_percent(), 0);
    }
}
