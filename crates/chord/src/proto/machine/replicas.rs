//! Replicas: storing sent records, digests of owned arcs and the repair they start.

use std::collections::{BTreeMap, BTreeSet};

use rs2p_base::wire::pb::{self, chord_message::Kind};
use rs2p_base::PeerId;
use rs2p_mesh::Context;
use rs2p_record::{open, regroup, Stored};

use super::*;
use crate::proto::store::Applied;
use crate::ring::{in_arc, key_pos, Pos};

/// The most entries one summary lists (16 bytes each: well under the 1 MiB frame limit).
const MAX_SUMMARY: usize = 32_768;

impl ChordMachine {
    /// The arc this node keeps replicas of: its own and its `replicas − 1` predecessors' arcs
    /// (the whole ring while it knows fewer predecessors).
    pub(super) fn replica_arc(&self) -> (Pos, Pos) {
        match self.preds.get(self.cfg.replicas.saturating_sub(1)) {
            Some(p) if self.cfg.replicas > 0 => (p.pos, self.me.pos),
            _ => (self.me.pos, self.me.pos),
        }
    }

    pub(super) fn send_records<'a>(
        &mut self,
        cx: &mut Context<'_>,
        to: PeerId,
        records: impl IntoIterator<Item = &'a Stored>,
        ack: u64,
    ) {
        let mut chunk: Vec<&Stored> = Vec::new();
        let mut size = 0;
        let flush = |chunk: &mut Vec<&Stored>, cx: &mut Context<'_>, last: bool| {
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
            size += s.raw().len() + 100;
            chunk.push(s);
            if size >= self.cfg.transfer_chunk {
                flush(&mut chunk, cx, false);
                size = 0;
            }
        }
        flush(&mut chunk, cx, true);
    }

    /// Stores a batch sent as a replica. Returns false when it was refused.
    pub(super) fn store_batch(
        &mut self,
        cx: &mut Context<'_>,
        from: PeerId,
        b: pb::RecordBatch,
    ) -> bool {
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
            if !in_arc(key_pos(s.key()), lo, hi) {
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

    pub(super) fn on_store(&mut self, cx: &mut Context<'_>, from: PeerId, st: pb::ChordStore) {
        for b in st.records {
            self.store_batch(cx, from, b);
        }
        if st.ack != 0 {
            cx.whisper(from, encode(Kind::Stored(pb::ChordStored { ack: st.ack })));
        }
    }

    pub(super) fn on_stored(&mut self, cx: &mut Context<'_>, from: PeerId, ack: u64) {
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

    /// The connected nodes that hold copies of this node's arc: its first `replicas − 1`
    /// successors.
    pub(super) fn replica_peers(&self) -> Vec<PeerId> {
        self.succs
            .iter()
            .take(self.cfg.replicas.saturating_sub(1))
            .filter(|s| self.peers.contains_key(&s.peer))
            .map(|s| s.peer)
            .collect()
    }

    /// Sends each replica the digests of the arc this node owns, cut into sub-arcs of at most
    /// `digest_span` records so that every summary a difference starts stays small.
    pub(super) fn push_digests(&mut self, cx: &mut Context<'_>) {
        let Some(p) = self.preds.first() else {
            return;
        };
        let (from, to) = (p.pos, self.me.pos);
        let span = self.cfg.digest_span.max(1);
        let mut msgs = Vec::new();
        let (mut start, mut digest, mut n, mut last) = (from, 0u64, 0usize, None);
        for (pos, r) in self.store.arc(from, to) {
            // Cut between positions only, never inside one.
            if n >= span && last != Some(pos) {
                if let Some(end) = last {
                    msgs.push(pb::ChordDigest {
                        from: start,
                        to: end,
                        digest,
                    });
                    (start, digest, n) = (end, 0, 0);
                }
            }
            digest ^= r.short_hash();
            n += 1;
            last = Some(pos);
        }
        msgs.push(pb::ChordDigest {
            from: start,
            to,
            digest,
        });
        let replicas = self.replica_peers();
        for d in msgs {
            let msg = encode(Kind::Digest(d));
            for &r in &replicas {
                cx.whisper(r, msg.clone());
            }
        }
    }

    pub(super) fn summary(&self, from: Pos, to: Pos) -> pb::ChordSummary {
        let (mut keys, mut hashes) = (Vec::new(), Vec::new());
        // Capped so that it always fits a frame; what is left out is sent again by the owner
        // (it looks missing) and dropped here as a duplicate.
        for (p, s) in self.store.arc(from, to).take(MAX_SUMMARY) {
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

    pub(super) fn on_digest(&mut self, cx: &mut Context<'_>, from: PeerId, d: pb::ChordDigest) {
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

    pub(super) fn on_summary(&mut self, cx: &mut Context<'_>, from: PeerId, s: pb::ChordSummary) {
        if s.key_hashes.len() != s.record_hashes.len() {
            self.stats.malformed += 1;
            return;
        }
        if !s.want.is_empty() {
            // The owner wants these keys' records from this replica.
            let want: BTreeSet<Pos> = s.want.iter().copied().collect();
            let records: Vec<Stored> = self
                .store
                .arc(s.from, s.to)
                .filter(|(p, _)| want.contains(p))
                .map(|(_, r)| r.clone())
                .collect();
            self.send_records(cx, from, records.iter(), 0);
            return;
        }
        // A replica's summary of (part of) the arc this node owns: send what it lacks, ask for
        // what it has.
        let (owned_lo, owned_hi) = self.owned_arc();
        let (lo, hi) = (s.from, s.to);
        let inside =
            in_arc(hi, owned_lo, owned_hi) && (lo == owned_lo || in_arc(lo, owned_lo, owned_hi));
        if !inside {
            self.stats.out_of_range += 1;
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
        let mut send: Vec<Stored> = Vec::new();
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
}
