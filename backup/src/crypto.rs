//! Encryption of everything a backup stores, when `backup.encryption.key` is set.
//!
//! AES-256-GCM in the STREAM construction (aead's `StreamBE32`): the plaintext is
//! cut into 1 MiB segments, each sealed with its own nonce (a fresh random 7-byte
//! prefix per object, a 32-bit counter and a last-segment flag). So objects of any
//! size are decrypted and authenticated while they stream, and truncating,
//! reordering or altering segments is detected. Object layout:
//!
//! ```text
//! "STRATAE1" (8 bytes) | nonce prefix (7 bytes) | segment 0 | segment 1 | ... | last segment
//! segment = ciphertext of up to 1 MiB + 16-byte tag
//! ```
use std::ops::Range;

use aes_gcm::aead::stream::{DecryptorBE32, EncryptorBE32, NewStream, StreamBE32, StreamPrimitive};
use aes_gcm::aead::{KeyInit, OsRng, rand_core::RngCore};
use aes_gcm::{Aes256Gcm, Key};
use base64::Engine;

use crate::error::{BackupError, Result};

const MAGIC: &[u8; 8] = b"STRATAE1";
/// The error for a sealed object read without a key.
pub(crate) const NEEDS_KEY: &str =
    "is encrypted: set backup.encryption.key (or --key-file) to the key the backup was made with";
const NONCE_LEN: usize = 7;
const HEADER_LEN: usize = MAGIC.len() + NONCE_LEN;
const SEGMENT: usize = 1 << 20;
const TAG: usize = 16;

/// The backup encryption key. Its `Debug` never shows the key.
#[derive(Clone)]
pub struct Cipher {
    aead: Aes256Gcm,
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cipher(***)")
    }
}

fn bad_key(reason: &str) -> BackupError {
    BackupError::Config {
        key: "backup.encryption.key".into(),
        reason: reason.into(),
    }
}

/// True when `bytes` start like an object this module wrote.
pub(crate) fn is_encrypted(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

impl Cipher {
    /// A key given as base64 of 32 bytes (e.g. `openssl rand -base64 32`).
    pub fn from_base64(text: &str) -> Result<Self> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| bad_key("not valid base64 (make one with: openssl rand -base64 32)"))?;
        if raw.len() != 32 {
            return Err(bad_key("must be 32 bytes (256 bits) once base64-decoded"));
        }
        Ok(Self::from_raw(&raw))
    }

    /// A key of exactly 32 bytes.
    fn from_raw(raw: &[u8]) -> Self {
        Self {
            aead: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(raw)),
        }
    }

    /// A key kept in a file: base64 text (as `openssl rand -base64 32` prints) or 32 raw bytes.
    pub fn from_key_file(path: &std::path::Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| BackupError::Config {
            key: "backup.encryption.key.file".into(),
            reason: format!("cannot read {}: {e}", path.display()),
        })?;
        if bytes.len() == 32 && std::str::from_utf8(&bytes).is_err() {
            return Ok(Self::from_raw(&bytes));
        }
        Self::from_base64(&String::from_utf8_lossy(&bytes)).map_err(|_| BackupError::Config {
            key: "backup.encryption.key.file".into(),
            reason: format!(
                "{} must hold a base64 key of 32 bytes (openssl rand -base64 32) or 32 raw bytes",
                path.display()
            ),
        })
    }

    /// Seals `plain` as one object with a fresh nonce.
    pub fn encrypt(&self, plain: &[u8]) -> Result<Vec<u8>> {
        let mut e = self.encryptor();
        let mut out = e.push(plain)?;
        out.extend(e.finish()?);
        Ok(out)
    }

    /// An incremental encryptor for one object (a fresh nonce), for objects
    /// too large to hold whole.
    pub fn encryptor(&self) -> StreamEncryptor {
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let mut header = MAGIC.to_vec();
        header.extend_from_slice(&nonce);
        StreamEncryptor {
            state: EncryptorBE32::from_aead(self.aead.clone(), (&nonce).into()),
            header: Some(header),
            pending: Vec::with_capacity(SEGMENT),
        }
    }

    /// Opens a whole object; `what` names it in errors.
    pub fn decrypt(&self, data: &[u8], what: &str) -> Result<Vec<u8>> {
        let mut d = self.decryptor(what);
        let mut out = d.push(data)?;
        out.extend(d.finish()?);
        Ok(out)
    }

    /// An incremental decryptor for an object arriving in pieces.
    pub fn decryptor(&self, what: &str) -> StreamDecryptor {
        StreamDecryptor {
            aead: self.aead.clone(),
            what: what.to_string(),
            pending: Vec::new(),
            state: None,
        }
    }
}

