//! The replicated dictionary: the valid records per key, the resolved view, and the repair tree.
//!
//! # What is kept (the pruning guarantee)
//!
//! - **Without leasing**, the fold is last-writer-wins over a total order, a join-semilattice:
//!   a key keeps only its greatest record, and dropping the others can never change any
//!   replica's result for any arrival order.
//! - **With leasing**, the fold depends on the whole history (with leases of 3600, the set
//!   `{A@0, B@3000, C@6000, D@9000}` resolves to C, but without A@0 to D), so records can only be
//!   dropped once no earlier record can still arrive. The store therefore works with a **finality
//!   horizon** `H = lease + 2·max_skew + grace`:
//!
//!   > **Guarantee.** If every valid record reaches every replica before it is `H` old (by the
//!   > receiver's clock), pruning never changes any replica's dictionary, whatever the order in
//!   > which records arrived and whenever each replica pruned.
//!
//!   [`Store::prune`] folds every record issued before a cutoff (on a 60-second grid, so replicas
//!   choose the same cutoffs) into a per-key **checkpoint**: the record that holds the key at the
//!   cutoff (kept, with its signature) or nothing. This is exact because the fold of a set is the
//!   fold of its later records on top of the fold of its earlier ones. A record issued before a
//!   key's cutoff (or before the store's latest cutoff, for keys it forgot) can only arrive in
//!   breach of the guarantee; it is refused as [`Change::Stale`] and counted. Join and repair send
//!   a key's checkpoint with its records; checkpoints merge by taking the later cutoff, and at
//!   equal cutoffs the greater holder in sort order (under the guarantee the two are equal; after
//!   a breach, such as a partition longer than the grace, this picks one deterministically so
//!   replicas still converge). A key whose checkpoint is empty and has no later records is
//!   forgotten entirely.
//!
//!   A checkpoint's holder is a signed record, but the claim that it held the key at the cutoff
//!   is not: a peer that lies can choose, among real records issued before the cutoff, which one
//!   a node that lacks them adopts.

use std::collections::{BTreeMap, HashSet};

use bytes::Bytes;
use rs2p_base::hash256;
use rs2p_base::PeerId;
use smallvec::SmallVec;

use super::hash_index::HashIndex;
use super::key_map::{KeyMap, Keyed};
use super::record::{short, Stored};
use super::resolve::{self, Folded};

/// Levels of the repair hash tree (fanout 16): 16, 256, 4 096 and 65 536 nodes.
pub const LEVELS: u32 = 4;
/// Children per tree node.
pub const FANOUT: usize = 16;
/// Leaves of the tree.
pub const LEAVES: usize = 1 << (4 * LEVELS);
/// Prune cutoffs are multiples of this (ms), so replicas with close clocks pick the same ones.
pub const PRUNE_GRID: u64 = 60_000;

/// The cutoff a replica prunes to at `now` for a horizon `horizon` (ms).
pub fn cutoff_at(now: u64, horizon: u64) -> u64 {
    now.saturating_sub(horizon) / PRUNE_GRID * PRUNE_GRID
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Holder {
    #[default]
    Empty,
    Base,
    /// An index into the records (32 bits, so that a key's state takes 56 bytes, not 64).
    At(u32),
}

/// A key's records: almost always one (without leasing, always at most one), kept inline
/// instead of in an allocation of its own.
type Records = SmallVec<[Stored; 1]>;

/// The records of one key and which of them is shown.
#[derive(Debug, Default)]
pub struct KeyState {
    /// Records issued before this (ms) are folded into `base`.
    cutoff: u64,
    /// The checkpoint: the record holding the key at `cutoff`, if any.
    base: Option<Stored>,
    /// Records issued at or after `cutoff`, sorted by sort key then leaf hash, no duplicates.
    records: Records,
    holder: Holder,
}

// A million keys hold a million of these in the key map: keep it at 48 bytes.
const _: () = assert!(std::mem::size_of::<KeyState>() <= 48);

impl KeyState {
    /// The record shown, if the key has a value.
    pub fn visible(&self) -> Option<&Stored> {
        match self.holder {
            Holder::Empty => None,
            Holder::Base => self.base.as_ref(),
            Holder::At(i) => self.records.get(i as usize),
        }
    }

    /// The records kept after the checkpoint.
    pub fn records(&self) -> &[Stored] {
        &self.records
    }

    /// The checkpoint's record: the one that held the key at its cutoff, if any. The cutoff in
    /// force depends on the store's too: see [`Store::checkpoint`].
    pub fn base(&self) -> Option<&Stored> {
        self.base.as_ref()
    }

    /// The XOR of the kept records' short hashes.
    pub fn digest(&self) -> u64 {
        self.base
            .iter()
            .chain(&self.records)
            .fold(0, |d, r| d ^ r.short_hash())
    }

    /// The holder the fold of the checkpoint and the records gives.
    fn folded(&self, leasing: bool) -> Holder {
        match resolve::fold_from(self.base.as_ref(), self.records.iter(), leasing) {
            Folded::Empty => Holder::Empty,
            Folded::Initial => Holder::Base,
            Folded::At(i) => Holder::At(i as u32),
        }
    }

    /// In debug builds: the shown holder is the fold of the checkpoint and the records.
    fn check(&self, leasing: bool, what: &str) {
        if cfg!(debug_assertions) {
            assert_eq!(self.holder, self.folded(leasing), "after {what}: {self:?}");
        }
    }

    fn refold(&mut self, leasing: bool) {
        self.holder = self.folded(leasing);
    }
}

impl Keyed for KeyState {
    /// The key its records name (the key map keeps no copy). A state names none only between
    /// being made and getting its first record, or being emptied and removed.
    fn key(&self) -> Option<&[u8]> {
        self.records.first().or(self.base.as_ref()).map(Stored::key)
    }
}

/// What inserting a record changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Already known (or, without leasing, superseded): nothing changed.
    Known,
    /// Issued before the key's checkpoint (a breach of the finality guarantee): refused.
    Stale,
    /// Stored; the key shows the same as before.
    Stored,
    /// Stored; the key now shows another value.
    Updated {
        /// The record now shown.
        now: Stored,
        /// The record shown before, if it was displaced by an earlier-sorted record that
        /// arrived late (a write that lost after a partition healed).
        lost: Option<Stored>,
    },
    /// Stored; the key is now empty.
    Deleted {
        /// As for `Updated`.
        lost: Option<Stored>,
    },
}

