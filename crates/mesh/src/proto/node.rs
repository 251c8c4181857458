//! A mesh node with its handlers: the [`Mesh`] state machine plus the registry that routes
//! messages, peer changes and timers to socket types.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use rand::SeedableRng;
use rand_chacha::ChaCha12Rng;
use rs2p_base::handshake::RemoteInfo;
use rs2p_base::PeerId;

use super::handler::{Action, Context, Delivery, Handler, InboundMessage, Verdict};
use super::mesh::{ConnId, Direction, Mesh, MeshEvent, Output};
use super::Millis;
use crate::MeshError;

/// Mesh + handlers. Same contract as [`Mesh`]: call inputs with `now`, then drain
/// [`Node::poll_output`]; it never yields [`Output::Deliver`], which it routes to handlers itself.
pub struct Node {
    mesh: Mesh,
    handlers: BTreeMap<String, Box<dyn Handler>>,
    timers: BTreeMap<(Millis, u64), (String, u64)>,
    timer_seq: u64,
    rng: ChaCha12Rng,
    out: VecDeque<Output>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("mesh", &self.mesh)
            .field("handlers", &self.handlers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Wraps a mesh; `seed` drives every random choice (peer picks, backoff jitter, handlers' RNG).
    pub fn new(mesh: Mesh, seed: u64) -> Self {
        Self {
            mesh,
            handlers: BTreeMap::new(),
            timers: BTreeMap::new(),
            timer_seq: 0,
            rng: ChaCha12Rng::seed_from_u64(seed),
            out: VecDeque::new(),
        }
    }

    /// The mesh state machine.
    pub fn mesh(&self) -> &Mesh {
        &self.mesh
    }

    /// The mesh state machine, for inputs.
    pub fn mesh_mut(&mut self) -> &mut Mesh {
        &mut self.mesh
    }

    /// The protocol ids registered, in the order they were (what handshakes list: flat floods
    /// name a protocol by its place there, so a later registration must not move the others).
    pub fn protocols(&self) -> Vec<String> {
        self.mesh.protocols().to_vec()
    }

    /// Registers a socket type; it is told at once about every peer already connected.
    pub fn register(&mut self, handler: Box<dyn Handler>, now: Millis) -> Result<(), MeshError> {
        let protocol = handler.protocol().to_owned();
        if protocol.is_empty() || protocol.len() > 128 {
            return Err(MeshError::InvalidProtocol(protocol));
        }
        if self.handlers.contains_key(&protocol) {
            return Err(MeshError::DuplicateProtocol(protocol));
        }
        if handler.verifies_own_payloads() {
            self.mesh.set_self_verifying(&protocol);
        } else {
            self.mesh.set_mesh_signed(&protocol);
        }
        self.handlers.insert(protocol.clone(), handler);
        for peer in self.mesh.peers().to_vec() {
            let _ = self.call_handler(&protocol, now, |h, cx| h.on_peer_connected(cx, peer));
        }
        self.pump(now);
        Ok(())
    }

    /// Runs `f` on the handler of `protocol` with a context, then carries out what it asked for
    /// (its outputs are ready for [`Node::poll_output`]). Used by socket types' user-facing
    /// handles for local operations (a `set`, say).
    pub fn with_handler<R>(
        &mut self,
        protocol: &str,
        now: Millis,
        f: impl FnOnce(&mut dyn Handler, &mut Context<'_>) -> R,
    ) -> Result<R, MeshError> {
        let r = self.call_handler(protocol, now, f)?;
        self.pump(now);
        Ok(r)
    }

    /// [`Node::with_handler`] without routing the outputs (the caller pumps).
    fn call_handler<R>(
        &mut self,
        protocol: &str,
        now: Millis,
        f: impl FnOnce(&mut dyn Handler, &mut Context<'_>) -> R,
    ) -> Result<R, MeshError> {
        let handler = self
            .handlers
            .get_mut(protocol)
            .ok_or_else(|| MeshError::UnknownProtocol(protocol.to_owned()))?;
        let mut actions = Vec::new();
        let r = {
            let mut cx = Context {
                now,
                mesh: &self.mesh,
                rng: &mut self.rng,
                actions: &mut actions,
            };
            f(handler.as_mut(), &mut cx)
        };
        self.apply(protocol, actions, now);
        Ok(r)
    }

    fn apply(&mut self, protocol: &str, actions: Vec<Action>, now: Millis) {
        for action in actions {
            match action {
                Action::Whisper { peer, payload } => {
                    // A peer that left in the meantime: the handler learns it from on_peer_disconnected.
                    let _ = self.mesh.whisper(peer, protocol, payload);
                }
                Action::Broadcast { payload } => {
                    let _ = self.mesh.broadcast(protocol, payload, now);
                }
                Action::Timer { at, token } => {
                    self.timer_seq += 1;
                    self.timers
                        .insert((at, self.timer_seq), (protocol.to_owned(), token));
                }
                Action::Misbehaved { peer } => self.mesh.strike(peer, now),
                Action::Dial { addr, peer } => self.mesh.dial(addr, peer, now),
            }
        }
    }

    /// Plain mesh use: floods `payload` under `protocol` (a handler's protocol or any other).
    pub fn broadcast(
        &mut self,
        protocol: &str,
        payload: Bytes,
        now: Millis,
    ) -> Result<(), MeshError> {
        self.mesh.broadcast(protocol, payload, now)?;
        self.pump(now);
        Ok(())
    }

    /// Plain mesh use: whispers `payload` to a connected peer.
    pub fn whisper(
        &mut self,
        peer: PeerId,
        protocol: &str,
        payload: Bytes,
        now: Millis,
    ) -> Result<(), MeshError> {
        self.mesh.whisper(peer, protocol, payload)?;
        self.pump(now);
        Ok(())
    }

    /// When [`Node::handle_tick`] should run next.
    pub fn next_deadline(&self) -> Millis {
        let timer = self.timers.keys().next().map_or(Millis::MAX, |&(at, _)| at);
        timer.min(self.mesh.next_deadline())
    }

    /// Runs due timers and the mesh's periodic work.
    pub fn handle_tick(&mut self, now: Millis) {
        // Only the timers due when the tick began: one that a handler arms again from its own
        // callback (a transfer sending a few chunks per tick) runs at the next tick, after the
        // driver has sent what this one produced. Run in this loop, it would run again and
        // again until it had nothing left to do, its outputs piling up unsent meanwhile (a
        // million-key transfer built 200 MB of frames before the first one left).
        let later = self.timers.split_off(&(now.saturating_add(1), 0));
        let due = std::mem::replace(&mut self.timers, later);
        for ((_, _), (protocol, token)) in due {
            let _ = self.call_handler(&protocol, now, |h, cx| h.on_timer(cx, token));
        }
        self.mesh.handle_tick(now, &mut self.rng);
        self.pump(now);
    }

    /// Moves the mesh's outputs to this node's queue, routing deliveries and peer changes to
    /// handlers (whose actions may produce more outputs).
    pub fn pump(&mut self, now: Millis) {
        while let Some(o) = self.mesh.poll_output() {
            match o {
                Output::Deliver(inbound) => self.deliver(inbound, now),
                Output::Event(MeshEvent::PeerConnected { peer, addrs }) => {
                    for p in self.protocols() {
                        let _ = self.call_handler(&p, now, |h, cx| h.on_peer_connected(cx, peer));
                    }
                    self.out
                        .push_back(Output::Event(MeshEvent::PeerConnected { peer, addrs }));
                }
                Output::Event(MeshEvent::PeerDisconnected { peer }) => {
                    for p in self.protocols() {
                        let _ =
                            self.call_handler(&p, now, |h, cx| h.on_peer_disconnected(cx, peer));
                    }
                    self.out
                        .push_back(Output::Event(MeshEvent::PeerDisconnected { peer }));
                }
                other => self.out.push_back(other),
            }
        }
    }

    fn deliver(&mut self, inbound: super::mesh::Inbound, now: Millis) {
        let msg = InboundMessage {
            from: inbound.from,
            origin: inbound.origin,
            delivery: if inbound.flooded {
                Delivery::Flood
            } else {
                Delivery::Direct
            },
            payload: inbound.payload.clone(),
            issued_at: inbound.issued_at,
        };
        match self.call_handler(&inbound.protocol, now, |h, cx| h.on_message(cx, msg)) {
            Ok(verdict) => {
                if verdict == Verdict::Reject {
                    self.mesh.strike(inbound.from, now);
                }
                if let (Verdict::Accept, Some(relay)) = (verdict, inbound.relay) {
                    self.mesh.relay(relay);
                }
            }
            Err(_) => self.out.push_back(Output::Event(MeshEvent::Message {
                protocol: inbound.protocol,
                from: inbound.from,
                origin: inbound.origin,
                flooded: inbound.flooded,
                payload: inbound.payload,
            })),
        }
    }

    /// The next output for the driver (never [`Output::Deliver`]).
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    // ---- the mesh's inputs, each followed by routing its outputs ----

    /// See [`Mesh::handle_incoming`].
    pub fn handle_incoming(&mut self, conn: ConnId, ip: IpAddr) -> bool {
        self.mesh.handle_incoming(conn, ip)
    }

    /// See [`Mesh::handle_dialing`].
    pub fn handle_dialing(&mut self, conn: ConnId, addr: SocketAddr) {
        self.mesh.handle_dialing(conn, addr);
    }

    /// See [`Mesh::handle_dial_failed`].
    pub fn handle_dial_failed(
        &mut self,
        conn: Option<ConnId>,
        addr: SocketAddr,
        self_connection: bool,
        now: Millis,
    ) {
        self.mesh
            .handle_dial_failed(conn, addr, self_connection, now, &mut self.rng);
        self.pump(now);
    }

    /// See [`Mesh::handle_handshake_failed`].
    pub fn handle_handshake_failed(&mut self, conn: ConnId) {
        self.mesh.handle_handshake_failed(conn);
    }

    /// See [`Mesh::handle_established`].
    pub fn handle_established(
        &mut self,
        conn: ConnId,
        direction: Direction,
        dialed: Option<SocketAddr>,
        remote: RemoteInfo,
        peer_addr: SocketAddr,
        now: Millis,
    ) {
        self.mesh
            .handle_established(conn, direction, dialed, remote, peer_addr, now);
        self.pump(now);
    }

    /// See [`Mesh::handle_frame`].
    pub fn handle_frame(&mut self, conn: ConnId, frame: Bytes, now: Millis) {
        self.mesh.handle_frame(conn, frame, now);
        self.pump(now);
    }

    /// See [`Mesh::handle_closed`].
    pub fn handle_closed(&mut self, conn: ConnId, now: Millis) {
        self.mesh.handle_closed(conn, now);
        self.pump(now);
    }

    /// See [`Mesh::connect`].
    pub fn connect(&mut self, addr: SocketAddr, now: Millis) {
        self.mesh.connect(addr, now);
        self.pump(now);
    }

    /// See [`Mesh::disconnect`].
    pub fn disconnect(&mut self, peer: PeerId, now: Millis) -> Result<(), MeshError> {
        self.mesh.disconnect(peer)?;
        self.pump(now);
        Ok(())
    }

    /// See [`Mesh::shutdown`].
    pub fn shutdown(&mut self, now: Millis) {
        self.mesh.shutdown();
        self.pump(now);
    }
}
