//! # rs2p-testkit: deterministic simulation of rs2p nodes
//!
//! [`Sim`] runs many [`Node`]s (the mesh state machine with its handlers) in one thread over an
//! in-memory transport with virtual time. Links can lose, duplicate and delay frames
//! ([`Faults`]); every random choice comes from one seed, so a failing run replays exactly:
//! tests print the seed, and [`Sim::trace_hash`] proves two runs identical.
//!
//! ```
//! use rs2p_testkit::{Faults, Sim};
//!
//! let mut sim = Sim::new(7, 3);
//! sim.link(0, 1, Faults::NONE);
//! sim.link(1, 2, Faults::NONE);
//! sim.broadcast(0, "/demo/1", b"hi".to_vec());
//! sim.run_until_idle();
//! assert_eq!(sim.messages(2).len(), 1);
//! assert_eq!(sim.messages(1).len(), 1);
//! ```

use std::cmp::Reverse;
pub mod fuzz;
pub mod proxy;

use std::collections::{BTreeMap, BinaryHeap};
use std::net::SocketAddr;

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha12Rng;
use rs2p_base::handshake::RemoteInfo;
use rs2p_base::{hash256, Keypair, Network, PeerId};
use rs2p_mesh::proto::{ConnId, Direction, Mesh, MeshEvent, Millis, Node, Output};
use rs2p_mesh::MeshConfig;

/// What a link does to the frames crossing it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Faults {
    /// Probability that a frame is lost.
    pub loss: f64,
    /// Probability that a frame is delivered twice.
    pub duplicate: f64,
    /// Frames take 1 to this many milliseconds, independently (so they reorder).
    pub max_delay_ms: u64,
}

impl Faults {
    /// A perfect link with 1 ms latency.
    pub const NONE: Faults = Faults {
        loss: 0.0,
        duplicate: 0.0,
        max_delay_ms: 1,
    };
}

/// A message a node's mesh delivered to the user (a protocol with no handler).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The protocol id.
    pub protocol: String,
    /// Who created it.
    pub origin: PeerId,
    /// The payload.
    pub payload: Bytes,
}

struct Link {
    a: (usize, ConnId),
    b: (usize, ConnId),
    faults: Faults,
}

/// A node's setup, kept so it can be restarted.
struct Setup {
    cfg: MeshConfig,
    seed: u64,
    network: [u8; 32],
}

/// The simulator. See the [crate docs](crate).
pub struct Sim {
    nodes: Vec<Node>,
    keys: Vec<Keypair>,
    ids: Vec<PeerId>,
    rng: ChaCha12Rng,
    now: Millis,
    seq: u64,
    queue: BinaryHeap<Reverse<(Millis, u64, usize, ConnId)>>,
    in_flight: BTreeMap<u64, Bytes>,
    /// conn → link index, per node.
    conn_links: Vec<BTreeMap<ConnId, usize>>,
    links: Vec<Option<Link>>,
    next_conn: u64,
    received: Vec<Vec<Received>>,
    skew: Vec<i64>,
    setup: Setup,
    cut: Vec<(usize, usize, Faults)>,
    events: Vec<Vec<MeshEvent>>,
    trace: [u8; 32],
    /// Frames lost, duplicated and delivered.
    pub counts: SimCounts,
    /// Nodes with outputs to move or a deadline to refresh.
    dirty: Vec<usize>,
    is_dirty: Vec<bool>,
    /// Each node's next deadline in virtual time, as last pushed on `deadlines`.
    pushed: Vec<Millis>,
    deadlines: BinaryHeap<Reverse<(Millis, usize)>>,
    alive: Vec<bool>,
    /// While partitioned: the nodes on one side (dials across fail).
    side: Option<Vec<usize>>,
    /// The faults of links opened by a node's own dial.
    dial_faults: Faults,
    /// Frames to drop on purpose: `(from, to, frame)` gives true for a frame to lose.
    drop_if: Option<DropFilter>,
    /// The wire features each node's handshakes name (`None`: this version's).
    features: Vec<Option<u32>>,
}

