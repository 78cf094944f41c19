//! The one door to the object store: keys, sealing, retries, op counts, and
//! the local-disk durability of an `fs::` store. Connection strings are parsed
//! in `connect.rs`. Secrets never appear in errors or `Debug` output.
use std::sync::Arc;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::StreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, GetResultPayload, ObjectStore, ObjectStoreExt, PutMode, PutPayload};
use tokio::sync::mpsc;

use crate::arriving::{Arriving, arriving_key, place};
use crate::connect::{Target, bad, connect, redact};
use crate::crypto::{StreamDecryptor, StreamEncryptor};
use crate::error::{BackupError, Result, store_err};
use crate::layout::{BACKUP_ROOT, Folder, Object, instance_dir};
use crate::retry::with_retry;
use crate::throttle::Limits;
use crate::transfer::{
    Body, Concurrency, Fetched, PartsInFlight, Piece, RANGE_SIZE, RANGED_FROM, RANGES_AHEAD, Slots, later_ranges,
    part_size,
};

/// Why a data object could not be read: the store does not hold it.
pub(crate) const MISSING: &str = "missing from the store";

/// Listings in flight at once in [`Store::list_sharded`].
const LIST_CONCURRENCY: usize = 16;

/// The one door to the object store: callers say what they store or read (an
/// [`Object`] of an instance), and the store derives its key, seals and opens it
/// when encryption is on, retries transient failures and counts every operation.
#[derive(Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    prefix: Path,
    /// The connection string with secrets replaced by `***`, for logs.
    display: String,
    /// Set when `backup.encryption.key` is: every object written is sealed with it.
    cipher: Option<crate::crypto::Cipher>,
    /// Set for a local folder (`fs::`, `file://`): its writes need flushing to be durable.
    local: Option<LocalRoot>,
    /// Requests in flight at once.
    slots: Slots,
    counts: Arc<Counts>,
}

/// Operations a store has done since it was opened (retries also count as the
/// operation they repeat).
#[derive(Debug, Default)]
struct Counts {
    puts: AtomicU64,
    gets: AtomicU64,
    lists: AtomicU64,
    deletes: AtomicU64,
    retries: AtomicU64,
}

/// A copy of a store's operation counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpCounts {
    pub puts: u64,
    pub gets: u64,
    pub lists: u64,
    pub deletes: u64,
    pub retries: u64,
}

/// What a create-only PUT found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Created {
    New,
    /// An object was already at the key; it was left as it is.
    AlreadyThere,
}

/// An object a listing found: its name relative to the instance folder
/// (`manifests/….json`, `files/ab/….zst`) and its stored size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listed {
    pub(crate) name: String,
    pub(crate) size: u64,
    /// When the object was written (micros).
    pub(crate) modified: i64,
}

/// Makes a local store's writes durable. An object store such as S3 has made a
/// PUT durable before it answers; a local folder's new files sit in the page
/// cache until the kernel flushes them, and object_store's local backend never
/// fsyncs. A trait so tests can see when a backup flushes.
pub trait Flush: Send + Sync {
    /// Returns once everything written under `root` is on disk.
    fn flush(&self, root: &std::path::Path) -> Result<()>;
}

/// [`Flush`] by one `syncfs`: cheaper than an fsync per object, and the disk
/// writes the objects in the order that suits it.
struct SyncFs;

impl Flush for SyncFs {
    fn flush(&self, root: &std::path::Path) -> Result<()> {
        Ok(storage::sync_filesystem(root)?)
    }
}

/// The folder of a local store and how to flush it.
#[derive(Clone)]
struct LocalRoot {
    path: std::path::PathBuf,
    flush: Arc<dyn Flush>,
    write_behind: Arc<std::sync::Mutex<WriteBehind>>,
    /// Data objects written under `_arriving/`, moved to their names once durable.
    arriving: Arc<Arriving>,
}

/// Bytes of a backup's writes allowed on their way to a local disk at once:
/// enough to keep the disk busy, while the final sync has only this much left
/// to wait for (docs/performance.md has what it does and does not do for the
/// database's own fsyncs on the same disk).
const WRITE_BEHIND_BYTES: u64 = 16 << 20;