/// The stored bytes holding plaintext `range` of a sealed object of
/// `plain_len` bytes: the whole segments that cover it. Segment `i` holds
/// plaintext `i * 1 MiB ..` and is stored at `HEADER + i * (1 MiB + tag)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SealedRange {
    /// The plaintext asked for (not empty).
    plain: Range<u64>,
    plain_len: u64,
    first_segment: u64,
    last_segment: u64,
}

impl SealedRange {
    /// `range` must be non-empty and lie within `plain_len`.
    pub(crate) fn new(plain: Range<u64>, plain_len: u64) -> Self {
        let segment = SEGMENT as u64;
        Self {
            first_segment: plain.start / segment,
            last_segment: (plain.end - 1) / segment,
            plain,
            plain_len,
        }
    }

    fn segment_len(&self, i: u64) -> u64 {
        (SEGMENT as u64).min(self.plain_len - i * SEGMENT as u64)
    }

    fn stored_start(i: u64) -> u64 {
        HEADER_LEN as u64 + i * (SEGMENT + TAG) as u64
    }

    /// The stored bytes to read.
    pub(crate) fn stored(&self) -> Range<u64> {
        let last = self.last_segment;
        Self::stored_start(self.first_segment)..Self::stored_start(last) + self.segment_len(last) + TAG as u64
    }

    /// The object's header (magic and nonce), read once per object.
    pub(crate) fn header() -> Range<u64> {
        0..HEADER_LEN as u64
    }

    fn is_final(&self, i: u64) -> bool {
        // An object has at least one segment, the last sealed as final.
        i == self.plain_len.saturating_sub(1) / SEGMENT as u64
    }
}

impl Cipher {
    /// The plaintext `range.plain` from `stored` (the bytes at
    /// [`SealedRange::stored`]) of the object whose first bytes are `header`;
    /// every segment is authenticated.
    pub(crate) fn open_range(&self, header: &[u8], range: &SealedRange, stored: &[u8], what: &str) -> Result<Vec<u8>> {
        let tampered = || tampered(what);
        if header.len() != HEADER_LEN || !is_encrypted(header) {
            return Err(not_sealed(what));
        }
        let nonce: [u8; NONCE_LEN] = header[MAGIC.len()..].try_into().map_err(|_| tampered())?;
        let stream = StreamBE32::from_aead(self.aead.clone(), (&nonce).into());
        let mut plain = Vec::with_capacity((range.plain.end - range.plain.start) as usize);
        let mut rest = stored;
        for i in range.first_segment..=range.last_segment {
            let len = (range.segment_len(i) as usize + TAG).min(rest.len());
            let (segment, after) = rest.split_at(len);
            let position = u32::try_from(i).map_err(|_| tampered())?;
            let opened = stream
                .decrypt(position, range.is_final(i), segment)
                .map_err(|_| tampered())?;
            plain.extend_from_slice(&opened);
            rest = after;
        }
        let skip = (range.plain.start - range.first_segment * SEGMENT as u64) as usize;
        let len = (range.plain.end - range.plain.start) as usize;
        plain.get(skip..skip + len).map(<[u8]>::to_vec).ok_or_else(tampered)
    }
}

/// Encrypts an object as it streams: [`push`](Self::push) pieces, then
/// [`finish`](Self::finish); the output pieces, joined, are the sealed object.
pub struct StreamEncryptor {
    state: EncryptorBE32<Aes256Gcm>,
    /// Magic and nonce, until the first output.
    header: Option<Vec<u8>>,
    /// Plaintext of the segment being filled (the last one is sealed by `finish`).
    pending: Vec<u8>,
}

fn encryption_failed<E>(_: E) -> BackupError {
    BackupError::Other("encryption failed".into())
}