/// A test's choice of frames to lose: `(from, to, frame bytes)` gives true to drop the frame.
pub type DropFilter = Box<dyn FnMut(usize, usize, &[u8]) -> bool + Send>;

/// What the transport did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimCounts {
    /// Frames delivered.
    pub delivered: u64,
    /// Frames dropped by [`Faults::loss`].
    pub lost: u64,
    /// Extra copies made by [`Faults::duplicate`].
    pub duplicated: u64,
}

/// The virtual clock starts here (a plausible Unix time, so timestamps look real).
pub const START: Millis = 1_700_000_000_000;

impl Sim {
    /// `n` nodes with identities derived from `seed`, the default mesh config without dialing.
    pub fn new(seed: u64, n: usize) -> Self {
        let mut cfg = MeshConfig::default();
        cfg.min_peers = 0; // the simulation decides the topology
        cfg.max_peers = 1024;
        Self::with_config(seed, n, cfg)
    }

    /// Like [`Sim::new`] with a given mesh config.
    pub fn with_config(seed: u64, n: usize, cfg: MeshConfig) -> Self {
        let network = Network::named("sim");
        let mut nodes = Vec::with_capacity(n);
        let mut ids = Vec::with_capacity(n);
        let mut keys = Vec::with_capacity(n);
        for i in 0..n {
            let kp = Keypair::from_seed(hash256(
                "rs2p/sim/key",
                &[&seed.to_le_bytes(), &(i as u64).to_le_bytes()],
            ));
            ids.push(kp.peer_id());
            keys.push(kp.clone());
            let mut mesh = Mesh::new(cfg.clone(), kp, *network.id(), START);
            mesh.set_listen_addrs(vec![Self::fake_addr(i)]);
            nodes.push(Node::new(
                mesh,
                seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            ));
        }
        Self {
            nodes,
            keys,
            ids,
            rng: ChaCha12Rng::seed_from_u64(seed),
            now: START,
            seq: 0,
            queue: BinaryHeap::new(),
            in_flight: BTreeMap::new(),
            conn_links: vec![BTreeMap::new(); n],
            links: Vec::new(),
            next_conn: 0,
            received: vec![Vec::new(); n],
            skew: vec![0; n],
            setup: Setup {
                cfg,
                seed,
                network: *network.id(),
            },
            cut: Vec::new(),
            events: vec![Vec::new(); n],
            trace: [0; 32],
            counts: SimCounts::default(),
            dirty: (0..n).collect(),
            is_dirty: vec![true; n],
            pushed: vec![Millis::MAX; n],
            deadlines: BinaryHeap::new(),
            alive: vec![true; n],
            side: None,
            dial_faults: Faults::NONE,
            drop_if: None,
            features: vec![None; n],
        }
    }

    /// From now on node `i`'s handshakes name no optional wire features, as a node from before
    /// them would: its peers send it only what such a node reads (links opened later).
    pub fn set_legacy(&mut self, i: usize) {
        self.set_features(i, 0);
    }

    /// From now on node `i`'s handshakes name the wire features `bits` (as an older version's
    /// would), for links opened later.
    pub fn set_features(&mut self, i: usize, bits: u32) {
        self.features[i] = Some(bits);
    }

    /// The number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `i`'s id.
    pub fn id(&self, i: usize) -> PeerId {
        self.ids[i]
    }

    /// Node `i`'s key pair (to give its socket types the same identity).
    pub fn keypair(&self, i: usize) -> Keypair {
        self.keys[i].clone()
    }

    /// Node `i`'s state machine.
    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    /// Node `i`'s state machine, for inputs (call [`Sim::flush`] afterwards).
    pub fn node_mut(&mut self, i: usize) -> &mut Node {
        self.mark(i);
        &mut self.nodes[i]
    }

