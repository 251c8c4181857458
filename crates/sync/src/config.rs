use std::time::Duration;

/// The sync socket's settings. Every node of one mesh must use the same `leasing` and `lease`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SyncConfig {
    /// Whether a key written by one peer is leased to it (others cannot overwrite or delete it
    /// until the lease expires). Default true, as in py2p.
    pub leasing: bool,
    /// How long a lease lasts from its latest write. Default one hour.
    pub lease: Duration,
    /// How far in the future a record's timestamp may be; later ones are refused. Default 10 s.
    pub max_skew: Duration,
    /// The longest key. Default 1 KiB.
    pub max_key_len: usize,
    /// The longest value. Default 256 KiB.
    pub max_value_len: usize,
    /// How often the node compares its dictionary with a random peer's. Default 5 s.
    pub repair_interval: Duration,
    /// Bytes of records per join or repair message. Default 256 KiB.
    pub transfer_chunk: usize,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            leasing: true,
            lease: Duration::from_secs(3600),
            max_skew: Duration::from_secs(10),
            max_key_len: 1024,
            max_value_len: 256 * 1024,
            repair_interval: Duration::from_secs(5),
            transfer_chunk: 256 * 1024,
        }
    }
}

pub(crate) fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
