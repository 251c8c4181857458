//! Three nodes running the presence socket from `presence.rs`: `cargo run -p rs2p-examples --example presence`.

use rs2p::mesh::{MeshOptions, MeshSocket};
use rs2p_examples::PresenceSocket;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut nodes = Vec::new();
    for name in ["alice", "bob", "carol"] {
        let mesh = MeshSocket::bind(MeshOptions::default()).await?;
        let presence = PresenceSocket::attach(&mesh, name).await?;
        if let Some((first, _)) = nodes.first() {
            let first: &MeshSocket = first;
            mesh.connect(first.local_addr()).await?;
        }
        nodes.push((mesh, presence));
    }
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    for (mesh, presence) in &nodes {
        let names: Vec<String> = presence.online().into_iter().map(|(_, n)| n).collect();
        println!("{} sees {names:?}", mesh.local_id().short());
    }
    Ok(())
}
