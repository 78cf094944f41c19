//! Instant restore: a database whose catalog was installed from a backup's
//! state (`backup.restore.mode=instant`) serves at once while its files
//! arrive. Until a file is here, scans read it where it lies, like
//! `backup_table()`; a background hydrator fetches each file — queried ones
//! first, then the newest partitions — checks it (size, blake3, Parquet
//! footer, rows) and puts it in its partition folder durably (in batches: a
//! sync, the renames, a sync), after which scans read it locally.
//!
//! `db/.hydration.json` (the installed state) and `db/.hydration.source` (the
//! trigger's text, to reach the store again) stay until every file is here, so
//! a restart resumes: a file in its final place was checked and synced before
//! it was renamed there, so it is never fetched again (files fetched but not
//! yet placed are fetched again). Housekeeping is paused
//! meanwhile (a merge would read files that are not here yet).
use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use backup::{BackedUpFile, Manifest, RemoteFile, Store};
use storage::Storage;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::BackupSettings;
use crate::error::{EngineError, Result};

/// The trigger's text, kept in `db/` to reach the store after a restart.
pub(crate) const HYDRATION_SOURCE: &str = ".hydration.source";
/// Where files are fetched to before they are checked and renamed into place.
const FETCH_DIR: &str = ".hydration-tmp";
/// A file that failed is tried again after this, doubling up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(500);
const MAX_RETRY: Duration = Duration::from_secs(30);

/// A file by table and path in the table.
type FileKey = (String, String);

/// What `restore_status()` shows.
#[derive(Debug, Clone, PartialEq)]
pub struct RestoreStatus {
    /// `hydrating`, `failed` (a file keeps failing; retried), `complete`; `none`
    /// when no instant restore ran since the start.
    pub state: &'static str,
    pub backup_timestamp: Option<String>,
    pub files_total: u64,
    pub files_local: u64,
    pub bytes_total: u64,
    pub bytes_local: u64,
    /// Bytes fetched per second since this start.
    pub bytes_per_second: f64,
    pub last_error: Option<String>,
}

impl RestoreStatus {
    /// How `hydration` goes; `none` without one.
    pub(crate) fn of(hydration: Option<&Arc<Hydration>>) -> Self {
        hydration.map_or_else(Self::none, |h| h.status())
    }

    fn none() -> Self {
        Self {
            state: "none",
            backup_timestamp: None,
            files_total: 0,
            files_local: 0,
            bytes_total: 0,
            bytes_local: 0,
            bytes_per_second: 0.0,
            last_error: None,
        }
    }
}

struct Job {
    key: FileKey,
    attempts: u32,
    not_before: Instant,
}

impl Job {
    fn first(key: FileKey) -> Self {
        Self {
            key,
            attempts: 0,
            not_before: Instant::now(),
        }
    }
}

#[derive(Default)]
struct Queue {
    /// Files not here yet.
    remote: HashMap<FileKey, Arc<RemoteFile>>,
    /// Files not tried yet, in the order they are fetched: newest partitions first.
    order: VecDeque<FileKey>,
    /// Files queries read, fetched before the rest (each once in the queue).
    wanted: VecDeque<FileKey>,
    wanted_set: HashSet<FileKey>,
    /// Files that failed, with when to try again.
    retry: HashMap<FileKey, Job>,
    in_flight: HashSet<FileKey>,
    /// The last error of each file that failed, until it succeeds.
    failing: HashMap<FileKey, String>,
    last_error: Option<String>,
    /// Fetched and checked, not yet in place.
    ready: Vec<Ready>,
    complete: bool,
}

impl Queue {
    /// Whether `key` may be fetched now for the first time (not here yet, not
    /// being fetched, not waiting to be tried again).
    fn untried(&self, key: &FileKey) -> bool {
        self.remote.contains_key(key) && !self.in_flight.contains(key) && !self.retry.contains_key(key)
    }
}

/// What a worker does next.
enum Next {
    Fetch(Job),
    /// Nothing is due before this.
    WaitUntil(Instant),
    /// Nothing is left.
    Done,
}

pub(crate) struct Hydration {
    storage: Arc<Storage>,
    store: Store,
    backup_timestamp: String,
    limits: backup::Limits,
    queue: Mutex<Queue>,
    /// Held by the one task putting files in place.
    placer: tokio::sync::Mutex<()>,
    wake: Notify,
    files_total: u64,
    bytes_total: u64,
    files_local: AtomicU64,
    bytes_local: AtomicU64,
    fetched: AtomicU64,
    started: Instant,
    progress: backup::PercentSteps,
}

impl std::fmt::Debug for Hydration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hydration")
            .field("backup", &self.backup_timestamp)
            .finish_non_exhaustive()
    }
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> EngineError {
    move |source| storage::StorageError::Io { context, source }.into()
}

