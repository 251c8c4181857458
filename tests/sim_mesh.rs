//! Seeded simulations of the mesh state machine: random connected graphs of 2 to 50 nodes whose
//! links lose, duplicate and reorder frames. A link that loses frames is not what TCP gives (it
//! delivers or breaks), so lossy runs turn relay suppression and relay trees off and rely on
//! flooding's redundancy; lossless runs keep suppression on, and relay trees in three seeds of
//! four, and must still deliver every flood exactly once. Set `RS2P_SIM_SEEDS` to run more seeds; a failure
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
    // Relay trees trade redundancy for fewer copies: only where links do not lose frames.
    cfg.relay_tree = !lossy && seed % 4 != 0;
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

/// A sparse random graph (a spanning tree plus about 1.5 more links per node) whose links delay
/// and reorder frames: `(sim, edges)`.
fn sparse(seed: u64, n: usize, relay_tree: bool) -> (Sim, Vec<(usize, usize)>) {
    let mut r = rand_chacha::ChaCha12Rng::seed_from_u64(seed);
    let mut cfg = rs2p_mesh::MeshConfig::default();
    cfg.min_peers = 0;
    cfg.max_peers = 1024;
    cfg.relay_tree = relay_tree;
    let mut sim = Sim::with_config(seed, n, cfg);
    let faults = Faults {
        loss: 0.0,
        duplicate: 0.0,
        max_delay_ms: 20,
    };
    let mut edges = std::collections::BTreeSet::new();
    for i in 1..n {
        edges.insert((r.gen_range(0..i), i));
    }
    while edges.len() < n - 1 + n * 3 / 2 {
        let (a, b) = (r.gen_range(0..n), r.gen_range(0..n));
        if a != b {
            edges.insert((a.min(b), a.max(b)));
        }
    }
    for &(a, b) in &edges {
        sim.link(a, b, faults);
    }
    sim.run_until_idle();
    (sim, edges.into_iter().collect())
}

fn connected(n: usize, edges: &[(usize, usize)]) -> bool {
    let mut seen = vec![false; n];
    let mut stack = vec![0];
    seen[0] = true;
    while let Some(i) = stack.pop() {
        for &(a, b) in edges {
            let j = if a == i {
                b
            } else if b == i {
                a
            } else {
                continue;
            };
            if !seen[j] {
                seen[j] = true;
                stack.push(j);
            }
        }
    }
    seen.into_iter().all(|s| s)
}

/// Cuts `k` random links of `edges`, keeping the graph connected, and lets the nodes settle.
fn cut_links(sim: &mut Sim, mut edges: Vec<(usize, usize)>, k: usize) {
    let n = sim.len();
    let mut r = rand_chacha::ChaCha12Rng::seed_from_u64(12);
    let mut cut = 0;
    while cut < k {
        let e = edges[r.gen_range(0..edges.len())];
        let rest: Vec<_> = edges.iter().copied().filter(|&x| x != e).collect();
        if connected(n, &rest) {
            sim.unlink(e.0, e.1);
            edges = rest;
            cut += 1;
        }
    }
    sim.run_until_idle();
}

/// Floods `k` messages from rotating origins, one at a time; asserts each reached every node
/// exactly once; returns the copies received per flood per receiving node.
fn flood_rounds(sim: &mut Sim, k: usize, tag: &str) -> f64 {
    let n = sim.len();
    let received = |sim: &Sim| -> u64 {
        (0..n)
            .map(|i| sim.node(i).mesh().stats().received.messages)
            .sum()
    };
    let before = received(sim);
    for m in 0..k {
        let payload = format!("{tag} {m}");
        let origin = m * 7 % n;
        sim.broadcast(origin, "/sim/1", payload.clone().into_bytes());
        sim.run_until_idle();
        for i in (0..n).filter(|&i| i != origin) {
            let copies = sim
                .messages(i)
                .iter()
                .filter(|r| r.payload == payload.as_bytes())
                .count();
            assert_eq!(
                copies, 1,
                "{tag}: node {i} delivered {payload:?} {copies} times"
            );
        }
    }
    (received(sim) - before) as f64 / k as f64 / (n - 1) as f64
}