    /// The virtual time.
    pub fn now(&self) -> Millis {
        self.now
    }

    /// Node `i`'s clock: the virtual time plus its skew.
    pub fn node_now(&self, i: usize) -> Millis {
        self.now.saturating_add_signed(self.skew[i])
    }

    /// Sets node `i`'s clock skew in milliseconds (positive: ahead).
    pub fn set_skew(&mut self, i: usize, skew_ms: i64) {
        self.skew[i] = skew_ms;
        self.pushed[i] = Millis::MAX;
        self.mark(i);
        self.flush();
    }

    /// Changes the faults of every current link.
    pub fn set_faults(&mut self, faults: Faults) {
        for l in self.links.iter_mut().flatten() {
            l.faults = faults;
        }
        self.dial_faults = faults;
    }

    /// Cuts every link between a node in `side` and one outside it; [`Sim::heal`] restores them.
    pub fn partition(&mut self, side: &[usize]) {
        let crossing: Vec<(usize, usize, Faults)> = self
            .links
            .iter()
            .flatten()
            .filter(|l| side.contains(&l.a.0) != side.contains(&l.b.0))
            .map(|l| (l.a.0, l.b.0, l.faults))
            .collect();
        for &(a, b, f) in &crossing {
            self.unlink(a, b);
            self.cut.push((a, b, f));
        }
        self.side = Some(side.to_vec());
    }

    /// Restores every link cut by [`Sim::partition`] or [`Sim::restart`].
    pub fn heal(&mut self) {
        self.side = None;
        for (a, b, f) in std::mem::take(&mut self.cut) {
            self.link(a, b, f);
        }
    }

    /// Crashes node `i` (its links drop, its state is lost) and starts it again with the same
    /// identity and the given handlers; its links come back with [`Sim::heal`].
    pub fn restart(&mut self, i: usize, handlers: Vec<Box<dyn rs2p_mesh::Handler>>) {
        let links: Vec<(usize, usize, Faults)> = self
            .links
            .iter()
            .flatten()
            .filter(|l| l.a.0 == i || l.b.0 == i)
            .map(|l| (l.a.0, l.b.0, l.faults))
            .collect();
        for &(a, b, f) in &links {
            self.unlink(a, b);
            self.cut.push((a, b, f));
        }
        let mut mesh = Mesh::new(
            self.setup.cfg.clone(),
            self.keys[i].clone(),
            self.setup.network,
            self.node_now(i),
        );
        mesh.set_listen_addrs(vec![Self::fake_addr(i)]);
        self.nodes[i] = Node::new(mesh, self.setup.seed ^ self.now ^ i as u64);
        self.alive[i] = true;
        self.pushed[i] = Millis::MAX;
        self.mark(i);
        let now = self.node_now(i);
        for h in handlers {
            self.nodes[i]
                .register(h, now)
                .expect("a fresh node accepts its handlers");
        }
    }

    /// Crashes node `i` for good: its links drop, it receives nothing, its timers stop, and dials
    /// to it fail, until [`Sim::restart`] brings it back (with no links).
    pub fn kill(&mut self, i: usize) {
        let idxs: Vec<usize> = self
            .links
            .iter()
            .enumerate()
            .filter_map(|(x, l)| l.as_ref().filter(|l| l.a.0 == i || l.b.0 == i).map(|_| x))
            .collect();
        for x in idxs {
            self.drop_link(x);
        }
        self.alive[i] = false;
        self.pushed[i] = Millis::MAX;
        self.flush();
    }

    /// Whether node `i` runs (not killed).
    pub fn is_alive(&self, i: usize) -> bool {
        self.alive[i]
    }

    /// The index of the node listening on `addr`.
    pub fn index_of(addr: SocketAddr) -> Option<usize> {
        match addr {
            SocketAddr::V4(a) if a.port() == 4000 => {
                let o = a.ip().octets();
                (o[0] == 10 && o[3] >= 1).then(|| o[2] as usize * 250 + o[3] as usize - 1)
            }
            _ => None,
        }
    }