impl StreamEncryptor {
    /// Adds plaintext; returns the sealed bytes of every segment now known not
    /// to be the last.
    pub fn push(&mut self, mut plain: &[u8]) -> Result<Vec<u8>> {
        let mut out = self.header.take().unwrap_or_default();
        out.reserve(plain.len() + (plain.len() / SEGMENT + 1) * TAG);
        while !plain.is_empty() {
            // A full segment followed by more bytes is not the last one.
            if self.pending.len() == SEGMENT {
                out.extend(
                    self.state
                        .encrypt_next(self.pending.as_slice())
                        .map_err(encryption_failed)?,
                );
                self.pending.clear();
            }
            if self.pending.is_empty() && plain.len() > SEGMENT {
                out.extend(self.state.encrypt_next(&plain[..SEGMENT]).map_err(encryption_failed)?);
                plain = &plain[SEGMENT..];
                continue;
            }
            let take = (SEGMENT - self.pending.len()).min(plain.len());
            self.pending.extend_from_slice(&plain[..take]);
            plain = &plain[take..];
        }
        Ok(out)
    }

    /// Seals the last segment.
    pub fn finish(mut self) -> Result<Vec<u8>> {
        let mut out = self.header.take().unwrap_or_default();
        out.extend(
            self.state
                .encrypt_last(self.pending.as_slice())
                .map_err(encryption_failed)?,
        );
        Ok(out)
    }
}

/// Decrypts an object as it streams: [`push`](Self::push) pieces, then [`finish`](Self::finish).
pub struct StreamDecryptor {
    aead: Aes256Gcm,
    what: String,
    pending: Vec<u8>,
    state: Option<DecryptorBE32<Aes256Gcm>>,
}

fn tampered(what: &str) -> BackupError {
    BackupError::BadObject {
        key: what.to_string(),
        reason: "cannot be decrypted: wrong backup.encryption.key, or the object was altered".into(),
    }
}

fn not_sealed(what: &str) -> BackupError {
    BackupError::BadObject {
        key: what.to_string(),
        reason: "is not encrypted although the manifest says it is".into(),
    }
}

impl StreamDecryptor {
    fn tampered(&self) -> BackupError {
        tampered(&self.what)
    }

