//! Checking a blob against its content id piece by piece, as it streams.
//!
//! A content id is the BLAKE3 hash of the bytes, and BLAKE3 is a Merkle
//! tree: every aligned run of 64 KiB (a *group*, 64 of BLAKE3's 1 KiB
//! chunks) is a subtree whose chaining value its parents combine into the
//! root. A holder sends the groups' chaining values first (32 bytes per
//! 64 KiB); the fetcher checks that they combine into the content id it
//! asked for, then checks each group as it arrives against its own value.
//! A peer that sends one wrong byte is caught at the group that holds it,
//! and a transfer can resume at any group from any other holder.
//!
//! The chaining values and the tree's shape are BLAKE3's own
//! (`blake3::hazmat`): nothing here is a second hash of the content.

use std::ops::Range;

use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, left_subtree_len, merge_subtrees_non_root, merge_subtrees_root,
};

use crate::ContentId;

/// Bytes in one group: a power of two, so every group starts a subtree.
pub const GROUP_BYTES: usize = 64 << 10;

/// Groups in a blob of `len` bytes (an empty blob is one empty group).
pub fn groups(len: u64) -> u64 {
    len.div_ceil(GROUP_BYTES as u64).max(1)
}

/// The byte range of group `index` in a blob of `len` bytes.
pub fn group_range(len: u64, index: u64) -> Range<u64> {
    let start = index.saturating_mul(GROUP_BYTES as u64).min(len);
    let end = start.saturating_add(GROUP_BYTES as u64).min(len);
    start..end
}

/// The chaining value of each group of `bytes`: what a holder sends before
/// the bytes. Empty for a blob of one group, which is checked by its id.
pub fn leaves(bytes: &[u8]) -> Vec<ChainingValue> {
    if bytes.len() <= GROUP_BYTES {
        return Vec::new();
    }
    bytes
        .chunks(GROUP_BYTES)
        .enumerate()
        .map(|(index, group)| group_value(index as u64, group))
        .collect()
}

fn group_value(index: u64, group: &[u8]) -> ChainingValue {
    blake3::Hasher::new()
        .set_input_offset(index * GROUP_BYTES as u64)
        .update(group)
        .finalize_non_root()
}

/// The root the groups' values combine into, for a blob of `len` bytes
/// (more than one group), following BLAKE3's left-heavy tree.
fn root(leaves: &[ChainingValue], len: u64) -> ContentId {
    fn node(leaves: &[ChainingValue], len: u64) -> ChainingValue {
        if leaves.len() == 1 {
            return leaves[0];
        }
        let (left, right, left_len) = split(leaves, len);
        merge_subtrees_non_root(
            &node(left, left_len),
            &node(right, len - left_len),
            Mode::Hash,
        )
    }
    fn split(leaves: &[ChainingValue], len: u64) -> (&[ChainingValue], &[ChainingValue], u64) {
        // Past one group, the left subtree is a power of two of at least
        // one group, so the split falls between groups.
        let left_len = left_subtree_len(len);
        let left_groups = (left_len / GROUP_BYTES as u64) as usize;
        (&leaves[..left_groups], &leaves[left_groups..], left_len)
    }
    let (left, right, left_len) = split(leaves, len);
    let hash = merge_subtrees_root(
        &node(left, left_len),
        &node(right, len - left_len),
        Mode::Hash,
    );
    ContentId::from_bytes(*hash.as_bytes())
}

/// Why a blob's tree or a group of it was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreeError {
    #[error("{found} group values for a blob of {len} bytes, which has {expected}")]
    WrongCount { len: u64, expected: u64, found: u64 },
    #[error("the group values do not combine into {0}")]
    NotTheId(ContentId),
    #[error("group {index} is {found} bytes; it has {expected}")]
    WrongLength {
        index: u64,
        expected: u64,
        found: u64,
    },
    #[error("group {index} (bytes {start}..{end}) is not part of {cid}")]
    Corrupt {
        cid: ContentId,
        index: u64,
        start: u64,
        end: u64,
    },
    #[error("no group {index}: the blob has {groups}")]
    NoSuchGroup { index: u64, groups: u64 },
}

/// A blob's tree, checked against its content id: checks its groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verifier {
    cid: ContentId,
    len: u64,
    leaves: Vec<ChainingValue>,
}

impl Verifier {
    /// Checks that `leaves` are the groups' values of a blob of `len` bytes
    /// whose id is `cid` (none for a blob of one group).
    pub fn new(cid: ContentId, len: u64, leaves: Vec<ChainingValue>) -> Result<Self, TreeError> {
        let expected = if len <= GROUP_BYTES as u64 {
            0
        } else {
            groups(len)
        };
        if leaves.len() as u64 != expected {
            return Err(TreeError::WrongCount {
                len,
                expected,
                found: leaves.len() as u64,
            });
        }
        if expected > 0 && root(&leaves, len) != cid {
            return Err(TreeError::NotTheId(cid));
        }
        Ok(Self { cid, len, leaves })
    }

    pub fn cid(&self) -> ContentId {
        self.cid
    }

