//! The sync socket's state machine: a [`Handler`] on the mesh under [`PROTOCOL`].
//!
//! - **Local writes** ([`SyncMachine::set`], …) check the lease by local knowledge, sign the
//!   records together, one batch per [`LIVE_BATCH_BYTES`] of them (or, with `SyncConfig::signed`
//!   off, seal them unsigned under [`PROTOCOL_UNSIGNED`]), apply them, and flood each batch.
//! - **Live batches** from the mesh are verified (signature, network, timestamps, lease length,
//!   sizes) and merged; a valid batch with something new is relayed, an invalid one is refused,
//!   counted and never relayed.
//! - **Join and repair.** When a peer connects (the side with the lower id; one descent serves
//!   both sides), and every `repair_interval` with each peer in turn, the node sends the top of its
//!   hash tree over key hashes (fanout 16, 4 levels, each node the
//!   XOR of its keys' record hashes, kept up to date in O(1) per record). Each side answers with
//!   the children of the nodes that differ, one level deeper; at the leaves it lists its keys
//!   (key hash and record-set hash); the other side then pushes its records for keys that differ
//!   or the peer lacks, and asks for the rest. For `d` differences the exchange costs about
//!   `d · 4 · 128` bytes of hashes besides the records, whatever the dictionary's size. A node
//!   with no keys asks one peer for the whole dictionary instead, and receives it in chunks, at
//!   the pace it reads them (see `Context::backlog`); until it has arrived, it starts and
//!   answers no descent with other peers. Transfers go in batch order, so a chunk carries whole batches and the receiver
//!   verifies each batch once (it remembers recently verified ones). Records learned this way
//!   are verified like live ones and not relayed.
//!
//! Events for the user (updates, deletes, writes that lost) queue in [`SyncMachine::take_events`].

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use bytes::Bytes;
use prost::Message;
use rand::Rng;
use rs2p_base::wire::pb::{self, sync_message::Kind};
use rs2p_base::{Keypair, PeerId};
use rs2p_mesh::{Context, Handler, InboundMessage, Verdict};

use super::chunk::Chunk;
use super::record::{self, Limits, Record, Stored};
use super::store::{key_hashes, Change, KeyState, Store, FANOUT, LEAVES, LEVELS};
use crate::config::ms;
use crate::{DelError, RecordError, SetError, SyncConfig};

/// The sync socket's protocol id on the mesh.
pub const PROTOCOL: &str = "/rs2p/sync/2";

/// The protocol of sync sockets with unsigned records (`SyncConfig::signed` false): a separate
/// dictionary from the signed one's.
pub const PROTOCOL_UNSIGNED: &str = "/rs2p/sync-unsigned/2";

const REPAIR_TIMER: u64 = 1;
const PUSH_TIMER: u64 = 2;
/// Bytes of records per live batch, at most (a single larger record goes alone; see
/// [`write_size`]): a flooded batch stays well inside the mesh's largest frame (1 MiB by default),
/// however large the update. A mesh with smaller frames gets smaller batches
/// ([`SyncMachine::fit_frames`]).
pub const LIVE_BATCH_BYTES: usize = 256 * 1024;

/// What a frame holds besides a batch's records (the flood's header and signature, the batch's
/// signature and framing, the encryption tag): the mesh's margin for every socket type.
pub use rs2p_mesh::FRAME_MARGIN;

/// An upper bound on what one write takes in a batch: its key and value, and at most 48 bytes of
/// record fields and framing (tags, lengths, times, version).
pub fn write_size(key: &[u8], value: Option<&[u8]>) -> usize {
    key.len() + value.map_or(0, <[u8]>::len) + 48
}

/// Chunks sent per peer per push tick, so live traffic interleaves with a large transfer.
const CHUNKS_PER_TICK: usize = 4;

/// A transfer to a peer waits while this many bytes are queued for it and not yet written:
/// it goes at the pace the peer reads, rather than queueing the whole dictionary in memory
/// at once (a million keys: 200 MB, built in one burst before the peer had any of it).
const TRANSFER_WINDOW: usize = 2 << 20;

/// How long a transfer held back by [`TRANSFER_WINDOW`] waits before it looks again.
const WINDOW_WAIT_MS: u64 = 1;

/// How long a whole dictionary asked of a peer counts as on its way without a chunk of it
/// arriving (see [`SyncMachine::receiving_whole`]).
const WHOLE_QUIET_MS: u64 = 1000;

/// Something that happened to the dictionary.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SyncEvent {
    /// A key got a new value (js2p's `'update'`), by a local or a remote write.
    Updated {
        /// The key.
        key: Bytes,
        /// Its value.
        value: Bytes,
        /// Who wrote it.
        owner: PeerId,
        /// When (the owner's clock, Unix ms).
        timestamp: u64,
    },
    /// A key was deleted (js2p's `'delete'`).
    Deleted {
        /// The key.
        key: Bytes,
    },
    /// A write that was shown lost to an earlier lease that arrived late (two sides of a
    /// partition both granted a lease; the resolution picked the other).
    WriteLost {
        /// The key.
        key: Bytes,
        /// The owner of the write that lost.
        loser: PeerId,
        /// When that write was issued.
        loser_issued_at: u64,
        /// The owner whose write is shown now, if any.
        winner: Option<PeerId>,
    },
}

/// An event as the machine notes it: its key and value are read out of the stored record only
/// when the event is taken, and not at all when nobody listens ([`SyncMachine::discard_events`]).
#[derive(Debug)]
enum Noted {
    Updated(Stored),
    Deleted(KeyOf),
    WriteLost {
        key: KeyOf,
        loser: PeerId,
        loser_issued_at: u64,
        winner: Option<PeerId>,
    },
}

