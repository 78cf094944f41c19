//! How many requests a store has in flight at once, for uploads and for
//! downloads, and how large objects are cut into parts and ranges. Every request holds a
//! permit while it runs, and a download's bytes keep theirs until they are
//! written, so memory stays bounded by permits times the part or range size,
//! whatever the number and size of the files.
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use object_store::{MultipartUpload, PutPayload};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{BackupError, Result, store_err};

/// The piece of an object one ranged GET fetches.
pub(crate) const RANGE_SIZE: u64 = 8 << 20;
/// Objects larger than this are fetched in parallel ranges from a remote store.
pub(crate) const RANGED_FROM: u64 = 2 * RANGE_SIZE;
/// Ranges of one object fetched ahead of the one being written.
pub(crate) const RANGES_AHEAD: usize = 4;

/// Requests in flight at once (`backup.upload.concurrency`,
/// `backup.download.concurrency`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Concurrency {
    pub upload: usize,
    pub download: usize,
}

impl Concurrency {
    /// The defaults for a store: a local disk gains little past a few streams
    /// at once, while a remote store's requests mostly wait on round trips, so
    /// many go at once (4 per core, 8 to 32: each may hold a part or a small
    /// file of up to 8 MiB, so memory stays in the hundreds of MiB).
    pub fn default_for(local: bool) -> Self {
        if local {
            return Self { upload: 4, download: 4 };
        }
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let n = (cores * 4).clamp(8, 32);
        Self { upload: n, download: n }
    }
}

/// The permits of one store's requests.
#[derive(Debug, Clone)]
pub(crate) struct Slots {
    concurrency: Concurrency,
    uploads: Arc<Semaphore>,
    downloads: Arc<Semaphore>,
}

impl Slots {
    pub(crate) fn new(concurrency: Concurrency) -> Self {
        Self {
            concurrency,
            uploads: Arc::new(Semaphore::new(concurrency.upload.max(1))),
            downloads: Arc::new(Semaphore::new(concurrency.download.max(1))),
        }
    }

    pub(crate) fn concurrency(&self) -> Concurrency {
        self.concurrency
    }

    pub(crate) async fn upload(&self) -> Result<OwnedSemaphorePermit> {
        acquire(&self.uploads).await
    }

    pub(crate) async fn download(&self) -> Result<OwnedSemaphorePermit> {
        acquire(&self.downloads).await
    }
}

async fn acquire(slots: &Arc<Semaphore>) -> Result<OwnedSemaphorePermit> {
    slots
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| BackupError::Other("the store's transfer slots were closed".into()))
}

/// The ranges after the first that fetch an object of `size` bytes.
pub(crate) fn later_ranges(size: u64) -> impl Iterator<Item = Range<u64>> {
    (1..size.div_ceil(RANGE_SIZE)).map(move |i| i * RANGE_SIZE..((i + 1) * RANGE_SIZE).min(size))
}

/// The smallest part of a multipart upload (S3 refuses parts under 5 MiB).
pub(crate) const PART_SIZE: usize = 8 << 20;
/// The most parts one multipart upload may have (S3's limit; Azure allows 50,000).
pub const MAX_PARTS: u64 = 10_000;

/// One piece of a streamed data object; `End` says it is complete.
#[derive(Debug)]
pub(crate) enum Piece {
    Data(Bytes),
    End,
}

/// The part size for an object from a file of `size` bytes: at least
/// [`PART_SIZE`], and large enough that [`MAX_PARTS`] parts hold it with room
/// for zstd's worst case and the seal, in whole MiB.
pub(crate) fn part_size(size: u64) -> usize {
    let room = size + size / 64 + (1 << 20);
    let needed = room.div_ceil(MAX_PARTS).div_ceil(1 << 20) << 20;
    usize::try_from(needed).unwrap_or(usize::MAX).max(PART_SIZE)
}

