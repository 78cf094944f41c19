//! Checkpoint mode: a consistent file-level copy of the root, while the database keeps serving.
//!
//! `CHECKPOINT CREATE`: pause housekeeping, pin the current snapshot, write the
//! record (`storage::write_checkpoint`). `CHECKPOINT RELEASE`: remove the
//! record, unpin, resume housekeeping. The record survives restarts; on start
//! the pin and the pause are re-established from it. A watchdog warns about a
//! forgotten checkpoint and, if `checkpoint.max.age` is set, releases it.
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use storage::{CheckpointRecord, PinId, Storage};

use crate::error::{EngineError, Result};

/// How often the watchdog looks at an open checkpoint.
pub(crate) const WATCHDOG_TICK: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Active {
    pin: PinId,
    record: CheckpointRecord,
    /// When the watchdog last warned (micros), to warn once per `warn_after`.
    last_warned: Option<i64>,
}

/// What `checkpoint_status()` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointStatus {
    pub in_progress: bool,
    pub started_at_micros: Option<i64>,
    /// Bytes of checkpointed files that no table references any more: space a
    /// forgotten RELEASE keeps from being reclaimed.
    pub pinned_bytes: u64,
}

/// When to warn about, and when to give up on, an open checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointLimits {
    pub warn_after: Duration,
    pub max_age: Option<Duration>,
}

impl Default for CheckpointLimits {
    fn default() -> Self {
        Self {
            warn_after: Duration::from_secs(3600),
            max_age: None,
        }
    }
}

#[derive(Debug)]
pub(crate) struct Checkpoints {
    storage: Arc<Storage>,
    root: PathBuf,
    limits: CheckpointLimits,
    state: Mutex<Option<Active>>,
}

