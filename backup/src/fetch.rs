//! Downloading a backed-up file: streamed from the store, decompressed, hashed
//! and counted on the way to disk, so memory stays bounded and a corrupt or
//! truncated object is caught before anything uses the file.
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::StreamExt;
use object_store::ObjectStoreExt;
use tokio::sync::mpsc;

use crate::crypto::StreamDecryptor;
use crate::error::{BackupError, Result, store_err};
use crate::layout::instance_dir;
use crate::manifest::{BackedUpFile, Codec};
use crate::retry::with_retry;
use crate::store::Store;

/// Files downloaded at once.
pub(crate) const FETCH_CONCURRENCY: usize = 4;
/// Chunks buffered between the network and the decompressing writer.
const CHUNKS_IN_FLIGHT: usize = 4;

/// Fetches one file into `dest`, checking its size and blake3 against the manifest;
/// transient store failures are retried. On any error `dest` is removed. Returns
/// the stored (compressed) bytes fetched.
pub(crate) async fn fetch_file(store: &Store, instance: &str, f: &BackedUpFile, dest: PathBuf) -> Result<u64> {
    with_retry(&format!("fetching {}", f.object), || {
        fetch_once(store, instance, f, dest.clone())
    })
    .await
}

async fn fetch_once(store: &Store, instance: &str, f: &BackedUpFile, dest: PathBuf) -> Result<u64> {
    let key = store.key(&format!("{}/{}", instance_dir(instance), f.object));
    let got = store.store.get(&key).await.map_err(|e| match e {
        object_store::Error::NotFound { .. } => BackupError::BadObject {
            key: key.to_string(),
            reason: "missing from the store".into(),
        },
        e => store_err(format!("reading {key}"))(e),
    })?;
    let mut stream = got.into_stream();
    let (tx, rx) = mpsc::channel::<Bytes>(CHUNKS_IN_FLIGHT);
    let decryptor = match (&store.cipher, f.encrypted) {
        (Some(c), true) => Some(c.decryptor(key.as_ref())),
        (None, true) => {
            return Err(BackupError::BadObject {
                key: key.to_string(),
                reason: crate::crypto::NEEDS_KEY.into(),
            });
        }
        (_, false) => None,
    };
    let (file, target, key_text) = (f.clone(), dest.clone(), key.to_string());
    let writer = tokio::task::spawn_blocking(move || write_verified(rx, decryptor, &file, &target, &key_text));
    let mut fetched = 0u64;
    let mut failure = None;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => {
                fetched += c.len() as u64;
                if tx.send(c).await.is_err() {
                    break; // the writer stopped: its error says why
                }
            }
            Err(e) => {
                failure = Some(store_err(format!("reading {key}"))(e));
                break;
            }
        }
    }
    drop(tx);
    let written = writer.await.map_err(|e| BackupError::Other(e.to_string()))?;
    let result = match (failure, written) {
        (Some(e), _) | (None, Err(e)) => Err(e),
        (None, Ok(())) => Ok(fetched),
    };
    if result.is_err() {
        let _ = std::fs::remove_file(&dest);
    }
    result
}

/// Counts and hashes what is written through it, refusing more than `limit` bytes.
struct Verifier<W> {
    out: W,
    hasher: blake3::Hasher,
    bytes: u64,
    limit: u64,
}

impl<W: Write> Write for Verifier<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes + buf.len() as u64 > self.limit {
            return Err(std::io::Error::other(
                "the object holds more data than the manifest records",
            ));
        }
        let n = self.out.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// The plaintext pieces of a stored object: decrypted when it is sealed.
struct Plain {
    rx: mpsc::Receiver<Bytes>,
    decryptor: Option<StreamDecryptor>,
}

impl Plain {
    /// The next piece of plaintext, `None` at the end (plain chunks pass through uncopied).
    fn next(&mut self) -> Result<Option<Bytes>> {
        match (self.rx.blocking_recv(), &mut self.decryptor) {
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
    rx: mpsc::Receiver<Bytes>,
    decryptor: Option<StreamDecryptor>,
    f: &BackedUpFile,
    dest: &Path,
    key: &str,
) -> Result<()> {
    let mut plain = Plain { rx, decryptor };
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
    };
    let decode_err = |e: std::io::Error| bad(format!("cannot be decoded: {e}"));
    match f.codec {
        Codec::Raw => {
            while let Some(piece) = plain.next()? {
                sink.write_all(&piece).map_err(decode_err)?;
            }
        }
        Codec::Zst => {
            let mut decoder = zstd::stream::write::Decoder::new(&mut sink).map_err(decode_err)?;
            while let Some(piece) = plain.next()? {
                decoder.write_all(&piece).map_err(decode_err)?;
            }
            decoder.flush().map_err(decode_err)?;
        }
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
    // Durable later: sealing the table syncs the whole file system once; the
    // writeback starts now, while the next files are fetched.
    let file = sink.out.into_inner().map_err(|e| io("writing", e.into_error()))?;
    storage::start_writeback(&file);
    Ok(())
}
