//! The sync socket over real TCP on loopback: every API call, the seeds' examples, events, join
//! and repair.

use std::time::Duration;

use bytes::Bytes;
use rs2p_mesh::MeshOptions;
use rs2p_sync::{
    DelError, SetError, SyncConfig, SyncError, SyncEvent, SyncEventItem, SyncOptions, SyncSocket,
};

async fn node(cfg: SyncConfig) -> SyncSocket {
    SyncSocket::bind(SyncOptions {
        mesh: MeshOptions::default(),
        sync: cfg,
        data: None,
    })
    .await
    .unwrap()
}

async fn cluster(n: usize, cfg: SyncConfig) -> Vec<SyncSocket> {
    let first = node(cfg.clone()).await;
    let mut v = vec![first.clone()];
    for _ in 1..n {
        let s = node(cfg.clone()).await;
        s.mesh().connect(first.mesh().local_addr()).await.unwrap();
        v.push(s);
    }
    for s in &v {
        until(
            || async { s.mesh().peers().await.unwrap().len() == n - 1 },
            "full mesh",
        )
        .await;
    }
    v
}

async fn until<F: std::future::Future<Output = bool>>(mut f: impl FnMut() -> F, what: &str) {
    // A bound against hangs, not a timing assertion: generous for a loaded 2-core machine.
    for _ in 0..2000 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn converge(nodes: &[SyncSocket]) {
    until(
        || async {
            let first = nodes[0].items();
            nodes.iter().all(|n| n.items() == first)
        },
        "replicas to agree",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_reach_every_peer_and_leases_refuse_others() {
    let n = cluster(3, SyncConfig::default()).await;
    let (a, b, c) = (&n[0], &n[1], &n[2]);
    a.set("test key", "value").await.unwrap();
    a.set(b"bytes key".as_slice(), b"v2".to_vec())
        .await
        .unwrap();
    a.set("测试", "test").await.unwrap();
    // Each peer gets the writes on its own link from `a`: wait for both.
    until(
        || async { b.len() == 3 && c.len() == 3 },
        "b and c to hold 3 keys",
    )
    .await;
    assert_eq!(b.get("test key"), Some(Bytes::from("value")));
    assert_eq!(
        c.get("测试".as_bytes()),
        Some(Bytes::from("test")),
        "the same text is the same key"
    );
    assert_eq!(c.get(String::from("测试")), Some(Bytes::from("test")));
    assert!(c.get("missing").is_none());
    assert_eq!(b.meta("test key").unwrap().0, a.local_id());

    // Another peer cannot overwrite, delete, pop or popitem a leased key.
    match b.set("test key", "mine").await {
        Err(SetError::LeaseHeld { owner, until }) => {
            assert_eq!(owner, a.local_id());
            assert!(until > 0);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        b.del("test key").await,
        Err(DelError::LeaseHeld { .. })
    ));
    assert!(matches!(
        b.pop("test key").await,
        Err(DelError::LeaseHeld { .. })
    ));
    assert!(matches!(b.popitem().await, Err(DelError::LeaseHeld { .. })));
    assert!(matches!(
        b.update([("new", "x"), ("test key", "y")]).await,
        Err(SetError::LeaseHeld { .. })
    ));
    assert!(b.get("new").is_none(), "a refused update writes nothing");

    // The owner may change its value (renewing the lease) and delete it (relinquishing it).
    a.set("test key", "changed").await.unwrap();
    until(
        || async { b.get("test key") == Some(Bytes::from("changed")) },
        "the change",
    )
    .await;
    a.del("test key").await.unwrap();
    until(|| async { b.get("test key").is_none() }, "the delete").await;
    b.set("test key", "b's now").await.unwrap();
    until(
        || async { a.get("test key") == Some(Bytes::from("b's now")) },
        "b's write",
    )
    .await;
    assert!(matches!(
        a.set("test key", "again").await,
        Err(SetError::LeaseHeld { .. })
    ));
    converge(&n).await;
    assert_eq!(
        a.keys(),
        vec![
            Bytes::from("bytes key"),
            Bytes::from("test key"),
            Bytes::from("测试")
        ]
    );
    assert_eq!(a.values().len(), 3);
    assert!(matches!(a.del("never set").await, Err(DelError::NotFound)));
    assert!(matches!(a.pop("never set").await, Err(DelError::NotFound)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_pop_popitem_and_events() {
    let n = cluster(2, SyncConfig::default()).await;
    let (a, b) = (&n[0], &n[1]);
    let mut events = b.subscribe();
    a.update([("k1", "v1"), ("k2", "v2"), ("k3", "v3")])
        .await
        .unwrap();
    until(|| async { b.len() == 3 }, "the update").await;
    assert_eq!(a.pop("k1").await.unwrap(), Bytes::from("v1"));
    let (k, v) = a.popitem().await.unwrap();
    assert_eq!((k, v), (Bytes::from("k2"), Bytes::from("v2")));
    until(|| async { b.len() == 1 }, "the pops").await;
    assert!(a.popitem().await.is_ok());
    assert!(matches!(a.popitem().await, Err(DelError::NotFound)));
    let mut seen = Vec::new();
    while seen.len() < 6 {
        match tokio::time::timeout(Duration::from_secs(20), events.next())
            .await
            .unwrap()
        {
            Some(SyncEventItem::Event(e)) => seen.push(e),
            other => panic!("{other:?}"),
        }
    }
    let updated = seen
        .iter()
        .filter(|e| matches!(e, SyncEvent::Updated { owner, .. } if *owner == a.local_id()))
        .count();
    let deleted = seen
        .iter()
        .filter(|e| matches!(e, SyncEvent::Deleted { .. }))
        .count();
    assert_eq!((updated, deleted), (3, 3), "{seen:?}");
    assert!(seen.iter().any(|e| matches!(e, SyncEvent::Updated { key, value, timestamp, .. } if key == "k2" && value == "v2" && *timestamp > 0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_many_answers_each_write_on_its_own() {
    let n = cluster(2, SyncConfig::default()).await;
    let (a, b) = (&n[0], &n[1]);
    b.set("taken", "by b").await.unwrap();
    until(|| async { a.contains("taken") }, "b's write").await;
    let big = vec![b'x'; 200 * 1024];
    let results = a
        .set_many([
            (&b"one"[..], &b"1"[..]),
            (b"taken", b"by a"),
            (b"", b"an empty key"),
            (b"two", b"2"),
            (b"big", &big),
            (b"two", b"2 again"),
        ])
        .await;
    assert!(results[0].is_ok(), "{results:?}");
    assert!(
        matches!(results[1], Err(SetError::LeaseHeld { owner, .. }) if owner == b.local_id()),
        "{results:?}"
    );
    assert!(
        matches!(results[2], Err(SetError::BadKey { .. })),
        "{results:?}"
    );
    assert!(results[3..].iter().all(Result::is_ok), "{results:?}");
    assert_eq!(
        a.get("two").unwrap(),
        "2 again",
        "the later write to a key stands"
    );
    // The last write changes no count: wait for it by its value.
    until(
        || async { b.len() == 4 && b.get("two").is_some_and(|v| v == "2 again") },
        "the accepted writes",
    )
    .await;
    assert_eq!(b.get("taken").unwrap(), "by b");
    assert_eq!(b.get("big").unwrap().len(), big.len());
    assert!(a.set_many(Vec::<(&str, &str)>::new()).await.is_empty());
}

/// An update larger than a frame goes out as several batches (it was once flooded as one frame
/// over the mesh's limit and dropped, so only periodic repair delivered it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_larger_than_a_frame_reaches_every_peer_by_flood() {
    let mut cfg = SyncConfig::default();
    // No periodic repair: only the flood can deliver the update.
    cfg.repair_interval = Duration::from_secs(3600);
    let n = cluster(3, cfg).await;
    let value = vec![b'v'; 200 * 1024];
    let items: Vec<(String, Vec<u8>)> = (0..16)
        .map(|i| (format!("k{i:02}"), value.clone()))
        .collect();
    n[0].update(items.clone()).await.unwrap();
    for s in &n[1..] {
        until(|| async { s.len() == 16 }, "the 3 MiB update").await;
        for (k, v) in &items {
            assert_eq!(s.get(k).as_deref(), Some(&v[..]));
        }
    }
}

/// Many tiny writes: the batch bound counts each record's own fields, not only its key and value
/// (60 000 one-byte values once made two batches of about 1.2 MB each, over the frame limit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_of_many_tiny_writes_reaches_every_peer_by_flood() {
    let mut cfg = SyncConfig::default();
    cfg.repair_interval = Duration::from_secs(3600);
    let n = cluster(2, cfg).await;
    let items: Vec<(String, &str)> = (0..60_000).map(|i| (format!("{i}"), "v")).collect();
    n[0].update(items).await.unwrap();
    until(|| async { n[1].len() == 60_000 }, "60 000 tiny writes").await;
    assert_eq!(n[1].get("59999").as_deref(), Some(&b"v"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_whose_largest_write_fits_no_frame_are_refused_at_bind() {
    let mut sync = SyncConfig::default();
    sync.max_value_len = 2 * 1024 * 1024;
    let r = SyncSocket::bind(SyncOptions {
        mesh: MeshOptions::default(),
        sync: sync.clone(),
        data: None,
    })
    .await;
    match r {
        Err(e @ SyncError::Config(_)) => assert!(e.to_string().contains("max_frame_len"), "{e}"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a 2 MiB value cannot travel in 1 MiB frames"),
    }
    let mut mesh = MeshOptions::default();
    mesh.config.max_frame_len = 4 * 1024 * 1024;
    let s = SyncSocket::bind(SyncOptions {
        mesh,
        sync,
        data: None,
    })
    .await
    .expect("frames of 4 MiB carry it");
    s.set("big", vec![b'x'; 2 * 1024 * 1024]).await.unwrap();
    s.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_leasing_the_last_writer_wins() {
    let mut cfg = SyncConfig::default();
    cfg.leasing = false;
    let n = cluster(3, cfg).await;
    n[0].set("k", "first").await.unwrap();
    until(|| async { n[1].get("k").is_some() }, "first").await;
    tokio::time::sleep(Duration::from_millis(2)).await;
    n[1].set("k", "second").await.unwrap();
    converge(&n).await;
    assert_eq!(n[2].get("k"), Some(Bytes::from("second")));
    n[2].del("k").await.unwrap();
    converge(&n).await;
    assert!(n[0].get("k").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_peer_receives_the_whole_dictionary() {
    let n = cluster(2, SyncConfig::default()).await;
    let items: Vec<(String, String)> = (0..5000)
        .map(|i| (format!("key{i}"), format!("value{i}")))
        .collect();
    for chunk in items.chunks(500) {
        n[0].update(chunk.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .await
            .unwrap();
    }
    n[0].del("key7").await.unwrap();
    let late = node(SyncConfig::default()).await;
    late.mesh().connect(n[1].mesh().local_addr()).await.unwrap();
    until(
        || async { late.len() == 4999 },
        "the newcomer to hold everything",
    )
    .await;
    assert_eq!(late.items(), n[0].items());
    assert!(late.get("key7").is_none(), "a deleted key stays deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_that_diverged_while_apart_repair_the_difference() {
    let a = node(SyncConfig::default()).await;
    let b = node(SyncConfig::default()).await;
    // Apart: both write, including each a key the other also writes.
    a.update((0..300).map(|i| (format!("a{i}"), "x")))
        .await
        .unwrap();
    b.update((0..200).map(|i| (format!("b{i}"), "y")))
        .await
        .unwrap();
    a.set("both", "from a").await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    b.set("both", "from b").await.unwrap();
    // Together: digests differ, each side sends only what the other lacks.
    a.mesh().connect(b.mesh().local_addr()).await.unwrap();
    converge(&[a.clone(), b.clone()]).await;
    assert_eq!(a.len(), 501);
    // Both wrote "both" with a lease; the earlier write holds.
    assert_eq!(b.get("both"), Some(Bytes::from("from a")));
    let sent = a.stats().records_sent_repair + b.stats().records_sent_repair;
    assert!(sent >= 502, "every missing record was sent ({sent})");
    assert!(sent < 1100, "not much more than the difference ({sent})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_after_missing_one_percent_costs_the_difference_not_the_dictionary() {
    // No automatic redialing, so the missed writes really are missed.
    let quiet = || {
        let mut mesh = MeshOptions::default();
        mesh.config.min_peers = 0;
        SyncOptions {
            mesh,
            sync: SyncConfig::default(),
            data: None,
        }
    };
    let a = SyncSocket::bind(quiet()).await.unwrap();
    let b = SyncSocket::bind(quiet()).await.unwrap();
    for chunk in 0..20 {
        a.update((0..1000).map(|i| {
            (
                format!("key-{chunk}-{i:04}"),
                format!("a value of some length {i}"),
            )
        }))
        .await
        .unwrap();
    }
    b.mesh().connect(a.mesh().local_addr()).await.unwrap();
    until(|| async { b.len() == 20_000 }, "the join").await;
    let dictionary_bytes: u64 = a.stats().bytes_sent_repair;

    b.mesh().disconnect(a.local_id()).await.unwrap();
    until(
        || async { a.mesh().peers().await.unwrap().is_empty() },
        "the disconnect",
    )
    .await;
    a.update((0..200).map(|i| {
        (
            format!("missed-{i:03}"),
            format!("a value of some length {i}"),
        )
    }))
    .await
    .unwrap();

    let sent = |s: &SyncSocket| {
        let m = s.mesh().clone();
        async move { m.stats().await.unwrap().sent.bytes }
    };
    let before = sent(&a).await + sent(&b).await;
    b.mesh().connect(a.mesh().local_addr()).await.unwrap();
    until(|| async { b.len() == 20_200 }, "the repair").await;
    converge(&[a.clone(), b.clone()]).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let repair = sent(&a).await + sent(&b).await - before;
    println!("join sent {dictionary_bytes} B of records; repairing 200 missed keys took {repair} B on the wire");
    assert!(
        repair * 10 < dictionary_bytes,
        "repair ({repair} B) must not scale with the dictionary ({dictionary_bytes} B)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_nodes_share_a_dictionary_of_their_own() {
    let mut unsigned = SyncConfig::default();
    unsigned.signed = false;
    let a = node(unsigned.clone()).await;
    let b = node(unsigned.clone()).await;
    b.mesh().connect(a.mesh().local_addr()).await.unwrap();
    a.set("k", "from a").await.unwrap();
    until(|| async { b.get("k").is_some() }, "b to get a's write").await;
    // Leases hold between unsigned nodes too.
    assert!(matches!(
        b.set("k", "from b").await,
        Err(SetError::LeaseHeld { .. })
    ));
    // A newcomer receives the whole (unsigned) dictionary, in parts when it is large.
    a.update((0..3000).map(|i| (format!("key{i:05}"), [7u8; 100])))
        .await
        .unwrap();
    let c = node(unsigned).await;
    c.mesh().connect(b.mesh().local_addr()).await.unwrap();
    until(
        || async { c.len() == 3001 },
        "the newcomer to hold everything",
    )
    .await;
    assert_eq!(c.get("k").as_deref(), Some(b"from a".as_slice()));
    converge(&[a.clone(), b.clone(), c.clone()]).await;
    for s in [a, b, c] {
        s.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_and_unsigned_nodes_share_a_mesh_but_not_a_dictionary() {
    // Two unsigned nodes and a signed one, all connected. Each kind floods a protocol the other
    // does not run: the floods are dropped as unverifiable, never held against the sender (this
    // used to count as a bad signature, so the kinds banned each other and the links broke).
    let mut unsigned = SyncConfig::default();
    unsigned.signed = false;
    let a = node(unsigned.clone()).await;
    let b = node(unsigned).await;
    let s = node(SyncConfig::default()).await;
    b.mesh().connect(a.mesh().local_addr()).await.unwrap();
    s.mesh().connect(a.mesh().local_addr()).await.unwrap();
    s.mesh().connect(b.mesh().local_addr()).await.unwrap();
    // Well over `max_strikes` floods each way.
    for i in 0..20 {
        a.set(format!("a{i}"), "unsigned").await.unwrap();
        s.set(format!("s{i}"), "signed").await.unwrap();
    }
    a.update((0..3000).map(|i| (format!("key{i:05}"), [7u8; 100])))
        .await
        .unwrap();
    until(|| async { b.len() == 3020 }, "b to get a's writes").await;
    converge(&[a.clone(), b.clone()]).await;
    assert_eq!(s.len(), 20, "the signed node keeps its own dictionary");
    assert!(a.get("s0").is_none() && b.get("s0").is_none());
    for n in [&a, &b, &s] {
        let st = n.mesh().stats().await.unwrap();
        assert_eq!(st.bad_signatures, 0, "no flood counted as forged");
        assert_eq!(st.peers.len(), 2, "every link still up");
        assert!(st.peers.values().all(|p| p.strikes == 0));
    }
    let st = s.mesh().stats().await.unwrap();
    assert!(
        st.unverifiable > 0,
        "the signed node saw the unsigned floods"
    );
    for n in [a, b, s] {
        n.close().await.unwrap();
    }
}