/// Objects whose writeback is awaited at once: each holds an open file, and a
/// backup of many tiny files must not run out of descriptors.
const WRITE_BEHIND_FILES: usize = 64;

/// Objects written to a local store whose writeback is under way, oldest first.
#[derive(Default)]
struct WriteBehind {
    files: std::collections::VecDeque<(std::fs::File, u64)>,
    bytes: u64,
}

impl WriteBehind {
    /// Starts `file`'s writeback, then waits for the oldest ones until at most
    /// [`WRITE_BEHIND_BYTES`] (or the newest file alone) in at most
    /// [`WRITE_BEHIND_FILES`] files is in flight.
    fn push(&mut self, file: std::fs::File, bytes: u64) {
        storage::start_writeback(&file);
        self.files.push_back((file, bytes));
        self.bytes += bytes;
        while (self.bytes > WRITE_BEHIND_BYTES || self.files.len() > WRITE_BEHIND_FILES) && self.files.len() > 1 {
            if let Some((old, n)) = self.files.pop_front() {
                storage::wait_writeback(&old);
                // Written now: drop its clean pages, nobody reads a backup back soon.
                storage::start_writeback(&old);
                self.bytes -= n;
            }
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.display)
    }
}

impl Store {
    /// Opens the store a connection string names (see `connect`).
    pub fn open(conn: &str) -> Result<Self> {
        let conn = conn.trim();
        let display = redact(conn);
        match connect(conn, &display)? {
            Target::Local(root) => Self::local(&root, display),
            Target::Remote { store, prefix } => Ok(Self::over(store, prefix, display)),
        }
    }

    fn local(root: &str, display: String) -> Result<Self> {
        if root.is_empty() || !std::path::Path::new(root).is_absolute() {
            return Err(bad(format!("fs root must be an absolute path, not '{root}'")));
        }
        std::fs::create_dir_all(root).map_err(|e| bad(format!("cannot create fs root {root}: {e}")))?;
        let fs = LocalFileSystem::new_with_prefix(root).map_err(|e| bad(format!("fs root {root}: {e}")))?;
        let mut store = Self::over(Arc::new(fs), Path::default(), display);
        crate::arriving::remove_stale(std::path::Path::new(root));
        store.local = Some(LocalRoot {
            path: root.into(),
            flush: Arc::new(SyncFs),
            write_behind: Arc::default(),
            arriving: Arc::default(),
        });
        store.slots = Slots::new(Concurrency::default_for(true));
        Ok(store)
    }

    fn over(inner: Arc<dyn ObjectStore>, prefix: Path, display: String) -> Self {
        Self {
            inner,
            prefix,
            display,
            cipher: None,
            local: None,
            slots: Slots::new(Concurrency::default_for(false)),
            counts: Arc::default(),
        }
    }

    /// A store over an object store opened elsewhere, with no prefix (tests put
    /// faults and latency between us and the store this way). `display` names it
    /// in messages.
    pub fn from_object_store(inner: Arc<dyn ObjectStore>, display: &str) -> Self {
        Self::over(inner, Path::default(), display.to_string())
    }

    /// The connection string with secrets replaced by `***`.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// True when objects are sealed with a key.
    pub(crate) fn encrypts(&self) -> bool {
        self.cipher.is_some()
    }

    /// What this store has done so far.
    pub fn op_counts(&self) -> OpCounts {
        let c = &self.counts;
        OpCounts {
            puts: c.puts.load(Ordering::Relaxed),
            gets: c.gets.load(Ordering::Relaxed),
            lists: c.lists.load(Ordering::Relaxed),
            deletes: c.deletes.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
        }
    }

    #[cfg(test)]
    pub(crate) fn set_flush(&mut self, flush: Arc<dyn Flush>) {
        if let Some(local) = self.local.as_mut() {
            local.flush = flush;
        }
    }

