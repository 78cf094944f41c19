//! The Database: storage, the DataFusion session over it, and background work.
//!
//! Startup: open storage (loads every table) → build the DataFusion session
//! with our `public` schema → start housekeeping. `shutdown` cancels the
//! background tasks and waits for them.
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use datafusion::prelude::{SessionConfig, SessionContext};
use storage::{Clock, HousekeepingReport, Storage, SystemClock, TableMeta};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::background::periodic;
use crate::backup_table::{BackupSource, BackupTableFunction};
use crate::backups::{Backups, run_schedule, run_verify_schedule};
use crate::catalog::StrataSchema;
use crate::checkpoint::{CheckpointStatus, Checkpoints, WATCHDOG_TICK};
use crate::config::Settings;
use crate::copy::{CopyFormat, copy_rows};
use crate::error::{EngineError, Result};
use crate::functions::{BackupsFunction, CheckpointStatusFunction, ReplicationStatusFunction, RestoreStatusFunction};
use crate::hydration::{Hydration, RestoreStatus};
use crate::replication::{Replication, ReplicationStatus};
use crate::startup::PendingRestore;

/// DataFusion catalog and schema names our tables live in.
pub const CATALOG: &str = "datafusion";
pub const SCHEMA: &str = "public";

pub struct Database {
    storage: Arc<Storage>,
    checkpoints: Arc<Checkpoints>,
    backups: Arc<Backups>,
    replication: Arc<Replication>,
    /// Set when an instant restore's files were still arriving at the start.
    hydration: Option<Arc<Hydration>>,
    ctx: Arc<SessionContext>,
    settings: Settings,
    cancel: CancellationToken,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("root", &self.storage.root())
            .finish_non_exhaustive()
    }
}

impl Database {
    /// Opens the database under `root` with the real clock and starts background work.
    pub async fn open(root: &Path, settings: Settings) -> Result<Arc<Self>> {
        Self::open_with_clock(root, settings, Arc::new(SystemClock)).await
    }

    pub async fn open_with_clock(root: &Path, settings: Settings, clock: Arc<dyn Clock>) -> Result<Arc<Self>> {
        let root = absolute_root(root)?;
        let hk = settings.housekeeping.clone();
        let pending = crate::startup::prepare(&root, &settings.backup).await?;
        let shipping = settings.replication.clone();
        let (storage, record, replication) = tokio::task::spawn_blocking(move || -> Result<_> {
            let record = storage::read_checkpoint(&root)?;
            let storage = Storage::open(&root, clock, hk, record.as_ref().map(|r| &r.snapshot))?;
            // Before anything commits: every change from now on must be journaled.
            let replication = Replication::open(storage.clone(), &shipping)?;
            Ok((storage, record, replication))
        })
        .await??;
        let mut tasks = Vec::new();
        if let Some(pending) = pending {
            storage.hold_writes();
            tasks.push(tokio::spawn(complete_restore(storage.clone(), pending)));
        }
        let checkpoints = Arc::new(Checkpoints::new(storage.clone(), settings.checkpoint, record));
        let cancel = CancellationToken::new();
        let backups = Arc::new(Backups::open(storage.clone(), settings.backup.clone(), cancel.clone()).await?);
        let hydration = Hydration::open(&storage, &settings.backup)?;
        if let Some(h) = &hydration {
            tasks.push(tokio::spawn(h.clone().run(cancel.clone())));
        }
        let ctx = Arc::new(session_context(
            storage.clone(),
            checkpoints.clone(),
            backups.clone(),
            replication.clone(),
            hydration.clone(),
        )?);
        if settings.replication.primary {
            let conn = match &settings.replication.object_store {
                Some(c) => c.expose().to_string(),
                None => settings.backup.store_connection(storage.root()),
            };
            let store = settings.backup.open_store(&conn, settings.backup.encryption.clone())?;
            tasks.push(tokio::spawn(replication.clone().run(
                store,
                settings.backup.clone(),
                settings.replication.window,
                cancel.clone(),
            )));
        }
        let db = Arc::new(Self {
            storage,
            checkpoints,
            backups,
            replication,
            hydration,
            ctx,
            settings,
            cancel,
            tasks: Mutex::new(Vec::new()),
        });
        let hk_task = tokio::spawn(housekeeping_loop(
            db.storage.clone(),
            db.settings.housekeeping_interval,
            db.cancel.clone(),
        ));
        let watchdog = tokio::spawn(checkpoint_watchdog(db.checkpoints.clone(), db.cancel.clone()));
        tasks.extend([hk_task, watchdog]);
        if let Some(schedule) = db.settings.backup.schedule.clone() {
            tasks.push(tokio::spawn(run_schedule(
                db.backups.clone(),
                schedule,
                db.cancel.clone(),
            )));
        }
        if let Some(schedule) = db.settings.backup.verify_schedule.clone() {
            tasks.push(tokio::spawn(run_verify_schedule(
                db.backups.clone(),
                schedule,
                db.cancel.clone(),
            )));
        }
        db.tasks.lock().unwrap_or_else(|p| p.into_inner()).extend(tasks);
        Ok(db)
    }

