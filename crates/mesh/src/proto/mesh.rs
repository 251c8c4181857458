//! The mesh state machine: connections, peer exchange, dialing, floods and limits.
//!
//! # Contract
//!
//! Inputs are the `handle_*` methods and the user commands ([`Mesh::broadcast`],
//! [`Mesh::whisper`], [`Mesh::connect`], [`Mesh::disconnect`]); each takes `now` (Unix
//! milliseconds). Outputs are taken with [`Mesh::poll_output`] after every input, until it returns
//! `None`. [`Mesh::next_deadline`] says when to call [`Mesh::handle_tick`] next. The machine never
//! reads a clock, never does I/O and draws randomness only from the RNG given to it, so a
//! simulation replays exactly from its seed.
//!
//! # Invariants
//!
//! - At most one *active* connection per peer id. When two exist (both nodes dialed at once),
//!   both nodes keep the one dialed by the lower peer id and close the other; frames still
//!   arriving on the closing one are processed, so nothing in flight is lost.
//! - A flood is delivered and relayed at most once per node (seen-cache), only after its
//!   signature (or, for self-verifying protocols, the handler) accepted it; a forged one is
//!   neither delivered nor relayed, and counts against the neighbour that sent it.
//! - Every queue is bounded; the driver closes a peer whose send queue is full.
//! - With `relay_tree`, each origin's floods reach every node along the links that brought
//!   first copies; the others are pruned, and grafted back when a parent is lost (see
//!   [`RelayTree`]). An origin always sends its own floods to all of its peers.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use rand::{Rng, RngCore};
use rs2p_base::handshake::RemoteInfo;
use rs2p_base::wire::pb::{self, mesh_frame::Kind};
use rs2p_base::{Keypair, PeerId};

use super::flood;
use super::rate::TokenBucket;
use super::relay_tree::{RelayTree, TreeMsg, TreeOp};
use super::seen_cache::{MsgId, SeenCache};
use super::stats::{MeshStats, PeerStats};
use super::Millis;
use crate::{MeshConfig, MeshError};

/// A connection, numbered by the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

/// Who opened a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// We dialed.
    Outbound,
    /// The peer dialed.
    Inbound,
}

/// Why the mesh closes a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Another connection to the same peer is kept.
    Duplicate,
    /// The node has `max_peers` peers already, or too many from that IP.
    TooManyPeers,
    /// The peer broke a limit or sent invalid data too often; it is banned for a while.
    Misbehaviour,
    /// The peer sent nothing for `idle_timeout`.
    Idle,
    /// The user asked for it.
    Requested,
    /// The node is closing.
    Shutdown,
}

impl CloseReason {
    fn wire(self) -> pb::goodbye::Reason {
        use pb::goodbye::Reason;
        match self {
            Self::Duplicate => Reason::Duplicate,
            Self::TooManyPeers => Reason::TooManyPeers,
            Self::Misbehaviour => Reason::Misbehaviour,
            Self::Idle | Self::Shutdown => Reason::Shutdown,
            Self::Requested => Reason::Requested,
        }
    }
}

/// Something the mesh reports to the user.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MeshEvent {
    /// A peer is now connected.
    PeerConnected {
        /// The peer.
        peer: PeerId,
        /// Where it listens.
        addrs: Vec<SocketAddr>,
    },
    /// A peer is no longer connected.
    PeerDisconnected {
        /// The peer.
        peer: PeerId,
    },
    /// A message for a protocol that has no handler registered (plain mesh use).
    Message {
        /// The protocol id.
        protocol: String,
        /// The neighbour it came from.
        from: PeerId,
        /// Who created it (verified for floods).
        origin: PeerId,
        /// True for a flood, false for a whisper.
        flooded: bool,
        /// The payload.
        payload: Bytes,
    },
    /// A peer was disconnected and banned for misbehaviour.
    PeerBanned {
        /// The peer.
        peer: PeerId,
        /// Until when (Unix ms).
        until: Millis,
    },
}

/// What the driver must do.
#[derive(Debug, Clone)]
pub enum Output {
    /// Send an encoded `MeshFrame` on a connection.
    Send {
        /// The connection.
        conn: ConnId,
        /// The encoded frame.
        frame: Bytes,
    },
    /// Open a connection to `addr`, expecting `expected` if known.
    Dial {
        /// Where.
        addr: SocketAddr,
        /// Whom, if known.
        expected: Option<PeerId>,
    },
    /// Flush what is queued on a connection, then close it.
    Close {
        /// The connection.
        conn: ConnId,
        /// Why.
        reason: CloseReason,
    },
    /// Report an event to the user.
    Event(MeshEvent),
    /// A message for a local handler (consumed by [`crate::proto::Node`]).
    Deliver(Inbound),
    /// Read nothing more from a connection before `until` (Unix ms): its peer sends faster
    /// than its rate, and TCP's flow control slows it down without losing anything.
    Throttle {
        /// The connection.
        conn: ConnId,
        /// Until when.
        until: Millis,
    },
}

/// A message for a local handler, with what is needed to relay it if the handler accepts it.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// The protocol id.
    pub protocol: String,
    /// The neighbour it came from.
    pub from: PeerId,
    /// Who created it.
    pub origin: PeerId,
    /// The payload.
    pub payload: Bytes,
    /// `Some` for a flood the handler must accept before it is relayed.
    pub relay: Option<Relay>,
    /// True for a flood.
    pub flooded: bool,
    /// A flood's time as its origin stated it (`FloodBody.issued_at_ms`).
    pub issued_at: Option<Millis>,
}

/// A flood waiting for its handler's verdict before it is relayed.
#[derive(Debug, Clone)]
pub struct Relay {
    frame: pb::Flood,
    /// Whether the body is known to re-encode to itself (it came flat or compacted, and was
    /// rebuilt here).
    canonical: bool,
    except: ConnId,
    /// Who sent it to us, and who issued it: peers they are known to reach are skipped.
    from: PeerId,
    origin: PeerId,
}

