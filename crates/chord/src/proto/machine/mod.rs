//! [`ChordMachine`]: the chord socket as a mesh [`Handler`], without I/O.
//!
//! - **Positions.** Nodes and keys hash onto one 2^64 ring ([`crate::ring`]). A node owns the
//!   arc `(predecessor, itself]`; a key is stored on its owner and the owner's next
//!   `replicas − 1` successors.
//! - **Routing.** An operation travels as a `ChordRoute`, whispered hop by hop along existing
//!   connections: to a connected node that owns the target by its own account (its `Hello` says
//!   where its arc starts), else to the owner by this node's successor, else to the connected node
//!   closest before the target (fingers halve the distance). The route lists every node it passed,
//!   so a loop is seen and dropped, and the answer goes back along it (or straight to the origin
//!   when connected). The origin retries an unanswered route and fails after
//!   `request_timeout × attempts`.
//! - **Ring upkeep.** Every `stabilize` period a node tells its successor it is its predecessor
//!   (and who precedes it), learns the successor's successors, looks up a few fingers
//!   (`position + 2^i`) and dials them, and sends each of its replicas a digest of the arc it owns;
//!   a differing digest starts a key-by-key comparison that sends each side what it lacks. A
//!   joining node finds its successor through any peer, gets its share of the keys from it, and is
//!   then found by the others' stabilisation; a leaving node hands its keys to its successor first.
//!   A node that fails simply disconnects: its successor's arc grows over the failed node's keys,
//!   which it already holds as a replica, and the next digest round copies them to the new third
//!   replica.
//! - **Records** are the sync socket's signed records ([`rs2p_record`]), one per batch; replicas
//!   keep a key's newest by the same order ([`rs2p_record::resolve::supersedes`]). Forwarders do
//!   not verify; the owner and every replica do.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use bytes::Bytes;
use prost::Message;
use rand::Rng;
use rs2p_base::wire::pb::{self, chord_message::Kind, chord_route};
use rs2p_base::{hash256, Keypair, PeerId};
use rs2p_mesh::{Context, Handler, InboundMessage, Verdict};
use rs2p_record::{seal, Record, Stored};

use super::store::Store;
use crate::config::ms;
use crate::ring::{key_pos, node_pos, Pos};
use crate::{ChordConfig, ChordError};

/// The chord socket's protocol id.
pub const PROTOCOL: &str = "/rs2p/chord/1";

const TICK_TIMER: u64 = 1;
const STABILIZE_TIMER: u64 = 2;
/// Finger lookups per stabilisation round.
const FINGERS_PER_ROUND: usize = 4;
/// Route ids carry the attempt in their low bits.
const ATTEMPT_BITS: u32 = 4;

mod joining;
mod links;
mod replicas;
mod routing;
mod time;
mod upkeep;
/// A node of the ring: who, where on the ring, and where it listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRef {
    /// Its peer id.
    pub peer: PeerId,
    /// Its ring position ([`node_pos`] of the id).
    pub pos: Pos,
    /// Where it listens.
    pub addrs: Vec<SocketAddr>,
}

impl NodeRef {
    fn to_pb(&self) -> pb::ChordNode {
        pb::ChordNode {
            peer: Bytes::copy_from_slice(self.peer.as_bytes()),
            addrs: self.addrs.iter().map(ToString::to_string).collect(),
        }
    }

    fn from_pb(n: &pb::ChordNode) -> Option<Self> {
        let peer = PeerId::from_slice(&n.peer)?;
        Some(Self {
            peer,
            pos: node_pos(&peer),
            addrs: n
                .addrs
                .iter()
                .take(4)
                .filter_map(|a| a.parse().ok())
                .collect(),
        })
    }
}

