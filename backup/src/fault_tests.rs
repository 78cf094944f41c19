//! Backups and restores against a store that fails: transient errors, a store
//! that dies midway, and a crash (the work simply stops) before every single
//! store operation of a backup and of a restore. After each: no incomplete
//! backup looks complete, the next backup completes reusing what is there, and
//! every complete backup restores exactly.
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arrow::array::{Int64Array, RecordBatch, TimestampMicrosecondArray};
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjPath;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, RenameOptions,
};
use storage::{Column, ColumnType, HousekeepingSettings, PartitionBy, Storage, SystemClock, TableMeta};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::*;

/// What the faulty store does with operation number `n` (counted from 1).
#[derive(Debug, Clone, Copy, Default)]
enum Plan {
    #[default]
    Healthy,
    /// Every `n`-th operation fails with a transient error.
    FailEvery(u64),
    /// Operations after the first `n` fail (the store went away).
    DownAfter(u64),
    /// Operations after the first `n` never return (the process stops there).
    FreezeAfter(u64),
}

#[derive(Debug)]
pub(crate) struct FaultyStore {
    inner: LocalFileSystem,
    ops: AtomicU64,
    multipart_uploads: AtomicU64,
    plan: Mutex<Plan>,
    /// Latency added to every operation, milliseconds.
    delay_ms: AtomicU64,
    /// Signalled when an operation freezes; replaced for every run.
    frozen: Mutex<Arc<Notify>>,
    /// Every this-many-th delete fails with a transient error (0: none).
    fail_deletes_every: AtomicU64,
    deletes: AtomicU64,
    failed_deletes: AtomicU64,
    /// While set, the first commit-log PUT is done but answered with an
    /// error, and every later one fails (the network went away after it).
    pub(crate) lose_log_puts: std::sync::atomic::AtomicBool,
    log_puts: AtomicU64,
}

impl std::fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FaultyStore({})", self.inner)
    }
}

fn injected() -> object_store::Error {
    object_store::Error::Generic {
        store: "faulty",
        source: "injected fault: connection reset".into(),
    }
}

impl FaultyStore {
    fn set(&self, plan: Plan) {
        *self.plan.lock().unwrap() = plan;
        self.ops.store(0, Ordering::SeqCst);
    }

    /// Counts one operation and applies the plan to it.
    async fn gate(&self) -> object_store::Result<()> {
        let n = self.ops.fetch_add(1, Ordering::SeqCst) + 1;
        let delay = self.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
        }
        let plan = *self.plan.lock().unwrap();
        match plan {
            Plan::Healthy => Ok(()),
            Plan::FailEvery(k) if n % k == 0 => Err(injected()),
            Plan::FailEvery(_) => Ok(()),
            Plan::DownAfter(k) if n > k => Err(injected()),
            Plan::DownAfter(_) => Ok(()),
            Plan::FreezeAfter(k) if n > k => {
                self.frozen.lock().unwrap().notify_one();
                futures::future::pending().await
            }
            Plan::FreezeAfter(_) => Ok(()),
        }
    }

    fn gated_stream<T: Send + 'static>(
        self: &Arc<Self>,
        inner: BoxStream<'static, object_store::Result<T>>,
    ) -> BoxStream<'static, object_store::Result<T>> {
        let me = self.clone();
        futures::stream::once(async move {
            match me.gate().await {
                Ok(()) => inner,
                Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
            }
        })
        .flatten()
        .boxed()
    }
}

/// `ObjectStore` over an `Arc<FaultyStore>` (list streams need an owned handle).
#[derive(Debug)]
struct Faulty(Arc<FaultyStore>);

impl std::fmt::Display for Faulty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

