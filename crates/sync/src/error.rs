use rs2p_base::PeerId;

/// Why a `set` or `update` failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SetError {
    /// Another peer leases the key (py2p's `KeyError`). Retry after `until`.
    #[error("key is leased by {owner} until {until} (Unix ms)")]
    LeaseHeld {
        /// Who holds the lease.
        owner: PeerId,
        /// When it expires (Unix ms).
        until: u64,
    },
    /// The key is empty or longer than `max_key_len`.
    #[error("key of {len} bytes is not within 1..={max}")]
    BadKey {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The value is longer than `max_value_len`.
    #[error("value of {len} bytes exceeds {max}")]
    ValueTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The socket is closed.
    #[error("the sync socket is closed")]
    Closed,
    /// Durable mode: the write is applied and sent to peers, but writing it to the data
    /// directory failed (it stays queued and is retried).
    #[error("the write is not on disk: {0}")]
    Storage(String),
}

/// Why a `del`, `pop` or `popitem` failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DelError {
    /// There is no such key (or, for `popitem`, the dictionary is empty).
    #[error("no such key")]
    NotFound,
    /// Another peer leases the key.
    #[error("key is leased by {owner} until {until} (Unix ms)")]
    LeaseHeld {
        /// Who holds the lease.
        owner: PeerId,
        /// When it expires (Unix ms).
        until: u64,
    },
    /// The socket is closed.
    #[error("the sync socket is closed")]
    Closed,
    /// As [`SetError::Storage`].
    #[error("the delete is not on disk: {0}")]
    Storage(String),
}

impl From<SetError> for DelError {
    fn from(e: SetError) -> Self {
        match e {
            SetError::LeaseHeld { owner, until } => DelError::LeaseHeld { owner, until },
            SetError::BadKey { .. } => DelError::NotFound,
            SetError::Storage(e) => DelError::Storage(e),
            _ => DelError::Closed,
        }
    }
}

pub use rs2p_record::RecordError;

/// Errors of the sync socket as a whole.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// The mesh underneath failed.
    #[error(transparent)]
    Mesh(#[from] rs2p_mesh::MeshError),
    /// The settings cannot work together (say, a longest value that no frame can carry).
    #[error("invalid settings: {0}")]
    Config(String),
    /// The data directory could not be opened or written.
    #[cfg(feature = "net")]
    #[error(transparent)]
    Data(#[from] rs2p_persist::PersistError),
}