/// Where a noted event's key comes from.
#[derive(Debug, Clone)]
enum KeyOf {
    Bytes(Bytes),
    Record(Stored),
}

impl KeyOf {
    fn bytes(self) -> Bytes {
        match self {
            KeyOf::Bytes(b) => b,
            KeyOf::Record(s) => s.key_bytes(),
        }
    }
}

impl Noted {
    fn event(self) -> SyncEvent {
        match self {
            Noted::Updated(now) => {
                let (key, value) = now.key_value_bytes();
                SyncEvent::Updated {
                    key,
                    value,
                    owner: *now.owner(),
                    timestamp: now.issued_at(),
                }
            }
            Noted::Deleted(key) => SyncEvent::Deleted { key: key.bytes() },
            Noted::WriteLost {
                key,
                loser,
                loser_issued_at,
                winner,
            } => SyncEvent::WriteLost {
                key: key.bytes(),
                loser,
                loser_issued_at,
                winner,
            },
        }
    }
}

/// The sync socket's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Records written locally.
    pub local_writes: u64,
    /// Records received and stored (live or repair).
    pub records_received: u64,
    /// Records received that were already known.
    pub records_known: u64,
    /// Records that arrived after a live lease of another owner and so do not show.
    pub lease_conflicts: u64,
    /// Batches refused, by reason.
    pub refused: HashMap<String, u64>,
    /// Records issued before this node's checkpoint for their key, ignored: either already
    /// folded into the checkpoint (a peer that had not pruned yet), or late beyond the finality
    /// guarantee.
    pub stale: u64,
    /// Digest exchanges started.
    pub repairs_started: u64,
    /// Records sent by join and repair.
    pub records_sent_repair: u64,
    /// Bytes of records sent by join and repair.
    pub bytes_sent_repair: u64,
}

/// The state machine. See the [module docs](self).
#[derive(Debug)]
pub struct SyncMachine {
    cfg: SyncConfig,
    keypair: Keypair,
    network_id: [u8; 32],
    store: Store,
    last_issued: u64,
    last_version: u64,
    events: VecDeque<Noted>,
    stats: SyncStats,
    repair_armed: bool,
    /// Which peer the next repair tick compares with: they take turns (a random choice could
    /// leave the one link between two groups uncompared for long); `None` until the first tick
    /// picks a random start.
    repair_turn: Option<usize>,
    /// Keys still to send to each peer (join and repair), drained a few chunks per tick.
    /// Keys (with their [`key_hash`](crate::proto::store::key_hash)) queued for each peer.
    outbox: BTreeMap<PeerId, VecDeque<(u64, Bytes)>>,
    push_armed: bool,
    /// Batches verified recently: a batch split over the chunks of a transfer is verified once.
    verified: rs2p_record::VerifiedBatches,
    /// Peers we asked for their whole dictionary on this link (we held nothing).
    asked_whole: HashSet<PeerId>,
    /// The peer whose whole dictionary we asked for last, and until when (ms) it counts as on
    /// its way: pushed forward by each of its chunks. See [`SyncMachine::receiving_whole`].
    whole: Option<(PeerId, u64)>,
    /// The most bytes of records per live batch ([`LIVE_BATCH_BYTES`], or less for small frames).
    batch_bytes: usize,
    /// The most bytes of a sync message in one frame: the mesh's frame limit less
    /// [`FRAME_MARGIN`].
    frame_room: usize,
}

