//! Sync nodes in the deterministic simulator, and one randomised run of them (writes, loss,
//! duplication, reordering, partitions, crashes, clock skew) that checks convergence: shared by
//! `tests/sim_sync.rs` and `cargo xtask soak`.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rs2p_mesh::{Handler, Shared};
use rs2p_sync::proto::record::Stored;
use rs2p_sync::proto::resolve;
use rs2p_sync::{SyncConfig, SyncMachine, PROTOCOL};
use rs2p_testkit::{Faults, Sim};

/// Sync nodes in the simulator, with their machines.
pub struct World {
    /// The simulator.
    pub sim: Sim,
    /// Each node's sync machine.
    pub machines: Vec<Shared<SyncMachine>>,
    cfg: SyncConfig,
    /// The network id the records are signed for.
    pub network: [u8; 32],
    /// Each node's simulated data directory, when the world persists (see [`World::flush`]).
    pub disks: Option<Vec<SimDisk>>,
}

/// One key's entry on a simulated disk: cutoff, checkpoint holder, records.
pub type DiskEntry = (u64, Option<Stored>, Vec<Stored>);

/// What a node's data directory holds in the simulation: per key its checkpoint and records,
/// and the store-wide cutoff, as `rs2p-sync`'s driver writes them from `take_dirty`.
#[derive(Default, Clone)]
pub struct SimDisk {
    /// Per key: cutoff, checkpoint holder, records.
    pub keys: HashMap<Bytes, DiskEntry>,
    /// The store-wide cutoff.
    pub cutoff: u64,
}

impl SimDisk {
    /// Whether the disk holds the record of `owner` at `version` for `key`.
    pub fn holds(&self, key: &[u8], owner: rs2p_base::PeerId, version: u64) -> bool {
        self.keys.get(key).is_some_and(|(_, b, rs)| {
            b.iter()
                .chain(rs)
                .any(|s| *s.owner() == owner && s.version() == version)
        })
    }
}

impl World {
    /// `n` sync nodes (no links yet), leases of 20 s, repair every 2 s.
    pub fn new(seed: u64, n: usize, leasing: bool) -> World {
        Self::with_grace(seed, n, leasing, std::time::Duration::from_secs(600))
    }

    /// [`World::new`] with a finality grace.
    pub fn with_grace(seed: u64, n: usize, leasing: bool, grace: std::time::Duration) -> World {
        Self::build(seed, n, leasing, grace, None)
    }

    /// [`World::new`] on a mesh whose frames hold at most `max_frame_len` bytes (the sync
    /// machines fitted to it, as a socket's bind fits them).
    pub fn with_frames(seed: u64, n: usize, leasing: bool, max_frame_len: usize) -> World {
        let grace = std::time::Duration::from_secs(600);
        Self::build(seed, n, leasing, grace, Some(max_frame_len))
    }

    fn build(
        seed: u64,
        n: usize,
        leasing: bool,
        grace: std::time::Duration,
        max_frame_len: Option<usize>,
    ) -> World {
        let mut cfg = SyncConfig::default();
        cfg.leasing = leasing;
        cfg.finality_grace = grace;
        cfg.lease = std::time::Duration::from_secs(20); // short, so leases expire within a run
        cfg.repair_interval = std::time::Duration::from_secs(2);
        if let Some(max) = max_frame_len {
            // Values a quarter of a frame at most, so that any write fits one.
            cfg.max_value_len = max / 4;
        }
        let mut sim = match max_frame_len {
            Some(max) => {
                let mut mesh = rs2p_mesh::MeshConfig::default();
                mesh.max_frame_len = max;
                Sim::with_config(seed, n, mesh)
            }
            None => Sim::new(seed, n),
        };
        let network = *rs2p_base::Network::named("sim").id();
        let mut machines = Vec::new();
        for i in 0..n {
            let mut machine = SyncMachine::new(cfg.clone(), sim.keypair(i), network);
            if let Some(max) = max_frame_len {
                machine.fit_frames(max).expect("the frames hold a write");
            }
            let m = Shared::new(machine);
            let now = sim.node_now(i);
            sim.node_mut(i)
                .register(Box::new(m.clone()), now)
                .expect("register");
            machines.push(m);
        }
        World {
            sim,
            machines,
            cfg,
            network,
            disks: None,
        }
    }

