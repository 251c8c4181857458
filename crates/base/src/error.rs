use crate::PeerId;

/// General errors of the base layer (identities, key files).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BaseError {
    /// A key file could not be read or written.
    #[error("key file {path}: {source}")]
    KeyFile {
        /// The file.
        path: String,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// A key file does not hold a 32-byte ed25519 secret key.
    #[error("key file {path} is not an rs2p key file (expected 32 bytes, found {len})")]
    BadKeyFile {
        /// The file.
        path: String,
        /// Its length.
        len: u64,
    },
    /// A string is not a peer id (64 hex digits).
    #[error("not a peer id: {0:?}")]
    BadPeerId(String),
}

/// Why a handshake failed. No application frame is ever delivered on a connection whose
/// handshake failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The peer sent bytes that are not a valid handshake message, or they failed to decrypt:
    /// a wrong network key (pre-shared key), a peer speaking something else, or corruption.
    #[error("handshake failed to decrypt or parse (wrong network key, or not an rs2p peer)")]
    Noise,
    /// The identity payload is malformed or over its limits.
    #[error("invalid handshake payload: {0}")]
    InvalidPayload(&'static str),
    /// The peer's ed25519 signature does not cover its Noise static key.
    #[error("the peer's identity signature does not match its key")]
    BadSignature,
    /// The peer speaks another protocol version.
    #[error("the peer speaks protocol version {theirs}, we speak {ours}")]
    VersionMismatch {
        /// Our version.
        ours: u32,
        /// Theirs.
        theirs: u32,
    },
    /// We dialed a specific peer and another one answered.
    #[error("expected peer {expected}, but {actual} answered")]
    UnexpectedPeer {
        /// Whom we dialed.
        expected: PeerId,
        /// Who answered.
        actual: PeerId,
    },
    /// The peer is this node itself.
    #[error("connected to ourselves")]
    SelfConnection,
    /// The peer did not finish the handshake within the timeout.
    #[error("handshake timed out")]
    Timeout,
    /// The peer closed the connection during the handshake (when we dialed, this is what a wrong
    /// network key looks like from our side: the responder refuses our last message).
    #[error("the peer closed the connection during the handshake")]
    Closed,
    /// A handshake message was announced longer than allowed.
    #[error("handshake message of {0} bytes is too long")]
    TooLong(usize),
    /// The state machine was used out of order (a bug in the caller).
    #[error("handshake used out of order: {0}")]
    OutOfOrder(&'static str),
    /// An I/O error on the connection.
    #[error("I/O error during the handshake: {0}")]
    Io(#[from] std::io::Error),
}

/// Why an established connection ended with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The socket failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A transport message failed to decrypt (forged, corrupted or replayed).
    #[error("a transport message failed to decrypt")]
    Decrypt,
    /// The peer broke the framing (a frame over the limit).
    #[error(transparent)]
    Wire(#[from] rs2p_wire::WireError),
    /// The peer closed the connection in the middle of a message.
    #[error("the connection closed in the middle of a message")]
    Truncated,
}