const KEY_DOMAIN: &str = "rs2p/v1/sync-key";

/// The key's hash for the repair tree and messages.
pub fn key_hash(key: &[u8]) -> u64 {
    short(&hash256(KEY_DOMAIN, &[key]))
}

/// [`key_hash`] of each key, several at a time (about a third of the time per key, for a batch
/// of records or of writes).
pub fn key_hashes<'a>(keys: impl IntoIterator<Item = &'a [u8]>) -> Vec<u64> {
    let parts: Vec<[&[u8]; 1]> = keys.into_iter().map(|k| [k]).collect();
    rs2p_base::hash256_many(KEY_DOMAIN, &parts)
        .iter()
        .map(short)
        .collect()
}

/// The index at `level` (1..=LEVELS) of the tree node covering `key_hash`.
pub fn node_of(key_hash: u64, level: u32) -> usize {
    (key_hash >> (64 - 4 * level)) as usize
}

fn order(s: &Stored) -> ((u64, PeerId, u64), &[u8; 32]) {
    (s.sort_key(), s.leaf())
}

/// The dictionary. See the [module docs](self).
#[derive(Debug)]
pub struct Store {
    leasing: bool,
    keys: KeyMap<KeyState>,
    /// `tree[l - 1][i]`: node `i` of level `l`.
    tree: Vec<Vec<u64>>,
    /// Every key's hash, by place in the tree, for repair to list a leaf's keys (found then by
    /// hash in `keys`: a 64-bit collision would hide one key from repair, at odds of about
    /// n² / 2⁶⁵).
    index: HashIndex,
    live: usize,
    records: usize,
    /// The latest cutoff pruned to: records issued before it are refused for any key.
    cutoff: u64,
    /// Keys (by hash) that may hold records to fold, by the [`PRUNE_GRID`] slot of their oldest
    /// record when it was noted (leasing only). Pruning visits only the slots before its cutoff,
    /// not every key: at a million keys a full scan stalled the node for about a second.
    due: BTreeMap<u64, Vec<u64>>,
    /// Keys changed since the last [`Store::take_dirty`], when changes are tracked.
    dirty: Option<HashSet<Bytes>>,
    cutoff_dirty: bool,
}

impl Store {
    /// An empty dictionary.
    pub fn new(leasing: bool) -> Self {
        Self {
            leasing,
            keys: KeyMap::default(),
            tree: (1..=LEVELS).map(|l| vec![0; 1 << (4 * l)]).collect(),
            index: HashIndex::default(),
            live: 0,
            records: 0,
            cutoff: 0,
            due: BTreeMap::new(),
            dirty: None,
            cutoff_dirty: false,
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

    /// The number of records kept (checkpoints included).
    pub fn record_count(&self) -> usize {
        self.records
    }

    /// The number of keys known (with a value, or deleted but not yet forgotten).
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// The latest cutoff this store pruned to.
    pub fn cutoff(&self) -> u64 {
        self.cutoff
    }

    /// The checkpoint in force for a key's state: its cutoff (never earlier than the store's)
    /// and the record that held the key then.
    pub fn checkpoint<'a>(&self, st: &'a KeyState) -> (u64, Option<&'a Stored>) {
        (st.cutoff.max(self.cutoff), st.base.as_ref())
    }

    /// Notes that `kh`'s oldest record was issued at `issued_at`, so that pruning past it
    /// visits the key.
    fn schedule(&mut self, kh: u64, issued_at: u64) {
        if self.leasing {
            self.due.entry(issued_at / PRUNE_GRID).or_default().push(kh);
        }
    }

    /// The state of one key.
    pub fn key(&self, key: &[u8]) -> Option<&KeyState> {
        self.keys.get(key_hash(key), key)
    }

    /// The state of `key`, whose [`key_hash`] the caller has at hand.
    pub fn key_hashed(&self, hash: u64, key: &[u8]) -> Option<&KeyState> {
        debug_assert_eq!(hash, key_hash(key));
        self.keys.get(hash, key)
    }

    /// A key whose [`key_hash`] is `hash`, with its state.
    pub fn state_by_hash(&self, hash: u64) -> Option<(&[u8], &KeyState)> {
        self.keys.get_by_hash(hash)
    }

    /// The record shown for `key`, whose [`key_hash`] the caller has at hand.
    pub fn get_hashed(&self, hash: u64, key: &[u8]) -> Option<&Stored> {
        self.key_hashed(hash, key).and_then(KeyState::visible)
    }

    /// The record shown for `key`.
    pub fn get(&self, key: &[u8]) -> Option<&Stored> {
        self.key(key).and_then(KeyState::visible)
    }

    /// Every key with a value and its record, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &Stored)> {
        self.keys
            .iter()
            .filter_map(|(k, s)| s.visible().map(|v| (k, v)))
    }

