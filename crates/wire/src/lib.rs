//! # rs2p-wire: the wire format of rs2p
//!
//! The lowest layer of rs2p. It holds the protobuf messages that every other layer sends, generated
//! from `proto/rs2p/v1/*.proto` by `cargo xtask codegen` and checked in (no `protoc` at build time),
//! and the length-prefixed framing that carries them with a size limit enforced on the header,
//! before any allocation.
//!
//! ```text
//! wire  ←  base (identity, handshake)  ←  mesh  ←  sync / chord / your socket type
//! ```
//!
//! Only this crate names prost types; the layers above use the generated structs through [`pb`].
//!
//! ```
//! use bytes::BytesMut;
//! use rs2p_wire::{framing::{encode_frame, FrameDecoder}, pb};
//!
//! let ping = pb::MeshFrame { kind: Some(pb::mesh_frame::Kind::Ping(pb::Ping { nonce: 7 })) };
//! let mut stream = BytesMut::new();
//! encode_frame(&ping, &mut stream);
//! encode_frame(&ping, &mut stream);
//!
//! let mut decoder = FrameDecoder::new(1024 * 1024);
//! let first = decoder.decode(&mut stream)?.expect("a whole frame");
//! assert_eq!(rs2p_wire::decode::<pb::MeshFrame>(&first)?, ping);
//! assert!(decoder.decode(&mut stream)?.is_some());
//! assert!(decoder.decode(&mut stream)?.is_none());
//! # Ok::<(), rs2p_wire::WireError>(())
//! ```
#![forbid(unsafe_code)]

mod error;
#[cfg(feature = "codec")]
pub mod framing;
pub mod fuzz;

pub use error::{DecodeError, WireError};

/// The generated protobuf messages (package `rs2p.v1`).
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod pb {
    include!("generated/rs2p.v1.rs");
}

/// The default largest frame a peer may send: 1 MiB.
pub const DEFAULT_MAX_FRAME_LEN: usize = 1024 * 1024;

/// The length of the frame header: a big-endian `u32`.
pub const FRAME_HEADER_LEN: usize = 4;

/// Decodes one protobuf message, mapping prost's error to ours.
pub fn decode<M: prost::Message + Default>(bytes: &[u8]) -> Result<M, WireError> {
    M::decode(bytes).map_err(|e| WireError::Decode(DecodeError(e)))
}

/// Decodes one protobuf message from `Bytes` without copying its `bytes` fields.
pub fn decode_bytes<M: prost::Message + Default>(bytes: bytes::Bytes) -> Result<M, WireError> {
    M::decode(bytes).map_err(|e| WireError::Decode(DecodeError(e)))
}

/// Encodes one protobuf message into a fresh buffer.
pub fn encode<M: prost::Message>(msg: &M) -> bytes::Bytes {
    msg.encode_to_vec().into()
}
