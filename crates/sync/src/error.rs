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
}

impl From<SetError> for DelError {
    fn from(e: SetError) -> Self {
        match e {
            SetError::LeaseHeld { owner, until } => DelError::LeaseHeld { owner, until },
            SetError::BadKey { .. } => DelError::NotFound,
            _ => DelError::Closed,
        }
    }
}

/// Why a record or batch from a peer was refused. Nothing of a refused batch is stored or
/// relayed; each refusal is counted in [`crate::SyncStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// Not a valid encoding, or fields of the wrong size.
    #[error("malformed record or batch")]
    Malformed,
    /// The owner's signature does not cover these records in this network.
    #[error("bad signature")]
    BadSignature,
    /// A record names another owner than the batch's signer.
    #[error("record owner differs from the batch signer")]
    OwnerMismatch,
    /// A timestamp further in the future than `max_skew`.
    #[error("timestamp too far in the future")]
    FutureTimestamp,
    /// A lease longer than the configured one (or any lease when leasing is off).
    #[error("lease longer than allowed")]
    LeaseTooLong,
    /// A key or value over the limits.
    #[error("key or value over the limits")]
    TooLarge,
}

/// Errors of the sync socket as a whole.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// The mesh underneath failed.
    #[error(transparent)]
    Mesh(#[from] rs2p_mesh::MeshError),
}
