//! Seeded simulations of the mesh state machine: random connected graphs of 2 to 50 nodes whose
//! links lose, duplicate and reorder frames. A link that loses frames is not what TCP gives (it
//! delivers or breaks), so lossy runs turn relay suppression off and rely on flooding's
//! redundancy; lossless runs keep it on and must still deliver every flood exactly once. Set `RS2P_SIM_SEEDS` to run more seeds; a failure
//! names its seed, and the same seed replays the same run.

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rs2p_base::wire::pb::{self, mesh_frame::Kind};
use rs2p_base::{Keypair, Network};
use rs2p_testkit::{Faults, Sim};

fn seeds() -> u64 {
    std::env::var("RS2P_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200)
}

/// Runs one seed: returns the trace hash.
fn run(seed: u64) -> [u8; 32] {
    let mut r = rand_chacha::ChaCha12Rng::seed_from_u64(seed);
    let n = r.gen_range(2..=50);
    let lossy = r.gen_bool(0.5);
    let faults = Faults {
        loss: if lossy { r.gen_range(0.0..0.3) } else { 0.0 },
        duplicate: r.gen_range(0.0..0.2),
        max_delay_ms: r.gen_range(1..50),
    };
    let mut cfg = rs2p_mesh::MeshConfig::default();
    cfg.min_peers = 0;
    cfg.max_peers = 1024;
    cfg.relay_suppression = !lossy;
    let mut sim = Sim::with_config(seed, n, cfg);
    sim.random_graph(r.gen_range(0.0..2.0), faults);
    let k = r.gen_range(1..=10);
    let mut sent = Vec::new();
    for m in 0..k {
        let origin = r.gen_range(0..n);
        let payload = format!("seed {seed} msg {m}");
        sim.broadcast(origin, "/sim/1", payload.clone().into_bytes());
        sent.push((origin, payload));
        if r.gen_bool(0.5) {
            sim.advance(r.gen_range(0..20));
        }
    }
    sim.run_until_idle();
    for i in 0..n {
        let got = sim.messages(i);
        for (origin, payload) in &sent {
            let copies = got
                .iter()
                .filter(|m| m.payload == payload.as_bytes())
                .count();
            let expected = usize::from(*origin != i);
            assert_eq!(
                copies, expected,
                "seed {seed}: node {i} of {n} got {copies} copies of {payload:?} (faults {faults:?}); \
                 rerun with this seed to replay"
            );
            if let Some(m) = got.iter().find(|m| m.payload == payload.as_bytes()) {
                assert_eq!(m.origin, sim.id(*origin), "seed {seed}: origin preserved");
            }
        }
        let st = sim.node(i).mesh().stats();
        assert_eq!(
            st.bad_signatures, 0,
            "seed {seed}: honest nodes never see bad signatures"
        );
    }
    sim.trace_hash()
}

#[test]
fn every_broadcast_reaches_every_node_exactly_once_under_loss_duplication_and_reordering() {
    let n = seeds();
    for seed in 0..n {
        run(seed);
    }
    println!("mesh simulation: {n} seeds passed");
}

/// In a full mesh with relay suppression each node receives each flood once: nothing is
/// relayed, no copy is a duplicate; without it, each receives one copy per peer.
#[test]
fn in_a_full_mesh_each_flood_is_received_once() {
    for suppress in [true, false] {
        let n = 8;
        let mut cfg = rs2p_mesh::MeshConfig::default();
        cfg.min_peers = 0;
        cfg.relay_suppression = suppress;
        let mut sim = Sim::with_config(5, n, cfg);
        for a in 0..n {
            for b in a + 1..n {
                sim.link(a, b, Faults::NONE);
            }
        }
        sim.run_until_idle();
        let before: u64 = (0..n)
            .map(|i| sim.node(i).mesh().stats().received.messages)
            .sum();
        let k = 20;
        for m in 0..k {
            sim.broadcast(m % n, "/sim/1", format!("m{m}").into_bytes());
            sim.run_until_idle();
        }
        let received: u64 = (0..n)
            .map(|i| sim.node(i).mesh().stats().received.messages)
            .sum::<u64>()
            - before;
        for i in 0..n {
            let got = sim.messages(i).len();
            let own = (0..k).filter(|m| m % n == i).count();
            assert_eq!(
                got,
                k - own,
                "node {i} (suppression {suppress}) delivered each once"
            );
        }
        let per_flood = received as f64 / k as f64 / (n - 1) as f64;
        if suppress {
            assert_eq!(
                received,
                (k * (n - 1)) as u64,
                "one copy per node per flood"
            );
        } else {
            assert!(
                per_flood > 2.0,
                "flooding without suppression: {per_flood} copies"
            );
        }
    }
}

#[test]
fn the_same_seed_replays_the_same_run() {
    for seed in [3, 17, 42] {
        assert_eq!(run(seed), run(seed), "seed {seed} is not deterministic");
    }
    assert_ne!(run(3), run(4));
}

/// Sends a hand-made flood frame from node `from` over its link to node `to`.
fn inject(sim: &mut Sim, to: usize, from_conn_of_to: rs2p_mesh::proto::ConnId, flood: pb::Flood) {
    let frame = rs2p_base::wire::encode(&pb::MeshFrame {
        kind: Some(Kind::Flood(flood)),
    });
    let now = sim.now();
    sim.node_mut(to).handle_frame(from_conn_of_to, frame, now);
    sim.flush();
    sim.run_until_idle();
}

fn body(origin: &Keypair, now: u64, payload: &str) -> Bytes {
    rs2p_base::wire::encode(&pb::FloodBody {
        origin: Bytes::copy_from_slice(origin.peer_id().as_bytes()),
        seq: 1,
        issued_at_ms: now,
        protocol: "/sim/1".into(),
        payload: Bytes::copy_from_slice(payload.as_bytes()),
    })
}

fn sign(kp: &Keypair, body: &[u8]) -> Bytes {
    let net = Network::named("sim");
    Bytes::copy_from_slice(&kp.sign(&[b"rs2p/v1/flood".as_slice(), net.id(), body].concat()))
}

#[test]
fn forged_floods_are_dropped_counted_and_never_relayed() {
    // 0 — 1 — 2: node 0 misbehaves toward node 1; node 2 must never see the forgery.
    let mut sim = Sim::new(9, 3);
    sim.link(0, 1, Faults::NONE);
    sim.link(1, 2, Faults::NONE);
    // Node 1's connection from node 0 is the inbound conn of the first link (ConnId 2).
    let conn = rs2p_mesh::proto::ConnId(2);
    let attacker = Keypair::from_seed([1; 32]);
    let victim = Keypair::from_seed([2; 32]);
    let now = sim.now();

    // 1. A forged origin: claims to be `victim`, signed by `attacker`.
    let b = body(&victim, now, "forged origin");
    inject(
        &mut sim,
        1,
        conn,
        pb::Flood {
            signature: sign(&attacker, &b),
            body: b,
            hops_left: 5,
        },
    );
    // 2. A bad signature: random bytes.
    let b = body(&attacker, now, "bad signature");
    inject(
        &mut sim,
        1,
        conn,
        pb::Flood {
            signature: Bytes::from(vec![7u8; 64]),
            body: b,
            hops_left: 5,
        },
    );
    // 3. An unsigned flood for a protocol this node does not run: it cannot be checked, so it
    //    is dropped, but not held against the sender (it may be another kind of node's
    //    self-verifying protocol).
    let b = body(&attacker, now, "unsigned");
    inject(
        &mut sim,
        1,
        conn,
        pb::Flood {
            signature: Bytes::new(),
            body: b,
            hops_left: 5,
        },
    );

    assert!(
        sim.messages(1).is_empty() && sim.messages(2).is_empty(),
        "nothing forged is delivered"
    );
    let st = sim.node(1).mesh().stats();
    assert_eq!(st.bad_signatures, 2);
    assert_eq!(st.unverifiable, 1);
    assert_eq!(st.forwarded, 0, "nothing forged or unverifiable is relayed");
    assert_eq!(
        st.peers.get(&sim.id(0)).map(|p| p.strikes),
        Some(2),
        "the forgeries count against the sender"
    );

    // A genuine message with the forged one's body but a valid signature still gets through:
    // the forgery did not poison the seen-cache.
    let b = body(&attacker, now, "bad signature");
    inject(
        &mut sim,
        1,
        conn,
        pb::Flood {
            signature: sign(&attacker, &b),
            body: b,
            hops_left: 5,
        },
    );
    assert_eq!(sim.messages(2).len(), 1);
}

#[test]
fn a_peer_that_keeps_sending_garbage_is_banned() {
    let mut sim = Sim::new(10, 2);
    sim.link(0, 1, Faults::NONE);
    let conn = rs2p_mesh::proto::ConnId(2);
    for _ in 0..8 {
        let now = sim.now();
        sim.node_mut(1)
            .handle_frame(conn, Bytes::from_static(b"\xff\xff\xff garbage"), now);
        sim.flush();
    }
    assert!(sim.node(1).mesh().peers().is_empty(), "disconnected");
    assert!(sim
        .events(1)
        .iter()
        .any(|e| matches!(e, rs2p_mesh::MeshEvent::PeerBanned { peer, .. } if *peer == sim.id(0))));
    assert!(sim.node(1).mesh().stats().malformed >= 8);
}

#[test]
fn old_and_future_floods_are_refused_as_replays() {
    let mut sim = Sim::new(11, 2);
    sim.link(0, 1, Faults::NONE);
    let conn = rs2p_mesh::proto::ConnId(2);
    let kp = Keypair::from_seed([3; 32]);
    let now = sim.now();
    for t in [now - 61_000, now + 11_000] {
        let b = body(&kp, t, "replay");
        inject(
            &mut sim,
            1,
            conn,
            pb::Flood {
                signature: sign(&kp, &b),
                body: b,
                hops_left: 5,
            },
        );
    }
    assert!(sim.messages(1).is_empty());
    assert_eq!(sim.node(1).mesh().stats().stale, 2);
}

#[test]
fn a_peer_over_its_rate_is_throttled_then_disconnected_and_banned() {
    let mut cfg = rs2p_mesh::MeshConfig::default();
    cfg.min_peers = 0;
    cfg.peer_rate = 10;
    cfg.peer_burst = 20;
    cfg.flood_ban_after = std::time::Duration::from_secs(2);
    let mut sim = Sim::with_config(12, 2, cfg);
    sim.link(0, 1, Faults::NONE);
    let ping = rs2p_base::wire::encode(&pb::MeshFrame {
        kind: Some(Kind::Ping(pb::Ping { nonce: 1 })),
    });
    let send = |sim: &mut Sim| {
        let now = sim.now();
        sim.node_mut(1)
            .handle_frame(rs2p_mesh::proto::ConnId(2), ping.clone(), now);
        sim.flush();
    };
    for _ in 0..20 {
        send(&mut sim);
    }
    assert_eq!(sim.node(1).mesh().peers(), &[sim.id(0)], "within the burst");
    assert_eq!(sim.node(1).mesh().stats().throttled, 0);
    send(&mut sim);
    assert_eq!(
        sim.node(1).mesh().peers(),
        &[sim.id(0)],
        "over the rate: throttled, still a peer"
    );
    assert_eq!(sim.node(1).mesh().stats().throttled, 1);
    // Fifty times the rate for longer than flood_ban_after (virtual time).
    for _ in 0..220 {
        for _ in 0..5 {
            send(&mut sim);
        }
        sim.advance(10);
    }
    assert!(
        sim.node(1).mesh().peers().is_empty(),
        "a flood: disconnected"
    );
    assert!(sim
        .events(1)
        .iter()
        .any(|e| matches!(e, rs2p_mesh::MeshEvent::PeerBanned { .. })));
    assert_eq!(sim.node(1).mesh().stats().limit_disconnects, 1);
    // Banned: a new connection from the same peer is closed at once.
    sim.link(0, 1, Faults::NONE);
    assert!(sim.node(1).mesh().peers().is_empty(), "still banned");
}

#[test]
fn inbound_peers_beyond_max_peers_are_refused() {
    let mut cfg = rs2p_mesh::MeshConfig::default();
    cfg.min_peers = 0;
    cfg.max_peers = 3;
    let mut sim = Sim::with_config(13, 6, cfg);
    for i in 1..6 {
        sim.link(i, 0, Faults::NONE); // i dials 0
    }
    assert_eq!(
        sim.node(0).mesh().peers().len(),
        3,
        "node 0 keeps max_peers"
    );
    let refused = (1..6)
        .filter(|&i| sim.node(i).mesh().peers().is_empty())
        .count();
    assert_eq!(refused, 2, "the others were told goodbye and closed");
}

#[test]
fn a_full_node_redials_a_persistent_address_with_backoff_not_at_every_tick() {
    let mut cfg = rs2p_mesh::MeshConfig::default();
    cfg.min_peers = 0;
    cfg.max_peers = 1;
    let mut sim = Sim::with_config(14, 3, cfg);
    sim.link(0, 1, Faults::NONE); // node 0 is full
    let addr = std::net::SocketAddr::from(([10, 0, 0, 3], 4000)); // node 2
    assert_eq!(Sim::index_of(addr), Some(2));
    let now = sim.now();
    sim.node_mut(0).connect(addr, now);
    sim.flush();
    sim.advance(60_000);
    // Each attempt connects and is closed at once (node 0 is full); node 2 sees every one.
    let attempts = sim
        .events(2)
        .iter()
        .filter(|e| matches!(e, rs2p_mesh::MeshEvent::PeerConnected { .. }))
        .count();
    assert!(attempts >= 2, "it keeps trying ({attempts})");
    assert!(
        attempts <= 15,
        "{attempts} attempts in a minute: backing off (a tick is 1 s)"
    );
    assert_eq!(
        sim.node(0).mesh().peers(),
        &[sim.id(1)],
        "still within max_peers"
    );
}

/// A handler that records nothing and accepts everything; registered so that the node runs
/// its protocol with mesh-signed floods.
struct Accepting(&'static str);

impl rs2p_mesh::Handler for Accepting {
    fn protocol(&self) -> &str {
        self.0
    }
    fn on_message(
        &mut self,
        _cx: &mut rs2p_mesh::proto::Context<'_>,
        _msg: rs2p_mesh::proto::InboundMessage,
    ) -> rs2p_mesh::proto::Verdict {
        rs2p_mesh::proto::Verdict::Accept
    }
}

#[test]
fn an_unsigned_flood_counts_against_its_sender_only_for_a_protocol_run_here_with_signatures() {
    // Node 1 runs "/signed/1" (mesh-signed floods) and nothing else; node 0 sends it unsigned
    // floods of that protocol and of one node 1 does not run. Only the first kind is a forgery.
    let mut sim = Sim::new(12, 2);
    let now = sim.now();
    sim.node_mut(1)
        .register(Box::new(Accepting("/signed/1")), now)
        .expect("register");
    sim.link(0, 1, Faults::NONE);
    let conn = rs2p_mesh::proto::ConnId(2);
    let origin = sim.keypair(0);
    let unsigned = |protocol: &str, seq: u64, now: u64| pb::Flood {
        signature: Bytes::new(),
        body: rs2p_base::wire::encode(&pb::FloodBody {
            origin: Bytes::copy_from_slice(origin.peer_id().as_bytes()),
            seq,
            issued_at_ms: now,
            protocol: protocol.into(),
            payload: Bytes::from_static(b"x"),
        }),
        hops_left: 5,
    };
    // Many more than `max_strikes` floods of the protocol node 1 does not run: no ban.
    for seq in 0..20 {
        let now = sim.now();
        inject(
            &mut sim,
            1,
            conn,
            unsigned("/unsigned-elsewhere/1", seq, now),
        );
    }
    let st = sim.node(1).mesh().stats();
    assert_eq!(st.unverifiable, 20);
    assert_eq!(st.bad_signatures, 0);
    assert_eq!(sim.node(1).mesh().peers(), &[sim.id(0)], "still connected");

    let now = sim.now();
    inject(&mut sim, 1, conn, unsigned("/signed/1", 100, now));
    let st = sim.node(1).mesh().stats();
    assert_eq!(st.bad_signatures, 1, "a forgery of a protocol run here");
    assert_eq!(st.peers.get(&sim.id(0)).map(|p| p.strikes), Some(1));
}
