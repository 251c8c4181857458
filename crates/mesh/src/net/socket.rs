use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use bytes::Bytes;
use rs2p_base::{Keypair, LocalIdentity, Network, PeerId};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_stream::wrappers::BroadcastStream;

use super::driver::{Command, Driver};
use crate::proto::{Context, Handler, MeshEvent, MeshStats};
use crate::{MeshConfig, MeshError};

/// How to start a [`MeshSocket`].
#[derive(Debug, Clone)]
pub struct MeshOptions {
    /// Where to listen. Default `127.0.0.1:0` (any free port on loopback).
    pub listen: SocketAddr,
    /// Which network to join. Default [`Network::default`].
    pub network: Network,
    /// The node's identity. Default: a fresh random one.
    pub keypair: Option<Keypair>,
    /// Limits and timings.
    pub config: MeshConfig,
    /// Seed of the node's random choices. Default: random.
    pub seed: Option<u64>,
}

impl Default for MeshOptions {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            network: Network::default(),
            keypair: None,
            config: MeshConfig::default(),
            seed: None,
        }
    }
}

/// A node of the mesh: connects to peers over TCP, finds more through them, floods and whispers
/// messages, and hosts socket types ([`Handler`]s).
///
/// Cloning gives another handle to the same node. The node stops when [`MeshSocket::close`] is
/// called or every handle is dropped.
#[derive(Clone, Debug)]
pub struct MeshSocket {
    cmd: mpsc::Sender<Command>,
    events: broadcast::Sender<MeshEvent>,
    id: PeerId,
    addr: SocketAddr,
}

impl MeshSocket {
    /// Binds the listener and starts the node's task.
    pub async fn bind(opts: MeshOptions) -> Result<Self, MeshError> {
        let listener = tokio::net::TcpListener::bind(opts.listen).await?;
        let addr = listener.local_addr()?;
        let identity = LocalIdentity::new(opts.keypair.unwrap_or_else(Keypair::generate));
        let id = identity.peer_id();
        let (cmd_tx, cmd_rx) = mpsc::channel(1024);
        let (events, _) = broadcast::channel(4096);
        let seed = opts.seed.unwrap_or_else(rand::random);
        let driver = Driver::new(
            identity,
            opts.network,
            opts.config,
            seed,
            listener,
            addr,
            cmd_rx,
            events.clone(),
        );
        tokio::spawn(driver.run());
        Ok(Self {
            cmd: cmd_tx,
            events,
            id,
            addr,
        })
    }

    /// This node's id.
    pub fn local_id(&self) -> PeerId {
        self.id
    }

    /// The address this node listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    async fn ask<R>(
        &self,
        make: impl FnOnce(oneshot::Sender<R>) -> Command,
    ) -> Result<R, MeshError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(make(tx))
            .await
            .map_err(|_| MeshError::Closed)?;
        rx.await.map_err(|_| MeshError::Closed)
    }

    /// Connects to the node at `addr` and keeps reconnecting (with backoff) whenever the
    /// connection drops. Returns the peer's id once the handshake succeeded.
    pub async fn connect(&self, addr: SocketAddr) -> Result<PeerId, MeshError> {
        self.ask(|reply| Command::Connect { addr, reply }).await?
    }

    /// Closes the connection to `peer` (and stops redialing it).
    pub async fn disconnect(&self, peer: PeerId) -> Result<(), MeshError> {
        self.ask(|reply| Command::Disconnect { peer, reply })
            .await?
    }

    /// Floods `payload` to every node of the mesh under `protocol`, signed by this node.
    pub async fn broadcast(
        &self,
        protocol: &str,
        payload: impl Into<Bytes>,
    ) -> Result<(), MeshError> {
        let (protocol, payload) = (protocol.to_owned(), payload.into());
        self.ask(|reply| Command::Broadcast {
            protocol,
            payload,
            reply,
        })
        .await?
    }

    /// Sends `payload` under `protocol` to one directly connected peer.
    pub async fn whisper(
        &self,
        peer: PeerId,
        protocol: &str,
        payload: impl Into<Bytes>,
    ) -> Result<(), MeshError> {
        let (protocol, payload) = (protocol.to_owned(), payload.into());
        self.ask(|reply| Command::Whisper {
            peer,
            protocol,
            payload,
            reply,
        })
        .await?
    }

    /// The directly connected peers, in ascending order.
    pub async fn peers(&self) -> Result<Vec<PeerId>, MeshError> {
        self.ask(|reply| Command::Peers { reply }).await
    }

    /// The node's traffic counters.
    pub async fn stats(&self) -> Result<MeshStats, MeshError> {
        self.ask(|reply| Command::Stats { reply }).await
    }

    /// Registers a socket type. It receives messages for its protocol id, peer changes and its
    /// timers from now on.
    pub async fn register(&self, handler: impl Handler) -> Result<(), MeshError> {
        let handler: Box<dyn Handler> = Box::new(handler);
        self.ask(|reply| Command::Register { handler, reply })
            .await?
    }

    /// Runs `f` inside the node with the [`Context`] of the handler registered under `protocol`,
    /// so that a socket type's user-facing methods can send, broadcast and set timers. The
    /// handler itself is reached through state `f` captures (typically an `Arc<Mutex<_>>`).
    pub async fn call<R: Send + 'static>(
        &self,
        protocol: &str,
        f: impl FnOnce(&mut Context<'_>) -> R + Send + 'static,
    ) -> Result<R, MeshError> {
        let protocol = protocol.to_owned();
        let (tx, rx) = oneshot::channel();
        let f: super::driver::CallFn = Box::new(move |cx: &mut Context<'_>| {
            let _ = tx.send(f(cx));
        });
        self.ask(|reply| Command::Call { protocol, f, reply })
            .await??;
        rx.await.map_err(|_| MeshError::Closed)
    }

    /// The node's events: peers connecting and leaving, messages for protocols without a handler,
    /// bans. A subscriber that falls more than 4096 events behind gets
    /// [`Lagged`](EventItem::Lagged) and continues from the newest.
    pub fn events(&self) -> EventStream {
        Events::new(self.events.subscribe())
    }

    /// Says goodbye to every peer, flushes, and stops the node.
    pub async fn close(&self) -> Result<(), MeshError> {
        self.ask(|reply| Command::Close { reply }).await
    }
}