/// What an operation answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The owner's newest record of the key (`None`: never written there; a tombstone is
    /// returned as such).
    Got(Option<Record>),
    /// A write: whether it is the key's newest at the owner (else the newer one's time), and how
    /// many nodes hold it.
    Put {
        /// Whether the write is now the key's newest.
        applied: bool,
        /// When not applied: the newer write's time (Unix ms).
        newest_ms: u64,
        /// How many nodes acknowledged it (the owner included).
        copies: u32,
    },
    /// The owner of a position.
    Found(NodeRef),
    /// A page of a ring walk: live records after the cursor, and how far the page reaches.
    Range {
        /// The records, in ring order.
        records: Vec<Record>,
        /// The position up to which the page is complete.
        covered: Pos,
        /// Who answered.
        owner: NodeRef,
    },
}

/// An operation that finished, for [`ChordMachine::take_completions`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The id its start returned.
    pub id: u64,
    /// Its answer or why it failed.
    pub result: Result<Outcome, ChordError>,
    /// Forwards the answering route took (0 when this node answered itself).
    pub hops: u32,
}

/// The chord socket's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChordStats {
    /// User operations answered, and the forwards they took in total (mean hops = ratio).
    pub lookups: u64,
    /// Sum of hops over `lookups`.
    pub hops_total: u64,
    /// The most hops one lookup took.
    pub hops_max: u32,
    /// `hop_histogram[h]`: user lookups that took `h` hops (the last slot counts the rest).
    pub hop_histogram: [u64; 16],
    /// Routes this node forwarded.
    pub forwarded: u64,
    /// Routes dropped because they had passed this node before.
    pub loops_dropped: u64,
    /// Routes dropped for exceeding `max_hops`.
    pub hop_limit_dropped: u64,
    /// Routes dropped because no connected peer was closer.
    pub stuck: u64,
    /// Records refused for a bad signature or malformed content.
    pub forged: u64,
    /// Records refused because their key is outside the arcs this node replicates.
    pub out_of_range: u64,
    /// Messages that did not decode or made no sense.
    pub malformed: u64,
    /// Route attempts that timed out (and were retried, or failed).
    pub timeouts: u64,
    /// Operations that failed after every attempt.
    pub failed: u64,
    /// Records stored as a replica (writes, transfers and repairs).
    pub replica_records: u64,
    /// Records sent by digest repair.
    pub repaired: u64,
    /// Joins this node answered as the newcomer's successor.
    pub joins_served: u64,
}

#[derive(Debug, Clone)]
enum Op {
    Get(Bytes),
    Put(pb::RecordBatch),
    Find,
    Range(Pos),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    User,
    Join,
    Finger(u32),
    Probe,
    /// A record written while alone, sent to its owner after joining.
    Rehome,
}

#[derive(Debug)]
struct Pending {
    op: Op,
    target: Pos,
    purpose: Purpose,
    attempts: u32,
    deadline: u64,
}

#[derive(Debug)]
struct Replicating {
    id: u64,
    path: Vec<Bytes>,
    hops: u32,
    waiting: BTreeSet<PeerId>,
    copies: u32,
    deadline: u64,
}

/// A connected peer that speaks chord.
#[derive(Debug, Clone)]
struct PeerInfo {
    node: NodeRef,
    joined: bool,
    pred: Option<Pos>,
}

impl PeerInfo {
    /// Part of a ring with others: a node alone claims the whole ring, so routes never go to it
    /// (it joins a ring when it meets one).
    fn routable(&self) -> bool {
        self.joined && self.pred.is_some()
    }
}

#[derive(Debug)]
struct Joining {
    op: u64,
    succ: Option<NodeRef>,
    started: u64,
    /// Joins sent again to `succ` without a new lookup (see `ChordMachine::stabilize`).
    asked_again: u8,
}

/// The chord socket's state machine. See the [module docs](self).
#[derive(Debug)]
pub struct ChordMachine {
    cfg: ChordConfig,
    keypair: Keypair,
    network_id: [u8; 32],
    me: NodeRef,
    joined: bool,
    joining: Option<Joining>,
    preds: Vec<NodeRef>,
    succs: Vec<NodeRef>,
    fingers: BTreeMap<u32, NodeRef>,
    next_finger: usize,
    peers: BTreeMap<PeerId, PeerInfo>,
    store: Store,
    pending: BTreeMap<u64, Pending>,
    replicating: BTreeMap<u64, Replicating>,
    outbox: BTreeMap<PeerId, (u64, Vec<Bytes>)>,
    completions: Vec<Completion>,
    seq: u64,
    last_issued: u64,
    last_version: u64,
    now: u64,
    started: bool,
    /// Stabilisation rounds so far.
    rounds: u64,
    /// Records held while alone, written to their owners once joined.
    rehome: Vec<pb::RecordBatch>,
    stats: ChordStats,
}