    /// Every key state, in no particular order.
    pub fn states(&self) -> impl Iterator<Item = (&[u8], &KeyState)> {
        self.keys.iter()
    }

    /// Every key state with its key's [`key_hash`], in no particular order.
    pub fn states_hashed(&self) -> impl Iterator<Item = (u64, &[u8], &KeyState)> {
        self.keys.iter_hashed()
    }

    /// The 16 children (at `level`, 1..=LEVELS) of node `parent` of the level above.
    pub fn children(&self, level: u32, parent: usize) -> &[u64] {
        let start = parent * FANOUT;
        self.tree
            .get(level as usize - 1)
            .and_then(|l| l.get(start..start + FANOUT))
            .unwrap_or(&[])
    }

    /// The keys under leaf `leaf` in the order of their hashes, with their hashes and states.
    pub fn leaf_keys(&self, leaf: usize) -> impl Iterator<Item = (u64, &[u8], &KeyState)> {
        self.index
            .leaf(leaf)
            .into_iter()
            .filter_map(|h| self.keys.get_by_hash(h).map(|(k, st)| (h, k, st)))
    }

    fn toggle(tree: &mut [Vec<u64>], key_hash: u64, record_hash: u64) {
        for l in 1..=LEVELS {
            tree[l as usize - 1][node_of(key_hash, l)] ^= record_hash;
        }
    }

    /// The latest `issued_at` among the records kept for `key` (checkpoint included).
    pub fn latest_issued(&self, key: &[u8]) -> Option<u64> {
        self.latest_issued_hashed(key_hash(key), key)
    }

    /// [`Store::latest_issued`] of a key whose [`key_hash`] the caller has at hand.
    pub fn latest_issued_hashed(&self, hash: u64, key: &[u8]) -> Option<u64> {
        let st = self.key_hashed(hash, key)?;
        let last = st.records.last().map(|r| r.issued_at());
        let base = st.base.as_ref().map(|b| b.issued_at());
        last.max(base)
    }

    /// Whether the holder of `key` (if any) leases it against `writer` at `now`: returns the
    /// holder and its lease end.
    pub fn lease_against(&self, key: &[u8], writer: PeerId, now: u64) -> Option<(PeerId, u64)> {
        self.lease_against_hashed(key_hash(key), key, writer, now)
    }

    /// [`Store::lease_against`] for a key whose [`key_hash`] the caller has at hand.
    pub fn lease_against_hashed(
        &self,
        hash: u64,
        key: &[u8],
        writer: PeerId,
        now: u64,
    ) -> Option<(PeerId, u64)> {
        if !self.leasing {
            return None;
        }
        let h = self.get_hashed(hash, key)?;
        (*h.owner() != writer && h.lease_until() > now).then_some((*h.owner(), h.lease_until()))
    }

    /// From now on, remember which keys change (for a data directory: see
    /// [`Store::take_dirty`]).
    pub fn track_changes(&mut self) {
        self.dirty.get_or_insert_with(HashSet::new);
    }

    fn mark(&mut self, key: &[u8]) {
        if let Some(d) = &mut self.dirty {
            if !d.contains(key) {
                d.insert(Bytes::copy_from_slice(key));
            }
        }
    }

    /// The keys whose state changed (or that were forgotten) since the last call, and the new
    /// store-wide cutoff if it moved. Empty unless [`Store::track_changes`] was called.
    pub fn take_dirty(&mut self) -> (Vec<Bytes>, Option<u64>) {
        let keys = self
            .dirty
            .as_mut()
            .map(|d| d.drain().collect())
            .unwrap_or_default();
        let cutoff = std::mem::take(&mut self.cutoff_dirty).then_some(self.cutoff);
        (keys, cutoff)
    }

    /// Puts back a key's state as a data directory kept it (on a store that does not hold the
    /// key yet): its checkpoint and records, in any order. Records that the fold would not keep
    /// (without leasing, all but the greatest) are dropped.
    pub fn restore(
        &mut self,
        key: Bytes,
        cutoff: u64,
        base: Option<Stored>,
        mut records: Vec<Stored>,
    ) {
        let kh = key_hash(&key);
        if self.keys.contains_key(kh, &key) {
            return;
        }
        records.sort_by(|a, b| order(a).cmp(&order(b)));
        records.dedup_by(|a, b| a.leaf() == b.leaf());
        let (cutoff, base) = if self.leasing {
            (cutoff, base)
        } else {
            if let Some(last) = records.pop() {
                records = vec![last];
            }
            (0, None)
        };
        if base.is_none() && records.is_empty() {
            return;
        }
        let mut state = KeyState {
            cutoff,
            base,
            records: Records::from_vec(records),
            ..KeyState::default()
        };
        let hashes: Vec<u64> = state
            .base
            .iter()
            .chain(&state.records)
            .map(|r| r.short_hash())
            .collect();
        for h in &hashes {
            Self::toggle(&mut self.tree, kh, *h);
        }
        state.refold(self.leasing);
        if let Some(first) = state.records.first() {
            let issued_at = first.issued_at();
            self.schedule(kh, issued_at);
        }
        self.records += hashes.len();
        self.live += usize::from(state.visible().is_some());
        self.index.insert(kh);
        self.keys.insert(kh, &key, state);
    }

