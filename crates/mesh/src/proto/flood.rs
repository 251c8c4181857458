//! Signing, identifying and checking flooded messages.

use bytes::Bytes;
use rs2p_base::wire::pb;
use rs2p_base::{Keypair, PeerId};

use super::seen_cache::MsgId;

const SIGN_DOMAIN: &[u8] = b"rs2p/v1/flood";

/// The id of a flood: a hash of its body bytes exactly as the origin encoded them (a flat or
/// compact flood's are rebuilt first), so a forger can never make a message that takes a real
/// one's id.
///
/// The id never goes on the wire (each node computes it for its own seen-cache), so nodes need
/// not agree on how. It is BLAKE3, keyed for this use, rather than the BLAKE2s of the
/// protocol's other hashes: a record batch's flood is tens of KiB, which BLAKE3 hashes 1 KiB
/// chunks at a time side by side (with BLAKE2s the id took 6% of a receiving node's CPU in the
/// benchmark's P1).
pub fn msg_id(body: &[u8]) -> MsgId {
    static KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    let key = KEY.get_or_init(|| blake3::derive_key("rs2p v1 flood id", b""));
    let h = blake3::keyed_hash(key, body);
    let mut first = [0u8; 16];
    first.copy_from_slice(&h.as_bytes()[..16]);
    u128::from_le_bytes(first)
}

fn signed_bytes(network_id: &[u8; 32], body: &[u8]) -> Vec<u8> {
    [SIGN_DOMAIN, network_id.as_slice(), body].concat()
}

/// The origin's signature over a body.
pub(crate) fn sign(keypair: &Keypair, network_id: &[u8; 32], body: &[u8]) -> Bytes {
    Bytes::copy_from_slice(&keypair.sign(&signed_bytes(network_id, body)))
}

/// Whether `signature` is `origin`'s over `body` in this network.
pub(crate) fn verify(
    origin: &PeerId,
    network_id: &[u8; 32],
    body: &[u8],
    signature: &[u8],
) -> bool {
    origin.verify(&signed_bytes(network_id, body), signature)
}

/// A flood body.
pub(crate) fn body(
    origin: &PeerId,
    seq: u64,
    issued_at_ms: u64,
    protocol: &str,
    payload: Bytes,
) -> pb::FloodBody {
    pb::FloodBody {
        origin: Bytes::copy_from_slice(origin.as_bytes()),
        seq,
        issued_at_ms,
        protocol: protocol.to_owned(),
        payload,
    }
}

/// The handshake feature bit of compact floods (`Flood.protocol_ref`, `Flood.origin_is_sender`):
/// a node sends them only to peers that set it.
pub const FEATURE_COMPACT_FLOODS: u32 = 1;

/// The handshake feature bit of flat floods (`MeshFrame.flat_flood`): a node sends floods so
/// to peers that set it, and whole to the others.
pub const FEATURE_FLAT_FLOODS: u32 = 2;

/// The wire features this mesh understands, for its handshakes.
pub const FEATURES: u32 = FEATURE_COMPACT_FLOODS | FEATURE_FLAT_FLOODS;

/// A flood's body as the origin encoded it, decoded, if it re-encodes to exactly those bytes:
/// only then can it be sent flat (the receiver re-encodes it to get the origin's bytes back).
pub(crate) fn canonical(body: &Bytes) -> Option<pb::FloodBody> {
    let decoded = rs2p_base::wire::decode_bytes::<pb::FloodBody>(body.clone()).ok()?;
    (rs2p_base::wire::encode(&decoded) == *body).then_some(decoded)
}

