//! The store's map from key to state, split into shards so that it never grows all at once, and
//! searchable by the key's tree hash as well as by the key.
//!
//! A hash map doubles its table when it fills: at a million keys, one doubling rehashes every
//! entry into a fresh 200 MB table, and the node that holds the map stops for most of a second
//! (the sync benchmark under load saw a write wait 0.8 s behind one). Split into [`SHARDS`] maps
//! chosen by the key's hash, each doubling moves 1/[`SHARDS`] of the entries, and the doublings
//! spread over the inserts, since shards fill at slightly different times.
//!
//! Every entry keeps the key's tree hash (the store's `key_hash`, which the caller computes once
//! per operation and passes in), and the tables are indexed by that hash mixed with a secret
//! drawn per map. So the map needs no hash of its own, a key can be found from its tree hash
//! alone (repair names keys by hash), and a peer that chooses keys whose tree hashes share
//! their low bits still cannot make them share buckets.
//!
//! # Layout
//!
//! Each shard keeps its entries densely in a vector and its hash table holds only their 32-bit
//! places in it (as the `indexmap` crate does). A table fills to between 7/16 and 7/8 of its
//! buckets, so a table of whole entries spent up to twice their size per key: a million keys
//! land just past a growth threshold, and the store's entries (96 bytes then, with a key
//! handle) took 200 bytes per key in the tables alone; dense, an entry takes its size and the
//! table of places about 10 bytes more. Removing an entry moves the shard's last entry into its
//! place and renumbers it in the table.
//!
//! An entry keeps no key of its own: the value names it ([`Keyed`]; the store's key states name
//! their key through their records), 32 bytes less per key than a `Bytes` handle. A value may
//! name no key for a moment (a state just made, before its first record; one just emptied,
//! before it is removed): no lookup by key finds it then, and [`KeyMap::remove`] takes it as the
//! entry of the key it is asked to remove if it has that hash.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use hashbrown::hash_table::{Entry, HashTable};

/// Maps in a [`KeyMap`].
pub const SHARDS: usize = 256;

/// A value that names its key (see the [module docs](self)).
pub trait Keyed {
    /// The key, if the value names one now.
    fn key(&self) -> Option<&[u8]>;
}

struct Slot<V> {
    hash: u64,
    value: V,
}

impl<V: Keyed> Slot<V> {
    /// Whether this is the entry of `key` (whose hash is `hash`).
    fn is(&self, hash: u64, key: &[u8]) -> bool {
        self.hash == hash && self.value.key().is_some_and(|k| k[..] == *key)
    }
}

/// One shard: the entries, and a table of their places.
struct Shard<V> {
    table: HashTable<u32>,
    slots: Vec<Slot<V>>,
}

impl<V> Default for Shard<V> {
    fn default() -> Self {
        Self {
            table: HashTable::new(),
            slots: Vec::new(),
        }
    }
}

/// A place in a shard's vector, as the table keeps it.
fn place(i: usize) -> u32 {
    u32::try_from(i).expect("a shard holds fewer than 2^32 entries")
}

/// A map from key bytes (with their tree hash) to `V`, in [`SHARDS`] shards. See the
/// [module docs](self).
///
/// Every method that takes a key takes its hash too, which must be the same for the same key
/// every time (two keys may share one). The shard is chosen by bits 40..48 of the mixed hash and
/// the shard's table uses the same mixed hash, whose low bits pick its buckets and whose top bits
/// are its tags, so neither is constant within a shard.
pub struct KeyMap<V> {
    seed: [u64; 2],
    shards: Vec<Shard<V>>,
    len: usize,
}

impl<V> std::fmt::Debug for KeyMap<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyMap").field("len", &self.len).finish()
    }
}

impl<V> Default for KeyMap<V> {
    fn default() -> Self {
        let secret = RandomState::new();
        Self {
            seed: [secret.hash_one(0u8), secret.hash_one(1u8) | 1],
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            len: 0,
        }
    }
}

fn shard(mixed: u64) -> usize {
    (mixed >> 40) as usize % SHARDS
}

/// The hash the tables use for tree hash `hash`: a multiply of the hash and the secret, folded
/// (the product's high and low halves XORed), which spreads every input bit over the output.
fn mix(seed: [u64; 2], hash: u64) -> u64 {
    let m = u128::from(hash ^ seed[0]) * u128::from(seed[1]);
    (m as u64) ^ ((m >> 64) as u64)
}

impl<V: Keyed> Shard<V> {
    /// The place of `key`, whose hash is `hash` and mixed hash `m`.
    fn find(&self, m: u64, hash: u64, key: &[u8]) -> Option<usize> {
        let slots = &self.slots;
        self.table
            .find(m, |&i| slots[i as usize].is(hash, key))
            .map(|&i| i as usize)
    }

