//! A chat over the plain mesh (no socket type needed): each line typed is flooded to every node.
//!
//! ```text
//! cargo run -p rs2p-examples --example chat -- 127.0.0.1:7000
//! cargo run -p rs2p-examples --example chat -- 127.0.0.1:7001 127.0.0.1:7000
//! ```

use rs2p::mesh::net::EventItem;
use rs2p::mesh::{MeshEvent, MeshOptions, MeshSocket};
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let listen = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:0".into())
        .parse()?;
    let mesh = MeshSocket::bind(MeshOptions {
        listen,
        ..MeshOptions::default()
    })
    .await?;
    println!(
        "you are {} on {}",
        mesh.local_id().short(),
        mesh.local_addr()
    );
    for peer in args {
        mesh.connect(peer.parse()?).await?;
    }
    let mut events = mesh.events();
    tokio::spawn(async move {
        while let Some(item) = events.next().await {
            match item {
                EventItem::Event(MeshEvent::Message {
                    origin, payload, ..
                }) => {
                    println!("<{}> {}", origin.short(), String::from_utf8_lossy(&payload));
                }
                EventItem::Event(MeshEvent::PeerConnected { peer, .. }) => {
                    println!("* {} joined", peer.short())
                }
                EventItem::Event(MeshEvent::PeerDisconnected { peer }) => {
                    println!("* {} left", peer.short())
                }
                _ => {}
            }
        }
    });
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        mesh.broadcast("/example/chat/1", line).await?;
    }
    mesh.close().await?;
    Ok(())
}
