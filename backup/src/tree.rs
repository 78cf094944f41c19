//! Checking byte ranges of a file against its blake3 hash without reading the
//! whole file. blake3 is a Merkle tree; its chaining values at 64 KiB groups,
//! stored beside a raw object (`files/ab/<hash>.b3`, 32 bytes a group), are
//! checked once against the file's hash (the manifest's), and each group read
//! is then checked against its own value. A file of one group is checked
//! against its hash directly. This is what lets a query in place or an instant
//! restore read an unencrypted object by range and never use a wrong byte.
use std::ops::Range;

use blake3::hazmat::{ChainingValue, HasherExt, Mode, left_subtree_len, merge_subtrees_non_root, merge_subtrees_root};

/// Bytes of a group: a power of two of blake3 chunks (1 KiB).
pub(crate) const GROUP: u64 = 64 << 10;

const CV_LEN: usize = 32;

/// Whether a file of `len` bytes has a stored tree (one group is checked by its hash).
pub(crate) fn has_tree(len: u64) -> bool {
    len > GROUP
}

/// Bytes of the stored tree of a file of `len` bytes (more than one group).
pub(crate) fn tree_size(len: u64) -> u64 {
    len.div_ceil(GROUP) * CV_LEN as u64
}

/// The chaining value of the group starting at `offset`.
fn group_cv(offset: u64, bytes: &[u8]) -> ChainingValue {
    blake3::Hasher::new()
        .set_input_offset(offset)
        .update(bytes)
        .finalize_non_root()
}

/// Hashes a file in pieces of any size, giving its blake3 hash and, for a
/// file of more than one group, its stored tree: one pass for both.
#[derive(Default)]
pub(crate) struct TreeBuilder {
    cvs: Vec<ChainingValue>,
    len: u64,
    /// The group being filled; a full one is hashed once more bytes come
    /// (a file of exactly one group has no tree, and its hash is a root).
    pending: Vec<u8>,
}

impl TreeBuilder {
    pub(crate) fn update(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.pending.len() == GROUP as usize {
                self.flush();
            }
            let take = (GROUP as usize - self.pending.len()).min(bytes.len());
            self.pending.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
        }
    }

    fn flush(&mut self) {
        self.cvs.push(group_cv(self.len, &self.pending));
        self.len += self.pending.len() as u64;
        self.pending.clear();
    }

    /// The file's hash, and its stored tree when it has one ([`has_tree`]).
    pub(crate) fn finish(mut self) -> (blake3::Hash, Option<Vec<u8>>) {
        if self.cvs.is_empty() {
            return (blake3::hash(&self.pending), None);
        }
        self.flush();
        let tree = Tree {
            cvs: self.cvs,
            len: self.len,
        };
        (tree.root(), Some(tree.cvs.concat()))
    }
}

/// A file's group chaining values, checked against its hash.
#[derive(Debug, Clone)]
pub(crate) struct Tree {
    cvs: Vec<ChainingValue>,
    len: u64,
}

impl Tree {
    /// Parses `stored` for a file of `len` bytes (more than one group) and
    /// checks that it hashes to `hash` (hex).
    pub(crate) fn parse(stored: &[u8], len: u64, hash: &str) -> Result<Self, String> {
        if !has_tree(len) || stored.len() as u64 != tree_size(len) {
            return Err(format!(
                "holds {} bytes, a file of {len} bytes needs {}",
                stored.len(),
                tree_size(len)
            ));
        }
        let cvs: Vec<ChainingValue> = stored
            .chunks_exact(CV_LEN)
            .map(|c| c.try_into().unwrap_or([0; CV_LEN]))
            .collect();
        let tree = Self { cvs, len };
        let root = tree.root();
        if root.to_hex().as_str() != hash {
            return Err(format!(
                "does not hash to the file's {hash} (altered, or another file's)"
            ));
        }
        Ok(tree)
    }

    fn root(&self) -> blake3::Hash {
        let (left, right) = self.children(0, self.len);
        merge_subtrees_root(&left, &right, Mode::Hash)
    }

