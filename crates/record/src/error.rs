//! The one error type of this crate.

/// Why a record or batch from a peer was refused. Nothing of a refused batch is stored or
/// relayed; each refusal is counted by the socket that received it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// Not a valid encoding, or fields of the wrong size.
    #[error("malformed record or batch")]
    Malformed,
    /// The owner's signature does not cover these records in this network.
    #[error("bad signature")]
    BadSignature,
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