/// `flood`, whose body is `body` (decoded, and known to re-encode to itself), as a flat flood
/// for a peer: without the origin when `own` (the peer receives it from its origin), and with
/// the protocol named by its place in the peer's handshake list when `protocol_ref` is not 0.
pub(crate) fn flatten(
    flood: &pb::Flood,
    body: &pb::FloodBody,
    own: bool,
    protocol_ref: u32,
) -> pb::FlatFlood {
    pb::FlatFlood {
        protocol_ref,
        origin: if own {
            Bytes::new()
        } else {
            body.origin.clone()
        },
        seq: body.seq,
        issued_at_ms: body.issued_at_ms,
        payload: body.payload.clone(),
        hops_left: flood.hops_left,
        signature: flood.signature.clone(),
        protocol: if protocol_ref == 0 {
            body.protocol.clone()
        } else {
            String::new()
        },
    }
}

/// The flood that a flat flood from `sender` stands for (its body rebuilt and encoded: the
/// origin's bytes), and that body decoded. `Err` when it names its protocol both ways, or by a
/// place this node never listed (`protocols` is the list it sent in its handshake).
pub(crate) fn inflate(
    f: pb::FlatFlood,
    sender: &PeerId,
    protocols: &[String],
) -> Result<(pb::Flood, pb::FloodBody), ()> {
    let protocol = if f.protocol_ref == 0 {
        f.protocol
    } else {
        if !f.protocol.is_empty() {
            return Err(());
        }
        let i = usize::try_from(f.protocol_ref - 1).map_err(|_| ())?;
        protocols.get(i).ok_or(())?.clone()
    };
    let body = pb::FloodBody {
        origin: if f.origin.is_empty() {
            Bytes::copy_from_slice(sender.as_bytes())
        } else {
            f.origin
        },
        seq: f.seq,
        issued_at_ms: f.issued_at_ms,
        protocol,
        payload: f.payload,
    };
    let flood = pb::Flood {
        body: rs2p_base::wire::encode(&body),
        signature: f.signature,
        hops_left: f.hops_left,
        ..Default::default()
    };
    Ok((flood, body))
}

/// `body` without its origin (when `drop_origin`) and without its protocol (when
/// `drop_protocol`), as older nodes compact floods (`Flood.protocol_ref`,
/// `Flood.origin_is_sender`).
#[cfg(test)]
pub(crate) fn compact_body(body: &pb::FloodBody, drop_origin: bool, drop_protocol: bool) -> Bytes {
    rs2p_base::wire::encode(&pb::FloodBody {
        origin: if drop_origin {
            Bytes::new()
        } else {
            body.origin.clone()
        },
        seq: body.seq,
        issued_at_ms: body.issued_at_ms,
        protocol: if drop_protocol {
            String::new()
        } else {
            body.protocol.clone()
        },
        payload: body.payload.clone(),
    })
}

