//! [`SimRing`]: chord nodes in the deterministic simulator (feature `sim`), for tests, the hop
//! figures of the bench, and anyone checking a change to the ring.

use std::collections::BTreeSet;

use bytes::Bytes;
use rs2p_mesh::proto::Millis;
use rs2p_mesh::Shared;
use rs2p_testkit::{Faults, Sim};

use crate::proto::{ChordMachine, Completion, Outcome};
use crate::ring::{dist, key_pos};
use crate::{ChordConfig, ChordError};

/// `capacity` simulated nodes, each with a chord socket; a node takes part once it
/// [joins](SimRing::join).
pub struct SimRing {
    /// The simulator underneath (links, faults, time).
    pub sim: Sim,
    machines: Vec<Shared<ChordMachine>>,
    members: BTreeSet<usize>,
    cfg: ChordConfig,
    faults: Faults,
}

impl std::fmt::Debug for SimRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimRing")
            .field("members", &self.members.len())
            .finish_non_exhaustive()
    }
}

impl SimRing {
    /// `capacity` nodes from `seed`, none joined yet; links opened later suffer `faults`.
    pub fn new(seed: u64, capacity: usize, cfg: ChordConfig, faults: Faults) -> Self {
        let mut sim = Sim::new(seed, capacity);
        sim.set_faults(faults);
        let mut machines = Vec::with_capacity(capacity);
        for i in 0..capacity {
            let m = Shared::new(ChordMachine::new(cfg.clone(), sim.keypair(i), [0; 32]));
            let now = sim.node_now(i);
            sim.node_mut(i)
                .register(Box::new(m.clone()), now)
                .expect("a fresh node accepts the chord handler");
            machines.push(m);
        }
        sim.flush();
        Self {
            sim,
            machines,
            members: BTreeSet::new(),
            cfg,
            faults,
        }
    }

    /// A ring of `n` nodes: node 0 alone, then each next node joins through a random member,
    /// `every` ms apart; then `settle` ms for stabilisation.
    pub fn build(
        seed: u64,
        n: usize,
        capacity: usize,
        cfg: ChordConfig,
        faults: Faults,
        every: Millis,
        settle: Millis,
    ) -> Self {
        let mut ring = Self::new(seed, capacity, cfg, faults);
        ring.members.insert(0);
        for i in 1..n {
            let via = ring.random_member(seed.wrapping_add(i as u64));
            ring.join(i, via);
            ring.sim.advance(every);
        }
        ring.sim.advance(settle);
        ring
    }

    fn random_member(&self, salt: u64) -> usize {
        let v: Vec<usize> = self.members.iter().copied().collect();
        v[(salt.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 33) as usize % v.len()]
    }

    /// Node `i` (fresh or restarted) joins through member `via`; returns once it is part of the
    /// ring (or after 10 simulated seconds).
    pub fn join(&mut self, i: usize, via: usize) {
        self.sim.link(i, via, self.faults);
        self.members.insert(i);
        for _ in 0..1000 {
            {
                let m = self.machines[i].lock();
                if m.is_joined() && !m.predecessors().is_empty() {
                    return;
                }
            }
            self.sim.advance(10);
        }
    }

    /// The members (joined or joining, not failed or left).
    pub fn members(&self) -> &BTreeSet<usize> {
        &self.members
    }