    /// Makes every object written so far durable (a no-op for stores whose
    /// PUTs already are). A backup calls it before and after its manifest.
    pub(crate) async fn make_durable(&self) -> Result<()> {
        let Some(local) = self.local.clone() else {
            return Ok(());
        };
        tokio::task::spawn_blocking(move || {
            local.flush.flush(&local.path)?;
            // All on disk now: nothing left to wait for, and no object kept open
            // (the store lives as long as the server, and retention deletes objects).
            *local.write_behind.lock().unwrap_or_else(|p| p.into_inner()) = WriteBehind::default();
            // Their bytes durable, the objects written meanwhile get their names, durably.
            let placed = local.arriving.place_all().map_err(|e| {
                BackupError::Other(format!(
                    "moving written objects to their names in {}: {e}",
                    local.path.display()
                ))
            })?;
            if placed > 0 {
                local.flush.flush(&local.path)?;
            }
            Ok(())
        })
        .await
        .map_err(|e| BackupError::Other(e.to_string()))?
    }

    /// Starts writing a just-written local object to disk, and waits while more
    /// than [`WRITE_BEHIND_BYTES`] of earlier ones are still on their way: the
    /// disk works while later objects are written and [`Store::make_durable`]
    /// waits only for the tail. Advice only (errors surface at `make_durable`);
    /// nothing to do for remote stores.
    async fn write_behind(&self, key: &Path) {
        let Some(local) = self.local.clone() else { return };
        let path = local.path.join(key.as_ref());
        let _ = tokio::task::spawn_blocking(move || {
            if let Ok(file) = std::fs::File::open(path) {
                let bytes = file.metadata().map_or(0, |m| m.len());
                local
                    .write_behind
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(file, bytes);
            }
        })
        .await;
    }

    /// Requests in flight at once.
    pub fn concurrency(&self) -> Concurrency {
        self.slots.concurrency()
    }

    /// Sets how many requests go at once (each at least 1).
    pub fn with_concurrency(mut self, concurrency: Concurrency) -> Self {
        self.slots = Slots::new(concurrency);
        self
    }

    /// Seals every object this store writes with `cipher` (and expects sealed ones).
    pub fn with_cipher(mut self, cipher: Option<crate::crypto::Cipher>) -> Self {
        self.cipher = cipher;
        self
    }

    /// Runs `op` with the store's retry policy, counting each try as `count`.
    async fn retrying<T, F, Fut>(&self, what: &str, count: &AtomicU64, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        with_retry(what, &self.counts.retries, || {
            count.fetch_add(1, Ordering::Relaxed);
            op()
        })
        .await
    }

    /// Writes a small object (a manifest, a history record, the data id) in one
    /// PUT: sealed when the store has a key, visible whole or not at all, and
    /// never over an object already there (see [`Store::create`]).
    pub(crate) async fn put(&self, instance: &str, object: Object<'_>, body: Bytes) -> Result<()> {
        let key = self.key_of(instance, object);
        let body = self.seal(body)?;
        let created = match &self.local {
            Some(local) => self.create_durably(local, &key, body.clone()).await?,
            None => self.create(&key, body.clone()).await?,
        };
        if created == Created::AlreadyThere {
            // Only the same bytes are ours: a try whose answer was lost.
            if self.get_bytes(&key).await? != body {
                return Err(BackupError::Other(format!(
                    "{key} is already in the store with other content; Strata never overwrites an object"
                )));
            }
        }
        Ok(())
    }

    /// [`Store::create`] on a local store, durable when it returns: written under
    /// `_arriving/`, fsynced, given its name, flushed (see `arriving.rs`).
    async fn create_durably(&self, local: &LocalRoot, key: &Path, body: Bytes) -> Result<Created> {
        let at = Path::from(arriving_key());
        self.create(&at, body).await?;
        let (local, written, name) = (
            local.clone(),
            local.path.join(at.as_ref()),
            local.path.join(key.as_ref()),
        );
        tokio::task::spawn_blocking(move || {
            let placed = std::fs::File::open(&written)
                .and_then(|f| f.sync_all())
                .and_then(|()| place(&written, &name))
                .map_err(|e| BackupError::Other(format!("writing {}: {e}", name.display())))?;
            local.flush.flush(&local.path)?;
            Ok(if placed { Created::New } else { Created::AlreadyThere })
        })
        .await
        .map_err(|e| BackupError::Other(e.to_string()))?
    }

