//! A memory of recently verified batches, so that the same signed batch arriving again is not
//! hashed up to its root and verified again.
//!
//! A join or a repair sends a peer's records in chunks of about 256 KiB, in key order, so one
//! original batch of a thousand writes usually arrives split over several chunks, each with the
//! batch's full leaf list. Without this memory each chunk pays the Merkle root over every leaf
//! and an ed25519 verification again; with it the later chunks pay a comparison of the leaf
//! lists, and their records share the first chunk's [`BatchAuth`] instead of holding a copy.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use rs2p_base::{Hash256, PeerId, Signature};

use crate::BatchAuth;

/// Batches verified recently, bounded by the total number of leaves they hold.
#[derive(Debug)]
pub struct VerifiedBatches {
    by_signature: HashMap<Signature, Arc<BatchAuth>>,
    /// Unsigned batches (a trusted network's), by owner and first leaf: their id is their Merkle
    /// root, which is what remembering them saves computing.
    unsigned: HashMap<(PeerId, Hash256), Arc<BatchAuth>>,
    order: VecDeque<Arc<BatchAuth>>,
    leaves: usize,
    max_leaves: usize,
}

impl Default for VerifiedBatches {
    /// Up to 2^18 leaves (8 MiB of leaf hashes, most of them shared with the store).
    fn default() -> Self {
        Self::new(1 << 18)
    }
}

impl VerifiedBatches {
    /// An empty memory that forgets the oldest batches beyond `max_leaves` leaves in all.
    pub fn new(max_leaves: usize) -> Self {
        Self {
            by_signature: HashMap::new(),
            unsigned: HashMap::new(),
            order: VecDeque::new(),
            leaves: 0,
            max_leaves,
        }
    }

    /// The proof verified earlier for exactly this owner, signature and leaf list, if any.
    pub fn get(
        &self,
        owner: &PeerId,
        signature: &Signature,
        leaves: &[Hash256],
    ) -> Option<Arc<BatchAuth>> {
        self.by_signature
            .get(signature)
            .filter(|a| a.owner == *owner && a.leaves == leaves)
            .cloned()
    }

    /// The unsigned batch seen earlier with exactly this owner and leaf list, if any.
    pub fn get_unsigned(&self, owner: &PeerId, leaves: &[Hash256]) -> Option<Arc<BatchAuth>> {
        self.unsigned
            .get(&(*owner, *leaves.first()?))
            .filter(|a| a.leaves == leaves)
            .cloned()
    }

    /// Remembers a verified proof (or an unsigned batch's), forgetting the oldest ones over the
    /// bound.
    pub fn insert(&mut self, auth: Arc<BatchAuth>) {
        let Some(&first) = auth.leaves.first() else {
            return;
        };
        let known = if auth.is_signed() {
            self.by_signature.contains_key(&auth.signature)
        } else {
            self.unsigned.contains_key(&(auth.owner, first))
        };
        if auth.leaves.len() > self.max_leaves || known {
            return;
        }
        self.leaves += auth.leaves.len();
        self.order.push_back(auth.clone());
        if auth.is_signed() {
            self.by_signature.insert(auth.signature, auth);
        } else {
            self.unsigned.insert((auth.owner, first), auth);
        }
        while self.leaves > self.max_leaves {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            self.leaves -= old.leaves.len();
            if old.is_signed() {
                self.by_signature.remove(&old.signature);
            } else {
                self.unsigned.remove(&(old.owner, old.leaves[0]));
            }
        }
    }

    /// How many batches it remembers.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether it remembers none.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(sig: u8, n: usize) -> Arc<BatchAuth> {
        Arc::new(BatchAuth {
            owner: PeerId::from_slice(&[1; 32]).expect("32 bytes"),
            signature: [sig; 64],
            leaves: vec![[sig; 32]; n],
        })
    }

    #[test]
    fn matches_only_the_same_owner_signature_and_leaves() {
        let mut v = VerifiedBatches::new(100);
        let a = auth(1, 3);
        v.insert(a.clone());
        assert!(v.get(&a.owner, &a.signature, &a.leaves).is_some());
        assert!(v.get(&a.owner, &a.signature, &a.leaves[..2]).is_none());
        let mut other_leaves = a.leaves.clone();
        other_leaves[2][0] ^= 1;
        assert!(v.get(&a.owner, &a.signature, &other_leaves).is_none());
        let stranger = PeerId::from_slice(&[2; 32]).expect("32 bytes");
        assert!(v.get(&stranger, &a.signature, &a.leaves).is_none());
        assert!(v.get(&a.owner, &[9; 64], &a.leaves).is_none());
    }

    #[test]
    fn forgets_the_oldest_beyond_the_bound() {
        let mut v = VerifiedBatches::new(10);
        for sig in 0..5 {
            v.insert(auth(sig, 4));
        }
        assert_eq!(v.len(), 2);
        let newest = auth(4, 4);
        assert!(v
            .get(&newest.owner, &newest.signature, &newest.leaves)
            .is_some());
        let oldest = auth(0, 4);
        assert!(v
            .get(&oldest.owner, &oldest.signature, &oldest.leaves)
            .is_none());
        // A batch larger than the whole bound is never kept.
        v.insert(auth(7, 11));
        assert_eq!(v.len(), 2);
    }
}