fn encode(kind: Kind) -> Bytes {
    Bytes::from(pb::ChordMessage { kind: Some(kind) }.encode_to_vec())
}

impl ChordMachine {
    /// A node with this identity in the network `network_id`: a ring of its own until a peer
    /// that is part of a ring connects.
    pub fn new(cfg: ChordConfig, keypair: Keypair, network_id: [u8; 32]) -> Self {
        let peer = keypair.peer_id();
        Self {
            // Records signed for the chord socket never verify as sync records and back.
            network_id: hash256("rs2p/v1/chord-network", &[&network_id]),
            me: NodeRef {
                peer,
                pos: node_pos(&peer),
                addrs: Vec::new(),
            },
            cfg,
            keypair,
            joined: true,
            joining: None,
            preds: Vec::new(),
            succs: Vec::new(),
            fingers: BTreeMap::new(),
            next_finger: 0,
            peers: BTreeMap::new(),
            store: Store::default(),
            pending: BTreeMap::new(),
            replicating: BTreeMap::new(),
            outbox: BTreeMap::new(),
            completions: Vec::new(),
            seq: 0,
            last_issued: 0,
            last_version: 0,
            now: 0,
            started: false,
            rehome: Vec::new(),
            rounds: 0,
            stats: ChordStats::default(),
        }
    }

    // ---- reading ----

    /// This node on the ring.
    pub fn node(&self) -> &NodeRef {
        &self.me
    }

    /// Whether this node is part of a ring (alone counts).
    pub fn is_joined(&self) -> bool {
        self.joined
    }

    /// Its successors, nearest first.
    pub fn successors(&self) -> &[NodeRef] {
        &self.succs
    }

    /// Its predecessors, nearest first.
    pub fn predecessors(&self) -> &[NodeRef] {
        &self.preds
    }

    /// Its distinct fingers.
    pub fn fingers(&self) -> Vec<&NodeRef> {
        let mut v: Vec<&NodeRef> = self.fingers.values().collect();
        v.dedup_by_key(|n| n.peer);
        v
    }

    /// Puts back the records a data directory kept, and from then on tracks which keys change
    /// ([`ChordMachine::take_dirty`]). This node's own records set its clock and version floor.
    pub fn restore(&mut self, records: impl IntoIterator<Item = Stored>) {
        for s in records {
            if *s.owner() == self.me.peer {
                self.last_issued = self.last_issued.max(s.issued_at());
                self.last_version = self.last_version.max(s.version());
            }
            self.store.apply(s);
        }
        self.store.track_changes();
    }

    /// The keys whose record here changed since the last call (for a data directory).
    pub fn take_dirty(&mut self) -> Vec<Bytes> {
        self.store.take_dirty()
    }

    /// The records held here (owned and replicated).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The arc this node owns, `(from, to]` (the whole ring when alone).
    pub fn owned_arc(&self) -> (Pos, Pos) {
        (
            self.preds.first().map_or(self.me.pos, |p| p.pos),
            self.me.pos,
        )
    }

    /// The counters.
    pub fn stats(&self) -> &ChordStats {
        &self.stats
    }

    /// Operations that finished since the last call.
    pub fn take_completions(&mut self) -> Vec<Completion> {
        std::mem::take(&mut self.completions)
    }

    // ---- operations ----

    /// Starts a lookup of `key`'s newest record at its owner.
    pub fn get(&mut self, cx: &mut Context<'_>, key: Bytes) -> Result<u64, ChordError> {
        self.check_sizes(&key, 0)?;
        let target = key_pos(&key);
        Ok(self.start(cx, Op::Get(key), target, Purpose::User, None))
    }