/// A data object's bytes as they arrive.
pub(crate) enum Body {
    /// A local store's object file: `len` bytes from `start`.
    File { file: std::fs::File, start: u64, len: u64 },
    /// Pieces from the network, in order.
    Pieces(futures::stream::BoxStream<'static, Result<Fetched>>),
}

/// A piece of a downloaded object; it keeps its request's download slot until
/// dropped (written), so downloads hold bounded memory.
pub(crate) struct Fetched {
    pub(crate) bytes: Bytes,
    _slot: Arc<OwnedSemaphorePermit>,
}

impl Fetched {
    pub(crate) fn new(bytes: Bytes, slot: Arc<OwnedSemaphorePermit>) -> Self {
        Self { bytes, _slot: slot }
    }
}

/// The parts of one multipart upload: the one being filled, and those on
/// their way (each holding an upload slot; dropping this cancels them).
pub(crate) struct PartsInFlight {
    part_size: usize,
    /// `uploading <key>`, for errors.
    context: String,
    filling: Vec<Bytes>,
    filling_len: usize,
    sent: usize,
    uploading: tokio::task::JoinSet<object_store::Result<()>>,
}

impl PartsInFlight {
    pub(crate) fn new(part_size: usize, key: &object_store::path::Path) -> Self {
        Self {
            part_size,
            context: format!("uploading {key}"),
            filling: Vec::new(),
            filling_len: 0,
            sent: 0,
            uploading: tokio::task::JoinSet::new(),
        }
    }

    /// Adds `bytes`, sending each part they complete (all parts but the last
    /// are exactly `part_size`, as some stores require).
    pub(crate) async fn push(
        &mut self,
        mut bytes: Bytes,
        upload: &mut dyn MultipartUpload,
        slots: &Slots,
    ) -> Result<()> {
        while !bytes.is_empty() {
            let room = self.part_size - self.filling_len;
            let piece = bytes.split_to(room.min(bytes.len()));
            self.filling_len += piece.len();
            self.filling.push(piece);
            if self.filling_len == self.part_size {
                self.send(upload, slots).await?;
            }
        }
        Ok(())
    }

    /// Sends what is left (an upload has at least one part) and waits for
    /// every part sent.
    pub(crate) async fn finish(&mut self, upload: &mut dyn MultipartUpload, slots: &Slots) -> Result<()> {
        if self.filling_len > 0 || self.sent == 0 {
            self.send(upload, slots).await?;
        }
        while let Some(done) = self.uploading.join_next().await {
            self.checked(done)?;
        }
        Ok(())
    }

    /// Sends the part being filled under an upload slot (parts are numbered in
    /// the order sent); fails with the error of any part that already failed.
    async fn send(&mut self, upload: &mut dyn MultipartUpload, slots: &Slots) -> Result<()> {
        let slot = slots.upload().await?;
        let part = upload.put_part(PutPayload::from_iter(std::mem::take(&mut self.filling)));
        self.filling_len = 0;
        self.sent += 1;
        self.uploading.spawn(async move {
            let _slot = slot;
            part.await
        });
        while let Some(done) = self.uploading.try_join_next() {
            self.checked(done)?;
        }
        Ok(())
    }

    fn checked(&self, done: std::result::Result<object_store::Result<()>, tokio::task::JoinError>) -> Result<()> {
        match done {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(store_err(self.context.clone())(e)),
            Err(e) => Err(BackupError::Other(format!(
                "{}: a part upload stopped: {e}",
                self.context
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_the_object_once_in_order() {
        assert_eq!(later_ranges(RANGE_SIZE).count(), 0);
        let size = 3 * RANGE_SIZE + 5;
        let ranges: Vec<_> = later_ranges(size).collect();
        assert_eq!(ranges.first().map(|r| r.start), Some(RANGE_SIZE));
        assert_eq!(ranges.last().map(|r| r.end), Some(size));
        assert!(ranges.windows(2).all(|w| w[0].end == w[1].start));
        assert_eq!(ranges.len(), 3);
    }

    #[test]
    fn parts_grow_so_no_file_needs_more_than_the_most_parts_a_store_allows() {
        assert_eq!(part_size(1 << 30), PART_SIZE);
        for size in [80u64 << 30, 5 << 40] {
            let part = part_size(size) as u64;
            assert!(part > PART_SIZE as u64 && part % (1 << 20) == 0);
            assert!((size + size / 64 + (1 << 20)).div_ceil(part) <= MAX_PARTS, "{size}");
        }
    }

    #[test]
    fn remote_stores_get_more_requests_in_flight_than_a_local_disk() {
        let (local, remote) = (Concurrency::default_for(true), Concurrency::default_for(false));
        assert!(remote.upload >= 8 && remote.download > local.download, "{remote:?}");
    }
}