    /// Where a data object is written: under `_arriving/` on a local store (it
    /// gets its name `key` once durable), else at `key`.
    fn write_key(&self, key: &Path) -> Path {
        match &self.local {
            Some(_) => Path::from(arriving_key()),
            None => key.clone(),
        }
    }

    /// A data object written at `at` for `key` (see [`Store::write_key`]); on a
    /// local store, names what was written if it is time to.
    async fn written(&self, at: &Path, key: &Path) -> Result<()> {
        match &self.local {
            Some(local)
                if local
                    .arriving
                    .push(local.path.join(at.as_ref()), local.path.join(key.as_ref())) =>
            {
                self.make_durable().await
            }
            _ => Ok(()),
        }
    }

    /// Stores a small data file's bytes (compressed or raw) as the object
    /// `name` in one PUT, sealed when the store has a key and paced under the
    /// bandwidth limit, its writeback started on a local disk. An object
    /// already under that content-addressed name holds the same file. Returns
    /// the bytes stored.
    pub(crate) async fn put_file(&self, instance: &str, name: &str, body: Bytes, limits: &Limits) -> Result<u64> {
        let key = self.key_of(instance, Object::File(name));
        let body = self.seal(body)?;
        let stored = body.len() as u64;
        limits.pace(stored).await;
        let slot = self.slots.upload().await?;
        let at = self.write_key(&key);
        self.create(&at, body).await?;
        drop(slot);
        self.write_behind(&at).await;
        self.written(&at, &key).await?;
        Ok(stored)
    }

    /// One PUT of a new object, create-only where the store can refuse an
    /// existing key (local, Azure, GCS; S3 with conditional writes), so that
    /// a store under object lock is never asked to overwrite; a store that
    /// cannot do conditional writes gets a plain PUT.
    async fn create(&self, key: &Path, body: Bytes) -> Result<Created> {
        self.retrying(&format!("writing {key}"), &self.counts.puts, || async {
            let payload = PutPayload::from(body.clone());
            match self.inner.put_opts(key, payload, PutMode::Create.into()).await {
                Ok(_) => Ok(Created::New),
                Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => {
                    Ok(Created::AlreadyThere)
                }
                Err(object_store::Error::NotImplemented { .. }) => {
                    let payload = PutPayload::from(body.clone());
                    let put = self.inner.put(key, payload).await;
                    put.map(|_| Created::New).map_err(store_err(format!("writing {key}")))
                }
                Err(e) => Err(store_err(format!("writing {key}"))(e)),
            }
        })
        .await
    }

    /// Stores a large data file as the object `name` in a multipart upload fed
    /// by the pieces `open` produces (already sealed: see [`Store::sealer`]);
    /// `open` is called again for each retry. Parts grow with `size` (the
    /// file's bytes) so no upload needs more than [`MAX_PARTS`]. Returns the
    /// bytes stored.
    pub(crate) async fn put_file_streamed<F>(
        &self,
        instance: &str,
        name: &str,
        size: u64,
        limits: &Limits,
        open: F,
    ) -> Result<u64>
    where
        F: Fn() -> mpsc::Receiver<Result<Piece>>,
    {
        let key = self.key_of(instance, Object::File(name));
        let part_size = part_size(size);
        let at = self.write_key(&key);
        let stored = self
            .retrying(&format!("uploading {key}"), &self.counts.puts, || {
                self.put_pieces(&at, open(), part_size, limits)
            })
            .await?;
        self.write_behind(&at).await;
        self.written(&at, &key).await?;
        Ok(stored)
    }

