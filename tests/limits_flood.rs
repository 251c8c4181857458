//! Limits under attack, over real TCP on loopback: a peer over its frame rate is throttled
//! (nothing lost), one that keeps flooding is disconnected and banned, and others still get in.

use std::time::Duration;

use rs2p_mesh::{MeshConfig, MeshOptions, MeshSocket};
use rs2p_tests::handshake_as_new_peer;

/// A peer driven by hand: its id and its connection.
async fn raw_peer(
    addr: std::net::SocketAddr,
) -> (rs2p_base::PeerId, rs2p_base::net::SecureConnection) {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    handshake_as_new_peer(stream, Duration::from_secs(5))
        .await
        .expect("handshake")
}

fn direct(i: u32) -> bytes::Bytes {
    use rs2p_base::wire::pb;
    rs2p_base::wire::encode(&pb::MeshFrame {
        kind: Some(pb::mesh_frame::Kind::Direct(pb::Direct {
            protocol: "/flood/1".into(),
            payload: bytes::Bytes::from(i.to_le_bytes().to_vec()),
        })),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_over_the_rate_is_throttled_without_loss_and_a_flood_is_banned() {
    use rs2p_mesh::net::EventItem;
    use rs2p_mesh::MeshEvent;
    let mut config = MeshConfig::default();
    config.peer_rate = 200;
    config.peer_burst = 400;
    config.flood_ban_after = Duration::from_secs(2);
    let node = MeshSocket::bind(MeshOptions {
        config,
        ..MeshOptions::default()
    })
    .await
    .expect("bind");
    let addr = node.local_addr();

    // A burst of 1000 frames (2.5 × the burst allowance), then quiet: throttled, all delivered.
    let mut events = node.events();
    let (bursty_id, mut bursty) = raw_peer(addr).await;
    for i in 0..1000 {
        bursty.writer.queue(&direct(i));
    }
    bursty.writer.flush().await.expect("flush");
    let mut got = 0;
    while got < 1000 {
        match tokio::time::timeout(Duration::from_secs(20), events.next()).await {
            Ok(Some(EventItem::Event(MeshEvent::Message { .. }))) => got += 1,
            Ok(Some(_)) => {}
            other => panic!("after {got} of 1000 frames: {other:?}"),
        }
    }
    let stats = node.stats().await.expect("stats");
    assert!(stats.throttled > 0, "{stats:?}");
    assert_eq!(stats.limit_disconnects, 0, "a burst is not a flood");
    assert_eq!(node.peers().await.expect("peers").len(), 1);

    // A peer that keeps sending as fast as it can: throttled, then disconnected and banned.
    let (flooder_id, mut flooder) = raw_peer(addr).await;
    let flooder_task = tokio::spawn(async move {
        let mut i = 0u32;
        // Bounded in count and time; ends when the node hangs up.
        while i < 2_000_000 {
            for _ in 0..100 {
                flooder.writer.queue(&direct(i));
                i += 1;
            }
            let send = tokio::time::timeout(Duration::from_secs(1), flooder.writer.flush()).await;
            if !matches!(send, Ok(Ok(()))) {
                break;
            }
        }
        i
    });
    let mut banned = false;
    for _ in 0..600 {
        let stats = node.stats().await.expect("stats");
        if stats.limit_disconnects >= 1 {
            banned = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(banned, "the flooder was disconnected");
    let sent = tokio::time::timeout(Duration::from_secs(30), flooder_task)
        .await
        .expect("the flooder stops once hung up on")
        .expect("task");
    let stats = node.stats().await.expect("stats");
    println!(
        "flood: the flooder wrote {sent} frames before the node hung up; throttled {} times; received {} frames in all",
        stats.throttled, stats.received.frames
    );
    // The bursty peer is still there; the flooder is not, and cannot come back while banned.
    let peers = node.peers().await.expect("peers");
    assert!(peers.contains(&bursty_id), "{peers:?}");
    assert!(!peers.contains(&flooder_id), "{peers:?}");
    let again = handshake_as_new_peer(
        tokio::net::TcpStream::connect(addr).await.expect("connect"),
        Duration::from_secs(5),
    )
    .await;
    assert!(again.is_ok(), "other peers still get in");
}
