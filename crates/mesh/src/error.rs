use rs2p_base::PeerId;

/// Errors of the mesh layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MeshError {
    /// The peer is not directly connected.
    #[error("peer {0} is not connected")]
    NotConnected(PeerId),
    /// A handler is already registered under this protocol id.
    #[error("a handler for {0:?} is already registered")]
    DuplicateProtocol(String),
    /// No handler is registered under this protocol id.
    #[error("no handler for {0:?}")]
    UnknownProtocol(String),
    /// A protocol id must be 1 to 128 bytes.
    #[error("invalid protocol id {0:?}")]
    InvalidProtocol(String),
    /// A payload is larger than a frame may be.
    #[error("payload of {len} bytes exceeds the frame limit of {max} bytes")]
    PayloadTooLarge {
        /// The payload length.
        len: usize,
        /// The limit (the frame limit less the framing overhead).
        max: usize,
    },
    /// The socket was closed.
    #[error("the mesh socket is closed")]
    Closed,
    /// Binding or dialing failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A handshake failed.
    #[error(transparent)]
    Handshake(#[from] rs2p_base::HandshakeError),
}
