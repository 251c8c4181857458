use std::fmt;

/// Errors of the wire layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// A frame header announced more bytes than the configured limit; the stream cannot be
    /// resynchronised and the connection must be closed.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// The announced length.
        len: u64,
        /// The configured limit.
        max: usize,
    },
    /// The bytes are not a valid protobuf message of the expected type.
    #[error("malformed message: {0}")]
    Decode(#[source] DecodeError),
    /// A decoded message lacks a field it must have, or a field has an invalid value.
    #[error("invalid message: {0}")]
    Invalid(&'static str),
}

/// A protobuf decoding error (wraps prost's, so its version is not part of our API).
#[derive(Debug)]
pub struct DecodeError(pub(crate) prost::DecodeError);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for DecodeError {}