impl Checkpoints {
    /// Re-enters checkpoint mode if `record` (read at startup) says one is open.
    pub(crate) fn new(storage: Arc<Storage>, limits: CheckpointLimits, record: Option<CheckpointRecord>) -> Self {
        let state = record.map(|record| {
            storage.pause_housekeeping();
            let pin = storage.pin(record.snapshot.clone());
            tracing::info!(
                "checkpoint started at {} is still in progress; housekeeping stays paused until CHECKPOINT RELEASE",
                format_micros(record.started_at_micros)
            );
            Active {
                pin,
                record,
                last_warned: None,
            }
        });
        Self {
            root: storage.root().to_path_buf(),
            storage,
            limits,
            state: Mutex::new(state),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<Active>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Enters checkpoint mode; returns its start time (micros). Blocking I/O.
    pub(crate) fn create(&self) -> Result<i64> {
        // A copy taken now must be of files that are on disk.
        self.storage.wait_writable()?;
        let mut state = self.lock();
        if let Some(active) = state.as_ref() {
            return Err(EngineError::State(format!(
                "a checkpoint is already in progress (started {}); run CHECKPOINT RELEASE first",
                format_micros(active.record.started_at_micros)
            )));
        }
        self.storage.pause_housekeeping();
        let (pin, snapshot) = self.storage.pin_current();
        let record = CheckpointRecord::new(self.storage.data_id(), snapshot);
        if let Err(e) = storage::write_checkpoint(&self.root, &record) {
            self.storage.unpin(pin);
            self.storage.resume_housekeeping();
            return Err(e.into());
        }
        let started = record.started_at_micros;
        tracing::info!(
            "checkpoint created: {} tables; copy the root now",
            record.snapshot.tables.len()
        );
        *state = Some(Active {
            pin,
            record,
            last_warned: None,
        });
        Ok(started)
    }

    /// Leaves checkpoint mode; returns false when there was none. Blocking I/O.
    pub(crate) fn release(&self) -> Result<bool> {
        let mut state = self.lock();
        let Some(active) = state.as_ref() else {
            return Ok(false);
        };
        storage::remove_checkpoint(&self.root)?;
        self.storage.unpin(active.pin);
        self.storage.resume_housekeeping();
        *state = None;
        tracing::info!("checkpoint released; housekeeping resumed");
        Ok(true)
    }

    pub(crate) fn status(&self) -> CheckpointStatus {
        let state = self.lock();
        let Some(active) = state.as_ref() else {
            return CheckpointStatus {
                in_progress: false,
                started_at_micros: None,
                pinned_bytes: 0,
            };
        };
        let mut pinned_bytes = 0;
        for (name, t) in &active.record.snapshot.tables {
            let live: std::collections::HashSet<String> = self
                .storage
                .table(name)
                .map(|table| table.commit().files.iter().map(|f| f.path.clone()).collect())
                .unwrap_or_default();
            pinned_bytes += t
                .commit
                .files
                .iter()
                .filter(|f| !live.contains(&f.path))
                .map(|f| f.bytes)
                .sum::<u64>();
        }
        CheckpointStatus {
            in_progress: true,
            started_at_micros: Some(active.record.started_at_micros),
            pinned_bytes,
        }
    }

    /// One watchdog look: warn about an old checkpoint, release one past `max_age`.
    pub(crate) fn watch(&self) {
        let now = self.storage.clock().now_micros();
        let release = {
            let mut state = self.lock();
            let Some(active) = state.as_mut() else { return };
            let age = Duration::from_micros(now.saturating_sub(active.record.started_at_micros).max(0) as u64);
            if self.limits.max_age.is_some_and(|max| age >= max) {
                true
            } else {
                let warn_every = self.limits.warn_after.as_micros() as i64;
                let due = age >= self.limits.warn_after
                    && active.last_warned.is_none_or(|last| now - last >= warn_every.max(1));
                if due {
                    active.last_warned = Some(now);
                    tracing::warn!(
                        "checkpoint started {} is still open after {}; run CHECKPOINT RELEASE when the copy is done \
                         (housekeeping is paused and disk space is held back)",
                        format_micros(active.record.started_at_micros),
                        humantime::format_duration(Duration::from_secs(age.as_secs()))
                    );
                }
                false
            }
        };
        if release {
            tracing::warn!("checkpoint is older than checkpoint.max.age; releasing it automatically");
            if let Err(e) = self.release() {
                tracing::warn!("automatic checkpoint release failed: {e}");
            }
        }
    }
}

/// Restores a root copied during a checkpoint when `ROOT/_restore` exists (before opening).
pub(crate) fn apply_restore_trigger(root: &Path) -> Result<()> {
    let trigger = root.join(RESTORE_TRIGGER);
    if !trigger.exists() {
        return Ok(());
    }
    let Some(record) = storage::read_checkpoint(root)? else {
        return Err(EngineError::State(format!(
            "{} exists but this root holds no checkpoint record ({}/.checkpoint/checkpoint.json): there is nothing \
             to restore to. Copy the root while a checkpoint is in progress, or remove {} to start as-is",
            trigger.display(),
            root.display(),
            trigger.display()
        )));
    };
    let report = storage::restore_checkpoint(root, &record)?;
    // `_restore` goes first: a crash before the record is removed leaves a restored
    // database still in checkpoint mode, which is safe; the reverse would refuse to start.
    std::fs::remove_file(&trigger).map_err(|source| storage::StorageError::Io {
        context: format!("removing {}", trigger.display()),
        source,
    })?;
    storage::fsync_dir(root)?;
    storage::remove_checkpoint(root)?;
    tracing::info!(
        tables = report.tables_restored,
        rows = report.rows,
        brought_back = ?report.tables_brought_back,
        removed = ?report.tables_removed,
        "restored the checkpoint of {}",
        format_micros(record.started_at_micros)
    );
    Ok(())
}

/// Name of the trigger file that asks for a rollback to the checkpoint on startup.
pub const RESTORE_TRIGGER: &str = "_restore";

pub(crate) fn format_micros(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
        .unwrap_or_else(|| micros.to_string())
}
