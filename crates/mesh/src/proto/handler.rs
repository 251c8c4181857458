//! The extension point: a socket type is a [`Handler`] registered under a protocol id.
//!
//! A handler never does I/O. The node calls it with what arrived (messages, peers coming and
//! going, timers it set), and it answers through the [`Context`]: whispers to a peer, floods to
//! the mesh, timers, and reports of misbehaving peers. The node turns those into frames. The same
//! handler therefore runs under the tokio driver ([`crate::MeshSocket`]) and under a deterministic
//! simulator.

use std::net::SocketAddr;

use bytes::Bytes;
use rand::RngCore;
use rs2p_base::PeerId;

use super::Millis;

/// How a message reached this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Flooded through the mesh; `origin` is the node that first sent it.
    Flood,
    /// Whispered directly by `from`.
    Direct,
}

/// A message for a handler.
#[derive(Debug, Clone)]
pub struct InboundMessage {
    /// The directly connected peer it came from.
    pub from: PeerId,
    /// The node that created it (equal to `from` for a direct message). For floods whose protocol
    /// is mesh-signed this is verified; for self-verifying protocols the handler must check it.
    pub origin: PeerId,
    /// Flood or direct.
    pub delivery: Delivery,
    /// The payload, as the origin sent it.
    pub payload: Bytes,
    /// For a flood, the time its origin gave it (Unix ms, the origin's [`Context::now`] when it
    /// called [`Context::broadcast`]), within the mesh's age and clock-skew limits; `None` for a
    /// direct message.
    pub issued_at: Option<Millis>,
}

/// What a handler says about a flooded message it received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Valid: relay it to the other peers.
    Accept,
    /// Invalid: do not relay it, and count it against the peer that sent it.
    Reject,
    /// Valid but not worth relaying (for instance, nothing in it was new).
    Ignore,
}

/// A socket type on the mesh.
///
/// Every method receives a [`Context`] to act through. Methods are called from one task, one at a
/// time, in the order events happened.
pub trait Handler: Send + 'static {
    /// The protocol id, such as `"/rs2p/sync/2"`: messages are routed by it.
    fn protocol(&self) -> &str;

    /// Whether this protocol authenticates its own payloads end to end (as the sync socket's
    /// signed records do). Then the mesh neither signs nor verifies its floods, and relays one
    /// only after [`Handler::on_message`] accepted it. Default: false (the mesh signs every flood
    /// and drops forged ones before the handler sees them).
    fn verifies_own_payloads(&self) -> bool {
        false
    }

    /// A peer connected (or was already connected when the handler was registered).
    fn on_peer_connected(&mut self, cx: &mut Context<'_>, peer: PeerId) {
        let _ = (cx, peer);
    }

    /// A peer disconnected.
    fn on_peer_disconnected(&mut self, cx: &mut Context<'_>, peer: PeerId) {
        let _ = (cx, peer);
    }

    /// A message for this protocol arrived. The verdict decides whether a flood is relayed when
    /// [`Handler::verifies_own_payloads`]; otherwise it only counts strikes on `Reject`.
    fn on_message(&mut self, cx: &mut Context<'_>, msg: InboundMessage) -> Verdict;

    /// A timer set with [`Context::set_timer`] fired.
    fn on_timer(&mut self, cx: &mut Context<'_>, token: u64) {
        let _ = (cx, token);
    }
}

/// What a handler asked for, carried out by the node after the call returns.
#[derive(Debug, Clone)]
pub(crate) enum Action {
    Whisper {
        peer: PeerId,
        payload: Bytes,
    },
    Broadcast {
        payload: Bytes,
    },
    Timer {
        at: Millis,
        token: u64,
    },
    Misbehaved {
        peer: PeerId,
    },
    Dial {
        addr: SocketAddr,
        peer: Option<PeerId>,
    },
}

/// A handler's view of the node during one call.
pub struct Context<'a> {
    pub(crate) now: Millis,
    /// The node's mesh, read-only: peers, listen addresses, backlogs.
    pub(crate) mesh: &'a crate::proto::Mesh,
    pub(crate) rng: &'a mut dyn RngCore,
    pub(crate) actions: &'a mut Vec<Action>,
}

impl std::fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("now", &self.now)
            .field("local", &self.mesh.local_id())
            .finish_non_exhaustive()
    }
}

impl Context<'_> {
    /// The current time (Unix milliseconds; virtual in a simulation).
    pub fn now(&self) -> Millis {
        self.now
    }

    /// Bytes queued for `peer` and not yet written (see [`crate::proto::Mesh::backlog`]).
    pub fn backlog(&self, peer: &PeerId) -> usize {
        self.mesh.backlog(peer)
    }

    /// This node's id.
    pub fn local_id(&self) -> PeerId {
        self.mesh.local_id()
    }

    /// The directly connected peers, in ascending id order.
    pub fn peers(&self) -> &[PeerId] {
        self.mesh.peers()
    }

    /// The addresses this node listens on (what peers dial to reach it).
    pub fn listen_addrs(&self) -> &[SocketAddr] {
        self.mesh.listen_addrs()
    }

    /// Asks the mesh to open a connection to `addr` (expected to be `peer`, if known) unless one
    /// is open or being opened; [`Handler::on_peer_connected`] says when it is up. Not retried on
    /// failure: call again if still wanted.
    pub fn dial(&mut self, addr: SocketAddr, peer: Option<PeerId>) {
        self.actions.push(Action::Dial { addr, peer });
    }

    /// The node's random number generator (seeded in simulations).
    pub fn rng(&mut self) -> &mut dyn RngCore {
        self.rng
    }

    /// Sends `payload` to one directly connected peer (dropped if it is not connected).
    pub fn whisper(&mut self, peer: PeerId, payload: impl Into<Bytes>) {
        self.actions.push(Action::Whisper {
            peer,
            payload: payload.into(),
        });
    }

    /// Floods `payload` to every node of the mesh (not delivered to this node's own handler). The
    /// flood's time, which its receivers see as [`InboundMessage::issued_at`], is [`Self::now`].
    pub fn broadcast(&mut self, payload: impl Into<Bytes>) {
        self.actions.push(Action::Broadcast {
            payload: payload.into(),
        });
    }

    /// Calls [`Handler::on_timer`] with `token` after `after_ms` milliseconds.
    pub fn set_timer(&mut self, after_ms: Millis, token: u64) {
        self.actions.push(Action::Timer {
            at: self.now.saturating_add(after_ms),
            token,
        });
    }

    /// Counts a strike against a peer that sent something invalid; enough strikes disconnect and
    /// ban it.
    pub fn report_misbehaviour(&mut self, peer: PeerId) {
        self.actions.push(Action::Misbehaved { peer });
    }
}
