//! The replicated dictionary: every valid record per key, the resolved view, and digests.
//!
//! # What is kept (the pruning guarantee)
//!
//! - **Without leasing**, the fold is last-writer-wins over a total order, a join-semilattice:
//!   a key keeps only its greatest record, and dropping the others can never change any
//!   replica's result for any arrival order (a late record either sorts after it and replaces
//!   it, or before it and is ignored).
//! - **With leasing**, the fold depends on the whole history: with leases of 3600, the set
//!   `{A@0, B@3000, C@6000, D@9000}` resolves to C, but without A@0 to D, so even a record an
//!   hour older than every other can decide the result. No record can be pruned without a
//!   finality horizon that every replica agrees on; until that horizon exists, a leased key keeps
//!   every record written to it (memory grows with writes, not only with keys). What is kept is
//!   exactly the set of valid records received, so replicas holding the same records agree.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use rs2p_base::hash256;
use rs2p_base::PeerId;

use super::record::{short, Record, Stored};
use super::resolve;

/// Levels of the repair hash tree (fanout 16): 16, 256, 4 096 and 65 536 nodes.
pub const LEVELS: u32 = 4;
/// Children per tree node.
pub const FANOUT: usize = 16;
/// Leaves of the tree.
pub const LEAVES: usize = 1 << (4 * LEVELS);

/// The records of one key and which of them is shown.
#[derive(Debug, Default)]
pub struct KeyState {
    /// Sorted by [`Record::sort_key`], no duplicates.
    records: Vec<Arc<Stored>>,
    holder: Option<usize>,
    /// XOR of the records' short hashes.
    digest: u64,
}

impl KeyState {
    /// The record shown, if the key has a value.
    pub fn visible(&self) -> Option<&Arc<Stored>> {
        self.holder.map(|i| &self.records[i])
    }

    /// Every record kept for the key.
    pub fn records(&self) -> &[Arc<Stored>] {
        &self.records
    }

    /// The XOR of the records' short hashes.
    pub fn digest(&self) -> u64 {
        self.digest
    }
}

/// What inserting a record changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Already known (or, without leasing, superseded): nothing changed.
    Known,
    /// Stored; the key shows the same as before.
    Stored,
    /// Stored; the key now shows another value.
    Updated {
        /// The record now shown.
        now: Record,
        /// The record shown before, if it was displaced by an earlier-sorted record that
        /// arrived late (a write that lost after a partition healed).
        lost: Option<Record>,
    },
    /// Stored; the key is now empty.
    Deleted {
        /// As for `Updated`.
        lost: Option<Record>,
    },
}

/// The key's hash for digests and repair messages.
pub fn key_hash(key: &[u8]) -> u64 {
    short(&hash256("rs2p/v1/sync-key", &[key]))
}

/// The index at `level` (1..=LEVELS) of the tree node covering `key_hash`.
pub fn node_of(key_hash: u64, level: u32) -> usize {
    (key_hash >> (64 - 4 * level)) as usize
}

/// The range of key hashes under leaf `leaf`.
fn leaf_range(leaf: usize) -> std::ops::RangeInclusive<u64> {
    let shift = 64 - 4 * LEVELS;
    let start = (leaf as u64) << shift;
    start..=(start | ((1u64 << shift) - 1))
}

/// The dictionary. See the [module docs](self).
#[derive(Debug)]
pub struct Store {
    leasing: bool,
    keys: HashMap<Bytes, KeyState>,
    /// `tree[l - 1][i]`: node `i` of level `l`.
    tree: Vec<Vec<u64>>,
    /// Every key by its hash (a 64-bit collision would hide one key from repair, at odds of
    /// about n² / 2⁶⁵).
    by_hash: BTreeMap<u64, Bytes>,
    live: usize,
    records: usize,
}

impl Store {
    /// An empty dictionary.
    pub fn new(leasing: bool) -> Self {
        Self {
            leasing,
            keys: HashMap::new(),
            tree: (1..=LEVELS).map(|l| vec![0; 1 << (4 * l)]).collect(),
            by_hash: BTreeMap::new(),
            live: 0,
            records: 0,
        }
    }

