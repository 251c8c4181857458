//! The hash tree over a batch's records, so one signature covers many records.

use rs2p_base::{hash256, hash256_many, Hash256};

const LEAF: &str = "rs2p/v1/sync-leaf";
const NODE: &str = "rs2p/v1/sync-node";

/// The leaf hash of one encoded record.
pub fn leaf(record: &[u8]) -> Hash256 {
    hash256(LEAF, &[record])
}

/// The leaf hashes of many encoded records, computed several at a time: equal to [`leaf`] of
/// each.
pub fn leaves<R: AsRef<[u8]>>(records: &[R]) -> Vec<Hash256> {
    let items: Vec<[&[u8]; 1]> = records.iter().map(|r| [r.as_ref()]).collect();
    hash256_many(LEAF, &items)
}

/// The root over `leaves`: pairs hashed level by level, an odd last node moving up unchanged.
/// The root of no leaves is all zeros (a batch always has at least one).
pub fn root(leaves: &[Hash256]) -> Hash256 {
    if leaves.is_empty() {
        return [0; 32];
    }
    let mut level: Vec<Hash256> = leaves.to_vec();
    while level.len() > 1 {
        let pairs: Vec<[&[u8]; 2]> = level
            .chunks_exact(2)
            .map(|pair| [&pair[0][..], &pair[1][..]])
            .collect();
        let mut next = hash256_many(NODE, &pairs);
        if level.len() % 2 == 1 {
            next.push(level[level.len() - 1]);
        }
        level = next;
    }
    level[0]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The tree as first written, one hash at a time: the reference for [`root`].
    fn root_one_at_a_time(leaves: &[Hash256]) -> Hash256 {
        if leaves.is_empty() {
            return [0; 32];
        }
        let mut level: Vec<Hash256> = leaves.to_vec();
        while level.len() > 1 {
            level = level
                .chunks(2)
                .map(|pair| match pair {
                    [l, r] => hash256(NODE, &[l, r]),
                    [one] => *one,
                    _ => unreachable!("chunks(2) yields one or two"),
                })
                .collect();
        }
        level[0]
    }

    proptest! {
        /// Hashing many at once changes nothing on the wire: the same leaves, the same root.
        #[test]
        fn many_at_once_gives_the_same_leaves_and_root(records in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..250), 0..140)) {
            let one: Vec<Hash256> = records.iter().map(|r| leaf(r)).collect();
            prop_assert_eq!(&leaves(&records), &one);
            prop_assert_eq!(root(&one), root_one_at_a_time(&one));
        }

        #[test]
        fn changing_any_leaf_changes_the_root(n in 1usize..40, which in any::<prop::sample::Index>(), byte in 0usize..32) {
            let leaves: Vec<Hash256> = (0..n).map(|i| leaf(&i.to_le_bytes())).collect();
            let mut other = leaves.clone();
            other[which.index(n)][byte] ^= 1;
            prop_assert_ne!(root(&leaves), root(&other));
        }

        #[test]
        fn order_and_count_matter(n in 2usize..40) {
            let leaves: Vec<Hash256> = (0..n).map(|i| leaf(&i.to_le_bytes())).collect();
            let mut swapped = leaves.clone();
            swapped.swap(0, 1);
            prop_assert_ne!(root(&leaves), root(&swapped));
            prop_assert_ne!(root(&leaves), root(&leaves[..n - 1]));
        }
    }
}
