//! The records a chord node holds: its own keys and its replicas of its predecessors' keys,
//! ordered by ring position so that arcs are ranges.

use std::collections::{BTreeMap, HashSet};
use std::ops::Bound;

use bytes::Bytes;
use rs2p_record::{resolve, Stored};

use crate::ring::{key_pos, Pos};

/// The newest record of each key held here (a tombstone for a deleted key).
#[derive(Debug, Default)]
pub struct Store {
    records: BTreeMap<(Pos, Bytes), Stored>,
    live: usize,
    /// Keys changed since the last [`Store::take_dirty`], when changes are tracked.
    dirty: Option<HashSet<Bytes>>,
}

/// What [`Store::apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The record is now the key's newest.
    New,
    /// The same record was already here.
    Duplicate,
    /// A newer record of the key is here; its time (Unix ms).
    Older(u64),
}

impl Store {
    /// Keeps `s` if it is newer than what the key holds ([`resolve::supersedes`]).
    pub fn apply(&mut self, s: Stored) -> Applied {
        let k = (key_pos(s.key()), Bytes::copy_from_slice(s.key()));
        match self.records.get(&k) {
            Some(h) if h.leaf() == s.leaf() => Applied::Duplicate,
            Some(h) if !resolve::supersedes(h, &s) => Applied::Older(h.issued_at()),
            old => {
                let was_live = old.is_some_and(|h| !h.tombstone());
                match (was_live, s.tombstone()) {
                    (false, false) => self.live += 1,
                    (true, true) => self.live -= 1,
                    _ => {}
                }
                if let Some(d) = &mut self.dirty {
                    d.insert(k.1.clone());
                }
                self.records.insert(k, s);
                Applied::New
            }
        }
    }

    /// From now on, remember which keys change (for a data directory).
    pub fn track_changes(&mut self) {
        self.dirty.get_or_insert_with(HashSet::new);
    }

    /// The keys changed since the last call (empty unless changes are tracked).
    pub fn take_dirty(&mut self) -> Vec<Bytes> {
        self.dirty
            .as_mut()
            .map(|d| d.drain().collect())
            .unwrap_or_default()
    }

    /// The key's newest record here (possibly a tombstone).
    pub fn get(&self, key: &[u8]) -> Option<&Stored> {
        self.records
            .get(&(key_pos(key), Bytes::copy_from_slice(key)))
    }

    /// Records with a value (not tombstones) held here, whatever their arc.
    pub fn live_len(&self) -> usize {
        self.live
    }

    /// Every record held here (tombstones included).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The records whose key lies in the arc `(from, to]`, in ring order from `from`.
    pub fn arc(&self, from: Pos, to: Pos) -> impl Iterator<Item = (Pos, &Stored)> + '_ {
        // Taken on positions: every key at `from` is excluded, every key at `to` included.
        let start = from.checked_add(1);
        if from < to {
            self.positions(start, Some(to))
                .chain(self.positions(None, None))
        } else {
            // Wraps past zero (the whole ring when from == to).
            self.positions(start, None)
                .chain(self.positions(Some(0), Some(to)))
        }
    }

    /// Records with positions in `[lo, hi]` (`lo` None: empty; `hi` None: to the end).
    fn positions(
        &self,
        lo: Option<Pos>,
        hi: Option<Pos>,
    ) -> impl Iterator<Item = (Pos, &Stored)> + '_ {
        let range = lo.map(|lo| {
            let start = Bound::Included((lo, Bytes::new()));
            let end = match hi {
                Some(hi) => match hi.checked_add(1) {
                    Some(h) => Bound::Excluded((h, Bytes::new())),
                    None => Bound::Unbounded,
                },
                None => Bound::Unbounded,
            };
            self.records.range((start, end))
        });
        range.into_iter().flatten().map(|((p, _), s)| (*p, s))
    }

    /// The XOR of the record hashes of the arc `(from, to]`, and how many records it has.
    pub fn digest(&self, from: Pos, to: Pos) -> (u64, usize) {
        self.arc(from, to)
            .fold((0, 0), |(d, n), (_, s)| (d ^ s.short_hash(), n + 1))
    }

    /// Every record, in ring order.
    pub fn iter(&self) -> impl Iterator<Item = &Stored> + '_ {
        self.records.values()
    }

    /// Drops the records outside the arc `(from, to]` (this node is no longer a replica of
    /// them); returns how many.
    pub fn retain_arc(&mut self, from: Pos, to: Pos) -> usize {
        let before = self.records.len();
        let dirty = &mut self.dirty;
        self.records.retain(|(p, k), _| {
            let keep = crate::ring::in_arc(*p, from, to);
            if !keep {
                if let Some(d) = dirty.as_mut() {
                    d.insert(k.clone());
                }
            }
            keep
        });
        self.live = self.records.values().filter(|s| !s.tombstone()).count();
        before - self.records.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rs2p_base::Keypair;
    use rs2p_record::{seal, Record};

    fn stored(kp: &Keypair, key: &[u8], t: u64, tomb: bool) -> Stored {
        let r = Record {
            key: Bytes::copy_from_slice(key),
            value: if tomb {
                Bytes::new()
            } else {
                Bytes::from_static(b"v")
            },
            tombstone: tomb,
            owner: kp.peer_id(),
            issued_at: t,
            version: t << 10,
            lease_until: t,
        };
        seal(kp, &[0; 32], vec![r]).0.remove(0)
    }

    #[test]
    fn the_newest_write_wins_whatever_the_order() {
        let kp = Keypair::generate();
        let (a, b) = (stored(&kp, b"k", 10, false), stored(&kp, b"k", 20, true));
        let mut s1 = Store::default();
        assert_eq!(s1.apply(a.clone()), Applied::New);
        assert_eq!(s1.apply(b.clone()), Applied::New);
        let mut s2 = Store::default();
        assert_eq!(s2.apply(b.clone()), Applied::New);
        assert_eq!(s2.apply(a), Applied::Older(20));
        assert_eq!(s2.apply(b), Applied::Duplicate);
        assert_eq!(s1.live_len(), 0);
        assert_eq!(
            s1.get(b"k").map(|s| s.leaf()),
            s2.get(b"k").map(|s| s.leaf())
        );
    }

    proptest! {
        #[test]
        fn arcs_hold_exactly_their_keys(keys in proptest::collection::btree_set(any::<u16>(), 0..40), from in any::<u64>(), to in any::<u64>()) {
            let kp = Keypair::from_seed([3; 32]);
            let mut s = Store::default();
            for k in &keys {
                s.apply(stored(&kp, &k.to_le_bytes(), 1, false));
            }
            let got: Vec<Pos> = s.arc(from, to).map(|(p, _)| p).collect();
            let want = keys.iter().map(|k| key_pos(&k.to_le_bytes())).filter(|&p| crate::ring::in_arc(p, from, to)).count();
            prop_assert_eq!(got.len(), want);
            // In ring order starting after `from`.
            prop_assert!(got.windows(2).all(|w| crate::ring::dist(from, w[0]) <= crate::ring::dist(from, w[1])));
            let (_, n) = s.digest(from, to);
            prop_assert_eq!(n, want);
            let (_, all) = s.digest(from, from);
            prop_assert_eq!(all, keys.len());
        }
    }
}
