use std::time::Duration;

/// Room that a socket type leaves in a frame beside its own records or payload, at most: the
/// mesh's flood or whisper header (origin, protocol, sequence, signature), the socket's own
/// message header, the framing and the encryption tag. A socket whose messages carry at most
/// `max_frame_len - FRAME_MARGIN` bytes of records never makes a frame its peers refuse.
pub const FRAME_MARGIN: usize = 1024;

/// Every limit and timing of a mesh node, with defaults meant for real deployments.
///
/// Each breach is handled, never ignored: a connection over a limit is refused or closed with a
/// [`crate::MeshEvent`] saying why.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MeshConfig {
    /// The node dials addresses it knows until it has at least this many peers. Default 8.
    pub min_peers: usize,
    /// Inbound connections beyond this many peers are refused. Default 32.
    pub max_peers: usize,
    /// Connections from one IP address at most (loopback is exempt unless
    /// [`MeshConfig::limit_loopback`]). Default 8.
    pub max_peers_per_ip: usize,
    /// Apply [`MeshConfig::max_peers_per_ip`] to loopback addresses too. Default false.
    pub limit_loopback: bool,
    /// Handshakes in progress at once (inbound and outbound); more are refused. Default 64.
    pub max_pending_handshakes: usize,
    /// A handshake that takes longer is abandoned. Default 10 s.
    pub handshake_timeout: Duration,
    /// The largest frame a peer may send. Default 1 MiB.
    pub max_frame_len: usize,
    /// Frames queued for one peer at most. While any peer's queue is more than half full, the
    /// node takes no new local commands (backpressure; see `stall_timeout`); a relayed frame that
    /// would overflow the queue is dropped for that peer and counted. Default 16384.
    pub send_queue_len: usize,
    /// While more than half of this many bytes are queued for one peer, the node takes no new
    /// local commands, and a peer whose queue stays so without progress for `stall_timeout` is
    /// disconnected, as with `send_queue_len` (frames are dropped only when `send_queue_len` is
    /// reached). Default 32 MiB.
    pub send_queue_bytes: usize,
    /// A peer whose queue stays over half full without its writer making progress for this long
    /// is not reading, and is disconnected. Until then, local commands (broadcasts, whispers,
    /// socket writes) wait for its queue to drain, so a slow peer loses nothing. Default 10 s.
    pub stall_timeout: Duration,
    /// Sustained frames per second one peer may send. Default 50 000.
    pub peer_rate: u32,
    /// A peer over its rate is not read from for 100 ms at a time; one that stays over it
    /// (with no second of calm) for this long is disconnected and banned. Default 10 s.
    pub flood_ban_after: Duration,
    /// Frames one peer may send in a burst above the sustained rate. Default 100 000.
    pub peer_burst: u32,
    /// Message ids remembered to suppress duplicates. Default 262 144.
    pub seen_cache_size: usize,
    /// How long a message id is remembered. Must exceed `max_flood_age + max_clock_skew`.
    /// Default 120 s.
    pub seen_cache_ttl: Duration,
    /// Floods issued longer ago than this are dropped (replay protection). Default 60 s.
    pub max_flood_age: Duration,
    /// How far in the future a flood's timestamp may be. Default 10 s.
    pub max_clock_skew: Duration,
    /// Relays a flood may take. Default 32.
    pub max_hops: u32,
    /// Whether a relay skips the peers another node already sends the flood to (those that say
    /// they are connected to its origin or that its origin says it is connected to, and, without
    /// [`MeshConfig::relay_tree`], those both they and its sender say are connected),
    /// using the peer lists peers send on connect and whenever their peers change. In a full
    /// mesh this makes each node receive each flood once instead of once per peer. It trusts
    /// what peers say about their links: a peer that lies can keep floods that pass through it
    /// from a neighbour (the sync socket's repair still delivers them). Default true.
    pub relay_suppression: bool,
    /// Whether relays form a tree per origin: a node that receives a duplicate from a relay asks
    /// it to stop relaying that origin's floods (see [`crate::proto::RelayTree`]), so where
    /// floods are relayed each node comes to receive each one about once instead of once per
    /// relaying neighbour. It trades flooding's redundancy for that: a relayed flood dropped on
    /// a full send queue is lost to the nodes below it until the socket's own repair brings it.
    /// With it, relay suppression skips only peers connected to the origin. Default true.
    pub relay_tree: bool,
    /// Invalid messages (bad signature, forged origin, malformed frame) a peer may send before it
    /// is disconnected and banned. Default 8.
    pub max_strikes: u32,
    /// How long a misbehaving peer stays banned. Default 5 min.
    pub ban_duration: Duration,
    /// How often the node pings idle peers, asks for peers and dials. Default 1 s.
    pub tick: Duration,
    /// A peer silent for this long is disconnected. Default 30 s.
    pub idle_timeout: Duration,
    /// First delay before redialing a lost or failed address; doubles per failure. Default 100 ms.
    pub backoff_initial: Duration,
    /// The longest delay between redials. Default 30 s.
    pub backoff_max: Duration,
    /// Addresses remembered for dialing. Default 1024.
    pub max_known_addrs: usize,
}

impl Default for MeshConfig {
    fn default() -> Self {
        Self {
            min_peers: 8,
            max_peers: 32,
            max_peers_per_ip: 8,
            limit_loopback: false,
            max_pending_handshakes: 64,
            handshake_timeout: Duration::from_secs(10),
            max_frame_len: rs2p_base::wire::DEFAULT_MAX_FRAME_LEN,
            send_queue_len: 16384,
            send_queue_bytes: 32 << 20,
            stall_timeout: Duration::from_secs(10),
            peer_rate: 50_000,
            flood_ban_after: Duration::from_secs(10),
            peer_burst: 100_000,
            seen_cache_size: 262_144,
            seen_cache_ttl: Duration::from_secs(120),
            max_flood_age: Duration::from_secs(60),
            max_clock_skew: Duration::from_secs(10),
            max_hops: 32,
            relay_suppression: true,
            relay_tree: true,
            max_strikes: 8,
            ban_duration: Duration::from_secs(300),
            tick: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(30),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
            max_known_addrs: 1024,
        }
    }
}
