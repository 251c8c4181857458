//! Signing, identifying and checking flooded messages.

use bytes::Bytes;
use rs2p_base::wire::pb;
use rs2p_base::{hash256, Keypair, PeerId};

use super::seen_cache::MsgId;

const SIGN_DOMAIN: &[u8] = b"rs2p/v1/flood";

/// The id of a flood: a hash of its body bytes exactly as received, so a forger can never make a
/// message that takes a real one's id.
pub fn msg_id(body: &[u8]) -> MsgId {
    let h = hash256("rs2p/v1/msg-id", &[body]);
    let mut first = [0u8; 16];
    first.copy_from_slice(&h[..16]);
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

/// Encodes a flood body.
pub(crate) fn encode_body(
    origin: &PeerId,
    seq: u64,
    issued_at_ms: u64,
    protocol: &str,
    payload: Bytes,
) -> Bytes {
    rs2p_base::wire::encode(&pb::FloodBody {
        origin: Bytes::copy_from_slice(origin.as_bytes()),
        seq,
        issued_at_ms,
        protocol: protocol.to_owned(),
        payload,
    })
}
