//! [`KeyEntry`] ⇄ the on-disk messages of `proto/rs2p/v1/store.proto`.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use rs2p_base::wire::pb;
use rs2p_base::{Hash256, PeerId, Signature};
use rs2p_record::{reopen, BatchAuth, Stored};

/// Everything kept for one key: for the sync socket its checkpoint and the records after it,
/// for the chord socket its one newest record (`cutoff` 0, no `base`).
#[derive(Debug, Clone, Default)]
pub struct KeyEntry {
    /// Records issued before this (Unix ms) are folded into `base`.
    pub cutoff: u64,
    /// The checkpoint's holder.
    pub base: Option<Stored>,
    /// The records kept after the checkpoint.
    pub records: Vec<Stored>,
}

impl KeyEntry {
    /// Every record of the entry, the checkpoint's first.
    pub fn all(&self) -> impl Iterator<Item = &Stored> {
        self.base.iter().chain(&self.records)
    }
}

/// The proof of a record signed alone: its batch is the record's own leaf (not stored in the
/// `batches` table).
fn alone(owner: &[u8], signature: Signature, leaf: Hash256) -> Option<Arc<BatchAuth>> {
    Some(Arc::new(BatchAuth {
        owner: PeerId::from_slice(owner)?,
        signature,
        leaves: vec![leaf],
    }))
}

pub(crate) fn batch_to_disk(auth: &BatchAuth) -> pb::DiskBatch {
    pb::DiskBatch {
        owner: Bytes::copy_from_slice(auth.owner.as_bytes()),
        leaves: auth.leaves.concat().into(),
    }
}

pub(crate) fn batch_from_disk(signature: &[u8], b: pb::DiskBatch) -> Option<BatchAuth> {
    let owner = PeerId::from_slice(&b.owner)?;
    let signature: Signature = signature.try_into().ok()?;
    if b.leaves.is_empty() || b.leaves.len() % 32 != 0 {
        return None;
    }
    let leaves = b
        .leaves
        .chunks_exact(32)
        .map(|c| Hash256::try_from(c).ok())
        .collect::<Option<Vec<_>>>()?;
    Some(BatchAuth {
        owner,
        signature,
        leaves,
    })
}

fn record_to_disk(s: &Stored) -> pb::DiskRecord {
    pb::DiskRecord {
        raw: s.raw_bytes(),
        batch: Bytes::copy_from_slice(&s.auth().signature),
        index: s.index(),
        alone: s.auth().leaves.len() == 1,
        leaf: if s.auth().leaves.len() == 1 {
            Bytes::copy_from_slice(s.leaf())
        } else {
            Bytes::new()
        },
        owner: if s.auth().leaves.len() == 1 {
            Bytes::copy_from_slice(s.auth().owner.as_bytes())
        } else {
            Bytes::new()
        },
    }
}

pub(crate) fn key_to_disk(e: &KeyEntry) -> pb::DiskKey {
    pb::DiskKey {
        cutoff_ms: e.cutoff,
        base: e.base.as_ref().map(record_to_disk),
        records: e.records.iter().map(record_to_disk).collect(),
    }
}

/// Rebuilds an entry; `None` when a record is damaged or names a batch that is not stored.
pub(crate) fn key_from_disk(
    key: &[u8],
    d: pb::DiskKey,
    batches: &HashMap<Signature, Arc<BatchAuth>>,
) -> Option<KeyEntry> {
    let one = |r: pb::DiskRecord| -> Option<Stored> {
        let sig: Signature = r.batch.as_ref().try_into().ok()?;
        let auth = if r.alone {
            let leaf = Hash256::try_from(r.leaf.as_ref()).ok()?;
            alone(&r.owner, sig, leaf)?
        } else {
            batches.get(&sig)?.clone()
        };
        let s = reopen(r.raw, auth, r.index).ok()?;
        (s.key() == key).then_some(s)
    };
    Some(KeyEntry {
        cutoff: d.cutoff_ms,
        base: match d.base {
            Some(b) => Some(one(b)?),
            None => None,
        },
        records: d.records.into_iter().map(one).collect::<Option<Vec<_>>>()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rs2p_base::Keypair;
    use rs2p_record::{seal, Record};

    fn stored(kp: &Keypair, keys: &[(Vec<u8>, Vec<u8>)], t: u64) -> Vec<Stored> {
        let records = keys
            .iter()
            .enumerate()
            .map(|(i, (k, v))| Record {
                key: Bytes::copy_from_slice(k),
                value: Bytes::copy_from_slice(v),
                tombstone: false,
                owner: kp.peer_id(),
                issued_at: t,
                version: (t << 10) + i as u64,
                lease_until: t,
            })
            .collect();
        seal(kp, &[7; 32], records).0
    }

    proptest! {
        /// Any entry survives the disk format unchanged, and any damage to a record's bytes is
        /// refused rather than loaded.
        #[test]
        fn entries_round_trip_and_damage_is_refused(
            keys in proptest::collection::btree_map(
                proptest::collection::vec(any::<u8>(), 1..8),
                proptest::collection::vec(any::<u8>(), 0..16), 1..6),
            cutoff in any::<u64>(),
            flip in any::<(usize, u8)>(),
        ) {
            let kp = Keypair::from_seed([3; 32]);
            let keys: Vec<_> = keys.into_iter().collect();
            let all = stored(&kp, &keys, 1_000);
            let auth = all[0].auth().clone();
            let sig = auth.signature;
            let disk_batch = batch_to_disk(&auth);
            let back = batch_from_disk(&sig, disk_batch).expect("batch decodes");
            prop_assert_eq!(&back.leaves, &auth.leaves);
            let batches = HashMap::from([(sig, Arc::new(back))]);
            let s = &all[0];
            let entry = KeyEntry { cutoff, base: None, records: vec![s.clone()] };
            let disk = key_to_disk(&entry);
            let got = key_from_disk(&keys[0].0, disk.clone(), &batches).expect("entry decodes");
            prop_assert_eq!(got.cutoff, cutoff);
            prop_assert_eq!(got.records[0].record(), s.record());
            prop_assert_eq!(got.records[0].leaf(), s.leaf());
            // A record signed alone needs no stored batch.
            let no_batches = HashMap::new();
            prop_assert_eq!(
                key_from_disk(&keys[0].0, disk.clone(), &no_batches).is_some(),
                keys.len() == 1
            );
            // Another key's name, or one flipped bit of the record, is refused.
            let mut other = keys[0].0.clone();
            other.push(0);
            prop_assert!(key_from_disk(&other, disk.clone(), &batches).is_none());
            let mut bad = disk;
            let mut raw = bad.records[0].raw.to_vec();
            let at = flip.0 % raw.len();
            raw[at] ^= flip.1.max(1);
            bad.records[0].raw = raw.into();
            prop_assert!(key_from_disk(&keys[0].0, bad, &batches).is_none());
        }
    }
}