    /// Starts a write of `key` (`None` deletes it), timestamped after `after_ms` (pass 0, or the
    /// newer write's time from an unapplied [`Outcome::Put`] to retry after it).
    pub fn put(
        &mut self,
        cx: &mut Context<'_>,
        key: Bytes,
        value: Option<Bytes>,
        after_ms: u64,
    ) -> Result<u64, ChordError> {
        self.check_sizes(&key, value.as_ref().map_or(0, Bytes::len))?;
        self.enter(cx);
        let issued_at = cx
            .now()
            .max(self.last_issued + 1)
            .max(after_ms.saturating_add(1));
        self.last_issued = issued_at;
        self.last_version = (self.last_version + 1).max(issued_at << 10);
        let record = Record {
            key: key.clone(),
            tombstone: value.is_none(),
            value: value.unwrap_or_default(),
            owner: self.me.peer,
            issued_at,
            version: self.last_version,
            lease_until: issued_at,
        };
        let (_, batch) = seal(&self.keypair, &self.network_id, vec![record]);
        Ok(self.start(cx, Op::Put(batch), key_pos(&key), Purpose::User, None))
    }

    /// Starts a lookup of the node that owns `pos`.
    pub fn find(&mut self, cx: &mut Context<'_>, pos: Pos) -> u64 {
        self.start(cx, Op::Find, pos, Purpose::User, None)
    }

    /// Starts one page of a ring walk: the owner of `after + 1` answers with its live records
    /// after `after`.
    pub fn range(&mut self, cx: &mut Context<'_>, after: Pos) -> u64 {
        self.start(
            cx,
            Op::Range(after),
            after.wrapping_add(1),
            Purpose::User,
            None,
        )
    }

    /// Leaves the ring cleanly: the successor receives this node's keys and predecessors, the
    /// predecessor its successors. Close the mesh afterwards.
    pub fn leave(&mut self, cx: &mut Context<'_>) {
        self.enter(cx);
        if !self.joined {
            return;
        }
        let (from, to) = self.owned_arc();
        if let Some(s) = self.succs.first().cloned() {
            let owned: Vec<Stored> = self.store.arc(from, to).map(|(_, s)| s.clone()).collect();
            self.send_records(cx, s.peer, owned.iter(), 0);
            let preds = self.preds.iter().map(NodeRef::to_pb).collect();
            self.send(
                cx,
                &s,
                encode(Kind::Leave(pb::ChordLeave {
                    preds,
                    succs: vec![],
                })),
            );
        }
        if let Some(p) = self.preds.first().cloned() {
            let succs = self.succs.iter().map(NodeRef::to_pb).collect();
            self.send(
                cx,
                &p,
                encode(Kind::Leave(pb::ChordLeave {
                    preds: vec![],
                    succs,
                })),
            );
        }
        self.joined = false;
        self.preds.clear();
        self.succs.clear();
    }

    fn check_sizes(&self, key: &[u8], value: usize) -> Result<(), ChordError> {
        if key.is_empty() || key.len() > self.cfg.max_key_len || value > self.cfg.max_value_len {
            return Err(ChordError::TooLarge {
                key: key.len(),
                value,
            });
        }
        Ok(())
    }

    fn enter(&mut self, cx: &mut Context<'_>) {
        self.now = cx.now();
        if self.me.addrs.is_empty() {
            self.me.addrs = cx.listen_addrs().to_vec();
        }
        if !self.started {
            self.started = true;
            cx.set_timer(self.tick_ms(), TICK_TIMER);
            let first = cx.rng().gen_range(0..=ms(self.cfg.stabilize));
            cx.set_timer(first, STABILIZE_TIMER);
        }
    }

    fn tick_ms(&self) -> u64 {
        (ms(self.cfg.stabilize) / 10).clamp(10, 100)
    }

    fn start(
        &mut self,
        cx: &mut Context<'_>,
        op: Op,
        target: Pos,
        purpose: Purpose,
        first_hop: Option<PeerId>,
    ) -> u64 {
        self.enter(cx);
        self.seq += 1;
        let id = self.seq;
        self.pending.insert(
            id,
            Pending {
                op,
                target,
                purpose,
                attempts: 0,
                deadline: 0,
            },
        );
        self.launch(cx, id, first_hop);
        id
    }