impl Hydration {
    /// The hydration an instant restore left in `storage`'s root, if any:
    /// every file of the installed state that the tables still reference and
    /// that is not here yet. Pauses housekeeping until it completes.
    pub(crate) fn open(storage: &Arc<Storage>, settings: &BackupSettings) -> Result<Option<Arc<Self>>> {
        let db = storage::db_dir(storage.root());
        let state_path = db.join(backup::HYDRATION_FILE);
        let bytes = match std::fs::read(&state_path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(format!("reading {}", state_path.display()))(e)),
        };
        let state = Manifest::parse(&state_path.display().to_string(), &bytes)?;
        let source = db.join(HYDRATION_SOURCE);
        let store = crate::startup::store_named_by(&source, settings, storage.root())?;
        let fetch_dir = db.join(FETCH_DIR);
        match std::fs::remove_dir_all(&fetch_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(format!("removing {}", fetch_dir.display()))(e)),
        }
        std::fs::create_dir_all(&fetch_dir).map_err(io(format!("creating {}", fetch_dir.display())))?;

        let mut queue = Queue::default();
        let (mut files_total, mut bytes_total, mut files_local, mut bytes_local) = (0, 0, 0, 0);
        let mut order: Vec<(Option<i64>, FileKey)> = Vec::new();
        for entry in &state.tables {
            let Some(table) = storage.table(&entry.meta.name) else {
                continue;
            };
            let current: HashSet<String> = table.commit().files.iter().map(|f| f.path.clone()).collect();
            for f in entry.files.iter().filter(|f| current.contains(&f.file.path)) {
                files_total += 1;
                bytes_total += f.file.bytes;
                if table.file_path(&f.file).exists() {
                    files_local += 1;
                    bytes_local += f.file.bytes;
                    continue;
                }
                let key = (entry.meta.name.clone(), f.file.path.clone());
                let remote = RemoteFile::new(store.clone(), &state.instance, f.clone());
                queue.remote.insert(key.clone(), Arc::new(remote));
                order.push((f.file.max_ts, key));
            }
        }
        // Newest partitions first: the data people look at after a restore.
        order.sort_by_key(|o| std::cmp::Reverse(o.0));
        queue.order = order.into_iter().map(|(_, key)| key).collect();
        storage.pause_housekeeping();
        tracing::info!(
            files = files_total - files_local,
            bytes = bytes_total - bytes_local,
            "instant restore of backup {}: serving now, fetching the files that are not here yet",
            state.backup_timestamp
        );
        Ok(Some(Arc::new(Self {
            storage: storage.clone(),
            store,
            backup_timestamp: state.backup_timestamp,
            limits: backup::Limits::new(settings.max_bandwidth, settings.compression_threads),
            queue: Mutex::new(queue),
            placer: tokio::sync::Mutex::new(()),
            wake: Notify::new(),
            files_total,
            bytes_total,
            files_local: AtomicU64::new(files_local),
            bytes_local: AtomicU64::new(bytes_local),
            fetched: AtomicU64::new(0),
            started: Instant::now(),
            progress: backup::PercentSteps::new(10),
        })))
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The file to read where it lies, while it is not here; a query asking
    /// for it moves it to the front of the hydration.
    pub(crate) fn remote_file(&self, table: &str, path: &str) -> Option<Arc<RemoteFile>> {
        let mut q = self.lock();
        let key = (table.to_string(), path.to_string());
        let remote = q.remote.get(&key).cloned()?;
        if q.wanted_set.insert(key.clone()) {
            q.wanted.push_back(key);
            drop(q);
            self.wake.notify_waiters();
        }
        Some(remote)
    }

    pub(crate) fn is_complete(&self) -> bool {
        self.lock().complete
    }

    pub(crate) fn status(&self) -> RestoreStatus {
        let q = self.lock();
        let state = match (q.complete, q.failing.is_empty()) {
            (true, _) => "complete",
            (false, true) => "hydrating",
            (false, false) => "failed",
        };
        let secs = self.started.elapsed().as_secs_f64();
        RestoreStatus {
            state,
            backup_timestamp: Some(self.backup_timestamp.clone()),
            files_total: self.files_total,
            files_local: self.files_local.load(Ordering::Relaxed),
            bytes_total: self.bytes_total,
            bytes_local: self.bytes_local.load(Ordering::Relaxed),
            bytes_per_second: if secs > 0.0 && !q.complete {
                self.fetched.load(Ordering::Relaxed) as f64 / secs
            } else {
                0.0
            },
            last_error: q.failing.values().next().cloned().or_else(|| q.last_error.clone()),
        }
    }

    fn next(&self) -> Next {
        let mut q = self.lock();
        while let Some(key) = q.wanted.pop_front() {
            q.wanted_set.remove(&key);
            if q.untried(&key) {
                q.in_flight.insert(key.clone());
                return Next::Fetch(Job::first(key));
            }
        }
        while let Some(key) = q.order.pop_front() {
            if q.untried(&key) {
                q.in_flight.insert(key.clone());
                return Next::Fetch(Job::first(key));
            }
        }
        let now = Instant::now();
        let due = q
            .retry
            .values()
            .filter(|j| j.not_before <= now)
            .map(|j| j.key.clone())
            .next();
        if let Some(job) = due.and_then(|key| q.retry.remove(&key)) {
            q.in_flight.insert(job.key.clone());
            return Next::Fetch(job);
        }
        match q.retry.values().map(|j| j.not_before).min() {
            Some(at) => Next::WaitUntil(at),
            None if q.in_flight.is_empty() => Next::Done,
            // Another worker's file may fail and come back.
            None => Next::WaitUntil(now + FIRST_RETRY),
        }
    }

    /// Fetches every file, as many at once as the store has download slots
    /// (queries reading where the data lies queue for the same slots, piece by
    /// piece, so they are not starved), then ends the hydration.
    pub(crate) async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let workers = self.store.concurrency().download.max(1);
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..workers {
            let this = self.clone();
            let cancel = cancel.clone();
            set.spawn(async move { this.work(cancel).await });
        }
        while set.join_next().await.is_some() {}
        if cancel.is_cancelled() {
            return;
        }
        match self.finish() {
            Ok(()) => tracing::info!(
                files = self.files_total,
                bytes = self.bytes_total,
                "instant restore of backup {} complete: every file is local",
                self.backup_timestamp
            ),
            Err(e) => {
                tracing::error!("instant restore: every file is local, but ending the hydration failed: {e}");
                self.lock().last_error = Some(e.to_string());
            }
        }
    }

    async fn work(&self, cancel: CancellationToken) {
        loop {
            // Registered before looking, so a change made meanwhile still wakes it.
            let changed = self.wake.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let job = match self.next() {
                Next::Fetch(job) => job,
                Next::Done => return,
                Next::WaitUntil(at) => {
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep_until(at.into()) => {}
                        _ = changed => {}
                    }
                    continue;
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = self.hydrate(job) => {}
            }
        }
    }

    async fn hydrate(&self, job: Job) {
        let Some(remote) = self.lock().remote.get(&job.key).cloned() else {
            self.lock().in_flight.remove(&job.key);
            return;
        };
        match self.fetch_checked(&job.key.0, &remote).await {
            Ok((tmp, target, fetched)) => {
                self.lock().ready.push(Ready {
                    job,
                    tmp,
                    target,
                    fetched,
                    bytes: remote.file().file.bytes,
                });
                self.place_ready().await;
            }
            Err(Gone) => {
                let mut q = self.lock();
                q.in_flight.remove(&job.key);
                q.remote.remove(&job.key);
                q.failing.remove(&job.key);
            }
            Err(Failed(e)) => self.failed(job, e),
        }
        // A file left the work in flight: a waiting worker may now be done.
        self.wake.notify_waiters();
    }

    /// `job` failed with `e`: shown, and tried again later.
    fn failed(&self, mut job: Job, e: EngineError) {
        let message = format!("fetching {}/{}: {e}", job.key.0, job.key.1);
        tracing::warn!("instant restore: {message}; trying again");
        let mut q = self.lock();
        q.in_flight.remove(&job.key);
        q.failing.insert(job.key.clone(), message.clone());
        q.last_error = Some(message);
        let wait = FIRST_RETRY.saturating_mul(1 << job.attempts.min(6)).min(MAX_RETRY);
        job.attempts += 1;
        job.not_before = Instant::now() + wait;
        q.retry.insert(job.key.clone(), job);
    }

    /// Fetches one file into the fetch folder and checks it; returns where it
    /// is, where it goes, and the stored bytes fetched.
    async fn fetch_checked(&self, table: &str, remote: &RemoteFile) -> Result<(PathBuf, PathBuf, u64), FetchError> {
        let file: BackedUpFile = remote.file().clone();
        // The table may have dropped the file (TRUNCATE, DROP ...) or gone.
        let Some(target) = self.storage.table(table).and_then(|t| {
            t.commit()
                .files
                .iter()
                .any(|f| f.path == file.file.path)
                .then(|| t.file_path(&file.file))
        }) else {
            return Err(Gone);
        };
        self.limits.pace(file.stored_bytes).await;
        let fetch_dir = storage::db_dir(self.storage.root()).join(FETCH_DIR);
        let tmp = fetch_dir.join(format!("{}.parquet", uuid::Uuid::new_v4()));
        let fetched = remote.download(tmp.clone()).await.map_err(|e| Failed(e.into()))?;
        let (table, checked) = (table.to_string(), tmp.clone());
        tokio::task::spawn_blocking(move || {
            storage::check_data_file(&table, &checked, &file.file).inspect_err(|_| {
                let _ = std::fs::remove_file(&checked);
            })
        })
        .await
        .map_err(|e| Failed(e.into()))?
        .map_err(|e| Failed(e.into()))?;
        Ok((tmp, target, fetched))
    }

    /// Puts the fetched and checked files in place, durably, in batches: one
    /// sync makes a batch's files durable, the renames follow, and a second
    /// sync makes them durable (two syncs a batch instead of two a file; a
    /// batch grows while the one before is being placed). One task places at
    /// a time; the others leave their files to it.
    async fn place_ready(&self) {
        loop {
            let Ok(_placing) = self.placer.try_lock() else { return };
            loop {
                let batch = std::mem::take(&mut self.lock().ready);
                if batch.is_empty() {
                    break;
                }
                let root = self.storage.root().to_path_buf();
                let placed = tokio::task::spawn_blocking(move || place(&root, batch)).await;
                let Ok(placed) = placed else {
                    tracing::error!("instant restore: placing files stopped unexpectedly");
                    return;
                };
                for (ready, outcome) in placed {
                    match outcome {
                        Ok(()) => self.placed(&ready),
                        Err(e) => self.failed(ready.job, e),
                    }
                }
                self.wake.notify_waiters();
            }
            drop(_placing);
            // A file may have been left just after this task's last look.
            if self.lock().ready.is_empty() {
                return;
            }
        }
    }

    fn placed(&self, ready: &Ready) {
        let mut q = self.lock();
        q.in_flight.remove(&ready.job.key);
        q.remote.remove(&ready.job.key);
        q.failing.remove(&ready.job.key);
        drop(q);
        self.fetched.fetch_add(ready.fetched, Ordering::Relaxed);
        self.files_local.fetch_add(1, Ordering::Relaxed);
        let done = self.bytes_local.fetch_add(ready.bytes, Ordering::Relaxed) + ready.bytes;
        if let Some(p) = self.progress.crossed(done, self.bytes_total) {
            tracing::info!("instant restore: {p}% local ({done} of {} bytes)", self.bytes_total);
        }
    }

    /// Every file is here: the restore is an ordinary database from now on.
    fn finish(&self) -> Result<()> {
        self.storage.all_arrived()?;
        let db = storage::db_dir(self.storage.root());
        for name in [backup::HYDRATION_FILE, HYDRATION_SOURCE] {
            let path = db.join(name);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(format!("removing {}", path.display()))(e)),
            }
        }
        storage::fsync_dir(&db)?;
        let _ = std::fs::remove_dir_all(db.join(FETCH_DIR));
        self.lock().complete = true;
        self.storage.resume_housekeeping();
        Ok(())
    }
}