impl SyncMachine {
    /// The protocol it speaks: [`PROTOCOL`], or [`PROTOCOL_UNSIGNED`] without signatures.
    pub fn protocol(&self) -> &'static str {
        if self.cfg.signed {
            PROTOCOL
        } else {
            PROTOCOL_UNSIGNED
        }
    }

    /// A machine for the node with `keypair` in the network `network_id`.
    pub fn new(cfg: SyncConfig, keypair: Keypair, network_id: [u8; 32]) -> Self {
        Self {
            store: Store::new(cfg.leasing),
            cfg,
            keypair,
            network_id,
            last_issued: 0,
            last_version: 0,
            events: VecDeque::new(),
            stats: SyncStats::default(),
            repair_armed: false,
            repair_turn: None,
            outbox: BTreeMap::new(),
            push_armed: false,
            verified: rs2p_record::VerifiedBatches::default(),
            asked_whole: HashSet::new(),
            whole: None,
            batch_bytes: LIVE_BATCH_BYTES,
            frame_room: rs2p_base::wire::DEFAULT_MAX_FRAME_LEN - FRAME_MARGIN,
        }
    }

    /// Fits live batches (see [`live_batch_bytes`]) and transfer chunks to a mesh whose frames
    /// hold at most `max_frame_len` bytes.
    pub fn fit_frames(&mut self, max_frame_len: usize) -> Result<(), String> {
        self.batch_bytes = live_batch_bytes(&self.cfg, max_frame_len)?;
        self.frame_room = max_frame_len.saturating_sub(FRAME_MARGIN);
        Ok(())
    }

    /// Puts back what a data directory kept: every key's checkpoint and records, and the
    /// store-wide cutoff; from now on the store tracks which keys change
    /// ([`SyncMachine::take_dirty`]). This node's own records set its clock and version floor,
    /// so its next write sorts after all of them.
    pub fn restore(
        &mut self,
        keys: impl IntoIterator<Item = (Bytes, u64, Option<Stored>, Vec<Stored>)>,
        cutoff: u64,
    ) {
        let me = self.keypair.peer_id();
        self.store.track_changes();
        self.store.restore_cutoff(cutoff);
        for (key, c, base, records) in keys {
            for r in base.iter().chain(&records) {
                if *r.owner() == me {
                    self.last_issued = self.last_issued.max(r.issued_at());
                    self.last_version = self.last_version.max(r.version());
                }
            }
            self.store.restore(key, c, base, records);
        }
    }

    /// The keys changed since the last call and the new store-wide cutoff, if it moved (for a
    /// data directory; empty until [`SyncMachine::restore`] turned tracking on).
    pub fn take_dirty(&mut self) -> (Vec<Bytes>, Option<u64>) {
        self.store.take_dirty()
    }

    /// The dictionary.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The counters.
    pub fn stats(&self) -> &SyncStats {
        &self.stats
    }

    /// The value of `key`.
    pub fn get(&self, key: &[u8]) -> Option<Bytes> {
        self.store.get(key).map(Stored::value_bytes)
    }

    /// Events since the last call, oldest first.
    pub fn take_events(&mut self) -> impl Iterator<Item = SyncEvent> + '_ {
        self.events.drain(..).map(Noted::event)
    }

    /// Forgets the events since the last call without making them (when nobody listens).
    pub fn discard_events(&mut self) {
        self.events.clear();
    }

    fn limits(&self, now: u64) -> Limits {
        Limits {
            network_id: self.network_id,
            now,
            max_skew: ms(self.cfg.max_skew),
            max_lease: if self.cfg.leasing {
                ms(self.cfg.lease)
            } else {
                0
            },
            max_key_len: self.cfg.max_key_len,
            max_value_len: self.cfg.max_value_len,
            accept_unsigned: !self.cfg.signed,
        }
    }

    fn check_key(&self, key: &[u8]) -> Result<(), SetError> {
        if key.is_empty() || key.len() > self.cfg.max_key_len {
            return Err(SetError::BadKey {
                len: key.len(),
                max: self.cfg.max_key_len,
            });
        }
        Ok(())
    }

    /// Checks one write against the limits and, by local knowledge, the leases.
    fn check_write(
        &self,
        kh: u64,
        key: &[u8],
        value: Option<&Bytes>,
        now: u64,
    ) -> Result<(), SetError> {
        self.check_key(key)?;
        if let Some(v) = value {
            if v.len() > self.cfg.max_value_len {
                return Err(SetError::ValueTooLarge {
                    len: v.len(),
                    max: self.cfg.max_value_len,
                });
            }
        }
        match self
            .store
            .lease_against_hashed(kh, key, self.keypair.peer_id(), now)
        {
            Some((owner, until)) => Err(SetError::LeaseHeld { owner, until }),
            None => Ok(()),
        }
    }

    /// Writes several keys: all or none (a lease held by another peer on any key refuses the
    /// whole update). Deletes are `None` values. The records are signed together, as one batch
    /// per [`LIVE_BATCH_BYTES`] of them.
    pub fn write(
        &mut self,
        cx: &mut Context<'_>,
        writes: Vec<(Bytes, Option<Bytes>)>,
    ) -> Result<(), SetError> {
        let now = cx.now();
        let hashes = key_hashes(writes.iter().map(|(k, _)| &k[..]));
        for ((k, v), &kh) in writes.iter().zip(&hashes) {
            self.check_write(kh, k, v.as_ref(), now)?;
        }
        self.commit(cx, writes, &hashes);
        Ok(())
    }

    /// Independent writes, in order, each with its own result (a refused one does not hold back
    /// the others); those accepted are signed together as [`SyncMachine::write`] signs an
    /// update. Writes to the same key apply in order: the last one stands.
    pub fn write_each(
        &mut self,
        cx: &mut Context<'_>,
        writes: Vec<(Bytes, Option<Bytes>)>,
    ) -> Vec<Result<(), SetError>> {
        let now = cx.now();
        let hashes = key_hashes(writes.iter().map(|(k, _)| &k[..]));
        let mut accepted = Vec::with_capacity(writes.len());
        let mut accepted_hashes = Vec::with_capacity(writes.len());
        let results = writes
            .into_iter()
            .zip(hashes)
            .map(|((k, v), kh)| {
                let r = self.check_write(kh, &k, v.as_ref(), now);
                if r.is_ok() {
                    accepted.push((k, v));
                    accepted_hashes.push(kh);
                }
                r
            })
            .collect();
        self.commit(cx, accepted, &accepted_hashes);
        results
    }

    /// Stamps checked writes, seals them (one batch per [`LIVE_BATCH_BYTES`] of records), applies
    /// them and floods each batch.
    /// `hashes` are the writes' keys' hashes, in the same order.
    fn commit(
        &mut self,
        cx: &mut Context<'_>,
        writes: Vec<(Bytes, Option<Bytes>)>,
        hashes: &[u64],
    ) {
        if writes.is_empty() {
            return;
        }
        let me = self.keypair.peer_id();
        // Causal order: a write sorts after every record this node holds for its keys, even one
        // stamped in the same millisecond (or by a clock ahead of ours, within max_skew), so a
        // write made after seeing a delete is never ordered before it.
        let seen = writes
            .iter()
            .zip(hashes)
            .filter_map(|((k, _), &kh)| self.store.latest_issued_hashed(kh, k))
            .max();
        let issued_at = cx
            .now()
            .max(self.last_issued)
            .max(seen.map_or(0, |t| t + 1));
        self.last_issued = issued_at;
        let lease = if self.cfg.leasing {
            ms(self.cfg.lease)
        } else {
            0
        };
        self.stats.local_writes += writes.len() as u64;
        let mut hashes = hashes;
        for slice in slices(writes, self.batch_bytes) {
            let (slice_hashes, rest) = hashes.split_at(slice.len());
            hashes = rest;
            let records = slice
                .into_iter()
                .map(|(key, value)| {
                    self.last_version = (self.last_version + 1).max(issued_at << 10);
                    let tombstone = value.is_none();
                    Record {
                        key,
                        value: value.unwrap_or_default(),
                        tombstone,
                        owner: me,
                        issued_at,
                        version: self.last_version,
                        lease_until: if tombstone {
                            issued_at
                        } else {
                            issued_at + lease
                        },
                    }
                })
                .collect();
            self.seal_and_flood(cx, records, slice_hashes);
        }
    }

    /// Seals, applies and floods `records`, whose keys' hashes are `hashes` (in order).
    fn seal_and_flood(&mut self, cx: &mut Context<'_>, records: Vec<Record>, hashes: &[u64]) {
        let (stored, wire) = if self.cfg.signed {
            record::seal(&self.keypair, &self.network_id, records)
        } else {
            record::seal_unsigned(self.keypair.peer_id(), records)
        };
        // Written relative to their flood (whose time is `now`) when every record can be.
        let now = cx.now();
        let relative = super::relative::flood_records(&stored, now);
        for (s, &kh) in stored.into_iter().zip(hashes) {
            self.merge(kh, s);
        }
        // Flooded by its owner, the batch leaves its owner out: the flood's origin says it (and
        // the signature, checked against that id, proves it).
        let wire = match relative {
            Some(flood_records) => pb::RecordBatch {
                owner: Bytes::new(),
                records: Vec::new(),
                flood_records,
                ..wire
            },
            None => pb::RecordBatch {
                owner: Bytes::new(),
                ..wire
            },
        };
        let msg = pb::SyncMessage {
            kind: Some(Kind::Live(wire)),
        };
        cx.broadcast(msg.encode_to_vec());
    }

    /// Sets one key.
    pub fn set(&mut self, cx: &mut Context<'_>, key: Bytes, value: Bytes) -> Result<(), SetError> {
        self.write(cx, vec![(key, Some(value))])
    }

    /// Deletes one key (relinquishing this node's lease on it).
    pub fn del(&mut self, cx: &mut Context<'_>, key: Bytes) -> Result<(), DelError> {
        if self.store.get(&key).is_none() {
            return Err(DelError::NotFound);
        }
        self.write(cx, vec![(key, None)]).map_err(DelError::from)
    }

    /// Deletes one key and returns its value.
    pub fn pop(&mut self, cx: &mut Context<'_>, key: Bytes) -> Result<Bytes, DelError> {
        let value = self.get(&key).ok_or(DelError::NotFound)?;
        self.del(cx, key)?;
        Ok(value)
    }

    /// Deletes some key this node may delete and returns it with its value. With leasing, keys
    /// leased by others are skipped; if only such keys exist, fails with the first one's lease.
    pub fn popitem(&mut self, cx: &mut Context<'_>) -> Result<(Bytes, Bytes), DelError> {
        let me = self.keypair.peer_id();
        let now = cx.now();
        let mut blocked = None;
        let mut pick = None;
        let mut candidates: Vec<(&[u8], &Stored)> = self.store.iter().collect();
        candidates.sort_by(|a, b| a.0.cmp(b.0));
        for (k, r) in candidates {
            match self.store.lease_against(k, me, now) {
                None => {
                    pick = Some(r.key_value_bytes());
                    break;
                }
                Some((owner, until)) => {
                    blocked.get_or_insert(DelError::LeaseHeld { owner, until });
                }
            }
        }
        let (k, v) = pick.ok_or(blocked.unwrap_or(DelError::NotFound))?;
        self.del(cx, k.clone())?;
        Ok((k, v))
    }

    /// Stores a record whose key's hash is `kh` and notes what changed. Returns whether it was
    /// stored, and whether it came within another owner's live lease on the key
    /// ([`Store::insert_noting_leases`]).
    fn merge(&mut self, kh: u64, s: Stored) -> (bool, bool) {
        let held = s.clone();
        let (change, within_lease) = self.store.insert_noting_leases(kh, s);
        (self.note(KeyOf::Record(held), change), within_lease)
    }

    /// Turns a change of the store into events; returns whether anything was stored.
    fn note(&mut self, key: KeyOf, change: Change) -> bool {
        match change {
            Change::Stale => {
                self.stats.stale += 1;
                false
            }
            Change::Known => {
                self.stats.records_known += 1;
                false
            }
            Change::Stored => true,
            Change::Updated { now, lost } => {
                if let Some(l) = lost {
                    self.events.push_back(Noted::WriteLost {
                        key,
                        loser: *l.owner(),
                        loser_issued_at: l.issued_at(),
                        winner: Some(*now.owner()),
                    });
                }
                self.events.push_back(Noted::Updated(now));
                true
            }
            Change::Deleted { lost } => {
                if let Some(l) = lost {
                    self.events.push_back(Noted::WriteLost {
                        key: key.clone(),
                        loser: *l.owner(),
                        loser_issued_at: l.issued_at(),
                        winner: None,
                    });
                }
                self.events.push_back(Noted::Deleted(key));
                true
            }
        }
    }

    /// Verifies and merges a batch; `flood_ms` is the time of the flood that brought it, if one
    /// did (its records may be written relative to it). Returns how many records were new and
    /// not in conflict with another owner's live lease (the ones worth relaying), or why it was
    /// refused.
    fn receive_batch(
        &mut self,
        batch: pb::RecordBatch,
        flood_ms: Option<u64>,
        now: u64,
    ) -> Result<Received, RecordError> {
        let limits = self.limits(now);
        let opened = match flood_ms {
            Some(t) => record::open_flooded(batch, t, &limits, &mut self.verified),
            None => record::open_with(batch, &limits, &mut self.verified),
        };
        let stored = match opened {
            Ok(s) => s,
            Err(e) => {
                *self.stats.refused.entry(format!("{e:?}")).or_insert(0) += 1;
                return Err(e);
            }
        };
        let me = self.keypair.peer_id();
        let (mut new, mut conflicts) = (0, 0);
        let hashes = key_hashes(stored.iter().map(Stored::key));
        for (s, kh) in stored.into_iter().zip(hashes) {
            if *s.owner() == me && s.issued_at() > self.last_issued {
                // Our own records from before a restart: never issue below them again.
                self.last_issued = s.issued_at();
                self.last_version = self.last_version.max(s.version());
            }
            // A write that arrives after another owner's live lease on the key: kept (history can
            // still reorder, see the store's docs) but it does not show.
            let (stored, conflict) = self.merge(kh, s);
            if stored {
                self.stats.records_received += 1;
                if conflict {
                    self.stats.lease_conflicts += 1;
                    conflicts += 1;
                } else {
                    new += 1;
                }
            }
        }
        Ok(Received { new, conflicts })
    }

    fn send(cx: &mut Context<'_>, peer: PeerId, kind: Kind) {
        cx.whisper(peer, pb::SyncMessage { kind: Some(kind) }.encode_to_vec());
    }

    /// Whether a whole dictionary we asked a peer for is on its way. Meanwhile the node asks no
    /// other peer for it, and starts and answers no descent: it lacks every key still on its way,
    /// so any other peer would push it again (a newcomer connected to three nodes received the
    /// dictionary up to three times). The repair that follows finds what is still missing.
    fn receiving_whole(&self, now: u64) -> bool {
        self.whole.is_some_and(|(_, until)| now < until)
    }

    /// Asks `peer` for its whole dictionary (we hold nothing), once per link.
    fn ask_whole(&mut self, cx: &mut Context<'_>, peer: PeerId) {
        if self.asked_whole.insert(peer) {
            self.whole = Some((peer, cx.now() + WHOLE_QUIET_MS));
            self.send_digest(cx, peer);
        }
    }

    fn send_digest(&mut self, cx: &mut Context<'_>, peer: PeerId) {
        self.stats.repairs_started += 1;
        let t = pb::SyncTree {
            level: 1,
            parents: vec![0],
            hashes: self.store.children(1, 0).to_vec(),
            key_count: self.store.key_count() as u64,
        };
        Self::send(cx, peer, Kind::Tree(t));
    }

    /// Queues every record of `keys` (with their checkpoints) for `peer`; they leave in chunks,
    /// a few per tick, so that live traffic is never stuck behind a large transfer.
    fn push_keys(
        &mut self,
        cx: &mut Context<'_>,
        peer: PeerId,
        keys: impl IntoIterator<Item = (u64, Bytes)>,
    ) {
        self.outbox.entry(peer).or_default().extend(keys);
        self.send_queued(cx);
    }

    /// Sends up to [`CHUNKS_PER_TICK`] chunks to each peer with queued keys; re-arms while any
    /// remain. A chunk holds about [`SyncConfig::transfer_chunk`] bytes of records, and never
    /// more than a frame holds (a key's checkpoint and records travel together unless they
    /// alone outgrow a frame; then they go in order over several chunks).
    fn send_queued(&mut self, cx: &mut Context<'_>) {
        let peers: Vec<PeerId> = self.outbox.keys().copied().collect();
        // Sent once per chunk: a key whose checkpoint is just this (nothing held it then) goes
        // without one of its own. Zero unless leasing.
        let store_cutoff = self.store.cutoff();
        let room = self.frame_room;
        let mut held = false;
        for peer in peers {
            for _ in 0..CHUNKS_PER_TICK {
                if cx.backlog(&peer) >= TRANSFER_WINDOW {
                    held = true;
                    break;
                }
                let Some(queue) = self.outbox.get_mut(&peer) else {
                    break;
                };
                if queue.is_empty() {
                    self.outbox.remove(&peer);
                    break;
                }
                let mut chunk = Chunk::default();
                let mut full = Vec::new();
                while chunk.record_bytes() < self.cfg.transfer_chunk {
                    let Some((kh, k)) = queue.pop_front() else {
                        break;
                    };
                    let Some(st) = self.store.key_hashed(kh, &k) else {
                        continue;
                    };
                    let (cutoff, base) = self.store.checkpoint(st);
                    let checkpoint = cutoff > 0 && (base.is_some() || cutoff > store_cutoff);
                    let mut cost = if checkpoint {
                        Chunk::checkpoint_cost(&k, base)
                    } else {
                        0
                    };
                    cost += st
                        .records()
                        .iter()
                        .map(|r| chunk.record_cost(r))
                        .sum::<usize>();
                    if !chunk.is_empty() && chunk.frame_bytes() + cost > room {
                        // The key goes first in the next chunk.
                        queue.push_front((kh, k));
                        break;
                    }
                    if checkpoint {
                        chunk.push_checkpoint(k.clone(), cutoff, base);
                    }
                    for r in st.records() {
                        if !chunk.is_empty() && chunk.frame_bytes() + chunk.record_cost(r) > room {
                            // This key alone outgrows a frame: the rest of it follows.
                            full.push(chunk.take(store_cutoff));
                        }
                        chunk.push_record(r);
                    }
                }
                if !chunk.is_empty() {
                    full.push(chunk.take(store_cutoff));
                }
                for (transfer, count, bytes) in full {
                    self.stats.records_sent_repair += count;
                    self.stats.bytes_sent_repair += bytes;
                    Self::send(cx, peer, Kind::Transfer(transfer));
                }
            }
        }
        self.outbox.retain(|_, q| !q.is_empty());
        if !self.outbox.is_empty() && !self.push_armed {
            self.push_armed = true;
            cx.set_timer(if held { WINDOW_WAIT_MS } else { 0 }, PUSH_TIMER);
        }
    }

    /// Refuses (and counts) a cutoff later than any this node could prune to by now, with the
    /// clock skew allowed.
    fn check_cutoff(&mut self, cutoff: u64, now: u64) -> Result<(), RecordError> {
        let highest =
            crate::proto::store::cutoff_at(now + ms(self.cfg.max_skew), self.cfg.horizon_ms());
        if cutoff > highest {
            *self
                .stats
                .refused
                .entry("BadCheckpoint".into())
                .or_insert(0) += 1;
            return Err(RecordError::Malformed);
        }
        Ok(())
    }

    /// A transfer's store-wide cutoff: every key it carries without a checkpoint had none then,
    /// which is what pruning our own store to it says of every key.
    fn receive_cutoff(&mut self, cutoff: u64, now: u64) -> Result<(), RecordError> {
        self.check_cutoff(cutoff, now)?;
        if self.cfg.leasing {
            self.store.prune(cutoff);
        }
        Ok(())
    }

    /// Verifies and merges a peer's checkpoint.
    fn receive_checkpoint(&mut self, cp: pb::Checkpoint, now: u64) -> Result<(), RecordError> {
        if cp.key.is_empty() || cp.key.len() > self.cfg.max_key_len {
            *self
                .stats
                .refused
                .entry("BadCheckpoint".into())
                .or_insert(0) += 1;
            return Err(RecordError::Malformed);
        }
        self.check_cutoff(cp.cutoff_ms, now)?;
        let limits = self.limits(now);
        let holder = match cp.holder {
            None => None,
            Some(batch) => match record::open_with(batch, &limits, &mut self.verified) {
                Ok(mut v) if v.len() == 1 => Some(v.remove(0)),
                Ok(_) => return Err(RecordError::Malformed),
                Err(e) => {
                    *self.stats.refused.entry(format!("{e:?}")).or_insert(0) += 1;
                    return Err(e);
                }
            },
        };
        let change = self.store.merge_checkpoint(&cp.key, cp.cutoff_ms, holder);
        self.note(KeyOf::Bytes(cp.key), change);
        Ok(())
    }

    /// Compares the peer's tree nodes with ours and descends into the ones that differ: their
    /// children one level down, or at the leaves the keys under them.
    fn on_tree(&mut self, cx: &mut Context<'_>, peer: PeerId, t: pb::SyncTree) -> Verdict {
        let level = t.level;
        let max_parents = 1usize << (4 * level.saturating_sub(1));
        if !(1..=LEVELS).contains(&level)
            || t.hashes.len() != t.parents.len() * FANOUT
            || t.parents.iter().any(|&p| p as usize >= max_parents)
        {
            return Verdict::Reject;
        }
        if level == 1 && t.key_count == 0 && self.store.key_count() > 0 {
            // A newcomer: the whole dictionary, in batch order (deterministic, so runs replay).
            let keys = batch_order_all(&self.store);
            self.push_keys(cx, peer, keys);
            return Verdict::Accept;
        }
        if self.receiving_whole(cx.now()) {
            // Later: see `receiving_whole`.
            return Verdict::Accept;
        }
        if level == 1 && t.key_count > 0 && self.store.key_count() == 0 {
            // We hold nothing: descending would list every key. Ask for the whole dictionary,
            // once per link (what we asked for may still be on its way).
            self.ask_whole(cx, peer);
            return Verdict::Accept;
        }
        let mut differing: Vec<usize> = Vec::new();
        for (i, &parent) in t.parents.iter().enumerate() {
            let theirs = &t.hashes[i * FANOUT..(i + 1) * FANOUT];
            let mine = self.store.children(level, parent as usize);
            for (c, their) in theirs.iter().enumerate() {
                if mine.get(c) != Some(their) {
                    differing.push(parent as usize * FANOUT + c);
                }
            }
        }
        if differing.is_empty() {
            return Verdict::Accept;
        }
        if level < LEVELS {
            let hashes = differing
                .iter()
                .flat_map(|&d| self.store.children(level + 1, d).iter().copied())
                .collect();
            let parents = differing.iter().map(|&d| d as u32).collect();
            let reply = pb::SyncTree {
                level: level + 1,
                parents,
                hashes,
                key_count: self.store.key_count() as u64,
            };
            Self::send(cx, peer, Kind::Tree(reply));
        } else {
            let buckets = differing
                .into_iter()
                .map(|leaf| {
                    let entries: Vec<(u64, u64)> = self
                        .store
                        .leaf_keys(leaf)
                        .map(|(h, _, st)| (h, st.digest()))
                        .collect();
                    pb::BucketKeys {
                        bucket: leaf as u32,
                        key_hashes: entries.iter().map(|e| e.0).collect(),
                        states: entries.iter().map(|e| e.1).collect(),
                    }
                })
                .collect();
            Self::send(cx, peer, Kind::Keys(pb::SyncKeyList { buckets }));
        }
        Verdict::Accept
    }

    fn on_keys(&mut self, cx: &mut Context<'_>, peer: PeerId, list: pb::SyncKeyList) -> Verdict {
        let mut push = Vec::new();
        let mut want: Vec<u64> = Vec::new();
        for bk in list.buckets {
            if bk.bucket as usize >= LEAVES || bk.key_hashes.len() != bk.states.len() {
                return Verdict::Reject;
            }
            let theirs: HashMap<u64, u64> = bk
                .key_hashes
                .iter()
                .copied()
                .zip(bk.states.iter().copied())
                .collect();
            let mut mine: HashSet<u64> = HashSet::new();
            for (h, k, st) in self.store.leaf_keys(bk.bucket as usize) {
                mine.insert(h);
                let my_state = st.digest();
                match theirs.get(&h) {
                    Some(&s) if s == my_state => {}
                    Some(_) => {
                        push.push((batch_tag(st), h, Bytes::copy_from_slice(k)));
                        want.push(h);
                    }
                    None => push.push((batch_tag(st), h, Bytes::copy_from_slice(k))),
                }
            }
            want.extend(bk.key_hashes.iter().filter(|h| !mine.contains(h)));
        }
        self.push_keys(cx, peer, sort_by_batch(push));
        if !want.is_empty() {
            want.sort_unstable();
            Self::send(cx, peer, Kind::Want(pb::SyncWant { key_hashes: want }));
        }
        Verdict::Accept
    }

    fn on_want(&mut self, cx: &mut Context<'_>, peer: PeerId, mut want: pb::SyncWant) -> Verdict {
        want.key_hashes.sort_unstable();
        want.key_hashes.dedup();
        let keys = want
            .key_hashes
            .iter()
            .filter_map(|&h| {
                let (k, st) = self.store.state_by_hash(h)?;
                Some((batch_tag(st), h, Bytes::copy_from_slice(k)))
            })
            .collect();
        self.push_keys(cx, peer, sort_by_batch(keys));
        Verdict::Accept
    }

    fn arm_repair(&mut self, cx: &mut Context<'_>) {
        if !self.repair_armed {
            self.repair_armed = true;
            let interval = ms(self.cfg.repair_interval);
            let jitter = cx.rng().gen_range(0..=interval / 4);
            cx.set_timer(interval + jitter, REPAIR_TIMER);
        }
    }
}

