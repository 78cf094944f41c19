//! Downloading a backed-up file: streamed from the store, decompressed, hashed
//! and counted on the way to disk, so memory stays bounded and a corrupt or
//! truncated object is caught before anything uses the file.
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::crypto::StreamDecryptor;
use crate::error::{BackupError, Result};
use crate::layout::Codec;
use crate::manifest::BackedUpFile;
use crate::store::Store;
use crate::transfer::{Body, Fetched};

/// Chunks buffered between the network and the decompressing writer.
const CHUNKS_IN_FLIGHT: usize = 4;

/// Fetches one file into `dest`, checking its size and blake3 against the manifest;
/// transient store failures are retried. On any error `dest` is removed. Returns
/// the stored (compressed) bytes fetched.
pub(crate) async fn fetch_file(store: &Store, instance: &str, f: &BackedUpFile, dest: PathBuf) -> Result<u64> {
    store
        .read_file(
            instance,
            &f.object,
            f.encrypted,
            f.stored_bytes,
            |body, decryptor, key| fetch_into(body, decryptor, key, f, dest.clone()),
        )
        .await
}

async fn fetch_into(
    body: Body,
    decryptor: Option<StreamDecryptor>,
    key: String,
    f: &BackedUpFile,
    dest: PathBuf,
) -> Result<u64> {
    let (file, target, key_text) = (f.clone(), dest.clone(), key.clone());
    let write = move |chunks| write_verified(chunks, decryptor, &file, &target, &key_text);
    let result = match body {
        // A local store hands over the file: read it in large blocks on the writing
        // thread (its stream reads 8 KiB per blocking task).
        Body::File { mut file, start, len } => tokio::task::spawn_blocking(move || {
            file.seek(SeekFrom::Start(start))
                .map_err(|e| BackupError::Other(format!("reading {key}: {e}")))?;
            write(Chunks::File {
                object: file,
                left: len,
                key,
            })
        })
        .await
        .map_err(|e| BackupError::Other(e.to_string()))
        .and_then(|written| written.map(|()| len)),
        Body::Pieces(pieces) => pump(pieces, write).await,
    };
    if result.is_err() {
        let _ = std::fs::remove_file(&dest);
    }
    result
}

