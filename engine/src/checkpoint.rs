//! Checkpoint mode: a consistent file-level copy of the root, while the database keeps serving.
//!
//! `CHECKPOINT CREATE`: pause housekeeping, pin the current snapshot, write the
//! record (`storage::write_checkpoint`). `CHECKPOINT RELEASE`: remove the
//! record, drop the pin, resume housekeeping. The record survives restarts; on start
//! the pin and the pause are re-established from it. A watchdog warns about a
//! forgotten checkpoint and, if `checkpoint.max.age` is set, releases it.
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use backup::layout::format_timestamp;
use storage::{CheckpointRecord, Pin, Storage};

use crate::config::CheckpointLimits;
use crate::error::{EngineError, Result};

/// How often the watchdog looks at an open checkpoint.
pub(crate) const WATCHDOG_TICK: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Active {
    /// Held for as long as the checkpoint is open.
    _pin: Pin,
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
                format_timestamp(record.started_at_micros)
            );
            Active {
                _pin: pin,
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
                format_timestamp(active.record.started_at_micros)
            )));
        }
        self.storage.pause_housekeeping();
        let (pin, snapshot) = self.storage.pin_current();
        let record = CheckpointRecord::new(self.storage.data_id(), snapshot);
        if let Err(e) = storage::write_checkpoint(&self.root, &record) {
            drop(pin);
            self.storage.resume_housekeeping();
            return Err(e.into());
        }
        let started = record.started_at_micros;
        tracing::info!(
            "checkpoint created: {} tables; copy the root now",
            record.snapshot.tables.len()
        );
        *state = Some(Active {
            _pin: pin,
            record,
            last_warned: None,
        });
        Ok(started)
    }

    /// Leaves checkpoint mode; returns false when there was none. Blocking I/O.
    pub(crate) fn release(&self) -> Result<bool> {
        let mut state = self.lock();
        if state.is_none() {
            return Ok(false);
        }
        storage::remove_checkpoint(&self.root)?;
        // Dropping the checkpoint releases its pin.
        *state = None;
        self.storage.resume_housekeeping();
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
                        format_timestamp(active.record.started_at_micros),
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