impl Handler for SyncMachine {
    fn protocol(&self) -> &str {
        self.protocol()
    }

    fn verifies_own_payloads(&self) -> bool {
        true
    }

    fn on_peer_connected(&mut self, cx: &mut Context<'_>, peer: PeerId) {
        // One descent per link is enough, as a descent is symmetric (each side pushes what the
        // other lacks): the lower id starts it. A node that holds nothing asks for the whole
        // dictionary instead, whoever it is.
        if self.receiving_whole(cx.now()) {
            // Later, by the repair tick: see `receiving_whole`.
        } else if self.store.key_count() == 0 {
            self.ask_whole(cx, peer);
        } else if self.keypair.peer_id() < peer {
            self.send_digest(cx, peer);
        }
        self.arm_repair(cx);
    }

    fn on_message(&mut self, cx: &mut Context<'_>, msg: InboundMessage) -> Verdict {
        let Ok(pb::SyncMessage { kind: Some(kind) }) =
            rs2p_base::wire::decode_bytes::<pb::SyncMessage>(msg.payload)
        else {
            return Verdict::Reject;
        };
        let now = cx.now();
        let flooded = msg.delivery == rs2p_mesh::Delivery::Flood;
        match kind {
            Kind::Live(mut batch) => {
                if batch.owner.is_empty() {
                    batch.owner = Bytes::copy_from_slice(msg.origin.as_bytes());
                }
                // Relayed even when every record was already here (repair may bring records
                // before their flood): in a relay tree the nodes below may have no other way
                // to get it. Only a batch whose sole news broke a live lease is not relayed.
                match self.receive_batch(batch, msg.issued_at, now) {
                    Ok(Received { new: 0, conflicts }) if conflicts > 0 => Verdict::Ignore,
                    Ok(_) => Verdict::Accept,
                    Err(_) => Verdict::Reject,
                }
            }
            // Everything else is point to point; a flooded one is a protocol violation.
            _ if flooded => Verdict::Reject,
            Kind::Transfer(t) => {
                if let Some((from, until)) = &mut self.whole {
                    if *from == msg.from && now < *until {
                        *until = now + WHOLE_QUIET_MS;
                    }
                }
                let mut verdict = Verdict::Accept;
                if t.cutoff_ms > 0 && self.receive_cutoff(t.cutoff_ms, now).is_err() {
                    verdict = Verdict::Reject;
                }
                for cp in t.checkpoints {
                    if self.receive_checkpoint(cp, now).is_err() {
                        verdict = Verdict::Reject;
                    }
                }
                for b in t.batches {
                    if self.receive_batch(b, None, now).is_err() {
                        verdict = Verdict::Reject;
                    }
                }
                verdict
            }
            Kind::Tree(t) => self.on_tree(cx, msg.from, t),
            Kind::Keys(k) => self.on_keys(cx, msg.from, k),
            Kind::Want(w) => self.on_want(cx, msg.from, w),
        }
    }

