//! Relay trees: one per origin, grown from flooding by pruning the links that bring duplicates.
//!
//! Flooding delivers each flood over every link, so in a mesh where floods are relayed a node
//! receives each one several times (about six times per node at 64 nodes with 8 peers each). A
//! relay tree keeps, for each origin, only the links that brought a first copy:
//!
//! - **Prune.** A node that receives a duplicate of an origin's flood from a relay asks that
//!   relay to stop relaying the origin's floods to it (`PRUNE`). The origin itself is never
//!   pruned: it always sends its own floods to all of its peers, which relay suppression relies
//!   on.
//! - **Parent.** The neighbour that brought the latest first copy of an origin's flood is the
//!   node's *parent* for that origin. A node never prunes its parent, and when the first copy
//!   comes from a neighbour it had pruned, it takes it back at once (`GRAFT`).
//! - **Confirmed grafts.** The grafted neighbour confirms (`GRAFT_ACK`). Until every graft of an
//!   origin is confirmed, the node prunes nobody for that origin, so there is no moment in which
//!   both its old parent and its new one have stopped relaying to it.
//! - **Loss of the parent.** When the parent disconnects, the node grafts every neighbour it had
//!   pruned for that origin, and tells its neighbours (`LOST`). A neighbour whose parent it was
//!   does the same, and so on down the subtree: without that, a child that had pruned everyone
//!   but its parent, and a parent whose only remaining link leads through that child, would
//!   each wait for the other.
//! - **Order.** `PRUNE` and `GRAFT` carry a sequence number that increases with every one a node
//!   sends; a relay applies only the latest per neighbour and origin, whatever order they arrive
//!   in.
//!
//! By induction from the origin along parents, every node keeps receiving every flood of every
//! origin while links hold. What the tree gives up is redundancy: a relay that drops a flood
//! (its send queue to that peer full) loses it for the nodes below. Flooding would often have
//! brought it by another path. The sockets' own repair covers that (the sync socket's
//! anti-entropy, the chord socket's retries). PlumTree's lazy `IHAVE` announcements would cover
//! it at the mesh level, for a few bytes per flood per pruned link; they are not built.
//!
//! State is bounded: [`MAX_ORIGINS`] origins are tracked, and a neighbour's prunes are recorded for
//! as many. Beyond that, floods are relayed to everyone as before.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rs2p_base::PeerId;

/// Origins whose trees are tracked, and prunes recorded per neighbour. Floods of other origins
/// are flooded.
pub const MAX_ORIGINS: usize = 4096;

/// A relay-tree control message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TreeOp {
    /// Stop relaying this origin's floods to me.
    Prune,
    /// Relay this origin's floods to me again.
    Graft,
    /// Confirms the graft with this sequence number.
    GraftAck,
    /// The sender lost its parent for this origin.
    Lost,
}

/// A control message to send to a neighbour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeMsg {
    /// The neighbour.
    pub to: PeerId,
    /// The origin whose floods it concerns.
    pub origin: PeerId,
    /// What it asks.
    pub op: TreeOp,
    /// Its sequence number (for an ack, the graft's).
    pub seq: u64,
}

/// What a node knows of its own place in one origin's tree.
#[derive(Debug, Default)]
struct Upstream {
    /// The neighbour that brought the latest first copy.
    parent: Option<PeerId>,
    /// Neighbours asked to stop relaying to us.
    pruned: BTreeSet<PeerId>,
    /// Grafts not yet confirmed, with their sequence numbers.
    pending: BTreeMap<PeerId, u64>,
}

/// One node's relay-tree state. Pure: the mesh feeds it events and sends the messages it returns.
#[derive(Debug, Default)]
pub struct RelayTree {
    seq: u64,
    /// By origin.
    up: HashMap<PeerId, Upstream>,
    /// By neighbour, then origin: the latest sequence number applied, and whether it is pruned.
    down: HashMap<PeerId, HashMap<PeerId, (u64, bool)>>,
}

impl RelayTree {
    /// An empty state: every link relays.
    pub fn new() -> Self {
        Self::default()
    }

