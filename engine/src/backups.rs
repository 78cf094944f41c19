//! BACKUP DATABASE as the engine runs it: one background backup at a time over a
//! pinned snapshot, its live progress, the history shown by `backups()`, abort.
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use backup::{BackupJob, BackupRecord, Progress, Status, Store};
use storage::Storage;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::config::{BackupSettings, Schedule};
use crate::error::{EngineError, Result};
use crate::verifications::Verifications;

#[derive(Debug)]
struct Running {
    progress: Progress,
    cancel: CancellationToken,
}

/// How a backup ended, as its waiter sees it.
pub(crate) type Finished = oneshot::Receiver<backup::Outcome>;

#[derive(Debug)]
pub(crate) struct Backups {
    storage: Arc<Storage>,
    settings: BackupSettings,
    /// `None` when backups are disabled.
    store: Option<Store>,
    instance: String,
    history: Mutex<Vec<BackupRecord>>,
    running: Mutex<Option<Running>>,
    /// Failed backups: those in the history found at start, then every one since.
    failures: AtomicU64,
    /// Held by a running backup and by `DROP BACKUP`: a drop must never delete
    /// objects a running backup has decided to reuse.
    exclusive: Arc<tokio::sync::Mutex<()>>,
    /// Cancelled at shutdown: stops a running backup.
    shutdown: CancellationToken,
    verifications: Verifications,
    /// `backup.max.bandwidth.mb` and the compression slots, shared by every
    /// backup and verification so together they stay under the limit.
    limits: backup::Limits,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The place of the one running backup: while it lives, a backup counts as
/// running. It is freed when dropped, however the backup task ends (returns,
/// is cancelled, or panics), so no path leaves every later backup refused.
struct Slot {
    backups: Arc<Backups>,
    /// The lock shared with `DROP BACKUP`, held until the slot is freed.
    exclusive: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Slot {
    /// Publishes the final record and frees the place in one critical section
    /// (same lock order as `records`): whoever sees the finished record in the
    /// history can start the next backup.
    fn finish(mut self, outcome: &backup::Outcome) {
        let mut running = lock(&self.backups.running);
        let mut history = lock(&self.backups.history);
        if outcome.record.status == Status::BackupFailed {
            self.backups.failures.fetch_add(1, Ordering::Relaxed);
        }
        history.insert(0, outcome.record.clone());
        // Retention removed these records from the store; mirror exactly that.
        if let Some(plan) = &outcome.cleaned {
            history.retain(|r| !plan.deletes_history(r.backup_micros));
        }
        *running = None;
        self.exclusive = None;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut running = lock(&self.backups.running);
        // Still running here means the task stopped without finishing (a panic).
        if let Some(r) = running.take() {
            let mut record = lock(&r.progress).clone();
            record.status = Status::BackupFailed;
            record.end_micros = Some(self.backups.storage.clock().now_micros());
            record.backup_error = Some("the backup task stopped unexpectedly; see the server log".into());
            tracing::error!(
                "backup {} stopped unexpectedly",
                backup::layout::format_timestamp(record.backup_micros)
            );
            self.backups.failures.fetch_add(1, Ordering::Relaxed);
            lock(&self.backups.history).insert(0, record);
        }
    }
}

/// Why a backup or cleanup found in progress at startup failed.
const INTERRUPTED: &str = "interrupted: the server stopped during the backup";

impl Backups {
    /// Opens the store and loads the history (a store that cannot be reached now is
    /// logged, not fatal: the database must still start).
    pub(crate) async fn open(
        storage: Arc<Storage>,
        settings: BackupSettings,
        shutdown: CancellationToken,
    ) -> Result<Self> {
        let store = if settings.enabled {
            let conn = settings.store_connection(storage.root());
            Some(settings.open_store(&conn, settings.encryption.clone())?)
        } else {
            None
        };
        Self::with_store(storage, settings, store, shutdown).await
    }