/// One item of an event stream.
#[derive(Debug, Clone)]
pub enum EventItem<T> {
    /// An event.
    Event(T),
    /// This many events were missed because the subscriber was too slow.
    Lagged(u64),
}

/// A `Stream` of events from a bounded broadcast channel: what [`MeshSocket::events`] returns,
/// and what socket types built on the mesh can return for their own events.
#[derive(Debug)]
pub struct Events<T>(BroadcastStream<T>);

/// The mesh's event stream.
pub type EventStream = Events<MeshEvent>;

impl<T: Clone + Send + 'static> Events<T> {
    /// A stream of what is sent on `rx`'s channel from now on.
    pub fn new(rx: broadcast::Receiver<T>) -> Self {
        Self(BroadcastStream::new(rx))
    }

    /// The next event, or `None` once every sender is gone.
    pub async fn next(&mut self) -> Option<EventItem<T>> {
        std::future::poll_fn(|cx| futures_core::Stream::poll_next(Pin::new(&mut *self), cx)).await
    }

    /// The next event if one is already waiting, without waiting; `None` when none is (or every
    /// sender is gone). For draining a burst of events before acting once on all of them.
    pub fn try_next(&mut self) -> Option<EventItem<T>> {
        let mut cx = TaskContext::from_waker(std::task::Waker::noop());
        match futures_core::Stream::poll_next(Pin::new(&mut *self), &mut cx) {
            Poll::Ready(item) => item,
            Poll::Pending => None,
        }
    }
}

impl<T: Clone + Send + 'static> futures_core::Stream for Events<T> {
    type Item = EventItem<T>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<EventItem<T>>> {
        Pin::new(&mut self.0).poll_next(cx).map(|item| {
            item.map(|r| match r {
                Ok(e) => EventItem::Event(e),
                Err(tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(n)) => {
                    EventItem::Lagged(n)
                }
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn try_next_drains_what_is_waiting_and_never_waits() {
        let (tx, rx) = broadcast::channel::<u32>(8);
        let mut events = Events::new(rx);
        assert!(events.try_next().is_none(), "nothing sent yet");
        for i in 0..3 {
            tx.send(i).unwrap();
        }
        let mut got = Vec::new();
        while let Some(EventItem::Event(e)) = events.try_next() {
            got.push(e);
        }
        assert_eq!(got, vec![0, 1, 2]);
        // After a poll that found nothing, the stream still wakes a real waiter.
        let waiter = tokio::spawn(async move { events.next().await.map(|_| ()) });
        tokio::task::yield_now().await;
        tx.send(3).unwrap();
        assert_eq!(waiter.await.unwrap(), Some(()));
    }
}