#[async_trait::async_trait]
impl ObjectStore for Faulty {
    async fn put_opts(
        &self,
        location: &ObjPath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.0.gate().await?;
        if location.as_ref().contains("/log/") && self.0.lose_log_puts.load(Ordering::SeqCst) {
            if self.0.log_puts.fetch_add(1, Ordering::SeqCst) == 0 {
                self.0.inner.put_opts(location, payload, opts).await?;
            }
            return Err(injected());
        }
        self.0.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &ObjPath,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.0.gate().await?;
        self.0.multipart_uploads.fetch_add(1, Ordering::SeqCst);
        self.0.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &ObjPath, options: GetOptions) -> object_store::Result<GetResult> {
        self.0.gate().await?;
        self.0.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<ObjPath>>,
    ) -> BoxStream<'static, object_store::Result<ObjPath>> {
        let me = self.0.clone();
        let inner = self.0.inner.delete_stream(locations);
        let faulty = futures::stream::once(async move {
            let n = me.deletes.fetch_add(1, Ordering::SeqCst) + 1;
            let every = me.fail_deletes_every.load(Ordering::SeqCst);
            if every > 0 && n % every == 0 {
                me.failed_deletes.fetch_add(1, Ordering::SeqCst);
                futures::stream::once(async { Err(injected()) }).boxed()
            } else {
                inner
            }
        })
        .flatten()
        .boxed();
        self.0.gated_stream(faulty)
    }

    fn list(&self, prefix: Option<&ObjPath>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let inner = self.0.inner.list(prefix);
        self.0.gated_stream(inner)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&ObjPath>,
        offset: &ObjPath,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let inner = self.0.inner.list_with_offset(prefix, offset);
        self.0.gated_stream(inner)
    }

    async fn list_with_delimiter(&self, prefix: Option<&ObjPath>) -> object_store::Result<ListResult> {
        self.0.gate().await?;
        self.0.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &ObjPath, to: &ObjPath, options: CopyOptions) -> object_store::Result<()> {
        self.0.gate().await?;
        self.0.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &ObjPath, to: &ObjPath, options: RenameOptions) -> object_store::Result<()> {
        self.0.gate().await?;
        self.0.inner.rename_opts(from, to, options).await
    }
}

pub(crate) fn faulty_store(dir: &Path) -> (Store, Arc<FaultyStore>) {
    let f = Arc::new(FaultyStore {
        inner: LocalFileSystem::new_with_prefix(dir).unwrap(),
        ops: AtomicU64::new(0),
        multipart_uploads: AtomicU64::new(0),
        plan: Mutex::new(Plan::Healthy),
        delay_ms: AtomicU64::new(0),
        frozen: Mutex::new(Arc::new(Notify::new())),
        fail_deletes_every: AtomicU64::new(0),
        deletes: AtomicU64::new(0),
        failed_deletes: AtomicU64::new(0),
        lose_log_puts: Default::default(),
        log_puts: AtomicU64::new(0),
    });
    (Store::from_object_store(Arc::new(Faulty(f.clone())), "faulty"), f)
}

const DAY: i64 = 86_400_000_000;

pub(crate) fn table(name: &str) -> TableMeta {
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
    TableMeta::new(name, cols, Some("ts".into()), PartitionBy::Day).unwrap()
}

fn rows(meta: &TableMeta, first_day: i64, days: i64, salt: i64) -> RecordBatch {
    let ts: Vec<i64> = (0..days * 50).map(|i| first_day * DAY + i * (DAY / 50)).collect();
    RecordBatch::try_new(
        meta.arrow_schema(),
        vec![
            Arc::new(TimestampMicrosecondArray::from(ts.clone())),
            Arc::new(Int64Array::from(ts.iter().map(|t| t ^ salt).collect::<Vec<_>>())),
        ],
    )
    .unwrap()
}

/// A database with two tables over several days.
pub(crate) fn database(dir: &Path) -> Arc<Storage> {
    let s = Storage::open(dir, Arc::new(SystemClock), HousekeepingSettings::default(), None).unwrap();
    for (name, days) in [("trades", 6), ("quotes", 3)] {
        let meta = table(name);
        let t = s.create_table(meta.clone(), false).unwrap();
        t.append(&[rows(&meta, 19_800, days, 7)]).unwrap();
    }
    s
}

