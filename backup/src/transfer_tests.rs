//! Parallel transfers: requests go up and come down at once, never more than
//! the concurrency allows, and a large object comes back in ranged GETs.
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjPath;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, RenameOptions, UploadPart,
};

use crate::fault_tests::{backup, big_database, content, database, restored_content};
use crate::*;

/// Requests of one kind in flight now, and the most there ever were.
#[derive(Debug)]
struct InFlight {
    now: AtomicU64,
    most: AtomicU64,
    /// A round trip: long enough that the next request is ready before it ends.
    latency: Duration,
}

impl InFlight {
    fn new(latency: Duration) -> Self {
        Self {
            now: AtomicU64::new(0),
            most: AtomicU64::new(0),
            latency,
        }
    }

    /// Runs `request` as one request in flight, after a round trip's latency.
    async fn run<T>(&self, request: impl std::future::Future<Output = T>) -> T {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(self.latency).await;
        let out = request.await;
        self.now.fetch_sub(1, Ordering::SeqCst);
        out
    }

    fn most(&self) -> u64 {
        self.most.load(Ordering::SeqCst)
    }
}

/// A local folder that looks remote to [`Store`], with a latency per request,
/// counting the requests that carry data.
#[derive(Debug)]
struct Meter {
    sends: InFlight,
    fetches: InFlight,
    ranged_gets: AtomicU64,
}

#[derive(Debug)]
struct Metered {
    inner: Arc<LocalFileSystem>,
    meter: Arc<Meter>,
}

impl std::fmt::Display for Metered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Metered({})", self.inner)
    }
}

#[derive(Debug)]
struct MeteredUpload {
    inner: Box<dyn MultipartUpload>,
    meter: Arc<Meter>,
}

#[async_trait::async_trait]
impl MultipartUpload for MeteredUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let (part, meter) = (self.inner.put_part(data), self.meter.clone());
        Box::pin(async move { meter.sends.run(part).await })
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        self.inner.complete().await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.inner.abort().await
    }
}

#[async_trait::async_trait]
impl ObjectStore for Metered {
    async fn put_opts(
        &self,
        location: &ObjPath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.meter.sends.run(self.inner.put_opts(location, payload, opts)).await
    }

    async fn put_multipart_opts(
        &self,
        location: &ObjPath,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(MeteredUpload {
            inner,
            meter: self.meter.clone(),
        }))
    }

    async fn get_opts(&self, location: &ObjPath, options: GetOptions) -> object_store::Result<GetResult> {
        if options.range.is_some() {
            self.meter.ranged_gets.fetch_add(1, Ordering::SeqCst);
        }
        // A stream, as a remote store answers (the local store hands over its file).
        let got = self.meter.fetches.run(self.inner.get_opts(location, options)).await?;
        let (meta, range, attributes) = (got.meta.clone(), got.range.clone(), got.attributes.clone());
        Ok(GetResult {
            payload: object_store::GetResultPayload::Stream(got.into_stream()),
            meta,
            range,
            attributes,
        })
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<ObjPath>>,
    ) -> BoxStream<'static, object_store::Result<ObjPath>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&ObjPath>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&ObjPath>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &ObjPath, to: &ObjPath, options: CopyOptions) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &ObjPath, to: &ObjPath, options: RenameOptions) -> object_store::Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

fn metered(dir: &std::path::Path, concurrency: Concurrency, latency: Duration) -> (Store, Arc<Meter>) {
    let meter = Arc::new(Meter {
        sends: InFlight::new(latency),
        fetches: InFlight::new(latency),
        ranged_gets: AtomicU64::new(0),
    });
    let inner = Arc::new(LocalFileSystem::new_with_prefix(dir).unwrap());
    let store = Store::from_object_store(
        Arc::new(Metered {
            inner,
            meter: meter.clone(),
        }),
        "metered",
    );
    (store.with_concurrency(concurrency), meter)
}

#[tokio::test(flavor = "multi_thread")]
async fn many_files_go_up_and_come_down_at_once_within_the_concurrency() {
    let (db, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let s = database(db.path());
    let (store, meter) = metered(
        dir.path(),
        Concurrency { upload: 3, download: 2 },
        Duration::from_millis(20),
    );
    assert_eq!(backup(&s, &store, 1_000, 5).await.status, Status::BackupComplete);
    assert_eq!(restored_content(&store, 1_000).await, content(&s));
    assert_eq!(
        meter.sends.most(),
        3,
        "uploads overlap up to the concurrency, never beyond"
    );
    assert_eq!(
        meter.fetches.most(),
        2,
        "downloads overlap up to the concurrency, never beyond"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_large_object_goes_up_in_parallel_parts_and_comes_back_in_parallel_ranges_sealed_or_not() {
    let db = tempfile::tempdir().unwrap();
    let s = big_database(db.path());
    let stored = s.table("big").unwrap().commit().bytes();
    let concurrency = Concurrency { upload: 3, download: 3 };
    let (plain_dir, sealed_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // Longer than a debug build takes to read and hash a part.
    let (plain, meter) = metered(plain_dir.path(), concurrency, Duration::from_millis(500));
    assert_eq!(backup(&s, &plain, 1_000, 5).await.status, Status::BackupComplete);
    assert_eq!(meter.sends.most(), 3, "the parts of one file go up at once");
    assert_eq!(restored_content(&plain, 1_000).await, content(&s));
    assert!(
        meter.ranged_gets.load(Ordering::SeqCst) >= stored / (8 << 20),
        "one ranged GET per 8 MiB"
    );
    assert_eq!(
        meter.fetches.most(),
        3,
        "ranges of one object come down at once, within the concurrency"
    );

    // Sealed, the ranges decrypt in order as one stream.
    let (sealed, meter) = metered(sealed_dir.path(), concurrency, Duration::from_millis(20));
    let key = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [5u8; 32]);
    let sealed = sealed.with_cipher(Some(Cipher::from_base64(&key).unwrap()));
    assert_eq!(backup(&s, &sealed, 1_000, 5).await.status, Status::BackupComplete);
    let before = meter.ranged_gets.load(Ordering::SeqCst);
    assert_eq!(restored_content(&sealed, 1_000).await, content(&s));
    assert!(meter.ranged_gets.load(Ordering::SeqCst) - before >= stored / (8 << 20));
}
