//! Engine: the Database — storage, the DataFusion session over it, settings and startup.
//!
//! Owns: configuration (`server.conf` + environment), the DataFusion catalog
//! that exposes storage's tables (scans with partition pruning, inserts as one
//! commit), COPY parsing, checkpoint mode, startup (the `_restore` and
//! `_backup_restore` triggers, in `startup.rs`), online table restore and
//! verification (through `backup`), SQL on backups where they lie
//! (`backup_table()`) and an instant restore's files arriving while it serves
//! (`hydration.rs`), background work (housekeeping, the checkpoint watchdog,
//! backups on idle-class threads, commit shipping), and the figures for
//! health checks and Prometheus (`metrics.rs`).
//! Must not know: the wire protocol or SQL text of our own statements (that is `sql`).
//!
//! Main types: [`Database`], [`Settings`], [`EngineError`].

mod background;
mod backup_table;
#[cfg(test)]
mod backup_table_tests;
mod backups;
mod catalog;
mod checkpoint;
pub mod config;
mod copy;
mod database;
mod error;
mod functions;
mod hydration;
mod metrics;
mod provider;
mod pruning;
mod replication;
mod startup;
#[cfg(test)]
mod test_store;
mod verifications;

pub use backup_table::{BackupSource, query_backups};
pub use checkpoint::CheckpointStatus;
pub use config::{
    BackupSettings, CheckpointLimits, ConfigError, HttpSettings, Properties, ReadonlyUser, ReplicationSettings,
    Schedule, Secret, Settings, TlsFiles,
};
pub use copy::CopyFormat;
pub use database::{CATALOG, Database, SCHEMA};
pub use error::{EngineError, Result};
pub use hydration::RestoreStatus;
pub use provider::StrataTable;
pub use replication::ReplicationStatus;
pub use startup::{BACKUP_RESTORE_KEYS, BACKUP_RESTORE_TRIGGER, RESTORE_TRIGGER};