    /// Sets the store-wide cutoff as a data directory kept it.
    pub fn restore_cutoff(&mut self, cutoff: u64) {
        self.cutoff = self.cutoff.max(cutoff);
    }

    /// The state of `key` (whose [`key_hash`] is `kh`), created empty if it has none.
    fn state_mut(&mut self, key: &[u8], kh: u64) -> &mut KeyState {
        let cutoff = self.cutoff;
        let (state, made) = self.keys.get_or_insert_with(kh, key, || KeyState {
            cutoff,
            ..KeyState::default()
        });
        if made {
            self.index.insert(kh);
        }
        state
    }

    /// Adds a verified record and says what changed.
    pub fn insert(&mut self, s: Stored) -> Change {
        let kh = key_hash(s.key());
        self.insert_hashed(kh, s)
    }

    /// [`Store::insert`] of a record whose key's [`key_hash`] the caller has at hand.
    pub fn insert_hashed(&mut self, kh: u64, s: Stored) -> Change {
        self.insert_noting_leases(kh, s).0
    }

    /// [`Store::insert_hashed`], also saying whether the record came within another owner's
    /// live lease on the key: the key showed another owner's record, sorted before this one,
    /// whose lease had not ended when this one was issued. Such a record is kept (a record that
    /// arrives later can still reorder the history) but does not show.
    pub fn insert_noting_leases(&mut self, kh: u64, s: Stored) -> (Change, bool) {
        debug_assert_eq!(kh, key_hash(s.key()));
        let leasing = self.leasing;
        // Issued before the store's cutoff: stale for any key. Checked before the key's state
        // is made, so that a refused record leaves no empty state behind.
        if leasing && s.issued_at() < self.cutoff {
            return (Change::Stale, false);
        }
        let held = s.clone();
        let key = held.key();
        let state = self.state_mut(key, kh);
        // A state made just now has the store's cutoff; one made before may have a later one.
        if leasing && s.issued_at() < state.cutoff {
            return (Change::Stale, false);
        }
        let before = state.visible().cloned();
        let sk = s.sort_key();
        let within_lease = leasing
            && before.as_ref().is_some_and(|h| {
                h.owner() != s.owner() && h.sort_key() < sk && s.issued_at() < h.lease_until()
            });
        let pos = match state.records.binary_search_by(|r| order(r).cmp(&order(&s))) {
            Ok(_) => return (Change::Known, false),
            Err(i) => i,
        };
        if state.base.as_ref().is_some_and(|b| b.leaf() == s.leaf()) {
            return (Change::Known, false);
        }
        // Without leasing, the short hash of the record this one replaces (at most one is
        // kept), to toggle out of the tree with the new record's toggled in.
        let mut replaced = None;
        let h = s.short_hash();
        if !leasing {
            // Keep only the greatest record.
            if let Some(max) = state.records.last() {
                if order(max) >= order(&s) {
                    return (Change::Known, false);
                }
            }
            debug_assert!(state.records.len() <= 1);
            for old in state.records.drain(..) {
                replaced = Some(old.short_hash());
            }
            state.holder = if s.tombstone() {
                Holder::Empty
            } else {
                Holder::At(0)
            };
            state.records.push(s);
        } else if pos == state.records.len() {
            // The common case, a write later than all before it: apply it incrementally.
            if resolve::applies(state.visible(), &s, true) {
                state.holder = if s.tombstone() {
                    Holder::Empty
                } else {
                    Holder::At(pos as u32)
                };
            }
            state.records.push(s);
        } else {
            state.records.insert(pos, s);
            state.refold(true);
        }
        let last = pos + 1 == state.records.len();
        state.check(leasing, "insert");
        let after = state.visible().cloned();
        self.records = self.records + 1 - usize::from(replaced.is_some());
        if let Some(old) = replaced {
            Self::toggle(&mut self.tree, kh, old);
        }
        Self::toggle(&mut self.tree, kh, h);
        if pos == 0 {
            // A new oldest record: pruning past it must visit the key.
            self.schedule(kh, sk.0);
        }
        self.mark(key);
        (self.change(before, after, !last, sk), within_lease)
    }

