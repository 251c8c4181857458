//! The keys' tree hashes grouped by their place in the repair tree, to list the keys under one
//! leaf.
//!
//! Repair lists a leaf's keys; a write adds a key far more often. An ordered map of every hash
//! made each new key a walk down a tree of a million entries (a tenth of a node's time under a
//! sustained load, in the profile of the benchmark's scenario P4); here it is a push onto one of
//! [`GROUPS`] short vectors, chosen by the hash's top bits, and a leaf is listed by scanning its
//! group.

/// Hash prefix bits that choose a group.
const GROUP_BITS: u32 = 12;
/// Groups: one per node of the tree's level above the leaves.
pub const GROUPS: usize = 1 << GROUP_BITS;
/// Hash prefix bits that name a leaf (the tree's 16-ary levels, four of them).
const LEAF_BITS: u32 = 16;

/// A multiset of 64-bit hashes, listable by leaf. See the [module docs](self).
#[derive(Debug)]
pub struct HashIndex {
    groups: Vec<Vec<u64>>,
}

impl Default for HashIndex {
    fn default() -> Self {
        Self {
            groups: vec![Vec::new(); GROUPS],
        }
    }
}

fn group(hash: u64) -> usize {
    (hash >> (64 - GROUP_BITS)) as usize
}

impl HashIndex {
    /// Adds one occurrence of `hash`.
    pub fn insert(&mut self, hash: u64) {
        self.groups[group(hash)].push(hash);
    }

    /// Removes one occurrence of `hash`, if there is one.
    pub fn remove(&mut self, hash: u64) {
        let g = &mut self.groups[group(hash)];
        if let Some(i) = g.iter().position(|&h| h == hash) {
            g.swap_remove(i);
        }
    }

    /// The distinct hashes under `leaf` (its top `LEAF_BITS` bits), in increasing order.
    pub fn leaf(&self, leaf: usize) -> Vec<u64> {
        let Some(g) = self.groups.get(leaf >> (LEAF_BITS - GROUP_BITS)) else {
            return Vec::new();
        };
        let mut out: Vec<u64> = g
            .iter()
            .copied()
            .filter(|&h| (h >> (64 - LEAF_BITS)) as usize == leaf)
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    proptest! {
        /// Listing a leaf gives exactly the distinct hashes of the multiset under it.
        #[test]
        fn lists_a_leaf_as_a_sorted_multiset_does(
            ops in prop::collection::vec((any::<bool>(), 0u64..64, 0u64..2, 0u64..3), 0..300),
        ) {
            // Few distinct hashes over few groups, and several leaves in a group, so inserts
            // repeat, removes hit, and a group holds other leaves' hashes.
            let hash = |i: u64, g: u64, l: u64| (g << 60) | (l << 48) | i;
            let mut index = HashIndex::default();
            let mut model: BTreeMap<u64, usize> = BTreeMap::new();
            for (add, i, g, l) in ops {
                let h = hash(i, g, l);
                if add {
                    index.insert(h);
                    *model.entry(h).or_default() += 1;
                } else {
                    index.remove(h);
                    if let Some(n) = model.get_mut(&h) {
                        *n -= 1;
                        if *n == 0 {
                            model.remove(&h);
                        }
                    }
                }
            }
            for (g, l) in (0..2u64).flat_map(|g| (0..4u64).map(move |l| (g, l))) {
                let l = ((g << 12) | l) as usize;
                let want: Vec<u64> = model
                    .keys()
                    .copied()
                    .filter(|h| (h >> 48) as usize == l)
                    .collect();
                prop_assert_eq!(index.leaf(l), want);
            }
            prop_assert!(index.leaf(usize::MAX).is_empty());
        }
    }
}