/// Puts back what a compact flood from `sender` left out of its body (the origin, the protocol
/// named by its place in `protocols`, the list this node sent in its handshake), so that `f`
/// carries the origin's body bytes, and returns that body decoded; an uncompacted flood is left
/// as it is (`None`). `Err` for a compact flood that is malformed: its body still names what it
/// says it leaves out, or names a protocol this node never listed.
pub(crate) fn expand(
    f: &mut pb::Flood,
    sender: &PeerId,
    protocols: &[String],
) -> Result<Option<pb::FloodBody>, ()> {
    if f.protocol_ref == 0 && !f.origin_is_sender {
        return Ok(None);
    }
    let mut body =
        rs2p_base::wire::decode_bytes::<pb::FloodBody>(f.body.clone()).map_err(|_| ())?;
    if f.origin_is_sender {
        if !body.origin.is_empty() {
            return Err(());
        }
        body.origin = Bytes::copy_from_slice(sender.as_bytes());
    }
    if f.protocol_ref != 0 {
        let i = usize::try_from(f.protocol_ref - 1).map_err(|_| ())?;
        if !body.protocol.is_empty() {
            return Err(());
        }
        body.protocol = protocols.get(i).ok_or(())?.clone();
    }
    f.body = rs2p_base::wire::encode(&body);
    f.protocol_ref = 0;
    f.origin_is_sender = false;
    Ok(Some(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use prost::Message;

    fn protocols() -> Vec<String> {
        vec!["/a/1".into(), "/rs2p/sync/1".into(), "/c/9".into()]
    }

    proptest! {
        /// Compacted for a peer and expanded there, a flood's body is the origin's bytes again,
        /// so its id and signature hold.
        #[test]
        fn a_compact_flood_expands_to_the_origins_body(
            origin in any::<[u8; 32]>(),
            seq in any::<u64>(),
            issued in any::<u64>(),
            which in 0usize..4,
            payload in proptest::collection::vec(any::<u8>(), 0..300),
            drop_origin in any::<bool>(),
            hops in any::<u32>(),
        ) {
            let origin = PeerId::from_slice(&origin).unwrap();
            let list = protocols();
            let protocol = list.get(which).cloned().unwrap_or_else(|| "/not/listed".into());
            let full = body(&origin, seq, issued, &protocol, payload.into());
            let bytes = rs2p_base::wire::encode(&full);
            prop_assert_eq!(canonical(&bytes), Some(full.clone()));
            let protocol_ref = list.iter().position(|p| *p == protocol).map_or(0, |i| i as u32 + 1);
            let mut f = pb::Flood {
                body: compact_body(&full, drop_origin, protocol_ref != 0),
                signature: Bytes::new(),
                hops_left: hops,
                protocol_ref,
                origin_is_sender: drop_origin,
            };
            let compacted = protocol_ref != 0 || drop_origin;
            if compacted {
                prop_assert!(f.body.len() < bytes.len());
            }
            let back = expand(&mut f, &origin, &list).unwrap();
            prop_assert_eq!(back.is_some(), compacted);
            prop_assert_eq!(&f.body, &bytes);
            prop_assert_eq!(msg_id(&f.body), msg_id(&bytes));
            prop_assert_eq!((f.protocol_ref, f.origin_is_sender, f.hops_left), (0, false, hops));
        }

        /// Flattened for a peer and inflated there, a flood is the origin's again (body bytes,
        /// signature, hops), and the flat frame is smaller than the whole one.
        #[test]
        fn a_flat_flood_inflates_to_the_origins_flood(
            origin in any::<[u8; 32]>(),
            sender in any::<[u8; 32]>(),
            seq in any::<u64>(),
            issued in any::<u64>(),
            which in 0usize..4,
            payload in proptest::collection::vec(any::<u8>(), 0..300),
            signature in proptest::collection::vec(any::<u8>(), 0..65),
            own in any::<bool>(),
            hops in any::<u32>(),
        ) {
            let origin = PeerId::from_slice(&origin).unwrap();
            // The origin's own flood comes from the origin; a relayed one from anyone.
            let sender = if own { origin } else { PeerId::from_slice(&sender).unwrap() };
            let list = protocols();
            let protocol = list.get(which).cloned().unwrap_or_else(|| "/not/listed".into());
            let full = body(&origin, seq, issued, &protocol, payload.into());
            let whole = pb::Flood {
                body: rs2p_base::wire::encode(&full),
                signature: signature.into(),
                hops_left: hops,
                ..Default::default()
            };
            let protocol_ref = list.iter().position(|p| *p == protocol).map_or(0, |i| i as u32 + 1);
            let flat = flatten(&whole, &full, own, protocol_ref);
            let whole_len = pb::MeshFrame { kind: Some(pb::mesh_frame::Kind::Flood(whole.clone())) }.encoded_len();
            let flat_len = pb::MeshFrame { kind: Some(pb::mesh_frame::Kind::FlatFlood(flat.clone())) }.encoded_len();
            prop_assert!(flat_len < whole_len);
            let (back, decoded) = inflate(flat, &sender, &list).unwrap();
            prop_assert_eq!(&back, &whole);
            prop_assert_eq!(decoded, full);
        }

        /// A body that does not re-encode to itself (fields out of order, say) is never
        /// compacted: the receiver could not give back its bytes.
        #[test]
        fn only_bodies_that_re_encode_to_themselves_are_compacted(
            seq in 1u64..u64::MAX,
            payload in proptest::collection::vec(any::<u8>(), 1..50),
        ) {
            let full = body(&PeerId::from_slice(&[3; 32]).unwrap(), seq, 9, "/a/1", payload.into());
            let bytes = rs2p_base::wire::encode(&full);
            // The same fields with the sequence number last: valid protobuf, another encoding.
            let seq_field = rs2p_base::wire::encode(&pb::FloodBody { seq, ..Default::default() });
            let other = rs2p_base::wire::encode(&pb::FloodBody { seq: 0, ..full.clone() });
            let reordered = Bytes::from([other.as_ref(), seq_field.as_ref()].concat());
            prop_assert_eq!(
                rs2p_base::wire::decode_bytes::<pb::FloodBody>(reordered.clone()).unwrap(),
                full
            );
            prop_assert_ne!(&reordered, &bytes);
            prop_assert!(canonical(&reordered).is_none());
        }
    }

    #[test]
    fn a_compact_flood_that_still_names_what_it_leaves_out_or_an_unlisted_protocol_is_refused() {
        let origin = PeerId::from_slice(&[5; 32]).unwrap();
        let full = body(&origin, 1, 2, "/a/1", Bytes::from_static(b"x"));
        let flood = |body: Bytes, protocol_ref, origin_is_sender| pb::Flood {
            body,
            signature: Bytes::new(),
            hops_left: 3,
            protocol_ref,
            origin_is_sender,
        };
        let list = protocols();
        let whole = rs2p_base::wire::encode(&full);
        // The origin is in the body, and the frame says it is left out.
        assert!(expand(&mut flood(whole.clone(), 0, true), &origin, &list).is_err());
        // The protocol is in the body, and the frame names it by its place too.
        assert!(expand(&mut flood(whole.clone(), 1, false), &origin, &list).is_err());
        // A place the receiver never listed.
        let no_protocol = compact_body(&full, false, true);
        assert!(expand(&mut flood(no_protocol.clone(), 4, false), &origin, &list).is_err());
        assert!(expand(&mut flood(no_protocol, u32::MAX, false), &origin, &list).is_err());
        // Not a body at all.
        let junk = Bytes::from_static(&[0xff, 0xff, 0xff]);
        assert!(expand(&mut flood(junk, 1, true), &origin, &list).is_err());
        // An uncompacted flood is left as it is.
        let mut f = flood(whole.clone(), 0, false);
        assert_eq!(expand(&mut f, &origin, &list), Ok(None));
        assert_eq!(f.body, whole);
    }

    #[test]
    fn a_flat_flood_that_names_its_protocol_twice_or_by_an_unlisted_place_is_refused() {
        let sender = PeerId::from_slice(&[5; 32]).unwrap();
        let list = protocols();
        let flat = |protocol_ref, protocol: &str| pb::FlatFlood {
            protocol_ref,
            protocol: protocol.into(),
            seq: 1,
            ..Default::default()
        };
        assert!(inflate(flat(1, "/a/1"), &sender, &list).is_err());
        assert!(inflate(flat(4, ""), &sender, &list).is_err());
        assert!(inflate(flat(u32::MAX, ""), &sender, &list).is_err());
        // Named either way, it stands for the same body; the origin is the sender's.
        let (by_name, _) = inflate(flat(0, "/c/9"), &sender, &list).unwrap();
        let (by_place, body) = inflate(flat(3, ""), &sender, &list).unwrap();
        assert_eq!(by_name, by_place);
        assert_eq!(
            (body.origin.as_ref(), body.protocol.as_str()),
            (sender.as_bytes().as_slice(), "/c/9")
        );
    }
}
