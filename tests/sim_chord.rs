//! Seeded simulations of the chord ring (rs2p-chord's `SimRing`): joins, failures, clean leaves,
//! message loss and delay, churn, and hostile messages. Each test names its seed; the same seed
//! replays the same run (checked by `same_seed_same_run`).

use bytes::Bytes;
use prost::Message;
use rs2p_base::wire::pb::{self, chord_message::Kind, chord_route};
use rs2p_chord::ring::key_pos;
use rs2p_chord::sim::SimRing;
use rs2p_chord::{ChordConfig, Outcome, PROTOCOL};
use rs2p_testkit::Faults;

fn cfg() -> ChordConfig {
    let mut cfg = ChordConfig::default();
    cfg.stabilize = std::time::Duration::from_millis(500);
    cfg
}

fn ring(seed: u64, n: usize, faults: Faults) -> SimRing {
    let r = SimRing::build(seed, n, n + 8, cfg(), faults, 50, 15_000);
    r.check_ring()
        .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    r
}

fn key(i: usize) -> Vec<u8> {
    format!("key-{i}").into_bytes()
}

/// A small xorshift for choices the tests make (the simulation has its own seeded RNG).
struct Pick(u64);
impl Pick {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

#[test]
fn lookups_take_logarithmic_hops() {
    // Figures to reach: mean ≤ ½·log2 N + 0.5 and max ≤ log2 N (N = 1024 runs in the bench).
    for (seed, n) in [(11, 16usize), (12, 64), (13, 256)] {
        let mut r = ring(seed, n, Faults::NONE);
        let mut pick = Pick(seed);
        let mut hops = Vec::new();
        for k in 0..400 {
            let (v, h) = r.get(pick.below(n), &key(k)).expect("a get answers");
            assert_eq!(v, None, "seed {seed}: nothing was written");
            hops.push(h);
        }
        let mean = hops.iter().sum::<u32>() as f64 / hops.len() as f64;
        let max = *hops.iter().max().expect("some hops");
        let log = (n as f64).log2();
        println!(
            "N = {n}: mean hops {mean:.2} (bound {:.2}), max {max} (bound {log})",
            log / 2.0 + 0.5
        );
        assert!(mean <= log / 2.0 + 0.5, "seed {seed}, N = {n}: mean {mean}");
        assert!(f64::from(max) <= log, "seed {seed}, N = {n}: max {max}");
    }
}

#[test]
fn every_key_is_found_and_kept_on_r_replicas_despite_loss_and_delay() {
    let faults = Faults {
        loss: 0.02,
        duplicate: 0.02,
        max_delay_ms: 8,
    };
    for seed in 21..24 {
        lossy_run(seed, faults);
    }
}

fn lossy_run(seed: u64, faults: Faults) {
    let n = 24;
    let mut r = SimRing::build(seed, n, n, cfg(), faults, 100, 20_000);
    let mut pick = Pick(seed);
    for k in 0..200 {
        let v = format!("v{k}");
        r.put(pick.below(n), &key(k), Some(v.as_bytes()))
            .unwrap_or_else(|e| panic!("seed {seed}: put {k}: {e}"));
    }
    for k in 0..200 {
        let reader = pick.below(n);
        let (v, _) = r.get(reader, &key(k)).unwrap_or_else(|e| {
            for i in 0..n {
                println!("{i}: {:?}", r.machine(i).stats());
            }
            panic!("seed {seed}: get {k} from {reader}: {e}")
        });
        assert_eq!(
            v.as_deref(),
            Some(format!("v{k}").as_bytes()),
            "seed {seed}, key {k}"
        );
    }
    r.sim.advance(5_000);
    r.check_ring().expect("the ring is whole");
    for k in 0..200 {
        if !r.fully_replicated(&key(k)) {
            for i in r.replica_set(&key(k)) {
                let m = r.machine(i);
                println!(
                    "{i}: pos {} has {:?} preds {:?} succs {:?} stats {:?}",
                    m.node().pos,
                    m.store().get(&key(k)).map(|s| s.issued_at()),
                    m.predecessors().iter().map(|p| p.pos).collect::<Vec<_>>(),
                    m.successors().iter().map(|p| p.pos).collect::<Vec<_>>(),
                    m.stats()
                );
            }
        }
        assert!(
            r.fully_replicated(&key(k)),
            "seed {seed}: key {k} lacks replicas"
        );
    }
    // Deletes and overwrites reach the replicas too.
    r.put(0, &key(0), None).expect("del");
    r.put(1, &key(1), Some(b"new")).expect("set");
    assert_eq!(r.get(2, &key(0)).expect("get").0, None);
    assert_eq!(
        r.get(3, &key(1)).expect("get").0.as_deref(),
        Some(&b"new"[..])
    );
}

#[test]
fn a_failed_nodes_keys_are_copied_back_to_r_nodes_within_two_periods() {
    failure_repair(31, cfg());
}

#[test]
fn repair_compares_large_arcs_in_bounded_sub_arcs() {
    // Sub-arcs of 4 records: each owner's arc (≈ 15 of the 300 keys on 20 nodes) is
    // compared in several digests, and repair still restores every copy.
    let mut c = cfg();
    c.digest_span = 4;
    failure_repair(32, c);
}

fn failure_repair(seed: u64, cfg: ChordConfig) {
    let n = 20;
    let mut r = SimRing::build(seed, n, n + 8, cfg, Faults::NONE, 50, 15_000);
    r.check_ring()
        .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    for k in 0..300 {
        r.put(k % n, &key(k), Some(b"v")).expect("put");
    }
    r.sim.advance(2_000);
    let victim = r.owner_of(key_pos(&key(0))).expect("an owner");
    let held: Vec<usize> = (0..300)
        .filter(|&k| r.machine(victim).store().get(&key(k)).is_some())
        .collect();
    assert!(!held.is_empty());
    r.fail(victim);
    // Two stabilisation periods.
    r.sim.advance(1_000);
    for &k in &held {
        assert!(
            r.copies(&key(k)) >= 3,
            "seed {seed}: key {k} has {} copies",
            r.copies(&key(k))
        );
        assert!(r.fully_replicated(&key(k)), "seed {seed}: key {k}");
    }
    let members: Vec<usize> = r.members().iter().copied().collect();
    for k in 0..300 {
        let reader = members[k % members.len()];
        assert_eq!(
            r.get(reader, &key(k)).expect("get").0.as_deref(),
            Some(&b"v"[..])
        );
    }
}

#[test]
fn a_leaving_node_hands_its_keys_over() {
    let seed = 41;
    let n = 12;
    let mut r = ring(seed, n, Faults::NONE);
    for k in 0..100 {
        r.put(k % n, &key(k), Some(b"v")).expect("put");
    }
    let leaver = r.owner_of(key_pos(&key(7))).expect("an owner");
    r.leave(leaver);
    r.sim.advance(1_000);
    r.check_ring().expect("the ring closes over the gap");
    for k in 0..100 {
        let reader = *r.members().iter().next().expect("members");
        assert_eq!(
            r.get(reader, &key(k)).expect("get").0.as_deref(),
            Some(&b"v"[..])
        );
        assert!(r.fully_replicated(&key(k)), "key {k}");
    }
}

#[test]
fn under_churn_a_get_after_a_put_succeeds_and_no_key_loses_its_last_copy() {
    // N = 64, one node failing and one joining per simulated minute, stabilisation every 500 ms.
    let minutes: usize = std::env::var("RS2P_CHURN_MINUTES")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(6);
    let seed = 51;
    let n = 64;
    let mut r = SimRing::build(seed, n, n + minutes, cfg(), Faults::NONE, 50, 15_000);
    let mut pick = Pick(seed);
    let mut keys: Vec<Vec<u8>> = Vec::new();
    let (mut ok, mut failed, mut zero_copies) = (0u64, 0u64, 0u64);
    for minute in 0..minutes {
        let members: Vec<usize> = r.members().iter().copied().collect();
        r.fail(members[pick.below(members.len())]);
        zero_copies += keys.iter().filter(|k| r.copies(k) == 0).count() as u64;
        let members: Vec<usize> = r.members().iter().copied().collect();
        r.join(n + minute, members[pick.below(members.len())]);
        let start = r.sim.now();
        while r.sim.now() < start + 60_000 {
            let members: Vec<usize> = r.members().iter().copied().collect();
            let k = key(keys.len());
            if r.put(members[pick.below(members.len())], &k, Some(b"v"))
                .is_ok()
            {
                match r.get(members[pick.below(members.len())], &k) {
                    Ok((Some(_), _)) => ok += 1,
                    _ => failed += 1,
                }
                keys.push(k);
            } else {
                failed += 1;
            }
            r.sim.advance(50);
        }
    }
    zero_copies += keys.iter().filter(|k| r.copies(k) == 0).count() as u64;
    let rate = ok as f64 / (ok + failed) as f64;
    println!(
        "churn, seed {seed}: {ok} of {} get-after-put succeeded ({:.4}%), keys with zero copies: {zero_copies}",
        ok + failed,
        rate * 100.0
    );
    assert!(ok + failed >= 1_000 * minutes as u64);
    assert!(rate >= 0.9999, "seed {seed}: {failed} failures");
    assert_eq!(zero_copies, 0, "seed {seed}");
    r.sim.advance(2_000);
    r.check_ring().expect("the ring is whole after churn");
}

#[test]
fn same_seed_same_run() {
    let run = |seed| {
        let mut r = SimRing::build(
            seed,
            10,
            10,
            cfg(),
            Faults {
                loss: 0.01,
                duplicate: 0.01,
                max_delay_ms: 5,
            },
            100,
            5_000,
        );
        for k in 0..20 {
            let _ = r.put(k % 10, &key(k), Some(b"v"));
        }
        r.sim.trace_hash()
    };
    assert_eq!(run(61), run(61));
    assert_ne!(run(61), run(62));
}

fn whisper(r: &mut SimRing, from: usize, to: usize, kind: Kind) {
    let peer = r.sim.id(to);
    let now = r.sim.node_now(from);
    let payload = Bytes::from(pb::ChordMessage { kind: Some(kind) }.encode_to_vec());
    r.sim
        .node_mut(from)
        .whisper(peer, PROTOCOL, payload, now)
        .expect("connected");
    r.sim.flush();
    r.sim.advance(50);
}

fn connected_pair(r: &SimRing) -> (usize, usize) {
    let members: Vec<usize> = r.members().iter().copied().collect();
    for &a in &members {
        for &b in &members {
            if a != b && r.sim.node(a).mesh().peers().contains(&r.sim.id(b)) {
                return (a, b);
            }
        }
    }
    panic!("no connected pair");
}

#[test]
fn forged_out_of_range_and_looping_messages_are_refused_and_counted() {
    let seed = 71;
    let n = 12;
    let mut r = ring(seed, n, Faults::NONE);
    r.put(0, &key(1), Some(b"v")).expect("put");
    let (a, b) = connected_pair(&r);

    // A record whose signature does not verify, sent straight to a replica and routed as a put.
    let mut batch = rs2p_record::seal(&r.sim.keypair(a), &[9; 32], vec![]).1; // wrong network
    batch.records = vec![Bytes::from_static(b"\x0a\x01k")];
    let before = r.machine(b).stats().clone();
    whisper(
        &mut r,
        a,
        b,
        Kind::Store(pb::ChordStore {
            ack: 0,
            records: vec![batch.clone()],
        }),
    );
    let target = key_pos(b"k");
    let route = pb::ChordRoute {
        id: 1 << 4,
        path: vec![Bytes::copy_from_slice(r.sim.id(a).as_bytes())],
        target,
        op: Some(chord_route::Op::Put(batch)),
    };
    whisper(&mut r, a, b, Kind::Route(route));
    let after = r.machine(b).stats().clone();
    assert!(after.forged > before.forged, "{after:?}");

    // A validly signed record for a key outside every arc b replicates.
    let mut far_key = 0;
    while {
        let set = r.replica_set(&key(1000 + far_key));
        set.contains(&b)
    } {
        far_key += 1;
    }
    let rec = rs2p_record::Record {
        key: Bytes::from(key(1000 + far_key)),
        value: Bytes::from_static(b"x"),
        tombstone: false,
        owner: r.sim.id(a),
        issued_at: r.sim.node_now(a),
        version: 1,
        lease_until: r.sim.node_now(a),
    };
    // Chord records are signed for the chord network id derived from the mesh's.
    let net = rs2p_base::hash256("rs2p/v1/chord-network", &[&[0u8; 32]]);
    let good = rs2p_record::seal(&r.sim.keypair(a), &net, vec![rec]).1;
    let before = r.machine(b).stats().out_of_range;
    whisper(
        &mut r,
        a,
        b,
        Kind::Store(pb::ChordStore {
            ack: 0,
            records: vec![good],
        }),
    );
    assert_eq!(r.machine(b).stats().out_of_range, before + 1);
    assert!(r.machine(b).store().get(&key(1000 + far_key)).is_none());

    // A route that already passed through its receiver.
    let looped = pb::ChordRoute {
        id: 2 << 4,
        path: vec![
            Bytes::copy_from_slice(r.sim.id(b).as_bytes()),
            Bytes::copy_from_slice(r.sim.id(a).as_bytes()),
        ],
        target: 42,
        op: Some(chord_route::Op::Get(Bytes::from_static(b"k"))),
    };
    let before = r.machine(b).stats().clone();
    whisper(&mut r, a, b, Kind::Route(looped));
    let after = r.machine(b).stats().clone();
    // Refused before forwarding: either as a loop or, since 42 is not the key's position, as
    // malformed; never forwarded.
    assert!(after.loops_dropped + after.malformed > before.loops_dropped + before.malformed);
    assert_eq!(after.forwarded, before.forwarded);

    // Garbage.
    let peer = r.sim.id(b);
    let now = r.sim.node_now(a);
    r.sim
        .node_mut(a)
        .whisper(peer, PROTOCOL, Bytes::from_static(b"\xff\xff\xff"), now)
        .expect("connected");
    r.sim.flush();
    r.sim.advance(50);
    assert!(r.machine(b).stats().malformed > after.malformed);

    // The ring still works.
    r.sim.advance(2_000);
    assert_eq!(
        r.get(b, &key(1)).expect("get").0.as_deref(),
        Some(&b"v"[..])
    );
    let _ = Outcome::Found;
}

#[test]
fn a_lookup_that_cannot_complete_fails_with_a_typed_error_in_bounded_time() {
    let seed = 81;
    let n = 6;
    let mut r = ring(seed, n, Faults::NONE);
    // Node n starts joining through node 0, which then fails: n is between rings, with nobody
    // to route through.
    r.sim.link(n, 0, Faults::NONE);
    r.sim.advance(3);
    assert!(!r.machine(n).is_joined(), "joining");
    r.fail(0);
    let start = r.sim.now();
    let got = r.get(n, b"k");
    let took = r.sim.now() - start;
    assert!(
        matches!(
            got,
            Err(rs2p_chord::ChordError::Unreachable { attempts: 3 })
        ),
        "{got:?}"
    );
    // Virtual time of the deterministic simulation, not a wall-clock measurement: the bound is
    // request_timeout × attempts (plus the 100 ms tick that notices).
    assert!(took <= 3 * 1000 + 200, "took {took} ms");
}

#[test]
fn two_lone_nodes_and_then_a_third_form_a_correct_ring_at_once() {
    for seed in 90..96 {
        // No settling time: the join itself must leave both sides with a successor and a
        // predecessor (a ring of two), and the third join must find the true successor.
        let mut r = SimRing::build(seed, 2, 3, cfg(), Faults::NONE, 20, 0);
        r.check_ring()
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        r.join(2, 0);
        r.sim.advance(20);
        r.check_ring()
            .unwrap_or_else(|e| panic!("seed {seed}, three nodes: {e}"));
    }
}

#[test]
fn two_rings_formed_during_a_partition_merge_after_it_heals() {
    let seed = 101;
    let n = 12;
    let mut r = ring(seed, n, Faults::NONE);
    let side: Vec<usize> = (0..n / 2).collect();
    r.sim.partition(&side);
    r.sim.advance(5_000);
    // Each side closed into a ring of its own.
    for i in 0..n {
        let mine = side.contains(&i);
        let m = r.machine(i);
        assert!(
            !m.successors().is_empty(),
            "seed {seed}: node {i} has a successor"
        );
        for s in m.successors() {
            let j = (0..n).find(|&j| r.sim.id(j) == s.peer).expect("a node");
            assert_eq!(
                side.contains(&j),
                mine,
                "seed {seed}: node {i}'s successors are on its side"
            );
        }
    }
    // Writes on both sides while apart.
    for k in 0..20 {
        let writer = if k % 2 == 0 { 0 } else { n - 1 };
        r.put(writer, &key(k), Some(b"apart"))
            .expect("put while partitioned");
    }
    r.sim.heal();
    r.sim.advance(20_000);
    r.check_ring()
        .unwrap_or_else(|e| panic!("seed {seed}: after healing: {e}"));
    r.sim.advance(5_000);
    for k in 0..20 {
        assert_eq!(
            r.get(3, &key(k)).expect("get").0.as_deref(),
            Some(&b"apart"[..]),
            "seed {seed}: key {k} written while partitioned"
        );
    }
}

/// Whether `frame` carries a chord `JoinAck`.
fn is_join_ack(frame: &[u8]) -> bool {
    let Ok(pb::MeshFrame {
        kind: Some(pb::mesh_frame::Kind::Direct(d)),
    }) = pb::MeshFrame::decode(frame)
    else {
        return false;
    };
    matches!(
        pb::ChordMessage::decode(d.payload),
        Ok(pb::ChordMessage {
            kind: Some(Kind::JoinAck(_))
        })
    )
}

/// A newcomer whose join acknowledgement is lost still joins. Its successor already counts it as
/// its predecessor, so a fresh lookup of the newcomer's position finds no owner; the newcomer
/// asks the successor it found again.
#[test]
fn a_newcomer_whose_join_ack_is_lost_still_joins() {
    let mut r = SimRing::build(7, 4, 5, cfg(), Faults::NONE, 100, 5_000);
    r.check_ring().expect("the first four form a ring");
    let mut dropped = false;
    r.sim.drop_frames_where(move |_, to, frame| {
        if dropped || to != 4 {
            return false;
        }
        dropped = is_join_ack(frame);
        dropped
    });
    r.join(4, 0);
    r.sim.advance(5_000);
    assert!(r.machine(4).is_joined(), "node 4 never joined");
    r.check_ring().expect("a ring of five");
    assert!(
        r.sim.counts.lost >= 1,
        "the join acknowledgement was dropped"
    );
}

/// A newcomer whose join acknowledgement is lost more often than it asks its successor again
/// still joins: the successor's hellos name the newcomer as its predecessor, and the newcomer
/// asks it once more. (Before, it started over with lookups of its own position, which no node
/// owned any more: it never joined, and no lookup of a key in its arc ever completed.)
#[test]
fn a_newcomer_whose_join_acks_are_all_lost_for_a_while_still_joins() {
    let mut r = SimRing::build(7, 4, 5, cfg(), Faults::NONE, 100, 5_000);
    r.check_ring().expect("the first four form a ring");
    let mut dropped = 0;
    r.sim.drop_frames_where(move |_, to, frame| {
        if dropped >= 4 || to != 4 {
            return false;
        }
        let ack = is_join_ack(frame);
        dropped += usize::from(ack);
        ack
    });
    r.join(4, 0);
    r.sim.advance(30_000);
    assert!(r.machine(4).is_joined(), "node 4 never joined");
    assert!(
        r.sim.counts.lost >= 4,
        "four join acknowledgements were dropped"
    );
    r.check_ring().expect("a ring of five");
    for k in 0..40 {
        r.put(k % 5, &key(k), Some(b"v")).expect("put");
        assert_eq!(
            r.get((k + 2) % 5, &key(k)).expect("get").0.as_deref(),
            Some(&b"v"[..])
        );
    }
}