/// Everything that identifies a table's content: (partition, hash, rows) of its files.
pub(crate) fn content(s: &Storage) -> HashMap<String, BTreeSet<(String, String, u64)>> {
    s.table_names()
        .into_iter()
        .map(|n| {
            let files = s
                .table(&n)
                .unwrap()
                .commit()
                .files
                .iter()
                .map(|f| (f.partition.clone(), f.hash.clone(), f.rows))
                .collect();
            (n, files)
        })
        .collect()
}

fn job(s: &Storage, store: &Store, micros: i64) -> (storage::Pin, BackupJob) {
    let (pin, snapshot) = s.pin_current();
    let table_dirs = snapshot
        .tables
        .keys()
        .map(|n| (n.clone(), s.table(n).unwrap().dir().to_path_buf()))
        .collect();
    let job = BackupJob {
        store: store.clone(),
        instance: "test-instance".into(),
        data_id: s.data_id().to_string(),
        backup_micros: micros,
        snapshot,
        table_dirs,
        compression_level: 3,
        limits: Limits::new(None, 2),
    };
    (pin, job)
}

pub(crate) async fn backup(s: &Storage, store: &Store, micros: i64, keep: usize) -> BackupRecord {
    check_data_id(store, "test-instance", s.data_id()).await.unwrap();
    let (pin, job) = job(s, store, micros);
    let progress: Progress = Arc::new(Mutex::new(new_record(&job, micros)));
    let retention = crate::Retention {
        latest: keep,
        ..crate::Retention::default()
    };
    let record = backup_and_cleanup(&job, &progress, &CancellationToken::new(), &retention, || micros)
        .await
        .record;
    drop(pin);
    record
}

/// Restores the backup at `micros` into a fresh root and returns its content.
pub(crate) async fn restored_content(store: &Store, micros: i64) -> HashMap<String, BTreeSet<(String, String, u64)>> {
    restored_state(store, Some(layout::format_timestamp(micros))).await
}

/// Restores `timestamp` (the newest state when `None`) into a fresh root and returns its content.
pub(crate) async fn restored_state(
    store: &Store,
    timestamp: Option<String>,
) -> HashMap<String, BTreeSet<(String, String, u64)>> {
    let root = tempfile::tempdir().unwrap();
    let selector = Selector {
        instance: None,
        timestamp,
    };
    let (_, unsynced) = restore_database(store, &selector, root.path(), &|_, _| {})
        .await
        .unwrap();
    unsynced.make_durable().unwrap();
    let s = Storage::open(
        root.path(),
        Arc::new(SystemClock),
        HousekeepingSettings::default(),
        None,
    )
    .unwrap();
    content(&s)
}

