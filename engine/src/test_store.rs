//! A local object store that tests can watch and break: it meters the bytes
//! its GETs answer (data objects apart from the rest, and which data objects)
//! and, while armed, panics on manifest writes (a bug in the backup task).
use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjPath;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, RenameOptions,
};

#[derive(Debug)]
pub(crate) struct TestStore {
    inner: LocalFileSystem,
    pub(crate) panic_on_manifest: AtomicBool,
    /// Bytes answered for objects under `files/`, and for everything else.
    pub(crate) data_bytes_read: AtomicU64,
    pub(crate) other_bytes_read: AtomicU64,
    /// Data objects read from.
    pub(crate) data_objects_read: Mutex<BTreeSet<String>>,
}

impl TestStore {
    pub(crate) fn new(dir: &std::path::Path) -> Self {
        Self {
            inner: LocalFileSystem::new_with_prefix(dir).expect("a local store"),
            panic_on_manifest: AtomicBool::new(false),
            data_bytes_read: AtomicU64::new(0),
            other_bytes_read: AtomicU64::new(0),
            data_objects_read: Mutex::default(),
        }
    }

    /// Forgets what was read so far.
    pub(crate) fn reset_reads(&self) {
        self.data_bytes_read.store(0, Ordering::SeqCst);
        self.other_bytes_read.store(0, Ordering::SeqCst);
        self.data_objects_read.lock().expect("not poisoned").clear();
    }
}

impl std::fmt::Display for TestStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TestStore")
    }
}

#[async_trait::async_trait]
impl ObjectStore for TestStore {
    async fn put_opts(&self, at: &ObjPath, payload: PutPayload, opts: PutOptions) -> object_store::Result<PutResult> {
        if self.panic_on_manifest.load(Ordering::SeqCst) && at.as_ref().contains("/manifests/") {
            panic!("injected panic in the backup task");
        }
        self.inner.put_opts(at, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        at: &ObjPath,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(at, opts).await
    }

    async fn get_opts(&self, at: &ObjPath, options: GetOptions) -> object_store::Result<GetResult> {
        let got = self.inner.get_opts(at, options).await?;
        let answered = got.range.end - got.range.start;
        if at.as_ref().contains("/files/") {
            self.data_bytes_read.fetch_add(answered, Ordering::SeqCst);
            self.data_objects_read
                .lock()
                .expect("not poisoned")
                .insert(at.to_string());
        } else {
            self.other_bytes_read.fetch_add(answered, Ordering::SeqCst);
        }
        Ok(got)
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