    /// The same over a store opened by the caller (`None`: backups disabled).
    pub(crate) async fn with_store(
        storage: Arc<Storage>,
        settings: BackupSettings,
        store: Option<Store>,
        shutdown: CancellationToken,
    ) -> Result<Self> {
        let mut history = Vec::new();
        let mut instance = String::new();
        if let Some(store) = &store {
            instance = backup::instance_name(storage.db_dir(), settings.instance_name.as_deref())?;
            match backup::load_history(store, &instance).await {
                Ok(h) => history = h,
                Err(e) => tracing::warn!("cannot read the backup history from {}: {e}", store.display()),
            }
            // This server runs no backup yet, so a record in progress was left by a crash or stop.
            for r in &mut history {
                if let Err(e) = backup::settle_interrupted(store, r, INTERRUPTED).await {
                    tracing::warn!("cannot update the backup history: {e}");
                }
            }
        }
        let failures = history.iter().filter(|r| r.status == Status::BackupFailed).count();
        let limits = backup::Limits::new(settings.max_bandwidth, settings.compression_threads);
        let verifications = match &store {
            Some(store) => Verifications::load(store, &instance).await,
            None => Verifications::default(),
        };
        Ok(Self {
            storage,
            settings,
            store,
            instance,
            history: Mutex::new(history),
            running: Mutex::new(None),
            failures: AtomicU64::new(failures as u64),
            exclusive: Arc::default(),
            shutdown,
            verifications,
            limits,
        })
    }

    /// Starts a backup; returns its timestamp (micros) and how it will end.
    pub(crate) async fn start(self: &Arc<Self>) -> Result<(i64, Finished)> {
        let store = self.store()?;
        let exclusive = self.exclusive.clone().try_lock_owned().map_err(|_| {
            if self.is_running() {
                EngineError::State(
                    "a backup is already running; wait for it (see backups()) or run BACKUP ABORT".into(),
                )
            } else {
                EngineError::State("DROP BACKUP is running; start the backup when it is done".into())
            }
        })?;
        backup::check_data_id(&store, &self.instance, self.storage.data_id()).await?;
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
            limits: self.limits.clone(),
        };
        let now = self.storage.clock().now_micros();
        let progress: Progress = Arc::new(Mutex::new(backup::new_record(&job, now)));
        let cancel = self.shutdown.child_token();
        // Holding `exclusive`, no other backup runs.
        *lock(&self.running) = Some(Running {
            progress: progress.clone(),
            cancel: cancel.clone(),
        });
        let slot = Slot {
            backups: self.clone(),
            exclusive: Some(exclusive),
        };
        let (tx, rx) = oneshot::channel();
        let retention = self.settings.retention.clone();
        let clock = self.storage.clock().clone();
        crate::background::spawn(async move {
            // Both live exactly as long as this task, however it ends.
            let (_pin, slot) = (pin, slot);
            let outcome = backup::backup_and_cleanup(&job, &progress, &cancel, &retention, || clock.now_micros()).await;
            slot.finish(&outcome);
            let _ = tx.send(outcome);
        });
        Ok((backup_micros, rx))
    }

    /// What a backup now would upload (nothing is uploaded; the store is only listed).
    pub(crate) async fn estimate(&self) -> Result<backup::Estimate> {
        let store = self.store()?;
        let snapshot = self.storage.snapshot();
        backup::estimate(&store, &self.instance, &snapshot)
            .await
            .map_err(EngineError::from)
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
            .map_err(EngineError::from)
    }

    /// `DROP BACKUP`: deletes one complete backup of this instance (its manifest
    /// first) and the objects no other backup needs. Refused while a backup runs.
    pub(crate) async fn drop_backup(&self, timestamp: &str) -> Result<backup::CleanupReport> {
        let store = self.store()?;
        let _exclusive = self.exclusive.clone().try_lock_owned().map_err(|_| {
            EngineError::State(
                "a backup is running, and DROP BACKUP must not delete files it may reuse; wait for it (see \
                 backups()) or run BACKUP ABORT"
                    .into(),
            )
        })?;
        let micros = backup::parse_backup_timestamp(timestamp)?;
        let plan = backup::plan_drop(&store, &self.instance, micros)
            .await?
            .sparing_new_objects(self.settings.retention.new_object_grace_micros);
        let report = backup::cleanup(&store, &self.instance, &plan).await?;
        lock(&self.history).retain(|r| r.backup_micros != micros);
        tracing::info!(
            objects = report.objects_deleted,
            bytes = report.bytes_deleted,
            "backup {timestamp} dropped"
        );
        Ok(report)
    }