    fn on_peer_disconnected(&mut self, cx: &mut Context<'_>, peer: PeerId) {
        self.outbox.remove(&peer);
        self.asked_whole.remove(&peer);
        if self.whole.is_some_and(|(from, _)| from == peer) {
            // The whole dictionary stopped on its way: get the rest from another peer now.
            self.whole = None;
            if let Some(&other) = cx.peers().iter().find(|&&p| p != peer) {
                if self.store.key_count() == 0 {
                    self.ask_whole(cx, other);
                } else {
                    self.send_digest(cx, other);
                }
            }
        }
    }

    fn on_timer(&mut self, cx: &mut Context<'_>, token: u64) {
        if token == PUSH_TIMER {
            self.push_armed = false;
            self.send_queued(cx);
        }
        if token == REPAIR_TIMER {
            self.repair_armed = false;
            if self.cfg.leasing {
                let cutoff = crate::proto::store::cutoff_at(cx.now(), self.cfg.horizon_ms());
                self.store.prune(cutoff);
            }
            let peers = cx.peers().to_vec();
            if !peers.is_empty() && !self.receiving_whole(cx.now()) {
                let turn = match self.repair_turn {
                    Some(t) => t,
                    None => cx.rng().gen_range(0..peers.len()),
                };
                self.repair_turn = Some(turn.wrapping_add(1));
                self.send_digest(cx, peers[turn % peers.len()]);
            }
            // Keep ticking even alone, so that pruning runs.
            self.arm_repair(cx);
        }
    }
}