    /// One multipart upload of `pieces` in parts of exactly `part_size` bytes
    /// (the last may be shorter), each sent under an upload slot, completed
    /// only after [`Piece::End`]; on any failure the upload is aborted, so no
    /// part is left behind.
    async fn put_pieces(
        &self,
        key: &Path,
        mut pieces: mpsc::Receiver<Result<Piece>>,
        part_size: usize,
        limits: &Limits,
    ) -> Result<u64> {
        let mut upload = self
            .inner
            .put_multipart(key)
            .await
            .map_err(store_err(format!("starting multipart upload of {key}")))?;
        let mut parts = PartsInFlight::new(part_size, key);
        let mut stored = 0u64;
        let fed = async {
            loop {
                match pieces.recv().await {
                    Some(Ok(Piece::Data(bytes))) => {
                        limits.pace(bytes.len() as u64).await;
                        stored += bytes.len() as u64;
                        parts.push(bytes, upload.as_mut(), &self.slots).await?;
                    }
                    Some(Ok(Piece::End)) => return parts.finish(upload.as_mut(), &self.slots).await,
                    Some(Err(e)) => return Err(e),
                    None => {
                        return Err(BackupError::Other(format!(
                            "reading the file for {key} stopped before its end"
                        )));
                    }
                }
            }
        };
        match fed.await {
            Ok(()) => {
                upload
                    .complete()
                    .await
                    .map_err(store_err(format!("finishing multipart upload of {key}")))?;
                Ok(stored)
            }
            Err(e) => {
                drop(parts);
                if let Err(abort) = upload.abort().await {
                    tracing::warn!("cannot abort the multipart upload of {key}: {abort}");
                }
                Err(e)
            }
        }
    }

    /// The encryptor a streamed data object is sealed with (a fresh nonce each
    /// call); `None` when the store has no key.
    pub(crate) fn sealer(&self) -> Option<StreamEncryptor> {
        self.cipher.as_ref().map(crate::crypto::Cipher::encryptor)
    }

    /// Reads a whole small object (manifest, history record, data id), opened
    /// when the store has a key.
    pub(crate) async fn read(&self, instance: &str, object: Object<'_>) -> Result<Bytes> {
        let key = self.key_of(instance, object);
        let raw = self.get_bytes(&key).await?;
        let sealed = crate::crypto::is_encrypted(&raw);
        match &self.cipher {
            Some(c) if sealed => Ok(c.decrypt(&raw, key.as_ref())?.into()),
            None if !sealed => Ok(raw),
            Some(_) => Err(BackupError::BadObject {
                key: key.to_string(),
                reason: "is not encrypted although backup.encryption.key is set (written without the key, \
                         or replaced)"
                    .into(),
            }),
            None => Err(BackupError::BadObject {
                key: key.to_string(),
                reason: crate::crypto::NEEDS_KEY.into(),
            }),
        }
    }

    /// The stored bytes of the object at `key`, as they are.
    async fn get_bytes(&self, key: &Path) -> Result<Bytes> {
        let context = || format!("reading {key}");
        self.retrying(&context(), &self.counts.gets, || async {
            let got = self.inner.get(key).await.map_err(store_err(context()))?;
            got.bytes().await.map_err(store_err(context()))
        })
        .await
    }

