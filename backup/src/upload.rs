//! Uploading one data file: read it, check its recorded content hash, zstd it
//! (or keep it raw), seal it, store it. Small files go up whole in one PUT;
//! larger ones stream through in pieces into a multipart upload, so memory
//! stays bounded whatever the file size, and an upload whose file turns out not
//! to match its hash is aborted, never completed.
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::crypto::StreamEncryptor;
use crate::error::{BackupError, Result};
use crate::layout::{Codec, object_name, tree_name};
use crate::store::Store;
use crate::throttle::Limits;
use crate::transfer::Piece;
use crate::tree::TreeBuilder;

/// Files up to this size are read, compressed and stored whole.
pub(crate) const WHOLE_FILE_MAX: u64 = 8 << 20;
/// Bytes read from a streamed file at a time.
const READ_CHUNK: usize = 1 << 20;
/// Pieces waiting between the reading thread and the upload.
const PIECES_QUEUED: usize = 4;
/// Keep zstd output only when it saves at least this share. Parquet's pages
/// are compressed already, and an object compressed whole cannot be read by
/// range (a query in place, an instant restore): a few percent is not worth that.
const MIN_SAVING: f64 = 0.10;
/// Bytes of a file compressed on trial before compressing all of it.
const SAMPLE: usize = 256 << 10;

/// Reads, verifies, compresses and uploads one data file of `size` bytes;
/// returns (object, codec, stored bytes).
pub(crate) async fn upload_file(
    store: &Store,
    instance: &str,
    hash: &str,
    path: PathBuf,
    size: u64,
    level: i32,
    limits: &Limits,
) -> Result<(String, Codec, u64)> {
    if size <= WHOLE_FILE_MAX {
        let hash_owned = hash.to_string();
        let (codec, body, tree) = {
            // Held while compressing only: the upload waits on the network.
            let _slot = limits.compression_slot().await;
            blocking(move || whole_file(&path, &hash_owned, level)).await?
        };
        let object = object_name(hash, codec, store.encrypts());
        let stored = store.put_file(instance, &object, Bytes::from(body), limits).await?;
        put_tree(store, instance, hash, tree, limits).await?;
        return Ok((object, codec, stored));
    }
    // Held for the whole upload of a streamed file: it compresses as it goes.
    let _slot = limits.compression_slot().await;
    let sample_path = path.clone();
    let codec = blocking(move || {
        let file = std::fs::File::open(&sample_path).map_err(io_err(&sample_path, "opening"))?;
        let mut sample = vec![0u8; SAMPLE];
        file.read_exact_at(&mut sample, middle_sample_start(size))
            .map_err(io_err(&sample_path, "reading"))?;
        Ok(if saves_enough(&sample, level)? {
            Codec::Zst
        } else {
            Codec::Raw
        })
    })
    .await?;
    let object = object_name(hash, codec, store.encrypts());
    let tree = Arc::new(Mutex::new(None));
    let stored = store
        .put_file_streamed(instance, &object, size, limits, || {
            stream_file(
                path.clone(),
                hash.to_string(),
                codec,
                level,
                store.sealer(),
                tree.clone(),
            )
        })
        .await?;
    let tree = tree.lock().unwrap_or_else(|p| p.into_inner()).take();
    put_tree(store, instance, hash, tree, limits).await?;
    Ok((object, codec, stored))
}

/// Where a streamed file's tree is left once the whole file was read.
type TreeOut = Arc<Mutex<Option<Vec<u8>>>>;

