/// Why a data directory could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PersistError {
    /// The file system refused (creating the directory, setting its permissions, …).
    #[error("data directory {path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The directory has files but no `rs2p.redb`: it is not an rs2p data directory, and
    /// nothing is written into it.
    #[error("{path} is not an rs2p data directory (it is not empty and has no rs2p.redb)")]
    NotADataDir {
        /// The path.
        path: String,
    },
    /// Another process (or another socket in this one) has the directory open.
    #[error("data directory {path} is in use by another node")]
    InUse {
        /// The path.
        path: String,
    },
    /// The database file is damaged or is not a database.
    #[error("data directory {path} is corrupt: {detail}")]
    Corrupt {
        /// The path.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// The directory belongs to another kind of socket, another network, other settings, or
    /// another identity.
    #[error("data directory {path} belongs to another node: its {what} is {found}, this node's is {expected}")]
    Foreign {
        /// The path.
        path: String,
        /// Which property differs.
        what: &'static str,
        /// This node's.
        expected: String,
        /// The directory's.
        found: String,
    },
    /// Writing to the database failed (the writes stay queued and are retried).
    #[error("data directory write failed: {0}")]
    Write(String),
}
