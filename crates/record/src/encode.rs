//! `Record` and `FloodRecord` encoded straight from borrowed fields, with prost's primitives.
//!
//! prost's generated structs own their bytes fields as `Bytes`, so encoding a record through them
//! clones the key and the value: for a `Bytes` made from a `Vec` (what a user's write usually
//! is), the first clone allocates a shared header. A node encodes each write twice (its signed
//! form and its flood form) and a receiver rebuilds each flooded record once, so these
//! encoders write the same bytes from slices, into one buffer per batch, and say where the key
//! and the value landed. The property tests check them byte for byte against prost's.

use bytes::{BufMut, Bytes};
use prost::encoding::{encode_key, encode_varint, WireType};

/// Where the key and the value of an encoded record lie in its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Spans {
    /// Offset and length of the key.
    pub(crate) key: (usize, usize),
    /// Offset and length of the value (`(0, 0)` when it is empty).
    pub(crate) value: (usize, usize),
}

/// An encoded record's fields beside its key and value, and where those lie in its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Laid {
    pub(crate) spans: Spans,
    pub(crate) tombstone: bool,
    pub(crate) issued_at_ms: u64,
    pub(crate) version: u64,
    pub(crate) lease_ms: u64,
}

/// The fields of a `Record` message.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecordParts<'a> {
    pub(crate) key: &'a [u8],
    pub(crate) value: &'a [u8],
    pub(crate) tombstone: bool,
    pub(crate) issued_at_ms: u64,
    pub(crate) version: u64,
    pub(crate) lease_ms: u64,
}

fn put_bytes(tag: u32, b: &[u8], buf: &mut Vec<u8>, start: usize) -> (usize, usize) {
    if b.is_empty() {
        return (0, 0);
    }
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(b.len() as u64, buf);
    let at = buf.len() - start;
    buf.put_slice(b);
    (at, b.len())
}

fn put_u64(tag: u32, v: u64, buf: &mut Vec<u8>) {
    if v != 0 {
        encode_key(tag, WireType::Varint, buf);
        encode_varint(v, buf);
    }
}

fn put_bool(tag: u32, v: bool, buf: &mut Vec<u8>) {
    if v {
        encode_key(tag, WireType::Varint, buf);
        buf.push(1);
    }
}

/// Appends the encoding of a `Record` with these fields to `buf` (exactly what prost writes for
/// `pb::Record`); the spans are relative to where it starts.
pub(crate) fn record(f: &RecordParts<'_>, buf: &mut Vec<u8>) -> Laid {
    let start = buf.len();
    let key = put_bytes(1, f.key, buf, start);
    let value = put_bytes(2, f.value, buf, start);
    put_bool(3, f.tombstone, buf);
    put_u64(5, f.issued_at_ms, buf);
    put_u64(6, f.version, buf);
    put_u64(8, f.lease_ms, buf);
    Laid {
        spans: Spans { key, value },
        tombstone: f.tombstone,
        issued_at_ms: f.issued_at_ms,
        version: f.version,
        lease_ms: f.lease_ms,
    }
}

/// Appends the encoding of a `FloodRecord` to `buf` (exactly what prost writes).
#[allow(clippy::too_many_arguments)]
pub(crate) fn flood_record(
    key: &[u8],
    value: &[u8],
    tombstone: bool,
    after_ms: i64,
    version_after: u64,
    lease_s: u64,
    buf: &mut Vec<u8>,
) {
    let start = buf.len();
    put_bytes(1, key, buf, start);
    put_bytes(2, value, buf, start);
    put_bool(3, tombstone, buf);
    // sint64: zigzag.
    put_u64(4, ((after_ms << 1) ^ (after_ms >> 63)) as u64, buf);
    put_u64(5, version_after, buf);
    put_u64(6, lease_s, buf);
}

/// `buf` cut at `ends` (increasing offsets, the last one its length), as slices that share it.
pub(crate) fn split(buf: Vec<u8>, ends: &[usize]) -> Vec<Bytes> {
    let buf = Bytes::from(buf);
    let mut start = 0;
    ends.iter()
        .map(|&end| buf.slice(std::mem::replace(&mut start, end)..end))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rs2p_base::wire::pb;

    fn small_or_any() -> impl Strategy<Value = u64> {
        prop_oneof![Just(0u64), 0u64..300, any::<u64>()]
    }

    proptest! {
        #[test]
        fn a_record_encodes_as_prost_encodes_it(
            key in prop::collection::vec(any::<u8>(), 0..200),
            value in prop::collection::vec(any::<u8>(), 0..200),
            tombstone in any::<bool>(),
            issued_at_ms in small_or_any(),
            version in small_or_any(),
            lease_ms in small_or_any(),
            prefix in prop::collection::vec(any::<u8>(), 0..5),
        ) {
            let want = rs2p_base::wire::encode(&pb::Record {
                key: Bytes::from(key.clone()),
                value: Bytes::from(value.clone()),
                tombstone,
                issued_at_ms,
                version,
                lease_ms,
            });
            let mut buf = prefix.clone();
            let spans = record(
                &RecordParts { key: &key, value: &value, tombstone, issued_at_ms, version, lease_ms },
                &mut buf,
            ).spans;
            let got = &buf[prefix.len()..];
            prop_assert_eq!(got, &want[..]);
            prop_assert_eq!(&got[spans.key.0..][..spans.key.1], &key[..]);
            prop_assert_eq!(&got[spans.value.0..][..spans.value.1], &value[..]);
        }

        #[test]
        fn a_flood_record_encodes_as_prost_encodes_it(
            key in prop::collection::vec(any::<u8>(), 0..200),
            value in prop::collection::vec(any::<u8>(), 0..200),
            tombstone in any::<bool>(),
            after_ms in prop_oneof![Just(0i64), -300i64..300, any::<i64>()],
            version_after in small_or_any(),
            lease_s in small_or_any(),
        ) {
            let want = rs2p_base::wire::encode(&pb::FloodRecord {
                key: Bytes::from(key.clone()),
                value: Bytes::from(value.clone()),
                tombstone,
                after_ms,
                version_after,
                lease_s,
            });
            let mut buf = Vec::new();
            flood_record(&key, &value, tombstone, after_ms, version_after, lease_s, &mut buf);
            prop_assert_eq!(&buf[..], &want[..]);
        }
    }
}