    /// The number of keys with a value.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether no key has a value.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// The number of records kept.
    pub fn record_count(&self) -> usize {
        self.records
    }

    /// The number of keys ever written (with a value or a tombstone).
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// The state of one key.
    pub fn key(&self, key: &[u8]) -> Option<&KeyState> {
        self.keys.get(key)
    }

    /// The record shown for `key`.
    pub fn get(&self, key: &[u8]) -> Option<&Record> {
        self.keys
            .get(key)
            .and_then(KeyState::visible)
            .map(|s| &s.record)
    }

    /// Every key with a value and its record, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&Bytes, &Record)> {
        self.keys
            .iter()
            .filter_map(|(k, s)| s.visible().map(|v| (k, &v.record)))
    }

    /// Every key state, in no particular order.
    pub fn states(&self) -> impl Iterator<Item = (&Bytes, &KeyState)> {
        self.keys.iter()
    }

    /// The 16 children (at `level`, 1..=LEVELS) of node `parent` of the level above.
    pub fn children(&self, level: u32, parent: usize) -> &[u64] {
        let start = parent * FANOUT;
        self.tree
            .get(level as usize - 1)
            .and_then(|l| l.get(start..start + FANOUT))
            .unwrap_or(&[])
    }

    /// The keys under leaf `leaf`, with their hashes.
    pub fn leaf_keys(&self, leaf: usize) -> impl Iterator<Item = (u64, &Bytes)> {
        self.by_hash.range(leaf_range(leaf)).map(|(h, k)| (*h, k))
    }

    /// The key with this hash, if any.
    pub fn key_by_hash(&self, hash: u64) -> Option<&Bytes> {
        self.by_hash.get(&hash)
    }

    fn toggle(&mut self, key_hash: u64, record_hash: u64) {
        for l in 1..=LEVELS {
            self.tree[l as usize - 1][node_of(key_hash, l)] ^= record_hash;
        }
    }

    /// Whether the holder of `key` (if any) leases it against `writer` at `now`: returns the
    /// holder and its lease end.
    pub fn lease_against(&self, key: &[u8], writer: PeerId, now: u64) -> Option<(PeerId, u64)> {
        if !self.leasing {
            return None;
        }
        let h = self.get(key)?;
        (h.owner != writer && h.lease_until > now).then_some((h.owner, h.lease_until))
    }

    /// Adds a verified record and says what changed.
    pub fn insert(&mut self, s: Arc<Stored>) -> Change {
        let key = s.record.key.clone();
        let h = s.short_hash();
        let kh = key_hash(&key);
        let leasing = self.leasing;
        let state = match self.keys.get_mut(&key) {
            Some(st) => st,
            None => {
                self.by_hash.insert(kh, key.clone());
                self.keys.entry(key.clone()).or_default()
            }
        };
        let before = state.visible().map(|v| v.record.clone());
        let sk = s.record.sort_key();
        // Ties in the sort key (only a lying owner makes them) are broken by the leaf hash, so
        // every replica orders the same set alike.
        let pos = match state
            .records
            .binary_search_by(|r| (r.record.sort_key(), r.leaf()).cmp(&(sk, s.leaf())))
        {
            Ok(_) => return Change::Known,
            Err(i) => i,
        };
        let mut toggles: Vec<u64> = Vec::new();
        if !leasing {
            // Keep only the greatest record.
            if let Some(max) = state.records.last() {
                if (max.record.sort_key(), max.leaf()) >= (sk, s.leaf()) {
                    return Change::Known;
                }
            }
            for old in state.records.drain(..) {
                state.digest ^= old.short_hash();
                toggles.push(old.short_hash());
                self.records -= 1;
            }
            state.holder = (!s.record.tombstone).then_some(0);
            state.records.push(s);
        } else if pos == state.records.len() {
            // The common case, a write later than all before it: apply it incrementally.
            let applies = resolve::applies(state.visible().map(|v| &v.record), &s.record, true);
            if applies {
                state.holder = (!s.record.tombstone).then_some(pos);
            }
            state.records.push(s);
        } else {
            state.records.insert(pos, s);
            state.holder = resolve::fold(state.records.iter().map(|r| &r.record), true);
        }
        state.digest ^= h;
        toggles.push(h);
        self.records += 1;
        let after = state.visible().map(|v| v.record.clone());
        let lost = match (&before, &after) {
            (Some(b), a)
                if pos < state.records.len() - 1
                    && a.as_ref().is_none_or(|a| a.owner != b.owner)
                    && sk < b.sort_key() =>
            {
                Some(b.clone())
            }
            _ => None,
        };
        for t in toggles {
            self.toggle(kh, t);
        }
        match (before, after) {
            (Some(b), None) => {
                self.live -= 1;
                let _ = b;
                Change::Deleted { lost }
            }
            (None, Some(a)) => {
                self.live += 1;
                Change::Updated { now: a, lost }
            }
            (Some(b), Some(a)) if b != a => Change::Updated { now: a, lost },
            _ => Change::Stored,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::record::seal;
    use proptest::prelude::*;
    use rs2p_base::Keypair;

    const LEASE: u64 = 3600;

    fn write(kp: &Keypair, key: &str, t: u64, v: u64, tomb: bool) -> Arc<Stored> {
        let r = Record {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: if tomb {
                Bytes::new()
            } else {
                Bytes::from(format!("{}@{t}", kp.peer_id().short()))
            },
            tombstone: tomb,
            owner: kp.peer_id(),
            issued_at: t,
            version: v,
            lease_until: t + LEASE,
        };
        seal(kp, &[0; 32], vec![r]).0.remove(0)
    }

    fn snapshot(s: &Store) -> Vec<(Bytes, Record)> {
        let mut v: Vec<(Bytes, Record)> = s.iter().map(|(k, r)| (k.clone(), r.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    fn arb_writes() -> impl Strategy<Value = Vec<(u8, u8, u64, bool)>> {
        proptest::collection::vec((0u8..3, 0u8..3, 0u64..3 * LEASE, any::<bool>()), 0..20)
    }

    fn records(writes: &[(u8, u8, u64, bool)]) -> Vec<Arc<Stored>> {
        let keys: Vec<Keypair> = (1..=3).map(|i| Keypair::from_seed([i; 32])).collect();
        let mut w = writes.to_vec();
        w.sort_by_key(|&(o, _, t, _)| (o, t));
        let mut versions = [0u64; 3];
        w.into_iter()
            .map(|(o, k, t, tomb)| {
                versions[o as usize] += 1;
                write(
                    &keys[o as usize],
                    &format!("k{k}"),
                    t,
                    versions[o as usize],
                    tomb && t % 2 == 0,
                )
            })
            .collect()
    }

    proptest! {
        #[test]
        fn arrival_order_and_duplicates_never_change_the_dictionary_or_its_digest(
            writes in arb_writes(), leasing in any::<bool>(), seed in any::<u64>()
        ) {
            use rand::{seq::SliceRandom, SeedableRng};
            let recs = records(&writes);
            let mut a = Store::new(leasing);
            for r in &recs { a.insert(r.clone()); }
            let mut shuffled: Vec<Arc<Stored>> = recs.iter().chain(recs.iter().take(3)).cloned().collect();
            shuffled.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
            let mut b = Store::new(leasing);
            let mut live_b = 0i64;
            for r in &shuffled {
                match b.insert(r.clone()) {
                    Change::Updated { .. } | Change::Deleted { .. } | Change::Stored | Change::Known => {}
                }
                live_b = b.len() as i64;
            }
            prop_assert_eq!(snapshot(&a), snapshot(&b));
            prop_assert_eq!(&a.tree, &b.tree);
            prop_assert_eq!(a.len() as i64, live_b);
            prop_assert_eq!(a.len(), snapshot(&a).len());
        }

        #[test]
        fn the_incremental_view_matches_a_full_fold(writes in arb_writes(), seed in any::<u64>()) {
            use rand::{seq::SliceRandom, SeedableRng};
            let mut recs = records(&writes);
            recs.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
            let mut s = Store::new(true);
            for r in &recs {
                s.insert(r.clone());
                for (_, st) in s.states() {
                    let full = resolve::fold(st.records().iter().map(|r| &r.record), true);
                    prop_assert_eq!(st.holder, full);
                }
            }
        }

        #[test]
        fn without_leasing_pruning_to_the_maximum_never_changes_the_result(writes in arb_writes(), seed in any::<u64>()) {
            use rand::{seq::SliceRandom, SeedableRng};
            let mut recs = records(&writes);
            recs.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
            let mut pruned = Store::new(false);
            for r in &recs { pruned.insert(r.clone()); }
            // Against the full fold of every record ever received, per key.
            let mut by_key: HashMap<Bytes, Vec<Record>> = HashMap::new();
            for r in &recs { by_key.entry(r.record.key.clone()).or_default().push(r.record.clone()); }
            for (k, mut rs) in by_key {
                rs.sort_by_key(Record::sort_key);
                rs.dedup();
                let full = resolve::fold(rs.iter(), false).map(|i| rs[i].clone());
                prop_assert_eq!(pruned.get(&k).cloned(), full);
                prop_assert!(pruned.key(&k).map_or(0, |s| s.records().len()) <= 1);
            }
        }
    }

    proptest! {
        /// One node's view against a plain map with the seeds' lease rules, for writes in time
        /// order as one node sees them (each checked against the local lease before it is made,
        /// as `SyncMachine::write` does).
        #[test]
        fn one_node_matches_a_plain_map_with_the_lease_rules(
            ops in proptest::collection::vec((0u8..3, 0u8..3, 1u64..2000, any::<bool>()), 1..40)
        ) {
            let keys: Vec<Keypair> = (1..=3).map(|i| Keypair::from_seed([i; 32])).collect();
            let mut store = Store::new(true);
            // key -> (owner, value, lease_until)
            let mut model: HashMap<String, (u8, String, u64)> = HashMap::new();
            let mut t = 0u64;
            let mut versions = [0u64; 3];
            for (o, k, dt, del) in ops {
                t += dt;
                let key = format!("k{k}");
                let owner = keys[o as usize].peer_id();
                let refused = store.lease_against(key.as_bytes(), owner, t).is_some();
                let model_refused = model.get(&key).is_some_and(|(mo, _, until)| *mo != o && *until > t);
                prop_assert_eq!(refused, model_refused, "lease check for {} by {} at {}", key, o, t);
                if refused {
                    continue;
                }
                if del && !model.contains_key(&key) {
                    continue; // del of a missing key is refused before any record is made
                }
                versions[o as usize] += 1;
                let rec = write(&keys[o as usize], &key, t, versions[o as usize], del);
                let value = String::from_utf8(rec.record.value.to_vec()).unwrap();
                store.insert(rec);
                if del {
                    model.remove(&key);
                } else {
                    model.insert(key.clone(), (o, value, t + LEASE));
                }
                for (mk, (mo, mv, _)) in &model {
                    let r = store.get(mk.as_bytes()).expect("the model's key is in the store");
                    prop_assert_eq!(r.owner, keys[*mo as usize].peer_id());
                    prop_assert_eq!(&r.value[..], mv.as_bytes());
                }
                prop_assert_eq!(store.len(), model.len());
            }
        }
    }

    #[test]
    fn a_late_earlier_lease_displaces_the_holder_and_names_the_lost_write() {
        let (a, b) = (Keypair::from_seed([1; 32]), Keypair::from_seed([2; 32]));
        let mut s = Store::new(true);
        let rb = write(&b, "k", 1000, 1, false);
        assert!(matches!(s.insert(rb), Change::Updated { lost: None, .. }));
        // A wrote at 500 on the other side of a partition: A's lease covers B's write.
        match s.insert(write(&a, "k", 500, 1, false)) {
            Change::Updated {
                now,
                lost: Some(lost),
            } => {
                assert_eq!(now.owner, a.peer_id());
                assert_eq!(lost.owner, b.peer_id());
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            s.lease_against(b"k", b.peer_id(), 2000),
            Some((a.peer_id(), 500 + LEASE))
        );
        assert_eq!(s.lease_against(b"k", a.peer_id(), 2000), None);
    }
}