    /// What a change of the shown record from `before` to `after` is. `reordered`: whether the
    /// new record sorted before others of the key; `sk`: its sort key.
    fn change(
        &mut self,
        before: Option<Stored>,
        after: Option<Stored>,
        reordered: bool,
        sk: (u64, PeerId, u64),
    ) -> Change {
        let lost = match (&before, &after) {
            (Some(b), a)
                if reordered
                    && a.as_ref().is_none_or(|a| a.owner() != b.owner())
                    && sk < b.sort_key() =>
            {
                Some(b.clone())
            }
            _ => None,
        };
        match (before, after) {
            (Some(_), None) => {
                self.live -= 1;
                Change::Deleted { lost }
            }
            (None, Some(a)) => {
                self.live += 1;
                Change::Updated { now: a, lost }
            }
            (Some(b), Some(a)) if !b.same_record(&a) => Change::Updated { now: a, lost },
            _ => Change::Stored,
        }
    }

    /// Folds every record issued before `cutoff` into the keys' checkpoints (leasing only; a
    /// cutoff not later than the last one does nothing). Never changes what any key shows.
    pub fn prune(&mut self, cutoff: u64) {
        if !self.leasing || cutoff <= self.cutoff {
            return;
        }
        self.cutoff = cutoff;
        self.cutoff_dirty = true;
        // Only keys whose oldest record is older than the cutoff change; every other key's
        // checkpoint in force moves with the store's cutoff (see `Store::checkpoint`).
        let later = self.due.split_off(&((cutoff - 1) / PRUNE_GRID + 1));
        let due = std::mem::replace(&mut self.due, later);
        for kh in due.into_values().flatten() {
            let Some((key, st)) = self.keys.get_by_hash(kh) else {
                continue; // forgotten since
            };
            let oldest = st.records.first().map(|r| r.issued_at());
            match oldest {
                Some(t) if t < cutoff => {
                    let key = Bytes::copy_from_slice(key);
                    self.prune_key(&key, cutoff);
                }
                // Noted in the last slot but not older than the cutoff: keep it noted.
                Some(t) => self.schedule(kh, t),
                None => {}
            }
        }
    }

    /// Advances one key's checkpoint to `cutoff`.
    fn prune_key(&mut self, key: &[u8], cutoff: u64) {
        let kh = key_hash(key);
        let Some(state) = self.keys.get_mut(kh, key) else {
            return;
        };
        if cutoff <= state.cutoff {
            return;
        }
        state.check(true, "any change before a prune");
        let shown_before = state.visible().cloned();
        let split = state.records.partition_point(|r| r.issued_at() < cutoff);
        let prefix: Vec<Stored> = state.records.drain(..split).collect();
        let new_base = match resolve::fold_from(state.base.as_ref(), prefix.iter(), true) {
            Folded::Empty => None,
            Folded::Initial => state.base.clone(),
            Folded::At(i) => Some(prefix[i].clone()),
        };
        let mut dropped: Vec<u64> = prefix.iter().map(|r| r.short_hash()).collect();
        if let Some(old) = &state.base {
            dropped.push(old.short_hash());
        }
        if let Some(nb) = &new_base {
            // The new checkpoint stays: undo its removal.
            dropped.push(nb.short_hash());
        }
        self.records -= prefix.len() + usize::from(state.base.is_some());
        self.records += usize::from(new_base.is_some());
        state.base = new_base;
        state.cutoff = cutoff;
        state.refold(true);
        debug_assert!(
            match (&shown_before, state.visible()) {
                (Some(a), Some(b)) => a.same_record(b),
                (a, b) => a.is_none() && b.is_none(),
            },
            "pruning never changes what is shown"
        );
        let forget = state.base.is_none() && state.records.is_empty();
        let next = (split > 0)
            .then(|| state.records.first().map(|r| r.issued_at()))
            .flatten();
        for h in dropped {
            Self::toggle(&mut self.tree, kh, h);
        }
        if let Some(t) = next {
            self.schedule(kh, t);
        }
        self.mark(key);
        if forget {
            self.keys.remove(kh, key);
            self.index.remove(kh);
        }
    }