    /// The first copy of a flood of `origin` arrived from `from`.
    pub fn on_first(&mut self, from: PeerId, origin: PeerId, out: &mut Vec<TreeMsg>) {
        if !self.up.contains_key(&origin) && self.up.len() >= MAX_ORIGINS {
            return;
        }
        let up = self.up.entry(origin).or_default();
        up.parent = Some(from);
        if up.pruned.remove(&from) {
            self.seq += 1;
            up.pending.insert(from, self.seq);
            out.push(TreeMsg {
                to: from,
                origin,
                op: TreeOp::Graft,
                seq: self.seq,
            });
        }
    }

    /// A duplicate of a flood of `origin` arrived from `from`.
    pub fn on_duplicate(&mut self, from: PeerId, origin: PeerId, out: &mut Vec<TreeMsg>) {
        if from == origin {
            return;
        }
        let Some(up) = self.up.get_mut(&origin) else {
            return;
        };
        if up.parent == Some(from) || !up.pending.is_empty() || !up.pruned.insert(from) {
            return;
        }
        self.seq += 1;
        out.push(TreeMsg {
            to: from,
            origin,
            op: TreeOp::Prune,
            seq: self.seq,
        });
    }

    /// A control message arrived from neighbour `from`; `peers` are the node's neighbours now.
    pub fn on_control(
        &mut self,
        from: PeerId,
        origin: PeerId,
        op: TreeOp,
        seq: u64,
        peers: &[PeerId],
        out: &mut Vec<TreeMsg>,
    ) {
        match op {
            TreeOp::Prune | TreeOp::Graft => {
                let theirs = self.down.entry(from).or_default();
                let room = theirs.len() < MAX_ORIGINS;
                match theirs.get_mut(&origin) {
                    Some(entry) if entry.0 < seq => *entry = (seq, op == TreeOp::Prune),
                    Some(_) => {}
                    // Beyond the bound a prune is not recorded: the link keeps relaying.
                    None if room => {
                        theirs.insert(origin, (seq, op == TreeOp::Prune));
                    }
                    None => {}
                }
                if op == TreeOp::Graft {
                    out.push(TreeMsg {
                        to: from,
                        origin,
                        op: TreeOp::GraftAck,
                        seq,
                    });
                }
            }
            TreeOp::GraftAck => {
                if let Some(up) = self.up.get_mut(&origin) {
                    if up.pending.get(&from) == Some(&seq) {
                        up.pending.remove(&from);
                    }
                }
            }
            TreeOp::Lost => {
                if self.up.get(&origin).is_some_and(|u| u.parent == Some(from)) {
                    self.lose_parent(origin, peers, out);
                }
            }
        }
    }

    /// This node's parent for `origin` is gone or lost its own: graft every neighbour pruned
    /// for it, and tell every neighbour in `peers`.
    fn lose_parent(&mut self, origin: PeerId, peers: &[PeerId], out: &mut Vec<TreeMsg>) {
        let Some(up) = self.up.get_mut(&origin) else {
            return;
        };
        up.parent = None;
        for to in std::mem::take(&mut up.pruned) {
            self.seq += 1;
            up.pending.insert(to, self.seq);
            out.push(TreeMsg {
                to,
                origin,
                op: TreeOp::Graft,
                seq: self.seq,
            });
        }
        out.extend(peers.iter().map(|&to| TreeMsg {
            to,
            origin,
            op: TreeOp::Lost,
            seq: 0,
        }));
    }

    /// Whether `peer` asked not to be sent `origin`'s floods by relays.
    pub fn is_pruned(&self, peer: &PeerId, origin: &PeerId) -> bool {
        self.down
            .get(peer)
            .and_then(|o| o.get(origin))
            .is_some_and(|&(_, pruned)| pruned)
    }

