//! Length-prefixed frames: a big-endian `u32` length, then that many bytes.
//!
//! Decoding is tokio-util's [`LengthDelimitedCodec`], which checks the announced length against
//! the limit as soon as the 4-byte header is in, before reserving any memory for the body.

use bytes::{BufMut, BytesMut};
use tokio_util::codec::{Decoder, LengthDelimitedCodec};

use crate::WireError;

/// Appends `msg` as one frame (header and body) to `dst`.
pub fn encode_frame<M: prost::Message>(msg: &M, dst: &mut BytesMut) {
    let len = msg.encoded_len();
    dst.reserve(crate::FRAME_HEADER_LEN + len);
    // A frame longer than u32::MAX cannot be produced by rs2p: every sender checks its own
    // limits first, and the receiver's limit is far below that.
    dst.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    // Encoding into a buffer we just reserved cannot fail.
    let _ = msg.encode(dst);
}

/// Appends an already encoded body as one frame to `dst`.
pub fn encode_raw_frame(body: &[u8], dst: &mut BytesMut) {
    dst.reserve(crate::FRAME_HEADER_LEN + body.len());
    dst.put_u32(u32::try_from(body.len()).unwrap_or(u32::MAX));
    dst.put_slice(body);
}

/// Splits a byte stream into frames, refusing any frame longer than its limit.
#[derive(Debug)]
pub struct FrameDecoder {
    codec: LengthDelimitedCodec,
    max: usize,
}

impl FrameDecoder {
    /// A decoder that accepts frames of at most `max_frame_len` bytes.
    pub fn new(max_frame_len: usize) -> Self {
        let codec = LengthDelimitedCodec::builder()
            .big_endian()
            .length_field_type::<u32>()
            .max_frame_length(max_frame_len)
            .new_codec();
        Self {
            codec,
            max: max_frame_len,
        }
    }

    /// The largest frame this decoder accepts.
    pub fn max_frame_len(&self) -> usize {
        self.max
    }

    /// Takes the next whole frame's body off the front of `src`, or `None` when more bytes are
    /// needed. After an error the stream is unusable and the connection should be closed.
    pub fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, WireError> {
        match self.codec.decode(src) {
            Ok(frame) => Ok(frame),
            Err(_) => {
                let len = src
                    .get(..crate::FRAME_HEADER_LEN)
                    .map(|h| u64::from(u32::from_be_bytes([h[0], h[1], h[2], h[3]])))
                    .unwrap_or(0);
                Err(WireError::FrameTooLarge { len, max: self.max })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb;
    use proptest::prelude::*;

    fn arb_frame() -> impl Strategy<Value = pb::MeshFrame> {
        use pb::mesh_frame::Kind;
        let bytes = || proptest::collection::vec(any::<u8>(), 0..300);
        prop_oneof![
            any::<u64>().prop_map(|n| Kind::Ping(pb::Ping { nonce: n })),
            any::<u64>().prop_map(|n| Kind::Pong(pb::Pong { nonce: n })),
            (bytes(), bytes(), any::<u32>(), any::<u32>(), any::<bool>()).prop_map(
                |(b, s, h, r, o)| Kind::Flood(pb::Flood {
                    body: b.into(),
                    signature: s.into(),
                    hops_left: h,
                    protocol_ref: r,
                    origin_is_sender: o,
                })
            ),
            ("[a-z/0-9]{0,20}", bytes()).prop_map(|(p, b)| Kind::Direct(pb::Direct {
                protocol: p,
                payload: b.into()
            })),
            (
                proptest::collection::vec(
                    (bytes(), proptest::collection::vec("[0-9.:]{1,21}", 0..3)),
                    0..5
                ),
                any::<u64>()
            )
                .prop_map(|(ps, seq)| Kind::Peers(pb::PeerList {
                    peers: ps
                        .into_iter()
                        .map(|(id, addrs)| pb::PeerInfo {
                            id: id.into(),
                            addrs
                        })
                        .collect(),
                    seq
                })),
            (bytes(), 0i32..4, any::<u64>()).prop_map(|(o, op, seq)| Kind::Tree(pb::Tree {
                origin: o.into(),
                op,
                seq
            })),
            Just(Kind::PeerRequest(pb::PeerRequest {})),
            (0i32..6).prop_map(|r| Kind::Goodbye(pb::Goodbye { reason: r })),
        ]
        .prop_map(|k| pb::MeshFrame { kind: Some(k) })
    }

    proptest! {
        #[test]
        fn every_frame_round_trips(frame in arb_frame()) {
            let mut buf = BytesMut::new();
            encode_frame(&frame, &mut buf);
            let body = FrameDecoder::new(1 << 20).decode(&mut buf).unwrap().unwrap();
            prop_assert!(buf.is_empty());
            prop_assert_eq!(crate::decode::<pb::MeshFrame>(&body).unwrap(), frame);
        }

        #[test]
        fn any_split_of_a_stream_yields_the_same_frames(
            frames in proptest::collection::vec(arb_frame(), 1..8),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..10),
        ) {
            let mut stream = BytesMut::new();
            for f in &frames { encode_frame(f, &mut stream); }
            let total = stream.len();
            let mut cut_points: Vec<usize> = cuts.iter().map(|i| i.index(total + 1)).collect();
            cut_points.push(total);
            cut_points.sort_unstable();
            let mut decoder = FrameDecoder::new(1 << 20);
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            let mut start = 0;
            for end in cut_points {
                buf.extend_from_slice(&stream[start..end]);
                start = end;
                while let Some(body) = decoder.decode(&mut buf).unwrap() {
                    got.push(crate::decode::<pb::MeshFrame>(&body).unwrap());
                }
            }
            prop_assert_eq!(got, frames);
        }

        #[test]
        fn an_oversized_header_is_refused_before_the_body(len in 1025u32..=u32::MAX) {
            let mut buf = BytesMut::new();
            buf.put_u32(len);
            let err = FrameDecoder::new(1024).decode(&mut buf).unwrap_err();
            let is_too_large = matches!(err, WireError::FrameTooLarge { len: l, max: 1024 } if l == u64::from(len));
            prop_assert!(is_too_large);
            // Nothing was reserved for the announced body.
            prop_assert!(buf.capacity() < 1 << 16);
        }
    }

    #[test]
    fn a_4_gib_header_is_refused() {
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
        let err = FrameDecoder::new(crate::DEFAULT_MAX_FRAME_LEN)
            .decode(&mut buf)
            .unwrap_err();
        assert!(matches!(
            err,
            WireError::FrameTooLarge {
                len: 4_294_967_295,
                ..
            }
        ));
    }
}
