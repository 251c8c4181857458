//! Message ids recently seen, bounded by count and age.

use std::collections::{HashMap, VecDeque};

use super::Millis;

/// A flood's id: the first 16 bytes of a hash of its signed body.
pub type MsgId = u128;

/// Remembers message ids for `ttl` milliseconds, at most `capacity` of them (the oldest go first).
#[derive(Debug)]
pub struct SeenCache {
    map: HashMap<MsgId, Millis>,
    order: VecDeque<(MsgId, Millis)>,
    capacity: usize,
    ttl: Millis,
}

impl SeenCache {
    /// An empty cache.
    pub fn new(capacity: usize, ttl: Millis) -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
            ttl,
        }
    }

    /// Whether `id` was inserted within the last `ttl`.
    pub fn contains(&self, id: MsgId, now: Millis) -> bool {
        self.map
            .get(&id)
            .is_some_and(|&t| t.saturating_add(self.ttl) > now)
    }

    /// Remembers `id` as seen at `now`; returns false if it was already there.
    pub fn insert(&mut self, id: MsgId, now: Millis) -> bool {
        self.expire(now);
        if self.contains(id, now) {
            return false;
        }
        while self.map.len() >= self.capacity {
            self.pop_oldest();
        }
        self.map.insert(id, now);
        self.order.push_back((id, now));
        true
    }

    /// How many ids are remembered.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn expire(&mut self, now: Millis) {
        while let Some(&(_, t)) = self.order.front() {
            if t.saturating_add(self.ttl) > now {
                break;
            }
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        if let Some((id, t)) = self.order.pop_front() {
            // Only remove the map entry if it is this insertion (not a later re-insertion).
            if self.map.get(&id) == Some(&t) {
                self.map.remove(&id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ids_expire_and_capacity_is_bounded() {
        let mut c = SeenCache::new(2, 100);
        assert!(c.insert(1, 0));
        assert!(!c.insert(1, 50));
        assert!(c.insert(2, 60));
        assert!(c.insert(3, 70));
        assert_eq!(c.len(), 2);
        assert!(!c.contains(1, 70), "evicted by capacity");
        assert!(!c.contains(2, 160), "expired");
        assert!(c.insert(2, 160));
    }

    proptest! {
        #[test]
        fn never_exceeds_capacity_and_remembers_recent_ids(
            ops in proptest::collection::vec((0u128..50, 0u64..10), 1..300),
            cap in 1usize..20,
        ) {
            let mut c = SeenCache::new(cap, 1000);
            let mut now = 0;
            for (id, dt) in ops {
                now += dt;
                c.insert(id, now);
                prop_assert!(c.len() <= cap);
                prop_assert!(c.contains(id, now));
                prop_assert_eq!(c.map.len(), c.map.values().count());
                prop_assert!(c.order.len() >= c.map.len());
            }
        }
    }
}
