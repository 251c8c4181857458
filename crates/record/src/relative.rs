//! Records written relative to the flood that carries them (`FloodRecord`).
//!
//! A live batch is flooded the moment its records are written, so a record's time is usually the
//! flood's and its version is its time × 1024 (the first version of that millisecond). Written
//! relative to the flood, both are then absent and the lease is in seconds: 16–18 bytes less per
//! record. The receiver rebuilds the [`crate::Record`]'s exact encoding, which is what the batch's
//! leaves (and so its signature) are over, before anything is checked.

use bytes::Bytes;
use rs2p_base::wire::pb;

use crate::{encode, RecordError, Stored};

/// A record's first version in a millisecond is its time times this.
const VERSIONS_PER_MS: u64 = 1024;

/// `stored`'s record relative to a flood issued at `flood_ms`, encoded, if it can be written so:
/// its version is at least its time × 1024 and its lease a whole number of seconds.
/// `stored.raw()` must be the record's own encoding, as [`crate::seal`] makes it; [`rebuild`]
/// then gives back exactly `stored.raw()`.
pub fn flood_record(stored: &Stored, flood_ms: u64) -> Option<Bytes> {
    let mut buf = Vec::new();
    relative_into(stored, flood_ms, &mut buf)?;
    Some(buf.into())
}

/// [`flood_record`] of each of `stored`, in one buffer; `None` unless every one can be written
/// relative to the flood.
pub fn flood_records(stored: &[Stored], flood_ms: u64) -> Option<Vec<Bytes>> {
    let mut buf = Vec::with_capacity(stored.iter().map(|s| s.raw().len()).sum());
    let mut ends = Vec::with_capacity(stored.len());
    for s in stored {
        relative_into(s, flood_ms, &mut buf)?;
        ends.push(buf.len());
    }
    Some(encode::split(buf, &ends))
}

fn relative_into(stored: &Stored, flood_ms: u64, buf: &mut Vec<u8>) -> Option<()> {
    let version_after = stored
        .version()
        .checked_sub(stored.issued_at().checked_mul(VERSIONS_PER_MS)?)?;
    let lease_ms = stored.lease_until().checked_sub(stored.issued_at())?;
    if lease_ms % 1000 != 0 {
        return None;
    }
    let after_ms = i64::try_from(stored.issued_at())
        .ok()?
        .checked_sub(i64::try_from(flood_ms).ok()?)?;
    let start = buf.len();
    encode::flood_record(
        stored.key(),
        stored.value(),
        stored.tombstone(),
        after_ms,
        version_after,
        lease_ms / 1000,
        buf,
    );
    debug_assert_eq!(
        rebuild(Bytes::copy_from_slice(&buf[start..]), flood_ms)
            .ok()
            .as_deref(),
        Some(stored.raw()),
        "a relative record rebuilds to the bytes its owner signed"
    );
    Some(())
}

/// The encoded `Record` that `flood_record` (an encoded `FloodRecord`) stands for in a flood
/// issued at `flood_ms`. [`RecordError::Malformed`] if it does not decode or its numbers
/// overflow; everything else is checked on the rebuilt record as on any other.
pub fn rebuild(flood_record: Bytes, flood_ms: u64) -> Result<Bytes, RecordError> {
    let mut buf = Vec::new();
    rebuild_into(flood_record, flood_ms, &mut buf)?;
    Ok(buf.into())
}

/// [`rebuild`] of each of `flood_records`, in one buffer, with each rebuilt record's fields (so
/// it need not be decoded again).
pub(crate) fn rebuild_laid(
    flood_records: &[Bytes],
    flood_ms: u64,
) -> Result<(Vec<Bytes>, Vec<encode::Laid>), RecordError> {
    let mut buf = Vec::with_capacity(flood_records.iter().map(|f| f.len() + 20).sum());
    let mut ends = Vec::with_capacity(flood_records.len());
    let mut laid = Vec::with_capacity(flood_records.len());
    for f in flood_records {
        laid.push(rebuild_into(f.clone(), flood_ms, &mut buf)?);
        ends.push(buf.len());
    }
    Ok((encode::split(buf, &ends), laid))
}

