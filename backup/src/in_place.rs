//! Reading a backup where it lies: one table of a located state, and byte
//! ranges of its files served straight from their objects, so a query fetches
//! only the footers and column chunks it needs and nothing is written to a
//! database.
//!
//! A raw object is read by whole 64 KiB groups, each checked against the
//! file's blake3 tree stored beside it (`tree.rs`; a file of one group
//! against its hash); a sealed one by the 1 MiB segments covering the range,
//! each authenticated; a `.zst` object cannot be read by range, so it is
//! fetched whole the first time (checked by size and blake3 like a restore)
//! into a temporary file and read from there, as is a raw object without a
//! usable tree (stored before trees were, or lost). No byte is used unchecked.
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::OnceCell;

use crate::catalog::{Selector, locate};
use crate::crypto::{NEEDS_KEY, SealedRange};
use crate::error::{BackupError, Result};
use crate::layout::{Codec, Object, tree_name};
use crate::manifest::{BackedUpFile, TableEntry};
use crate::store::Store;
use crate::tree::{Tree, has_tree, tree_size};

/// One table as a backup (or the commit log, at an instant) holds it.
#[derive(Debug, Clone)]
pub struct BackupTable {
    pub instance: String,
    /// The state's timestamp, as `backups()` shows it.
    pub backup_timestamp: String,
    pub entry: TableEntry,
}

/// Finds `table` in the state `selector` names.
pub async fn open_table(store: &Store, selector: &Selector, table: &str) -> Result<BackupTable> {
    let manifest = locate(store, selector).await?;
    let entry = manifest.table(table)?.clone();
    Ok(BackupTable {
        instance: manifest.instance,
        backup_timestamp: manifest.backup_timestamp,
        entry,
    })
}

/// Ranges closer than this are read as one. Small: the ranges of a read go
/// out at once, so merging saves requests, not time, and every byte of a gap
/// is fetched for nothing.
pub(crate) const COALESCE_GAP: u64 = 4 << 10;

/// The end of a file read (its footer, fetched first) is kept up to this size
/// and serves later reads inside it: the last column chunks lie there.
const TAIL_KEPT: u64 = 1 << 20;

/// `ranges` sorted and merged where they overlap or lie within [`COALESCE_GAP`].
fn coalesce(ranges: &[Range<u64>]) -> Vec<Range<u64>> {
    let mut sorted = ranges.to_vec();
    sorted.sort_by_key(|r| r.start);
    let mut merged: Vec<Range<u64>> = Vec::with_capacity(sorted.len());
    for r in sorted {
        match merged.last_mut() {
            Some(last) if r.start <= last.end.saturating_add(COALESCE_GAP) => last.end = last.end.max(r.end),
            _ => merged.push(r),
        }
    }
    merged
}

/// How an object is opened for ranged reads, found on its first read.
enum Opened {
    /// Read by whole groups, each checked against the file's stored tree.
    Tree(Tree),
    /// A file of one group: read whole and checked against its hash.
    Whole,
    /// The object's header (magic and nonce).
    Sealed(Bytes),
    /// The whole file, fetched and checked (deleted when dropped): a `.zst`
    /// object, or a raw one without a usable tree.
    Fetched(Arc<tempfile::NamedTempFile>),
}

/// A backed-up data file read by byte range from its object.
pub struct RemoteFile {
    store: Store,
    instance: String,
    file: BackedUpFile,
    opened: OnceCell<Opened>,
    /// The last bytes read that end the file: (offset, bytes).
    tail: std::sync::Mutex<Option<(u64, Bytes)>>,
}

impl std::fmt::Debug for RemoteFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteFile").field("object", &self.file.object).finish()
    }
}

impl RemoteFile {
    pub fn new(store: Store, instance: &str, file: BackedUpFile) -> Self {
        Self {
            store,
            instance: instance.to_string(),
            file,
            opened: OnceCell::new(),
            tail: std::sync::Mutex::default(),
        }
    }

    pub fn file(&self) -> &BackedUpFile {
        &self.file
    }

    /// The object's key in the store, for messages.
    pub fn key(&self) -> String {
        self.store
            .key_of(&self.instance, Object::File(&self.file.object))
            .to_string()
    }

