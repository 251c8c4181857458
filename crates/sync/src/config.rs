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
    /// The longest value. Default 256 KiB. The longest key and value together must fit in one
    /// of the mesh's frames (`MeshConfig::max_frame_len`, less 1 KiB): `SyncSocket::bind` refuses
    /// other settings with `SyncError::Config`.
    pub max_value_len: usize,
    /// How often the node compares its dictionary with a peer's (each peer in turn). Default 5 s.
    pub repair_interval: Duration,
    /// Bytes of records per join or repair message. Default 256 KiB.
    pub transfer_chunk: usize,
    /// With leasing, records become final (and are folded into checkpoints) once older than
    /// `lease + 2 · max_skew + finality_grace`; every record must reach every node within that
    /// time (see `rs2p_sync::proto::store`). Default 10 min.
    pub finality_grace: Duration,
    /// Whether records are signed. Default true. `false` is for trusted networks only: every
    /// member can then write records in any other member's name (links stay authenticated and
    /// encrypted, so outsiders still cannot), in exchange for no ed25519 signing or verifying
    /// and 64 bytes less per batch. Unsigned nodes speak [`crate::PROTOCOL_UNSIGNED`] and share a
    /// dictionary only with other unsigned nodes; a data directory keeps the mode it was created
    /// with. The two kinds may share a mesh: each drops the other's floods unread (counted as
    /// `MeshStats::unverifiable`, never against the sender) and relays none of them, so two
    /// unsigned nodes linked only through signed ones do not hear each other's writes.
    pub signed: bool,
}

impl SyncConfig {
    /// The finality horizon (ms): `lease + 2 · max_skew + finality_grace`.
    pub fn horizon_ms(&self) -> u64 {
        ms(self.lease) + 2 * ms(self.max_skew) + ms(self.finality_grace)
    }
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
            finality_grace: Duration::from_secs(600),
            signed: true,
        }
    }
}

pub(crate) fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
