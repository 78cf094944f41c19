//! BACKUP DATABASE as the engine runs it: one background backup at a time over a
//! pinned snapshot, its live progress, the history shown by `backups()`, abort.
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use backup::{BackupJob, BackupRecord, Progress, Status, Store};
use storage::Storage;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::error::{EngineError, Result};

/// Validated `backup.*` settings.
#[derive(Debug, Clone)]
pub struct BackupSettings {
    pub enabled: bool,
    /// `backup.object.store`; `None` means `fs::root=ROOT/backups;`.
    pub object_store: Option<crate::config::Secret>,
    pub compression_level: i32,
    /// `backup.compression.threads`: compressions running at once.
    pub compression_threads: usize,
    /// `backup.max.bandwidth.mb` in bytes per second.
    pub max_bandwidth: Option<u64>,
    pub keep_latest: usize,
    pub instance_name: Option<String>,
    /// `backup.schedule.cron` in `backup.schedule.tz`.
    pub schedule: Option<Schedule>,
    /// `backup.encryption.key` / `.key.file`: everything stored is sealed with it.
    pub encryption: Option<backup::Cipher>,
}

/// When scheduled backups run.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub cron: croner::Cron,
    pub tz: chrono_tz::Tz,
}

impl Schedule {
    /// The first run strictly after `now_micros`, in micros.
    pub fn next_after(&self, now_micros: i64) -> Option<i64> {
        let now = chrono::DateTime::from_timestamp_micros(now_micros)?.with_timezone(&self.tz);
        let next = self.cron.find_next_occurrence(&now, false).ok()?;
        Some(next.timestamp_micros())
    }
}

impl Default for BackupSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            object_store: None,
            compression_level: 5,
            // Half the cores: the other half stays with foreground queries and inserts.
            compression_threads: std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)),
            max_bandwidth: None,
            keep_latest: 5,
            instance_name: None,
            schedule: None,
            encryption: None,
        }
    }
}

#[derive(Debug)]
struct Running {
    progress: Progress,
    cancel: CancellationToken,
}

