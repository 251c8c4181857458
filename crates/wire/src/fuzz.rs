//! Entry points for the fuzz targets in `fuzz/` and for the corpus replay test.
//!
//! Each function feeds arbitrary bytes to a decoder a remote peer can reach and must never panic.

use crate::pb;

/// Splits `data` into frames with a small limit and decodes each as a [`pb::MeshFrame`].
#[cfg(feature = "codec")]
pub fn frame_stream(data: &[u8]) {
    let mut decoder = crate::framing::FrameDecoder::new(64 * 1024);
    let mut buf = bytes::BytesMut::from(data);
    while let Ok(Some(frame)) = decoder.decode(&mut buf) {
        if let Ok(msg) = crate::decode::<pb::MeshFrame>(&frame) {
            // Re-encoding what we decoded must succeed and decode to the same message.
            let again = crate::decode::<pb::MeshFrame>(&crate::encode(&msg));
            assert_eq!(again.ok(), Some(msg));
        }
    }
}

/// Decodes `data` as each message a peer can send outside the frame stream.
pub fn messages(data: &[u8]) {
    let _ = crate::decode::<pb::HandshakePayload>(data);
    let _ = crate::decode::<pb::HandshakeConfirm>(data);
    let _ = crate::decode::<pb::FloodBody>(data);
    let _ = crate::decode::<pb::MeshFrame>(data);
}