    /// Neighbour `peer` disconnected (`peers` are the neighbours left): forget it, and where it
    /// was the parent, graft every neighbour pruned for that origin and tell them all.
    pub fn peer_gone(&mut self, peer: PeerId, peers: &[PeerId], out: &mut Vec<TreeMsg>) {
        self.down.remove(&peer);
        let mut orphaned = Vec::new();
        for (&origin, up) in &mut self.up {
            up.pruned.remove(&peer);
            up.pending.remove(&peer);
            if up.parent == Some(peer) {
                orphaned.push(origin);
            }
        }
        orphaned.sort();
        for origin in orphaned {
            self.lose_parent(origin, peers, out);
        }
    }

    /// Origins tracked.
    pub fn origins(&self) -> usize {
        self.up.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> PeerId {
        PeerId::from_slice(&[n; 32]).expect("32 bytes")
    }

    #[test]
    fn a_duplicate_from_a_relay_prunes_it_once_but_never_the_origin_or_the_parent() {
        let (o, a, b) = (id(1), id(2), id(3));
        let mut t = RelayTree::new();
        let mut out = Vec::new();
        t.on_first(a, o, &mut out);
        t.on_duplicate(o, o, &mut out);
        t.on_duplicate(a, o, &mut out);
        assert!(out.is_empty());
        t.on_duplicate(b, o, &mut out);
        t.on_duplicate(b, o, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].to, out[0].op), (b, TreeOp::Prune));
    }

    #[test]
    fn a_first_copy_from_a_pruned_relay_grafts_it_and_nothing_is_pruned_until_confirmed() {
        let (o, a, b) = (id(1), id(2), id(3));
        let mut t = RelayTree::new();
        let mut out = Vec::new();
        t.on_first(a, o, &mut out);
        t.on_duplicate(b, o, &mut out);
        out.clear();
        t.on_first(b, o, &mut out);
        let graft = out[0];
        assert_eq!((graft.to, graft.op), (b, TreeOp::Graft));
        out.clear();
        t.on_duplicate(a, o, &mut out);
        assert!(out.is_empty(), "pruned while a graft was unconfirmed");
        t.on_control(b, o, TreeOp::GraftAck, graft.seq, &[], &mut out);
        t.on_duplicate(a, o, &mut out);
        assert_eq!((out[0].to, out[0].op), (a, TreeOp::Prune));
    }

    #[test]
    fn the_latest_control_wins_whatever_the_arrival_order() {
        let (o, a) = (id(1), id(2));
        let mut t = RelayTree::new();
        let mut out = Vec::new();
        t.on_control(a, o, TreeOp::Graft, 5, &[], &mut out);
        t.on_control(a, o, TreeOp::Prune, 4, &[], &mut out);
        assert!(!t.is_pruned(&a, &o));
        t.on_control(a, o, TreeOp::Prune, 6, &[], &mut out);
        assert!(t.is_pruned(&a, &o));
        assert_eq!(out.len(), 1, "one ack, for the graft");
    }

    #[test]
    fn losing_the_parent_grafts_every_pruned_neighbour() {
        let (o, a, b, c) = (id(1), id(2), id(3), id(4));
        let mut t = RelayTree::new();
        let mut out = Vec::new();
        t.on_first(a, o, &mut out);
        t.on_duplicate(b, o, &mut out);
        t.on_duplicate(c, o, &mut out);
        out.clear();
        t.peer_gone(a, &[b, c], &mut out);
        let grafted: Vec<PeerId> = out
            .iter()
            .filter(|m| m.op == TreeOp::Graft)
            .map(|m| m.to)
            .collect();
        assert_eq!(grafted, vec![b, c]);
        let told: Vec<PeerId> = out
            .iter()
            .filter(|m| m.op == TreeOp::Lost)
            .map(|m| m.to)
            .collect();
        assert_eq!(told, vec![b, c]);
    }

    #[test]
    fn a_lost_parent_is_passed_down_only_by_its_children() {
        let (o, p, c, x) = (id(1), id(2), id(3), id(4));
        let mut t = RelayTree::new();
        let mut out = Vec::new();
        t.on_first(p, o, &mut out);
        t.on_duplicate(x, o, &mut out);
        out.clear();
        t.on_control(x, o, TreeOp::Lost, 0, &[p, c, x], &mut out);
        assert!(
            out.is_empty(),
            "a loss from a neighbour that is not the parent"
        );
        t.on_control(p, o, TreeOp::Lost, 0, &[p, c, x], &mut out);
        assert!(out.contains(&TreeMsg {
            to: x,
            origin: o,
            op: TreeOp::Graft,
            seq: 2
        }));
        assert_eq!(out.iter().filter(|m| m.op == TreeOp::Lost).count(), 3);
        out.clear();
        t.on_control(p, o, TreeOp::Lost, 0, &[p, c, x], &mut out);
        assert!(out.is_empty(), "passed on once");
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Ev {
        First(u8, u8),
        Dup(u8, u8),
        Control(u8, u8, u8, u64),
        Gone(u8),
    }

    fn ev() -> impl Strategy<Value = Ev> {
        prop_oneof![
            (0..5u8, 0..3u8).prop_map(|(f, o)| Ev::First(f, o)),
            (0..5u8, 0..3u8).prop_map(|(f, o)| Ev::Dup(f, o)),
            (0..5u8, 0..3u8, 0..4u8, 0..40u64).prop_map(|(f, o, op, s)| Ev::Control(f, o, op, s)),
            (0..5u8).prop_map(Ev::Gone),
        ]
    }

    fn id(n: u8) -> PeerId {
        PeerId::from_slice(&[n + 1; 32]).expect("32 bytes")
    }

    proptest! {
        /// Whatever happens: a node never has its parent pruned, never prunes while a graft is
        /// unconfirmed, numbers what it sends in increasing order, and a neighbour that is gone
        /// is in no set.
        #[test]
        fn the_parent_is_never_pruned_and_sequence_numbers_only_grow(
            evs in proptest::collection::vec(ev(), 0..200)
        ) {
            let mut t = RelayTree::new();
            let mut last_seq = 0;
            let peers: Vec<PeerId> = (0..5).map(id).collect();
            for e in evs {
                let mut out = Vec::new();
                let prunes_allowed: Vec<(PeerId, bool)> = t
                    .up
                    .iter()
                    .map(|(o, u)| (*o, u.pending.is_empty()))
                    .collect();
                match e.clone() {
                    Ev::First(f, o) => t.on_first(id(f), id(o), &mut out),
                    Ev::Dup(f, o) => t.on_duplicate(id(f), id(o), &mut out),
                    Ev::Control(f, o, op, s) => {
                        let op = [TreeOp::Prune, TreeOp::Graft, TreeOp::GraftAck, TreeOp::Lost]
                            [op as usize];
                        t.on_control(id(f), id(o), op, s, &peers, &mut out);
                    }
                    Ev::Gone(p) => {
                        t.peer_gone(id(p), &peers, &mut out);
                        prop_assert!(!t.down.contains_key(&id(p)));
                        for u in t.up.values() {
                            prop_assert!(!u.pruned.contains(&id(p)));
                            prop_assert!(!u.pending.contains_key(&id(p)));
                            prop_assert_ne!(u.parent, Some(id(p)));
                        }
                    }
                }
                for m in &out {
                    if matches!(m.op, TreeOp::Prune | TreeOp::Graft) {
                        prop_assert!(m.seq > last_seq, "{e:?}: {m:?} after {last_seq}");
                        last_seq = m.seq;
                    }
                    if m.op == TreeOp::Prune {
                        let allowed = prunes_allowed
                            .iter()
                            .find(|(o, _)| *o == m.origin)
                            .is_some_and(|&(_, ok)| ok);
                        prop_assert!(allowed, "{e:?}: pruned with a graft unconfirmed");
                    }
                }
                for u in t.up.values() {
                    if let Some(p) = u.parent {
                        prop_assert!(!u.pruned.contains(&p), "{e:?}: parent pruned");
                    }
                    prop_assert!(u.pruned.iter().all(|p| !u.pending.contains_key(p)));
                }
            }
        }
    }
}