    /// From now on each node keeps a simulated data directory: [`World::flush`] commits what
    /// changed, and [`World::restart`] restores from it.
    pub fn persist(&mut self) {
        for m in &self.machines {
            m.lock().restore(std::iter::empty(), 0);
        }
        self.disks = Some(vec![SimDisk::default(); self.machines.len()]);
    }

    /// Commits node `i`'s changes to its data directory (one group commit).
    pub fn flush(&mut self, i: usize) {
        let Some(disks) = &mut self.disks else { return };
        let mut m = self.machines[i].lock();
        let (keys, cutoff) = m.take_dirty();
        let disk = &mut disks[i];
        for k in keys {
            match m.store().key(&k) {
                Some(st) => {
                    let (c, b) = m.store().checkpoint(st);
                    disk.keys.insert(k, (c, b.cloned(), st.records().to_vec()));
                }
                None => {
                    disk.keys.remove(&k);
                }
            }
        }
        if let Some(c) = cutoff {
            disk.cutoff = c;
        }
    }

    /// A local write on node `i`; returns whether it was acknowledged.
    pub fn write(&mut self, i: usize, key: &str, value: Option<&str>) -> bool {
        let m = self.machines[i].clone();
        let now = self.sim.node_now(i);
        let (k, v) = (
            Bytes::copy_from_slice(key.as_bytes()),
            value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
        );
        let ok = self
            .sim
            .node_mut(i)
            .with_handler(PROTOCOL, now, move |_, cx| {
                let mut m = m.lock();
                match v {
                    Some(v) => m.set(cx, k, v).is_ok(),
                    None => m.del(cx, k).is_ok(),
                }
            })
            .expect("the sync handler");
        self.sim.flush();
        ok
    }

    /// Independent writes on node `i` ([`SyncMachine::write_each`]), each with its result.
    pub fn write_each(
        &mut self,
        i: usize,
        items: Vec<(Bytes, Option<Bytes>)>,
    ) -> Vec<Result<(), rs2p_sync::SetError>> {
        let m = self.machines[i].clone();
        let now = self.sim.node_now(i);
        let results = self
            .sim
            .node_mut(i)
            .with_handler(PROTOCOL, now, move |_, cx| m.lock().write_each(cx, items))
            .expect("the sync handler");
        self.sim.flush();
        results
    }

    /// Crashes node `i` and starts it again: with what its data directory holds if the world
    /// persists (changes not yet flushed are lost), empty otherwise.
    pub fn restart(&mut self, i: usize) {
        let m = Shared::new(SyncMachine::new(
            self.cfg.clone(),
            self.sim.keypair(i),
            self.network,
        ));
        if let Some(disks) = &self.disks {
            let d = &disks[i];
            m.lock().restore(
                d.keys
                    .iter()
                    .map(|(k, (c, b, rs))| (k.clone(), *c, b.clone(), rs.clone())),
                d.cutoff,
            );
        }
        self.machines[i] = m.clone();
        let boxed: Box<dyn Handler> = Box::new(m);
        self.sim.restart(i, vec![boxed]);
    }

    /// What node `i` shows.
    pub fn dictionary(&self, i: usize) -> BTreeMap<Bytes, Bytes> {
        self.machines[i]
            .lock()
            .store()
            .iter()
            .map(|(_, r)| r.key_value_bytes())
            .collect()
    }
}

/// What one run did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    /// Nodes.
    pub nodes: usize,
    /// Writes attempted, and acknowledged.
    pub writes: u64,
    /// Acknowledged writes.
    pub acked: u64,
    /// Crashes and restarts.
    pub kills: u64,
    /// Of those, restarts from a (simulated) data directory.
    pub restored: u64,
    /// Acknowledged writes checked at the end (still held somewhere when their nodes crashed).
    pub verified: u64,
    /// Partitions made.
    pub partitions: u64,
    /// Records sent by anti-entropy repair, over all nodes.
    pub repaired: u64,
    /// Frames the links lost.
    pub frames_lost: u64,
}

