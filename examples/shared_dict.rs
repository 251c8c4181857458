//! A dictionary shared by three nodes, with leases and events: `cargo run -p rs2p-examples --example shared_dict`.

use std::time::Duration;

use rs2p::sync::{SetError, SyncEventItem, SyncOptions, SyncSocket};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = SyncSocket::bind(SyncOptions::default()).await?;
    let b = SyncSocket::bind(SyncOptions::default()).await?;
    let c = SyncSocket::bind(SyncOptions::default()).await?;
    b.mesh().connect(a.mesh().local_addr()).await?;
    c.mesh().connect(a.mesh().local_addr()).await?;
    let mut events = c.subscribe();

    a.set("测试", "test").await?;
    a.update([("alpha", "1"), ("beta", "2")]).await?;
    while c.len() < 3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!("c sees {:?}", c.items());
    match b.set("alpha", "b wants it").await {
        Err(SetError::LeaseHeld { owner, until }) => {
            println!("b is refused: {} leases alpha until {until}", owner.short())
        }
        other => println!("unexpected: {other:?}"),
    }
    for _ in 0..3 {
        if let Some(SyncEventItem::Event(e)) = events.next().await {
            println!("c's event: {e:?}");
        }
    }
    Ok(())
}