    fn launch(&mut self, cx: &mut Context<'_>, id: u64, first_hop: Option<PeerId>) {
        let timeout = ms(self.cfg.request_timeout);
        let Some(p) = self.pending.get_mut(&id) else {
            return;
        };
        p.attempts += 1;
        p.deadline = self.now + timeout;
        let op = match &p.op {
            Op::Get(k) => chord_route::Op::Get(k.clone()),
            Op::Put(b) => chord_route::Op::Put(b.clone()),
            Op::Find => chord_route::Op::Find(self.me.to_pb()),
            Op::Range(after) => chord_route::Op::Range(pb::ChordRange {
                after: *after,
                limit: u32::try_from(self.cfg.transfer_chunk).unwrap_or(u32::MAX),
            }),
        };
        let route = pb::ChordRoute {
            id: (id << ATTEMPT_BITS) | u64::from(p.attempts.min(15)),
            path: vec![],
            target: p.target,
            op: Some(op),
        };
        self.route(cx, route, first_hop);
    }
}

impl Handler for ChordMachine {
    fn protocol(&self) -> &str {
        PROTOCOL
    }

    fn on_peer_connected(&mut self, cx: &mut Context<'_>, peer: PeerId) {
        self.enter(cx);
        cx.whisper(peer, self.hello());
        if let Some((_, msgs)) = self.outbox.remove(&peer) {
            for m in msgs {
                cx.whisper(peer, m);
            }
        }
    }

    fn on_peer_disconnected(&mut self, cx: &mut Context<'_>, peer: PeerId) {
        self.enter(cx);
        self.peers.remove(&peer);
        self.forget(peer);
        if self.preds.iter().any(|p| p.peer == peer) {
            let preds = self
                .preds
                .iter()
                .filter(|p| p.peer != peer)
                .cloned()
                .collect();
            self.set_preds(cx, preds);
        }
        let waiting: Vec<u64> = self
            .replicating
            .iter_mut()
            .filter_map(|(&a, r)| (r.waiting.remove(&peer) && r.waiting.is_empty()).then_some(a))
            .collect();
        for a in waiting {
            self.finish_replicating(cx, a);
        }
    }

    fn on_message(&mut self, cx: &mut Context<'_>, msg: InboundMessage) -> Verdict {
        self.enter(cx);
        if msg.delivery != rs2p_mesh::Delivery::Direct {
            self.stats.malformed += 1;
            return Verdict::Reject;
        }
        let Ok(pb::ChordMessage { kind: Some(kind) }) = pb::ChordMessage::decode(msg.payload)
        else {
            self.stats.malformed += 1;
            return Verdict::Reject;
        };
        let from = msg.from;
        match kind {
            Kind::Hello(h) => return self.on_hello(cx, from, h),
            Kind::Route(r) => return self.on_route(cx, from, r),
            Kind::Reply(r) => self.on_reply(cx, r),
            Kind::Join(j) => return self.on_join(cx, from, j),
            Kind::JoinAck(a) => self.on_join_ack(cx, from, a),
            Kind::Stabilize(s) => return self.on_stabilize(cx, from, s),
            Kind::Neighbours(n) => self.on_neighbours(cx, from, n),
            Kind::Store(s) => self.on_store(cx, from, s),
            Kind::Stored(s) => self.on_stored(cx, from, s.ack),
            Kind::Digest(d) => self.on_digest(cx, from, d),
            Kind::Summary(s) => self.on_summary(cx, from, s),
            Kind::Leave(l) => self.on_leave(cx, from, l),
        }
        Verdict::Accept
    }

    fn on_timer(&mut self, cx: &mut Context<'_>, token: u64) {
        self.enter(cx);
        match token {
            TICK_TIMER => {
                self.tick(cx);
                cx.set_timer(self.tick_ms(), TICK_TIMER);
            }
            STABILIZE_TIMER => {
                self.stabilize(cx);
                cx.set_timer(ms(self.cfg.stabilize), STABILIZE_TIMER);
            }
            _ => {}
        }
    }
}