    fn mark(&mut self, i: usize) {
        if !self.is_dirty[i] {
            self.is_dirty[i] = true;
            self.dirty.push(i);
        }
    }

    /// A node's own dial: linked if the target runs and is on the same side of a partition,
    /// refused otherwise.
    fn dial(&mut self, from: usize, addr: SocketAddr) {
        let target = Self::index_of(addr).filter(|&j| {
            j < self.nodes.len()
                && j != from
                && self.alive[j]
                && self
                    .side
                    .as_ref()
                    .is_none_or(|s| s.contains(&from) == s.contains(&j))
        });
        match target {
            Some(j) => self.link(from, j, self.dial_faults),
            None => {
                let now = self.node_now(from);
                self.nodes[from].handle_dial_failed(None, addr, false, now);
                self.mark(from);
            }
        }
    }

    /// A hash of everything delivered so far, in order: equal for equal seeds.
    pub fn trace_hash(&self) -> [u8; 32] {
        self.trace
    }

    /// Messages node `i`'s mesh delivered for protocols without a handler.
    pub fn messages(&self, i: usize) -> &[Received] {
        &self.received[i]
    }

    /// Events node `i` reported (peers connecting and leaving, bans).
    pub fn events(&self, i: usize) -> &[MeshEvent] {
        &self.events[i]
    }

    /// The (simulated) listen address of node `i`, for [`Node::connect`].
    pub fn addr(i: usize) -> SocketAddr {
        Self::fake_addr(i)
    }

