//! Fuzz entry points: every decoder a remote peer can reach, fed arbitrary bytes. Each must
//! return without panicking. `fuzz/` runs them under libFuzzer; the `fuzz_corpus` test replays
//! the committed corpus through them on every `cargo xtask test`.

use bytes::Bytes;
use rs2p_base::handshake::{Handshake, LocalInfo};
use rs2p_base::wire::pb;
use rs2p_base::{Keypair, LocalIdentity, Network};
use rs2p_mesh::proto::ConnId;

use crate::{Faults, Sim};

/// A fuzz target: arbitrary bytes in, no panic.
pub type Target = fn(&[u8]);

/// The targets by name, for the corpus replay.
pub const TARGETS: &[(&str, Target)] = &[
    ("frame_stream", frame_stream),
    ("messages", messages),
    ("handshake", handshake),
    ("mesh_frames", mesh_frames),
    ("sync_messages", sync_messages),
];

/// A byte stream split into length-prefixed frames and decoded.
pub fn frame_stream(data: &[u8]) {
    rs2p_wire::fuzz::frame_stream(data);
}

/// Every protobuf message type, decoded from the same bytes.
pub fn messages(data: &[u8]) {
    rs2p_wire::fuzz::messages(data);
    let _ = rs2p_wire::decode::<pb::SyncMessage>(data);
    let _ = rs2p_wire::decode::<pb::RecordBatch>(data);
}

/// Splits `data` into chunks: each starts with a one-byte length.
fn chunks(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = data;
    std::iter::from_fn(move || {
        let (&n, tail) = rest.split_first()?;
        let n = usize::from(n).min(tail.len());
        let (chunk, tail) = tail.split_at(n);
        rest = tail;
        Some(chunk)
    })
}

/// A responder and an initiator handshake fed arbitrary messages.
pub fn handshake(data: &[u8]) {
    let net = Network::named("fuzz");
    let me = LocalIdentity::new(Keypair::from_seed([1; 32]));
    if let Ok(mut r) = Handshake::responder(&me, &net, LocalInfo::default()) {
        for m in chunks(data) {
            if r.handle_message(m).is_err() {
                break;
            }
            let _ = r.poll_transmit();
        }
    }
    if let Ok(mut i) = Handshake::initiator(&me, &net, LocalInfo::default(), None) {
        let _ = i.poll_transmit();
        for m in chunks(data) {
            if i.handle_message(m).is_err() {
                break;
            }
            let _ = i.poll_transmit();
        }
    }
}

/// Frames from a connected peer into a mesh node (and relayed to a third).
pub fn mesh_frames(data: &[u8]) {
    let mut sim = Sim::new(1, 3);
    sim.link(0, 1, Faults::NONE);
    sim.link(1, 2, Faults::NONE);
    for frame in chunks(data) {
        let now = sim.now();
        sim.node_mut(1)
            .handle_frame(ConnId(2), Bytes::copy_from_slice(frame), now);
        sim.flush();
    }
    sim.run_until_idle();
}

/// Sync messages, whispered and flooded, into a node running the sync socket.
pub fn sync_messages(data: &[u8]) {
    let mut sim = Sim::new(2, 2);
    let kp = sim.keypair(1);
    let net = *Network::named("sim").id();
    let machine = rs2p_sync::SyncMachine::new(rs2p_sync::SyncConfig::default(), kp, net);
    let now = sim.now();
    let _ = sim.node_mut(1).register(Box::new(machine), now);
    sim.link(0, 1, Faults::NONE);
    for (i, payload) in chunks(data).enumerate() {
        let payload = Bytes::copy_from_slice(payload);
        let now = sim.now();
        let kind = if i % 2 == 0 {
            pb::mesh_frame::Kind::Direct(pb::Direct {
                protocol: rs2p_sync::PROTOCOL.into(),
                payload,
            })
        } else if i % 4 == 3 {
            // Every other flood is flat, the origin left out (it is the sender, node 0), the
            // protocol named by its place in node 1's list (or by a place that is not).
            let protocol_ref = (i % 3) as u32;
            pb::mesh_frame::Kind::FlatFlood(pb::FlatFlood {
                protocol_ref,
                seq: i as u64,
                issued_at_ms: now,
                payload,
                hops_left: 3,
                protocol: if protocol_ref == 0 {
                    rs2p_sync::PROTOCOL.into()
                } else {
                    String::new()
                },
                ..Default::default()
            })
        } else {
            // The others are whole, or compact as older nodes send them: the origin left out,
            // the protocol named by its place (or by a place that is not).
            let compact = i % 4 == 1;
            let protocol_ref = if compact { (i % 3) as u32 } else { 0 };
            let body = rs2p_wire::encode(&pb::FloodBody {
                origin: if compact {
                    Bytes::new()
                } else {
                    Bytes::copy_from_slice(sim.id(0).as_bytes())
                },
                seq: i as u64,
                issued_at_ms: now,
                protocol: if protocol_ref == 0 {
                    rs2p_sync::PROTOCOL.into()
                } else {
                    String::new()
                },
                payload,
            });
            pb::mesh_frame::Kind::Flood(pb::Flood {
                body,
                signature: Bytes::new(),
                hops_left: 3,
                protocol_ref,
                origin_is_sender: compact,
            })
        };
        let frame = rs2p_wire::encode(&pb::MeshFrame { kind: Some(kind) });
        sim.node_mut(1).handle_frame(ConnId(2), frame, now);
        sim.flush();
    }
    sim.run_until_idle();
}
