//! Limits under attack, over real TCP on loopback: a connect storm never takes a node past its
//! limits and honest peers still get in; the node's memory stays bounded (printed).

use std::time::Duration;

use rs2p_mesh::{MeshConfig, MeshOptions, MeshSocket};
use rs2p_tests::handshake_as_new_peer;

fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_storm_of_ten_times_max_peers_stays_within_limits_and_honest_peers_get_in() {
    let mut config = MeshConfig::default();
    config.max_peers = 4;
    config.max_pending_handshakes = 8;
    config.handshake_timeout = Duration::from_secs(1);
    config.idle_timeout = Duration::from_secs(2);
    let node = MeshSocket::bind(MeshOptions {
        config: config.clone(),
        ..MeshOptions::default()
    })
    .await
    .expect("bind");
    let addr = node.local_addr();
    let rss_before = rss_kib();

    // 40 connections (10 × max_peers) at once: half never say a word, half complete the
    // handshake with their own identities and then go silent.
    let mut storm = Vec::new();
    for i in 0..40 {
        storm.push(tokio::spawn(async move {
            let Ok(stream) = tokio::net::TcpStream::connect(addr).await else {
                return None;
            };
            if i % 2 == 0 {
                tokio::time::sleep(Duration::from_secs(5)).await;
                drop(stream);
                return None;
            }
            let conn = handshake_as_new_peer(stream, Duration::from_secs(2))
                .await
                .ok();
            tokio::time::sleep(Duration::from_secs(5)).await;
            conn.map(|_| ())
        }));
    }

    // An honest peer that keeps trying.
    let mut honest_cfg = MeshConfig::default();
    honest_cfg.backoff_max = Duration::from_millis(500);
    let honest = MeshSocket::bind(MeshOptions {
        config: honest_cfg,
        ..MeshOptions::default()
    })
    .await
    .expect("bind");
    // The first attempt may be refused during the storm; the address stays persistent and is
    // redialed with backoff.
    let _ = honest.connect(addr).await;

    // Sample the limits while the storm lasts, until the honest peer is in (a bound against
    // hangs, not a timing assertion).
    let (mut max_peers, mut max_pending) = (0, 0);
    let mut honest_in = false;
    for _ in 0..600 {
        let peers = node.peers().await.expect("peers");
        let stats = node.stats().await.expect("stats");
        max_peers = max_peers.max(peers.len());
        max_pending = max_pending.max(stats.pending_handshakes);
        if peers.contains(&honest.local_id()) {
            honest_in = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stats = node.stats().await.expect("stats");
    println!(
        "storm: most peers {max_peers} (limit 4), most pending handshakes {max_pending} (limit 8), refused before the handshake {}, limit disconnects {}",
        stats.refused_incoming, stats.limit_disconnects
    );
    assert!(honest_in, "the honest peer got in");
    assert!(max_peers <= 4, "peers {max_peers}");
    assert!(max_pending <= 8, "pending {max_pending}");
    for s in storm {
        let _ = s.await;
    }
    // The node still works for the honest peer.
    let mut events = honest.events();
    node.broadcast("/test/1", "after the storm")
        .await
        .expect("broadcast");
    let got = tokio::time::timeout(Duration::from_secs(20), async {
        use rs2p_mesh::net::EventItem;
        use rs2p_mesh::MeshEvent;
        loop {
            if let Some(EventItem::Event(MeshEvent::Message { payload, .. })) = events.next().await
            {
                break payload;
            }
        }
    })
    .await
    .expect("the broadcast arrives");
    assert_eq!(&got[..], b"after the storm");
    if let (Some(a), Some(b)) = (rss_before, rss_kib()) {
        println!("resident memory of this process: {a} KiB before, {b} KiB after the storm");
    }
}