fn rebuild_into(
    flood_record: Bytes,
    flood_ms: u64,
    buf: &mut Vec<u8>,
) -> Result<encode::Laid, RecordError> {
    let f: pb::FloodRecord =
        rs2p_base::wire::decode_bytes(flood_record).map_err(|_| RecordError::Malformed)?;
    let issued_at_ms = flood_ms
        .checked_add_signed(f.after_ms)
        .ok_or(RecordError::Malformed)?;
    let version = issued_at_ms
        .checked_mul(VERSIONS_PER_MS)
        .and_then(|v| v.checked_add(f.version_after))
        .ok_or(RecordError::Malformed)?;
    let lease_ms = f.lease_s.checked_mul(1000).ok_or(RecordError::Malformed)?;
    Ok(encode::record(
        &encode::RecordParts {
            key: &f.key,
            value: &f.value,
            tombstone: f.tombstone,
            issued_at_ms,
            version,
            lease_ms,
        },
        buf,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{seal, seal_unsigned, Record};
    use proptest::prelude::*;
    use rs2p_base::Keypair;

    fn record(kp: &Keypair, issued_at: u64, version: u64, lease: u64, tombstone: bool) -> Record {
        Record {
            key: Bytes::from_static(b"key"),
            value: if tombstone {
                Bytes::new()
            } else {
                Bytes::from_static(b"value")
            },
            tombstone,
            owner: kp.peer_id(),
            issued_at,
            version,
            lease_until: issued_at + lease,
        }
    }

    proptest! {
        #[test]
        fn a_relative_record_rebuilds_to_the_signed_bytes(
            issued_at in 0u64..(1 << 53),
            flood_ms in 0u64..(1 << 53),
            version_after in 0u64..(1 << 20),
            lease_s in 0u64..100_000,
            tombstone: bool,
        ) {
            let kp = Keypair::from_seed([3; 32]);
            let r = record(&kp, issued_at, issued_at * 1024 + version_after, lease_s * 1000, tombstone);
            let (stored, _) = seal(&kp, &[1; 32], vec![r]);
            let rel = flood_record(&stored[0], flood_ms).expect("representable");
            prop_assert_eq!(rebuild(rel, flood_ms).unwrap(), stored[0].raw_bytes());
        }

        #[test]
        fn a_batch_of_relative_records_is_each_one_alone(
            writes in proptest::collection::vec((0u64..1000, 0u64..(1 << 20), 0u64..100, any::<bool>()), 1..20),
            relative_ok in any::<bool>(),
        ) {
            let kp = Keypair::from_seed([3; 32]);
            let t = 1_764_000_000_000;
            let records: Vec<Record> = writes
                .iter()
                .enumerate()
                .map(|(i, &(dt, va, lease_s, tomb))| {
                    let mut r = record(&kp, t + dt, (t + dt) * 1024 + va, lease_s * 1000, tomb);
                    r.key = Bytes::from(format!("key{i}"));
                    // One record that cannot be written relative spoils the whole batch.
                    if !relative_ok && i == writes.len() - 1 {
                        r.lease_until += 1;
                    }
                    r
                })
                .collect();
            let (stored, wire) = seal(&kp, &[1; 32], records);
            prop_assert_eq!(wire.records.iter().map(|r| &r[..]).collect::<Vec<_>>(),
                stored.iter().map(|s| s.raw()).collect::<Vec<_>>());
            let one_by_one: Option<Vec<Bytes>> =
                stored.iter().map(|s| flood_record(s, t)).collect();
            let batch = flood_records(&stored, t);
            prop_assert_eq!(&batch, &one_by_one);
            prop_assert_eq!(batch.is_some(), relative_ok);
            if let Some(rel) = batch {
                prop_assert_eq!(rebuild_laid(&rel, t).unwrap().0, wire.records);
            }
        }

        #[test]
        fn rebuild_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64), flood_ms: u64) {
            if let Ok(raw) = rebuild(Bytes::from(bytes), flood_ms) {
                prop_assert!(rs2p_base::wire::decode_bytes::<pb::Record>(raw).is_ok());
            }
        }
    }

    #[test]
    fn the_usual_record_leaves_out_its_time_and_version() {
        let kp = Keypair::from_seed([4; 32]);
        let t = 1_764_000_000_000;
        let r = record(&kp, t, t * 1024, 3_600_000, false);
        let (stored, _) = seal_unsigned(kp.peer_id(), vec![r]);
        let rel = flood_record(&stored[0], t).unwrap();
        // key 5, value 7, lease_s 3: the time (7 B) and the version (9 B) are gone.
        assert_eq!(rel.len(), 5 + 7 + 3);
        assert_eq!(stored[0].raw().len(), 5 + 7 + 7 + 9 + 5);
    }

    #[test]
    fn records_that_cannot_be_written_relative_are_not() {
        let kp = Keypair::from_seed([4; 32]);
        let t = 1_764_000_000_000;
        // A version below the time's first (another implementation's numbering), a lease that is
        // not whole seconds, a time that overflows the version.
        for r in [
            record(&kp, t, 7, 0, false),
            record(&kp, t, t * 1024, 1500, false),
            record(&kp, u64::MAX / 2, u64::MAX, 0, false),
        ] {
            let (stored, _) = seal_unsigned(kp.peer_id(), vec![r]);
            assert_eq!(flood_record(&stored[0], t), None);
        }
    }

    #[test]
    fn a_flooded_batch_opens_from_its_relative_records_as_from_its_plain_ones() {
        use crate::{open_flooded, open_with, Limits, VerifiedBatches};
        let kp = Keypair::from_seed([6; 32]);
        let t = 1_764_000_000_000;
        let records = (0..3)
            .map(|i| record(&kp, t + i, (t + i) * 1024, 60_000, i == 2))
            .collect();
        let (stored, plain) = seal(&kp, &[1; 32], records);
        let relative = pb::RecordBatch {
            records: vec![],
            flood_records: stored.iter().map(|s| flood_record(s, t).unwrap()).collect(),
            ..plain.clone()
        };
        let limits = Limits {
            network_id: [1; 32],
            now: t,
            max_skew: 10_000,
            max_lease: 3_600_000,
            max_key_len: 64,
            max_value_len: 64,
            accept_unsigned: false,
        };
        let raws = |v: Vec<Stored>| v.iter().map(|s| s.raw_bytes()).collect::<Vec<_>>();
        let mut verified = VerifiedBatches::default();
        let from_plain = open_with(plain.clone(), &limits, &mut verified).unwrap();
        let from_relative = open_flooded(
            relative.clone(),
            t,
            &limits,
            &mut VerifiedBatches::default(),
        )
        .unwrap();
        // The rebuilt records' fields are taken from the rebuilding, not decoded again: they
        // must be what decoding gives.
        for (r, p) in from_relative.iter().zip(&from_plain) {
            assert_eq!(r.record(), p.record());
            assert_eq!((r.leaf(), r.index()), (p.leaf(), p.index()));
        }
        assert_eq!(raws(from_relative), raws(from_plain));
        // And checked against the limits as decoded ones are.
        let strict = Limits {
            max_value_len: 4,
            ..limits
        };
        assert_eq!(
            open_flooded(
                relative.clone(),
                t,
                &strict,
                &mut VerifiedBatches::default()
            )
            .err(),
            Some(RecordError::TooLarge)
        );
        let early = Limits {
            now: t - 20_000,
            ..limits
        };
        assert_eq!(
            open_flooded(relative.clone(), t, &early, &mut VerifiedBatches::default()).err(),
            Some(RecordError::FutureTimestamp)
        );
        // Relative records anywhere but through `open_flooded`, or beside plain ones: refused.
        assert_eq!(
            open_with(relative.clone(), &limits, &mut verified).err(),
            Some(RecordError::Malformed)
        );
        let both = pb::RecordBatch {
            records: plain.records.clone(),
            ..relative
        };
        assert_eq!(
            open_flooded(both, t, &limits, &mut verified).err(),
            Some(RecordError::Malformed)
        );
    }

    #[test]
    fn overflowing_numbers_are_malformed() {
        let huge = |f: pb::FloodRecord| rebuild(rs2p_base::wire::encode(&f), u64::MAX - 5);
        let base = pb::FloodRecord {
            key: Bytes::from_static(b"k"),
            ..Default::default()
        };
        for f in [
            pb::FloodRecord {
                after_ms: 10,
                ..base.clone()
            },
            // The time fits, its version does not.
            pb::FloodRecord {
                after_ms: -1,
                ..base.clone()
            },
        ] {
            assert_eq!(huge(f), Err(RecordError::Malformed));
        }
        let lease = pb::FloodRecord {
            lease_s: u64::MAX / 10,
            ..base.clone()
        };
        assert_eq!(
            rebuild(rs2p_base::wire::encode(&lease), 5),
            Err(RecordError::Malformed)
        );
        let before_epoch = pb::FloodRecord {
            after_ms: -6,
            ..base
        };
        assert_eq!(
            rebuild(rs2p_base::wire::encode(&before_epoch), 5),
            Err(RecordError::Malformed)
        );
    }
}
