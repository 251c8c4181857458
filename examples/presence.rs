//! A new socket type written from scratch: **presence**, who is online and under which name.
//!
//! This is the whole recipe for extending rs2p, the same one the sync socket follows:
//!
//! 1. Write the protocol as a [`Handler`]: it reacts to peers, messages and timers through a
//!    [`Context`], and never does I/O itself (so it also runs in the deterministic simulator).
//! 2. Pick a protocol id (`/example/presence/1`); the mesh routes messages by it, and no change
//!    to the mesh is needed.
//! 3. Give users a handle: register the handler on a [`MeshSocket`], read its state through a
//!    shared lock, and act through [`MeshSocket::call`].
//!
//! Each node floods a heartbeat with its name every second (signed by the mesh, so names cannot
//! be forged), and forgets nodes not heard from for five seconds.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use rs2p::mesh::{Context, Handler, InboundMessage, MeshError, MeshSocket, PeerId, Verdict};

/// The protocol id.
pub const PROTOCOL: &str = "/example/presence/1";
const HEARTBEAT: u64 = 1;
const INTERVAL_MS: u64 = 1000;
const TTL_MS: u64 = 5000;

/// The presence state machine.
#[derive(Debug)]
pub struct Presence {
    name: String,
    online: BTreeMap<PeerId, (String, u64)>,
    armed: bool,
}

impl Presence {
    /// A node that calls itself `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            online: BTreeMap::new(),
            armed: false,
        }
    }

    /// The other nodes heard from recently, with their names.
    pub fn online(&self) -> Vec<(PeerId, String)> {
        self.online
            .iter()
            .map(|(p, (n, _))| (*p, n.clone()))
            .collect()
    }

    fn announce(&mut self, cx: &mut Context<'_>) {
        cx.broadcast(self.name.clone().into_bytes());
    }
}

impl Handler for Presence {
    fn protocol(&self) -> &str {
        PROTOCOL
    }

    fn on_peer_connected(&mut self, cx: &mut Context<'_>, _peer: PeerId) {
        // Say hello at once, and start the heartbeat the first time.
        self.announce(cx);
        if !self.armed {
            self.armed = true;
            cx.set_timer(INTERVAL_MS, HEARTBEAT);
        }
    }

    fn on_message(&mut self, cx: &mut Context<'_>, msg: InboundMessage) -> Verdict {
        match String::from_utf8(msg.payload.to_vec()) {
            Ok(name) if name.len() <= 64 => {
                self.online.insert(msg.origin, (name, cx.now()));
                Verdict::Accept
            }
            _ => Verdict::Reject,
        }
    }

    fn on_timer(&mut self, cx: &mut Context<'_>, _token: u64) {
        let now = cx.now();
        self.online.retain(|_, (_, seen)| *seen + TTL_MS > now);
        self.announce(cx);
        cx.set_timer(INTERVAL_MS, HEARTBEAT);
    }
}

/// Lets the mesh call a handler that the user's handle also reads.
#[derive(Debug, Clone)]
struct Shared(Arc<Mutex<Presence>>);

impl Handler for Shared {
    fn protocol(&self) -> &str {
        PROTOCOL
    }
    fn on_peer_connected(&mut self, cx: &mut Context<'_>, peer: PeerId) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .on_peer_connected(cx, peer);
    }
    fn on_message(&mut self, cx: &mut Context<'_>, msg: InboundMessage) -> Verdict {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .on_message(cx, msg)
    }
    fn on_timer(&mut self, cx: &mut Context<'_>, token: u64) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .on_timer(cx, token);
    }
}

/// The user's handle on a node's presence socket.
#[derive(Debug, Clone)]
pub struct PresenceSocket {
    mesh: MeshSocket,
    state: Arc<Mutex<Presence>>,
}

impl PresenceSocket {
    /// Registers presence on `mesh` under `name`.
    pub async fn attach(mesh: &MeshSocket, name: impl Into<String>) -> Result<Self, MeshError> {
        let state = Arc::new(Mutex::new(Presence::new(name)));
        mesh.register(Shared(state.clone())).await?;
        Ok(Self {
            mesh: mesh.clone(),
            state,
        })
    }

    /// Who is online, by name.
    pub fn online(&self) -> Vec<(PeerId, String)> {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .online()
    }

    /// Changes this node's name and tells everyone at once.
    pub async fn rename(&self, name: impl Into<String>) -> Result<(), MeshError> {
        let (state, name) = (self.state.clone(), name.into());
        self.mesh
            .call(PROTOCOL, move |cx| {
                let mut p = state.lock().unwrap_or_else(PoisonError::into_inner);
                p.name = name;
                p.announce(cx);
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rs2p_testkit::{Faults, Sim};

    #[test]
    fn in_the_simulator_everyone_sees_everyone_and_the_departed_are_forgotten() {
        let mut sim = Sim::new(5, 4);
        for i in 0..4 {
            let now = sim.now();
            sim.node_mut(i)
                .register(Box::new(Presence::new(format!("node{i}"))), now)
                .unwrap();
        }
        sim.link(0, 1, Faults::NONE);
        sim.link(1, 2, Faults::NONE);
        sim.link(2, 3, Faults::NONE);
        sim.advance(1500);
        // Reach into node 0's handler through its context-free view: count delivered heartbeats.
        assert!(
            sim.node(0).mesh().stats().delivered >= 3,
            "heartbeats from 3 others arrived"
        );
        sim.unlink(2, 3);
        sim.advance(10_000);
        let before = sim.node(0).mesh().stats().delivered;
        sim.advance(3_000);
        let per_second = (sim.node(0).mesh().stats().delivered - before) as f64 / 3.0;
        assert!(
            (1.5..=2.5).contains(&per_second),
            "only nodes 1 and 2 are still heard: {per_second}/s"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn over_tcp_names_spread_and_renames_arrive() {
        use rs2p::mesh::MeshOptions;
        let a = MeshSocket::bind(MeshOptions::default()).await.unwrap();
        let b = MeshSocket::bind(MeshOptions::default()).await.unwrap();
        let pa = PresenceSocket::attach(&a, "alice").await.unwrap();
        let pb = PresenceSocket::attach(&b, "bob").await.unwrap();
        b.connect(a.local_addr()).await.unwrap();
        let wait = |p: PresenceSocket, want: (PeerId, &'static str)| async move {
            for _ in 0..300 {
                if p.online().contains(&(want.0, want.1.to_string())) {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            panic!("never saw {want:?} in {:?}", p.online());
        };
        wait(pa.clone(), (b.local_id(), "bob")).await;
        wait(pb.clone(), (a.local_id(), "alice")).await;
        pa.rename("alice2").await.unwrap();
        wait(pb, (a.local_id(), "alice2")).await;
    }
}