    /// The place of `key`, added with the value `make` gives if it is not there; and whether it
    /// was added.
    fn find_or_add(
        &mut self,
        seed: [u64; 2],
        m: u64,
        hash: u64,
        key: &[u8],
        make: impl FnOnce() -> V,
    ) -> (usize, bool) {
        let Shard { table, slots } = self;
        let entry = table.entry(
            m,
            |&i| slots[i as usize].is(hash, key),
            |&i| mix(seed, slots[i as usize].hash),
        );
        match entry {
            Entry::Occupied(e) => (*e.get() as usize, false),
            Entry::Vacant(e) => {
                let i = slots.len();
                e.insert(place(i));
                slots.push(Slot {
                    hash,
                    value: make(),
                });
                (i, true)
            }
        }
    }

    /// Removes `key`'s entry (or an entry of its hash that names no key), moving the last one
    /// into its place.
    fn remove(&mut self, seed: [u64; 2], m: u64, hash: u64, key: &[u8]) -> Option<V> {
        let slots = &self.slots;
        let found = self
            .table
            .find_entry(m, |&i| {
                let s = &slots[i as usize];
                s.hash == hash && s.value.key().is_none_or(|k| k[..] == *key)
            })
            .ok()?;
        let (i, _) = found.remove();
        let i = i as usize;
        let last = self.slots.len() - 1;
        let removed = self.slots.swap_remove(i);
        if i != last {
            // The entry that was last is now at `i`: renumber it.
            let moved = mix(seed, self.slots[i].hash);
            let was = place(last);
            if let Some(p) = self.table.find_mut(moved, |&j| j == was) {
                *p = place(i);
            }
        }
        Some(removed.value)
    }
}

impl<V: Keyed> KeyMap<V> {
    fn mixed(&self, hash: u64) -> u64 {
        mix(self.seed, hash)
    }

    /// Entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The value of `key`, whose hash is `hash`.
    pub fn get(&self, hash: u64, key: &[u8]) -> Option<&V> {
        let m = self.mixed(hash);
        let shard = &self.shards[shard(m)];
        shard.find(m, hash, key).map(|i| &shard.slots[i].value)
    }

    /// The value of `key`, to change.
    pub fn get_mut(&mut self, hash: u64, key: &[u8]) -> Option<&mut V> {
        let m = self.mixed(hash);
        let shard = &mut self.shards[shard(m)];
        let i = shard.find(m, hash, key)?;
        Some(&mut shard.slots[i].value)
    }

    /// A key whose hash is `hash`, with its value (if several keys share the hash, one of them).
    pub fn get_by_hash(&self, hash: u64) -> Option<(&[u8], &V)> {
        let m = self.mixed(hash);
        let shard = &self.shards[shard(m)];
        let slots = &shard.slots;
        let s = shard
            .table
            .find(m, |&i| {
                let s = &slots[i as usize];
                s.hash == hash && s.value.key().is_some()
            })
            .map(|&i| &slots[i as usize])?;
        Some((s.value.key()?, &s.value))
    }

    /// Whether `key` has a value.
    pub fn contains_key(&self, hash: u64, key: &[u8]) -> bool {
        self.get(hash, key).is_some()
    }

    /// Sets `key`'s value; returns the one it replaced.
    pub fn insert(&mut self, hash: u64, key: &[u8], value: V) -> Option<V> {
        debug_assert!(
            value.key().is_some_and(|k| k[..] == *key),
            "the value names its key"
        );
        let m = self.mixed(hash);
        let seed = self.seed;
        let shard = &mut self.shards[shard(m)];
        let mut new = Some(value);
        let (i, added) = shard.find_or_add(seed, m, hash, key, || new.take().expect("made once"));
        if added {
            self.len += 1;
            return None;
        }
        let value = new.expect("not used: the key was there");
        Some(std::mem::replace(&mut shard.slots[i].value, value))
    }

    /// Removes `key`; returns its value.
    pub fn remove(&mut self, hash: u64, key: &[u8]) -> Option<V> {
        let m = self.mixed(hash);
        let seed = self.seed;
        let removed = self.shards[shard(m)].remove(seed, m, hash, key)?;
        self.len -= 1;
        Some(removed)
    }

    /// `key`'s value, made with `make` if it has none; and whether it was made. A value made
    /// naming no key yet must name `key` before the next lookup.
    pub fn get_or_insert_with(
        &mut self,
        hash: u64,
        key: &[u8],
        make: impl FnOnce() -> V,
    ) -> (&mut V, bool) {
        let m = self.mixed(hash);
        let seed = self.seed;
        let shard = &mut self.shards[shard(m)];
        let (i, added) = shard.find_or_add(seed, m, hash, key, make);
        if added {
            self.len += 1;
        }
        (&mut shard.slots[i].value, added)
    }