/// One run; panics (naming the seed) if replicas diverge, a node shows something other than the
/// fold of its records, an honest record was refused, or an acknowledged write went missing.
/// With `prune`, the finality grace is 30 s (horizon 70 s, so records are pruned during
/// the run) and partitions last at most 15 s, within the guarantee.
pub fn run(seed: u64, prune: bool) -> Counts {
    let mut counts = Counts::default();
    let mut r = rand_chacha::ChaCha12Rng::seed_from_u64(seed);
    let n = r.gen_range(3..=7);
    let leasing = prune || r.gen_bool(0.7);
    let grace = std::time::Duration::from_secs(if prune { 30 } else { 600 });
    let mut w = World::with_grace(seed, n, leasing, grace);
    // 0: in memory; 1: group commit (each node flushes at some steps); 2: durable (a write is
    // flushed before it is acknowledged, others' records at some steps).
    let persistence = r.gen_range(0..3u8);
    if persistence > 0 {
        w.persist();
    }
    counts.nodes = n;
    let mut partitioned_at: Option<u64> = None;
    for i in 0..n {
        w.sim.set_skew(i, r.gen_range(-3000..=3000));
    }
    let faults = Faults {
        loss: r.gen_range(0.0..0.2),
        duplicate: r.gen_range(0.0..0.2),
        max_delay_ms: r.gen_range(1..40),
    };
    for i in 1..n {
        w.sim.link(r.gen_range(0..i), i, faults);
    }
    for _ in 0..n {
        let (a, b) = (r.gen_range(0..n), r.gen_range(0..n));
        if a != b {
            w.sim.link(a, b, faults);
        }
    }
    let keys = ["a", "b", "c", "d", "测试"];
    // (owner index, key, value) of acknowledged writes, and which were replicated before a crash.
    let mut acked: Vec<(usize, String, u64, u64)> = Vec::new();
    for step in 0..60 {
        let i = r.gen_range(0..n);
        let key = keys[r.gen_range(0..keys.len())];
        let value = if r.gen_bool(0.8) {
            Some(format!("{seed}-{step}-{i}"))
        } else {
            None
        };
        let at = w.sim.node_now(i);
        counts.writes += 1;
        if w.write(i, key, value.as_deref()) {
            if persistence == 2 {
                w.flush(i);
            }
            counts.acked += 1;
            // The record just written: node i's latest for this key (versions are unique per
            // owner). Without leasing it may already be superseded by a later-stamped write (a
            // peer's clock ahead), and then it is not kept: nothing to track.
            let id = w.sim.id(i);
            let version = w.machines[i]
                .lock()
                .store()
                .key(key.as_bytes())
                .and_then(|st| {
                    st.records()
                        .iter()
                        .filter(|s| *s.owner() == id)
                        .map(|s| s.version())
                        .max()
                });
            if let Some(version) = version {
                acked.push((i, key.to_string(), version, at));
            }
        }
        w.sim.advance(r.gen_range(0..3000));
        if persistence > 0 {
            for j in 0..n {
                if r.gen_bool(0.6) {
                    w.flush(j);
                }
            }
        }
        if prune && partitioned_at.is_some_and(|t| w.sim.now() > t + 15_000) {
            w.sim.heal();
            partitioned_at = None;
        }
        match r.gen_range(0..20) {
            0 => {
                let side: Vec<usize> = (0..n).filter(|_| r.gen_bool(0.5)).collect();
                w.sim.partition(&side);
                counts.partitions += 1;
                partitioned_at.get_or_insert(w.sim.now());
            }
            1 => {
                w.sim.heal();
                partitioned_at = None;
            }
            2 => {
                let victim = r.gen_range(0..n);
                // A write survives a crash if some other node holds its record, or the victim's
                // data directory does; one that lived only in a crashed node's memory is gone
                // (the documented bound: in memory, or in the last commit window).
                let ids: Vec<_> = (0..n).map(|j| w.sim.id(j)).collect();
                let disk = w.disks.as_ref().map(|d| d[victim].clone());
                acked.retain(|(o, k, version, _)| {
                    disk.as_ref()
                        .is_some_and(|d| d.holds(k.as_bytes(), ids[*o], *version))
                        || (0..n).any(|j| {
                            j != victim
                                && w.machines[j].lock().store().key(k.as_bytes()).is_some_and(
                                    |st| {
                                        st.records().iter().chain(st.base()).any(|s| {
                                            *s.owner() == ids[*o] && s.version() == *version
                                        })
                                    },
                                )
                        })
                });
                w.restart(victim);
                counts.kills += 1;
                counts.restored += u64::from(persistence > 0);
            }
            _ => {}
        }
    }
    // Heal everything, stop the faults, give repair time: each node compares with its peers in
    // turn, one every 5 s (plus up to 25% jitter), and has at most 6, so 45 s compares every link
    // at least once. (When the peer was picked at random, 30 s left a link that alone joined
    // two groups uncompared about 1% of the time: seed 1145228626.)
    w.sim.heal();
    w.sim.set_faults(Faults::NONE);
    for i in 1..n {
        w.sim.link(i - 1, i, Faults::NONE);
    }
    w.sim.advance(45_000);
    w.sim.run_until_idle();

    let reference = w.dictionary(0);
    for i in 1..n {
        assert_eq!(w.dictionary(i), reference, "seed {seed}: node {i} differs from node 0 (n={n}, leasing={leasing}, faults {faults:?})");
    }
    for i in 0..n {
        let m = w.machines[i].lock();
        for (_, st) in m.store().states() {
            // The shown record is the fold of the records kept on top of the checkpoint: no lease
            // broken (the fold's rules are property-tested in rs2p-sync).
            let records: Vec<_> = st.records().iter().map(|s| s.record()).collect();
            let base = st.base().map(|b| b.record());
            let holder = match resolve::fold_from(base.as_ref(), records.iter(), leasing) {
                resolve::Folded::Empty => None,
                resolve::Folded::Initial => base.as_ref(),
                resolve::Folded::At(j) => Some(&records[j]),
            };
            assert_eq!(
                holder.cloned(),
                st.visible().map(|v| v.record()),
                "seed {seed}: node {i} shows what the fold says"
            );
        }
        assert_eq!(
            m.stats().refused.values().sum::<u64>(),
            0,
            "seed {seed}: honest records are never refused"
        );
    }
    // Every acknowledged write survives as a record (leasing), was superseded (no leasing), or
    // became final and was folded into its key's checkpoint (pruning: issued before the cutoff).
    // A key's checkpoint may come from any node, so "before the cutoff" is before the latest
    // cutoff any node pruned to (a node whose clock runs ahead prunes further); a key whose
    // checkpoint is empty and has no later records is forgotten.
    let latest_cutoff = (0..n)
        .map(|i| w.machines[i].lock().store().cutoff())
        .max()
        .unwrap_or(0);
    let m = w.machines[0].lock();
    if prune {
        assert!(m.store().cutoff() > 0, "seed {seed}: the run pruned");
    }
    counts.verified = acked.len() as u64;
    for (owner, key, version, issued_at) in &acked {
        let Some(st) = m.store().key(key.as_bytes()) else {
            assert!(
                *issued_at < latest_cutoff,
                "seed {seed}: key {key} vanished (latest cutoff {latest_cutoff})"
            );
            continue;
        };
        // Final once before the node's cutoff, or its key's (merged from a peer's checkpoint).
        let finalized = *issued_at < m.store().checkpoint(st).0;
        let owner_id = w.sim.id(*owner);
        let present = st
            .records()
            .iter()
            .chain(st.base())
            .any(|s| *s.owner() == owner_id && s.version() == *version);
        assert!(
            present || !leasing || finalized,
            "seed {seed}: acknowledged write {key} (version {version}) by node {owner} at {issued_at} is missing (cutoff {})",
            m.store().cutoff()
        );
    }
    drop(m);
    counts.repaired = (0..n)
        .map(|i| w.machines[i].lock().stats().records_sent_repair)
        .sum();
    counts.frames_lost = w.sim.counts.lost;
    counts
}
