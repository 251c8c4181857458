//! Routing: the next hop, forwarding, answering at the owner, and answers going back.

use bytes::Bytes;
use rs2p_base::wire::pb::{self, chord_message::Kind, chord_reply, chord_route};
use rs2p_base::PeerId;
use rs2p_mesh::{Context, Verdict};
use rs2p_record::{open, regroup, Limits, Stored};

use super::*;
use crate::config::ms;
use crate::proto::store::Applied;
use crate::ring::{dist, in_arc, key_pos, strictly_between, Pos};

impl ChordMachine {
    pub(super) fn owns(&self, target: Pos) -> bool {
        let (from, to) = self.owned_arc();
        self.joined && in_arc(target, from, to)
    }

    /// The next hop towards the owner of `target`, or `None` when this node answers.
    pub(super) fn next_hop(&self, target: Pos, path: &[Bytes]) -> Result<Option<PeerId>, ()> {
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
    pub(super) fn route(
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

    pub(super) fn on_route(
        &mut self,
        cx: &mut Context<'_>,
        from: PeerId,
        route: pb::ChordRoute,
    ) -> Verdict {
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
    pub(super) fn execute(&mut self, cx: &mut Context<'_>, route: pb::ChordRoute) {
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
                let mut taken: Vec<&Stored> = Vec::new();
                let mut last: Option<Pos> = None;
                for (p, s) in self.store.arc(r.after, self.me.pos) {
                    if size >= limit && last != Some(p) {
                        covered = last.unwrap_or(r.after);
                        break;
                    }
                    last = Some(p);
                    if !s.tombstone() {
                        size += s.raw().len();
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

    pub(super) fn limits(&self) -> Limits {
        Limits {
            network_id: self.network_id,
            now: self.now,
            max_skew: ms(self.cfg.max_skew),
            max_lease: 0,
            max_key_len: self.cfg.max_key_len,
            max_value_len: self.cfg.max_value_len,
            accept_unsigned: false,
        }
    }

    /// The owner's side of a write: verify, apply, and copy to the replicas. `None` when the
    /// answer waits for their acknowledgements.
    pub(super) fn owner_put(
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
        if !self.owns(key_pos(stored.key())) {
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
                let replicas = self.replica_peers();
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

    pub(super) fn finish_replicating(&mut self, cx: &mut Context<'_>, ack: u64) {
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
    pub(super) fn send_back(&mut self, cx: &mut Context<'_>, mut reply: pb::ChordReply) {
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

    pub(super) fn on_reply(&mut self, cx: &mut Context<'_>, reply: pb::ChordReply) {
        self.send_back(cx, reply);
    }

    /// An answer reached its origin (this node).
    pub(super) fn complete_route(&mut self, cx: &mut Context<'_>, reply: pb::ChordReply) {
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
                    Some(Some(s)) => Some(s.record()),
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
                        Ok(v) => records.extend(v.into_iter().map(|s| s.record())),
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
            Purpose::Rehome => {}
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

    pub(super) fn open_one(&mut self, b: pb::RecordBatch) -> Option<Stored> {
        match open(b, &self.limits()) {
            Ok(mut v) if v.len() == 1 => Some(v.remove(0)),
            _ => {
                self.stats.forged += 1;
                None
            }
        }
    }
}