    /// Every entry that names its key, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &V)> {
        self.iter_hashed().map(|(_, k, v)| (k, v))
    }

    /// Every entry that names its key, with its hash, in no particular order.
    pub fn iter_hashed(&self) -> impl Iterator<Item = (u64, &[u8], &V)> {
        self.shards.iter().flat_map(|t| {
            t.slots
                .iter()
                .filter_map(|s| Some((s.hash, s.value.key()?, &s.value)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// A value that names its key, or for a moment none, as the store's key states do.
    #[derive(Debug)]
    struct Val {
        key: Option<Bytes>,
        n: u32,
    }

    impl Keyed for Val {
        fn key(&self) -> Option<&[u8]> {
            self.key.as_deref()
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8, u32),
        Remove(u8),
        /// Made naming no key, then named (as the store makes a state, then adds a record).
        Upsert(u8, u32),
        /// Emptied, then removed (as the store forgets a key whose records were all pruned).
        Forget(u8),
        /// Made, then removed before it names its key (a checkpoint that brings nothing).
        MadeAndDropped(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (any::<u8>(), any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
            any::<u8>().prop_map(Op::Remove),
            (any::<u8>(), any::<u32>()).prop_map(|(k, v)| Op::Upsert(k, v)),
            any::<u8>().prop_map(Op::Forget),
            any::<u8>().prop_map(Op::MadeAndDropped),
        ]
    }

    /// A deliberately poor hash: four values, so that many keys share one.
    fn poor(k: &[u8]) -> u64 {
        u64::from(k[0] % 4)
    }

    fn key(k: u8) -> Bytes {
        Bytes::from(vec![k; 1 + k as usize % 5])
    }

    proptest! {
        /// The sharded map answers exactly as one map does, whatever the operations, even
        /// when many keys share a hash and values name no key for a moment.
        #[test]
        fn behaves_as_one_map(ops in prop::collection::vec(op(), 0..400)) {
            let mut map = KeyMap::default();
            let mut model: HashMap<Bytes, u32> = HashMap::new();
            for op in ops {
                match op {
                    Op::Insert(k, v) => {
                        let k = key(k);
                        let old = map.insert(poor(&k), &k, Val { key: Some(k.clone()), n: v });
                        prop_assert_eq!(old.map(|o| o.n), model.insert(k, v));
                    }
                    Op::Remove(k) => {
                        let k = key(k);
                        prop_assert_eq!(map.remove(poor(&k), &k).map(|o| o.n), model.remove(&k));
                    }
                    Op::Upsert(k, v) => {
                        let k = key(k);
                        let had = model.contains_key(&k);
                        let (value, made) =
                            map.get_or_insert_with(poor(&k), &k, || Val { key: None, n: 0 });
                        prop_assert_eq!(made, !had);
                        value.key = Some(k.clone());
                        value.n += v % 7;
                        *model.entry(k).or_insert(0) += v % 7;
                    }
                    Op::Forget(k) => {
                        let k = key(k);
                        if let Some(value) = map.get_mut(poor(&k), &k) {
                            value.key = None;
                        }
                        prop_assert_eq!(map.remove(poor(&k), &k).map(|o| o.n), model.remove(&k));
                    }
                    Op::MadeAndDropped(k) => {
                        let k = key(k);
                        let (_, made) =
                            map.get_or_insert_with(poor(&k), &k, || Val { key: None, n: 0 });
                        if made {
                            prop_assert!(map.get(poor(&k), &k).is_none());
                            let gone = map.remove(poor(&k), &k);
                            prop_assert!(gone.is_some_and(|g| g.key.is_none()));
                        }
                    }
                }
                prop_assert_eq!(map.len(), model.len());
            }
            for (k, v) in &model {
                prop_assert_eq!(map.get(poor(k), k).map(|o| o.n), Some(*v));
                prop_assert!(map.contains_key(poor(k), k));
            }
            for h in 0..4u64 {
                let found = map.get_by_hash(h).map(|(k, v)| (Bytes::copy_from_slice(k), v.n));
                match found {
                    Some((k, v)) => {
                        prop_assert_eq!(poor(&k), h);
                        prop_assert_eq!(model.get(&k), Some(&v));
                    }
                    None => prop_assert!(model.keys().all(|k| poor(k) != h)),
                }
            }
            let mut all: Vec<_> = map.iter().map(|(k, v)| (Bytes::copy_from_slice(k), v.n)).collect();
            all.sort();
            let mut want: Vec<_> = model.into_iter().collect();
            want.sort();
            prop_assert_eq!(all, want);
        }
    }
}
