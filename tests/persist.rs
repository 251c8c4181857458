//! Data directories on real sockets: a restarted node keeps its id, leases and records; a whole
//! mesh restarted from its directories loses nothing; bad directories give typed errors.

use std::path::Path;
use std::time::Duration;

use rs2p_chord::{ChordOptions, ChordSocket};
use rs2p_mesh::{MeshOptions, Network};
use rs2p_sync::{
    DataOptions, PersistError, SetError, SyncConfig, SyncError, SyncOptions, SyncSocket,
};
use rs2p_tests::scratch_dir;

fn opts(dir: &Path, durable: bool) -> SyncOptions {
    SyncOptions {
        data: Some(DataOptions::new(dir).durable(durable)),
        ..SyncOptions::default()
    }
}

async fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_keeps_its_id_records_and_leases() {
    let dir = scratch_dir("restart");
    let a = SyncSocket::bind(opts(&dir, false)).await.unwrap();
    let id = a.local_id();
    a.update((0..300).map(|i| (format!("k{i}"), format!("v{i}"))))
        .await
        .unwrap();
    a.set("leased", "mine").await.unwrap();
    a.del("k7").await.unwrap();
    assert_eq!(a.pop("k8").await.unwrap().as_ref(), b"v8");
    let before = a.items();
    assert_eq!(before.len(), 299);

    // A peer learns the dictionary, so it sees the lease.
    let b = SyncSocket::bind(SyncOptions::default()).await.unwrap();
    b.mesh().connect(a.mesh().local_addr()).await.unwrap();
    wait_for("b to hold a's dictionary", || b.len() == 299).await;
    a.close().await.unwrap();

    let a = SyncSocket::bind(opts(&dir, false)).await.unwrap();
    assert_eq!(a.local_id(), id, "the same identity");
    assert_eq!(a.items(), before, "every record back");
    // Its lease is its own again: it may overwrite, the peer may not.
    a.set("leased", "still mine").await.unwrap();
    a.mesh().connect(b.mesh().local_addr()).await.unwrap();
    wait_for("b to see the new value", || {
        b.get("leased").is_some_and(|v| v.as_ref() == b"still mine")
    })
    .await;
    assert!(matches!(
        b.set("leased", "theirs").await,
        Err(SetError::LeaseHeld { owner, .. }) if owner == id
    ));
    // Closing writes what is queued: the new value is on disk by then.
    a.close().await.unwrap();
    let stats = a.disk_stats().expect("a data directory");
    assert!(stats.commits >= 1 && stats.keys_written >= 1, "{stats:?}");
    b.close().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsigned_node_restarts_with_its_unsigned_records_and_serves_them() {
    let dir = scratch_dir("unsigned");
    let unsigned = || {
        let mut o = opts(&dir, false);
        o.sync.signed = false;
        o
    };
    let a = SyncSocket::bind(unsigned()).await.unwrap();
    // A batch of many (kept once in `batches`) and a record alone (kept inline).
    a.update((0..200).map(|i| (format!("k{i}"), format!("v{i}"))))
        .await
        .unwrap();
    a.set("alone", "one").await.unwrap();
    let before = a.items();
    a.close().await.unwrap();
    let a = SyncSocket::bind(unsigned()).await.unwrap();
    assert_eq!(a.items(), before, "every record back");
    // A newcomer of the same kind receives them from the restarted node.
    let mut cfg = SyncConfig::default();
    cfg.signed = false;
    let b = SyncSocket::bind(SyncOptions {
        sync: cfg,
        ..SyncOptions::default()
    })
    .await
    .unwrap();
    b.mesh().connect(a.mesh().local_addr()).await.unwrap();
    wait_for("b to hold a's dictionary", || b.len() == 201).await;
    assert_eq!(b.items(), before);
    a.close().await.unwrap();
    b.close().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_mesh_stopped_and_started_from_its_directories_loses_nothing() {
    let dirs: Vec<_> = (0..3).map(|i| scratch_dir(&format!("mesh{i}"))).collect();
    let mut nodes = Vec::new();
    for (i, d) in dirs.iter().enumerate() {
        let n = SyncSocket::bind(opts(d, i == 0)).await.unwrap();
        if let Some(first) = nodes.first() {
            let first: &SyncSocket = first;
            n.mesh().connect(first.mesh().local_addr()).await.unwrap();
        }
        nodes.push(n);
    }
    for (i, n) in nodes.iter().enumerate() {
        n.update((0..200).map(|k| (format!("n{i}-{k}"), format!("{k}"))))
            .await
            .unwrap();
        n.set(format!("solo{i}"), "x").await.unwrap();
    }
    for n in &nodes {
        wait_for("every node to hold every key", || n.len() == 603).await;
    }
    let want = nodes[0].items();
    let ids: Vec<_> = nodes.iter().map(|n| n.local_id()).collect();
    for n in &nodes {
        n.close().await.unwrap();
    }
    drop(nodes);

    // Started again, each alone first: each already holds everything.
    let mut again = Vec::new();
    for (i, d) in dirs.iter().enumerate() {
        let n = SyncSocket::bind(opts(d, i == 0)).await.unwrap();
        assert_eq!(n.local_id(), ids[i]);
        assert_eq!(n.items(), want, "node {i} restored everything");
        again.push(n);
    }
    // And they still agree once connected, with nothing to repair.
    for n in &again[1..] {
        n.mesh()
            .connect(again[0].mesh().local_addr())
            .await
            .unwrap();
    }
    again[2].set("after", "restart").await.unwrap();
    for n in &again {
        wait_for("the write after the restart", || n.len() == 604).await;
    }
    for n in &again {
        n.close().await.unwrap();
    }
    for d in dirs {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_writes_are_on_disk_when_they_return() {
    let dir = scratch_dir("durable");
    let a = SyncSocket::bind(opts(&dir, true)).await.unwrap();
    for i in 0..50 {
        a.set(format!("k{i}"), "v").await.unwrap();
        let s = a.disk_stats().unwrap();
        // Every key so far is written: nothing is queued behind the acknowledgement.
        assert!(s.keys_written > i, "after {i}: {s:?}");
    }
    a.close().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

fn data_error(r: Result<SyncSocket, SyncError>) -> PersistError {
    match r {
        Err(SyncError::Data(e)) => e,
        Err(other) => panic!("expected a data directory error, got {other}"),
        Ok(_) => panic!("expected a data directory error, the node started"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_directories_are_refused_with_typed_errors() {
    // Not empty and not a data directory: nothing is written into it.
    let dir = scratch_dir("foreign-files");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("notes.txt"), "mine").unwrap();
    let e = data_error(SyncSocket::bind(opts(&dir, false)).await);
    assert!(matches!(e, PersistError::NotADataDir { .. }), "{e}");
    assert!(!dir.join(rs2p_persist_file()).exists());

    // A damaged database file, whole or truncated.
    let dir = scratch_dir("corrupt");
    let a = SyncSocket::bind(opts(&dir, false)).await.unwrap();
    a.update((0..100).map(|i| (format!("k{i}"), "v")))
        .await
        .unwrap();
    a.close().await.unwrap();
    drop(a);
    let file = dir.join(rs2p_persist_file());
    let good = std::fs::read(&file).unwrap();
    let mut garbage = good.clone();
    for b in garbage.iter_mut().take(4096) {
        *b ^= 0x5a;
    }
    std::fs::write(&file, &garbage).unwrap();
    let e = data_error(SyncSocket::bind(opts(&dir, false)).await);
    assert!(matches!(e, PersistError::Corrupt { .. }), "{e}");
    std::fs::write(&file, &good[..good.len() / 3]).unwrap();
    let e = data_error(SyncSocket::bind(opts(&dir, false)).await);
    assert!(matches!(e, PersistError::Corrupt { .. }), "{e}");

    // Another network's, another lease setting's, another socket kind's.
    let dir = scratch_dir("other");
    SyncSocket::bind(opts(&dir, false))
        .await
        .unwrap()
        .close()
        .await
        .unwrap();
    let mut o = opts(&dir, false);
    o.mesh = MeshOptions {
        network: Network::named("elsewhere"),
        ..MeshOptions::default()
    };
    let e = data_error(SyncSocket::bind(o).await);
    assert!(
        matches!(
            e,
            PersistError::Foreign {
                what: "network",
                ..
            }
        ),
        "{e}"
    );
    for change in [
        |c: &mut SyncConfig| c.leasing = false,
        |c: &mut SyncConfig| c.signed = false,
    ] {
        let mut o = opts(&dir, false);
        let mut cfg = SyncConfig::default();
        change(&mut cfg);
        o.sync = cfg;
        let e = data_error(SyncSocket::bind(o).await);
        assert!(
            matches!(
                e,
                PersistError::Foreign {
                    what: "settings",
                    ..
                }
            ),
            "{e}"
        );
    }
    let co = ChordOptions {
        data: Some(DataOptions::new(&dir)),
        ..ChordOptions::default()
    };
    match ChordSocket::bind(co).await {
        Err(e) => assert!(e.to_string().contains("kind"), "{e}"),
        Ok(_) => panic!("a sync directory opened as a chord node"),
    }
    // Another identity than the one given.
    let mut o = opts(&dir, false);
    o.mesh.keypair = Some(rs2p_base::Keypair::generate());
    let e = data_error(SyncSocket::bind(o).await);
    assert!(
        matches!(
            e,
            PersistError::Foreign {
                what: "identity",
                ..
            }
        ),
        "{e}"
    );

    // In use by a running node.
    let a = SyncSocket::bind(opts(&dir, false)).await.unwrap();
    let e = data_error(SyncSocket::bind(opts(&dir, false)).await);
    assert!(matches!(e, PersistError::InUse { .. }), "{e}");
    a.close().await.unwrap();
    // And fine again once it closed.
    SyncSocket::bind(opts(&dir, false))
        .await
        .unwrap()
        .close()
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

fn rs2p_persist_file() -> &'static str {
    "rs2p.redb"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chord_ring_restarted_from_its_directories_finds_every_key() {
    let dirs: Vec<_> = (0..3).map(|i| scratch_dir(&format!("ring{i}"))).collect();
    let start = |d: &Path| ChordOptions {
        data: Some(DataOptions::new(d)),
        ..ChordOptions::default()
    };
    let mut ring = Vec::new();
    for d in &dirs {
        let n = ChordSocket::bind(start(d)).await.unwrap();
        if let Some(first) = ring.first() {
            let first: &ChordSocket = first;
            n.mesh().connect(first.mesh().local_addr()).await.unwrap();
            assert!(n.wait_joined(Duration::from_secs(10)).await);
        }
        ring.push(n);
    }
    for i in 0..60 {
        ring[i % 3]
            .set(format!("k{i}"), format!("v{i}"))
            .await
            .unwrap();
    }
    let ids: Vec<_> = ring.iter().map(|n| n.local_id()).collect();
    // Killed, not left: the mesh closes without handing keys over.
    for n in &ring {
        n.mesh().close().await.unwrap();
    }
    drop(ring);
    tokio::time::sleep(Duration::from_millis(100)).await;

    let mut ring = Vec::new();
    for (i, d) in dirs.iter().enumerate() {
        let n = ChordSocket::bind(start(d)).await.unwrap();
        assert_eq!(n.local_id(), ids[i]);
        if let Some(first) = ring.first() {
            let first: &ChordSocket = first;
            n.mesh().connect(first.mesh().local_addr()).await.unwrap();
            assert!(n.wait_joined(Duration::from_secs(10)).await);
        }
        ring.push(n);
    }
    for i in 0..60 {
        let got = ring[(i + 1) % 3].get(format!("k{i}")).await.unwrap();
        assert_eq!(got.as_deref(), Some(format!("v{i}").as_bytes()), "k{i}");
    }
    for n in &ring {
        n.close().await.unwrap();
    }
    for d in dirs {
        let _ = std::fs::remove_dir_all(d);
    }
}