/// A file fetched and checked, waiting to be put in place.
struct Ready {
    job: Job,
    tmp: PathBuf,
    target: PathBuf,
    fetched: u64,
    bytes: u64,
}

/// Why a file was not hydrated.
enum FetchError {
    /// The table no longer references it: nothing to do.
    Gone,
    Failed(EngineError),
}
use FetchError::{Failed, Gone};

/// Makes `batch` durable, renames each file into place, and makes the renames
/// durable (blocking); a file that cannot be renamed is removed.
fn place(root: &Path, batch: Vec<Ready>) -> Vec<(Ready, Result<()>)> {
    if let Err(e) = storage::sync_filesystem(root) {
        let message = e.to_string();
        return batch
            .into_iter()
            .map(|r| {
                let _ = std::fs::remove_file(&r.tmp);
                let e = EngineError::State(format!("syncing the fetched files: {message}"));
                (r, Err(e))
            })
            .collect();
    }
    let mut placed: Vec<(Ready, Result<()>)> = batch
        .into_iter()
        .map(|r| {
            let renamed = std::fs::rename(&r.tmp, &r.target).map_err(|e| {
                let _ = std::fs::remove_file(&r.tmp);
                io(format!("renaming {} to {}", r.tmp.display(), r.target.display()))(e)
            });
            (r, renamed)
        })
        .collect();
    if let Err(e) = storage::sync_filesystem(root) {
        let message = e.to_string();
        for (_, outcome) in placed.iter_mut().filter(|(_, o)| o.is_ok()) {
            // In place, but maybe not durably: fetched again only if a power cut takes it.
            *outcome = Err(EngineError::State(format!("syncing the placed files: {message}")));
        }
    }
    placed
}