    /// The chaining values of the two children of the subtree of `len` bytes
    /// starting at group `first` (blake3's tree: the left child holds the
    /// largest power of two of chunks smaller than the whole).
    fn children(&self, first: usize, len: u64) -> (ChainingValue, ChainingValue) {
        let left = left_subtree_len(len);
        let left_groups = (left / GROUP) as usize;
        (self.subtree(first, left), self.subtree(first + left_groups, len - left))
    }

    fn subtree(&self, first: usize, len: u64) -> ChainingValue {
        if len <= GROUP {
            return self.cvs[first];
        }
        let (left, right) = self.children(first, len);
        merge_subtrees_non_root(&left, &right, Mode::Hash)
    }

    /// `range` widened to whole groups.
    pub(crate) fn widen(&self, range: &Range<u64>) -> Range<u64> {
        let start = range.start / GROUP * GROUP;
        let end = range.end.div_ceil(GROUP).saturating_mul(GROUP).min(self.len);
        start..end
    }

    /// Whether `bytes`, read at `widened` (whole groups), are the file's.
    pub(crate) fn holds(&self, widened: &Range<u64>, bytes: &[u8]) -> bool {
        if bytes.len() as u64 != widened.end - widened.start || !widened.start.is_multiple_of(GROUP) {
            return false;
        }
        bytes.chunks(GROUP as usize).enumerate().all(|(i, group)| {
            let offset = widened.start + i as u64 * GROUP;
            let index = (offset / GROUP) as usize;
            self.cvs.get(index) == Some(&group_cv(offset, group))
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn data(len: usize) -> Vec<u8> {
        let mut x = 0x1234_5678_9abc_def0_u64;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn the_tree_hashes_to_the_file_hash_and_catches_any_changed_group() {
        let g = GROUP as usize;
        for len in [
            g + 1,
            2 * g,
            2 * g + 1,
            3 * g,
            5 * g - 7,
            8 * g,
            8 * g + 1,
            13 * g + 100,
        ] {
            let file = data(len);
            let hash = blake3::hash(&file).to_hex().to_string();
            // Built in odd pieces, the same tree.
            let mut b = TreeBuilder::default();
            for piece in file.chunks(7_777) {
                b.update(piece);
            }
            let (built_hash, stored) = b.finish();
            assert_eq!(built_hash.to_hex().as_str(), hash, "len {len}: the builder's hash");
            let stored = stored.unwrap();
            let tree = Tree::parse(&stored, len as u64, &hash).unwrap_or_else(|e| panic!("len {len}: {e}"));
            for r in [0..1, 0..len as u64, len as u64 - 1..len as u64, GROUP - 1..GROUP + 1] {
                let w = tree.widen(&r);
                assert!(w.start <= r.start && w.end >= r.end, "{r:?} {w:?}");
                let bytes = &file[w.start as usize..w.end as usize];
                assert!(tree.holds(&w, bytes), "len {len} range {r:?}");
                let mut bad = bytes.to_vec();
                let i = bad.len() / 2;
                bad[i] ^= 1;
                assert!(!tree.holds(&w, &bad), "len {len} range {r:?}: a flipped byte");
            }
            // Bytes of another place of the file are not these.
            if len > 2 * g {
                let other = &file[g..2 * g];
                assert!(!tree.holds(&(0..GROUP), other));
            }
            // A changed tree, or one of another file, is refused.
            let mut altered = stored.clone();
            altered[3] ^= 1;
            assert!(Tree::parse(&altered, len as u64, &hash).is_err());
            assert!(Tree::parse(&stored, len as u64, &"0".repeat(64)).is_err());
            assert!(Tree::parse(&stored[..stored.len() - 32], len as u64, &hash).is_err());
        }
        assert!(!has_tree(GROUP));
        // A file of one group (or none) has no tree; its hash is still blake3's.
        for len in [0, 1, g] {
            let file = data(len);
            let mut b = TreeBuilder::default();
            b.update(&file);
            assert_eq!(b.finish(), (blake3::hash(&file), None), "len {len}");
        }
    }
}
