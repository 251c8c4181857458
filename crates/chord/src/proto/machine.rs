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
use std::sync::Arc;

use bytes::Bytes;
use prost::Message;
use rand::Rng;
use rs2p_base::wire::pb::{self, chord_message::Kind, chord_reply, chord_route};
use rs2p_base::{hash256, Keypair, PeerId};
use rs2p_mesh::{Context, Handler, InboundMessage, Verdict};
use rs2p_record::{open, regroup, seal, Limits, Record, Stored};

use super::store::{Applied, Store};
use crate::config::ms;
use crate::ring::{dist, finger_target, in_arc, key_pos, node_pos, strictly_between, Pos};
use crate::{ChordConfig, ChordError};

/// The chord socket's protocol id.
pub const PROTOCOL: &str = "/rs2p/chord/1";

const TICK_TIMER: u64 = 1;
const STABILIZE_TIMER: u64 = 2;
/// Finger lookups per stabilisation round.
const FINGERS_PER_ROUND: usize = 4;
/// Route ids carry the attempt in their low bits.
const ATTEMPT_BITS: u32 = 4;

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
            let owned: Vec<Arc<Stored>> =
                self.store.arc(from, to).map(|(_, s)| s.clone()).collect();
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

    // ---- routing ----

    fn owns(&self, target: Pos) -> bool {
        let (from, to) = self.owned_arc();
        self.joined && in_arc(target, from, to)
    }

    /// The next hop towards the owner of `target`, or `None` when this node answers.
    fn next_hop(&self, target: Pos, path: &[Bytes]) -> Result<Option<PeerId>, ()> {
        if self.owns(target) {
            return Ok(None);
        }
        let passed = |p: &PeerId| path.iter().any(|b| b.as_ref() == p.as_bytes());
        let cands: Vec<&PeerInfo> = self
            .peers
            .values()
            .filter(|c| c.routable() && !passed(&c.node.peer))
            .collect();
        // A node that owns the target by its own account.
        if let Some(c) = cands
            .iter()
            .filter(|c| c.pred.is_some_and(|p| in_arc(target, p, c.node.pos)))
            .min_by_key(|c| dist(target, c.node.pos))
        {
            return Ok(Some(c.node.peer));
        }
        // The owner by this node's successor list.
        let mut prev = self.me.pos;
        for s in &self.succs {
            if in_arc(target, prev, s.pos) {
                if cands.iter().any(|c| c.node.peer == s.peer) {
                    return Ok(Some(s.peer));
                }
                break;
            }
            prev = s.pos;
        }
        // The closest connected node before the target, else the first after it.
        let before = cands
            .iter()
            .filter(|c| strictly_between(c.node.pos, self.me.pos, target))
            .max_by_key(|c| dist(self.me.pos, c.node.pos));
        let after = || cands.iter().min_by_key(|c| dist(target, c.node.pos));
        before.or_else(after).map(|c| Some(c.node.peer)).ok_or(())
    }

    /// Takes one step of `route`: answers it here, or forwards it.
    fn route(
        &mut self,
        cx: &mut Context<'_>,
        mut route: pb::ChordRoute,
        first_hop: Option<PeerId>,
    ) {
        let hop = match first_hop {
            Some(p) if self.peers.contains_key(&p) => Ok(Some(p)),
            _ => self.next_hop(route.target, &route.path),
        };
        match hop {
            Ok(None) => self.execute(cx, route),
            Ok(Some(peer)) => {
                route
                    .path
                    .push(Bytes::copy_from_slice(self.me.peer.as_bytes()));
                if route.path.len() > 1 {
                    self.stats.forwarded += 1;
                }
                cx.whisper(peer, encode(Kind::Route(route)));
            }
            Err(()) => self.stats.stuck += 1,
        }
    }

    fn on_route(&mut self, cx: &mut Context<'_>, from: PeerId, route: pb::ChordRoute) -> Verdict {
        if route.path.is_empty() || route.path.last().map(Bytes::as_ref) != Some(from.as_bytes()) {
            self.stats.malformed += 1;
            return Verdict::Reject;
        }
        if route
            .path
            .iter()
            .any(|p| p.as_ref() == self.me.peer.as_bytes())
        {
            self.stats.loops_dropped += 1;
            return Verdict::Ignore;
        }
        if route.path.len() > self.cfg.max_hops {
            self.stats.hop_limit_dropped += 1;
            return Verdict::Ignore;
        }
        let target_ok = match &route.op {
            Some(chord_route::Op::Get(k)) => key_pos(k) == route.target,
            Some(chord_route::Op::Put(b)) => b.records.len() == 1,
            Some(_) => true,
            None => false,
        };
        if !target_ok {
            self.stats.malformed += 1;
            return Verdict::Reject;
        }
        self.route(cx, route, None);
        Verdict::Accept
    }

    /// Answers a route this node owns.
    fn execute(&mut self, cx: &mut Context<'_>, route: pb::ChordRoute) {
        let hops = u32::try_from(route.path.len()).unwrap_or(u32::MAX);
        let mut reply = pb::ChordReply {
            id: route.id,
            path: route.path,
            hops,
            owner: Some(self.me.to_pb()),
            result: None,
        };
        match route.op {
            Some(chord_route::Op::Find(_)) => reply.result = Some(chord_reply::Result::Found(true)),
            Some(chord_route::Op::Get(key)) => {
                let record = self.store.get(&key).map(|s| regroup([s]).remove(0));
                reply.result = Some(chord_reply::Result::Got(pb::ChordGot { record }));
            }
            Some(chord_route::Op::Range(r)) => {
                let mut size = 0usize;
                let limit = (r.limit as usize).clamp(1024, self.cfg.transfer_chunk);
                let mut covered = self.me.pos;
                let mut taken: Vec<&Arc<Stored>> = Vec::new();
                let mut last: Option<Pos> = None;
                for (p, s) in self.store.arc(r.after, self.me.pos) {
                    if size >= limit && last != Some(p) {
                        covered = last.unwrap_or(r.after);
                        break;
                    }
                    last = Some(p);
                    if !s.record.tombstone {
                        size += s.raw.len();
                        taken.push(s);
                    }
                }
                reply.result = Some(chord_reply::Result::Range(pb::ChordRangeResult {
                    records: regroup(taken),
                    covered,
                }));
            }
            Some(chord_route::Op::Put(batch)) => {
                let Some(result) = self.owner_put(cx, batch, &mut reply) else {
                    return; // answered once the replicas acknowledge
                };
                reply.result = Some(chord_reply::Result::Put(result));
            }
            None => return,
        }
        self.send_back(cx, reply);
    }

    fn limits(&self) -> Limits {
        Limits {
            network_id: self.network_id,
            now: self.now,
            max_skew: ms(self.cfg.max_skew),
            max_lease: 0,
            max_key_len: self.cfg.max_key_len,
            max_value_len: self.cfg.max_value_len,
        }
    }

    /// The owner's side of a write: verify, apply, and copy to the replicas. `None` when the
    /// answer waits for their acknowledgements.
    fn owner_put(
        &mut self,
        cx: &mut Context<'_>,
        batch: pb::RecordBatch,
        reply: &mut pb::ChordReply,
    ) -> Option<pb::ChordPutResult> {
        let stored = match open(batch, &self.limits()) {
            Ok(mut v) if v.len() == 1 => v.remove(0),
            _ => {
                self.stats.forged += 1;
                if reply.path.len() == 1 {
                    // Straight from its signer: that peer forged it.
                    if let Some(p) = PeerId::from_slice(&reply.path[0]) {
                        cx.report_misbehaviour(p);
                    }
                }
                return None;
            }
        };
        if !self.owns(key_pos(&stored.record.key)) {
            self.stats.out_of_range += 1;
            return None;
        }
        match self.store.apply(stored.clone()) {
            Applied::Older(t) => Some(pb::ChordPutResult {
                applied: false,
                newest_ms: t,
                copies: 1,
            }),
            Applied::New | Applied::Duplicate => {
                let replicas: Vec<PeerId> = self
                    .succs
                    .iter()
                    .take(self.cfg.replicas.saturating_sub(1))
                    .filter(|s| self.peers.contains_key(&s.peer))
                    .map(|s| s.peer)
                    .collect();
                if replicas.is_empty() {
                    return Some(pb::ChordPutResult {
                        applied: true,
                        newest_ms: 0,
                        copies: 1,
                    });
                }
                self.seq += 1;
                let ack = self.seq;
                for &r in &replicas {
                    self.send_records(cx, r, [&stored], ack);
                }
                self.replicating.insert(
                    ack,
                    Replicating {
                        id: reply.id,
                        path: std::mem::take(&mut reply.path),
                        hops: reply.hops,
                        waiting: replicas.into_iter().collect(),
                        copies: 1,
                        deadline: self.now + ms(self.cfg.replicate_timeout),
                    },
                );
                None
            }
        }
    }

    fn finish_replicating(&mut self, cx: &mut Context<'_>, ack: u64) {
        if let Some(r) = self.replicating.remove(&ack) {
            let reply = pb::ChordReply {
                id: r.id,
                path: r.path,
                hops: r.hops,
                owner: Some(self.me.to_pb()),
                result: Some(chord_reply::Result::Put(pb::ChordPutResult {
                    applied: true,
                    newest_ms: 0,
                    copies: r.copies,
                })),
            };
            self.send_back(cx, reply);
        }
    }

    /// Sends an answer one step back towards its origin (the origin itself when connected).
    fn send_back(&mut self, cx: &mut Context<'_>, mut reply: pb::ChordReply) {
        if reply.path.is_empty() {
            // The origin answered its own route.
            self.complete_route(cx, reply);
            return;
        }
        if let Some(i) = reply
            .path
            .iter()
            .position(|p| p.as_ref() == self.me.peer.as_bytes())
        {
            reply.path.truncate(i);
            if i == 0 {
                self.complete_route(cx, reply);
                return;
            }
        }
        let ids: Vec<Option<PeerId>> = reply.path.iter().map(|p| PeerId::from_slice(p)).collect();
        let origin_connected = ids
            .first()
            .copied()
            .flatten()
            .filter(|p| self.peers.contains_key(p) || cx.peers().contains(p));
        let target = match origin_connected {
            Some(o) => Some((0, o)),
            None => ids
                .iter()
                .enumerate()
                .rev()
                .find_map(|(i, p)| p.filter(|p| self.peers.contains_key(p)).map(|p| (i, p))),
        };
        if let Some((i, peer)) = target {
            reply.path.truncate(i + 1);
            cx.whisper(peer, encode(Kind::Reply(reply)));
        }
    }

    fn on_reply(&mut self, cx: &mut Context<'_>, reply: pb::ChordReply) {
        self.send_back(cx, reply);
    }

    /// An answer reached its origin (this node).
    fn complete_route(&mut self, cx: &mut Context<'_>, reply: pb::ChordReply) {
        let id = reply.id >> ATTEMPT_BITS;
        let Some(owner) = reply.owner.as_ref().and_then(NodeRef::from_pb) else {
            self.stats.malformed += 1;
            return;
        };
        let Some(p) = self.pending.remove(&id) else {
            return; // a late answer to an attempt already answered
        };
        let outcome = match reply.result {
            Some(chord_reply::Result::Found(_)) => Outcome::Found(owner.clone()),
            Some(chord_reply::Result::Got(g)) => {
                let record = match g.record.map(|b| self.open_one(b)) {
                    None => None,
                    Some(Some(s)) => Some(s.record.clone()),
                    Some(None) => {
                        self.pending.insert(id, p);
                        return;
                    }
                };
                Outcome::Got(record)
            }
            Some(chord_reply::Result::Put(r)) => Outcome::Put {
                applied: r.applied,
                newest_ms: r.newest_ms,
                copies: r.copies,
            },
            Some(chord_reply::Result::Range(r)) => {
                let mut records = Vec::new();
                for b in r.records {
                    match open(b, &self.limits()) {
                        Ok(v) => records.extend(v.into_iter().map(|s| s.record.clone())),
                        Err(_) => self.stats.forged += 1,
                    }
                }
                Outcome::Range {
                    records,
                    covered: r.covered,
                    owner: owner.clone(),
                }
            }
            None => {
                self.stats.malformed += 1;
                self.pending.insert(id, p);
                return;
            }
        };
        match p.purpose {
            Purpose::User => {
                self.stats.lookups += 1;
                self.stats.hops_total += u64::from(reply.hops);
                self.stats.hops_max = self.stats.hops_max.max(reply.hops);
                self.stats.hop_histogram[(reply.hops as usize).min(15)] += 1;
                self.completions.push(Completion {
                    id,
                    result: Ok(outcome),
                    hops: reply.hops,
                });
            }
            Purpose::Join => self.found_successor(cx, owner, id),
            Purpose::Finger(i) => {
                if owner.peer != self.me.peer {
                    self.fingers.insert(i, owner);
                }
            }
            Purpose::Probe => {
                // Another ring's view of this node's successor: adopt it if closer (rings that
                // formed apart merge this way).
                let succ = self.succs.first().map_or(self.me.pos, |s| s.pos);
                if owner.peer != self.me.peer
                    && (self.succs.is_empty() || strictly_between(owner.pos, self.me.pos, succ))
                {
                    self.succs.insert(0, owner);
                    self.succs
                        .truncate(self.cfg.successors.max(self.cfg.replicas));
                }
            }
        }
    }

    fn open_one(&mut self, b: pb::RecordBatch) -> Option<Arc<Stored>> {
        match open(b, &self.limits()) {
            Ok(mut v) if v.len() == 1 => Some(v.remove(0)),
            _ => {
                self.stats.forged += 1;
                None
            }
        }
    }

    // ---- joining ----

    fn start_join(&mut self, cx: &mut Context<'_>, via: PeerId) {
        let records: Vec<pb::RecordBatch> = if self.store.is_empty() {
            vec![]
        } else {
            regroup(self.store.iter())
        };
        self.joined = false;
        self.preds.clear();
        self.succs.clear();
        self.fingers.clear();
        let op = self.start(cx, Op::Find, self.me.pos, Purpose::Join, Some(via));
        self.joining = Some(Joining {
            op,
            succ: None,
            started: self.now,
        });
        // Keys written while alone go to their owners once joined.
        self.rehome = records;
    }

    fn found_successor(&mut self, cx: &mut Context<'_>, succ: NodeRef, op: u64) {
        let Some(j) = self.joining.as_mut().filter(|j| j.op == op) else {
            return;
        };
        if succ.peer == self.me.peer {
            return;
        }
        j.succ = Some(succ.clone());
        let join = encode(Kind::Join(pb::ChordJoin {
            node: Some(self.me.to_pb()),
        }));
        self.send(cx, &succ, join);
    }

    /// A newcomer asks this node, its successor-to-be, for its place and keys.
    fn on_join(&mut self, cx: &mut Context<'_>, from: PeerId, join: pb::ChordJoin) -> Verdict {
        let Some(n) = join.node.as_ref().and_then(NodeRef::from_pb) else {
            self.stats.malformed += 1;
            return Verdict::Reject;
        };
        if n.peer != from {
            self.stats.malformed += 1;
            return Verdict::Reject;
        }
        // Only the true successor answers: a stale lookup makes the newcomer try again.
        let mine = self.preds.first().map_or(true, |p| {
            p.peer == n.peer || strictly_between(n.pos, p.pos, self.me.pos)
        });
        if !self.joined || !mine {
            return Verdict::Ignore;
        }
        self.stats.joins_served += 1;
        let old_preds: Vec<NodeRef> = self
            .preds
            .iter()
            .filter(|p| p.peer != n.peer)
            .cloned()
            .collect();
        // The newcomer replicates the arcs of its `replicas` predecessors (everything when the
        // ring is smaller than that).
        let from_pos = old_preds
            .get(self.cfg.replicas.saturating_sub(1))
            .map_or(n.pos, |p| p.pos);
        let share: Vec<Arc<Stored>> = self
            .store
            .arc(from_pos, n.pos)
            .map(|(_, s)| s.clone())
            .collect();
        self.send_records(cx, n.peer, share.iter(), 0);
        let mut succs = vec![self.me.to_pb()];
        succs.extend(
            self.succs
                .iter()
                .filter(|s| s.peer != n.peer)
                .take(self.succ_len() - 1)
                .map(NodeRef::to_pb),
        );
        let ack = pb::ChordJoinAck {
            preds: old_preds.iter().map(NodeRef::to_pb).collect(),
            succs,
            records: vec![],
            more: false,
        };
        cx.whisper(n.peer, encode(Kind::JoinAck(ack)));
        self.set_preds(cx, std::iter::once(n).chain(old_preds).collect());
        if self.succs.is_empty() {
            // A ring of two.
            if let Some(p) = self.preds.first().cloned() {
                self.succs.push(p);
            }
        }
        Verdict::Accept
    }

    fn on_join_ack(&mut self, cx: &mut Context<'_>, from: PeerId, ack: pb::ChordJoinAck) {
        if !self
            .joining
            .as_ref()
            .and_then(|j| j.succ.as_ref())
            .is_some_and(|s| s.peer == from)
        {
            return;
        }
        self.joining = None;
        self.joined = true;
        let me = self.me.peer;
        let nodes = |v: &[pb::ChordNode]| -> Vec<NodeRef> {
            v.iter()
                .filter_map(NodeRef::from_pb)
                .filter(|n| n.peer != me)
                .collect()
        };
        self.succs = nodes(&ack.succs);
        self.succs.truncate(self.succ_len());
        let mut preds = nodes(&ack.preds);
        if preds.is_empty() {
            // The successor was alone: a ring of two, where it is the predecessor too.
            preds.extend(self.succs.first().cloned());
        }
        self.set_preds(cx, preds);
        for b in ack.records {
            self.store_batch(cx, from, b);
        }
        for n in self.succs.clone().iter().chain(self.preds.clone().iter()) {
            self.ensure_link(cx, n);
        }
        for b in std::mem::take(&mut self.rehome) {
            if let Some(key) = b
                .records
                .first()
                .and_then(|r| pb::Record::decode(r.as_ref()).ok())
                .map(|r| r.key)
            {
                let target = key_pos(&key);
                self.start(cx, Op::Put(b), target, Purpose::Finger(u32::MAX), None);
            }
        }
    }

    fn succ_len(&self) -> usize {
        self.cfg.successors.max(self.cfg.replicas).max(1)
    }

    /// Sets the predecessor list; tells every connected peer when the nearest one changed (its
    /// arc starts there).
    fn set_preds(&mut self, cx: &mut Context<'_>, mut preds: Vec<NodeRef>) {
        let me = self.me.peer;
        preds.retain(|p| p.peer != me);
        let mut seen = BTreeSet::new();
        preds.retain(|p| seen.insert(p.peer));
        preds.truncate(self.cfg.replicas.max(1));
        let changed = preds.first().map(|p| p.peer) != self.preds.first().map(|p| p.peer);
        self.preds = preds;
        if changed {
            let hello = self.hello();
            for p in self.peers.keys().copied().collect::<Vec<_>>() {
                cx.whisper(p, hello.clone());
            }
        }
    }

    fn hello(&self) -> Bytes {
        self.hello_asking(false)
    }

    fn hello_asking(&self, want_reply: bool) -> Bytes {
        encode(Kind::Hello(pb::ChordHello {
            node: Some(self.me.to_pb()),
            joined: self.joined,
            pred: self.preds.first().map(|p| p.pos),
            want_reply,
        }))
    }

    fn on_hello(&mut self, cx: &mut Context<'_>, from: PeerId, h: pb::ChordHello) -> Verdict {
        let Some(node) = h.node.as_ref().and_then(NodeRef::from_pb) else {
            self.stats.malformed += 1;
            return Verdict::Reject;
        };
        if node.peer != from {
            self.stats.malformed += 1;
            return Verdict::Reject;
        }
        if h.want_reply {
            cx.whisper(from, self.hello());
        }
        let alone = self.joined && self.succs.is_empty() && self.preds.is_empty();
        self.peers.insert(
            from,
            PeerInfo {
                node: node.clone(),
                joined: h.joined,
                pred: h.pred,
            },
        );
        if !h.joined {
            return Verdict::Accept;
        }
        if self.joining.is_none() && !self.joined {
            self.start_join(cx, from);
        } else if alone && (h.pred.is_some() || from < self.me.peer) {
            // Two rings meet: a node alone joins the other one (of two lone nodes, the higher id).
            self.start_join(cx, from);
        } else if self.joined {
            let succ = self.succs.first().map_or(self.me.pos, |s| s.pos);
            if !self.succs.is_empty() && strictly_between(node.pos, self.me.pos, succ) {
                self.succs.insert(0, node);
                self.succs.truncate(self.succ_len());
            }
        }
        Verdict::Accept
    }

    // ---- ring upkeep ----

    fn stabilize(&mut self, cx: &mut Context<'_>) {
        if !self.joined {
            let stale = self.joining.as_ref().is_none_or(|j| {
                self.now.saturating_sub(j.started)
                    > ms(self.cfg.request_timeout) * u64::from(self.cfg.attempts.max(1))
            });
            if stale {
                self.joining = None;
                let joined: Vec<PeerId> = self
                    .peers
                    .values()
                    .filter(|p| p.joined)
                    .map(|p| p.node.peer)
                    .collect();
                if !joined.is_empty() {
                    let via = joined[cx.rng().gen_range(0..joined.len())];
                    self.start_join(cx, via);
                }
            }
            return;
        }
        if self.succs.is_empty() {
            // Re-seed from the closest connected node after this one.
            if let Some(c) = self
                .peers
                .values()
                .filter(|c| c.joined)
                .min_by_key(|c| dist(self.me.pos, c.node.pos))
            {
                self.succs.push(c.node.clone());
            }
        }
        for n in self.succs.clone().iter().chain(self.preds.clone().iter()) {
            self.ensure_link(cx, n);
        }
        // Hellos may be lost: ask the peers not heard from (which may not speak chord at all),
        // and now and then tell every peer again.
        self.rounds += 1;
        let ask = self.hello_asking(true);
        let tell = (self.rounds % 8 == 0).then(|| self.hello());
        for &p in cx.peers().to_vec().iter() {
            if !self.peers.contains_key(&p) {
                cx.whisper(p, ask.clone());
            } else if let Some(t) = &tell {
                cx.whisper(p, t.clone());
            }
        }
        if let Some(s) = self.succs.first().cloned() {
            let msg = encode(Kind::Stabilize(pb::ChordStabilize {
                node: Some(self.me.to_pb()),
                preds: self.preds.iter().map(NodeRef::to_pb).collect(),
            }));
            self.send(cx, &s, msg);
            self.fix_fingers(cx, s.pos);
        }
        self.push_digests(cx);
        self.probe(cx);
    }

    fn fix_fingers(&mut self, cx: &mut Context<'_>, succ: Pos) {
        // Only fingers that reach past the successor differ from it.
        let span = dist(self.me.pos, succ);
        let wanted: Vec<u32> = (0..64u32).filter(|&i| (1u64 << i) > span).collect();
        self.fingers.retain(|i, _| wanted.contains(i));
        for f in self.fingers.values().cloned().collect::<Vec<_>>() {
            self.ensure_link(cx, &f);
        }
        for _ in 0..FINGERS_PER_ROUND.min(wanted.len()) {
            self.next_finger = (self.next_finger + 1) % wanted.len();
            let i = wanted[self.next_finger];
            let target = finger_target(self.me.pos, i);
            self.start(cx, Op::Find, target, Purpose::Finger(i), None);
        }
    }

    /// Asks a random connected ring member outside this node's neighbourhood who succeeds this
    /// node in its view: two rings that formed apart (after a partition) merge through it.
    fn probe(&mut self, cx: &mut Context<'_>) {
        if cx.rng().gen_range(0..4) != 0 {
            return;
        }
        let near: BTreeSet<PeerId> = self
            .succs
            .iter()
            .chain(self.preds.iter())
            .map(|n| n.peer)
            .collect();
        let far: Vec<PeerId> = self
            .peers
            .values()
            .filter(|p| p.joined && !near.contains(&p.node.peer))
            .map(|p| p.node.peer)
            .collect();
        if far.is_empty() {
            return;
        }
        let via = far[cx.rng().gen_range(0..far.len())];
        let target = self.me.pos.wrapping_add(1);
        self.start(cx, Op::Find, target, Purpose::Probe, Some(via));
    }

    fn on_stabilize(
        &mut self,
        cx: &mut Context<'_>,
        from: PeerId,
        st: pb::ChordStabilize,
    ) -> Verdict {
        let Some(n) = st.node.as_ref().and_then(NodeRef::from_pb) else {
            self.stats.malformed += 1;
            return Verdict::Reject;
        };
        if n.peer != from {
            self.stats.malformed += 1;
            return Verdict::Reject;
        }
        if !self.joined {
            return Verdict::Ignore;
        }
        let closer = self.preds.first().is_none_or(|p| {
            p.peer == n.peer
                || strictly_between(n.pos, p.pos, self.me.pos)
                || !self.peers.contains_key(&p.peer)
        });
        if closer {
            let mut preds = vec![n];
            preds.extend(st.preds.iter().filter_map(NodeRef::from_pb));
            self.set_preds(cx, preds);
        }
        let mut succs = vec![self.me.to_pb()];
        succs.extend(
            self.succs
                .iter()
                .take(self.succ_len() - 1)
                .map(NodeRef::to_pb),
        );
        let reply = pb::ChordNeighbours {
            pred: self.preds.first().map(NodeRef::to_pb),
            succs,
        };
        cx.whisper(from, encode(Kind::Neighbours(reply)));
        Verdict::Accept
    }

    fn on_neighbours(&mut self, cx: &mut Context<'_>, from: PeerId, nb: pb::ChordNeighbours) {
        if !self.joined || self.succs.first().is_none_or(|s| s.peer != from) {
            return;
        }
        let me = self.me.peer;
        let s = self.succs[0].clone();
        let mut succs: Vec<NodeRef> = nb
            .succs
            .iter()
            .filter_map(NodeRef::from_pb)
            .filter(|n| n.peer != me)
            .collect();
        if succs.first().is_none_or(|f| f.peer != s.peer) {
            succs.insert(0, s.clone());
        }
        if let Some(p) = nb.pred.as_ref().and_then(NodeRef::from_pb) {
            if p.peer != me && strictly_between(p.pos, self.me.pos, s.pos) {
                // Someone joined between: it is the nearer successor.
                self.ensure_link(cx, &p);
                succs.insert(0, p);
            }
        }
        let mut seen = BTreeSet::new();
        succs.retain(|n| seen.insert(n.peer));
        succs.truncate(self.succ_len());
        self.succs = succs;
    }

    fn on_leave(&mut self, cx: &mut Context<'_>, from: PeerId, l: pb::ChordLeave) {
        let me = self.me.peer;
        if self.preds.first().is_some_and(|p| p.peer == from) {
            let preds = l.preds.iter().filter_map(NodeRef::from_pb).collect();
            self.set_preds(cx, preds);
        }
        if self.succs.first().is_some_and(|s| s.peer == from) {
            let mut succs: Vec<NodeRef> = l
                .succs
                .iter()
                .filter_map(NodeRef::from_pb)
                .filter(|n| n.peer != me)
                .collect();
            succs.truncate(self.succ_len());
            self.succs = succs;
        }
        self.forget(from);
        if let Some(p) = self.peers.get_mut(&from) {
            p.joined = false;
        }
    }

    /// Removes a peer from the successors, predecessors and fingers.
    fn forget(&mut self, peer: PeerId) {
        self.succs.retain(|n| n.peer != peer);
        self.fingers.retain(|_, n| n.peer != peer);
    }

    // ---- replicas ----

    /// The arc this node keeps replicas of: its own and its `replicas − 1` predecessors' arcs
    /// (the whole ring while it knows fewer predecessors).
    fn replica_arc(&self) -> (Pos, Pos) {
        match self.preds.get(self.cfg.replicas.saturating_sub(1)) {
            Some(p) if self.cfg.replicas > 0 => (p.pos, self.me.pos),
            _ => (self.me.pos, self.me.pos),
        }
    }

    fn send_records<'a>(
        &mut self,
        cx: &mut Context<'_>,
        to: PeerId,
        records: impl IntoIterator<Item = &'a Arc<Stored>>,
        ack: u64,
    ) {
        let mut chunk: Vec<&Arc<Stored>> = Vec::new();
        let mut size = 0;
        let flush = |chunk: &mut Vec<&Arc<Stored>>, cx: &mut Context<'_>, last: bool| {
            if chunk.is_empty() && !(last && ack != 0) {
                return;
            }
            let msg = pb::ChordStore {
                ack: if last { ack } else { 0 },
                records: regroup(chunk.drain(..)),
            };
            cx.whisper(to, encode(Kind::Store(msg)));
        };
        for s in records {
            size += s.raw.len() + 100;
            chunk.push(s);
            if size >= self.cfg.transfer_chunk {
                flush(&mut chunk, cx, false);
                size = 0;
            }
        }
        flush(&mut chunk, cx, true);
    }

    /// Stores a batch sent as a replica. Returns false when it was refused.
    fn store_batch(&mut self, cx: &mut Context<'_>, from: PeerId, b: pb::RecordBatch) -> bool {
        let records = match open(b, &self.limits()) {
            Ok(v) => v,
            Err(_) => {
                self.stats.forged += 1;
                cx.report_misbehaviour(from);
                return false;
            }
        };
        let (lo, hi) = self.replica_arc();
        let mut ok = true;
        for s in records {
            if !in_arc(key_pos(&s.record.key), lo, hi) {
                self.stats.out_of_range += 1;
                ok = false;
                continue;
            }
            if self.store.apply(s) == Applied::New {
                self.stats.replica_records += 1;
            }
        }
        ok
    }

    fn on_store(&mut self, cx: &mut Context<'_>, from: PeerId, st: pb::ChordStore) {
        for b in st.records {
            self.store_batch(cx, from, b);
        }
        if st.ack != 0 {
            cx.whisper(from, encode(Kind::Stored(pb::ChordStored { ack: st.ack })));
        }
    }

    fn on_stored(&mut self, cx: &mut Context<'_>, from: PeerId, ack: u64) {
        let done = match self.replicating.get_mut(&ack) {
            Some(r) => {
                if r.waiting.remove(&from) {
                    r.copies += 1;
                }
                r.waiting.is_empty()
            }
            None => false,
        };
        if done {
            self.finish_replicating(cx, ack);
        }
    }

    /// Sends each replica the digest of the arc this node owns.
    fn push_digests(&mut self, cx: &mut Context<'_>) {
        let Some(p) = self.preds.first() else {
            return;
        };
        let (from, to) = (p.pos, self.me.pos);
        let (digest, _) = self.store.digest(from, to);
        let msg = encode(Kind::Digest(pb::ChordDigest { from, to, digest }));
        let replicas: Vec<PeerId> = self
            .succs
            .iter()
            .take(self.cfg.replicas.saturating_sub(1))
            .filter(|s| self.peers.contains_key(&s.peer))
            .map(|s| s.peer)
            .collect();
        for r in replicas {
            cx.whisper(r, msg.clone());
        }
    }

    fn summary(&self, from: Pos, to: Pos) -> pb::ChordSummary {
        let (mut keys, mut hashes) = (Vec::new(), Vec::new());
        for (p, s) in self.store.arc(from, to) {
            keys.push(p);
            hashes.push(s.short_hash());
        }
        pb::ChordSummary {
            from,
            to,
            key_hashes: keys,
            record_hashes: hashes,
            want: vec![],
        }
    }

    fn on_digest(&mut self, cx: &mut Context<'_>, from: PeerId, d: pb::ChordDigest) {
        // Only a predecessor within `replicas − 1` steps has this node as a replica.
        let (lo, hi) = self.replica_arc();
        if !(in_arc(d.to, lo, hi) && in_arc(d.from.wrapping_add(1), lo, hi)) {
            self.stats.out_of_range += 1;
            return;
        }
        if self.store.digest(d.from, d.to).0 != d.digest {
            let s = self.summary(d.from, d.to);
            cx.whisper(from, encode(Kind::Summary(s)));
        }
    }

    fn on_summary(&mut self, cx: &mut Context<'_>, from: PeerId, s: pb::ChordSummary) {
        if s.key_hashes.len() != s.record_hashes.len() {
            self.stats.malformed += 1;
            return;
        }
        if !s.want.is_empty() {
            // The owner wants these keys' records from this replica.
            let want: BTreeSet<Pos> = s.want.iter().copied().collect();
            let records: Vec<Arc<Stored>> = self
                .store
                .arc(s.from, s.to)
                .filter(|(p, _)| want.contains(p))
                .map(|(_, r)| r.clone())
                .collect();
            self.send_records(cx, from, records.iter(), 0);
            return;
        }
        // A replica's summary of an arc this node owns: send what it lacks, ask for what it has.
        let (lo, hi) = self.owned_arc();
        if !(s.from == lo && s.to == hi) {
            return;
        }
        let theirs: BTreeMap<Pos, Vec<u64>> =
            s.key_hashes
                .iter()
                .zip(&s.record_hashes)
                .fold(BTreeMap::new(), |mut m, (&k, &h)| {
                    m.entry(k).or_insert_with(Vec::new).push(h);
                    m
                });
        let mut mine: BTreeMap<Pos, Vec<u64>> = BTreeMap::new();
        let mut send: Vec<Arc<Stored>> = Vec::new();
        for (p, r) in self.store.arc(lo, hi) {
            mine.entry(p).or_default().push(r.short_hash());
            if !theirs.get(&p).is_some_and(|v| v.contains(&r.short_hash())) {
                send.push(r.clone());
            }
        }
        let want: Vec<Pos> = theirs
            .iter()
            .filter(|(p, hs)| {
                mine.get(p)
                    .is_none_or(|m| hs.iter().any(|h| !m.contains(h)))
            })
            .map(|(p, _)| *p)
            .collect();
        self.stats.repaired += send.len() as u64;
        self.send_records(cx, from, send.iter(), 0);
        if !want.is_empty() {
            let ask = pb::ChordSummary {
                from: lo,
                to: hi,
                key_hashes: vec![],
                record_hashes: vec![],
                want,
            };
            cx.whisper(from, encode(Kind::Summary(ask)));
        }
    }

    // ---- links ----

    fn ensure_link(&mut self, cx: &mut Context<'_>, n: &NodeRef) {
        if n.peer != self.me.peer && !cx.peers().contains(&n.peer) {
            if let Some(&a) = n.addrs.first() {
                cx.dial(a, Some(n.peer));
            }
        }
    }

    /// Whispers `msg` to `n`, dialing it first (and keeping the message) if not connected.
    fn send(&mut self, cx: &mut Context<'_>, n: &NodeRef, msg: Bytes) {
        if cx.peers().contains(&n.peer) {
            cx.whisper(n.peer, msg);
            return;
        }
        self.ensure_link(cx, n);
        let now = self.now;
        let cap = self.cfg.outbox_len;
        let entry = self.outbox.entry(n.peer).or_insert((now, Vec::new()));
        if entry.1.len() < cap {
            entry.1.push(msg);
        }
    }

    // ---- time ----

    fn tick(&mut self, cx: &mut Context<'_>) {
        let now = self.now;
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(&id, _)| id)
            .collect();
        for id in expired {
            self.stats.timeouts += 1;
            let Some(p) = self.pending.get(&id) else {
                continue;
            };
            if p.attempts < self.cfg.attempts.max(1) {
                self.launch(cx, id, None);
            } else if let Some(p) = self.pending.remove(&id) {
                if p.purpose == Purpose::User {
                    self.stats.failed += 1;
                    self.completions.push(Completion {
                        id,
                        result: Err(ChordError::Unreachable {
                            attempts: p.attempts,
                        }),
                        hops: 0,
                    });
                }
            }
        }
        let late: Vec<u64> = self
            .replicating
            .iter()
            .filter(|(_, r)| r.deadline <= now)
            .map(|(&a, _)| a)
            .collect();
        for a in late {
            self.finish_replicating(cx, a);
        }
        let keep = ms(self.cfg.request_timeout) * u64::from(self.cfg.attempts.max(1));
        self.outbox
            .retain(|_, (t, _)| now.saturating_sub(*t) <= keep);
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
