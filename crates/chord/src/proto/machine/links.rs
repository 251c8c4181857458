//! Links: dialing the nodes the ring needs, and messages kept until they connect.

use bytes::Bytes;
use rs2p_mesh::Context;

use super::*;

impl ChordMachine {
    pub(super) fn ensure_link(&mut self, cx: &mut Context<'_>, n: &NodeRef) {
        if n.peer != self.me.peer && !cx.peers().contains(&n.peer) {
            if let Some(&a) = n.addrs.first() {
                cx.dial(a, Some(n.peer));
            }
        }
    }

    /// Whispers `msg` to `n`, dialing it first (and keeping the message) if not connected.
    pub(super) fn send(&mut self, cx: &mut Context<'_>, n: &NodeRef, msg: Bytes) {
        if cx.peers().contains(&n.peer) {
            cx.whisper(n.peer, msg);
            return;
        }
        self.ensure_link(cx, n);
        let now = self.now;
        let cap = self.cfg.outbox_len;
        let entry = self.outbox.entry(n.peer).or_insert((now, Vec::new()));
        if entry.1.len() < cap {
            entry.1.push(msg);
        }
    }
}
