//! Ring upkeep: stabilisation, fingers, probes that merge rings, clean leaves.

use std::collections::BTreeSet;

use rand::Rng;
use rs2p_base::wire::pb::{self, chord_message::Kind};
use rs2p_base::PeerId;
use rs2p_mesh::{Context, Verdict};

use super::*;
use crate::config::ms;
use crate::ring::{dist, finger_target, strictly_between, Pos};

impl ChordMachine {
    pub(super) fn stabilize(&mut self, cx: &mut Context<'_>) {
        if !self.joined {
            let stale = self.joining.as_ref().is_none_or(|j| {
                self.now.saturating_sub(j.started)
                    > ms(self.cfg.request_timeout) * u64::from(self.cfg.attempts.max(1))
            });
            if stale {
                // A lost join acknowledgement leaves the successor already counting this node
                // as its predecessor, and then no lookup of this node's position finds an
                // owner: ask the successor found again (twice at most), or whichever peer
                // says (in its hellos) that this node is its predecessor, however many
                // acknowledgements were lost, before starting over.
                let me = self.me.pos;
                let claimed = self
                    .peers
                    .values()
                    .find(|p| p.joined && p.pred == Some(me))
                    .map(|p| p.node.clone());
                let again = self
                    .joining
                    .as_ref()
                    .filter(|j| j.asked_again < 2)
                    .and_then(|j| j.succ.clone())
                    .filter(|s| self.peers.contains_key(&s.peer))
                    .or(claimed);
                if let Some(succ) = again {
                    match self.joining.as_mut() {
                        Some(j) => {
                            j.asked_again = j.asked_again.saturating_add(1);
                            j.started = self.now;
                            j.succ = Some(succ.clone());
                        }
                        None => {
                            self.joining = Some(Joining {
                                op: 0,
                                succ: Some(succ.clone()),
                                started: self.now,
                                asked_again: 1,
                            });
                        }
                    }
                    let join = self.join_request();
                    self.send(cx, &succ, join);
                    return;
                }
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

    pub(super) fn fix_fingers(&mut self, cx: &mut Context<'_>, succ: Pos) {
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
    pub(super) fn probe(&mut self, cx: &mut Context<'_>) {
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

    pub(super) fn on_stabilize(
        &mut self,
        cx: &mut Context<'_>,
        from: PeerId,
        st: pb::ChordStabilize,
    ) -> Verdict {
        let Some(n) = self.sender(from, st.node.as_ref()) else {
            return Verdict::Reject;
        };
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

    pub(super) fn on_neighbours(
        &mut self,
        cx: &mut Context<'_>,
        from: PeerId,
        nb: pb::ChordNeighbours,
    ) {
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

    pub(super) fn on_leave(&mut self, cx: &mut Context<'_>, from: PeerId, l: pb::ChordLeave) {
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
    pub(super) fn forget(&mut self, peer: PeerId) {
        self.succs.retain(|n| n.peer != peer);
        self.fingers.retain(|_, n| n.peer != peer);
    }
}
