//! The store's map from key to state, split into shards so that it never grows all at once.
//!
//! A hash map doubles its table when it fills: at a million keys, one doubling rehashes every
//! entry into a fresh 200 MB table, and the node that holds the map stops for most of a second
//! (the sync benchmark under load saw a write wait 0.8 s behind one). Split into [`SHARDS`] maps
//! chosen by the key's hash, each doubling moves 1/[`SHARDS`] of the entries, and the doublings
//! spread over the inserts, since shards fill at slightly different times.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use bytes::Bytes;
use hashbrown::hash_table::{Entry, HashTable};

/// Maps in a [`KeyMap`].
pub const SHARDS: usize = 256;

/// A map from key bytes to `V`, in [`SHARDS`] shards. See the [module docs](self).
///
/// Each key is hashed once per operation (keyed SipHash, as `std`'s maps): the shard is chosen
/// by bits 40..48 of that hash and the shard's table uses the same hash, whose low bits pick its
/// buckets and whose top bits are its tags, so neither is constant within a shard.
#[derive(Debug)]
pub struct KeyMap<V> {
    hasher: RandomState,
    shards: Vec<HashTable<(Bytes, V)>>,
    len: usize,
}

impl<V> Default for KeyMap<V> {
    fn default() -> Self {
        Self {
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| HashTable::new()).collect(),
            len: 0,
        }
    }
}

fn shard(hash: u64) -> usize {
    (hash >> 40) as usize % SHARDS
}

impl<V> KeyMap<V> {
    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    /// Entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The value of `key`.
    pub fn get(&self, key: &[u8]) -> Option<&V> {
        let h = self.hash(key);
        self.shards[shard(h)]
            .find(h, |(k, _)| k[..] == *key)
            .map(|(_, v)| v)
    }

    /// The value of `key`, to change.
    pub fn get_mut(&mut self, key: &[u8]) -> Option<&mut V> {
        let h = self.hash(key);
        self.shards[shard(h)]
            .find_mut(h, |(k, _)| k[..] == *key)
            .map(|(_, v)| v)
    }

    /// Whether `key` has a value.
    pub fn contains_key(&self, key: &[u8]) -> bool {
        self.get(key).is_some()
    }

    /// Sets `key`'s value; returns the one it replaced.
    pub fn insert(&mut self, key: Bytes, value: V) -> Option<V> {
        let h = self.hash(&key);
        let hasher = &self.hasher;
        match self.shards[shard(h)].entry(
            h,
            |(k, _)| k[..] == key[..],
            |(k, _)| hasher.hash_one(&k[..]),
        ) {
            Entry::Occupied(mut e) => Some(std::mem::replace(&mut e.get_mut().1, value)),
            Entry::Vacant(e) => {
                e.insert((key, value));
                self.len += 1;
                None
            }
        }
    }

    /// Removes `key`; returns its value.
    pub fn remove(&mut self, key: &[u8]) -> Option<V> {
        let h = self.hash(key);
        let entry = self.shards[shard(h)]
            .find_entry(h, |(k, _)| k[..] == *key)
            .ok()?;
        self.len -= 1;
        Some(entry.remove().0 .1)
    }

    /// `key`'s value, made with `make` if it has none.
    pub fn get_or_insert_with(&mut self, key: &Bytes, make: impl FnOnce() -> V) -> &mut V {
        let h = self.hash(key);
        let hasher = &self.hasher;
        match self.shards[shard(h)].entry(
            h,
            |(k, _)| k[..] == key[..],
            |(k, _)| hasher.hash_one(&k[..]),
        ) {
            Entry::Occupied(e) => &mut e.into_mut().1,
            Entry::Vacant(e) => {
                self.len += 1;
                &mut e.insert((key.clone(), make())).into_mut().1
            }
        }
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&Bytes, &V)> {
        self.shards
            .iter()
            .flat_map(|t| t.iter().map(|(k, v)| (k, v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8, u32),
        Remove(u8),
        Upsert(u8, u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (any::<u8>(), any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
            any::<u8>().prop_map(Op::Remove),
            (any::<u8>(), any::<u32>()).prop_map(|(k, v)| Op::Upsert(k, v)),
        ]
    }

    proptest! {
        /// The sharded map answers exactly as one map does, whatever the operations.
        #[test]
        fn behaves_as_one_map(ops in prop::collection::vec(op(), 0..400)) {
            let mut map = KeyMap::default();
            let mut model: HashMap<Bytes, u32> = HashMap::new();
            for op in ops {
                match op {
                    Op::Insert(k, v) => {
                        let k = Bytes::from(vec![k; 1 + k as usize % 5]);
                        prop_assert_eq!(map.insert(k.clone(), v), model.insert(k, v));
                    }
                    Op::Remove(k) => {
                        let k = vec![k; 1 + k as usize % 5];
                        prop_assert_eq!(map.remove(&k), model.remove(&k[..]));
                    }
                    Op::Upsert(k, v) => {
                        let k = Bytes::from(vec![k; 1 + k as usize % 5]);
                        *map.get_or_insert_with(&k, || 0) += v % 7;
                        *model.entry(k).or_insert(0) += v % 7;
                    }
                }
                prop_assert_eq!(map.len(), model.len());
            }
            for (k, v) in &model {
                prop_assert_eq!(map.get(k), Some(v));
                prop_assert!(map.contains_key(k));
            }
            let mut all: Vec<_> = map.iter().map(|(k, v)| (k.clone(), *v)).collect();
            all.sort();
            let mut want: Vec<_> = model.into_iter().collect();
            want.sort();
            prop_assert_eq!(all, want);
        }
    }
}