    /// Bytes `range` of the file (not of its object).
    pub async fn read(&self, range: Range<u64>) -> Result<Bytes> {
        let len = self.file.file.bytes;
        if range.start > range.end || range.end > len {
            return Err(BackupError::InvalidRequest(format!(
                "bytes {range:?} of {}, which holds {len}",
                self.key()
            )));
        }
        if range.is_empty() {
            return Ok(Bytes::new());
        }
        if let Some((at, tail)) = self.tail.lock().unwrap_or_else(|p| p.into_inner()).as_ref()
            && range.start >= *at
        {
            return Ok(tail.slice((range.start - at) as usize..(range.end - at) as usize));
        }
        let (at, bytes) = self.read_uncached(range.clone()).await?;
        if at + bytes.len() as u64 == len && bytes.len() as u64 <= TAIL_KEPT {
            *self.tail.lock().unwrap_or_else(|p| p.into_inner()) = Some((at, bytes.clone()));
        }
        Ok(bytes.slice((range.start - at) as usize..(range.end - at) as usize))
    }

    /// Bytes covering `range`, checked, and where they start (a check may need
    /// whole groups).
    async fn read_uncached(&self, range: Range<u64>) -> Result<(u64, Bytes)> {
        let len = self.file.file.bytes;
        let corrupt = |reason: String| BackupError::BadObject {
            key: self.key(),
            reason,
        };
        match self.opened.get_or_try_init(|| self.open()).await? {
            Opened::Whole => {
                let bytes = self.stored(0..len).await?;
                let hash = blake3::hash(&bytes).to_hex().to_string();
                if hash != self.file.file.hash {
                    return Err(corrupt(format!(
                        "content hash {hash} differs from the manifest's {} (corrupt object)",
                        self.file.file.hash
                    )));
                }
                Ok((0, bytes))
            }
            Opened::Tree(tree) => {
                let widened = tree.widen(&range);
                let bytes = self.stored(widened.clone()).await?;
                if !tree.holds(&widened, &bytes) {
                    return Err(corrupt(format!(
                        "bytes {widened:?} do not match the file's blake3 tree (corrupt object)"
                    )));
                }
                Ok((widened.start, bytes))
            }
            Opened::Sealed(header) => {
                let cipher = self.cipher()?;
                let sealed = SealedRange::new(range.clone(), len);
                let stored = self.stored(sealed.stored()).await?;
                Ok((
                    range.start,
                    cipher.open_range(header, &sealed, &stored, &self.key())?.into(),
                ))
            }
            Opened::Fetched(local) => {
                let local = local.clone();
                let key = self.key();
                tokio::task::spawn_blocking(move || {
                    let mut buf = vec![0; (range.end - range.start) as usize];
                    local
                        .as_file()
                        .read_exact_at(&mut buf, range.start)
                        .map_err(|e| BackupError::Other(format!("reading the fetched copy of {key}: {e}")))?;
                    Ok((range.start, Bytes::from(buf)))
                })
                .await
                .map_err(|e| BackupError::Other(e.to_string()))?
            }
        }
    }

    /// Fetches the whole file into `dest`, checked against the manifest (size,
    /// blake3); on failure `dest` is removed. Returns the stored bytes fetched.
    pub async fn download(&self, dest: std::path::PathBuf) -> Result<u64> {
        crate::fetch::fetch_file(&self.store, &self.instance, &self.file, dest).await
    }

    /// Bytes of each of `ranges`, in order. Ranges less than [`COALESCE_GAP`]
    /// apart are fetched as one; the fetches run at once (each under a
    /// download slot).
    pub async fn read_ranges(&self, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        let merged = coalesce(ranges);
        let fetched = futures::future::try_join_all(merged.iter().map(|r| self.read(r.clone()))).await?;
        Ok(ranges
            .iter()
            .map(|r| {
                // The merged range holding `r`: the last one starting at or before it.
                let i = merged.partition_point(|m| m.start <= r.start) - 1;
                let at = (r.start - merged[i].start) as usize;
                fetched[i].slice(at..at + (r.end - r.start) as usize)
            })
            .collect())
    }

    fn cipher(&self) -> Result<&crate::crypto::Cipher> {
        self.store.cipher().ok_or_else(|| BackupError::BadObject {
            key: self.key(),
            reason: NEEDS_KEY.into(),
        })
    }

    async fn open(&self) -> Result<Opened> {
        match (self.file.codec, self.file.encrypted) {
            (Codec::Raw, false) => self.open_tree().await,
            (Codec::Raw, true) => {
                self.cipher()?;
                Ok(Opened::Sealed(self.stored(SealedRange::header()).await?))
            }
            (Codec::Zst, _) => self.fetch_whole().await,
        }
    }

