//! The mesh socket over real TCP on loopback.

use std::net::SocketAddr;
use std::time::Duration;

use rs2p_mesh::net::EventItem;
use rs2p_mesh::{Keypair, MeshConfig, MeshError, MeshEvent, MeshOptions, MeshSocket, Network};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn node() -> MeshSocket {
    MeshSocket::bind(MeshOptions::default()).await.unwrap()
}

async fn wait_for<F: std::future::Future<Output = bool>>(mut cond: impl FnMut() -> F, what: &str) {
    // A bound against hangs, not a timing assertion: generous for a loaded 2-core machine.
    for _ in 0..800 {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Waits until `s` has `n` peers.
async fn wait_for_peers(s: &MeshSocket, n: usize, what: &str) {
    wait_for(
        || {
            let s = s.clone();
            async move { s.peers().await.unwrap().len() == n }
        },
        what,
    )
    .await;
}

/// Collects `n` messages from an event stream.
async fn messages(s: &mut rs2p_mesh::EventStream, n: usize) -> Vec<bytes::Bytes> {
    let mut got = Vec::new();
    while got.len() < n {
        match tokio::time::timeout(Duration::from_secs(20), s.next()).await {
            Ok(Some(EventItem::Event(MeshEvent::Message { payload, .. }))) => got.push(payload),
            Ok(Some(_)) => {}
            other => panic!("after {} of {n} messages: {other:?}", got.len()),
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_nodes_given_one_address_find_each_other_and_every_broadcast_arrives_once() {
    let first = node().await;
    let mut nodes = vec![first.clone()];
    for _ in 1..10 {
        let n = node().await;
        n.connect(first.local_addr()).await.unwrap();
        nodes.push(n);
    }
    // Peer exchange: each node dials what it learns until it has min_peers (8) of the 9 others.
    wait_for(
        || {
            let nodes = nodes.clone();
            async move {
                for n in &nodes {
                    if n.peers().await.unwrap().len() < 8 {
                        return false;
                    }
                }
                true
            }
        },
        "every node to reach min_peers",
    )
    .await;
    let mut streams: Vec<_> = nodes.iter().map(|n| n.events()).collect();
    for (i, n) in nodes.iter().enumerate() {
        n.broadcast("/test/1", format!("from {i}")).await.unwrap();
    }
    for (i, s) in streams.iter_mut().enumerate() {
        let mut got = messages(s, 9).await;
        got.sort();
        got.dedup();
        assert_eq!(got.len(), 9, "node {i} got each other node's broadcast");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for (i, n) in nodes.iter().enumerate() {
        let st = n.stats().await.unwrap();
        assert_eq!(
            st.delivered, 9,
            "node {i} delivered each broadcast exactly once"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_drops_and_comes_back_is_reconnected() {
    let a = node().await;
    let b = node().await;
    b.connect(a.local_addr()).await.unwrap();
    // c has a fixed identity and address, and a is told to keep it connected.
    let key = Keypair::generate();
    let opts = MeshOptions {
        keypair: Some(key.clone()),
        ..MeshOptions::default()
    };
    let c = MeshSocket::bind(opts).await.unwrap();
    let c_addr: SocketAddr = c.local_addr();
    a.connect(c_addr).await.unwrap();
    wait_for_peers(&b, 2, "b to find c").await;

    c.close().await.unwrap();
    wait_for_peers(&a, 1, "a to see c leave").await;

    let c = MeshSocket::bind(MeshOptions {
        listen: c_addr,
        keypair: Some(key),
        ..MeshOptions::default()
    })
    .await
    .unwrap();
    wait_for_peers(&c, 2, "a and b to redial c").await;
    let mut ea = a.events();
    let mut eb = b.events();
    c.broadcast("/test/1", "back").await.unwrap();
    assert_eq!(messages(&mut ea, 1).await, vec![bytes::Bytes::from("back")]);
    assert_eq!(messages(&mut eb, 1).await, vec![bytes::Bytes::from("back")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_dialing_each_other_at_once_keep_exactly_one_connection() {
    for _ in 0..5 {
        let a = node().await;
        let b = node().await;
        let (ra, rb) = tokio::join!(a.connect(b.local_addr()), b.connect(a.local_addr()));
        assert_eq!(ra.unwrap(), b.local_id());
        assert_eq!(rb.unwrap(), a.local_id());
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(a.peers().await.unwrap(), vec![b.local_id()]);
        assert_eq!(b.peers().await.unwrap(), vec![a.local_id()]);
        let mut eb = b.events();
        a.whisper(b.local_id(), "/test/1", "hi").await.unwrap();
        assert_eq!(messages(&mut eb, 1).await, vec![bytes::Bytes::from("hi")]);
        a.close().await.unwrap();
        b.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_of_another_network_is_refused_and_nothing_is_delivered() {
    let a = MeshSocket::bind(MeshOptions {
        network: Network::named("one"),
        ..MeshOptions::default()
    })
    .await
    .unwrap();
    let b = MeshSocket::bind(MeshOptions {
        network: Network::named("two"),
        ..MeshOptions::default()
    })
    .await
    .unwrap();
    let err = a.connect(b.local_addr()).await.unwrap_err();
    assert!(matches!(err, MeshError::Handshake(_)), "{err:?}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(a.peers().await.unwrap().is_empty());
    assert!(b.peers().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_garbage_peers_are_dropped_and_honest_peers_unaffected() {
    let mut config = MeshConfig::default();
    config.handshake_timeout = Duration::from_millis(300);
    let a = MeshSocket::bind(MeshOptions {
        config,
        ..MeshOptions::default()
    })
    .await
    .unwrap();
    // A peer that connects and says nothing.
    let mut silent = tokio::net::TcpStream::connect(a.local_addr())
        .await
        .unwrap();
    // A peer that sends garbage.
    let mut garbage = tokio::net::TcpStream::connect(a.local_addr())
        .await
        .unwrap();
    garbage.write_all(&[0x00, 0x40]).await.unwrap();
    garbage.write_all(&[0xAB; 64]).await.unwrap();
    // An honest peer connects meanwhile.
    let b = node().await;
    b.connect(a.local_addr()).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(20), garbage.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "garbage peer is disconnected");
    let n = tokio::time::timeout(Duration::from_secs(20), silent.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "silent peer is disconnected at the handshake timeout");
    assert_eq!(a.peers().await.unwrap(), vec![b.local_id()]);
    let mut eb = b.events();
    a.broadcast("/test/1", "still fine").await.unwrap();
    assert_eq!(messages(&mut eb, 1).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_closes_the_link_and_both_sides_are_told() {
    let a = node().await;
    let b = node().await;
    a.connect(b.local_addr()).await.unwrap();
    let mut ea = a.events();
    let mut eb = b.events();
    a.disconnect(b.local_id()).await.unwrap();
    for (s, other) in [(&mut ea, b.local_id()), (&mut eb, a.local_id())] {
        loop {
            match tokio::time::timeout(Duration::from_secs(20), s.next()).await {
                Ok(Some(EventItem::Event(MeshEvent::PeerDisconnected { peer }))) => {
                    assert_eq!(peer, other);
                    break;
                }
                Ok(Some(_)) => {}
                other => panic!("no PeerDisconnected: {other:?}"),
            }
        }
    }
    let stranger = rs2p_mesh::Keypair::generate().peer_id();
    assert!(
        matches!(a.disconnect(stranger).await, Err(MeshError::NotConnected(p)) if p == stranger)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_reads_is_dropped_and_others_still_get_everything() {
    let mut config = MeshConfig::default();
    config.send_queue_len = 64;
    never_reading_peer(config).await;
}

/// The same with a queue bounded in bytes only (few frames of 64 KiB fill 1 MiB): the frame
/// count alone would let 8192 of them pile up before anything waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_bounded_in_bytes_holds_back_and_drops_a_peer_that_never_reads() {
    let mut config = MeshConfig::default();
    config.send_queue_bytes = 1 << 20;
    never_reading_peer(config).await;
}

async fn never_reading_peer(mut config: MeshConfig) {
    use rs2p_base::handshake::LocalInfo;
    use rs2p_base::net::{handshake, Role};
    config.stall_timeout = Duration::from_secs(1);
    let network = Network::default();
    let a = MeshSocket::bind(MeshOptions {
        config,
        ..MeshOptions::default()
    })
    .await
    .unwrap();
    let honest = node().await;
    honest.connect(a.local_addr()).await.unwrap();
    // A peer that completes the handshake, then never reads its socket.
    let identity = rs2p_base::LocalIdentity::new(Keypair::generate());
    let stream = tokio::net::TcpStream::connect(a.local_addr())
        .await
        .unwrap();
    let stuck = handshake(
        stream,
        Role::Initiator(None),
        &identity,
        &network,
        LocalInfo::default(),
        1 << 20,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    wait_for_peers(&a, 2, "both peers").await;

    let mut events = honest.events();
    let payload = bytes::Bytes::from(vec![7u8; 64 * 1024]);
    for _ in 0..200 {
        a.broadcast("/test/1", payload.clone()).await.unwrap();
    }
    // 12.5 MiB cannot sit in the kernel's buffers: the queue fills and the reader-less peer goes.
    let honest_id = honest.local_id();
    wait_for(
        || {
            let a = a.clone();
            async move { a.peers().await.unwrap() == vec![honest_id] }
        },
        "the stuck peer dropped",
    )
    .await;
    assert!(a
        .peers()
        .await
        .unwrap()
        .iter()
        .all(|p| *p != identity.peer_id()));
    assert_eq!(
        messages(&mut events, 200).await.len(),
        200,
        "the honest peer got every broadcast"
    );
    let stats = a.stats().await.unwrap();
    assert_eq!(stats.stalled_disconnects, 1, "{stats:?}");
    drop(stuck);
}

/// A peer restarted with the same identity while the node still holds its old, silent
/// connection (here: through a stalled proxy that never forwards the close) is let in at once,
/// and the stale connection is the one dropped; it used to be refused as a duplicate until the
/// idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_restarted_with_the_same_identity_replaces_its_stale_connection() {
    let a = node().await;
    let keypair = Keypair::generate();
    let proxy = rs2p_testkit::proxy::ChaosProxy::spawn(
        "127.0.0.1:0".parse().expect("addr"),
        a.local_addr(),
    )
    .expect("proxy");
    let old = MeshSocket::bind(MeshOptions {
        keypair: Some(keypair.clone()),
        ..MeshOptions::default()
    })
    .await
    .expect("bind");
    old.connect(proxy.local_addr()).await.expect("connect");
    wait_for(
        || async { a.peers().await.unwrap().contains(&old.local_id()) },
        "a sees the old peer",
    )
    .await;
    // The old process dies, but its close never reaches `a`.
    proxy.stall();
    old.close().await.expect("close");
    drop(old);
    let new = MeshSocket::bind(MeshOptions {
        keypair: Some(keypair),
        ..MeshOptions::default()
    })
    .await
    .expect("bind");
    new.connect(a.local_addr()).await.expect("connect");
    wait_for(
        || async { new.peers().await.unwrap().contains(&a.local_id()) },
        "the restarted peer to be connected to a",
    )
    .await;
    // And it stays connected (the stale connection, not the new one, was dropped).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(new.peers().await.unwrap().contains(&a.local_id()));
    assert!(a.peers().await.unwrap().contains(&new.local_id()));
}

/// A node refused by a full bootstrap node is told where the others are before the connection
/// closes, and joins the mesh through them (it used to redial the full node forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_refused_by_a_full_bootstrap_node_finds_the_others() {
    let mut full = MeshOptions::default();
    full.config.max_peers = 2;
    let a = MeshSocket::bind(full).await.expect("bind");
    let b = node().await;
    let c = node().await;
    b.connect(a.local_addr()).await.expect("b");
    c.connect(a.local_addr()).await.expect("c");
    wait_for(|| async { a.peers().await.unwrap().len() == 2 }, "a full").await;
    let d = node().await;
    // The handshake completes, then `a` refuses: the connect may fail or succeed briefly.
    let _ = d.connect(a.local_addr()).await;
    wait_for(
        || async {
            let p = d.peers().await.unwrap();
            p.contains(&b.local_id()) || p.contains(&c.local_id())
        },
        "d to reach b or c through a's list",
    )
    .await;
    assert!(a.peers().await.unwrap().len() <= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_a_peer_already_connected_answers_at_once() {
    // c learns b from a and one of them dials the other; c then asks to connect to b's address.
    // Nothing needs dialing, and the call used to wait for an answer that never came.
    let (a, b, c) = (node().await, node().await, node().await);
    b.connect(a.local_addr()).await.unwrap();
    c.connect(a.local_addr()).await.unwrap();
    wait_for_peers(&c, 2, "c to find b through a").await;
    let got = tokio::time::timeout(Duration::from_secs(20), c.connect(b.local_addr()))
        .await
        .expect("connect answers instead of hanging")
        .unwrap();
    assert_eq!(got, b.local_id());
    // And again, now that the address is marked to be kept.
    let again = tokio::time::timeout(Duration::from_secs(20), c.connect(b.local_addr()))
        .await
        .expect("connect answers instead of hanging")
        .unwrap();
    assert_eq!(again, b.local_id());
    for n in [a, b, c] {
        n.close().await.unwrap();
    }
}

/// Over real TCP, in a ring with chords (each node dials the next and the third next, so floods
/// are relayed): every broadcast reaches every node exactly once, and once each origin has
/// flooded, the relay trees have pruned the links that brought duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_relaying_mesh_relay_trees_prune_duplicates_and_every_broadcast_arrives_once() {
    let n = 12;
    let mut nodes = Vec::new();
    for _ in 0..n {
        let mut o = MeshOptions::default();
        o.config.min_peers = 0;
        nodes.push(MeshSocket::bind(o).await.unwrap());
    }
    for i in 0..n {
        for d in [1, 3] {
            let to = nodes[(i + d) % n].local_addr();
            nodes[i].connect(to).await.unwrap();
        }
    }
    for (i, s) in nodes.iter().enumerate() {
        wait_for_peers(s, 4, &format!("node {i}'s four links")).await;
    }
    let mut streams: Vec<_> = nodes.iter().map(|s| s.events()).collect();
    let duplicates = |nodes: Vec<MeshSocket>| async move {
        let mut d = 0;
        for s in &nodes {
            d += s.stats().await.unwrap().duplicates;
        }
        d
    };
    let mut per_round = Vec::new();
    for round in 0..4 {
        let before = duplicates(nodes.clone()).await;
        for (i, s) in nodes.iter().enumerate() {
            s.broadcast("/test/1", format!("round {round} from {i}"))
                .await
                .unwrap();
        }
        for (i, s) in streams.iter_mut().enumerate() {
            let mut got = messages(s, n - 1).await;
            got.sort();
            got.dedup();
            assert_eq!(
                got.len(),
                n - 1,
                "round {round}: node {i} got every broadcast"
            );
        }
        per_round.push(duplicates(nodes.clone()).await - before);
    }
    let mut prunes = 0;
    for (i, s) in nodes.iter().enumerate() {
        let st = s.stats().await.unwrap();
        assert_eq!(
            st.delivered,
            4 * (n as u64 - 1),
            "node {i}: each exactly once"
        );
        prunes += st.tree_prunes;
    }
    assert!(prunes > 0, "duplicates pruned links");
    assert!(
        per_round[3] < per_round[0],
        "duplicates per round fall as trees form: {per_round:?}"
    );
}

/// A handler that takes 2 ms per message, as a node busy with heavy messages does, and notes who
/// sent each message in the order it handled them.
struct Slow(std::sync::Arc<std::sync::Mutex<Vec<rs2p_mesh::PeerId>>>);

impl rs2p_mesh::Handler for Slow {
    fn protocol(&self) -> &str {
        "/test/slow/1"
    }
    fn on_message(
        &mut self,
        _cx: &mut rs2p_mesh::Context<'_>,
        msg: rs2p_mesh::InboundMessage,
    ) -> rs2p_mesh::Verdict {
        std::thread::sleep(Duration::from_millis(2));
        self.0.lock().unwrap().push(msg.from);
        rs2p_mesh::Verdict::Accept
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_sends_faster_than_the_node_handles_does_not_queue_ahead_of_another_peer() {
    let n = node().await;
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    n.register(Slow(log.clone())).await.unwrap();
    let (a, b) = (node().await, node().await);
    let id = a.connect(n.local_addr()).await.unwrap();
    b.connect(n.local_addr()).await.unwrap();
    wait_for_peers(&n, 2, "both peers").await;
    // A sends 400 messages of 32 KiB, 0.8 s of handling, as fast as its connection takes them.
    const FROM_A: usize = 400;
    for _ in 0..FROM_A {
        a.whisper(id, "/test/slow/1", vec![7u8; 32 * 1024])
            .await
            .unwrap();
    }
    // Then B sends one. A's messages that the node read before B's are handled before it: with
    // one queue for every connection, the node reads all of A's backlog ahead of B's message; with
    // a bound per connection, B's waits behind a few of A's (256 KiB of them), not all.
    b.whisper(id, "/test/slow/1", "from b").await.unwrap();
    wait_for(
        || {
            let log = log.clone();
            async move { log.lock().unwrap().len() == FROM_A + 1 }
        },
        "every message handled",
    )
    .await;
    let log = log.lock().unwrap().clone();
    let (a_id, b_id) = (a.local_id(), b.local_id());
    assert_eq!(
        log.iter().filter(|p| **p == a_id).count(),
        FROM_A,
        "all of A's"
    );
    let before_b = log.iter().position(|p| *p == b_id).expect("B's message");
    assert!(
        before_b < FROM_A / 2,
        "B's message was handled after {before_b} of A's {FROM_A}"
    );
}
