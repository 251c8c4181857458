//! The chord socket over real TCP on loopback: every API call, a ring of several nodes, a node
//! killed mid-run whose keys stay readable, and typed errors for bad arguments.

use std::time::Duration;

use rs2p_chord::{ChordError, ChordOptions, ChordSocket};

async fn ring(n: usize) -> Vec<ChordSocket> {
    let mut opts = ChordOptions::default();
    opts.chord.stabilize = Duration::from_millis(200);
    let mut nodes = Vec::new();
    for i in 0..n {
        let s = ChordSocket::bind(opts.clone()).await.expect("bind");
        if i > 0 {
            let via: &ChordSocket = &nodes[i - 1];
            s.mesh()
                .connect(via.mesh().local_addr())
                .await
                .expect("connect");
            assert!(
                s.wait_joined(Duration::from_secs(20)).await,
                "node {i} joined"
            );
        }
        nodes.push(s);
    }
    // Let stabilisation settle successors, fingers and replicas.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dict_call_works_across_the_ring() {
    let nodes = ring(5).await;
    let (a, b, c) = (&nodes[0], &nodes[2], &nodes[4]);

    a.set("alpha", "1").await.expect("set");
    a.set("测试", b"bytes\x00".to_vec()).await.expect("set");
    assert_eq!(
        c.get("alpha").await.expect("get").as_deref(),
        Some(&b"1"[..])
    );
    assert_eq!(
        b.get("测试").await.expect("get").as_deref(),
        Some(&b"bytes\x00"[..])
    );
    assert_eq!(b.get("missing").await.expect("get"), None);
    assert!(c.contains("alpha").await.expect("contains"));
    assert!(!c.contains("beta").await.expect("contains"));

    b.update([("k1", "v1"), ("k2", "v2"), ("k3", "v3")])
        .await
        .expect("update");
    assert_eq!(a.len().await.expect("len"), 5);
    let keys = c.keys().await.expect("keys");
    assert_eq!(keys.len(), 5);
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "sorted");
    let items = a.items().await.expect("items");
    assert!(items.contains(&("k2".into(), "v2".into())));
    let values = b.values().await.expect("values");
    assert_eq!(values.len(), 5);

    // Overwrite from another node, then delete.
    c.set("alpha", "2").await.expect("overwrite");
    assert_eq!(
        a.get("alpha").await.expect("get").as_deref(),
        Some(&b"2"[..])
    );
    c.del("alpha").await.expect("del");
    assert_eq!(a.get("alpha").await.expect("get"), None);
    assert_eq!(b.pop("k1").await.expect("pop").as_ref(), b"v1");
    assert_eq!(b.pop("k1").await, Err(ChordError::NotFound));
    let (k, _) = a.popitem().await.expect("popitem");
    assert!(!c.contains(&k).await.expect("contains"));
    assert_eq!(c.len().await.expect("len"), 2);
    assert!(!a.is_empty().await.expect("is_empty"));

    // Bad arguments are typed errors, not panics.
    assert!(matches!(
        a.set("", "x").await,
        Err(ChordError::TooLarge { .. })
    ));
    let big = vec![0u8; 300 * 1024];
    assert!(matches!(
        a.set("big", &big).await,
        Err(ChordError::TooLarge { .. })
    ));

    for n in &nodes {
        n.close().await.expect("close");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_stay_readable_when_a_node_is_killed_and_when_one_leaves() {
    let nodes = ring(6).await;
    for i in 0..60 {
        nodes[i % 6]
            .set(format!("key-{i}"), format!("v{i}"))
            .await
            .expect("set");
    }
    // Kill one without a goodbye from the chord layer (its connections just close), and let
    // another leave cleanly.
    nodes[3].mesh().close().await.expect("kill");
    nodes[5].close().await.expect("leave");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for i in 0..60 {
        let got = nodes[i % 3]
            .get(format!("key-{i}"))
            .await
            .unwrap_or_else(|e| panic!("get key-{i}: {e}"));
        assert_eq!(got, Some(format!("v{i}").into()), "key-{i}");
    }
    assert_eq!(nodes[0].len().await.expect("len"), 60);
    for n in [0, 1, 2, 4] {
        nodes[n].close().await.expect("close");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_node_is_a_ring_of_one_and_a_node_cut_off_answers_without_hanging() {
    let mut opts = ChordOptions::default();
    opts.chord.request_timeout = Duration::from_millis(200);
    opts.chord.attempts = 2;
    let a = ChordSocket::bind(opts.clone()).await.expect("bind");
    a.set("k", "v").await.expect("set alone");
    assert_eq!(a.get("k").await.expect("get").as_deref(), Some(&b"v"[..]));
    assert_eq!(a.keys().await.expect("keys"), vec![bytes::Bytes::from("k")]);

    // A second node joins; the first one's key moves to its owner and stays readable.
    let b = ChordSocket::bind(opts).await.expect("bind");
    b.mesh()
        .connect(a.mesh().local_addr())
        .await
        .expect("connect");
    assert!(
        b.wait_joined(Duration::from_secs(10)).await
            || a.wait_joined(Duration::from_secs(10)).await
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(b.get("k").await.expect("get").as_deref(), Some(&b"v"[..]));

    // Cut b off: it becomes a ring of one again and answers from what it holds, never hangs.
    // (A lookup that cannot complete failing with `Unreachable` is tested in sim_chord.)
    a.mesh().close().await.expect("close a");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(30), b.get("anything")).await;
    assert!(r.is_ok(), "no hang (took {:?})", started.elapsed());
    b.close().await.expect("close");
}

/// A configuration whose largest messages would not fit in a mesh frame is refused at bind,
/// with a typed error, before anything starts: every peer would refuse those messages, and the
/// connection with them, the first time a large value moved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_limit_that_does_not_fit_the_frames_is_refused_at_bind() {
    let mut opts = ChordOptions::default();
    opts.chord.max_value_len = 900 * 1024;
    match ChordSocket::bind(opts).await {
        Err(ChordError::Config(why)) => assert!(why.contains("max_frame_len"), "{why}"),
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("a 900 KiB value limit with 1 MiB frames was accepted"),
    }
    let mut opts = ChordOptions::default();
    opts.chord.max_value_len = 900 * 1024;
    opts.mesh.config.max_frame_len = 2 << 20;
    let s = ChordSocket::bind(opts)
        .await
        .expect("larger frames make room");
    let _ = s.close().await;
}
