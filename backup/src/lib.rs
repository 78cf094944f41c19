//! Backup: incremental, compressed, content-addressed backups of storage snapshots
//! to an object store, with manifests written last, history and retention; and
//! their restore (whole database, its catalog alone for an instant restore, or
//! one table), verification, and reads of a backed-up file by range where it lies.
//!
//! Owns: the store layout and manifest format (docs/backup-format.md), store
//! connection strings, instance names, the upload path, retention, and the
//! download path (every file verified before use; every byte of a ranged read
//! checked: `tree.rs`, `crypto.rs`).
//! Must not know: SQL, DataFusion or the wire protocol. It reads a pinned
//! `storage::Snapshot`; the engine decides when to back up.
//!
//! Main entry points: [`Store::open`] (the only door to the object store), [`backup_and_cleanup`], [`load_history`],
//! [`restore_database`], [`restore_catalog`], [`restore_table`], [`verify`], [`RemoteFile`].

mod arriving;
mod catalog;
mod connect;
mod crypto;
mod error;
#[cfg(test)]
mod fault_tests;
mod fetch;
mod history;
mod in_place;
mod instance;
pub mod layout;
mod log;
mod manifest;
#[cfg(test)]
mod manifest_fuzz_tests;
mod restore;
mod retention;
mod retry;
mod run;
mod ship;
#[cfg(test)]
mod ship_tests;
mod store;
mod throttle;
mod transfer;
#[cfg(test)]
mod transfer_tests;
mod tree;
mod upload;
mod verify;
#[cfg(test)]
mod write_once_tests;

pub use catalog::{Selector, locate, parse_backup_timestamp, resolve_instance};
pub use connect::redact;
pub use crypto::Cipher;
pub use error::{BackupError, Result};
pub use history::{BackupRecord, Status, load_history, settle_interrupted};
pub use in_place::{BackupTable, RemoteFile, open_table};
pub use instance::{INSTANCE_NAME_FILE, check_data_id, instance_name};
pub use layout::{Codec, HistoryEvent};
pub use log::{LOG_FORMAT_VERSION, LogBase, LogChange, LogObject, Window, follow_log, window};
pub use manifest::{BackedUpFile, MANIFEST_FORMAT_VERSION, Manifest, TableEntry};
pub use restore::{
    HYDRATION_FILE, OnProgress, PartitionFilter, PercentSteps, RestoreReport, TableRequest, restore_catalog,
    restore_database, restore_table,
};
pub use retention::{
    CleanupPlan, CleanupReport, KeptBy, Retention, cleanup, complete_backups, plan_cleanup, plan_drop, read_manifest,
};
pub use run::{BackupJob, Estimate, Outcome, Progress, backup_and_cleanup, estimate, new_record, run_backup};
pub use ship::{Shipped, Shipper};
pub use store::{Flush, OpCounts, Store};
pub use throttle::Limits;
pub use transfer::{Concurrency, MAX_PARTS};
pub use verify::{
    Problem, StoredVerifications, VERIFY_RECORD_VERSION, VerifyRecord, VerifyReport, VerifyStatus, load_verifications,
    put_verification, verify,
};
