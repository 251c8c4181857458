//! One chunk of a transfer (join or repair): checkpoints and records, with a bound on the bytes
//! of the frame that will carry it.
//!
//! A record travels with its batch's signature, and a record sent without the rest of its batch
//! also carries every leaf hash of that batch (32 bytes per record of the batch), so that the
//! signature can be checked. A chunk counted by its records alone could therefore be many times
//! larger on the wire: a few records from each of several large batches carry all their
//! batches' leaves. A frame over the mesh's limit is not sent at all, and the keys in it would
//! never arrive (repair would build the same chunk again). [`Chunk`] counts an upper bound of
//! the encoded size, leaves included, so the transfer can close a chunk before it outgrows a
//! frame.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use rs2p_base::wire::pb;

use super::record::{self, BatchAuth, Stored};

/// Bytes a record adds besides its own: its field's tag and length, and its index.
const RECORD_OVERHEAD: usize = 12;
/// Bytes a batch adds besides its records and leaves: its field's tag and length, the owner,
/// the signature and the index list's tag and length.
const BATCH_OVERHEAD: usize = 6 + 34 + 66 + 6;
/// Bytes per leaf hash: tag, length and 32 bytes.
const LEAF_BYTES: usize = 34;
/// Bytes a checkpoint adds besides its key and holder: tags, lengths and the cutoff.
const CHECKPOINT_OVERHEAD: usize = 6 + 6 + 11 + 6;
/// Bytes of the transfer's own fields (the store-wide cutoff).
const TRANSFER_OVERHEAD: usize = 11;

fn batch_cost(auth: &BatchAuth) -> usize {
    BATCH_OVERHEAD + LEAF_BYTES * auth.leaves.len()
}

/// A transfer chunk being filled. See the [module docs](self).
#[derive(Default)]
pub(crate) struct Chunk {
    records: Vec<Stored>,
    checkpoints: Vec<pb::Checkpoint>,
    /// Bytes of the records' own encodings.
    record_bytes: usize,
    /// An upper bound of the chunk's encoded size.
    frame_bytes: usize,
    /// The batches (by address) whose signature and leaves the chunk already counts.
    batches: HashSet<usize>,
}

fn batch_id(s: &Stored) -> usize {
    Arc::as_ptr(s.auth()) as usize
}

impl Chunk {
    /// Whether nothing was added.
    pub(crate) fn is_empty(&self) -> bool {
        self.records.is_empty() && self.checkpoints.is_empty()
    }

    /// Bytes of the records added (their own encodings).
    pub(crate) fn record_bytes(&self) -> usize {
        self.record_bytes
    }

    /// An upper bound of the encoded chunk's size.
    pub(crate) fn frame_bytes(&self) -> usize {
        TRANSFER_OVERHEAD + self.frame_bytes
    }

    /// What adding `s` would add to [`Chunk::frame_bytes`].
    pub(crate) fn record_cost(&self, s: &Stored) -> usize {
        let batch = if self.batches.contains(&batch_id(s)) {
            0
        } else {
            batch_cost(s.auth())
        };
        s.raw().len() + RECORD_OVERHEAD + batch
    }

    /// What adding a checkpoint for `key` held by `holder` would add to [`Chunk::frame_bytes`]
    /// (the holder travels in a batch of its own).
    pub(crate) fn checkpoint_cost(key: &[u8], holder: Option<&Stored>) -> usize {
        CHECKPOINT_OVERHEAD
            + key.len()
            + holder.map_or(0, |h| {
                h.raw().len() + RECORD_OVERHEAD + batch_cost(h.auth())
            })
    }

    /// Adds a record.
    pub(crate) fn push_record(&mut self, s: &Stored) {
        self.frame_bytes += self.record_cost(s);
        self.record_bytes += s.raw().len();
        self.batches.insert(batch_id(s));
        self.records.push(s.clone());
    }

    /// Adds a key's checkpoint: its cutoff and the record that held the key then, if any.
    pub(crate) fn push_checkpoint(&mut self, key: Bytes, cutoff: u64, holder: Option<&Stored>) {
        self.frame_bytes += Self::checkpoint_cost(&key, holder);
        if let Some(h) = holder {
            self.record_bytes += h.raw().len();
        }
        self.checkpoints.push(pb::Checkpoint {
            key,
            cutoff_ms: cutoff,
            holder: holder.map(|b| record::regroup([b]).remove(0)),
        });
    }

    /// The chunk as a transfer, with the store-wide cutoff `cutoff_ms`; and the records it
    /// carries and their bytes, for the counters. Leaves the chunk empty.
    pub(crate) fn take(&mut self, cutoff_ms: u64) -> (pb::SyncTransfer, u64, u64) {
        let chunk = std::mem::take(self);
        let bytes = chunk.records.iter().map(|r| r.raw().len() as u64).sum();
        let count = chunk.records.len() as u64;
        let transfer = pb::SyncTransfer {
            batches: record::regroup(chunk.records.iter()),
            checkpoints: chunk.checkpoints,
            cutoff_ms,
        };
        (transfer, count, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use prost::Message;
    use rs2p_base::Keypair;

    use crate::proto::record::{seal, Record};

    /// Batches of records (sizes chosen by the strategy) by one signer.
    fn batches(sizes: &[Vec<(usize, usize)>]) -> Vec<Vec<Stored>> {
        let kp = Keypair::from_seed([3; 32]);
        let mut version = 0;
        sizes
            .iter()
            .map(|batch| {
                let records = batch
                    .iter()
                    .map(|&(k, v)| {
                        version += 1;
                        Record {
                            key: Bytes::from(format!("{version:0k$}", k = k.max(1))),
                            value: Bytes::from(vec![b'v'; v]),
                            tombstone: false,
                            owner: kp.peer_id(),
                            issued_at: 1_700_000_000_000,
                            version,
                            lease_until: 1_700_000_000_000,
                        }
                    })
                    .collect();
                seal(&kp, &[0; 32], records).0
            })
            .collect()
    }

    proptest! {
        /// Whatever records (from whole or partial batches) and checkpoints a chunk holds, its
        /// encoding is never larger than `frame_bytes` says.
        #[test]
        fn frame_bytes_bounds_the_encoded_size(
            sizes in prop::collection::vec(
                prop::collection::vec((1usize..40, 0usize..300), 1..60),
                1..6,
            ),
            picks in prop::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>(), 0u8..4), 0..80),
        ) {
            let all = batches(&sizes);
            let mut chunk = Chunk::default();
            for (b, r, kind) in picks {
                let batch = &all[b.index(all.len())];
                let s = &batch[r.index(batch.len())];
                match kind {
                    0 => chunk.push_checkpoint(Bytes::copy_from_slice(s.key()), 1_700_000_000_000, Some(s)),
                    1 => chunk.push_checkpoint(Bytes::copy_from_slice(s.key()), 1_700_000_000_000, None),
                    _ => chunk.push_record(s),
                }
            }
            let bound = chunk.frame_bytes();
            let (transfer, _, _) = chunk.take(u64::MAX);
            let encoded = pb::SyncMessage {
                kind: Some(pb::sync_message::Kind::Transfer(transfer)),
            }
            .encoded_len();
            // The message's own tag and length (6 bytes at most) are in the frame margin.
            prop_assert!(encoded <= bound + 6, "{encoded} > {bound}");
        }
    }
}