#[derive(Debug)]
struct Conn {
    peer: PeerId,
    direction: Direction,
    ip: IpAddr,
    active: bool,
    /// Whether the peer has shown it keeps this connection: at its first frame other than a
    /// `Goodbye` (each side sends its peer list first). A full node refuses a connection only
    /// after its handshake, whichever side dialed, so until then this node does not tell others
    /// it has the peer: they would skip it when relaying floods that this node sends on a
    /// connection the peer is closing.
    vouched: bool,
    /// The peer said goodbye on this connection.
    bye: bool,
    /// When the peer's process started, as it said in the handshake (0: it did not say).
    incarnation: u64,
    /// Whether the peer takes flat floods, and the protocols it listed in its handshake (what
    /// they name protocols by).
    flat: bool,
    protocols: Vec<String>,
    /// Bytes queued for the peer and not yet written, as the driver last reported.
    backlog: usize,
    last_recv: Millis,
    bucket: TokenBucket,
    /// Since when the peer has been over its rate without a pause of a second (a flood).
    flood_since: Option<Millis>,
    /// When it was last over its rate.
    last_over: Millis,
}

#[derive(Debug, Default)]
struct AddrState {
    peer: Option<PeerId>,
    failures: u32,
    next_attempt: Millis,
    persistent: bool,
    is_self: bool,
    dialing: bool,
}

/// The mesh state machine: inputs are the `handle_*` methods and the user commands, outputs
/// come from [`Mesh::poll_output`]; every input takes `now` (Unix ms) and nothing reads a clock.
pub struct Mesh {
    cfg: MeshConfig,
    keypair: Keypair,
    local: PeerId,
    network_id: [u8; 32],
    listen_addrs: Vec<SocketAddr>,
    conns: BTreeMap<ConnId, Conn>,
    by_peer: BTreeMap<PeerId, ConnId>,
    peer_list: Vec<PeerId>,
    pending: BTreeMap<ConnId, IpAddr>,
    addrs: BTreeMap<SocketAddr, AddrState>,
    self_verifying: BTreeSet<String>,
    /// Protocols run here whose floods the mesh signs (an unsigned one is a forgery).
    mesh_signed: BTreeSet<String>,
    /// Every protocol run here, in the order registered: the list handshakes tell peers, which
    /// flat and compact floods name protocols by (only ever appended to, so a place a peer was
    /// told keeps its protocol).
    protocols: Vec<String>,
    banned: BTreeMap<PeerId, Millis>,
    strikes: BTreeMap<PeerId, u32>,
    seen: SeenCache,
    seq: u64,
    next_tick: Millis,
    out: VecDeque<Output>,
    stats: MeshStats,
    /// Each connected peer's own peers, as it last told us (its `PeerList`s, sent on connect
    /// and whenever its peers change): what relay suppression knows of the topology.
    neighbors: BTreeMap<PeerId, BTreeSet<PeerId>>,
    /// The `seq` of the latest `PeerList` applied from each connected peer.
    neighbor_seq: BTreeMap<PeerId, u64>,
    /// The `seq` of the last `PeerList` this node sent.
    peer_list_seq: u64,
    /// Which neighbours asked not to be relayed which origins' floods, and this node's parents
    /// (with `relay_tree`).
    tree: RelayTree,
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("local", &self.local)
            .field("peers", &self.peer_list.len())
            .finish_non_exhaustive()
    }
}

/// How long a connection over its rate is not read from.
const THROTTLE_MS: Millis = 100;