#[derive(Debug)]
pub(crate) struct Backups {
    storage: Arc<Storage>,
    settings: BackupSettings,
    /// `None` when backups are disabled.
    store: Option<Store>,
    instance: String,
    history: Mutex<Vec<BackupRecord>>,
    running: Mutex<Option<Running>>,
    /// Cancelled at shutdown: stops a running backup.
    shutdown: CancellationToken,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Backups {
    /// Opens the store and loads the history (a store that cannot be reached now is
    /// logged, not fatal: the database must still start).
    pub(crate) async fn open(
        storage: Arc<Storage>,
        settings: BackupSettings,
        shutdown: CancellationToken,
    ) -> Result<Self> {
        let (store, instance) = if settings.enabled {
            let conn = crate::restore::store_connection(storage.root(), &settings);
            let store = Store::open(&conn)
                .map_err(backup_err)?
                .with_cipher(settings.encryption.clone());
            let instance =
                backup::instance_name(storage.db_dir(), settings.instance_name.as_deref()).map_err(backup_err)?;
            (Some(store), instance)
        } else {
            (None, String::new())
        };
        let mut history = Vec::new();
        if let Some(store) = &store {
            match backup::load_history(store, &instance).await {
                Ok(h) => history = h,
                Err(e) => tracing::warn!("cannot read the backup history from {}: {e}", store.display),
            }
            for r in history.iter_mut().filter(|r| r.status == Status::BackupInProgress) {
                // This server runs no backup yet, so the record was left by a crash or stop.
                r.status = Status::BackupFailed;
                r.backup_error = Some("interrupted: the server stopped during the backup".into());
                if let Err(e) = backup::put_history(store, r).await {
                    tracing::warn!("cannot update the backup history: {e}");
                }
            }
        }
        Ok(Self {
            storage,
            settings,
            store,
            instance,
            history: Mutex::new(history),
            running: Mutex::new(None),
            shutdown,
        })
    }

    /// Starts a backup; returns its timestamp (micros) and a receiver for its final record.
    pub(crate) async fn start(self: &Arc<Self>) -> Result<(i64, oneshot::Receiver<BackupRecord>)> {
        let store = self.store()?;
        if lock(&self.running).is_some() {
            return Err(EngineError::State(
                "a backup is already running; wait for it (see backups()) or run BACKUP ABORT".into(),
            ));
        }
        backup::check_data_id(&store, &self.instance, self.storage.data_id())
            .await
            .map_err(backup_err)?;
        let (pin, snapshot) = self.storage.pin_current();
        let last = lock(&self.history).first().map_or(i64::MIN, |r| r.backup_micros);
        let backup_micros = snapshot.taken_at_micros.max(last.saturating_add(1));
        let table_dirs: HashMap<_, _> = snapshot
            .tables
            .keys()
            .filter_map(|n| Some((n.clone(), self.storage.table(n)?.dir().to_path_buf())))
            .collect();
        let job = BackupJob {
            store,
            instance: self.instance.clone(),
            data_id: self.storage.data_id().to_string(),
            backup_micros,
            snapshot,
            table_dirs,
            compression_level: self.settings.compression_level,
            limits: backup::Limits::new(self.settings.max_bandwidth, self.settings.compression_threads),
        };
        let now = self.storage.clock().now_micros();
        let progress: Progress = Arc::new(Mutex::new(backup::new_record(&job, now)));
        let cancel = self.shutdown.child_token();
        {
            let mut running = lock(&self.running);
            if running.is_some() {
                self.storage.unpin(pin);
                return Err(EngineError::State("a backup is already running".into()));
            }
            *running = Some(Running {
                progress: progress.clone(),
                cancel: cancel.clone(),
            });
        }
        let (tx, rx) = oneshot::channel();
        let me = self.clone();
        crate::background::spawn(async move {
            let clock = me.storage.clock().clone();
            let record =
                backup::backup_and_cleanup(&job, &progress, &cancel, me.settings.keep_latest, || clock.now_micros())
                    .await;
            me.storage.unpin(pin);
            {
                // One critical section (same lock order as `records`): whoever sees the
                // finished record in the history can start the next backup.
                let mut running = lock(&me.running);
                let mut history = lock(&me.history);
                history.insert(0, record.clone());
                if record.status.backup_succeeded() {
                    // Retention removed older records from the store; mirror that.
                    if let Ok(kept) = kept_after_cleanup(&history, me.settings.keep_latest) {
                        history.retain(|r| r.backup_micros >= kept);
                    }
                }
                *running = None;
            }
            let _ = tx.send(record);
        });
        Ok((backup_micros, rx))
    }

    /// What a backup now would upload (nothing is uploaded; the store is only listed).
    pub(crate) async fn estimate(&self) -> Result<backup::Estimate> {
        let store = self.store()?;
        let snapshot = self.storage.snapshot();
        backup::estimate(&store, &self.instance, &snapshot)
            .await
            .map_err(backup_err)
    }

    /// `RESTORE TABLE`: one table of a backup of this database's instance, into the running database.
    pub(crate) async fn restore_table(
        &self,
        timestamp: Option<String>,
        request: &backup::TableRequest,
    ) -> Result<backup::RestoreReport> {
        let store = self.store()?;
        let selector = backup::Selector {
            instance: Some(self.instance.clone()),
            timestamp,
        };
        backup::restore_table(&store, &selector, request, &self.storage)
            .await
            .map_err(backup_err)
    }

    /// `VERIFY BACKUP`: checks every file of a backup of this instance.
    pub(crate) async fn verify(&self, timestamp: Option<String>) -> Result<backup::VerifyReport> {
        let store = self.store()?;
        let selector = backup::Selector {
            instance: Some(self.instance.clone()),
            timestamp,
        };
        backup::verify(&store, &selector, &|_, _| {}).await.map_err(backup_err)
    }

    fn store(&self) -> Result<Store> {
        self.store
            .clone()
            .ok_or_else(|| EngineError::State("backups are disabled (backup.enabled=false)".into()))
    }

    /// Asks the running backup to stop; false when none runs.
    pub(crate) fn abort(&self) -> bool {
        match lock(&self.running).as_ref() {
            Some(r) => {
                r.cancel.cancel();
                true
            }
            None => false,
        }
    }

    pub(crate) fn is_running(&self) -> bool {
        lock(&self.running).is_some()
    }

    /// The running backup (if any) and the history, newest first.
    pub(crate) fn records(&self) -> Vec<BackupRecord> {
        let mut out: Vec<BackupRecord> = lock(&self.running)
            .as_ref()
            .map(|r| lock(&r.progress).clone())
            .into_iter()
            .collect();
        out.extend(lock(&self.history).iter().cloned());
        out
    }
}

/// Starts a backup at every tick of the schedule until cancelled; a tick that finds
/// a backup still running is skipped and logged.
pub(crate) async fn run_schedule(backups: Arc<Backups>, schedule: Schedule, cancel: CancellationToken) {
    loop {
        let now = backups.storage.clock().now_micros();
        let Some(next) = schedule.next_after(now) else {
            tracing::warn!("backup.schedule.cron has no future run; scheduled backups stop");
            return;
        };
        let wait = std::time::Duration::from_micros(next.saturating_sub(now).max(0) as u64);
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        if backups.is_running() {
            tracing::info!("scheduled backup skipped: the previous backup is still running");
            continue;
        }
        match backups.start().await {
            Ok((micros, _)) => {
                tracing::info!("scheduled backup {} started", backup::layout::format_timestamp(micros))
            }
            Err(e) => tracing::warn!("scheduled backup could not start: {e}"),
        }
    }
}

/// Micros of the oldest complete backup retention keeps.
fn kept_after_cleanup(history: &[BackupRecord], keep: usize) -> std::result::Result<i64, ()> {
    let complete: Vec<i64> = history
        .iter()
        .filter(|r| r.status.backup_succeeded())
        .map(|r| r.backup_micros)
        .collect();
    if complete.len() <= keep || keep == 0 {
        return Err(());
    }
    Ok(complete[keep - 1])
}

pub(crate) fn backup_err(e: backup::BackupError) -> EngineError {
    match e {
        backup::BackupError::Config { key, reason } => EngineError::Config(crate::config::ConfigError::Invalid {
            key,
            origin: String::new(),
            reason,
        }),
        backup::BackupError::Storage(s) => EngineError::Storage(s),
        backup::BackupError::NotFound(m) => EngineError::InvalidInput(m),
        other => EngineError::Backup(other.to_string()),
    }
}