    /// `VERIFY BACKUP`: checks every file of a backup of this instance, on the
    /// background threads and paced like backups, and records the result. One
    /// runs at a time; dropping the returned future stops it.
    pub(crate) async fn verify(self: &Arc<Self>, timestamp: Option<String>) -> Result<backup::VerifyReport> {
        let store = self.store()?;
        let selector = backup::Selector {
            instance: Some(self.instance.clone()),
            timestamp,
        };
        let this = self.clone();
        let stop = CancellationToken::new();
        let _stop_when_dropped = stop.clone().drop_guard();
        crate::background::spawn(async move {
            let clock = this.storage.clock().clone();
            let run = this.verifications.run(&store, selector, &this.limits, clock.as_ref());
            tokio::select! {
                _ = stop.cancelled() => Err(EngineError::State("the verification was stopped".into())),
                verified = run => verified,
            }
        })
        .await
        .map_err(|e| EngineError::Task(format!("the verification stopped unexpectedly: {e}")))?
    }

    pub(crate) fn verifications(&self) -> &Verifications {
        &self.verifications
    }

    /// Where `backup_table()` reads: this instance in the store; `None` when backups are disabled.
    pub(crate) fn source(&self) -> Option<crate::BackupSource> {
        self.store.clone().map(|store| crate::BackupSource {
            store,
            instance: Some(self.instance.clone()),
        })
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

    /// The newest backup that completed (from the store's history after a restart).
    pub(crate) fn last_success(&self) -> Option<BackupRecord> {
        lock(&self.history)
            .iter()
            .find(|r| r.status.backup_succeeded())
            .cloned()
    }

    /// Backups that failed, counted from the history found at start.
    pub(crate) fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// What the store has done since the server started (`None`: backups disabled).
    pub(crate) fn store_counts(&self) -> Option<backup::OpCounts> {
        self.store.as_ref().map(Store::op_counts)
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

    /// For each of `records` (newest first), the retention rules that keep it
    /// were a cleanup to run now (`latest,daily`, ...); `None` for a backup it
    /// would delete and for one that is not complete.
    pub(crate) fn kept_by(&self, records: &[BackupRecord]) -> Vec<Option<String>> {
        // One verdict per complete record, in the records' order.
        let mut kept_by = self.settings.retention.kept_by(&complete(records)).into_iter();
        records
            .iter()
            .map(|r| match r.status.backup_succeeded() {
                true => kept_by.next().and_then(|k| k.describe()),
                false => None,
            })
            .collect()
    }
}

/// Starts a backup at every tick of the schedule until cancelled; a tick that finds
/// a backup still running is skipped and logged.
pub(crate) async fn run_schedule(backups: Arc<Backups>, schedule: Schedule, cancel: CancellationToken) {
    let clock = backups.storage.clock().clone();
    let until_next = || schedule.until_next(clock.now_micros());
    crate::background::periodic(&cancel, until_next, || async {
        if backups.is_running() {
            tracing::info!("scheduled backup skipped: the previous backup is still running");
            return;
        }
        match backups.start().await {
            Ok((micros, _)) => {
                tracing::info!("scheduled backup {} started", backup::layout::format_timestamp(micros))
            }
            Err(e) => tracing::warn!("scheduled backup could not start: {e}"),
        }
    })
    .await;
}

/// Runs `VERIFY BACKUP LATEST` at every tick of the schedule until cancelled; a
/// tick that finds a verification still running is skipped and logged.
pub(crate) async fn run_verify_schedule(backups: Arc<Backups>, schedule: Schedule, cancel: CancellationToken) {
    let clock = backups.storage.clock().clone();
    let until_next = || schedule.until_next(clock.now_micros());
    crate::background::periodic(&cancel, until_next, || async {
        if backups.verifications.is_running() {
            tracing::info!("scheduled verification skipped: the previous one is still running");
            return;
        }
        tokio::select! {
            _ = cancel.cancelled() => {}
            verified = backups.verify(None) => {
                if let Err(e) = verified {
                    tracing::warn!("scheduled verification failed: {e}");
                }
            }
        }
    })
    .await;
}

/// Micros of the complete backups in `history` (newest first, as it is kept).
fn complete(history: &[BackupRecord]) -> Vec<i64> {
    history
        .iter()
        .filter(|r| r.status.backup_succeeded())
        .map(|r| r.backup_micros)
        .collect()
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use object_store::local::LocalFileSystem;
    use storage::{Column, ColumnType, HousekeepingSettings, PartitionBy, SystemClock, TableMeta};

    use super::*;
    use crate::test_store::TestStore;

    fn table_meta() -> TableMeta {
        let cols = vec![
            Column {
                name: "ts".into(),
                ty: ColumnType::Timestamp,
            },
            Column {
                name: "v".into(),
                ty: ColumnType::Long,
            },
        ];
        TableMeta::new("t", cols, Some("ts".into()), PartitionBy::Day).unwrap()
    }

    fn append_day(storage: &Storage, day: i64) {
        let meta = table_meta();
        let batch = arrow::array::RecordBatch::try_new(
            meta.arrow_schema(),
            vec![
                Arc::new(arrow::array::TimestampMicrosecondArray::from(vec![
                    day * 86_400_000_000,
                ])),
                Arc::new(arrow::array::Int64Array::from(vec![day])),
            ],
        )
        .unwrap();
        storage.table("t").unwrap().append(&[batch]).unwrap();
    }

    async fn wait_until_idle(backups: &Backups) {
        for _ in 0..200 {
            if !backups.is_running() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the backup slot was never freed");
    }

    #[derive(Debug, Default)]
    struct ManualClock(std::sync::atomic::AtomicI64);

    impl storage::Clock for ManualClock {
        fn now_micros(&self) -> i64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    /// The backups `retention` keeps of `all`, computed apart from the code
    /// under test: group by the period's formatted name, keep the newest of the
    /// N greatest names.
    fn expected_kept(all: &[i64], retention: &backup::Retention) -> std::collections::BTreeSet<i64> {
        let mut kept: std::collections::BTreeSet<i64> = all.iter().rev().take(retention.latest).copied().collect();
        for (format, n) in [
            ("%Y-%m-%d", retention.daily),
            ("%G-W%V", retention.weekly),
            ("%Y-%m", retention.monthly),
        ] {
            let mut newest = std::collections::BTreeMap::<String, i64>::new();
            for m in all {
                let local = chrono::DateTime::from_timestamp_micros(*m)
                    .unwrap()
                    .with_timezone(&retention.tz);
                let slot = newest.entry(local.format(format).to_string()).or_insert(*m);
                *slot = (*slot).max(*m);
            }
            kept.extend(newest.values().rev().take(n));
        }
        kept
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn three_years_of_daily_backups_keep_exactly_what_the_calendar_rules_name() {
        let (db, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let clock = Arc::new(ManualClock::default());
        let storage = Storage::open(db.path(), clock.clone(), HousekeepingSettings::default(), None).unwrap();
        storage.create_table(table_meta(), false).unwrap();
        let store = Store::from_object_store(Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap()), "local");
        let retention = backup::Retention {
            latest: 3,
            daily: 7,
            weekly: 5,
            monthly: 12,
            tz: chrono_tz::Europe::Paris,
            new_object_grace_micros: 0,
        };
        let settings = BackupSettings {
            retention: retention.clone(),
            ..BackupSettings::default()
        };
        let backups = Arc::new(
            Backups::with_store(storage.clone(), settings, Some(store.clone()), CancellationToken::new())
                .await
                .unwrap(),
        );
        // 22:30 UTC: 23:30 in Paris in winter but 00:30 the next day in summer, so
        // the clock changes give Paris a day with two backups and a day with none,
        // and in the summer the last days end (Paris) weeks and months sooner.
        let first = chrono::Utc
            .with_ymd_and_hms(2023, 6, 1, 22, 30, 0)
            .unwrap()
            .timestamp_micros();
        let mut all = Vec::new();
        for day in 0..3 * 365 + 1 {
            let micros = first + day * 86_400_000_000;
            clock.0.store(micros, Ordering::SeqCst);
            // Each day's data replaces the last, so every deleted backup leaves
            // an object no other backup needs.
            storage.table("t").unwrap().truncate().unwrap();
            append_day(&storage, 19_000 + day);
            let (started, finished) = backups.start().await.unwrap();
            let outcome = finished.await.unwrap();
            assert!(outcome.error.is_none(), "day {day}: {outcome:?}");
            all.push(started);
        }

        let expected = expected_kept(&all, &retention);
        let in_utc = backup::Retention {
            tz: chrono_tz::UTC,
            ..retention.clone()
        };
        assert_ne!(expected, expected_kept(&all, &in_utc), "the time zone matters here");
        let in_store: std::collections::BTreeSet<i64> = backup::complete_backups(&store, &backups.instance)
            .await
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(in_store, expected);
        assert!(expected.len() >= 20, "every rule kept some: {}", expected.len());
        // backups() shows exactly the kept ones, each with the rules keeping it.
        let records = backups.records();
        let shown: std::collections::BTreeSet<i64> = records.iter().map(|r| r.backup_micros).collect();
        assert_eq!(shown, expected);
        let kept_by = backups.kept_by(&records);
        assert!(kept_by.iter().all(Option::is_some), "{kept_by:?}");
        assert_eq!(kept_by[0].as_deref(), Some("latest,daily,weekly,monthly"));
        assert_eq!(
            kept_by
                .iter()
                .filter(|k| k.as_deref().unwrap().contains("monthly"))
                .count(),
            12
        );
        // The store holds the history of the kept backups only, and exactly the
        // objects their manifests reference.
        let instance_dir = dir.path().join(backup::layout::instance_dir(&backups.instance));
        let histories: std::collections::BTreeSet<i64> = std::fs::read_dir(instance_dir.join("history"))
            .unwrap()
            .filter_map(|e| backup::layout::history_of(&e.unwrap().file_name().to_string_lossy()))
            .map(|(backup, _)| backup)
            .collect();
        assert_eq!(histories, expected);
        let mut referenced = std::collections::BTreeSet::new();
        for m in &expected {
            let manifest = backup::read_manifest(&store, &backups.instance, *m).await.unwrap();
            referenced.extend(
                manifest
                    .tables
                    .into_iter()
                    .flat_map(|t| t.files.into_iter().map(|f| f.object)),
            );
        }
        let mut objects = std::collections::BTreeSet::new();
        for shard in std::fs::read_dir(instance_dir.join("files")).unwrap() {
            let shard = shard.unwrap();
            for object in std::fs::read_dir(shard.path()).unwrap() {
                let (shard, object) = (shard.file_name(), object.unwrap().file_name());
                objects.insert(format!(
                    "files/{}/{}",
                    shard.to_string_lossy(),
                    object.to_string_lossy()
                ));
            }
        }
        assert_eq!(objects, referenced);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_panic_in_the_backup_task_frees_its_pin_and_its_slot() {
        let (db, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let housekeeping = HousekeepingSettings {
            orphan_grace_micros: 0,
            ..HousekeepingSettings::default()
        };
        let storage = Storage::open(db.path(), Arc::new(SystemClock), housekeeping, None).unwrap();
        storage.create_table(table_meta(), false).unwrap();
        append_day(&storage, 19_800);
        let faulty = Arc::new(TestStore::new(dir.path()));
        faulty.panic_on_manifest.store(true, Ordering::SeqCst);
        let store = Store::from_object_store(faulty.clone(), "panics-on-manifest");
        let backups = Arc::new(
            Backups::with_store(
                storage.clone(),
                BackupSettings::default(),
                Some(store),
                CancellationToken::new(),
            )
            .await
            .unwrap(),
        );

        let (_, finished) = backups.start().await.unwrap();
        assert!(finished.await.is_err(), "the task died before it could report");
        wait_until_idle(&backups).await;
        let failed = &backups.records()[0];
        assert_eq!(failed.status, Status::BackupFailed, "{failed:?}");
        assert!(
            failed
                .backup_error
                .as_deref()
                .unwrap_or("")
                .contains("stopped unexpectedly")
        );

        // The pin is gone: files the snapshot held can be reclaimed.
        storage.table("t").unwrap().truncate().unwrap();
        let deleted: usize = (0..2).map(|_| storage.housekeep().unwrap().files_deleted).sum();
        assert_eq!(deleted, 1, "the dropped file is no longer pinned");

        // And the next backup runs.
        faulty.panic_on_manifest.store(false, Ordering::SeqCst);
        append_day(&storage, 19_801);
        let (_, finished) = backups.start().await.unwrap();
        let outcome = finished.await.unwrap();
        assert!(outcome.error.is_none(), "{outcome:?}");
        assert!(outcome.record.status.backup_succeeded(), "{outcome:?}");
    }
}