    fn fake_addr(i: usize) -> SocketAddr {
        SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250 + 1) as u8], 4000))
    }

    /// Connects `a` (dialer) and `b` with a link that suffers `faults`.
    pub fn link(&mut self, a: usize, b: usize, faults: Faults) {
        let (ca, cb) = (ConnId(self.next_conn + 1), ConnId(self.next_conn + 2));
        self.next_conn += 2;
        let idx = self.links.len();
        self.links.push(Some(Link {
            a: (a, ca),
            b: (b, cb),
            faults,
        }));
        self.conn_links[a].insert(ca, idx);
        self.conn_links[b].insert(cb, idx);
        let (now_a, now_b) = (self.node_now(a), self.node_now(b));
        // What each would say in its handshake: its protocols and wire features (fewer for a
        // node played as an older one, see `Sim::set_features`).
        let remote = |j: usize| RemoteInfo {
            peer_id: self.ids[j],
            listen_addrs: vec![Self::fake_addr(j)],
            protocols: self.nodes[j].protocols(),
            incarnation: 1,
            features: self.features[j].unwrap_or(rs2p_mesh::proto::FEATURES),
        };
        let (ra, rb) = (remote(b), remote(a));
        self.nodes[a].handle_established(
            ca,
            Direction::Outbound,
            Some(Self::fake_addr(b)),
            ra,
            Self::fake_addr(b),
            now_a,
        );
        self.nodes[b].handle_established(
            cb,
            Direction::Inbound,
            None,
            rb,
            Self::fake_addr(a),
            now_b,
        );
        self.mark(a);
        self.mark(b);
        self.flush();
    }

    /// Tells node `i` that `bytes` are queued and not yet written on its links to node `j`, as
    /// a real driver reports a peer that reads slowly (the simulation itself never queues).
    pub fn set_backlog(&mut self, i: usize, j: usize, bytes: usize) {
        let conns: Vec<ConnId> = self
            .links
            .iter()
            .flatten()
            .filter_map(|l| match (l.a, l.b) {
                ((x, c), (y, _)) | ((y, _), (x, c)) if x == i && y == j => Some(c),
                _ => None,
            })
            .collect();
        for c in conns {
            self.nodes[i].mesh_mut().set_backlog(c, bytes);
        }
    }

    /// Cuts every link between `a` and `b` (both ends see the connection close).
    pub fn unlink(&mut self, a: usize, b: usize) {
        let idxs: Vec<usize> = self
            .links
            .iter()
            .enumerate()
            .filter_map(|(i, l)| {
                l.as_ref()
                    .filter(|l| (l.a.0, l.b.0) == (a, b) || (l.a.0, l.b.0) == (b, a))
                    .map(|_| i)
            })
            .collect();
        for i in idxs {
            self.drop_link(i);
        }
        self.flush();
    }

    fn drop_link(&mut self, idx: usize) {
        if let Some(link) = self.links[idx].take() {
            for (node, conn) in [link.a, link.b] {
                let now = self.node_now(node);
                self.conn_links[node].remove(&conn);
                self.nodes[node].handle_closed(conn, now);
                self.mark(node);
            }
        }
    }

    /// Node `i` floods `payload` under `protocol`.
    pub fn broadcast(&mut self, i: usize, protocol: &str, payload: impl Into<Bytes>) {
        let now = self.node_now(i);
        self.nodes[i]
            .broadcast(protocol, payload.into(), now)
            .expect("a valid payload");
        self.mark(i);
        self.flush();
    }

    /// Moves every node's pending outputs into the transport.
    pub fn flush(&mut self) {
        loop {
            let dirty = std::mem::take(&mut self.dirty);
            if dirty.is_empty() {
                break;
            }
            for i in dirty {
                self.is_dirty[i] = false;
                self.flush_node(i);
            }
        }
    }

    fn flush_node(&mut self, i: usize) {
        while let Some(out) = self.nodes[i].poll_output() {
            if !self.alive[i] {
                continue;
            }
            match out {
                Output::Send { conn, frame } => self.transmit(i, conn, frame),
                Output::Close { conn, .. } => {
                    if let Some(&idx) = self.conn_links[i].get(&conn) {
                        self.drop_link(idx);
                    }
                }
                Output::Event(MeshEvent::Message {
                    protocol,
                    origin,
                    payload,
                    ..
                }) => {
                    self.received[i].push(Received {
                        protocol,
                        origin,
                        payload,
                    });
                }
                Output::Event(e) => self.events[i].push(e),
                Output::Dial { addr, .. } => self.dial(i, addr),
                // The simulated links have no flow control to pause.
                Output::Deliver(_) | Output::Throttle { .. } => {}
            }
        }
        if self.alive[i] {
            let at = self.nodes[i]
                .next_deadline()
                .saturating_add_signed(-self.skew[i]);
            if at != self.pushed[i] {
                self.pushed[i] = at;
                self.deadlines.push(Reverse((at, i)));
            }
        }
    }

    /// The earliest node deadline (virtual time), dropping stale heap entries.
    fn next_timer(&mut self) -> Millis {
        while let Some(&Reverse((at, i))) = self.deadlines.peek() {
            if self.pushed[i] == at {
                return at;
            }
            self.deadlines.pop();
        }
        Millis::MAX
    }

    fn transmit(&mut self, from: usize, conn: ConnId, frame: Bytes) {
        let Some(&idx) = self.conn_links[from].get(&conn) else {
            return;
        };
        let Some(link) = self.links[idx].as_ref() else {
            return;
        };
        let (to, to_conn) = if link.a == (from, conn) {
            link.b
        } else {
            link.a
        };
        let faults = link.faults;
        if let Some(drop) = self.drop_if.as_mut() {
            if drop(from, to, &frame) {
                self.counts.lost += 1;
                return;
            }
        }
        if self.rng.gen_bool(faults.loss) {
            self.counts.lost += 1;
            return;
        }
        let copies = if self.rng.gen_bool(faults.duplicate) {
            self.counts.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let at = self.now + self.rng.gen_range(1..=faults.max_delay_ms.max(1));
            self.seq += 1;
            self.in_flight.insert(self.seq, frame.clone());
            self.queue.push(Reverse((at, self.seq, to, to_conn)));
        }
    }

    /// Loses every frame for which `drop(from, to, frame)` is true (besides the links' own
    /// faults), to test what a particular lost message does.
    pub fn drop_frames_where(
        &mut self,
        drop: impl FnMut(usize, usize, &[u8]) -> bool + Send + 'static,
    ) {
        self.drop_if = Some(Box::new(drop));
    }

    /// Delivers frames and fires timers until nothing is in flight (timers further than `limit`
    /// ahead are not waited for). Returns the virtual time it took.
    pub fn run_until_idle(&mut self) -> Millis {
        let start = self.now;
        while let Some(delivered) = self.deliver_next() {
            if delivered {
                self.fire_timers();
                self.flush();
            }
        }
        self.now - start
    }

    /// Takes the earliest frame in flight, moves the clock to its arrival and hands it to its
    /// node if the link still exists. `None` when nothing is in flight; `Some(false)` when the
    /// frame was dropped because its link was cut meanwhile.
    fn deliver_next(&mut self) -> Option<bool> {
        let Reverse((at, seq, to, conn)) = self.queue.pop()?;
        self.now = self.now.max(at);
        let Some(frame) = self.in_flight.remove(&seq) else {
            return Some(false);
        };
        if !self.conn_links[to].contains_key(&conn) {
            return Some(false);
        }
        if !self.alive[to] {
            return Some(false);
        }
        self.counts.delivered += 1;
        self.trace = hash256(
            "rs2p/sim/trace",
            &[
                &self.trace,
                &at.to_le_bytes(),
                &(to as u64).to_le_bytes(),
                &frame,
            ],
        );
        let now = self.node_now(to);
        self.nodes[to].handle_frame(conn, frame, now);
        self.mark(to);
        Some(true)
    }

    /// Advances virtual time by `ms`, firing timers and delivering frames on the way.
    pub fn advance(&mut self, ms: Millis) {
        let end = self.now + ms;
        loop {
            let next_frame = self
                .queue
                .peek()
                .map_or(Millis::MAX, |Reverse((at, ..))| *at);
            // Each node's deadline is on its own (skewed) clock, kept in virtual time.
            let next_timer = self.next_timer();
            let next = next_frame.min(next_timer);
            if next > end {
                break;
            }
            if next_frame <= next_timer {
                self.deliver_next();
            } else {
                self.now = self.now.max(next_timer);
                self.fire_timers();
            }
            self.flush();
        }
        self.now = end;
    }

    fn fire_timers(&mut self) {
        while self.next_timer() <= self.now {
            let Some(Reverse((_, i))) = self.deadlines.pop() else {
                break;
            };
            self.pushed[i] = Millis::MAX;
            let now = self.node_now(i);
            self.nodes[i].handle_tick(now);
            self.mark(i);
        }
    }

    /// A random connected graph: a random spanning tree of perfect links (so every node stays
    /// reachable), plus about `extra` more links per node that suffer `faults`.
    pub fn random_graph(&mut self, extra: f64, faults: Faults) {
        let n = self.nodes.len();
        let mut edges = std::collections::BTreeSet::new();
        for i in 1..n {
            let j = self.rng.gen_range(0..i);
            edges.insert((j, i));
            self.link(
                j,
                i,
                Faults {
                    loss: 0.0,
                    ..faults
                },
            );
        }
        let want = (extra * n as f64) as usize;
        for _ in 0..want * 4 {
            if edges.len() >= n - 1 + want || n < 3 {
                break;
            }
            let (a, b) = (self.rng.gen_range(0..n), self.rng.gen_range(0..n));
            let e = (a.min(b), a.max(b));
            if a != b && edges.insert(e) {
                self.link(e.0, e.1, faults);
            }
        }
    }
}