    /// Adds bytes; returns the plaintext of every segment now known not to be the last.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<u8>> {
        self.pending.extend_from_slice(bytes);
        if self.state.is_none() {
            if self.pending.len() < HEADER_LEN {
                return Ok(Vec::new());
            }
            if !is_encrypted(&self.pending) {
                return Err(not_sealed(&self.what));
            }
            let nonce: [u8; NONCE_LEN] = self.pending[MAGIC.len()..HEADER_LEN]
                .try_into()
                .map_err(|_| self.tampered())?;
            self.state = Some(DecryptorBE32::from_aead(self.aead.clone(), (&nonce).into()));
            self.pending.drain(..HEADER_LEN);
        }
        let mut out = Vec::new();
        // A full segment followed by more bytes is not the last one.
        while self.pending.len() > SEGMENT + TAG {
            let segment: Vec<u8> = self.pending.drain(..SEGMENT + TAG).collect();
            let plain = self
                .state
                .as_mut()
                .and_then(|d| d.decrypt_next(segment.as_slice()).ok());
            out.extend(plain.ok_or_else(|| self.tampered())?);
        }
        Ok(out)
    }

    /// Decrypts the last segment; fails if the object was cut short.
    pub fn finish(mut self) -> Result<Vec<u8>> {
        let state = self.state.take().ok_or_else(|| self.tampered())?;
        let last = std::mem::take(&mut self.pending);
        state.decrypt_last(last.as_slice()).map_err(|_| self.tampered())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn key(byte: u8) -> Cipher {
        Cipher::from_base64(&base64::engine::general_purpose::STANDARD.encode([byte; 32])).unwrap()
    }

    #[test]
    fn round_trips_in_any_pieces_and_detects_tampering() {
        let k = key(7);
        for len in [0, 1, SEGMENT - 1, SEGMENT, SEGMENT + 1, 3 * SEGMENT + 5] {
            let plain: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let sealed = k.encrypt(&plain).unwrap();
            assert!(is_encrypted(&sealed));
            assert_eq!(k.decrypt(&sealed, "x").unwrap(), plain, "len {len}");
            let mut d = k.decryptor("x");
            let mut out = Vec::new();
            for piece in sealed.chunks(4099) {
                out.extend(d.push(piece).unwrap());
            }
            out.extend(d.finish().unwrap());
            assert_eq!(out, plain, "len {len} in pieces");
            if len > 0 {
                let mut bad = sealed.clone();
                let i = HEADER_LEN + len / 2;
                bad[i] ^= 1;
                assert!(k.decrypt(&bad, "x").is_err(), "flipped byte, len {len}");
                assert!(key(8).decrypt(&sealed, "x").is_err(), "wrong key, len {len}");
            }
            if len > SEGMENT {
                let cut = &sealed[..HEADER_LEN + SEGMENT + TAG];
                assert!(k.decrypt(cut, "x").is_err(), "truncated at a segment boundary");
            }
        }
        // Sealed in any pieces, it opens the same.
        for len in [0, 5, SEGMENT, 2 * SEGMENT + 7] {
            let plain: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
            for piece in [1000, SEGMENT, 3 * SEGMENT] {
                let mut e = k.encryptor();
                let mut sealed = Vec::new();
                for chunk in plain.chunks(piece) {
                    sealed.extend(e.push(chunk).unwrap());
                }
                sealed.extend(e.finish().unwrap());
                assert_eq!(
                    sealed.len(),
                    k.encrypt(&plain).unwrap().len(),
                    "len {len}, pieces {piece}"
                );
                assert_eq!(k.decrypt(&sealed, "x").unwrap(), plain, "len {len}, pieces {piece}");
            }
        }
        // Same plaintext, fresh nonce: different ciphertexts.
        assert_ne!(k.encrypt(b"abc").unwrap(), k.encrypt(b"abc").unwrap());
    }

    #[test]
    fn any_range_opens_from_its_segments_alone() {
        let k = key(9);
        for len in [
            1u64,
            100,
            SEGMENT as u64,
            SEGMENT as u64 + 1,
            3 * SEGMENT as u64 - 7,
            3 * SEGMENT as u64,
        ] {
            let plain: Vec<u8> = (0..len).map(|i| (i % 241) as u8).collect();
            let sealed = k.encrypt(&plain).unwrap();
            let header = &sealed[..HEADER_LEN];
            let s = SEGMENT as u64;
            let ranges = [
                0..1,
                0..len,
                len - 1..len,
                len / 2..len,
                s.min(len - 1)..len,
                len / 3..(len / 3 + s + 2).min(len),
            ];
            for r in ranges {
                let sealed_range = SealedRange::new(r.clone(), len);
                let stored = sealed_range.stored();
                assert!(stored.end <= sealed.len() as u64, "len {len}, range {r:?}: {stored:?}");
                let bytes = &sealed[stored.start as usize..stored.end as usize];
                let opened = k.open_range(header, &sealed_range, bytes, "x").unwrap();
                assert_eq!(
                    opened,
                    &plain[r.start as usize..r.end as usize],
                    "len {len}, range {r:?}"
                );
                let mut bad = bytes.to_vec();
                bad[0] ^= 1;
                assert!(k.open_range(header, &sealed_range, &bad, "x").is_err(), "altered");
                assert!(
                    key(3).open_range(header, &sealed_range, bytes, "x").is_err(),
                    "wrong key"
                );
            }
        }
        // The last segment is sealed as final: a copy of the object cut at a
        // segment boundary does not open as if it ended there.
        let plain = vec![7u8; 2 * SEGMENT];
        let sealed = k.encrypt(&plain).unwrap();
        let as_if_short = SealedRange::new(0..SEGMENT as u64, SEGMENT as u64);
        let stored = as_if_short.stored();
        let bytes = &sealed[stored.start as usize..stored.end as usize];
        assert!(k.open_range(&sealed[..HEADER_LEN], &as_if_short, bytes, "x").is_err());
    }

    #[test]
    fn bad_keys_are_refused_without_echoing_them() {
        for bad in ["not base64!!", "c2hvcnQ="] {
            let err = Cipher::from_base64(bad).unwrap_err().to_string();
            assert!(err.contains("backup.encryption.key") && !err.contains(bad), "{err}");
        }
        assert_eq!(format!("{:?}", key(1)), "Cipher(***)");
    }
}