/// Where floods are relayed, relay trees bring the copies each node receives down to about one
/// per flood once each origin's tree formed, where flooding gives several; and when links are
/// cut (the graph staying connected), every later flood still reaches every node exactly once,
/// with trees and with flooding. (Flooding failed that before peer lists carried a sequence
/// number: links here reorder frames, and a stale list told a relay that a peer was still
/// connected to the origin.)
#[test]
fn relay_trees_cut_duplicate_copies_and_heal_when_links_are_cut() {
    let n = 40;
    let (mut flooding, flood_edges) = sparse(11, n, false);
    let flood_copies = flood_rounds(&mut flooding, 3 * n, "flooding");
    cut_links(&mut flooding, flood_edges, n / 2);
    flood_rounds(&mut flooding, 3 * n, "flooding after cuts");
    let (mut sim, edges) = sparse(11, n, true);
    let warm = flood_rounds(&mut sim, 3 * n, "warm-up");
    let steady = flood_rounds(&mut sim, 3 * n, "steady");
    assert!(
        flood_copies > 1.5,
        "the graph relays: flooding gives {flood_copies:.2} copies"
    );
    assert!(
        steady < 1.05,
        "copies per flood with relay trees once formed: {steady:.3} (warm-up {warm:.3}, flooding {flood_copies:.3})"
    );
    cut_links(&mut sim, edges, n / 2);
    flood_rounds(&mut sim, 3 * n, "after cuts");
    let grafts: u64 = (0..n).map(|i| sim.node(i).mesh().stats().tree_grafts).sum();
    assert!(grafts > 0, "cutting tree links made nodes graft");
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
            ..Default::default()
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
            ..Default::default()
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
            ..Default::default()
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
            ..Default::default()
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
                ..Default::default()
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
        ..Default::default()
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

/// Relay-tree frames with an origin that is not a peer id, or an operation that does not exist,
/// are malformed and count against the sender; well-formed ones for origins never seen only
/// change what is relayed to their sender.
#[test]
fn malformed_relay_tree_frames_count_against_their_sender() {
    let mut sim = Sim::new(12, 2);
    sim.link(0, 1, Faults::NONE);
    let conn = rs2p_mesh::proto::ConnId(2);
    let frame = |origin: &[u8], op: i32| {
        rs2p_base::wire::encode(&pb::MeshFrame {
            kind: Some(Kind::Tree(pb::Tree {
                origin: Bytes::copy_from_slice(origin),
                op,
                seq: 1,
            })),
        })
    };
    let now = sim.now();
    sim.node_mut(1).handle_frame(conn, frame(&[7; 5], 0), now);
    sim.node_mut(1).handle_frame(conn, frame(&[7; 32], 9), now);
    sim.flush();
    let st = sim.node(1).mesh().stats();
    assert_eq!(st.malformed, 2);
    assert_eq!(st.peers[&sim.id(0)].strikes, 2);
    for op in 0..4 {
        let now = sim.now();
        sim.node_mut(1)
            .handle_frame(conn, frame(&[op as u8 + 9; 32], op), now);
    }
    sim.flush();
    sim.run_until_idle();
    assert_eq!(
        sim.node(1).mesh().stats().malformed,
        2,
        "well-formed ones are not"
    );
    sim.broadcast(1, "/sim/1", b"still delivered".to_vec());
    sim.run_until_idle();
    assert_eq!(sim.messages(0).len(), 1);
}

/// Relay trees in a mesh grown as real ones grow: every node is told one bootstrap address
/// (which accepts `max_peers` and refuses the rest), and the nodes find the others from peer
/// lists and dial until they have `min_peers`. Every flood reaches every node exactly once.
#[test]
fn relay_trees_deliver_in_a_mesh_grown_by_dialing_from_one_bootstrap_node() {
    let n = 64;
    let mut sim = Sim::with_config(21, n, rs2p_mesh::MeshConfig::default());
    sim.set_faults(Faults {
        loss: 0.0,
        duplicate: 0.0,
        max_delay_ms: 3,
    });
    for i in 1..n {
        let now = sim.node_now(i);
        sim.node_mut(i).connect(Sim::addr(0), now);
        // The bootstrap node, once full, sends its peer list before closing; the simulator
        // drops a link's frames in flight when it closes, so give latecomers a second address.
        if i > 32 {
            sim.node_mut(i).connect(Sim::addr(i - 1), now);
        }
        sim.flush();
        sim.advance(5);
    }
    sim.advance(30_000);
    sim.run_until_idle();
    flood_rounds(&mut sim, 5 * n, "grown");
}

/// A flood that arrives on a connection being closed (here: refused because the node is full)
/// is still delivered, but its sender does not become a parent in the relay trees: the node
/// would prune its real feeds for that origin and wait on a parent whose loss is never
/// reported. The 64-node benchmark lost floods to its full bootstrap node this way.
#[test]
fn a_flood_on_a_refused_connection_does_not_make_its_sender_a_parent() {
    use rs2p_mesh::proto::{ConnId, Direction};
    let mut cfg = rs2p_mesh::MeshConfig::default();
    cfg.min_peers = 0;
    cfg.max_peers = 2;
    let mut sim = Sim::with_config(13, 4, cfg);
    sim.link(0, 1, Faults::NONE);
    sim.link(0, 3, Faults::NONE);
    sim.link(1, 2, Faults::NONE);
    sim.run_until_idle();
    // Node 2 reaches the full node 0 as well; node 0 refuses it but reads what is in flight.
    let refused = ConnId(900);
    let now = sim.node_now(0);
    let remote = rs2p_base::handshake::RemoteInfo {
        peer_id: sim.id(2),
        listen_addrs: vec![Sim::addr(2)],
        protocols: vec![],
        incarnation: 1,
        features: 0,
    };
    sim.node_mut(0).handle_established(
        refused,
        Direction::Inbound,
        None,
        remote,
        Sim::addr(2),
        now,
    );
    let kp = sim.keypair(2);
    let b = body(&kp, now, "first");
    let flood = pb::Flood {
        signature: sign(&kp, &b),
        body: b,
        hops_left: 32,
        ..Default::default()
    };
    // Its copy on the refused connection comes first, then node 1 relays the same flood.
    inject(&mut sim, 0, refused, flood.clone());
    inject(&mut sim, 1, ConnId(5), flood);
    let now = sim.node_now(0);
    sim.node_mut(0).handle_closed(refused, now);
    sim.flush();
    sim.run_until_idle();
    assert_eq!(
        sim.messages(0).len(),
        1,
        "the first flood was delivered once"
    );
    sim.broadcast(2, "/sim/1", b"second".to_vec());
    sim.run_until_idle();
    assert!(
        sim.messages(0).iter().any(|m| m.payload == b"second"[..]),
        "node 0 still receives node 2's floods through node 1"
    );
}

/// A full node refuses a connection only after the handshake, whether it dialed or was dialed.
/// Until then, the other end must not tell its other peers that it is connected to the full
/// node: they would skip the full node when relaying its floods, and the copy it sends on the
/// closing connection is lost, so the full node (and, with relay trees, every node below it)
/// would miss the flood.
#[test]
fn a_node_does_not_announce_a_peer_before_the_peer_keeps_the_connection() {
    use rs2p_mesh::proto::{ConnId, Direction};
    for direction in [Direction::Outbound, Direction::Inbound] {
        let mut cfg = rs2p_mesh::MeshConfig::default();
        cfg.min_peers = 0;
        let mut sim = Sim::with_config(14, 4, cfg);
        sim.link(0, 1, Faults::NONE);
        sim.link(1, 2, Faults::NONE);
        sim.run_until_idle();
        // Node 2 and node 0 complete a handshake; node 0 (full) will close it, and nothing has
        // come back on it yet. Then node 2 gains a peer, and tells its peers which it has.
        let now = sim.node_now(2);
        let remote = rs2p_base::handshake::RemoteInfo {
            peer_id: sim.id(0),
            listen_addrs: vec![Sim::addr(0)],
            protocols: vec![],
            incarnation: 1,
            features: 0,
        };
        let dialed = (direction == Direction::Outbound).then(|| Sim::addr(0));
        sim.node_mut(2).handle_established(
            ConnId(900),
            direction,
            dialed,
            remote,
            Sim::addr(0),
            now,
        );
        sim.flush();
        sim.link(2, 3, Faults::NONE);
        sim.run_until_idle();
        assert!(sim.node(2).mesh().peers().contains(&sim.id(0)));
        // Its flood's copy on that connection goes nowhere; node 1 must still relay it to 0.
        sim.broadcast(2, "/sim/1", b"over the refused link".to_vec());
        sim.run_until_idle();
        assert_eq!(
            sim.messages(0).len(),
            1,
            "{direction:?}: node 0 got the flood through node 1"
        );
    }
}

/// A peer that restarts with the same identity while this node still holds its old connection
/// (the old process was killed and its goodbye lost, or its host lost power) is let back in at
/// once: its handshake says it is a later run, so the new connection replaces the dead one, even
/// where the rule for two simultaneous dials would keep the old one and refuse the peer until
/// the idle timeout (30 s). Without a later run, that rule still decides.
#[test]
fn a_peer_that_restarted_with_the_same_identity_replaces_its_dead_connection() {
    use rs2p_base::handshake::RemoteInfo;
    use rs2p_mesh::proto::{CloseReason, ConnId, Direction, Mesh, Output};
    let network = Network::named("restart");
    let mut keys: Vec<Keypair> = (1u8..=2).map(|i| Keypair::from_seed([i; 32])).collect();
    keys.sort_by_key(Keypair::peer_id);
    // The lower id dials; the higher one restarts and dials back: the dialer rule keeps the
    // connection dialed by the lower id, the old one.
    let (low, high) = (keys[0].clone(), keys[1].clone());
    let remote = |incarnation| RemoteInfo {
        peer_id: high.peer_id(),
        listen_addrs: vec!["10.0.0.2:7000".parse().unwrap()],
        protocols: vec![],
        incarnation,
        features: 0,
    };
    for (second_run, new_kept) in [(1_000, false), (2_000, true), (0, false)] {
        let mut mesh = Mesh::new(Default::default(), low.clone(), *network.id(), 5_000);
        let at = "10.0.0.2:7000".parse().unwrap();
        let (old, new) = (ConnId(1), ConnId(2));
        mesh.handle_established(old, Direction::Outbound, Some(at), remote(1_000), at, 5_000);
        mesh.handle_established(new, Direction::Inbound, None, remote(second_run), at, 6_000);
        let mut closed = Vec::new();
        while let Some(out) = mesh.poll_output() {
            if let Output::Close { conn, reason } = out {
                assert_eq!(reason, CloseReason::Duplicate);
                closed.push(conn);
            }
        }
        let expect = if new_kept { old } else { new };
        assert_eq!(
            closed,
            vec![expect],
            "incarnation {second_run} against 1000: the {} connection is closed",
            if new_kept { "old" } else { "new" }
        );
        assert_eq!(mesh.peers(), &[high.peer_id()][..]);
    }
}

/// A handler that arms a timer again from its own callback, due at once (a transfer sending a
/// few chunks per tick), runs once per tick: what each run produced leaves before the next run,
/// instead of piling up unsent until the handler has nothing left to do.
#[test]
fn a_timer_armed_again_from_its_callback_runs_at_the_next_tick() {
    use rs2p_mesh::proto::{Context, Handler, InboundMessage, Mesh, Node, Verdict};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    struct Repeat(Arc<AtomicUsize>);
    impl Handler for Repeat {
        fn protocol(&self) -> &str {
            "/repeat/1"
        }
        fn on_message(&mut self, _: &mut Context<'_>, _: InboundMessage) -> Verdict {
            Verdict::Ignore
        }
        fn on_timer(&mut self, cx: &mut Context<'_>, token: u64) {
            if self.0.fetch_add(1, Ordering::Relaxed) < 100 {
                cx.set_timer(0, token);
            }
        }
    }

    let network = Network::named("timers");
    let mesh = Mesh::new(
        Default::default(),
        Keypair::from_seed([3; 32]),
        *network.id(),
        1_000,
    );
    let mut node = Node::new(mesh, 1);
    let runs = Arc::new(AtomicUsize::new(0));
    node.register(Box::new(Repeat(runs.clone())), 1_000)
        .unwrap();
    node.with_handler("/repeat/1", 1_000, |_, cx| cx.set_timer(0, 7))
        .unwrap();
    for tick in 1..=3 {
        node.handle_tick(1_000);
        assert_eq!(runs.load(Ordering::Relaxed), tick, "runs after tick {tick}");
        assert!(node.next_deadline() <= 1_000, "the next run is due at once");
    }
}

/// Flat floods (the body's fields inline, the origin left out when the origin sends, the
/// protocol named by its place in the receiver's handshake list) go only to peers whose handshake
/// says they read them: nodes from before them (one without any feature, one that reads only the
/// older compact floods) get every flood whole. Everyone gets every flood once.
#[test]
fn flat_floods_go_only_to_peers_that_read_them() {
    use prost::Message;
    use rs2p_mesh::proto::{Context, Handler, InboundMessage, Verdict, FEATURE_COMPACT_FLOODS};
    use std::sync::{Arc, Mutex};

    type Got = Arc<Mutex<Vec<(usize, Bytes)>>>;
    struct Rec(&'static str, Got, usize);
    impl Handler for Rec {
        fn protocol(&self) -> &str {
            self.0
        }
        fn on_message(&mut self, _: &mut Context<'_>, m: InboundMessage) -> Verdict {
            self.1.lock().unwrap().push((self.2, m.payload));
            Verdict::Accept
        }
    }

    let mut cfg = rs2p_mesh::MeshConfig::default();
    cfg.min_peers = 0;
    let mut sim = Sim::with_config(17, 5, cfg);
    let got: Got = Arc::default();
    for i in 0..5 {
        let now = sim.node_now(i);
        if i == 2 {
            // Node 2 registered another protocol first: the place differs per peer.
            sim.node_mut(i)
                .register(Box::new(Rec("/other/1", got.clone(), i)), now)
                .unwrap();
        }
        sim.node_mut(i)
            .register(Box::new(Rec("/sim/1", got.clone(), i)), now)
            .unwrap();
    }
    sim.set_legacy(3);
    sim.set_features(4, FEATURE_COMPACT_FLOODS);
    /// (from, to, flat, protocol_ref, origin left out) of each flood frame.
    type Seen = Arc<Mutex<Vec<(usize, usize, bool, u32, bool)>>>;
    let seen: Seen = Arc::default();
    let log = seen.clone();
    sim.drop_frames_where(move |from, to, frame| {
        match pb::MeshFrame::decode(frame) {
            Ok(pb::MeshFrame {
                kind: Some(Kind::Flood(f)),
            }) => log
                .lock()
                .unwrap()
                .push((from, to, false, f.protocol_ref, f.origin_is_sender)),
            Ok(pb::MeshFrame {
                kind: Some(Kind::FlatFlood(f)),
            }) => log
                .lock()
                .unwrap()
                .push((from, to, true, f.protocol_ref, f.origin.is_empty())),
            _ => {}
        }
        false
    });
    // 0 - 1, and 1 relays to 2 and to the old nodes 3 and 4.
    sim.link(0, 1, Faults::NONE);
    sim.link(1, 2, Faults::NONE);
    sim.link(1, 3, Faults::NONE);
    sim.link(1, 4, Faults::NONE);
    sim.run_until_idle();
    sim.broadcast(0, "/sim/1", &b"compact"[..]);
    sim.run_until_idle();
    let mut seen = seen.lock().unwrap().clone();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            (0, 1, true, 1, true),
            (1, 2, true, 2, false),
            (1, 3, false, 0, false),
            (1, 4, false, 0, false)
        ],
        "(from, to, flat, protocol_ref, origin left out) of each flood frame"
    );
    let mut got = got.lock().unwrap().clone();
    got.sort();
    let payload = Bytes::from_static(b"compact");
    assert_eq!(
        got,
        vec![
            (1, payload.clone()),
            (2, payload.clone()),
            (3, payload.clone()),
            (4, payload)
        ]
    );
}