    /// The stored tree of an unencrypted raw object, checked against the
    /// file's hash. Without a usable one (stored before trees were, lost, cut
    /// short or altered), the file is fetched whole and checked instead: no
    /// byte is ever used unchecked.
    async fn open_tree(&self) -> Result<Opened> {
        let len = self.file.file.bytes;
        if !has_tree(len) {
            return Ok(Opened::Whole);
        }
        let name = tree_name(&self.file.file.hash);
        let size = tree_size(len);
        let why = match self.store.read_range(&self.instance, &name, 0..size, size).await {
            Ok(stored) => match Tree::parse(&stored, len, &self.file.file.hash) {
                Ok(tree) => return Ok(Opened::Tree(tree)),
                Err(reason) => reason,
            },
            Err(BackupError::BadObject { reason, .. }) => reason,
            Err(e) => return Err(e),
        };
        tracing::warn!(
            "the blake3 tree {} {why}: {} is fetched whole to be checked (the next backup stores its tree again)",
            self.store.key_of(&self.instance, Object::File(&name)),
            self.key()
        );
        self.fetch_whole().await
    }

    /// The whole file, fetched into a temporary file and checked (size, blake3).
    async fn fetch_whole(&self) -> Result<Opened> {
        let local = tempfile::NamedTempFile::new()
            .map_err(|e| BackupError::Other(format!("creating a temporary file: {e}")))?;
        self.download(local.path().to_path_buf()).await?;
        Ok(Opened::Fetched(Arc::new(local)))
    }