/// Feeds an object's pieces to `write` on a blocking thread; returns the bytes fetched.
async fn pump(
    mut pieces: futures::stream::BoxStream<'static, Result<Fetched>>,
    write: impl FnOnce(Chunks) -> Result<()> + Send + 'static,
) -> Result<u64> {
    let (tx, rx) = mpsc::channel::<Fetched>(CHUNKS_IN_FLIGHT);
    let writer = tokio::task::spawn_blocking(move || write(Chunks::Channel(rx)));
    let mut fetched = 0u64;
    let mut failure = None;
    while let Some(piece) = pieces.next().await {
        match piece {
            Ok(p) => {
                fetched += p.bytes.len() as u64;
                if tx.send(p).await.is_err() {
                    break; // the writer stopped: its error says why
                }
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    drop(tx);
    let written = writer.await.map_err(|e| BackupError::Other(e.to_string()))?;
    match (failure, written) {
        (Some(e), _) | (None, Err(e)) => Err(e),
        (None, Ok(())) => Ok(fetched),
    }
}

/// Where a stored object's bytes come from.
enum Chunks {
    /// Pieces from the network; each frees its download slot once taken.
    Channel(mpsc::Receiver<Fetched>),
    /// A local store's object file, `left` bytes still to read.
    File { object: File, left: u64, key: String },
}

/// Bytes read from a local object at a time.
const FILE_BLOCK: u64 = 1 << 20;

impl Chunks {
    fn next(&mut self) -> Result<Option<Bytes>> {
        match self {
            Chunks::Channel(rx) => Ok(rx.blocking_recv().map(|piece| piece.bytes)),
            Chunks::File { left: 0, .. } => Ok(None),
            Chunks::File { object, left, key } => {
                let mut block = Vec::with_capacity(FILE_BLOCK.min(*left) as usize);
                let bad = |reason: String| BackupError::BadObject {
                    key: key.clone(),
                    reason,
                };
                let read = object
                    .take(FILE_BLOCK.min(*left))
                    .read_to_end(&mut block)
                    .map_err(|e| bad(format!("cannot be read: {e}")))?;
                if read == 0 {
                    return Err(bad(format!("ended {left} bytes early")));
                }
                *left -= read as u64;
                Ok(Some(block.into()))
            }
        }
    }
}

/// Counts and hashes what is written through it, refusing more than `limit`
/// bytes, and remembers whether a write failed on the local disk (rather than
/// the object being bad).
struct Verifier<W> {
    out: W,
    hasher: blake3::Hasher,
    bytes: u64,
    limit: u64,
    local_failure: bool,
}

impl<W: Write> Write for Verifier<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes + buf.len() as u64 > self.limit {
            return Err(std::io::Error::other(
                "the object holds more data than the manifest records",
            ));
        }
        let n = self.out.write(buf).inspect_err(|_| self.local_failure = true)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush().inspect_err(|_| self.local_failure = true)
    }
}

/// Why feeding a stored object's plaintext into the file stopped.
enum FeedError {
    /// Reading or opening the object failed.
    Source(BackupError),
    /// Decoding or writing failed (which one: the sink's `local_failure`).
    Sink(std::io::Error),
}

/// Decodes (`codec`) every piece of `plain` into `sink`.
fn feed<W: Write>(plain: &mut Plain, sink: &mut Verifier<W>, codec: Codec) -> std::result::Result<(), FeedError> {
    match codec {
        Codec::Raw => {
            while let Some(piece) = plain.next().map_err(FeedError::Source)? {
                sink.write_all(&piece).map_err(FeedError::Sink)?;
            }
        }
        Codec::Zst => {
            let mut decoder = zstd::stream::write::Decoder::new(sink).map_err(FeedError::Sink)?;
            while let Some(piece) = plain.next().map_err(FeedError::Source)? {
                decoder.write_all(&piece).map_err(FeedError::Sink)?;
            }
            decoder.flush().map_err(FeedError::Sink)?;
        }
    }
    Ok(())
}

/// The plaintext pieces of a stored object: decrypted when it is sealed.
struct Plain {
    chunks: Chunks,
    decryptor: Option<StreamDecryptor>,
}

impl Plain {
    /// The next piece of plaintext, `None` at the end (plain chunks pass through uncopied).
    fn next(&mut self) -> Result<Option<Bytes>> {
        match (self.chunks.next()?, &mut self.decryptor) {
            (Some(chunk), None) => Ok(Some(chunk)),
            (Some(chunk), Some(d)) => d.push(&chunk).map(|p| Some(p.into())),
            (None, None) => Ok(None),
            (None, Some(_)) => match self.decryptor.take() {
                Some(d) => d.finish().map(|p| Some(p.into())),
                None => Ok(None),
            },
        }
    }
}

fn write_verified(
    chunks: Chunks,
    decryptor: Option<StreamDecryptor>,
    f: &BackedUpFile,
    dest: &Path,
    key: &str,
) -> Result<()> {
    let mut plain = Plain { chunks, decryptor };
    let bad = |reason: String| BackupError::BadObject {
        key: key.to_string(),
        reason,
    };
    let io = |what: &str, e: std::io::Error| BackupError::Other(format!("{what} {}: {e}", dest.display()));
    let file = std::fs::File::create(dest).map_err(|e| io("creating", e))?;
    let mut sink = Verifier {
        out: std::io::BufWriter::with_capacity(1 << 20, file),
        hasher: blake3::Hasher::new(),
        bytes: 0,
        limit: f.file.bytes,
        local_failure: false,
    };
    match feed(&mut plain, &mut sink, f.codec) {
        Ok(()) => {}
        Err(FeedError::Source(e)) => return Err(e),
        Err(FeedError::Sink(e)) if sink.local_failure => return Err(io("writing", e)),
        Err(FeedError::Sink(e)) => return Err(bad(format!("cannot be decoded: {e}"))),
    }
    if sink.bytes != f.file.bytes {
        return Err(bad(format!(
            "decodes to {} bytes, the manifest records {} (truncated object?)",
            sink.bytes, f.file.bytes
        )));
    }
    let hash = sink.hasher.finalize().to_hex().to_string();
    if hash != f.file.hash {
        return Err(bad(format!(
            "content hash {hash} differs from the manifest's {} (corrupt object)",
            f.file.hash
        )));
    }
    // Durable later, with one sync of the whole file system (in the background
    // for a whole-database restore); until then the page cache holds the file, so
    // the disk is left to the reads of the store and the first queries hit memory.
    sink.out.into_inner().map_err(|e| io("writing", e.into_error()))?;
    Ok(())
}