/// What a received batch brought: records stored and shown (or displacing what was shown), and
/// records stored after another owner's live lease on their key (kept, not shown).
struct Received {
    new: usize,
    conflicts: usize,
}

/// The most bytes of records per live batch on a mesh whose frames hold at most `max_frame_len`
/// bytes. Refuses settings whose largest write (longest key and value) would not fit in one
/// frame: such a write could never be flooded.
pub fn live_batch_bytes(cfg: &SyncConfig, max_frame_len: usize) -> Result<usize, String> {
    let room = max_frame_len.saturating_sub(FRAME_MARGIN);
    let largest = cfg.max_key_len + cfg.max_value_len + write_size(&[], None);
    if largest > room {
        return Err(format!(
            "the largest write (a {} B key and a {} B value) does not fit in a frame of \
             {max_frame_len} B: raise max_frame_len or lower max_key_len or max_value_len",
            cfg.max_key_len, cfg.max_value_len
        ));
    }
    Ok(LIVE_BATCH_BYTES.min(room))
}

/// Cuts writes, in order, into slices of at most `budget` bytes by [`write_size`] (a single
/// larger write makes a slice of its own).
pub(crate) fn slices(
    writes: Vec<(Bytes, Option<Bytes>)>,
    budget: usize,
) -> Vec<Vec<(Bytes, Option<Bytes>)>> {
    let mut out: Vec<Vec<(Bytes, Option<Bytes>)>> = Vec::new();
    let mut size = 0;
    for w in writes {
        let len = write_size(&w.0, w.1.as_deref());
        match out.last_mut() {
            Some(last) if size + len <= budget => {
                size += len;
                last.push(w);
            }
            _ => {
                size = len;
                out.push(vec![w]);
            }
        }
    }
    out
}

