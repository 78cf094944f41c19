//! Storage: Strata's on-disk layout, tables, partitions, commits and housekeeping.
//!
//! Layout under `ROOT/db/`:
//! - `.data_id` — a UUID naming this database, made once at creation;
//! - `<table>/_meta.json` — schema, designated timestamp, partitioning;
//! - `<table>/_commit.json` — the list of live data files (rows, bytes, time range, blake3 hash);
//! - `<table>/<partition>/<id>.parquet` — immutable data files.
//!
//! A write adds new files and then atomically replaces the commit record
//! (temp file, fsync, rename, fsync the directory), so a crash leaves the
//! last committed state readable. Consistent [`Snapshot`]s of all tables can
//! be pinned: housekeeping never deletes a pinned file, and can be paused.
//! With commit shipping on, every change is also journaled in `db/.journal/`
//! until shipped (see `journal.rs`); changes and snapshots are totally ordered
//! by their instants (micros).
//!
//! This crate knows nothing of SQL, DataFusion, the wire protocol or backups.

mod atomic;
mod checkpoint;
mod clock;
mod commit;
mod error;
mod gate;
mod housekeeping;
mod install;
mod journal;
mod meta;
mod partition;
mod paths;
mod snapshot;
mod storage;
mod table;
mod writer;

pub use atomic::{fsync_dir, start_writeback, sync_filesystem, wait_writeback, write_atomic};
pub use checkpoint::{
    CheckpointRecord, RollbackReport, read_checkpoint, remove_checkpoint, rollback_to_checkpoint, write_checkpoint,
};
pub use clock::{Clock, SystemClock};
pub use commit::{Commit, DataFile};
pub use error::{Result, StorageError};
pub use gate::WriteState;
pub use housekeeping::{HousekeepingReport, HousekeepingSettings};
pub use install::{
    DatabaseBuild, Install, RESTORE_FAILED_DIR, RESTORE_FAILED_FILE, RESTORE_STAGING_DIR, RESTORED_MARKER,
    RestoreState, TableBuild, UNSYNCED_MARKER, UnsyncedRestore, available_space, check_data_file, check_restorable,
    clear_restore_markers, restore_state,
};
pub use journal::{ChangeKind, JournalEntry};
pub use meta::{Column, ColumnType, SYMBOL_METADATA_KEY, TableMeta};
pub use partition::PartitionBy;
pub use paths::{db_dir, validate_table_name};
pub use snapshot::{Pin, Snapshot, TableSnapshot};
pub use storage::Storage;
pub use table::{Table, TableWriter};

#[cfg(test)]
mod tests;