    /// The blob's length.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn groups(&self) -> u64 {
        groups(self.len)
    }

    /// The groups' values (none for a blob of one group): what a holder
    /// sends before the bytes.
    pub fn leaves(&self) -> &[ChainingValue] {
        &self.leaves
    }

    /// Reads a blob from `reader` to its end, a group at a time, handing
    /// each group to `each` as it is hashed: the blob's tree, whose `cid`
    /// is its content id. Every byte is hashed once.
    pub fn read(
        mut reader: impl std::io::Read,
        mut each: impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> std::io::Result<Verifier> {
        let mut group = vec![0u8; GROUP_BYTES];
        let mut first: Option<Vec<u8>> = None;
        let mut leaves = Vec::new();
        let mut len = 0u64;
        loop {
            let mut filled = 0;
            while filled < GROUP_BYTES {
                match reader.read(&mut group[filled..]) {
                    Ok(0) => break,
                    Ok(read) => filled += read,
                    Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(error) => return Err(error),
                }
            }
            if filled == 0 && len > 0 {
                break;
            }
            let piece = &group[..filled];
            each(piece)?;
            if first.is_none() {
                first = Some(piece.to_vec());
            }
            // Only an empty blob has an empty group; it has no leaves.
            if !piece.is_empty() {
                leaves.push(group_value(leaves.len() as u64, piece));
            }
            len += filled as u64;
            if filled < GROUP_BYTES {
                break;
            }
        }
        if len <= GROUP_BYTES as u64 {
            let cid = ContentId::of(first.as_deref().unwrap_or_default());
            return Ok(Self {
                cid,
                len,
                leaves: Vec::new(),
            });
        }
        Ok(Self {
            cid: root(&leaves, len),
            len,
            leaves,
        })
    }

    /// Checks that `bytes` are group `index` of the blob.
    pub fn check(&self, index: u64, bytes: &[u8]) -> Result<(), TreeError> {
        if index >= self.groups() {
            return Err(TreeError::NoSuchGroup {
                index,
                groups: self.groups(),
            });
        }
        let range = group_range(self.len, index);
        let expected = range.end - range.start;
        if bytes.len() as u64 != expected {
            return Err(TreeError::WrongLength {
                index,
                expected,
                found: bytes.len() as u64,
            });
        }
        let right = match self.leaves.get(index as usize) {
            Some(value) => group_value(index, bytes) == *value,
            // One group: the group is the blob.
            None => ContentId::of(bytes) == self.cid,
        };
        if right {
            Ok(())
        } else {
            Err(TreeError::Corrupt {
                cid: self.cid,
                index,
                start: range.start,
                end: range.end,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn blob(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|index| (index as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn a_blob_read_a_group_at_a_time_has_the_tree_of_its_bytes() {
        let group = GROUP_BYTES;
        for len in [0, 1, group - 1, group, group + 1, 3 * group, 5 * group + 17] {
            let bytes = blob(len, 3);
            let mut seen = Vec::new();
            let read = Verifier::read(bytes.as_slice(), |piece| {
                seen.extend_from_slice(piece);
                Ok(())
            })
            .expect("reads");
            assert_eq!(seen, bytes, "every byte handed on once, in order");
            assert_eq!(read.cid(), ContentId::of(&bytes), "len {len}");
            assert_eq!(read.len(), len as u64);
            assert_eq!(read.leaves(), leaves(&bytes).as_slice(), "len {len}");
        }
    }

    #[test]
    fn every_boundary_length_combines_into_its_id() {
        let group = GROUP_BYTES;
        for len in [
            0,
            1,
            1024,
            group - 1,
            group,
            group + 1,
            2 * group,
            2 * group + 1,
            3 * group,
            4 * group - 1,
            4 * group + 1024,
            7 * group + 5,
            16 * group,
        ] {
            let bytes = blob(len, 7);
            let cid = ContentId::of(&bytes);
            let verifier = Verifier::new(cid, len as u64, leaves(&bytes)).expect("the right tree");
            for index in 0..verifier.groups() {
                let range = group_range(len as u64, index);
                verifier
                    .check(index, &bytes[range.start as usize..range.end as usize])
                    .expect("the right group");
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// One wrong byte anywhere fails exactly its group; a wrong group
        /// value never combines into the id; a wrong length or count is
        /// refused.
        #[test]
        fn a_wrong_byte_is_caught_at_its_group_and_nowhere_else(
            len in 0usize..(9 * GROUP_BYTES),
            at in any::<prop::sample::Index>(),
            flip in 1u8..=255,
            seed in any::<u8>(),
        ) {
            let bytes = blob(len, seed);
            let cid = ContentId::of(&bytes);
            let tree = leaves(&bytes);
            let verifier = Verifier::new(cid, len as u64, tree.clone()).expect("the right tree");
            if len > 0 {
                let mut bad = bytes.clone();
                let position = at.index(len);
                bad[position] ^= flip;
                let wrong = (position / GROUP_BYTES) as u64;
                for index in 0..verifier.groups() {
                    let range = group_range(len as u64, index);
                    let group = &bad[range.start as usize..range.end as usize];
                    let checked = verifier.check(index, group);
                    if index == wrong {
                        let is_corrupt = matches!(checked, Err(TreeError::Corrupt { .. }));
                        prop_assert!(is_corrupt, "{:?}", checked);
                    } else {
                        prop_assert!(checked.is_ok());
                    }
                }
                // The tree of other bytes is not this id's.
                if len > GROUP_BYTES {
                    prop_assert_eq!(
                        Verifier::new(cid, len as u64, leaves(&bad)).map(|_| ()),
                        Err(TreeError::NotTheId(cid))
                    );
                }
            }
            if !tree.is_empty() {
                let mut fewer = tree.clone();
                fewer.pop();
                let is_count = matches!(
                    Verifier::new(cid, len as u64, fewer),
                    Err(TreeError::WrongCount { .. })
                );
                prop_assert!(is_count);
                let last = verifier.groups() - 1;
                let range = group_range(len as u64, last);
                let short = &bytes[range.start as usize..range.end as usize - 1];
                let is_length = matches!(verifier.check(last, short), Err(TreeError::WrongLength { .. }));
                prop_assert!(is_length);
            }
        }
    }
}