/// Orders keys (with their [`key_hash`](crate::proto::store::key_hash)) for a transfer so that records signed together travel
/// together: by [`batch_tag`], then the key. A chunk then carries whole batches, without their
/// leaf lists, and the receiver verifies each batch once; the order depends on the keys only,
/// so simulated runs replay exactly.
fn sort_by_batch(items: Vec<((u64, u32), u64, Bytes)>) -> Vec<(u64, Bytes)> {
    // Sorts small entries (a million keys: 24 MB, not 56) and moves each key once.
    let mut order: Vec<(u64, u32, usize)> = items
        .iter()
        .enumerate()
        .map(|(i, &((batch, place), _, _))| (batch, place, i))
        .collect();
    order.sort_unstable_by(|a, b| {
        (a.0, a.1)
            .cmp(&(b.0, b.1))
            .then_with(|| items[a.2].2.cmp(&items[b.2].2))
    });
    let mut slots: Vec<Option<(u64, Bytes)>> =
        items.into_iter().map(|(_, h, k)| Some((h, k))).collect();
    order
        .iter()
        .filter_map(|&(_, _, i)| slots[i].take())
        .collect()
}

/// [`sort_by_batch`] of every key in the store.
fn batch_order_all(store: &Store) -> Vec<(u64, Bytes)> {
    sort_by_batch(
        store
            .states_hashed()
            .map(|(h, k, st)| (batch_tag(st), h, Bytes::copy_from_slice(k)))
            .collect(),
    )
}

