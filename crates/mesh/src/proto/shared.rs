//! [`Shared`]: a handler the node calls and its user reads, through one lock.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rs2p_base::PeerId;

use super::handler::{Context, Handler, InboundMessage, Verdict};

/// Wraps a handler so that the node (which owns a `Box<dyn Handler>`) and the user's handle (which
/// keeps a clone) reach the same state. Register a clone; read with [`Shared::lock`].
#[derive(Debug)]
pub struct Shared<H> {
    inner: Arc<Mutex<H>>,
    protocol: String,
    self_verifying: bool,
}

impl<H> Clone for Shared<H> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            protocol: self.protocol.clone(),
            self_verifying: self.self_verifying,
        }
    }
}

impl<H: Handler> Shared<H> {
    /// Shares `handler`.
    pub fn new(handler: H) -> Self {
        let protocol = handler.protocol().to_owned();
        let self_verifying = handler.verifies_own_payloads();
        Self {
            inner: Arc::new(Mutex::new(handler)),
            protocol,
            self_verifying,
        }
    }

    /// Locks the handler (a poisoned lock is recovered: handlers never panic on remote input).
    pub fn lock(&self) -> MutexGuard<'_, H> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<H: Handler> Handler for Shared<H> {
    fn protocol(&self) -> &str {
        &self.protocol
    }
    fn verifies_own_payloads(&self) -> bool {
        self.self_verifying
    }
    fn on_peer_connected(&mut self, cx: &mut Context<'_>, peer: PeerId) {
        self.lock().on_peer_connected(cx, peer);
    }
    fn on_peer_disconnected(&mut self, cx: &mut Context<'_>, peer: PeerId) {
        self.lock().on_peer_disconnected(cx, peer);
    }
    fn on_message(&mut self, cx: &mut Context<'_>, msg: InboundMessage) -> Verdict {
        self.lock().on_message(cx, msg)
    }
    fn on_timer(&mut self, cx: &mut Context<'_>, token: u64) {
        self.lock().on_timer(cx, token);
    }
}
