//! Backup: incremental, compressed, content-addressed backups of storage snapshots
//! to an object store, with manifests written last, history and retention; and
//! their restore (whole database or one table) and verification.
//!
//! Owns: the store layout and manifest format (docs/backup-format.md), store
//! connection strings, instance names, the upload path, retention, and the
//! download path (every file verified before use).
//! Must not know: SQL, DataFusion or the wire protocol. It reads a pinned
//! `storage::Snapshot`; the engine decides when to back up.
//!
//! Main entry points: [`Store::open`], [`backup_and_cleanup`], [`load_history`],
//! [`restore_database`], [`restore_table`], [`verify`].

mod catalog;
mod crypto;
mod error;
#[cfg(test)]
mod fault_tests;
mod fetch;
mod history;
mod instance;
pub mod layout;
mod manifest;
#[cfg(test)]
mod manifest_fuzz_tests;
mod restore;
mod retention;
mod retry;
mod run;
mod store;
mod throttle;
mod verify;

pub use catalog::{Selector, instances, locate, parse_backup_timestamp, resolve_instance};
pub use crypto::Cipher;
pub use error::{BackupError, Result};
pub use history::{BackupRecord, Status};
pub use instance::{INSTANCE_NAME_FILE, check_data_id, instance_name};
pub use manifest::{BackedUpFile, Codec, MANIFEST_FORMAT_VERSION, Manifest, TableEntry};
pub use restore::{
    OnProgress, PartitionFilter, PercentSteps, RestoreReport, TableRequest, restore_database, restore_table,
};
pub use retention::{CleanupReport, cleanup, complete_backups, read_manifest};
pub use run::{
    BackupJob, Estimate, MULTIPART_THRESHOLD, Progress, backup_and_cleanup, estimate, new_record, put_history,
    run_backup,
};
pub use store::{Flush, LocalRoot, Store, redact};
pub use throttle::Limits;
pub use verify::{Problem, VerifyReport, verify};

/// Every history record of `instance` in the store, newest first.
pub async fn load_history(store: &Store, instance: &str) -> Result<Vec<BackupRecord>> {
    let keys = store
        .list(&layout::history_dir(instance))
        .await?
        .into_iter()
        .map(|m| m.location);
    let mut out = Vec::new();
    for key in keys {
        let bytes = store.read(&key).await?;
        match serde_json::from_slice::<BackupRecord>(&bytes) {
            Ok(r) => out.push(r),
            Err(e) => tracing::warn!("ignoring unreadable history record {key}: {e}"),
        }
    }
    out.sort_by_key(|r| std::cmp::Reverse(r.backup_micros));
    Ok(out)
}
