//! Commit shipping (`replication.role=primary`): a background task puts every
//! journaled commit in the store within the throttle window, one log object
//! per window and nothing at all while nothing commits; a failing store is
//! retried with backoff while commits go on locally. `replication_status()`
//! shows how it goes.
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backup::{Shipper, Store, Window};
use storage::Storage;
use tokio_util::sync::CancellationToken;

use crate::config::{BackupSettings, ReplicationSettings};
use crate::error::Result;

/// How often the task looks for a new commit (an in-memory check).
const POLL: Duration = Duration::from_millis(20);
const FIRST_RETRY: Duration = Duration::from_millis(500);
const LAST_RETRY: Duration = Duration::from_secs(30);
/// How long a stopping server keeps trying to ship what is left.
const FINAL_SHIP: Duration = Duration::from_secs(10);

/// What `replication_status()` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationStatus {
    pub role: &'static str,
    /// `shipping`, `caught up` or `failing` (`off` without shipping).
    pub state: &'static str,
    pub last_shipped_micros: Option<i64>,
    /// Age of the oldest commit not yet in the store; 0 when caught up.
    pub lag_ms: i64,
    pub pending_commits: u64,
    pub window: Option<Window>,
    pub last_error: Option<String>,
}

#[derive(Debug, Default)]
struct Shared {
    last_shipped_micros: Option<i64>,
    window: Option<Window>,
    /// The error of the last attempt, cleared by a success.
    last_error: Option<String>,
}

/// Commit shipping of one database.
#[derive(Debug)]
pub(crate) struct Replication {
    storage: Arc<Storage>,
    primary: bool,
    shared: Mutex<Shared>,
    /// The state when the journal was enabled, pinned until the shipper takes it.
    start: Mutex<Option<(storage::Pin, storage::Snapshot)>>,
}

impl Replication {
    /// Turns the journal on (shipping) or removes a stale one (not shipping).
    pub(crate) fn open(storage: Arc<Storage>, settings: &ReplicationSettings) -> Result<Arc<Self>> {
        let start = if settings.primary {
            storage.enable_journal()?;
            // What a first log object starts from, if the journal does not continue the store's log.
            Some(storage.pin_current())
        } else {
            storage.discard_journal()?;
            None
        };
        Ok(Arc::new(Self {
            storage,
            primary: settings.primary,
            shared: Mutex::new(Shared::default()),
            start: Mutex::new(start),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn status(&self) -> ReplicationStatus {
        let (pending, oldest) = self.storage.journal_backlog();
        let now = self.storage.clock().now_micros();
        let s = self.lock();
        let state = match (self.primary, &s.last_error, pending) {
            (false, _, _) => "off",
            (true, Some(_), _) => "failing",
            (true, None, 0) => "caught up",
            (true, None, _) => "shipping",
        };
        ReplicationStatus {
            role: if self.primary { "primary" } else { "none" },
            state,
            last_shipped_micros: s.last_shipped_micros,
            lag_ms: oldest.map_or(0, |o| (now - o).max(0) / 1000),
            pending_commits: pending as u64,
            window: s.window,
            last_error: s.last_error.clone(),
        }
    }

    fn failed(&self, what: &str, e: &backup::BackupError) {
        tracing::warn!("commit shipping: {what}: {e}");
        self.lock().last_error = Some(format!("{what}: {e}"));
    }

    /// Ships until `cancel`, then once more what is left (for up to [`FINAL_SHIP`]).
    pub(crate) async fn run(
        self: Arc<Self>,
        store: Store,
        backup: BackupSettings,
        window: Duration,
        cancel: CancellationToken,
    ) {
        let Some(start) = self.start.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        let mut retry = FIRST_RETRY;
        let mut shipper = loop {
            let opened = async {
                let instance = backup::instance_name(self.storage.db_dir(), backup.instance_name.as_deref())?;
                let limits = backup::Limits::new(backup.max_bandwidth, backup.compression_threads);
                let shipper = Shipper::open(
                    store.clone(),
                    &instance,
                    self.storage.data_id(),
                    backup.compression_level,
                    limits,
                )
                .await?;
                let complete = backup::complete_backups(&store, &instance).await?;
                let window = backup::window(&store, &instance, &complete).await?;
                Ok::<_, backup::BackupError>((shipper, window))
            };
            match opened.await {
                Ok((shipper, window)) => {
                    let mut s = self.lock();
                    s.last_shipped_micros = shipper.log_end();
                    s.window = window;
                    s.last_error = None;
                    break shipper.starting_from(start);
                }
                Err(e) => self.failed("cannot open the store", &e),
            }
            if sleep_or_cancel(retry, &cancel).await {
                return;
            }
            retry = (retry * 2).min(LAST_RETRY);
        };
        retry = FIRST_RETRY;
        loop {
            let due = self.wait_for_due(window, &cancel).await;
            if !due {
                break;
            }
            if self.ship(&mut shipper).await {
                retry = FIRST_RETRY;
            } else {
                if sleep_or_cancel(retry, &cancel).await {
                    break;
                }
                retry = (retry * 2).min(LAST_RETRY);
            }
        }
        if self.storage.journal_backlog().0 > 0
            && tokio::time::timeout(FINAL_SHIP, self.ship(&mut shipper)).await.is_err()
        {
            tracing::warn!("commit shipping: stopped with commits not yet in the store; they go up at the next start");
        }
    }

    /// Waits until the oldest pending commit has waited the window; false when cancelled.
    async fn wait_for_due(&self, window: Duration, cancel: &CancellationToken) -> bool {
        loop {
            if let (_, Some(oldest)) = self.storage.journal_backlog() {
                let waited = self.storage.clock().now_micros() - oldest;
                let left = (window.as_micros() as i64 - waited).max(0) as u64;
                if left == 0 {
                    return true;
                }
                if sleep_or_cancel(Duration::from_micros(left).min(window), cancel).await {
                    return false;
                }
                continue;
            }
            if sleep_or_cancel(POLL, cancel).await {
                return false;
            }
        }
    }

    /// One shipping round; true when it succeeded (or had nothing to do).
    async fn ship(&self, shipper: &mut Shipper) -> bool {
        match shipper.ship(&self.storage).await {
            Ok(shipped) => {
                let mut s = self.lock();
                s.last_error = None;
                if let Some(shipped) = shipped {
                    tracing::debug!(
                        seq = shipped.seq,
                        changes = shipped.changes,
                        files = shipped.files_uploaded,
                        "commit shipping: log object written"
                    );
                    s.last_shipped_micros = Some(shipped.through_micros);
                    s.window = Some(match s.window {
                        Some(w) => Window {
                            end: w.end.max(shipped.through_micros),
                            ..w
                        },
                        None => Window {
                            start: shipped.base_micros.unwrap_or(shipped.through_micros),
                            end: shipped.through_micros,
                        },
                    });
                }
                true
            }
            Err(e) => {
                self.failed("cannot ship commits", &e);
                false
            }
        }
    }
}

/// Sleeps `d`; true when cancelled first.
async fn sleep_or_cancel(d: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = cancel.cancelled() => true,
    }
}