/// Every complete backup in the store verifies; returns their micros.
pub(crate) async fn all_complete_backups_verify(store: &Store) -> Vec<i64> {
    let complete = complete_backups(store, "test-instance").await.unwrap();
    for m in &complete {
        let selector = Selector {
            instance: None,
            timestamp: Some(layout::format_timestamp(*m)),
        };
        let report = verify(store, &selector, None, &|_, _| {}).await.unwrap();
        assert!(report.ok(), "backup {m} does not verify: {:?}", report.problems);
    }
    complete
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_errors_are_retried_and_the_backup_restores_exactly() {
    let (db, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let s = database(db.path());
    let (store, faults) = faulty_store(dir.path());
    faults.set(Plan::FailEvery(3));
    let record = backup(&s, &store, 1_000, 5).await;
    assert_eq!(record.status, Status::BackupComplete, "{record:?}");
    assert_eq!(restored_content(&store, 1_000).await, content(&s));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_store_with_transient_errors_still_completes_and_restores_exactly() {
    let (db, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let s = database(db.path());
    let (store, faults) = faulty_store(dir.path());
    faults.set(Plan::FailEvery(4));
    faults.delay_ms.store(15, Ordering::SeqCst);
    let started = std::time::Instant::now();
    let record = backup(&s, &store, 1_000, 5).await;
    assert_eq!(record.status, Status::BackupComplete, "{record:?}");
    let ops = faults.ops.load(Ordering::SeqCst);
    assert!(
        started.elapsed().as_millis() as u64 >= 15 * ops / 4,
        "the latency was applied"
    );
    faults.set(Plan::FailEvery(4));
    assert_eq!(restored_content(&store, 1_000).await, content(&s));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_that_dies_midway_fails_the_backup_and_the_next_one_reuses_what_went_up() {
    let (db, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let s = database(db.path());
    let (store, faults) = faulty_store(dir.path());
    check_data_id(&store, "test-instance", s.data_id()).await.unwrap();
    faults.set(Plan::DownAfter(6));
    let failed = backup(&s, &store, 1_000, 5).await;
    assert_eq!(failed.status, Status::BackupFailed);
    let error = failed.backup_error.clone().unwrap_or_default();
    assert!(error.contains("injected fault"), "{error}");
    faults.set(Plan::Healthy);
    assert!(complete_backups(&store, "test-instance").await.unwrap().is_empty());
    let ok = backup(&s, &store, 2_000, 5).await;
    assert_eq!(ok.status, Status::BackupComplete, "{ok:?}");
    assert!(ok.files_uploaded < ok.files_total, "reused what went up: {ok:?}");
    assert_eq!(restored_content(&store, 2_000).await, content(&s));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transient_error_while_deleting_old_backups_is_retried_and_the_cleanup_completes() {
    let (db, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let s = database(db.path());
    let (store, faults) = faulty_store(dir.path());
    assert_eq!(backup(&s, &store, 1_000, 1).await.status, Status::BackupComplete);
    // Files only the first backup holds become garbage for the cleanup after the second.
    s.table("trades").unwrap().truncate().unwrap();
    faults.fail_deletes_every.store(2, Ordering::SeqCst);
    let retries_before = store.op_counts().retries;
    let record = backup(&s, &store, 2_000, 1).await;
    assert_eq!(record.status, Status::CleanupComplete, "{record:?}");
    assert!(faults.failed_deletes.load(Ordering::SeqCst) >= 2, "deletes failed");
    assert!(store.op_counts().retries - retries_before >= faults.failed_deletes.load(Ordering::SeqCst));
    assert_eq!(complete_backups(&store, "test-instance").await.unwrap(), vec![2_000]);
    let objects = store.list("test-instance", layout::Folder::Files).await.unwrap();
    let live: BTreeSet<_> = content(&s)
        .values()
        .flatten()
        .map(|(_, hash, _)| hash.clone())
        .collect();
    assert_eq!(objects.len(), live.len(), "only objects the kept backup names remain");
    assert_eq!(restored_content(&store, 2_000).await, content(&s));
}

/// Runs `work` with the store freezing after `k` operations; returns true if it
/// completed (the crash point lies beyond its last operation).
async fn run_until_frozen<F: std::future::Future>(faults: &FaultyStore, k: u64, work: F) -> bool {
    let frozen = Arc::new(Notify::new());
    *faults.frozen.lock().unwrap() = frozen.clone();
    faults.set(Plan::FreezeAfter(k));
    let completed = tokio::select! {
        _ = work => true,
        _ = frozen.notified() => false,
    };
    faults.set(Plan::Healthy);
    completed
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_before_any_store_operation_of_a_backup_never_shows_an_incomplete_backup() {
    let (db, base) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let s = database(db.path());
    {
        let (store, _) = faulty_store(base.path());
        assert_eq!(backup(&s, &store, 1_000, 1).await.status, Status::BackupComplete);
    }
    // Change one table so the next backup uploads, writes a manifest and cleans up the first.
    let meta = table("trades");
    s.table("trades")
        .unwrap()
        .append(&[rows(&meta, 19_803, 2, 99)])
        .unwrap();
    let expected = content(&s);
    let mut points = 0;
    for k in 0..1000 {
        let dir = tempfile::tempdir().unwrap();
        copy_tree(base.path(), dir.path());
        let (store, faults) = faulty_store(dir.path());
        let completed = run_until_frozen(&faults, k, backup(&s, &store, 2_000, 1)).await;
        // Whatever the crash point, every complete backup verifies and restores exactly.
        let complete = all_complete_backups_verify(&store).await;
        assert!(
            !complete.is_empty(),
            "crash at {k}: the older backup is kept until the new one exists"
        );
        if complete.contains(&2_000) {
            assert_eq!(restored_content(&store, 2_000).await, expected, "crash at {k}");
        }
        // The next backup completes and uploads only what is not there yet.
        let missing = estimate(&store, "test-instance", &s.snapshot()).await.unwrap();
        let next = backup(&s, &store, 3_000, 1).await;
        // Two complete backups at least now: retention deletes the older ones.
        assert_eq!(next.status, Status::CleanupComplete, "crash at {k}: {next:?}");
        assert_eq!(next.files_uploaded, missing.files_to_upload, "crash at {k}");
        assert_eq!(restored_content(&store, 3_000).await, expected, "crash at {k}");
        if completed {
            break;
        }
        points += 1;
    }
    assert!(points >= 10, "only {points} crash points");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_during_a_restore_leaves_nothing_visible_and_the_next_restore_completes() {
    let (db, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let s = database(db.path());
    let (store, faults) = faulty_store(dir.path());
    assert_eq!(backup(&s, &store, 1_000, 5).await.status, Status::BackupComplete);
    let expected = content(&s);
    let mut points = 0;
    for k in 0..1000 {
        let root = tempfile::tempdir().unwrap();
        let completed = run_until_frozen(
            &faults,
            k,
            restore_database(&store, &Selector::default(), root.path(), &|_, _| {}),
        )
        .await;
        if !completed {
            assert!(
                !root.path().join("db").exists(),
                "crash at {k}: a half-restored database is visible"
            );
            let _unsynced = restore_database(&store, &Selector::default(), root.path(), &|_, _| {})
                .await
                .unwrap();
            points += 1;
        }
        let storage::RestoreState::Unsynced(unsynced) = storage::restore_state(root.path()) else {
            panic!("a finished restore is marked unsynced until it is made durable");
        };
        unsynced.make_durable().unwrap();
        storage::clear_restore_markers(root.path()).unwrap();
        let r = Storage::open(
            root.path(),
            Arc::new(SystemClock),
            HousekeepingSettings::default(),
            None,
        )
        .unwrap();
        assert_eq!(content(&r), expected, "crash at {k}");
        assert_eq!(r.data_id(), s.data_id());
        if completed {
            break;
        }
    }
    assert!(points >= 5, "only {points} crash points");
}

/// A database of one table whose one data file (incompressible noise) is
/// over 24 MiB: it streams up in several parts and comes back in several ranges.
pub(crate) fn big_database(dir: &Path) -> Arc<Storage> {
    let s = Storage::open(dir, Arc::new(SystemClock), HousekeepingSettings::default(), None).unwrap();
    let cols = ["ts", "a", "b", "c"]
        .iter()
        .map(|n| Column {
            name: n.to_string(),
            ty: if *n == "ts" {
                ColumnType::Timestamp
            } else {
                ColumnType::Long
            },
        })
        .collect();
    let meta = TableMeta::new("big", cols, Some("ts".into()), PartitionBy::Year).unwrap();
    let n = 1_200_000;
    let mut x = 0x9E37_79B9_7F4A_7C15_u64;
    let mut noise = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x as i64
    };
    let batch = RecordBatch::try_new(
        meta.arrow_schema(),
        vec![
            Arc::new(TimestampMicrosecondArray::from(
                (0..n as i64).map(|i| 1_704_067_200_000_000 + i).collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from((0..n).map(|_| noise()).collect::<Vec<_>>())),
            Arc::new(Int64Array::from((0..n).map(|_| noise()).collect::<Vec<_>>())),
            Arc::new(Int64Array::from((0..n).map(|_| noise()).collect::<Vec<_>>())),
        ],
    )
    .unwrap();
    s.create_table(meta, false).unwrap().append(&[batch]).unwrap();
    let bytes = s.table("big").unwrap().commit().bytes();
    assert!(
        bytes > 3 * (8 << 20),
        "streamed in several parts: the data file has {bytes} bytes"
    );
    s
}

#[tokio::test(flavor = "multi_thread")]
async fn large_files_stream_up_as_multipart_uploads_sealed_or_not_and_a_changed_one_is_never_completed() {
    let (db, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let s = big_database(db.path());
    let (store, faults) = faulty_store(dir.path());
    let record = backup(&s, &store, 1_000, 5).await;
    assert_eq!(record.status, Status::BackupComplete, "{record:?}");
    assert_eq!(faults.multipart_uploads.load(Ordering::SeqCst), 1);
    assert_eq!(restored_content(&store, 1_000).await, content(&s));

    // Sealed as it streams, it opens the same.
    let sealed_dir = tempfile::tempdir().unwrap();
    let key = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [3u8; 32]);
    let sealed = Store::open(&format!("fs::root={};", sealed_dir.path().display()))
        .unwrap()
        .with_cipher(Some(Cipher::from_base64(&key).unwrap()));
    assert!(backup(&s, &sealed, 1_000, 5).await.status.backup_succeeded());
    assert_eq!(restored_content(&sealed, 1_000).await, content(&s));

    // A file that no longer matches its recorded hash fails the backup, and its
    // upload is aborted: no object, complete or partial, is left.
    let data_file = walk_files(db.path())
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "parquet"));
    let data_file = data_file.expect("the table's data file");
    let mut changed = std::fs::read(&data_file).unwrap();
    let last = changed.len() - 100;
    changed[last] ^= 1;
    std::fs::write(&data_file, &changed).unwrap();
    let (fresh_dir, fresh_files) = (tempfile::tempdir().unwrap(), "_backup/test-instance/files");
    let fresh = Store::open(&format!("fs::root={};", fresh_dir.path().display())).unwrap();
    let failed = backup(&s, &fresh, 2_000, 5).await;
    assert_eq!(failed.status, Status::BackupFailed, "{failed:?}");
    assert!(
        failed.backup_error.as_deref().unwrap_or("").contains("content hash"),
        "{failed:?}"
    );
    assert!(
        walk_files(&fresh_dir.path().join(fresh_files)).is_empty(),
        "nothing stored"
    );
}

fn walk_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            out.extend(walk_files(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

/// What the store's folder held at each flush: (data objects, manifest of the
/// backup at 1_000 present, history records, objects written but not yet named).
#[derive(Default)]
struct RecordingFlush(Mutex<Vec<(usize, bool, usize, usize)>>);

fn objects_under(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|shards| {
            shards
                .flatten()
                .map(|shard| std::fs::read_dir(shard.path()).map_or(0, |f| f.count()))
                .sum()
        })
        .unwrap_or(0)
}

impl Flush for RecordingFlush {
    fn flush(&self, root: &Path) -> Result<()> {
        let count = objects_under(&root.join(layout::files_dir("test-instance")));
        let manifest = root.join(layout::manifest_key("test-instance", 1_000)).exists();
        let history = std::fs::read_dir(root.join(layout::history_dir("test-instance"))).map_or(0, |d| d.count());
        let arriving = std::fs::read_dir(root.join(crate::arriving::ARRIVING_DIR)).map_or(0, |d| d.count());
        self.0.lock().unwrap().push((count, manifest, history, arriving));
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_local_store_is_flushed_before_the_manifest_names_its_objects_and_after_it() {
    let (db, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let s = database(db.path());
    let flushes = Arc::new(RecordingFlush::default());
    let mut store = Store::open(&format!("fs::root={};", dir.path().display())).unwrap();
    store.set_flush(flushes.clone());
    assert_eq!(backup(&s, &store, 1_000, 5).await.status, Status::BackupComplete);
    // Identical files (same content in both tables) share one object.
    let files = content(&s)
        .values()
        .flatten()
        .map(|(_, hash, _)| hash)
        .collect::<BTreeSet<_>>()
        .len();
    let seen = flushes.0.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![
            (0, false, 0, 0),
            (0, false, 1, 0),
            (0, false, 1, files),
            (files, false, 1, 0),
            (files, true, 1, 0),
            (files, true, 1, 0),
            (files, true, 2, 0),
        ],
        "the data id and the started record each durable at once; every object flushed before it has its \
         name, named before the manifest exists; the manifest flushed before the backup completes; the \
         finished record flushed before anyone is told"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_makes_a_deleted_manifest_durable_before_it_deletes_its_objects() {
    let (db, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let s = database(db.path());
    let flushes = Arc::new(RecordingFlush::default());
    let mut store = Store::open(&format!("fs::root={};", dir.path().display())).unwrap();
    store.set_flush(flushes.clone());
    assert_eq!(backup(&s, &store, 1_000, 1).await.status, Status::BackupComplete);
    let objects_of_both = objects_under(&dir.path().join(layout::files_dir("test-instance")));
    s.table("trades").unwrap().truncate().unwrap();
    flushes.0.lock().unwrap().clear();
    assert_eq!(backup(&s, &store, 2_000, 1).await.status, Status::CleanupComplete);
    let seen = flushes.0.lock().unwrap().clone();
    // A power cut that brought the deleted manifest back must find its objects:
    // some flush sees the manifest gone and every object still there.
    assert!(
        seen.iter()
            .any(|&(objects, manifest, _, _)| !manifest && objects == objects_of_both),
        "no flush between deleting the manifest and deleting its objects: {seen:?}"
    );
    // And backups() never lists a backup whose manifest is gone: its two records
    // go first, leaving the second backup's two (started, cleaning).
    assert!(
        seen.contains(&(objects_of_both, true, 2, 0)),
        "no flush between deleting the history and the manifest: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_object_a_power_loss_left_empty_is_uploaded_again() {
    let (db, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let s = database(db.path());
    let store = Store::open(&format!("fs::root={};", dir.path().display())).unwrap();
    assert_eq!(backup(&s, &store, 1_000, 5).await.status, Status::BackupComplete);
    // What a local disk keeps of a file renamed into place whose data never reached it.
    let objects = dir.path().join(layout::files_dir("test-instance"));
    let shard = std::fs::read_dir(&objects).unwrap().flatten().next().unwrap().path();
    let victim = std::fs::read_dir(&shard).unwrap().flatten().next().unwrap().path();
    std::fs::File::create(&victim).unwrap();
    assert_eq!(
        estimate(&store, "test-instance", &s.snapshot())
            .await
            .unwrap()
            .files_to_upload,
        1
    );
    let next = backup(&s, &store, 2_000, 5).await;
    assert_eq!(
        (next.status, next.files_uploaded),
        (Status::BackupComplete, 1),
        "{next:?}"
    );
    assert!(std::fs::metadata(&victim).unwrap().len() > 0);
    assert_eq!(restored_content(&store, 2_000).await, content(&s));
}

#[tokio::test(start_paused = true)]
async fn verification_is_paced_by_the_bandwidth_limit() {
    let (db, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let s = database(db.path());
    let store = Store::open(&format!("fs::root={};", dir.path().display())).unwrap();
    let micros = 1_000_000;
    assert!(backup(&s, &store, micros, 5).await.status.backup_succeeded());
    let manifest = read_manifest(&store, "test-instance", micros).await.unwrap();
    // Each distinct file once, as verify fetches them.
    let stored: Vec<u64> = manifest
        .tables
        .iter()
        .flat_map(|t| &t.files)
        .map(|f| (f.file.hash.clone(), f.stored_bytes))
        .collect::<HashMap<_, _>>()
        .into_values()
        .collect();
    // Pacing lets the first download start at once and each later one when the
    // bytes before it would have taken their time at the rate.
    let rate = 1_000;
    let paced = (stored.iter().sum::<u64>() - stored.iter().max().unwrap()) as f64 / rate as f64;
    let selector = Selector {
        instance: None,
        timestamp: None,
    };
    let verify_with = |limits: Option<Limits>| {
        let (store, selector) = (store.clone(), selector.clone());
        async move {
            let started = tokio::time::Instant::now();
            let report = verify(&store, &selector, limits.as_ref(), &|_, _| {}).await.unwrap();
            assert!(report.ok(), "{:?}", report.problems);
            started.elapsed().as_secs_f64()
        }
    };
    let limited = verify_with(Some(Limits::new(Some(rate), 1))).await;
    assert!(limited >= paced, "verified in {limited} s, paced {paced} s");
    assert!(verify_with(None).await < paced, "without a limit nothing waits");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_dropped_while_it_is_verified_is_reported_as_deleted_not_corrupt() {
    let (db, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let s = database(db.path());
    let (slow, faults) = faulty_store(dir.path());
    let micros = 1_000_000;
    assert!(backup(&s, &slow, micros, 5).await.status.backup_succeeded());
    // Every operation of the verification waits a second; the drop, through
    // another handle on the same store, does not.
    faults.delay_ms.store(1_000, Ordering::SeqCst);
    faults.set(Plan::Healthy);
    let selector = Selector {
        instance: Some("test-instance".into()),
        timestamp: None,
    };
    let verification = tokio::spawn(async move { verify(&slow, &selector, None, &|_, _| {}).await });
    // Finding the backup takes eight operations (list the instances and the
    // manifests for the newest backup; again the instances, the manifests and
    // the commit log, read the manifest and the data id; list the manifests to
    // see it is a backup); the ninth is the first download, which then waits
    // its second.
    while faults.ops.load(Ordering::SeqCst) < 9 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let fast = Store::open(&format!("fs::root={};", dir.path().display())).unwrap();
    let plan = plan_drop(&fast, "test-instance", micros).await.unwrap();
    assert!(cleanup(&fast, "test-instance", &plan).await.unwrap().objects_deleted > 0);
    let err = verification.await.unwrap().expect_err("the backup went away");
    assert!(
        matches!(&err, BackupError::NotFound(m) if m.contains("deleted while it was being verified")),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_whose_final_record_was_lost_is_complete_if_its_manifest_is_there() {
    let (db, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let s = database(db.path());
    let store = Store::open(&format!("fs::root={};", dir.path().display())).unwrap();
    assert_eq!(backup(&s, &store, 1_000, 5).await.status, Status::BackupComplete);
    // A power cut took the finished record (the manifest had reached disk), and
    // another backup was cut short before its manifest.
    let finished = layout::Object::History {
        backup: 1_000,
        event: HistoryEvent::Finished,
    };
    store.delete("test-instance", finished).await.unwrap();
    let (_pin, job) = job(&s, &store, 2_000);
    crate::history::put_history(&store, &new_record(&job, 2_000), HistoryEvent::Started)
        .await
        .unwrap();
    let mut history = load_history(&store, "test-instance").await.unwrap();
    for r in &mut history {
        assert_eq!(r.status, Status::BackupInProgress);
        crate::settle_interrupted(&store, r, "interrupted").await.unwrap();
    }
    let settled: Vec<(i64, Status)> = history.iter().map(|r| (r.backup_micros, r.status)).collect();
    assert_eq!(
        settled,
        [(2_000, Status::BackupFailed), (1_000, Status::BackupComplete)]
    );
    // And so the history says from now on.
    let again: Vec<Status> = load_history(&store, "test-instance")
        .await
        .unwrap()
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(again, [Status::BackupFailed, Status::BackupComplete]);
}