    /// Reads the data object `name` (sealed when `encrypted`, about
    /// `stored_bytes` long) and hands its [`Body`] to `consume` with the
    /// decryptor it needs and its key (for messages); the read and `consume`
    /// are tried again together on a transient failure, so `consume` must
    /// start from scratch each time.
    pub(crate) async fn read_file<T, F, Fut>(
        &self,
        instance: &str,
        name: &str,
        encrypted: bool,
        stored_bytes: u64,
        consume: F,
    ) -> Result<T>
    where
        F: Fn(Body, Option<StreamDecryptor>, String) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let key = self.key_of(instance, Object::File(name));
        self.retrying(&format!("fetching {name}"), &self.counts.gets, || async {
            let decryptor = match (&self.cipher, encrypted) {
                (Some(c), true) => Some(c.decryptor(key.as_ref())),
                (None, true) => {
                    return Err(BackupError::BadObject {
                        key: key.to_string(),
                        reason: crate::crypto::NEEDS_KEY.into(),
                    });
                }
                (_, false) => None,
            };
            let body = self.open_body(&key, stored_bytes).await?;
            consume(body, decryptor, key.to_string()).await
        })
        .await
    }

    /// Starts reading the object at `key`: one GET, or for a large object on a
    /// remote store the first of its ranges, the later ones fetched
    /// [`RANGES_AHEAD`] at a time, each under a download slot.
    async fn open_body(&self, key: &Path, stored_bytes: u64) -> Result<Body> {
        let ranged = self.local.is_none() && stored_bytes > RANGED_FROM;
        let slot = Arc::new(self.slots.download().await?);
        let options = GetOptions {
            range: ranged.then_some(GetRange::Bounded(0..RANGE_SIZE)),
            ..GetOptions::default()
        };
        let got = self.inner.get_opts(key, options).await.map_err(|e| match e {
            object_store::Error::NotFound { .. } => BackupError::BadObject {
                key: key.to_string(),
                reason: MISSING.into(),
            },
            e => store_err(format!("reading {key}"))(e),
        })?;
        let (range, size) = (got.range.clone(), got.meta.size);
        let first = match got.payload {
            // A local file: read to its end, whatever range was asked for.
            GetResultPayload::File(file, _) => {
                return Ok(Body::File {
                    file,
                    start: range.start,
                    len: size - range.start,
                });
            }
            GetResultPayload::Stream(stream) => {
                let context = format!("reading {key}");
                stream.map(move |piece| {
                    let bytes = piece.map_err(store_err(context.clone()))?;
                    Ok(Fetched::new(bytes, slot.clone()))
                })
            }
        };
        if !ranged {
            return Ok(Body::Pieces(first.boxed()));
        }
        let (inner, slots, key) = (self.inner.clone(), self.slots.clone(), key.clone());
        let later = futures::stream::iter(later_ranges(size))
            .map(move |range| {
                let (inner, slots, key) = (inner.clone(), slots.clone(), key.clone());
                async move {
                    let slot = Arc::new(slots.download().await?);
                    let bytes = inner
                        .get_range(&key, range)
                        .await
                        .map_err(store_err(format!("reading {key}")))?;
                    Ok(Fetched::new(bytes, slot))
                }
            })
            .buffered(RANGES_AHEAD);
        Ok(Body::Pieces(first.chain(later).boxed()))
    }

    /// Bytes `range` of the data object `name`, which the manifest says is
    /// `stored_bytes` long: one ranged GET under a download slot, retried.
    /// An object of another size, or one that ends early, is an error naming it.
    pub(crate) async fn read_range(
        &self,
        instance: &str,
        name: &str,
        range: std::ops::Range<u64>,
        stored_bytes: u64,
    ) -> Result<Bytes> {
        let key = self.key_of(instance, Object::File(name));
        let bad = |reason: String| BackupError::BadObject {
            key: key.to_string(),
            reason,
        };
        if range.end > stored_bytes {
            return Err(bad(format!(
                "bytes {range:?} asked for, but the manifest says it holds {stored_bytes}"
            )));
        }
        let context = || format!("reading {key}");
        let (bytes, size) = self
            .retrying(&context(), &self.counts.gets, || async {
                let _slot = self.slots.download().await?;
                let options = GetOptions {
                    range: Some(GetRange::Bounded(range.clone())),
                    ..GetOptions::default()
                };
                let got = match self.inner.get_opts(&key, options).await {
                    Ok(got) => got,
                    Err(object_store::Error::NotFound { .. }) => return Err(bad(MISSING.into())),
                    // A range past the end of an object cut short: say that, not the store's complaint.
                    Err(e) => match self.inner.head(&key).await {
                        Ok(meta) if meta.size != stored_bytes => {
                            return Err(bad(format!("is {} bytes, the manifest says {stored_bytes}", meta.size)));
                        }
                        _ => return Err(store_err(context())(e)),
                    },
                };
                let size = got.meta.size;
                let bytes = got.bytes().await.map_err(store_err(context()))?;
                Ok((bytes, size))
            })
            .await?;
        if size != stored_bytes {
            return Err(bad(format!("is {size} bytes, the manifest says {stored_bytes}")));
        }
        if bytes.len() as u64 != range.end - range.start {
            return Err(bad(format!("answered {} bytes for range {range:?}", bytes.len())));
        }
        Ok(bytes)
    }

    /// The key objects are sealed with, if any.
    pub(crate) fn cipher(&self) -> Option<&crate::crypto::Cipher> {
        self.cipher.as_ref()
    }

    /// The stored size of an object, or `None` when the store does not hold it
    /// (counted as a GET: a HEAD costs about the same).
    pub(crate) async fn size_of(&self, instance: &str, object: Object<'_>) -> Result<Option<u64>> {
        let key = self.key_of(instance, object);
        self.retrying(&format!("looking up {key}"), &self.counts.gets, || async {
            match self.inner.head(&key).await {
                Ok(meta) => Ok(Some(meta.size)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(store_err(format!("looking up {key}"))(e)),
            }
        })
        .await
    }

    /// Deletes an object; one already gone counts as deleted (a retry after a
    /// lost answer must not fail).
    pub(crate) async fn delete(&self, instance: &str, object: Object<'_>) -> Result<()> {
        let key = self.key_of(instance, object);
        self.retrying(&format!("deleting {key}"), &self.counts.deletes, || async {
            match self.inner.delete(&key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(store_err(format!("deleting {key}"))(e)),
            }
        })
        .await
    }

    /// The bytes to store for `plain`: sealed when the store has a key.
    fn seal(&self, plain: Bytes) -> Result<Bytes> {
        match &self.cipher {
            Some(c) => Ok(c.encrypt(&plain)?.into()),
            None => Ok(plain),
        }
    }

    /// Every object in one of `instance`'s folders.
    pub(crate) async fn list(&self, instance: &str, folder: Folder) -> Result<Vec<Listed>> {
        let dir = self.key(&folder.key(instance));
        let metas = match folder {
            Folder::Files => self.list_sharded(&dir).await?,
            Folder::Manifests | Folder::History | Folder::Verifications | Folder::Log => self.list_prefix(&dir).await?,
        };
        let base_len = self.key(&instance_dir(instance)).as_ref().len() + 1;
        Ok(metas
            .into_iter()
            .map(|m| Listed {
                name: m.location.as_ref().get(base_len..).unwrap_or_default().to_string(),
                size: m.size,
                modified: m.last_modified.timestamp_micros(),
            })
            .collect())
    }

    /// Names of every backup instance in the store, sorted.
    pub async fn instances(&self) -> Result<Vec<String>> {
        let listing = self.list_folder(&self.key(BACKUP_ROOT)).await?;
        let mut names: Vec<String> = listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect();
        names.sort();
        Ok(names)
    }

    async fn list_prefix(&self, prefix: &Path) -> Result<Vec<object_store::ObjectMeta>> {
        use futures::TryStreamExt;
        self.retrying(&format!("listing {prefix}"), &self.counts.lists, || async {
            self.inner
                .list(Some(prefix))
                .try_collect::<Vec<_>>()
                .await
                .map_err(store_err(format!("listing {prefix}")))
        })
        .await
    }

    /// The objects and sub-folders directly under `prefix`.
    async fn list_folder(&self, prefix: &Path) -> Result<object_store::ListResult> {
        self.retrying(&format!("listing {prefix}"), &self.counts.lists, || async {
            self.inner
                .list_with_delimiter(Some(prefix))
                .await
                .map_err(store_err(format!("listing {prefix}")))
        })
        .await
    }

    /// Every object under `dir`, listing its sub-folders in parallel: data objects
    /// are spread over 256 shard folders, and one listing at a time would leave
    /// both the store's and our cores idle.
    async fn list_sharded(&self, dir: &Path) -> Result<Vec<object_store::ObjectMeta>> {
        use futures::{StreamExt, TryStreamExt};
        let top = self.list_folder(dir).await?;
        let shards: Vec<Vec<object_store::ObjectMeta>> = futures::stream::iter(top.common_prefixes)
            .map(|shard| async move { self.list_prefix(&shard).await })
            .buffer_unordered(LIST_CONCURRENCY)
            .try_collect()
            .await?;
        let mut all = top.objects;
        all.extend(shards.into_iter().flatten());
        Ok(all)
    }

    /// The full key of `object`, also for messages that name it.
    pub(crate) fn key_of(&self, instance: &str, object: Object<'_>) -> Path {
        self.key(&object.key(instance))
    }

    /// `prefix/rest`.
    fn key(&self, rest: &str) -> Path {
        let mut parts: Vec<String> = self.prefix.parts().map(|p| p.as_ref().to_string()).collect();
        parts.extend(rest.split('/').filter(|p| !p.is_empty()).map(str::to_string));
        Path::from_iter(parts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_behind_keeps_at_most_its_window_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let mut wb = WriteBehind::default();
        let size = 6u64 << 20;
        for i in 0..5 {
            let path = dir.path().join(format!("object_{i}"));
            std::fs::write(&path, vec![i as u8; size as usize]).unwrap();
            wb.push(std::fs::File::open(&path).unwrap(), size);
            assert!(wb.bytes <= WRITE_BEHIND_BYTES, "{} bytes in flight", wb.bytes);
        }
        assert_eq!((wb.files.len() as u64, wb.bytes), (2, 2 * size));
        // One object larger than the window is written behind on its own.
        let big = dir.path().join("big");
        std::fs::write(&big, vec![0u8; (WRITE_BEHIND_BYTES + 1) as usize]).unwrap();
        wb.push(std::fs::File::open(&big).unwrap(), WRITE_BEHIND_BYTES + 1);
        assert_eq!(wb.files.len(), 1);
        // Many tiny objects: a bounded number of open files.
        for i in 0..3 * WRITE_BEHIND_FILES {
            let path = dir.path().join(format!("tiny_{i}"));
            std::fs::write(&path, b"x").unwrap();
            wb.push(std::fs::File::open(&path).unwrap(), 1);
            assert!(wb.files.len() <= WRITE_BEHIND_FILES);
        }
    }

    #[test]
    fn parses_fs_and_rejects_bad_strings() {
        let dir = tempfile::tempdir().unwrap();
        let conn = format!(
            "fs::root={};atomic_write_dir={}/atomic;",
            dir.path().display(),
            dir.path().display()
        );
        assert!(Store::open(&conn).is_ok());
        assert!(Store::open(&format!("file://{}", dir.path().display())).is_ok());
        for bad in [
            "fs::",
            "fs::root=relative;",
            "ftp::host=x;",
            "nonsense",
            "s3::region=eu;",
            "fs::root=/tmp;colour=blue;",
        ] {
            let err = Store::open(bad).unwrap_err().to_string();
            assert!(err.contains("backup.object.store"), "{bad}: {err}");
        }
    }

    #[test]
    fn s3_root_is_the_folder_inside_the_bucket_and_prefix_its_alias() {
        let s3 = "s3::bucket=b;region=r;endpoint=http://127.0.0.1:1;allow_http=true;";
        for (extra, expected) in [
            ("root=ours/db1;", "ours/db1/_backup/i/data_id"),
            ("prefix=p;", "p/_backup/i/data_id"),
            ("", "_backup/i/data_id"),
        ] {
            let store = Store::open(&format!("{s3}{extra}")).unwrap();
            assert_eq!(store.key_of("i", Object::DataId).as_ref(), expected);
        }
        let err = Store::open(&format!("{s3}root=a;prefix=b;")).unwrap_err().to_string();
        assert!(err.contains("either root or prefix"), "{err}");
    }

    #[test]
    fn secrets_are_redacted() {
        let conn =
            "s3::bucket=b;access_key_id=AKIA;secret_access_key=TOPSECRET;endpoint=http://127.0.0.1:1;allow_http=maybe;";
        let err = Store::open(conn).unwrap_err().to_string();
        assert!(!err.contains("TOPSECRET"), "{err}");
        assert_eq!(
            redact(conn),
            "s3::bucket=b;access_key_id=AKIA;secret_access_key=***;endpoint=http://127.0.0.1:1;allow_http=maybe;"
        );
        let ok = Store::open(
            "s3::bucket=b;secret_access_key=TOPSECRET;access_key_id=x;endpoint=http://127.0.0.1:1;allow_http=true;",
        )
        .unwrap();
        assert!(!format!("{ok:?}").contains("TOPSECRET"));
    }
}
