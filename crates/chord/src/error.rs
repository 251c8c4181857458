//! The chord socket's one error type.

/// Why a chord operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChordError {
    /// The key or value is over the configured limits (or the key is empty).
    #[error("key of {key} bytes or value of {value} bytes is over the limits")]
    TooLarge {
        /// The key's length.
        key: usize,
        /// The value's length.
        value: usize,
    },
    /// No answer after every attempt: too many peers failed or the ring is still forming.
    #[error("no answer from the ring after {attempts} attempts")]
    Unreachable {
        /// How many attempts were made.
        attempts: u32,
    },
    /// This node is not part of a ring yet (it has not joined through a peer).
    #[error("not part of a ring yet")]
    NotJoined,
    /// The key has no value (from `pop`).
    #[error("no such key")]
    NotFound,
    /// A newer write of the key kept winning over this one.
    #[error("a newer write of the key won")]
    Superseded,
    /// The socket is closed.
    #[error("the socket is closed")]
    Closed,
    /// The mesh underneath failed.
    #[error("mesh: {0}")]
    Mesh(String),
    /// The data directory could not be opened or written.
    #[error("data directory: {0}")]
    Data(String),
    /// The configuration cannot work (see `ChordConfig::check_frames`); nothing was started.
    #[error("configuration: {0}")]
    Config(String),
}

#[cfg(feature = "net")]
impl From<rs2p_mesh::MeshError> for ChordError {
    fn from(e: rs2p_mesh::MeshError) -> Self {
        match e {
            rs2p_mesh::MeshError::Closed => ChordError::Closed,
            other => ChordError::Mesh(other.to_string()),
        }
    }
}
