//! The hash tree over a batch's records, so one signature covers many records.

use rs2p_base::{hash256, Hash256};

/// The leaf hash of one encoded record.
pub fn leaf(record: &[u8]) -> Hash256 {
    hash256("rs2p/v1/sync-leaf", &[record])
}

/// The root over `leaves`: pairs hashed level by level, an odd last node moving up unchanged.
/// The root of no leaves is all zeros (a batch always has at least one).
pub fn root(leaves: &[Hash256]) -> Hash256 {
    if leaves.is_empty() {
        return [0; 32];
    }
    let mut level: Vec<Hash256> = leaves.to_vec();
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|pair| match pair {
                [l, r] => hash256("rs2p/v1/sync-node", &[l, r]),
                [one] => *one,
                _ => unreachable!("chunks(2) yields one or two"),
            })
            .collect();
    }
    level[0]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
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