    async fn stored(&self, range: Range<u64>) -> Result<Bytes> {
        self.store
            .read_range(&self.instance, &self.file.object, range, self.file.stored_bytes)
            .await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use base64::Engine;

    use super::*;
    use crate::fault_tests::{backup, big_database, database, faulty_store};

    /// Ranges a Parquet reader asks for: the footer, the start, the middle,
    /// single bytes, the whole file, and neighbours to coalesce.
    fn ranges(len: u64) -> Vec<Vec<Range<u64>>> {
        vec![
            vec![len - 8..len],
            vec![0..len],
            vec![0..4, len / 2..len / 2 + 100, len - 1..len],
            vec![len / 3..len / 3 + 10, len / 3 + 20..len / 3 + 30],
        ]
    }

    /// Every range of every file of the latest backup reads back as the local file's bytes.
    async fn reads_back(store: &Store, s: &storage::Storage) -> Vec<RemoteFile> {
        let selector = Selector::default();
        let mut remote = Vec::new();
        for name in s.table_names() {
            let table = open_table(store, &selector, &name).await.unwrap();
            let dir = s.table(&name).unwrap().dir().to_path_buf();
            for f in &table.entry.files {
                let local = std::fs::read(dir.join(&f.file.path)).unwrap();
                let file = RemoteFile::new(store.clone(), &table.instance, f.clone());
                for asked in ranges(local.len() as u64) {
                    let got = file.read_ranges(&asked).await.unwrap();
                    for (r, bytes) in asked.iter().zip(got) {
                        assert_eq!(
                            &bytes[..],
                            &local[r.start as usize..r.end as usize],
                            "{} {r:?}",
                            f.object
                        );
                    }
                }
                assert!(file.read(0..local.len() as u64 + 1).await.is_err(), "past the end");
                remote.push(file);
            }
        }
        remote
    }

    #[tokio::test]
    async fn compressed_objects_are_fetched_once_checked_and_read_locally() {
        let (db, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let s = database(db.path());
        let (store, _) = faulty_store(dir.path());
        backup(&s, &store, 1_000, 10).await;
        let files = reads_back(&store, &s).await;
        assert!(files.iter().all(|f| f.file.codec == Codec::Zst), "small files compress");

        // One whose content is not what the manifest records is refused.
        let f = files[0].file.clone();
        let wrong = BackedUpFile {
            file: storage::DataFile {
                hash: "0".repeat(64),
                ..f.file
            },
            ..f
        };
        let err = RemoteFile::new(store, "test-instance", wrong)
            .read(0..4)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("content hash"), "{err}");
    }

    #[tokio::test]
    async fn raw_and_sealed_objects_are_read_by_range() {
        let (db, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let s = big_database(db.path());
        let (plain, _) = faulty_store(dir.path());
        backup(&s, &plain, 1_000, 10).await;
        let files = reads_back(&plain, &s).await;
        assert!(files.iter().all(|f| f.file.codec == Codec::Raw && !f.file.encrypted));

        // A raw object of another size than the manifest says is refused, naming it.
        let f = &files[0];
        let on_disk = dir.path().join(f.key());
        let bytes = std::fs::read(&on_disk).unwrap();
        std::fs::write(&on_disk, &bytes[..bytes.len() - 1]).unwrap();
        let fresh = RemoteFile::new(plain.clone(), "test-instance", f.file.clone());
        let err = fresh.read(0..4).await.unwrap_err().to_string();
        assert!(err.contains(&f.key()) && err.contains("the manifest says"), "{err}");

        // A changed byte anywhere is caught by the file's blake3 tree, in the group read.
        let mut flipped = bytes.clone();
        let at = flipped.len() / 2;
        flipped[at] ^= 1;
        std::fs::write(&on_disk, &flipped).unwrap();
        let fresh = RemoteFile::new(plain.clone(), "test-instance", f.file.clone());
        let at = at as u64;
        let err = fresh.read(at..at + 1).await.unwrap_err().to_string();
        assert!(err.contains(&f.key()) && err.contains("blake3 tree"), "{err}");
        fresh.read(0..4).await.expect("other groups still read");
        std::fs::write(&on_disk, &bytes).unwrap();

        // A changed or missing tree (objects stored before trees): the file is fetched whole and checked.
        let tree = dir
            .path()
            .join(format!("_backup/test-instance/{}", tree_name(&f.file.file.hash)));
        let stored_tree = std::fs::read(&tree).unwrap();
        let mut altered = stored_tree.clone();
        altered[0] ^= 1;
        std::fs::write(&tree, &altered).unwrap();
        let fresh = RemoteFile::new(plain.clone(), "test-instance", f.file.clone());
        assert_eq!(&fresh.read(0..4).await.unwrap()[..], &bytes[..4]);
        std::fs::remove_file(&tree).unwrap();
        let fresh = RemoteFile::new(plain.clone(), "test-instance", f.file.clone());
        assert_eq!(&fresh.read(0..4).await.unwrap()[..], &bytes[..4]);
        // ... so a changed byte is still caught, by the file's hash.
        std::fs::write(&on_disk, &flipped).unwrap();
        let fresh = RemoteFile::new(plain.clone(), "test-instance", f.file.clone());
        let err = fresh.read(0..4).await.unwrap_err().to_string();
        assert!(err.contains("content hash"), "{err}");
        std::fs::write(&on_disk, &bytes).unwrap();

        // The next backup stores the missing tree again, reading the local file;
        // and one cut short too.
        backup(&s, &plain, 1_500, 10).await;
        assert_eq!(std::fs::read(&tree).unwrap(), stored_tree);
        std::fs::write(&tree, b"").unwrap();
        backup(&s, &plain, 1_600, 10).await;
        assert_eq!(std::fs::read(&tree).unwrap(), stored_tree);

        // Sealed: only the segments read are fetched, each authenticated.
        let sealed_dir = tempfile::tempdir().unwrap();
        let key = base64::engine::general_purpose::STANDARD.encode([5u8; 32]);
        let (sealed, _) = faulty_store(sealed_dir.path());
        let sealed = sealed.with_cipher(Some(crate::Cipher::from_base64(&key).unwrap()));
        backup(&s, &sealed, 2_000, 10).await;
        let files = reads_back(&sealed, &s).await;
        assert!(files.iter().all(|f| f.file.codec == Codec::Raw && f.file.encrypted));
        let f = &files[0];
        let on_disk = sealed_dir.path().join(f.key());
        let mut bytes = std::fs::read(&on_disk).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&on_disk, &bytes).unwrap();
        let fresh = RemoteFile::new(sealed.clone(), "test-instance", f.file.clone());
        let len = f.file.file.bytes;
        let err = fresh.read(len - 8..len).await.unwrap_err().to_string();
        assert!(err.contains(&f.key()) && err.contains("cannot be decrypted"), "{err}");
        fresh
            .read(0..4)
            .await
            .expect("the segments before the altered one still open");
        let without_key = RemoteFile::new(plain, "test-instance", f.file.clone());
        let err = without_key.read(0..4).await.unwrap_err().to_string();
        assert!(err.contains("backup.encryption.key"), "{err}");
    }

    #[test]
    fn near_ranges_merge_and_far_ones_do_not() {
        let far = COALESCE_GAP + 1;
        assert_eq!(coalesce(&[10..20, 0..5, 20..30]), vec![0..30]);
        assert_eq!(
            coalesce(&[0..10, 10 + far..100 + far]),
            vec![0..10, 10 + far..100 + far]
        );
        assert_eq!(coalesce(&[0..100, 10..20]), vec![0..100], "contained");
        assert_eq!(coalesce(&[]), Vec::<Range<u64>>::new());
    }
}