fn ms(d: std::time::Duration) -> Millis {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn encode(kind: Kind) -> Bytes {
    rs2p_base::wire::encode(&pb::MeshFrame { kind: Some(kind) })
}

impl Mesh {
    /// A mesh node with this identity in the network whose id is `network_id`.
    pub fn new(cfg: MeshConfig, keypair: Keypair, network_id: [u8; 32], now: Millis) -> Self {
        let seen = SeenCache::new(cfg.seen_cache_size, ms(cfg.seen_cache_ttl));
        Self {
            local: keypair.peer_id(),
            keypair,
            network_id,
            listen_addrs: Vec::new(),
            conns: BTreeMap::new(),
            by_peer: BTreeMap::new(),
            peer_list: Vec::new(),
            pending: BTreeMap::new(),
            neighbors: BTreeMap::new(),
            neighbor_seq: BTreeMap::new(),
            peer_list_seq: 0,
            tree: RelayTree::new(),
            addrs: BTreeMap::new(),
            self_verifying: BTreeSet::new(),
            mesh_signed: BTreeSet::new(),
            protocols: Vec::new(),
            banned: BTreeMap::new(),
            strikes: BTreeMap::new(),
            seen,
            seq: 0,
            next_tick: now,
            out: VecDeque::new(),
            stats: MeshStats::default(),
            cfg,
        }
    }

    /// This node's id.
    pub fn local_id(&self) -> PeerId {
        self.local
    }

    /// The configuration.
    pub fn config(&self) -> &MeshConfig {
        &self.cfg
    }

    /// The peers with an active connection, in ascending order.
    pub fn peers(&self) -> &[PeerId] {
        &self.peer_list
    }

    /// The driver's report of how many bytes are queued on `conn` and not yet written.
    pub fn set_backlog(&mut self, conn: ConnId, bytes: usize) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.backlog = bytes;
        }
    }

    /// Bytes queued for `peer` and not yet written, as the driver last reported (0 for a peer
    /// not connected, and always in a simulation that does not report it). A handler that
    /// sends in bulk (a sync transfer) sends while this is small, so it never queues faster
    /// than the peer reads.
    pub fn backlog(&self, peer: &PeerId) -> usize {
        self.by_peer
            .get(peer)
            .and_then(|c| self.conns.get(c))
            .map_or(0, |c| c.backlog)
    }

    /// The counters, with per-peer figures for the connected peers.
    pub fn stats(&self) -> MeshStats {
        MeshStats {
            pending_handshakes: self.pending.len(),
            ..self.stats.clone()
        }
    }

    /// Sets the addresses this node listens on (told to peers in the handshake and peer lists).
    pub fn set_listen_addrs(&mut self, addrs: Vec<SocketAddr>) {
        for a in &addrs {
            self.addrs.entry(*a).or_default().is_self = true;
        }
        self.listen_addrs = addrs;
    }

    /// The addresses this node listens on.
    pub fn listen_addrs(&self) -> &[SocketAddr] {
        &self.listen_addrs
    }

    /// Marks a protocol as authenticating its own payloads (see
    /// [`crate::proto::Handler::verifies_own_payloads`]).
    pub fn set_self_verifying(&mut self, protocol: &str) {
        self.self_verifying.insert(protocol.to_owned());
        self.add_protocol(protocol);
    }

    fn add_protocol(&mut self, protocol: &str) {
        if !self.protocols.iter().any(|p| p == protocol) {
            self.protocols.push(protocol.to_owned());
        }
    }

    /// The protocols run here, in the order they were registered (what handshakes list).
    pub fn protocols(&self) -> &[String] {
        &self.protocols
    }

    /// Marks a protocol as run here with mesh-signed floods: an unsigned flood of it is a
    /// forgery and counts against its sender. (An unsigned flood of a protocol not run here at
    /// all cannot be judged: it may be another kind of node's self-verifying protocol, so it is
    /// dropped without blame.)
    pub fn set_mesh_signed(&mut self, protocol: &str) {
        self.mesh_signed.insert(protocol.to_owned());
        self.add_protocol(protocol);
    }

    /// The next output for the driver.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`Mesh::handle_tick`] should run next.
    pub fn next_deadline(&self) -> Millis {
        self.next_tick
    }

    // ---- user commands ----

    /// Dials `addr` now and keeps redialing it with backoff whenever it is not connected.
    pub fn connect(&mut self, addr: SocketAddr, now: Millis) {
        let st = self.addrs.entry(addr).or_default();
        st.persistent = true;
        st.is_self = false;
        st.next_attempt = now;
        self.dial_due(now);
    }

    /// The peer connected through `addr` (dialed there, or listening there by its own word),
    /// unless a dial to `addr` is under way. [`Mesh::connect`] does not dial an address whose
    /// peer is connected already, so the driver answers such a request with this at once.
    pub fn connected_at(&self, addr: SocketAddr) -> Option<PeerId> {
        let st = self.addrs.get(&addr)?;
        if st.dialing {
            return None;
        }
        st.peer.filter(|p| self.by_peer.contains_key(p))
    }

    /// Dials `addr` once now, unless `expected` is already connected or a dial to `addr` is under
    /// way; not redialed after a failure (unlike [`Mesh::connect`]). Socket types use it to reach
    /// the peers their routing wants (a chord node's successors and fingers).
    pub fn dial(&mut self, addr: SocketAddr, expected: Option<PeerId>, now: Millis) {
        if expected.is_some_and(|p| p == self.local || self.by_peer.contains_key(&p)) {
            return;
        }
        if self.pending.len() >= self.cfg.max_pending_handshakes {
            return;
        }
        let st = self.addrs.entry(addr).or_default();
        if st.is_self || st.dialing || st.next_attempt > now {
            return;
        }
        if expected.is_some() {
            st.peer = expected;
        }
        st.dialing = true;
        self.out.push_back(Output::Dial { addr, expected });
    }

    /// Closes the connection to `peer`.
    pub fn disconnect(&mut self, peer: PeerId) -> Result<(), MeshError> {
        let conn = *self
            .by_peer
            .get(&peer)
            .ok_or(MeshError::NotConnected(peer))?;
        // Do not redial it on our own; the user wanted it gone.
        for st in self.addrs.values_mut().filter(|s| s.peer == Some(peer)) {
            st.persistent = false;
        }
        self.close(conn, CloseReason::Requested);
        Ok(())
    }

    /// Floods `payload` to the whole mesh under `protocol`; returns its message id. The mesh signs
    /// it unless `protocol` is self-verifying.
    pub fn broadcast(
        &mut self,
        protocol: &str,
        payload: Bytes,
        now: Millis,
    ) -> Result<MsgId, MeshError> {
        self.check_payload(protocol, payload.len())?;
        self.seq += 1;
        let decoded = flood::body(&self.local, self.seq, now, protocol, payload);
        let body = rs2p_base::wire::encode(&decoded);
        let signature = if self.self_verifying.contains(protocol) {
            Bytes::new()
        } else {
            flood::sign(&self.keypair, &self.network_id, &body)
        };
        let id = flood::msg_id(&body);
        self.seen.insert(id, now);
        let flood = pb::Flood {
            body,
            signature,
            hops_left: self.cfg.max_hops,
            ..Default::default()
        };
        let conns: Vec<ConnId> = self.by_peer.values().copied().collect();
        self.send_flood(&conns, flood, Some(decoded), true, true);
        Ok(id)
    }

    /// Sends `payload` under `protocol` to one directly connected peer.
    pub fn whisper(
        &mut self,
        peer: PeerId,
        protocol: &str,
        payload: Bytes,
    ) -> Result<(), MeshError> {
        self.check_payload(protocol, payload.len())?;
        let conn = *self
            .by_peer
            .get(&peer)
            .ok_or(MeshError::NotConnected(peer))?;
        let frame = encode(Kind::Direct(pb::Direct {
            protocol: protocol.to_owned(),
            payload,
        }));
        self.send(conn, frame, true);
        Ok(())
    }

    fn check_payload(&self, protocol: &str, len: usize) -> Result<(), MeshError> {
        if protocol.is_empty() || protocol.len() > 128 {
            return Err(MeshError::InvalidProtocol(protocol.to_owned()));
        }
        // Frame overhead: the flood body's fields, signature and tags stay well under 256 bytes.
        let max = self.cfg.max_frame_len.saturating_sub(256 + protocol.len());
        if len > max {
            return Err(MeshError::PayloadTooLarge { len, max });
        }
        Ok(())
    }

    // ---- connection lifecycle ----

    /// A TCP connection arrived from `ip`; returns whether to run the handshake (false: drop it).
    pub fn handle_incoming(&mut self, conn: ConnId, ip: IpAddr) -> bool {
        if self.pending.len() >= self.cfg.max_pending_handshakes || !self.ip_allowed(ip) {
            self.stats.refused_incoming += 1;
            return false;
        }
        self.pending.insert(conn, ip);
        true
    }

    /// An outbound dial to `addr` got a TCP connection numbered `conn` and starts its handshake.
    pub fn handle_dialing(&mut self, conn: ConnId, addr: SocketAddr) {
        self.pending.insert(conn, addr.ip());
    }

    /// A dial to `addr` failed (connection refused, handshake error). `self_connection` marks an
    /// address that turned out to be this node.
    pub fn handle_dial_failed(
        &mut self,
        conn: Option<ConnId>,
        addr: SocketAddr,
        self_connection: bool,
        now: Millis,
        rng: &mut dyn RngCore,
    ) {
        if let Some(c) = conn {
            self.pending.remove(&c);
        }
        let (initial, max) = (ms(self.cfg.backoff_initial), ms(self.cfg.backoff_max));
        if let Some(st) = self.addrs.get_mut(&addr) {
            st.dialing = false;
            st.failures = st.failures.saturating_add(1);
            if self_connection {
                st.is_self = true;
                st.persistent = false;
            }
            let base = initial.saturating_mul(1 << st.failures.min(16)).min(max);
            st.next_attempt = now + base / 2 + rng.gen_range(0..=base / 2);
            if !st.persistent && st.failures > 8 {
                self.addrs.remove(&addr);
            }
        }
    }

    /// An inbound handshake failed.
    pub fn handle_handshake_failed(&mut self, conn: ConnId) {
        self.pending.remove(&conn);
    }

    /// A handshake completed. The connection is kept (and announced) or closed by an output.
    pub fn handle_established(
        &mut self,
        conn: ConnId,
        direction: Direction,
        dialed: Option<SocketAddr>,
        remote: RemoteInfo,
        peer_addr: SocketAddr,
        now: Millis,
    ) {
        self.pending.remove(&conn);
        let peer = remote.peer_id;
        let ip = peer_addr.ip();
        if let Some(addr) = dialed {
            let st = self.addrs.entry(addr).or_default();
            st.dialing = false;
            st.peer = Some(peer);
        }
        let listen = self.learn_addrs(peer, &remote.listen_addrs, ip);
        self.conns.insert(
            conn,
            Conn {
                peer,
                direction,
                ip,
                active: false,
                vouched: false,
                bye: false,
                incarnation: remote.incarnation,
                flat: remote.features & flood::FEATURE_FLAT_FLOODS != 0,
                protocols: remote.protocols,
                backlog: 0,
                last_recv: now,
                bucket: TokenBucket::new(self.cfg.peer_rate, self.cfg.peer_burst, now),
                flood_since: None,
                last_over: 0,
            },
        );
        if self.banned.get(&peer).is_some_and(|&until| until > now) {
            self.close(conn, CloseReason::Misbehaviour);
            return;
        }
        if let Some(&existing) = self.by_peer.get(&peer) {
            // Two connections dialed in opposite directions (a simultaneous dial): keep the one
            // dialed by the lower peer id; both ends decide alike. Two dialed the same way: keep
            // the new one. A node never dials a peer it knows it is connected to, so a second
            // connection from the same dialer means the first is dead on its side (the peer
            // restarted with the same identity, or the link went silent) though not yet here;
            // both ends see the new one last and decide alike.
            let dialer = |d: Direction| {
                if d == Direction::Outbound {
                    self.local
                } else {
                    peer
                }
            };
            // A peer that restarted says so: its new run started later than the one the
            // existing connection came from, which is dead though nothing told this node (a
            // killed process whose goodbye was lost, a host that lost power). Without that, the
            // dialer rule could keep the dead connection and refuse the live one until the
            // idle timeout.
            let (old_dir, old_inc) = self
                .conns
                .get(&existing)
                .map_or((direction, 0), |c| (c.direction, c.incarnation));
            let new_wins =
                if old_inc != 0 && remote.incarnation != 0 && old_inc != remote.incarnation {
                    remote.incarnation > old_inc
                } else {
                    old_dir == direction || dialer(direction) < dialer(old_dir)
                };
            if new_wins {
                let mut vouched = false;
                if let Some(c) = self.conns.get_mut(&existing) {
                    c.active = false;
                    vouched = c.vouched;
                }
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.vouched |= vouched;
                }
                self.close(existing, CloseReason::Duplicate);
                self.activate(conn, peer);
            } else {
                self.close(conn, CloseReason::Duplicate);
            }
            return;
        }
        let same_ip = self
            .conns
            .values()
            .filter(|c| c.active && c.ip == ip)
            .count();
        // `max_peers` bounds every connection, dialed or accepted; the per-IP limit is for
        // what others open to us.
        if self.by_peer.len() >= self.cfg.max_peers
            || (direction == Direction::Inbound
                && self.limits_ip(ip)
                && same_ip >= self.cfg.max_peers_per_ip)
        {
            if let Some(st) = dialed.and_then(|a| self.addrs.get_mut(&a)) {
                // Full: try this address again later, backing off, not at every tick.
                st.failures = st.failures.saturating_add(1);
                let (initial, max) = (ms(self.cfg.backoff_initial), ms(self.cfg.backoff_max));
                st.next_attempt = now + initial.saturating_mul(1 << st.failures.min(16)).min(max);
            }
            // Full: say where else to go before closing, so a node refused by every bootstrap
            // address it knows still finds the rest of the mesh. The goodbye goes first, so the
            // dialer never takes the list for a sign that it was accepted.
            let list = (direction == Direction::Inbound).then(|| self.peer_list_frame(Some(peer)));
            self.close_after(conn, CloseReason::TooManyPeers, list);
            return;
        }
        if let Some(st) = dialed.and_then(|a| self.addrs.get_mut(&a)) {
            st.failures = 0;
        }
        self.activate(conn, peer);
        self.out.push_back(Output::Event(MeshEvent::PeerConnected {
            peer,
            addrs: listen,
        }));
        // The new peer gets our list; the others learn of it once it shows it keeps the
        // connection (`vouch`).
        let list = self.peer_list_frame(Some(peer));
        self.send(conn, list, false);
    }

    fn activate(&mut self, conn: ConnId, peer: PeerId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.active = true;
        }
        self.by_peer.insert(peer, conn);
        if let Err(i) = self.peer_list.binary_search(&peer) {
            self.peer_list.insert(i, peer);
        }
        self.stats.peers.entry(peer).or_default();
    }

    /// A connection ended (closed by either side, or failed).
    pub fn handle_closed(&mut self, conn: ConnId, now: Millis) {
        self.pending.remove(&conn);
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        if self.by_peer.get(&c.peer) == Some(&conn) {
            self.by_peer.remove(&c.peer);
            if let Ok(i) = self.peer_list.binary_search(&c.peer) {
                self.peer_list.remove(i);
            }
            self.stats.peers.remove(&c.peer);
            self.neighbors.remove(&c.peer);
            self.neighbor_seq.remove(&c.peer);
            self.tree_peer_gone(c.peer);
            self.out
                .push_back(Output::Event(MeshEvent::PeerDisconnected { peer: c.peer }));
            self.announce_peers();
            // Redial its addresses with backoff, starting soon.
            let initial = ms(self.cfg.backoff_initial);
            for st in self.addrs.values_mut().filter(|s| s.peer == Some(c.peer)) {
                st.next_attempt = now + initial;
            }
        }
    }

    fn close(&mut self, conn: ConnId, reason: CloseReason) {
        self.close_after(conn, reason, None);
    }

    /// Says goodbye on `conn`, then sends `last` (if any), then closes it.
    fn close_after(&mut self, conn: ConnId, reason: CloseReason, last: Option<Bytes>) {
        let bye = encode(Kind::Goodbye(pb::Goodbye {
            reason: reason.wire() as i32,
        }));
        self.out.push_back(Output::Send { conn, frame: bye });
        if let Some(frame) = last {
            self.send(conn, frame, false);
        }
        self.out.push_back(Output::Close { conn, reason });
    }

    fn ip_allowed(&self, ip: IpAddr) -> bool {
        if !self.limits_ip(ip) {
            return true;
        }
        let n = self.conns.values().filter(|c| c.ip == ip).count()
            + self.pending.values().filter(|&&p| p == ip).count();
        n < self.cfg.max_peers_per_ip * 2
    }

    fn limits_ip(&self, ip: IpAddr) -> bool {
        self.cfg.limit_loopback || !ip.is_loopback()
    }

    // ---- frames ----

    /// A frame arrived on a connection.
    pub fn handle_frame(&mut self, conn: ConnId, frame: Bytes, now: Millis) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.last_recv = now;
        let peer = c.peer;
        let vouched = c.vouched;
        if self.banned.contains_key(&peer) {
            return;
        }
        let within_rate = c.bucket.take(now);
        self.stats.received.frames += 1;
        self.stats.received.bytes += frame.len() as u64;
        if let Some(p) = self.stats.peers.get_mut(&peer) {
            p.received.frames += 1;
            p.received.bytes += frame.len() as u64;
        }
        if !within_rate {
            // Over its rate: stop reading from it for a moment (nothing is lost; the frame in
            // hand is still handled). A flood that goes on for `flood_ban_after` gets it
            // disconnected and banned.
            self.stats.throttled += 1;
            let since = match c.flood_since {
                Some(since) if now.saturating_sub(c.last_over) <= 1000 => since,
                _ => now,
            };
            c.flood_since = Some(since);
            c.last_over = now;
            if now.saturating_sub(since) >= ms(self.cfg.flood_ban_after) {
                self.stats.limit_disconnects += 1;
                self.ban(peer, now);
                return;
            }
            self.out.push_back(Output::Throttle {
                conn,
                until: now + THROTTLE_MS,
            });
        }
        let kind = match rs2p_base::wire::decode_bytes::<pb::MeshFrame>(frame) {
            Ok(pb::MeshFrame { kind: Some(k) }) => k,
            _ => {
                self.malformed(peer, now);
                return;
            }
        };
        if !vouched {
            self.vouch(conn, matches!(kind, Kind::Goodbye(_)));
        }
        match kind {
            Kind::Flood(f) => self.on_flood(conn, peer, f, now),
            Kind::FlatFlood(f) => {
                self.count_message(peer);
                match flood::inflate(f, &peer, &self.protocols) {
                    Ok((f, body)) => self.on_whole_flood(conn, peer, f, Some(body), now),
                    Err(()) => self.malformed(peer, now),
                }
            }
            Kind::Direct(d) => {
                self.count_message(peer);
                self.out.push_back(Output::Deliver(Inbound {
                    protocol: d.protocol,
                    from: peer,
                    origin: peer,
                    payload: d.payload,
                    relay: None,
                    flooded: false,
                    issued_at: None,
                }));
            }
            Kind::Peers(list) => self.on_peer_list(peer, list, now),
            Kind::PeerRequest(_) => {
                let list = self.peer_list_frame(Some(peer));
                self.send(conn, list, false);
            }
            Kind::Ping(p) => {
                self.send(conn, encode(Kind::Pong(pb::Pong { nonce: p.nonce })), false)
            }
            Kind::Tree(t) => self.on_tree(conn, peer, t, now),
            Kind::Pong(_) | Kind::Goodbye(_) => {}
        }
    }

    /// A frame arrived on `conn`: the first one that is not a goodbye shows that the peer keeps
    /// the connection, and the other peers learn that this node has it.
    fn vouch(&mut self, conn: ConnId, goodbye: bool) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.bye |= goodbye;
        if c.bye || !c.active {
            return;
        }
        c.vouched = true;
        self.announce_peers();
    }

    /// Whether floods on `conn` from `peer` shape the relay trees: only on a peer's active
    /// connection. A connection being closed (refused because this node is full, or the loser
    /// of a simultaneous dial) still delivers what was in flight on it, but a parent on it would
    /// never be reported gone, and the node would wait on it for good.
    fn tree_link(&self, peer: PeerId, conn: ConnId) -> bool {
        self.cfg.relay_tree && self.by_peer.get(&peer) == Some(&conn)
    }

    fn on_tree(&mut self, conn: ConnId, peer: PeerId, t: pb::Tree, now: Millis) {
        let op = match pb::tree::Op::try_from(t.op) {
            Ok(pb::tree::Op::Prune) => TreeOp::Prune,
            Ok(pb::tree::Op::Graft) => TreeOp::Graft,
            Ok(pb::tree::Op::GraftAck) => TreeOp::GraftAck,
            Ok(pb::tree::Op::Lost) => TreeOp::Lost,
            Err(_) => {
                self.malformed(peer, now);
                return;
            }
        };
        let Some(origin) = PeerId::from_slice(&t.origin) else {
            self.malformed(peer, now);
            return;
        };
        if self.by_peer.get(&peer) != Some(&conn) {
            // From a connection being closed: the peer's state goes with it.
            return;
        }
        let mut msgs = Vec::new();
        self.tree
            .on_control(peer, origin, op, t.seq, &self.peer_list, &mut msgs);
        self.send_tree(msgs);
    }

    /// Sends relay-tree control messages to the neighbours they are for.
    fn send_tree(&mut self, msgs: Vec<TreeMsg>) {
        for m in msgs {
            let Some(&conn) = self.by_peer.get(&m.to) else {
                continue;
            };
            let op = match m.op {
                TreeOp::Prune => {
                    self.stats.tree_prunes += 1;
                    pb::tree::Op::Prune
                }
                TreeOp::Graft => {
                    self.stats.tree_grafts += 1;
                    pb::tree::Op::Graft
                }
                TreeOp::GraftAck => pb::tree::Op::GraftAck,
                TreeOp::Lost => pb::tree::Op::Lost,
            };
            let frame = encode(Kind::Tree(pb::Tree {
                origin: Bytes::copy_from_slice(m.origin.as_bytes()),
                op: op as i32,
                seq: m.seq,
            }));
            self.send(conn, frame, false);
        }
    }

    /// A peer is gone: its place in the relay trees too.
    fn tree_peer_gone(&mut self, peer: PeerId) {
        let mut msgs = Vec::new();
        self.tree.peer_gone(peer, &self.peer_list, &mut msgs);
        self.send_tree(msgs);
    }

    /// A frame from `peer` that does not decode or make sense: counted, and held against it.
    fn malformed(&mut self, peer: PeerId, now: Millis) {
        self.stats.malformed += 1;
        self.strike(peer, now);
    }

    fn count_message(&mut self, peer: PeerId) {
        self.stats.received.messages += 1;
        if let Some(p) = self.stats.peers.get_mut(&peer) {
            p.received.messages += 1;
        }
    }

    fn on_flood(&mut self, conn: ConnId, peer: PeerId, mut f: pb::Flood, now: Millis) {
        self.count_message(peer);
        let Ok(expanded) = flood::expand(&mut f, &peer, &self.protocols) else {
            self.malformed(peer, now);
            return;
        };
        self.on_whole_flood(conn, peer, f, expanded, now);
    }

    /// A flood with its body as the origin encoded it; `expanded` is that body decoded, when it
    /// came flat or compacted (so it was rebuilt and re-encoded here).
    fn on_whole_flood(
        &mut self,
        conn: ConnId,
        peer: PeerId,
        f: pb::Flood,
        expanded: Option<pb::FloodBody>,
        now: Millis,
    ) {
        let id = flood::msg_id(&f.body);
        if self.seen.contains(id, now) {
            self.stats.duplicates += 1;
            if self.tree_link(peer, conn) {
                // A duplicate from a relay: ask it to stop relaying this origin's floods to us.
                // A rebuilt body is at hand decoded; a whole one is decoded for its origin.
                let origin = match expanded {
                    Some(b) => PeerId::from_slice(&b.origin),
                    None => rs2p_base::wire::decode_bytes::<pb::FloodBody>(f.body)
                        .ok()
                        .and_then(|b| PeerId::from_slice(&b.origin)),
                };
                if let Some(origin) = origin {
                    let mut msgs = Vec::new();
                    self.tree.on_duplicate(peer, origin, &mut msgs);
                    self.send_tree(msgs);
                }
            }
            return;
        }
        let rebuilt = expanded.is_some();
        let decoded = match expanded {
            Some(body) => Ok(body),
            None => rs2p_base::wire::decode_bytes::<pb::FloodBody>(f.body.clone()),
        };
        let Ok(body) = decoded else {
            self.malformed(peer, now);
            return;
        };
        let Some(origin) = PeerId::from_slice(&body.origin) else {
            self.malformed(peer, now);
            return;
        };
        let too_old = body.issued_at_ms.saturating_add(ms(self.cfg.max_flood_age)) < now;
        let too_new = body.issued_at_ms > now.saturating_add(ms(self.cfg.max_clock_skew));
        if origin == self.local || too_old || too_new || f.hops_left == 0 {
            self.stats.stale += 1;
            return;
        }
        let self_verifying = f.signature.is_empty();
        if self_verifying {
            if !self.self_verifying.contains(&body.protocol) {
                // We cannot vouch for an unsigned flood of a protocol we do not verify. If we run
                // it with mesh signatures, it is a forgery; if we do not run it at all, it may be
                // a self-verifying protocol of another kind of node (an unsigned sync socket's on
                // a mesh with signed ones): neither delivered nor relayed, and not held against
                // the peer.
                if self.mesh_signed.contains(&body.protocol) {
                    self.stats.bad_signatures += 1;
                    self.strike(peer, now);
                } else {
                    self.stats.unverifiable += 1;
                }
                return;
            }
        } else if !flood::verify(&origin, &self.network_id, &f.body, &f.signature) {
            self.stats.bad_signatures += 1;
            self.strike(peer, now);
            return;
        }
        self.seen.insert(id, now);
        if self.tree_link(peer, conn) {
            let mut msgs = Vec::new();
            self.tree.on_first(peer, origin, &mut msgs);
            self.send_tree(msgs);
        }
        let relay = Relay {
            frame: pb::Flood {
                hops_left: f.hops_left - 1,
                ..f
            },
            canonical: rebuilt,
            except: conn,
            from: peer,
            origin,
        };
        let relay = if self_verifying {
            Some(relay)
        } else {
            self.relay(relay);
            None
        };
        self.stats.delivered += 1;
        self.out.push_back(Output::Deliver(Inbound {
            protocol: body.protocol,
            from: peer,
            origin,
            payload: body.payload,
            relay,
            flooded: true,
            issued_at: Some(body.issued_at_ms),
        }));
    }

    /// Relays a flood its handler accepted, to every peer but the one it came from, and (with
    /// `relay_suppression`) but the peers another node already sends it to: a peer that says it
    /// is connected to the origin, or that the origin says it is connected to (the origin sends
    /// to all its peers; only the origin's own floods depend on its word), and a peer that both it
    /// and the sender say are connected (the sender relays to its peers by the same rule, down to
    /// the origin). In a full mesh nothing is relayed, so each node receives each flood once.
    ///
    /// With `relay_tree`, the third rule is replaced by the relay trees: a peer that pruned the
    /// origin's floods is skipped (see [`RelayTree`]).
    pub fn relay(&mut self, relay: Relay) {
        if relay.frame.hops_left == 0 {
            return;
        }
        let says = |a: &PeerId, b: &PeerId| self.neighbors.get(a).is_some_and(|n| n.contains(b));
        let suppress = self.cfg.relay_suppression;
        let tree = self.cfg.relay_tree;
        // With relay trees the third rule is left out: the sender may have been pruned by `p`.
        let suppressed = |p: &PeerId| {
            suppress
                && (says(p, &relay.origin)
                    || says(&relay.origin, p)
                    || (!tree && says(p, &relay.from) && says(&relay.from, p)))
        };
        let mut conns = Vec::new();
        let (mut skipped, mut pruned) = (0, 0);
        for (p, &c) in &self.by_peer {
            if c == relay.except || *p == relay.origin {
                continue;
            }
            if suppressed(p) {
                skipped += 1;
            } else if tree && self.tree.is_pruned(p, &relay.origin) {
                pruned += 1;
            } else {
                conns.push(c);
            }
        }
        self.stats.relays_suppressed += skipped;
        self.stats.relays_pruned += pruned;
        if conns.is_empty() {
            return;
        }
        self.stats.forwarded += conns.len() as u64;
        self.send_flood(&conns, relay.frame, None, relay.canonical, false);
    }

    /// The place (from 1) of `protocol` in the list the peer on `conn` gave in its handshake,
    /// if it takes flat floods and runs the protocol.
    fn protocol_ref(&self, conn: ConnId, protocol: &str) -> Option<u32> {
        let c = self.conns.get(&conn).filter(|c| c.flat)?;
        let i = c.protocols.iter().position(|p| p == protocol)?;
        u32::try_from(i + 1).ok()
    }

    /// Sends a flood on each of `conns`: flat for the peers that take it (the protocol by its
    /// place in their list, and, for `own` floods, the origin left out, since the peer receives
    /// it from the origin), whole to the others. `decoded` is its body decoded, if at hand;
    /// `canonical`, whether the body is known to re-encode to itself (otherwise that is checked
    /// here, when some peer takes flat floods).
    fn send_flood(
        &mut self,
        conns: &[ConnId],
        flood: pb::Flood,
        decoded: Option<pb::FloodBody>,
        canonical: bool,
        own: bool,
    ) {
        let flattenable = conns
            .iter()
            .any(|&c| self.conns.get(&c).is_some_and(|c| c.flat));
        let body = match (flattenable, decoded, canonical) {
            (false, _, _) => None,
            (true, Some(body), true) => Some(body),
            (true, _, true) => {
                rs2p_base::wire::decode_bytes::<pb::FloodBody>(flood.body.clone()).ok()
            }
            (true, _, false) => flood::canonical(&flood.body),
        };
        let Some(body) = body else {
            let frame = encode(Kind::Flood(flood));
            for &conn in conns {
                self.send(conn, frame.clone(), true);
            }
            return;
        };
        // Built once each, on demand: the whole frame, and a flat frame per place of the
        // protocol in the peers' lists (0: not there, named).
        let mut whole: Option<Bytes> = None;
        let mut flat: Vec<(u32, Bytes)> = Vec::new();
        for &conn in conns {
            let Some(c) = self.conns.get(&conn) else {
                continue;
            };
            let frame = if c.flat {
                let protocol_ref = self.protocol_ref(conn, &body.protocol).unwrap_or(0);
                match flat.iter().find(|(r, _)| *r == protocol_ref) {
                    Some((_, f)) => f.clone(),
                    None => {
                        let f = encode(Kind::FlatFlood(flood::flatten(
                            &flood,
                            &body,
                            own,
                            protocol_ref,
                        )));
                        flat.push((protocol_ref, f.clone()));
                        f
                    }
                }
            } else {
                whole
                    .get_or_insert_with(|| encode(Kind::Flood(flood.clone())))
                    .clone()
            };
            self.send(conn, frame, true);
        }
    }

    /// Tells every peer this node's peers changed (their relay suppression depends on it).
    fn announce_peers(&mut self) {
        let peers: Vec<(PeerId, ConnId)> = self.by_peer.iter().map(|(&p, &c)| (p, c)).collect();
        for (p, conn) in peers {
            let list = self.peer_list_frame(Some(p));
            self.send(conn, list, false);
        }
    }

    /// Counts a strike against `peer`; past the limit it is disconnected and banned.
    pub fn strike(&mut self, peer: PeerId, now: Millis) {
        let n = self.strikes.entry(peer).or_insert(0);
        *n += 1;
        if let Some(p) = self.stats.peers.get_mut(&peer) {
            p.strikes += 1;
        }
        if *n >= self.cfg.max_strikes {
            self.ban(peer, now);
        }
    }

    fn ban(&mut self, peer: PeerId, now: Millis) {
        let until = now + ms(self.cfg.ban_duration);
        self.banned.insert(peer, until);
        self.strikes.remove(&peer);
        let conns: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.peer == peer)
            .map(|(&id, _)| id)
            .collect();
        for conn in conns {
            self.close(conn, CloseReason::Misbehaviour);
        }
        // Gone at once: not a peer any more, and nothing more it sends is handled, even while
        // the connection drains.
        if self.by_peer.remove(&peer).is_some() {
            if let Ok(i) = self.peer_list.binary_search(&peer) {
                self.peer_list.remove(i);
            }
            self.stats.peers.remove(&peer);
            self.neighbors.remove(&peer);
            self.neighbor_seq.remove(&peer);
            self.tree_peer_gone(peer);
            self.out
                .push_back(Output::Event(MeshEvent::PeerDisconnected { peer }));
            self.announce_peers();
        }
        self.out
            .push_back(Output::Event(MeshEvent::PeerBanned { peer, until }));
    }

    fn on_peer_list(&mut self, from: PeerId, list: pb::PeerList, now: Millis) {
        let mut theirs = BTreeSet::new();
        for info in list.peers.into_iter().take(256) {
            let Some(peer) = PeerId::from_slice(&info.id) else {
                self.strike(from, now);
                return;
            };
            if peer != from {
                theirs.insert(peer);
            }
            if peer == self.local {
                continue;
            }
            let addrs: Vec<SocketAddr> = info
                .addrs
                .iter()
                .take(8)
                .filter_map(|a| a.parse().ok())
                .collect();
            self.learn_addrs(peer, &addrs, IpAddr::from([0, 0, 0, 0]));
        }
        // A list older than one applied already (frames reordered) is not applied.
        let newer = self.neighbor_seq.get(&from).is_none_or(|&s| list.seq >= s);
        if self.by_peer.contains_key(&from) && newer {
            self.neighbors.insert(from, theirs);
            self.neighbor_seq.insert(from, list.seq);
        }
        self.dial_due(now);
    }

    /// Records where `peer` listens; an unspecified IP (0.0.0.0) is replaced by `seen_ip`.
    fn learn_addrs(
        &mut self,
        peer: PeerId,
        addrs: &[SocketAddr],
        seen_ip: IpAddr,
    ) -> Vec<SocketAddr> {
        let mut out = Vec::new();
        for &a in addrs.iter().take(8) {
            let a = if a.ip().is_unspecified() && !seen_ip.is_unspecified() {
                SocketAddr::new(seen_ip, a.port())
            } else {
                a
            };
            if a.ip().is_unspecified() || a.port() == 0 {
                continue;
            }
            out.push(a);
            if !self.addrs.contains_key(&a) && self.addrs.len() >= self.cfg.max_known_addrs {
                continue;
            }
            let st = self.addrs.entry(a).or_default();
            if !st.is_self {
                st.peer = Some(peer);
            }
        }
        out
    }

    fn peer_list_frame(&mut self, exclude: Option<PeerId>) -> Bytes {
        let mut by_peer: BTreeMap<PeerId, Vec<String>> = BTreeMap::new();
        for (addr, st) in &self.addrs {
            if let Some(p) = st.peer {
                let vouched = self
                    .by_peer
                    .get(&p)
                    .and_then(|c| self.conns.get(c))
                    .is_some_and(|c| c.vouched);
                if Some(p) != exclude && !st.is_self && vouched {
                    by_peer.entry(p).or_default().push(addr.to_string());
                }
            }
        }
        let mut peers: Vec<pb::PeerInfo> = by_peer
            .into_iter()
            .map(|(p, addrs)| pb::PeerInfo {
                id: Bytes::copy_from_slice(p.as_bytes()),
                addrs,
            })
            .collect();
        peers.truncate(256);
        peers.push(pb::PeerInfo {
            id: Bytes::copy_from_slice(self.local.as_bytes()),
            addrs: self.listen_addrs.iter().map(ToString::to_string).collect(),
        });
        self.peer_list_seq += 1;
        encode(Kind::Peers(pb::PeerList {
            peers,
            seq: self.peer_list_seq,
        }))
    }

    fn send(&mut self, conn: ConnId, frame: Bytes, message: bool) {
        self.stats.sent.frames += 1;
        self.stats.sent.bytes += frame.len() as u64;
        self.stats.sent.messages += u64::from(message);
        if let Some(p) = self
            .conns
            .get(&conn)
            .and_then(|c| self.stats.peers.get_mut(&c.peer))
        {
            p.sent.frames += 1;
            p.sent.bytes += frame.len() as u64;
            p.sent.messages += u64::from(message);
        }
        self.out.push_back(Output::Send { conn, frame });
    }

    // ---- time ----

    /// Periodic work: dial when under `min_peers`, ping, drop idle peers, ask for peers, forget
    /// expired bans.
    pub fn handle_tick(&mut self, now: Millis, rng: &mut dyn RngCore) {
        if now < self.next_tick {
            self.dial_due(now);
            return;
        }
        self.next_tick = now + ms(self.cfg.tick);
        self.banned.retain(|_, &mut until| until > now);
        let idle = ms(self.cfg.idle_timeout);
        let conns: Vec<(ConnId, Millis)> = self
            .conns
            .iter()
            .map(|(&id, c)| (id, c.last_recv))
            .collect();
        for (conn, last) in conns {
            if last + idle < now {
                self.close(conn, CloseReason::Idle);
            } else if last + idle / 3 < now {
                let ping = encode(Kind::Ping(pb::Ping {
                    nonce: rng.next_u64(),
                }));
                self.send(conn, ping, false);
            }
        }
        if self.by_peer.len() < self.cfg.min_peers && !self.peer_list.is_empty() {
            let peer = self.peer_list[rng.gen_range(0..self.peer_list.len())];
            if let Some(&conn) = self.by_peer.get(&peer) {
                self.send(conn, encode(Kind::PeerRequest(pb::PeerRequest {})), false);
            }
        }
        self.dial_due(now);
    }

    fn dial_due(&mut self, now: Millis) {
        let connected: BTreeSet<PeerId> = self.by_peer.keys().copied().collect();
        let dialing = self.addrs.values().filter(|s| s.dialing).count();
        let mut budget = self
            .cfg
            .min_peers
            .min(self.cfg.max_peers)
            .saturating_sub(connected.len() + dialing);
        let mut slots = self
            .cfg
            .max_pending_handshakes
            .saturating_sub(self.pending.len());
        let mut planned: BTreeSet<PeerId> = BTreeSet::new();
        let mut dials = Vec::new();
        for (addr, st) in &self.addrs {
            if st.is_self || st.dialing || st.next_attempt > now || slots == 0 {
                continue;
            }
            if st
                .peer
                .is_some_and(|p| connected.contains(&p) || planned.contains(&p))
            {
                continue;
            }
            let wanted = st.persistent || budget > 0;
            if !wanted {
                continue;
            }
            if !st.persistent {
                budget -= 1;
            }
            slots -= 1;
            if let Some(p) = st.peer {
                planned.insert(p);
            }
            dials.push((*addr, if st.persistent { None } else { st.peer }));
        }
        for (addr, expected) in dials {
            if let Some(st) = self.addrs.get_mut(&addr) {
                st.dialing = true;
            }
            self.out.push_back(Output::Dial { addr, expected });
        }
    }

    /// Closes every connection (the node is shutting down).
    pub fn shutdown(&mut self) {
        let conns: Vec<ConnId> = self.conns.keys().copied().collect();
        for conn in conns {
            self.close(conn, CloseReason::Shutdown);
        }
    }

    /// Per-peer counters for a connected peer.
    pub fn peer_stats(&self, peer: &PeerId) -> Option<PeerStats> {
        self.stats.peers.get(peer).copied()
    }
}
