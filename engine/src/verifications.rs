//! Verifications the server runs (`VERIFY BACKUP`, `backup.verify.schedule.cron`)
//! and what they found: each run's record goes to the store beside the history,
//! the newest per backup is kept here for `backups()` and the metrics (loaded
//! from the store at start, so a restart forgets nothing).
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use backup::{Limits, Selector, Store, VerifyRecord, VerifyReport};
use storage::Clock;

use crate::error::{EngineError, Result};

#[derive(Debug, Default)]
pub(crate) struct Verifications {
    /// The newest record of each backup, by the backup's micros.
    newest: Mutex<HashMap<i64, VerifyRecord>>,
    /// When the newest verification that found a backup sound ended.
    last_sound: Mutex<Option<i64>>,
    /// Verifications since start that found a file that would not restore.
    corrupt_found: AtomicU64,
    /// Held while one runs: verifications run one at a time.
    running: tokio::sync::Mutex<()>,
}

impl Verifications {
    /// The records in the store (a store that cannot be read now is logged).
    pub(crate) async fn load(store: &Store, instance: &str) -> Self {
        let stored = backup::load_verifications(store, instance).await.unwrap_or_else(|e| {
            tracing::warn!("cannot read the verification records from {}: {e}", store.display());
            backup::StoredVerifications::default()
        });
        Self {
            newest: Mutex::new(stored.newest.into_iter().map(|r| (r.backup_micros, r)).collect()),
            last_sound: Mutex::new(stored.last_sound_micros),
            ..Self::default()
        }
    }

    /// The newest verification of the backup at `backup_micros`.
    pub(crate) fn of(&self, backup_micros: i64) -> Option<VerifyRecord> {
        self.lock().get(&backup_micros).cloned()
    }

    /// When the newest verification that found every file sound ended.
    pub(crate) fn last_success_micros(&self) -> Option<i64> {
        *self.last_sound.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn corrupt_found(&self) -> u64 {
        self.corrupt_found.load(Ordering::Relaxed)
    }

    pub(crate) fn is_running(&self) -> bool {
        self.running.try_lock().is_err()
    }

    /// Verifies the selected backup of `instance`, paced by `limits`, and
    /// records what it found (in the store, here, and in the log: an error
    /// naming every file that would not restore).
    pub(crate) async fn run(
        &self,
        store: &Store,
        selector: Selector,
        limits: &Limits,
        clock: &dyn Clock,
    ) -> Result<VerifyReport> {
        let _one_at_a_time = self.running.try_lock().map_err(|_| {
            EngineError::State("a verification is already running; wait for it (see backups() verify_status)".into())
        })?;
        let started = clock.now_micros();
        let report = backup::verify(store, &selector, Some(limits), &|_, _| {}).await?;
        let record = VerifyRecord::new(&report, started, clock.now_micros());
        for p in &report.problems {
            tracing::error!(
                "backup {} is corrupt: table {} file {} (object {}): {}",
                report.backup_timestamp,
                p.table,
                p.path,
                p.object,
                p.reason
            );
        }
        if report.ok() {
            let mut last = self.last_sound.lock().unwrap_or_else(|p| p.into_inner());
            *last = (*last).max(Some(record.verified_micros));
        } else {
            self.corrupt_found.fetch_add(1, Ordering::Relaxed);
        }
        if let Err(e) = backup::put_verification(store, &report.instance, &record).await {
            tracing::warn!(
                "backup {}: cannot store the verification record: {e}",
                report.backup_timestamp
            );
        }
        tracing::info!(
            files = report.files,
            bytes = report.bytes,
            problems = report.problems.len(),
            "backup {} verified: {}",
            report.backup_timestamp,
            record.status.as_str()
        );
        self.lock().insert(record.backup_micros, record);
        Ok(report)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, VerifyRecord>> {
        self.newest.lock().unwrap_or_else(|p| p.into_inner())
    }
}