    /// Node `i`'s machine.
    pub fn machine(&self, i: usize) -> std::sync::MutexGuard<'_, ChordMachine> {
        self.machines[i].lock()
    }

    /// Node `i` fails: its links drop and it never answers again.
    pub fn fail(&mut self, i: usize) {
        self.sim.kill(i);
        self.members.remove(&i);
    }

    /// Node `i` leaves cleanly (hands its keys over), then stops.
    pub fn leave(&mut self, i: usize) {
        let m = self.machines[i].clone();
        let now = self.sim.node_now(i);
        let _ = self
            .sim
            .node_mut(i)
            .with_handler(crate::PROTOCOL, now, |_, cx| m.lock().leave(cx));
        self.sim.flush();
        self.sim.advance(20);
        self.fail(i);
    }

    /// Runs `start` on node `i` and advances time until its operation completes (at most
    /// `request_timeout × attempts` plus a second).
    pub fn op(
        &mut self,
        i: usize,
        start: impl FnOnce(&mut ChordMachine, &mut rs2p_mesh::Context<'_>) -> Result<u64, ChordError>,
    ) -> Result<Completion, ChordError> {
        let m = self.machines[i].clone();
        let now = self.sim.node_now(i);
        let id = self
            .sim
            .node_mut(i)
            .with_handler(crate::PROTOCOL, now, |_, cx| start(&mut m.lock(), cx))
            .map_err(|e| ChordError::Mesh(e.to_string()))??;
        self.sim.flush();
        let limit =
            crate::config::ms(self.cfg.request_timeout) * u64::from(self.cfg.attempts) + 1000;
        let mut waited = 0;
        loop {
            if let Some(c) = self.take(i, id) {
                return Ok(c);
            }
            if waited > limit {
                return Err(ChordError::Unreachable { attempts: 0 });
            }
            self.sim.advance(1);
            waited += 1;
        }
    }

    fn take(&mut self, i: usize, id: u64) -> Option<Completion> {
        let mut m = self.machines[i].lock();
        let all = m.take_completions();
        let mut found = None;
        for c in all {
            if c.id == id {
                found = Some(c);
            }
        }
        found
    }

    /// Writes `key` from node `i`, retrying after a newer write as the socket does. Returns the
    /// completion of the applied write.
    pub fn put(
        &mut self,
        i: usize,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<Completion, ChordError> {
        let mut after = 0;
        for _ in 0..3 {
            let (k, v) = (
                Bytes::copy_from_slice(key),
                value.map(Bytes::copy_from_slice),
            );
            let c = self.op(i, move |m, cx| m.put(cx, k, v, after))?;
            match &c.result {
                Ok(Outcome::Put {
                    applied: false,
                    newest_ms,
                    ..
                }) => after = *newest_ms,
                Ok(_) => return Ok(c),
                Err(e) => return Err(e.clone()),
            }
        }
        Err(ChordError::Superseded)
    }

    /// Reads `key` from node `i`: the value (None when missing or deleted) and the hops.
    pub fn get(&mut self, i: usize, key: &[u8]) -> Result<(Option<Bytes>, u32), ChordError> {
        let k = Bytes::copy_from_slice(key);
        let c = self.op(i, move |m, cx| m.get(cx, k))?;
        match c.result {
            Ok(Outcome::Got(r)) => Ok((r.filter(|r| !r.tombstone).map(|r| r.value), c.hops)),
            Ok(_) => Err(ChordError::Mesh("unexpected answer".into())),
            Err(e) => Err(e),
        }
    }

    /// The members sorted by ring position.
    fn ring_order(&self) -> Vec<usize> {
        let mut v: Vec<usize> = self.members.iter().copied().collect();
        v.sort_by_key(|&i| self.machines[i].lock().node().pos);
        v
    }

    /// Checks that every member is joined and its first successor and predecessor are the true
    /// ones; the first mismatch is described.
    pub fn check_ring(&self) -> Result<(), String> {
        let order = self.ring_order();
        let n = order.len();
        for (k, &i) in order.iter().enumerate() {
            let m = self.machines[i].lock();
            if !m.is_joined() {
                return Err(format!("node {i} is not joined"));
            }
            if n == 1 {
                continue;
            }
            let want_s = self.sim.id(order[(k + 1) % n]);
            let want_p = self.sim.id(order[(k + n - 1) % n]);
            if m.successors().first().map(|s| s.peer) != Some(want_s) {
                return Err(format!("node {i}: wrong successor"));
            }
            if m.predecessors().first().map(|p| p.peer) != Some(want_p) {
                return Err(format!("node {i}: wrong predecessor"));
            }
        }
        Ok(())
    }

    /// The members that should hold `key`: its owner and the next `replicas − 1`.
    pub fn replica_set(&self, key: &[u8]) -> Vec<usize> {
        let order = self.ring_order();
        let Some(owner) = self.owner_of(key_pos(key)) else {
            return vec![];
        };
        let first = order.iter().position(|&i| i == owner).unwrap_or(0);
        (0..self.cfg.replicas.min(order.len()))
            .map(|d| order[(first + d) % order.len()])
            .collect()
    }

    /// How many members hold a record of `key` (any version).
    pub fn copies(&self, key: &[u8]) -> usize {
        self.members
            .iter()
            .filter(|&&i| self.machines[i].lock().store().get(key).is_some())
            .count()
    }

    /// Whether every node of `key`'s replica set holds the same record as its owner.
    pub fn fully_replicated(&self, key: &[u8]) -> bool {
        let set = self.replica_set(key);
        let leaf = |i: usize| self.machines[i].lock().store().get(key).map(|s| *s.leaf());
        let Some(&owner) = set.first() else {
            return false;
        };
        let want = leaf(owner);
        want.is_some() && set.iter().all(|&i| leaf(i) == want)
    }

    /// The member closest after `pos`, for tests that reason about owners.
    pub fn owner_of(&self, pos: u64) -> Option<usize> {
        self.members
            .iter()
            .copied()
            .min_by_key(|&i| dist(pos, self.machines[i].lock().node().pos))
    }
}

/// Fuzz entry (target `chord_messages` in `fuzz/`): `data`, cut into chunks each prefixed by
/// its length byte, whispered under the chord protocol by node 1 to node 0 of a small settled
/// ring holding a key. Every decoder and handler a remote chord peer reaches runs; none may panic
/// or loop.
pub fn fuzz_messages(data: &[u8]) {
    let mut ring = SimRing::build(3, 3, 3, ChordConfig::default(), Faults::NONE, 20, 3_000);
    let _ = ring.put(0, b"k", Some(b"v"));
    let target = ring.sim.id(0);
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let (chunk, next) = tail.split_at(usize::from(len).min(tail.len()));
        rest = next;
        let now = ring.sim.node_now(1);
        let payload = Bytes::copy_from_slice(chunk);
        let _ = ring
            .sim
            .node_mut(1)
            .whisper(target, crate::PROTOCOL, payload, now);
        ring.sim.flush();
        ring.sim.advance(5);
    }
    ring.sim.advance(2_000);
}
