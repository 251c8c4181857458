//! Ten mesh nodes on loopback: discovery from one address, and exactly-once broadcast.
use std::time::Duration;

use rs2p_mesh::net::EventItem;
use rs2p_mesh::{MeshEvent, MeshOptions, MeshSocket};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_nodes_find_each_other_and_every_broadcast_arrives_once() {
    let first = MeshSocket::bind(MeshOptions::default()).await.unwrap();
    let mut nodes = vec![first.clone()];
    for _ in 1..10 {
        let n = MeshSocket::bind(MeshOptions::default()).await.unwrap();
        n.connect(first.local_addr()).await.unwrap();
        nodes.push(n);
    }
    let mut streams: Vec<_> = nodes.iter().map(|n| n.events()).collect();
    // Wait until the graph is connected enough that every node has at least 3 peers.
    for _ in 0..100 {
        let mut min = usize::MAX;
        for n in &nodes {
            min = min.min(n.peers().await.unwrap().len());
        }
        if min >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (i, n) in nodes.iter().enumerate() {
        n.broadcast("/test/1", format!("from {i}")).await.unwrap();
    }
    for (i, s) in streams.iter_mut().enumerate() {
        let mut got = Vec::new();
        while got.len() < 9 {
            match tokio::time::timeout(Duration::from_secs(5), s.next()).await {
                Ok(Some(EventItem::Event(MeshEvent::Message { payload, .. }))) => got.push(payload),
                Ok(Some(_)) => {}
                other => panic!("node {i}: {other:?} after {} messages", got.len()),
            }
        }
        got.sort();
        got.dedup();
        assert_eq!(
            got.len(),
            9,
            "node {i} got each other node's broadcast once"
        );
    }
    for n in &nodes {
        let st = n.stats().await.unwrap();
        assert_eq!(st.delivered, 9);
    }
}