/// Stores the tree of a raw file, after its object: an unencrypted object is
/// then read by range and checked (a sealed one is checked by its segments,
/// a compressed one is read whole).
async fn put_tree(store: &Store, instance: &str, hash: &str, tree: Option<Vec<u8>>, limits: &Limits) -> Result<()> {
    match tree {
        Some(tree) if !store.encrypts() => {
            store
                .put_file(instance, &tree_name(hash), Bytes::from(tree), limits)
                .await?;
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Reads the file at `path` (which must hash to `recorded`) for its tree, and
/// stores it: for a raw object stored before trees were, or whose tree a
/// crash left out.
pub(crate) async fn upload_tree(
    store: &Store,
    instance: &str,
    recorded: &str,
    path: PathBuf,
    limits: &Limits,
) -> Result<()> {
    let recorded_owned = recorded.to_string();
    let tree = blocking(move || {
        let mut file = std::fs::File::open(&path).map_err(io_err(&path, "opening"))?;
        let mut tree = TreeBuilder::default();
        let mut chunk = vec![0u8; READ_CHUNK];
        loop {
            let n = read_up_to(&mut file, &mut chunk).map_err(io_err(&path, "reading"))?;
            if n == 0 {
                break;
            }
            tree.update(&chunk[..n]);
        }
        checked(&path, tree, &recorded_owned)
    })
    .await?;
    put_tree(store, instance, recorded, tree, limits).await
}

async fn blocking<T: Send + 'static>(work: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| BackupError::Other(e.to_string()))?
}

fn io_err<'a>(path: &'a Path, doing: &'static str) -> impl FnOnce(std::io::Error) -> BackupError + 'a {
    move |source| {
        storage::StorageError::Io {
            context: format!("{doing} {}", path.display()),
            source,
        }
        .into()
    }
}

fn zstd_err(e: std::io::Error) -> BackupError {
    BackupError::Other(format!("zstd: {e}"))
}

/// The tree of the file at `path` once `built` (over all its bytes) shows it
/// still hashes to `recorded`.
fn checked(path: &Path, built: TreeBuilder, recorded: &str) -> Result<Option<Vec<u8>>> {
    let (actual, tree) = built.finish();
    let actual = actual.to_hex();
    if actual.as_str() != recorded {
        return Err(storage::StorageError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("its content hash {actual} differs from the recorded {recorded} (on-disk corruption?)"),
        }
        .into());
    }
    Ok(tree)
}

/// A small file, whole: checked, and compressed when that saves enough;
/// with its tree when it stays raw.
fn whole_file(path: &Path, recorded: &str, level: i32) -> Result<(Codec, Vec<u8>, Option<Vec<u8>>)> {
    let raw = std::fs::read(path).map_err(io_err(path, "reading"))?;
    let mut built = TreeBuilder::default();
    built.update(&raw);
    let tree = checked(path, built, recorded)?;
    if raw.len() > 2 * SAMPLE {
        let start = middle_sample_start(raw.len() as u64) as usize;
        if !saves_enough(&raw[start..start + SAMPLE], level)? {
            return Ok((Codec::Raw, raw, tree));
        }
    }
    let compressed = zstd::bulk::compress(&raw, level).map_err(zstd_err)?;
    if saved_enough(raw.len(), compressed.len()) {
        Ok((Codec::Zst, compressed, None))
    } else {
        Ok((Codec::Raw, raw, tree))
    }
}

/// Where the [`SAMPLE`] bytes from the middle of a file of `size` (at least
/// `SAMPLE`) bytes start.
fn middle_sample_start(size: u64) -> u64 {
    (size - SAMPLE as u64) / 2
}

/// Whether zstd saves `MIN_SAVING` on `sample` (a piece from the middle of a
/// large file): compressing a large file only to throw the result away would
/// cost more CPU than the whole upload.
fn saves_enough(sample: &[u8], level: i32) -> Result<bool> {
    let compressed = zstd::bulk::compress(sample, level).map_err(zstd_err)?;
    Ok(saved_enough(sample.len(), compressed.len()))
}

fn saved_enough(original: usize, compressed: usize) -> bool {
    compressed as f64 <= original as f64 * (1.0 - MIN_SAVING)
}

/// Starts a thread that reads the file at `path` in pieces, compresses
/// (`codec`) and seals them, and sends them; the last message is
/// [`Piece::End`] only if the file matched its recorded hash `recorded`.
fn stream_file(
    path: PathBuf,
    recorded: String,
    codec: Codec,
    level: i32,
    sealer: Option<StreamEncryptor>,
    tree: TreeOut,
) -> mpsc::Receiver<Result<Piece>> {
    let (tx, rx) = mpsc::channel(PIECES_QUEUED);
    tokio::task::spawn_blocking(move || {
        if let Err(e) = read_pieces(&path, &recorded, codec, level, sealer, tree, &tx) {
            let _ = tx.blocking_send(Err(e));
        }
    });
    rx
}

fn read_pieces(
    path: &Path,
    recorded: &str,
    codec: Codec,
    level: i32,
    mut sealer: Option<StreamEncryptor>,
    tree_out: TreeOut,
    tx: &mpsc::Sender<Result<Piece>>,
) -> Result<()> {
    let mut file = std::fs::File::open(path).map_err(io_err(path, "opening"))?;
    let mut built = TreeBuilder::default();
    let mut zstd = match codec {
        Codec::Zst => Some(zstd::stream::write::Encoder::new(Vec::new(), level).map_err(zstd_err)?),
        Codec::Raw => None,
    };
    let mut chunk = vec![0u8; READ_CHUNK];
    // Seals `out` and sends it; false when the upload has stopped listening.
    let send = |out: Vec<u8>, sealer: &mut Option<StreamEncryptor>| -> Result<bool> {
        let sealed = match sealer {
            Some(s) => s.push(&out)?,
            None => out,
        };
        Ok(sealed.is_empty() || tx.blocking_send(Ok(Piece::Data(sealed.into()))).is_ok())
    };
    loop {
        let n = read_up_to(&mut file, &mut chunk).map_err(io_err(path, "reading"))?;
        if n == 0 {
            break;
        }
        built.update(&chunk[..n]);
        let out = match &mut zstd {
            Some(z) => {
                z.write_all(&chunk[..n]).map_err(zstd_err)?;
                std::mem::take(z.get_mut())
            }
            None => chunk[..n].to_vec(),
        };
        if !send(out, &mut sealer)? {
            return Ok(());
        }
    }
    let tree = checked(path, built, recorded)?;
    if codec == Codec::Raw {
        *tree_out.lock().unwrap_or_else(|p| p.into_inner()) = tree;
    }
    let tail = match zstd {
        Some(z) => z.finish().map_err(zstd_err)?,
        None => Vec::new(),
    };
    if !send(tail, &mut sealer)? {
        return Ok(());
    }
    if let Some(s) = sealer {
        let last = s.finish()?;
        if tx.blocking_send(Ok(Piece::Data(last.into()))).is_err() {
            return Ok(());
        }
    }
    let _ = tx.blocking_send(Ok(Piece::End));
    Ok(())
}

/// Fills `buf` as far as the file goes; returns the bytes read (0 at the end).
fn read_up_to(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every piece `stream_file` sends, joined; `Err` if it ended in an error
    /// or without `End`.
    async fn streamed(path: &Path, recorded: &str, codec: Codec, sealer: Option<StreamEncryptor>) -> Result<Vec<u8>> {
        let mut rx = stream_file(
            path.to_path_buf(),
            recorded.to_string(),
            codec,
            3,
            sealer,
            Arc::default(),
        );
        let mut out = Vec::new();
        while let Some(piece) = rx.recv().await {
            match piece? {
                Piece::Data(b) => out.extend_from_slice(&b),
                Piece::End => return Ok(out),
            }
        }
        Err(BackupError::Other("no End".into()))
    }

    #[tokio::test]
    async fn a_streamed_file_compresses_and_seals_in_pieces_and_a_changed_one_ends_in_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        let plain: Vec<u8> = (0..3 * READ_CHUNK + 123).map(|i| (i / 1000 % 256) as u8).collect();
        std::fs::write(&path, &plain).unwrap();
        let hash = blake3::hash(&plain).to_hex().to_string();

        let raw = streamed(&path, &hash, Codec::Raw, None).await.unwrap();
        assert_eq!(raw, plain);
        let zst = streamed(&path, &hash, Codec::Zst, None).await.unwrap();
        assert!(zst.len() < plain.len() / 10, "{} bytes", zst.len());
        assert_eq!(zstd::stream::decode_all(zst.as_slice()).unwrap(), plain);
        let cipher = crate::crypto::Cipher::from_base64(&base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            [9u8; 32],
        ))
        .unwrap();
        let sealed = streamed(&path, &hash, Codec::Zst, Some(cipher.encryptor()))
            .await
            .unwrap();
        let opened = cipher.decrypt(&sealed, "x").unwrap();
        assert_eq!(zstd::stream::decode_all(opened.as_slice()).unwrap(), plain);

        let err = streamed(&path, &"0".repeat(64), Codec::Raw, None).await.unwrap_err();
        assert!(err.to_string().contains("content hash"), "{err}");
    }

    #[test]
    fn compression_is_tried_on_a_sample_first() {
        let text: Vec<u8> = b"2024-01-15,BTC-USD,42000.5\n".repeat(10_000);
        assert!(saves_enough(&text, 3).unwrap());
        // Already-compressed bytes (random-ish data) do not shrink.
        let mut x = 1u64;
        let noise: Vec<u8> = (0..SAMPLE)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert!(!saves_enough(&noise, 3).unwrap());
    }
}