    /// Merges a peer's checkpoint for `key` (cutoff and holder, already verified): the later
    /// cutoff wins; at equal cutoffs the greater holder in sort order.
    pub fn merge_checkpoint(&mut self, key: &[u8], cutoff: u64, holder: Option<Stored>) -> Change {
        if !self.leasing
            || holder
                .as_ref()
                .is_some_and(|h| h.key() != key || h.issued_at() >= cutoff)
        {
            return Change::Known;
        }
        let kh = key_hash(key);
        let before = self
            .key_hashed(kh, key)
            .and_then(KeyState::visible)
            .cloned();
        let known = self.keys.contains_key(kh, key);
        if known {
            self.prune_key(key, cutoff);
        }
        // Older than the checkpoint in force: nothing to do, and no state to make for a key
        // this store does not hold (an empty one would stay behind).
        let store_cutoff = self.cutoff;
        let in_force = self
            .keys
            .get(kh, key)
            .map_or(store_cutoff, |st| st.cutoff.max(store_cutoff));
        if in_force > cutoff {
            return Change::Known;
        }
        let state = self.state_mut(key, kh);
        if !known {
            state.cutoff = cutoff;
        }
        let replace = match (&state.base, &holder) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(mine), Some(theirs)) => order(theirs) > order(mine),
        };
        if !replace {
            let forget = state.base.is_none() && state.records.is_empty();
            if forget {
                self.keys.remove(kh, key);
                self.index.remove(kh);
            }
            if !known || forget {
                self.mark(key);
            }
            return Change::Known;
        }
        let theirs = holder.expect("replace implies a holder");
        let mut toggles = vec![theirs.short_hash()];
        let replaced = state.base.replace(theirs.clone());
        if let Some(old) = &replaced {
            toggles.push(old.short_hash());
        }
        state.refold(true);
        state.check(true, "merge_checkpoint");
        let after = state.visible().cloned();
        self.records = self.records + 1 - usize::from(replaced.is_some());
        for t in toggles {
            Self::toggle(&mut self.tree, kh, t);
        }
        self.mark(key);
        self.change(before, after, true, theirs.sort_key())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::record::{seal, Record};
    use proptest::prelude::*;
    use rs2p_base::Keypair;
    use std::collections::HashMap;

    const LEASE: u64 = 3600;

    proptest! {
        /// Key hashes computed many at a time are the one-at-a-time hashes.
        #[test]
        fn key_hashes_many_at_a_time_equal_one_at_a_time(
            keys in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..80), 0..100),
        ) {
            let refs: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
            let want: Vec<u64> = refs.iter().map(|k| key_hash(k)).collect();
            prop_assert_eq!(key_hashes(refs.iter().copied()), want);
        }
    }

    fn write(kp: &Keypair, key: &str, t: u64, v: u64, tomb: bool) -> Stored {
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

    /// Whether every record older than the store's cutoff has been folded (what a prune that
    /// visited every key would leave; pruning visits only the keys noted as due).
    fn folded_to_cutoff(s: &Store) -> bool {
        s.states().all(|(_, st)| {
            st.records()
                .first()
                .is_none_or(|r| r.issued_at() >= s.cutoff())
        })
    }

    fn snapshot(s: &Store) -> Vec<(Bytes, Record)> {
        let mut v: Vec<(Bytes, Record)> = s
            .iter()
            .map(|(k, r)| (Bytes::copy_from_slice(k), r.record()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    fn arb_writes() -> impl Strategy<Value = Vec<(u8, u8, u64, bool)>> {
        proptest::collection::vec((0u8..3, 0u8..3, 0u64..3 * LEASE, any::<bool>()), 0..20)
    }

    fn records(writes: &[(u8, u8, u64, bool)]) -> Vec<Stored> {
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
            let mut shuffled: Vec<Stored> = recs.iter().chain(recs.iter().take(3)).cloned().collect();
            shuffled.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
            let mut b = Store::new(leasing);
            let mut live_b = 0i64;
            for r in &shuffled {
                prop_assert_ne!(b.insert(r.clone()), Change::Stale);
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
                    let full = resolve::fold(st.records().iter(), true);
                    let expected = match full { Some(i) => Holder::At(i as u32), None => Holder::Empty };
                    prop_assert_eq!(st.holder, expected);
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
            for r in &recs { by_key.entry(Bytes::copy_from_slice(r.key())).or_default().push(r.record()); }
            for (k, mut rs) in by_key {
                rs.sort_by_key(Record::sort_key);
                rs.dedup();
                let full = resolve::fold(rs.iter(), false).map(|i| rs[i].clone());
                prop_assert_eq!(pruned.get(&k).map(Stored::record), full);
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
                let value = String::from_utf8(rec.value().to_vec()).unwrap();
                store.insert(rec);
                if del {
                    model.remove(&key);
                } else {
                    model.insert(key.clone(), (o, value, t + LEASE));
                }
                for (mk, (mo, mv, _)) in &model {
                    let r = store.get(mk.as_bytes()).expect("the model's key is in the store");
                    prop_assert_eq!(*r.owner(), keys[*mo as usize].peer_id());
                    prop_assert_eq!(r.value(), mv.as_bytes());
                }
                prop_assert_eq!(store.len(), model.len());
            }
        }
    }

    /// Real-sized times: lease 1 h, skew 10 s, grace 10 min.
    const H_LEASE: u64 = 3_600_000;
    const HORIZON: u64 = H_LEASE + 2 * 10_000 + 600_000;

    fn arb_timed() -> impl Strategy<Value = Vec<(u8, u8, u64, bool, u64)>> {
        // (owner, key, issued_at, tombstone, delivery delay ≤ HORIZON)
        proptest::collection::vec(
            (
                0u8..3,
                0u8..3,
                0u64..8 * HORIZON,
                any::<bool>(),
                0u64..=HORIZON,
            ),
            0..40,
        )
    }

    fn timed_records(w: &[(u8, u8, u64, bool, u64)]) -> Vec<(u64, Stored)> {
        let keys: Vec<Keypair> = (1..=3).map(|i| Keypair::from_seed([i; 32])).collect();
        let mut w = w.to_vec();
        w.sort_by_key(|&(o, _, t, _, _)| (o, t));
        let mut versions = [0u64; 3];
        w.into_iter()
            .map(|(o, k, t, tomb, delay)| {
                versions[o as usize] += 1;
                let kp = &keys[o as usize];
                let tomb = tomb && t % 3 == 0;
                let r = Record {
                    key: Bytes::from(format!("k{k}")),
                    value: if tomb {
                        Bytes::new()
                    } else {
                        Bytes::from(format!("{o}@{t}"))
                    },
                    tombstone: tomb,
                    owner: kp.peer_id(),
                    issued_at: t,
                    version: versions[o as usize],
                    lease_until: if tomb { t } else { t + H_LEASE },
                };
                (t + delay, seal(kp, &[0; 32], vec![r]).0.remove(0))
            })
            .collect()
    }

    proptest! {
        /// The pruning guarantee: when every record arrives within the horizon of its issue time,
        /// a replica that prunes (at any moments, to the grid cutoff of its clock) shows exactly
        /// what the fold of every record shows, in any arrival order; and a new replica that
        /// receives its checkpoints and records shows the same.
        #[test]
        fn pruning_within_the_guarantee_never_changes_the_result(
            writes in arb_timed(), prune_at in proptest::collection::vec(any::<bool>(), 40)
        ) {
            let recs = timed_records(&writes);
            let mut full = Store::new(true);
            for (_, r) in &recs {
                full.insert(r.clone());
            }
            let mut arrivals = recs.clone();
            arrivals.sort_by_key(|(at, r)| (*at, r.sort_key()));
            let mut pruned = Store::new(true);
            for (i, (at, r)) in arrivals.iter().enumerate() {
                if prune_at[i % prune_at.len()] {
                    pruned.prune(cutoff_at(*at, HORIZON));
                    prop_assert!(folded_to_cutoff(&pruned));
                }
                prop_assert_ne!(pruned.insert(r.clone()), Change::Stale, "a record within the guarantee is never stale");
            }
            let end = arrivals.last().map_or(0, |(at, _)| *at) + 2 * HORIZON;
            pruned.prune(cutoff_at(end, HORIZON));
            prop_assert!(folded_to_cutoff(&pruned));
            prop_assert_eq!(snapshot(&pruned), snapshot(&full));
            prop_assert!(pruned.record_count() <= full.record_count());

            // A newcomer fed the pruned replica's checkpoints, then its records.
            let mut fresh = Store::new(true);
            for (k, st) in pruned.states() {
                let (cutoff, base) = pruned.checkpoint(st);
                if cutoff > 0 {
                    fresh.merge_checkpoint(k, cutoff, base.cloned());
                }
                for r in st.records() {
                    prop_assert_ne!(fresh.insert(r.clone()), Change::Stale);
                }
            }
            prop_assert_eq!(snapshot(&fresh), snapshot(&full));
        }

        /// A data directory that writes every key `take_dirty` names (at arbitrary moments,
        /// with pruning and checkpoint merges in between) holds, restored into a fresh store,
        /// exactly the dictionary, records, digests and cutoff of the live one.
        #[test]
        fn restoring_what_the_dirty_keys_wrote_gives_the_same_store(
            writes in arb_timed(),
            flush_at in proptest::collection::vec(any::<bool>(), 40),
            prune_at in proptest::collection::vec(any::<bool>(), 40),
            leasing in any::<bool>(),
        ) {
            type Disk = HashMap<Bytes, (u64, Option<Stored>, Vec<Stored>)>;
            fn flush(s: &mut Store, disk: &mut Disk, disk_cutoff: &mut u64) {
                let (keys, cutoff) = s.take_dirty();
                for k in keys {
                    match s.key(&k) {
                        Some(st) => {
                            let (c, b) = s.checkpoint(st);
                            disk.insert(k, (c, b.cloned(), st.records().to_vec()));
                        }
                        None => {
                            disk.remove(&k);
                        }
                    }
                }
                if let Some(c) = cutoff {
                    *disk_cutoff = c;
                }
            }
            let mut arrivals = timed_records(&writes);
            arrivals.sort_by_key(|(at, r)| (*at, r.sort_key()));
            let mut live = Store::new(leasing);
            live.track_changes();
            let mut disk = Disk::new();
            let mut disk_cutoff = 0;
            for (i, (at, r)) in arrivals.iter().enumerate() {
                if prune_at[i % prune_at.len()] {
                    live.prune(cutoff_at(*at, HORIZON));
                    prop_assert!(folded_to_cutoff(&live));
                }
                live.insert(r.clone());
                if flush_at[i % flush_at.len()] {
                    flush(&mut live, &mut disk, &mut disk_cutoff);
                }
            }
            live.prune(cutoff_at(arrivals.last().map_or(0, |(at, _)| *at) + HORIZON, HORIZON));
            flush(&mut live, &mut disk, &mut disk_cutoff);
            let mut back = Store::new(leasing);
            back.restore_cutoff(disk_cutoff);
            for (k, (c, b, rs)) in disk {
                back.restore(k, c, b, rs);
            }
            prop_assert_eq!(snapshot(&back), snapshot(&live));
            prop_assert_eq!(&back.tree, &live.tree);
            prop_assert_eq!(back.record_count(), live.record_count());
            prop_assert_eq!(back.key_count(), live.key_count());
            prop_assert_eq!(back.len(), live.len());
            prop_assert_eq!(back.cutoff(), live.cutoff());
            // Restored keys are noted for pruning like live ones: pruning both further keeps
            // them equal.
            let later = cutoff_at(arrivals.last().map_or(0, |(at, _)| *at) + 2 * HORIZON, HORIZON);
            live.prune(later);
            back.prune(later);
            prop_assert!(folded_to_cutoff(&live) && folded_to_cutoff(&back));
            prop_assert_eq!(snapshot(&back), snapshot(&live));
            prop_assert_eq!(&back.tree, &live.tree);
        }

        /// After a breach of the guarantee (checkpoints that disagree), merging them in any order
        /// still makes replicas agree.
        #[test]
        fn disagreeing_checkpoints_merge_to_the_same_result_in_any_order(writes in arb_timed(), order_seed in any::<u64>()) {
            use rand::{seq::SliceRandom, SeedableRng};
            let recs = timed_records(&writes);
            let cutoff = cutoff_at(9 * HORIZON, HORIZON);
            // Each record alone, as a claimed checkpoint holder for its key.
            let claims: Vec<(Bytes, Stored)> = recs
                .iter()
                .filter(|(_, r)| r.issued_at() < cutoff && !r.tombstone())
                .map(|(_, r)| (Bytes::copy_from_slice(r.key()), r.clone()))
                .collect();
            let mut a = Store::new(true);
            for (k, h) in &claims {
                a.merge_checkpoint(k, cutoff, Some(h.clone()));
            }
            let mut shuffled = claims.clone();
            shuffled.shuffle(&mut rand::rngs::StdRng::seed_from_u64(order_seed));
            let mut b = Store::new(true);
            for (k, h) in &shuffled {
                b.merge_checkpoint(k, cutoff, Some(h.clone()));
            }
            prop_assert_eq!(snapshot(&a), snapshot(&b));
            prop_assert_eq!(&a.tree, &b.tree);
        }
    }

    /// A leasing store holding one write of key `k` at `t`, pruned two horizons later (so the
    /// write is its checkpoint), with the writer and `t`.
    fn pruned_past_one_write() -> (Keypair, u64, Store) {
        let kp = Keypair::from_seed([1; 32]);
        let mut s = Store::new(true);
        let t = 10 * HORIZON;
        s.insert(write(&kp, "k", t, 1, false));
        s.prune(cutoff_at(t + 2 * HORIZON, HORIZON));
        (kp, t, s)
    }

    #[test]
    fn a_record_older_than_the_checkpoint_is_refused_as_stale() {
        let (kp, t, mut s) = pruned_past_one_write();
        assert_eq!(s.record_count(), 1, "the holder stays as the checkpoint");
        assert_eq!(s.insert(write(&kp, "k", t - 1, 0, false)), Change::Stale);
        assert_eq!(
            s.insert(write(&kp, "other", t - 1, 0, false)),
            Change::Stale,
            "also for keys never seen"
        );
        // A key deleted before the cutoff is forgotten entirely.
        s.insert(write(&kp, "gone", t + 1, 2, false));
        s.insert(write(&kp, "gone", t + 2, 3, true));
        s.prune(cutoff_at(t + 3 * HORIZON, HORIZON));
        assert!(s.key(b"gone").is_none());
        assert_eq!(s.get(b"k").map(|r| r.issued_at()), Some(t));
    }

    #[test]
    fn a_checkpoint_older_than_the_store_leaves_no_trace_of_an_unknown_key() {
        let (kp, t, mut s) = pruned_past_one_write();
        let (keys, tree) = (s.key_count(), s.children(1, 0).to_vec());
        for holder in [None, Some(write(&kp, "new", t - PRUNE_GRID - 1, 2, false))] {
            let old = s.cutoff() - PRUNE_GRID;
            let key = Bytes::from_static(b"new");
            assert_eq!(s.merge_checkpoint(&key, old, holder), Change::Known);
            assert!(s.key(b"new").is_none(), "no empty state is left behind");
            assert_eq!(s.key_count(), keys);
            assert_eq!(s.children(1, 0), &tree[..]);
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
                assert_eq!(*now.owner(), a.peer_id());
                assert_eq!(*lost.owner(), b.peer_id());
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            s.lease_against(b"k", b.peer_id(), 2000),
            Some((a.peer_id(), 500 + LEASE))
        );
        assert_eq!(s.lease_against(b"k", a.peer_id(), 2000), None);
    }
    #[test]
    fn a_write_within_another_owners_lease_is_kept_and_noted() {
        let (a, b) = (Keypair::from_seed([1; 32]), Keypair::from_seed([2; 32]));
        let mut s = Store::new(true);
        let first = write(&a, "k", 1000, 1, false);
        let (change, within) = s.insert_noting_leases(key_hash(b"k"), first);
        assert!(matches!(change, Change::Updated { .. }) && !within);
        // B writes while A's lease runs: stored, not shown, noted.
        let (change, within) =
            s.insert_noting_leases(key_hash(b"k"), write(&b, "k", 2000, 1, false));
        assert_eq!((change, within), (Change::Stored, true));
        // A's own update is not a conflict; neither is B's write once the lease has ended.
        let (_, within) = s.insert_noting_leases(key_hash(b"k"), write(&a, "k", 3000, 2, false));
        assert!(!within);
        let late = write(&b, "k", 3000 + LEASE, 2, false);
        let (change, within) = s.insert_noting_leases(key_hash(b"k"), late);
        assert!(matches!(change, Change::Updated { .. }) && !within);
        // Without leasing nothing is ever within a lease.
        let mut plain = Store::new(false);
        plain.insert(write(&a, "k", 1000, 1, false));
        let (_, within) =
            plain.insert_noting_leases(key_hash(b"k"), write(&b, "k", 2000, 1, false));
        assert!(!within);
    }
}
