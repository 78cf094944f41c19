//! The history of backups, kept in the store next to the manifests (so it survives
//! restarts and is visible to any server pointed at the same store).
use serde::{Deserialize, Serialize};

use crate::error::{BackupError, Result};
use crate::layout::{Folder, Object, micros_of};
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

/// Writes a history record (best effort is not enough: errors are returned).
pub async fn put_history(store: &Store, record: &BackupRecord) -> Result<()> {
    let bytes = serde_json::to_vec(record).map_err(|e| BackupError::Other(e.to_string()))?;
    store
        .put(&record.instance, Object::History(record.backup_micros), bytes.into())
        .await
}

/// Every history record of `instance` in the store, newest first.
pub async fn load_history(store: &Store, instance: &str) -> Result<Vec<BackupRecord>> {
    let mut out = Vec::new();
    for listed in store.list(instance, Folder::History).await? {
        let Some(micros) = micros_of(&listed.name) else {
            tracing::warn!("ignoring history object {} (not named by a timestamp)", listed.name);
            continue;
        };
        let bytes = store.read(instance, Object::History(micros)).await?;
        match serde_json::from_slice::<BackupRecord>(&bytes) {
            Ok(r) => out.push(r),
            Err(e) => tracing::warn!("ignoring unreadable history record {}: {e}", listed.name),
        }
    }
    out.sort_by_key(|r| std::cmp::Reverse(r.backup_micros));
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
