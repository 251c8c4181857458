use std::time::Duration;

/// The chord socket's settings. Every node of one ring must use the same `replicas`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ChordConfig {
    /// How many nodes hold each key: its successor and the next `replicas − 1`. Default 3.
    pub replicas: usize,
    /// How many successors each node tracks (at least `replicas`). Default 6.
    pub successors: usize,
    /// How often a node checks its successor, refreshes fingers and pushes its keys' digests to
    /// their replicas. Default 1 s.
    pub stabilize: Duration,
    /// How long one attempt of a lookup may take before it is retried. Default 1 s.
    pub request_timeout: Duration,
    /// How many attempts a lookup gets before it fails with [`crate::ChordError::Unreachable`]:
    /// every operation completes or fails within `request_timeout × attempts`. Default 3.
    pub attempts: u32,
    /// How long the owner of a key waits for its replicas' acknowledgements before it answers a
    /// write with the copies it has. Default 500 ms.
    pub replicate_timeout: Duration,
    /// A route that has been forwarded this many times is dropped. Default 64.
    pub max_hops: usize,
    /// How far in the future a record's timestamp may be; later ones are refused. Default 10 s.
    pub max_skew: Duration,
    /// The longest key. Default 1 KiB.
    pub max_key_len: usize,
    /// The longest value. Default 256 KiB.
    pub max_value_len: usize,
    /// Bytes of records per transfer message and per `keys()` page. Default 256 KiB.
    pub transfer_chunk: usize,
    /// Records per digest in repair: an owned arc is compared in sub-arcs of at most this many
    /// records, so a difference costs a summary of at most this many entries. Default 4096.
    pub digest_span: usize,
    /// Messages kept for a peer that is being dialed. Default 256.
    pub outbox_len: usize,
}

impl Default for ChordConfig {
    fn default() -> Self {
        Self {
            replicas: 3,
            successors: 6,
            stabilize: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            attempts: 3,
            replicate_timeout: Duration::from_millis(500),
            max_hops: 64,
            max_skew: Duration::from_secs(10),
            max_key_len: 1024,
            max_value_len: 256 * 1024,
            transfer_chunk: 256 * 1024,
            digest_span: 4096,
            outbox_len: 256,
        }
    }
}

pub(crate) fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
