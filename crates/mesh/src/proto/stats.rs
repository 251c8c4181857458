//! Live cost counters.

use std::collections::BTreeMap;

use rs2p_base::PeerId;

/// Counters for one direction of traffic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Frames.
    pub frames: u64,
    /// Frame bytes (bodies, without framing or encryption overhead).
    pub bytes: u64,
    /// Payload messages (floods and directs) for socket protocols.
    pub messages: u64,
}

/// Counters for one peer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerStats {
    /// What we sent to the peer.
    pub sent: Traffic,
    /// What we received from the peer.
    pub received: Traffic,
    /// Invalid messages the peer sent (bad signatures, forged origins, malformed frames).
    pub strikes: u32,
}

/// The node's counters, in total and per peer currently connected.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeshStats {
    /// All traffic sent.
    pub sent: Traffic,
    /// All traffic received.
    pub received: Traffic,
    /// Floods received again after the first copy, and dropped.
    pub duplicates: u64,
    /// Floods delivered to a local handler or to the event stream.
    pub delivered: u64,
    /// Floods relayed to other peers (one per copy sent).
    pub forwarded: u64,
    /// Relays skipped because another node already sends the flood to that peer.
    pub relays_suppressed: u64,
    /// Relays skipped because the peer pruned that origin's floods (relay trees).
    pub relays_pruned: u64,
    /// Prunes sent: duplicates that asked a relay to stop (relay trees).
    pub tree_prunes: u64,
    /// Grafts sent: pruned relays asked to relay again (relay trees).
    pub tree_grafts: u64,
    /// Floods dropped for a bad signature or a forged origin.
    pub bad_signatures: u64,
    /// Unsigned floods of a protocol this node does not run (it cannot check them): dropped,
    /// not relayed, and not held against the sender.
    pub unverifiable: u64,
    /// Floods dropped as too old, from the future, or out of hops.
    pub stale: u64,
    /// Frames that did not decode.
    pub malformed: u64,
    /// Frames that arrived while their peer was over its rate (each pauses reading from it).
    pub throttled: u64,
    /// Connections closed because a peer broke a limit.
    pub limit_disconnects: u64,
    /// Frames not sent because the peer's send queue was full (filled by the driver).
    pub send_queue_drops: u64,
    /// Peers disconnected because their queue stayed full without progress (filled by the driver).
    pub stalled_disconnects: u64,
    /// Incoming connections refused before their handshake (too many pending, or from one IP).
    pub refused_incoming: u64,
    /// Handshakes under way now (a snapshot, filled when the stats are read).
    pub pending_handshakes: usize,
    /// Counters per connected peer.
    pub peers: BTreeMap<PeerId, PeerStats>,
}
