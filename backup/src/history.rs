//! The history of backups, kept in the store next to the manifests (so it survives
//! restarts and is visible to any server pointed at the same store).
use serde::{Deserialize, Serialize};

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
    pub fn progress_percent(&self) -> f64 {
        if self.status.backup_succeeded() {
            return 100.0;
        }
        if self.files_total == 0 {
            return 0.0;
        }
        (self.files_done as f64 * 100.0 / self.files_total as f64).min(99.9)
    }
}
