//! Joining a ring: finding the successor, its hand-over, hellos and predecessor lists.

use std::collections::BTreeSet;

use bytes::Bytes;
use prost::Message;
use rs2p_base::wire::pb::{self, chord_message::Kind};
use rs2p_base::PeerId;
use rs2p_mesh::{Context, Verdict};
use rs2p_record::{regroup, Stored};

use super::*;
use crate::ring::{key_pos, strictly_between};

impl ChordMachine {
    pub(super) fn start_join(&mut self, cx: &mut Context<'_>, via: PeerId) {
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
            asked_again: 0,
        });
        // Keys written while alone go to their owners once joined.
        self.rehome = records;
    }

    pub(super) fn found_successor(&mut self, cx: &mut Context<'_>, succ: NodeRef, op: u64) {
        let Some(j) = self.joining.as_mut().filter(|j| j.op == op) else {
            return;
        };
        if succ.peer == self.me.peer {
            return;
        }
        j.succ = Some(succ.clone());
        let join = self.join_request();
        self.send(cx, &succ, join);
    }

    /// The request a newcomer sends its successor-to-be.
    pub(super) fn join_request(&self) -> Bytes {
        encode(Kind::Join(pb::ChordJoin {
            node: Some(self.me.to_pb()),
        }))
    }

    /// A newcomer asks this node, its successor-to-be, for its place and keys.
    pub(super) fn on_join(
        &mut self,
        cx: &mut Context<'_>,
        from: PeerId,
        join: pb::ChordJoin,
    ) -> Verdict {
        let Some(n) = self.sender(from, join.node.as_ref()) else {
            return Verdict::Reject;
        };
        // Only the true successor answers: a stale lookup makes the newcomer try again.
        let mine = self
            .preds
            .first()
            .is_none_or(|p| p.peer == n.peer || strictly_between(n.pos, p.pos, self.me.pos));
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
        let share: Vec<Stored> = self
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

    pub(super) fn on_join_ack(
        &mut self,
        cx: &mut Context<'_>,
        from: PeerId,
        ack: pb::ChordJoinAck,
    ) {
        let expected = self
            .joining
            .as_ref()
            .and_then(|j| j.succ.as_ref())
            .is_some_and(|s| s.peer == from);
        if !expected {
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
                self.start(cx, Op::Put(b), target, Purpose::Rehome, None);
            }
        }
    }

    pub(super) fn succ_len(&self) -> usize {
        self.cfg.successors.max(self.cfg.replicas).max(1)
    }

    /// Sets the predecessor list; tells every connected peer when the nearest one changed (its
    /// arc starts there).
    pub(super) fn set_preds(&mut self, cx: &mut Context<'_>, mut preds: Vec<NodeRef>) {
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

    pub(super) fn hello(&self) -> Bytes {
        self.hello_asking(false)
    }

    pub(super) fn hello_asking(&self, want_reply: bool) -> Bytes {
        encode(Kind::Hello(pb::ChordHello {
            node: Some(self.me.to_pb()),
            joined: self.joined,
            pred: self.preds.first().map(|p| p.pos),
            want_reply,
        }))
    }

    /// The node a message names as its sender, if it is the peer that sent it (counted as
    /// malformed otherwise).
    pub(super) fn sender(&mut self, from: PeerId, node: Option<&pb::ChordNode>) -> Option<NodeRef> {
        let n = node.and_then(NodeRef::from_pb).filter(|n| n.peer == from);
        if n.is_none() {
            self.stats.malformed += 1;
        }
        n
    }

    pub(super) fn on_hello(
        &mut self,
        cx: &mut Context<'_>,
        from: PeerId,
        h: pb::ChordHello,
    ) -> Verdict {
        let Some(node) = self.sender(from, h.node.as_ref()) else {
            return Verdict::Reject;
        };
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
}