    pub fn storage(&self) -> &Arc<Storage> {
        &self.storage
    }

    /// The shared DataFusion session (all connections plan against it).
    pub fn context(&self) -> Arc<SessionContext> {
        self.ctx.clone()
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Creates a table; returns false when it existed and `if_not_exists` was set.
    pub async fn create_table(&self, meta: TableMeta, if_not_exists: bool) -> Result<bool> {
        let storage = self.storage.clone();
        blocking(move || {
            let existed = storage.table(&meta.name).is_some();
            storage.create_table(meta, if_not_exists)?;
            Ok(!existed)
        })
        .await
    }

    pub async fn drop_table(&self, name: &str, if_exists: bool) -> Result<bool> {
        let (storage, name) = (self.storage.clone(), name.to_string());
        blocking(move || Ok(storage.drop_table(&name, if_exists)?)).await
    }

    pub async fn truncate(&self, name: &str) -> Result<()> {
        let table = self.table(name)?;
        blocking(move || Ok(table.truncate()?)).await
    }

    /// Drops the named partitions; returns how many held data.
    pub async fn drop_partitions(&self, name: &str, partitions: Vec<String>) -> Result<usize> {
        let table = self.table(name)?;
        blocking(move || Ok(table.drop_partitions(&partitions)?)).await
    }

    /// Drops every partition whose whole time range satisfies `covers(start, end)`;
    /// `column` must be the table's designated timestamp.
    pub async fn drop_partitions_where(
        &self,
        name: &str,
        column: &str,
        covers: impl Fn(i64, i64) -> bool,
    ) -> Result<usize> {
        let table = self.table(name)?;
        match &table.meta().timestamp {
            Some(ts) if ts == column => {}
            Some(ts) => {
                return Err(EngineError::InvalidInput(format!(
                    "DROP PARTITION WHERE must compare the designated timestamp '{ts}', not '{column}'"
                )));
            }
            None => {
                return Err(EngineError::InvalidInput(format!(
                    "table '{name}' has no designated timestamp, so no partitions to drop"
                )));
            }
        }
        let chosen: Vec<String> = table
            .partitions()
            .into_iter()
            .filter(|(_, (start, end))| covers(*start, *end))
            .map(|(p, _)| p)
            .collect();
        if chosen.is_empty() {
            return Ok(0);
        }
        blocking(move || Ok(table.drop_partitions(&chosen)?)).await
    }

    /// Loads COPY data into a table as one transaction.
    pub async fn copy_in(&self, name: &str, format: CopyFormat, data: Vec<u8>) -> Result<u64> {
        let table = self.table(name)?;
        blocking(move || copy_rows(&table, &format, &data)).await
    }

    /// `CHECKPOINT CREATE`; returns the checkpoint's start time (micros).
    pub async fn checkpoint_create(&self) -> Result<i64> {
        if self.hydration.as_ref().is_some_and(|h| !h.is_complete()) {
            return Err(EngineError::State(
                "an instant restore is still fetching this database's files (see restore_status()), and a copy \
                 made now would miss them; create the checkpoint once it is complete"
                    .into(),
            ));
        }
        let c = self.checkpoints.clone();
        blocking(move || c.create()).await
    }

    /// `CHECKPOINT RELEASE`; false when no checkpoint was in progress.
    pub async fn checkpoint_release(&self) -> Result<bool> {
        let c = self.checkpoints.clone();
        let released = blocking(move || c.release()).await?;
        if released {
            // Reclaim what the checkpoint held back without waiting for the next tick.
            let storage = self.storage.clone();
            tokio::task::spawn_blocking(move || storage.housekeep());
        }
        Ok(released)
    }

    /// How commit shipping goes (`replication_status()`).
    pub fn replication_status(&self) -> ReplicationStatus {
        self.replication.status()
    }

    /// How an instant restore's files arrive (`restore_status()`).
    pub fn restore_status(&self) -> RestoreStatus {
        RestoreStatus::of(self.hydration.as_ref())
    }

    pub fn checkpoint_status(&self) -> CheckpointStatus {
        self.checkpoints.status()
    }

    /// `BACKUP DATABASE [WAIT]`: starts a backup of a snapshot pinned now and returns
    /// its timestamp (`2024-08-24T12:34:56.789123Z`). With `wait`, returns only once it
    /// ended, and fails if it failed.
    pub async fn backup_start(&self, wait: bool) -> Result<String> {
        let (micros, done) = self.backups.start().await?;
        let ts = backup::layout::format_timestamp(micros);
        if wait {
            let outcome = done
                .await
                .map_err(|_| EngineError::Task(format!("backup {ts} stopped unexpectedly")))?;
            if let Some(source) = outcome.error {
                return Err(EngineError::backup_during(format!("backup {ts} failed"), source));
            }
        }
        Ok(ts)
    }

    /// `BACKUP DATABASE ESTIMATE`: what a backup now would upload and reuse.
    pub async fn backup_estimate(&self) -> Result<backup::Estimate> {
        self.backups.estimate().await
    }

    /// `RESTORE TABLE`: restores one table from a backup of this database
    /// (`timestamp` `None` = the latest complete one) while the database runs.
    pub async fn restore_table(
        &self,
        timestamp: Option<String>,
        request: backup::TableRequest,
    ) -> Result<backup::RestoreReport> {
        self.backups.restore_table(timestamp, &request).await
    }

    /// `VERIFY BACKUP`: fetches and checks every file of a backup of this database.
    pub async fn verify_backup(&self, timestamp: Option<String>) -> Result<backup::VerifyReport> {
        self.backups.verify(timestamp).await
    }

    /// `DROP BACKUP 'ts'`: deletes that complete backup and what only it needed.
    pub async fn drop_backup(&self, timestamp: &str) -> Result<backup::CleanupReport> {
        self.backups.drop_backup(timestamp).await
    }

    /// `BACKUP ABORT`: false when no backup is running.
    pub fn backup_abort(&self) -> bool {
        self.backups.abort()
    }

    /// Every metric in Prometheus' text format (`GET /metrics`).
    pub fn metrics(&self) -> Result<String> {
        crate::metrics::render(
            &self.backups,
            &self.checkpoints,
            &self.replication.status(),
            &self.restore_status(),
            self.storage.clock().now_micros(),
        )
    }

    /// Whether commits are served now (`GET /status`).
    pub fn write_state(&self) -> storage::WriteState {
        self.storage.write_state()
    }

    /// Runs one housekeeping cycle now.
    pub async fn housekeep(&self) -> Result<HousekeepingReport> {
        let storage = self.storage.clone();
        blocking(move || Ok(storage.housekeep()?)).await
    }

    fn table(&self, name: &str) -> Result<Arc<storage::Table>> {
        self.storage
            .table(name)
            .ok_or_else(|| storage::StorageError::TableNotFound(name.to_string()).into())
    }

    /// Stops background work and waits for it.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        // A running backup stops at its next step; give it a moment to record that.
        for _ in 0..100 {
            if !self.backups.is_running() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let tasks: Vec<_> = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for t in tasks {
            let _ = t.await;
        }
    }
}

/// `root`, created if missing, as an absolute path without `.` or `..` steps: the
/// query engine's file paths and the default backup store are built from it, and
/// both need that (`strata serve` defaults to `./strata_root`).
fn absolute_root(root: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(root)
        .and_then(|()| root.canonicalize())
        .map_err(|source| {
            storage::StorageError::Io {
                context: format!("opening the database root {}", root.display()),
                source,
            }
            .into()
        })
}

/// Makes a restored database durable while it is served, then lets commits in.
async fn complete_restore(storage: Arc<Storage>, pending: PendingRestore) {
    let outcome = match tokio::task::spawn_blocking(move || pending.complete()).await {
        Ok(done) => done.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match &outcome {
        Ok(()) => tracing::info!("the restored database is on disk; changes are accepted"),
        Err(e) => tracing::error!("the restored database could not be made durable, changes are refused: {e}"),
    }
    storage.release_writes(outcome);
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await?
}

fn session_context(
    storage: Arc<Storage>,
    checkpoints: Arc<Checkpoints>,
    backups: Arc<Backups>,
    replication: Arc<Replication>,
    hydration: Option<Arc<Hydration>>,
) -> Result<SessionContext> {
    let ctx = SessionContext::new_with_config(session_config());
    let source = backups.source();
    let catalog = ctx
        .catalog(CATALOG)
        .ok_or_else(|| EngineError::Task(format!("DataFusion catalog '{CATALOG}' missing")))?;
    catalog.register_schema(SCHEMA, Arc::new(StrataSchema::new(storage, hydration.clone())))?;
    ctx.register_udtf("restore_status", Arc::new(RestoreStatusFunction(hydration)));
    ctx.register_udtf("checkpoint_status", Arc::new(CheckpointStatusFunction(checkpoints)));
    ctx.register_udtf("backups", Arc::new(BackupsFunction(backups)));
    ctx.register_udtf("replication_status", Arc::new(ReplicationStatusFunction(replication)));
    ctx.register_udtf("backup_table", Arc::new(BackupTableFunction { source }));
    Ok(ctx)
}

fn session_config() -> SessionConfig {
    SessionConfig::new()
        .with_information_schema(true)
        .with_default_catalog_and_schema(CATALOG, SCHEMA)
        // Our tables store Utf8; keep SQL-side strings the same type.
        .set_bool("datafusion.sql_parser.map_string_types_to_utf8view", false)
}

/// A session with no database, where `backup_table()` reads `source`: what
/// `strata backup query` runs its SQL in.
pub(crate) fn backup_session(source: BackupSource) -> SessionContext {
    let ctx = SessionContext::new_with_config(session_config());
    ctx.register_udtf("backup_table", Arc::new(BackupTableFunction { source: Some(source) }));
    ctx
}

/// Looks at an open checkpoint every tick until cancelled.
async fn checkpoint_watchdog(checkpoints: Arc<Checkpoints>, cancel: CancellationToken) {
    periodic(
        &cancel,
        || Some(WATCHDOG_TICK),
        || async {
            let c = checkpoints.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || c.watch()).await {
                tracing::warn!("checkpoint watchdog failed: {e}");
            }
        },
    )
    .await;
}

/// Runs housekeeping every `interval` until cancelled; errors are logged, never fatal.
async fn housekeeping_loop(storage: Arc<Storage>, interval: std::time::Duration, cancel: CancellationToken) {
    periodic(
        &cancel,
        || Some(interval),
        || async {
            let s = storage.clone();
            match tokio::task::spawn_blocking(move || s.housekeep()).await {
                Ok(Ok(r)) if r.files_deleted > 0 || r.partitions_merged > 0 => tracing::debug!(
                    merged = r.partitions_merged,
                    deleted = r.files_deleted,
                    bytes = r.bytes_deleted,
                    "housekeeping"
                ),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!("housekeeping failed: {e}"),
                Err(e) => tracing::warn!("housekeeping task failed: {e}"),
            }
        },
    )
    .await;
}
