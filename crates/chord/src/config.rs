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
    /// The longest value. Default 256 KiB. A transfer chunk with the largest record after it
    /// must fit in one of the mesh's frames (see [`ChordConfig::check_frames`]).
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

// What a chord message holds besides its records, at most (headers, signatures, the encryption
// tag): the mesh's margin for every socket type.
use rs2p_mesh::FRAME_MARGIN;

/// What one record takes beyond its key and value, at most (fields, framing, its place in a
/// batch).
const RECORD_MARGIN: usize = 128;

impl ChordConfig {
    /// Whether every message this configuration can produce fits in a mesh frame of
    /// `max_frame_len` bytes: a transfer chunk closes after the record that takes it past
    /// `transfer_chunk`, so the chunk and the largest record must fit together. A larger
    /// message would be refused by every peer, and the connection with it. `ChordSocket::bind`
    /// refuses such a configuration with `ChordError::Config`.
    pub fn check_frames(&self, max_frame_len: usize) -> Result<(), String> {
        let largest = self.max_key_len + self.max_value_len + RECORD_MARGIN;
        let need = self.transfer_chunk + largest + FRAME_MARGIN;
        if need > max_frame_len {
            return Err(format!(
                "a transfer chunk of {} B with the largest record (a {} B key and a {} B value) \
                 does not fit in a frame of {max_frame_len} B: raise max_frame_len or lower \
                 transfer_chunk, max_key_len or max_value_len",
                self.transfer_chunk, self.max_key_len, self.max_value_len
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_fit_the_default_frames_and_a_larger_value_does_not() {
        let frame = 1 << 20;
        assert_eq!(ChordConfig::default().check_frames(frame), Ok(()));
        let mut big = ChordConfig {
            max_value_len: 900 * 1024,
            ..ChordConfig::default()
        };
        let err = big.check_frames(frame).unwrap_err();
        assert!(err.contains("921600 B value"), "{err}");
        big.transfer_chunk = 64 * 1024;
        assert_eq!(
            big.check_frames(frame),
            Ok(()),
            "a smaller chunk makes room"
        );
    }
}
