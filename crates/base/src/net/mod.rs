//! The tokio driver of the base layer: the handshake over TCP with a timeout, then an encrypted
//! stream of length-prefixed frames.
//!
//! On the socket, every Noise message (handshake or transport) is a big-endian `u16` length and
//! that many bytes. Inside the transport messages flows a byte stream of frames (a big-endian
//! `u32` length and the frame), so a frame may span several Noise messages and one Noise message
//! may carry many frames: [`FrameWriter`] packs everything queued since the last flush into as
//! few messages and one write.

mod connection;

pub use connection::{handshake, FrameReader, FrameWriter, Role, SecureConnection};