/// Where a key's newest record was signed: its batch (the signature's first 8 bytes) and its
/// place in it.
fn batch_tag(st: &KeyState) -> (u64, u32) {
    st.records().last().or(st.base()).map_or((0, 0), |r| {
        let mut first = [0u8; 8];
        first.copy_from_slice(&r.auth().signature[..8]);
        (u64::from_le_bytes(first), r.index())
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// `slices` keeps every write in order, fills each slice up to the budget (the next
        /// write would not have fitted), and goes over it only with a write alone.
        #[test]
        fn slices_keep_order_and_respect_the_budget(
            lens in proptest::collection::vec((1usize..40, proptest::option::of(0usize..60)), 0..60),
            budget in 1usize..200,
        ) {
            let writes: Vec<(Bytes, Option<Bytes>)> = lens
                .iter()
                .map(|&(k, v)| (Bytes::from(vec![b'k'; k]), v.map(|v| Bytes::from(vec![b'v'; v]))))
                .collect();
            let size = |w: &(Bytes, Option<Bytes>)| write_size(&w.0, w.1.as_deref());
            let out = slices(writes.clone(), budget);
            prop_assert_eq!(out.concat(), writes);
            for (i, s) in out.iter().enumerate() {
                prop_assert!(!s.is_empty());
                let total: usize = s.iter().map(size).sum();
                prop_assert!(total <= budget || s.len() == 1, "slice {i}: {total} > {budget}");
                if let Some(next) = out.get(i + 1) {
                    prop_assert!(total + size(&next[0]) > budget, "slice {i} could have taken more");
                }
            }
        }
    }
}
