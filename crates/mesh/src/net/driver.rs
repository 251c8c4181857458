//! The node's task: accepts and dials TCP connections, runs handshakes, pumps the [`Node`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rs2p_base::handshake::LocalInfo;
use rs2p_base::net::{handshake, FrameReader, FrameWriter, Role, SecureConnection};
use rs2p_base::{HandshakeError, LocalIdentity, Network, PeerId};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use super::unix_ms;
use crate::proto::{
    CloseReason, ConnId, Context, Direction, Handler, Mesh, MeshEvent, MeshStats, Node, Output,
};
use crate::{MeshConfig, MeshError};

pub(crate) type CallFn = Box<dyn FnOnce(&mut Context<'_>) + Send>;

pub(crate) enum Command {
    Connect {
        addr: SocketAddr,
        reply: oneshot::Sender<Result<PeerId, MeshError>>,
    },
    Disconnect {
        peer: PeerId,
        reply: oneshot::Sender<Result<(), MeshError>>,
    },
    Broadcast {
        protocol: String,
        payload: Bytes,
        reply: oneshot::Sender<Result<(), MeshError>>,
    },
    Whisper {
        peer: PeerId,
        protocol: String,
        payload: Bytes,
        reply: oneshot::Sender<Result<(), MeshError>>,
    },
    Peers {
        reply: oneshot::Sender<Vec<PeerId>>,
    },
    Stats {
        reply: oneshot::Sender<MeshStats>,
    },
    Register {
        handler: Box<dyn Handler>,
        reply: oneshot::Sender<Result<(), MeshError>>,
    },
    Call {
        protocol: String,
        f: CallFn,
        reply: oneshot::Sender<Result<(), MeshError>>,
    },
    Close {
        reply: oneshot::Sender<()>,
    },
}

/// How long the driver works before it yields to the runtime's other tasks.
const TIME_SLICE: Duration = Duration::from_millis(2);

/// Bytes of frames one connection may have read but not yet handled. The node handles frames in
/// the order they were read, across all connections: without a bound per connection, one peer
/// sending faster than the node handles fills the shared queue, and every other peer's frames
/// wait behind its backlog (seconds, under a sustained load). With it, a frame waits behind at
/// most this much of any one other peer's traffic, and the fast peer is held back by TCP's flow
/// control, which reaches its writer through its send queue.
const INBOUND_BUDGET: usize = 256 * 1024;

enum ConnEvent {
    Established {
        conn: ConnId,
        direction: Direction,
        dialed: Option<SocketAddr>,
        secure: Box<SecureConnection>,
    },
    HandshakeFailed {
        conn: ConnId,
        dialed: Option<SocketAddr>,
        error: HandshakeError,
    },
    DialFailed {
        addr: SocketAddr,
    },
    Frame {
        conn: ConnId,
        frame: Bytes,
        /// The frame's share of its connection's inbound budget, given back once it is handled.
        _budget: OwnedSemaphorePermit,
    },
    Closed {
        conn: ConnId,
    },
}

struct Link {
    tx: mpsc::Sender<Bytes>,
    kill: Option<oneshot::Sender<()>>,
    /// Incremented by the writer after every flush.
    progress: Arc<AtomicU64>,
    seen_progress: u64,
    progressed_at: Instant,
    writer: tokio::task::JoinHandle<()>,
    /// The reader reads nothing before this Unix ms (the peer is over its rate).
    paused_until: Arc<AtomicU64>,
    /// Bytes in `tx` (added when queued, taken off by the writer).
    queued_bytes: Arc<AtomicUsize>,
    max_bytes: usize,
}

impl Link {
    fn over_half(&self) -> bool {
        self.tx.capacity() * 2 < self.tx.max_capacity()
            || self.queued_bytes.load(Ordering::Relaxed) * 2 > self.max_bytes
    }

    fn empty(&self) -> bool {
        self.tx.capacity() == self.tx.max_capacity()
    }

    /// Queues a frame unless the queue is full (in frames: the byte bound holds local commands
    /// back and detects stalls, but never drops a frame, so a large transfer is not cut).
    fn send(&self, frame: Bytes) -> bool {
        let len = frame.len();
        if self.tx.try_send(frame).is_err() {
            return false;
        }
        self.queued_bytes.fetch_add(len, Ordering::Relaxed);
        true
    }
}

pub(crate) struct Driver {
    node: Node,
    identity: LocalIdentity,
    network: Network,
    cfg: MeshConfig,
    listener: TcpListener,
    cmd_rx: mpsc::Receiver<Command>,
    events: broadcast::Sender<MeshEvent>,
    conn_tx: mpsc::Sender<ConnEvent>,
    conn_rx: mpsc::Receiver<ConnEvent>,
    links: HashMap<ConnId, Link>,
    next_conn: u64,
    connect_waiters: HashMap<SocketAddr, Vec<oneshot::Sender<Result<PeerId, MeshError>>>>,
    /// Woken by writers after each flush, so that commands held back by backpressure resume.
    room: Arc<tokio::sync::Notify>,
    send_queue_drops: u64,
    stalled_disconnects: u64,
    /// When this node started (unix ms), told to every peer in the handshake.
    incarnation: u64,
}

impl Driver {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        identity: LocalIdentity,
        network: Network,
        cfg: MeshConfig,
        seed: u64,
        listener: TcpListener,
        addr: SocketAddr,
        cmd_rx: mpsc::Receiver<Command>,
        events: broadcast::Sender<MeshEvent>,
    ) -> Self {
        let mut mesh = Mesh::new(
            cfg.clone(),
            identity.keypair().clone(),
            *network.id(),
            unix_ms(),
        );
        mesh.set_listen_addrs(vec![addr]);
        let (conn_tx, conn_rx) = mpsc::channel(4096);
        Self {
            node: Node::new(mesh, seed),
            identity,
            network,
            cfg,
            listener,
            cmd_rx,
            events,
            conn_tx,
            conn_rx,
            links: HashMap::new(),
            next_conn: 0,
            connect_waiters: HashMap::new(),
            room: Arc::new(tokio::sync::Notify::new()),
            send_queue_drops: 0,
            stalled_disconnects: 0,
            incarnation: unix_ms().max(1),
        }
    }

    fn conn_id(&mut self) -> ConnId {
        self.next_conn += 1;
        ConnId(self.next_conn)
    }

    pub(crate) async fn run(mut self) {
        let mut slice = Instant::now();
        loop {
            // The node's work comes in bursts (a peer's batch of frames, a large write) that can
            // keep this task busy for many milliseconds between two waits that find nothing
            // ready; give the runtime's other tasks (other nodes, the application) a turn.
            if slice.elapsed() >= TIME_SLICE {
                tokio::task::yield_now().await;
                slice = Instant::now();
            }
            let now = unix_ms();
            let wait =
                Duration::from_millis(self.node.next_deadline().saturating_sub(now).min(1000));
            let congested = self.refresh_links();
            let room = self.room.clone();
            tokio::select! {
                // Backpressure: while a reading peer's queue is over half full, local commands wait.
                () = room.notified(), if congested => {}
                cmd = self.cmd_rx.recv(), if !congested => match cmd {
                    Some(Command::Close { reply }) => {
                        self.shutdown().await;
                        // Release the listening port before saying we are closed.
                        drop(self);
                        let _ = reply.send(());
                        return;
                    }
                    Some(cmd) => self.on_command(cmd),
                    None => {
                        self.shutdown().await;
                        return;
                    }
                },
                Some(ev) = self.conn_rx.recv() => {
                    self.on_conn_event(ev);
                    // Take whatever else is ready before flushing outputs, to batch, within the
                    // time slice: commands (a local write, say) wait no longer than that.
                    for _ in 0..256 {
                        if slice.elapsed() >= TIME_SLICE {
                            break;
                        }
                        match self.conn_rx.try_recv() {
                            Ok(ev) => self.on_conn_event(ev),
                            Err(_) => break,
                        }
                    }
                }
                accepted = self.listener.accept() => {
                    if let Ok((stream, peer_addr)) = accepted {
                        self.on_accept(stream, peer_addr);
                    }
                }
                () = tokio::time::sleep(wait) => self.node.handle_tick(unix_ms()),
            }
            self.drain_outputs();
        }
    }

    fn on_command(&mut self, cmd: Command) {
        let now = unix_ms();
        match cmd {
            Command::Connect { addr, reply } => {
                self.node.connect(addr, now);
                // Already connected there (say the peer dialed us first, after another peer
                // named it): nothing will be dialed, so answer now rather than never.
                match self.node.mesh().connected_at(addr) {
                    Some(peer) => {
                        let _ = reply.send(Ok(peer));
                    }
                    None => self.connect_waiters.entry(addr).or_default().push(reply),
                }
            }
            Command::Disconnect { peer, reply } => {
                let _ = reply.send(self.node.disconnect(peer, now));
            }
            Command::Broadcast {
                protocol,
                payload,
                reply,
            } => {
                let r = self.node.broadcast(&protocol, payload, now);
                self.drain_outputs();
                let _ = reply.send(r);
            }
            Command::Whisper {
                peer,
                protocol,
                payload,
                reply,
            } => {
                let r = self.node.whisper(peer, &protocol, payload, now);
                self.drain_outputs();
                let _ = reply.send(r);
            }
            Command::Peers { reply } => {
                let _ = reply.send(self.node.mesh().peers().to_vec());
            }
            Command::Stats { reply } => {
                let mut stats = self.node.mesh().stats();
                stats.send_queue_drops = self.send_queue_drops;
                stats.stalled_disconnects = self.stalled_disconnects;
                let _ = reply.send(stats);
            }
            Command::Register { handler, reply } => {
                let _ = reply.send(self.node.register(handler, now));
            }
            Command::Call { protocol, f, reply } => {
                let r = self.node.with_handler(&protocol, now, |_, cx| f(cx));
                self.node.pump(now);
                // The frames go to the writers before the caller is answered (here and above):
                // waking the caller may cost a system call (another worker thread), and the
                // frames are the write's way to every other node.
                self.drain_outputs();
                let _ = reply.send(r);
            }
            Command::Close { .. } => {}
        }
    }

    fn on_accept(&mut self, stream: TcpStream, peer_addr: SocketAddr) {
        let conn = self.conn_id();
        if !self.node.handle_incoming(conn, peer_addr.ip()) {
            return; // dropping the stream closes it
        }
        self.spawn_handshake(conn, stream, Role::Responder, Direction::Inbound, None);
    }

    fn dial(&mut self, addr: SocketAddr, expected: Option<PeerId>) {
        let conn = self.conn_id();
        self.node.handle_dialing(conn, addr);
        let tx = self.conn_tx.clone();
        let identity = self.identity.clone();
        let network = self.network.clone();
        let info = self.local_info();
        let (max, timeout) = (self.cfg.max_frame_len, self.cfg.handshake_timeout);
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => s,
                _ => {
                    let _ = tx.send(ConnEvent::DialFailed { addr }).await;
                    return;
                }
            };
            let ev = match handshake(
                stream,
                Role::Initiator(expected),
                &identity,
                &network,
                info,
                max,
                timeout,
            )
            .await
            {
                Ok(secure) => ConnEvent::Established {
                    conn,
                    direction: Direction::Outbound,
                    dialed: Some(addr),
                    secure: Box::new(secure),
                },
                Err(error) => ConnEvent::HandshakeFailed {
                    conn,
                    dialed: Some(addr),
                    error,
                },
            };
            let _ = tx.send(ev).await;
        });
    }

    fn local_info(&self) -> LocalInfo {
        LocalInfo {
            listen_addrs: self.node.mesh().listen_addrs().to_vec(),
            protocols: self.node.protocols(),
            incarnation: self.incarnation,
            features: crate::proto::FEATURES,
        }
    }

    fn spawn_handshake(
        &mut self,
        conn: ConnId,
        stream: TcpStream,
        role: Role,
        direction: Direction,
        dialed: Option<SocketAddr>,
    ) {
        let tx = self.conn_tx.clone();
        let identity = self.identity.clone();
        let network = self.network.clone();
        let info = self.local_info();
        let (max, timeout) = (self.cfg.max_frame_len, self.cfg.handshake_timeout);
        tokio::spawn(async move {
            let ev = match handshake(stream, role, &identity, &network, info, max, timeout).await {
                Ok(secure) => ConnEvent::Established {
                    conn,
                    direction,
                    dialed,
                    secure: Box::new(secure),
                },
                Err(error) => ConnEvent::HandshakeFailed {
                    conn,
                    dialed,
                    error,
                },
            };
            let _ = tx.send(ev).await;
        });
    }

    fn on_conn_event(&mut self, ev: ConnEvent) {
        let now = unix_ms();
        match ev {
            ConnEvent::Established {
                conn,
                direction,
                dialed,
                secure,
            } => {
                let SecureConnection {
                    remote,
                    peer_addr,
                    reader,
                    writer,
                } = *secure;
                let peer = remote.peer_id;
                self.start_link(conn, reader, writer);
                self.node
                    .handle_established(conn, direction, dialed, remote, peer_addr, now);
                if let Some(addr) = dialed {
                    self.answer_connect(addr, Ok(peer));
                }
            }
            ConnEvent::HandshakeFailed {
                conn,
                dialed,
                error,
            } => match dialed {
                Some(addr) => {
                    let self_conn = matches!(error, HandshakeError::SelfConnection);
                    self.node
                        .handle_dial_failed(Some(conn), addr, self_conn, now);
                    self.answer_connect(addr, Err(MeshError::Handshake(error)));
                }
                None => self.node.handle_handshake_failed(conn),
            },
            ConnEvent::DialFailed { addr } => {
                self.node.handle_dial_failed(None, addr, false, now);
                let err = std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    format!("could not connect to {addr}"),
                );
                self.answer_connect(addr, Err(MeshError::Io(err)));
            }
            ConnEvent::Frame { conn, frame, .. } => self.node.handle_frame(conn, frame, now),
            ConnEvent::Closed { conn } => {
                self.links.remove(&conn);
                self.node.handle_closed(conn, now);
            }
        }
    }

    fn answer_connect(&mut self, addr: SocketAddr, result: Result<PeerId, MeshError>) {
        if let Some(waiters) = self.connect_waiters.remove(&addr) {
            let mut result = Some(result);
            for w in waiters {
                let r = match &result {
                    Some(Ok(p)) => Ok(*p),
                    _ => match result.take() {
                        Some(Err(e)) => Err(e),
                        _ => Err(MeshError::Closed),
                    },
                };
                let _ = w.send(r);
            }
        }
    }

    fn start_link(&mut self, conn: ConnId, mut reader: FrameReader, mut writer: FrameWriter) {
        let (tx, mut rx) = mpsc::channel::<Bytes>(self.cfg.send_queue_len);
        let (kill_tx, mut kill_rx) = oneshot::channel::<()>();
        let progress = Arc::new(AtomicU64::new(0));
        let paused_until = Arc::new(AtomicU64::new(0));
        let (made, room) = (progress.clone(), self.room.clone());
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let taken = queued_bytes.clone();
        let writer = tokio::spawn(async move {
            // Writer: take everything queued, write it in one go, repeat; when the queue is
            // closed (the link is being closed), flush what is left and shut down.
            while let Some(first) = rx.recv().await {
                taken.fetch_sub(first.len(), Ordering::Relaxed);
                writer.queue(&first);
                while writer.queued_len() < 256 * 1024 {
                    match rx.try_recv() {
                        Ok(f) => {
                            taken.fetch_sub(f.len(), Ordering::Relaxed);
                            writer.queue(&f);
                        }
                        Err(_) => break,
                    }
                }
                if writer.flush().await.is_err() {
                    return;
                }
                made.fetch_add(1, Ordering::Relaxed);
                room.notify_one();
            }
            let _ = writer.shutdown().await;
        });
        self.links.insert(
            conn,
            Link {
                tx,
                kill: Some(kill_tx),
                progress,
                seen_progress: 0,
                progressed_at: Instant::now(),
                writer,
                paused_until: paused_until.clone(),
                queued_bytes,
                max_bytes: self.cfg.send_queue_bytes,
            },
        );
        let events = self.conn_tx.clone();
        let budget = Arc::new(Semaphore::new(INBOUND_BUDGET));
        tokio::spawn(async move {
            loop {
                let pause = paused_until
                    .load(Ordering::Relaxed)
                    .saturating_sub(unix_ms());
                if pause > 0 {
                    // Throttled: TCP's flow control holds the peer back meanwhile.
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(pause)) => {}
                        _ = &mut kill_rx => break,
                    }
                }
                tokio::select! {
                    frame = reader.next_frame() => match frame {
                        Ok(Some(frame)) => {
                            // Hold the frame until this connection's earlier frames are handled
                            // enough to leave room for it: a peer that sends faster than we
                            // handle waits in its own TCP stream, not in front of other peers.
                            let cost = frame.len().clamp(1, INBOUND_BUDGET) as u32;
                            let Ok(_budget) = budget.clone().acquire_many_owned(cost).await else {
                                break;
                            };
                            let ev = ConnEvent::Frame { conn, frame, _budget };
                            if events.send(ev).await.is_err() {
                                break;
                            }
                        }
                        Ok(None) | Err(_) => break,
                    },
                    _ = &mut kill_rx => break,
                }
            }
            let _ = events.send(ConnEvent::Closed { conn }).await;
        });
    }

    fn drain_outputs(&mut self) {
        while let Some(out) = self.node.poll_output() {
            match out {
                Output::Send { conn, frame } => {
                    if let Some(link) = self.links.get(&conn) {
                        if !link.send(frame) {
                            // Full: local commands already wait for room, so this is a relay or
                            // a reply; other paths (and the sync socket's repair) recover it. A
                            // peer that stays full without reading is dropped by refresh_links.
                            self.send_queue_drops += 1;
                        }
                    }
                }
                Output::Dial { addr, expected } => self.dial(addr, expected),
                Output::Close { conn, reason } => self.close_link(conn, reason),
                Output::Event(e) => {
                    let _ = self.events.send(e);
                }
                Output::Throttle { conn, until } => {
                    if let Some(link) = self.links.get(&conn) {
                        link.paused_until.store(until, Ordering::Relaxed);
                    }
                }
                Output::Deliver(_) => {}
            }
        }
    }

    /// Notes each link's writer progress; closes links that stayed over half full without
    /// progress for `stall_timeout`. Returns whether some other peer's queue is more than half
    /// full (then local commands wait).
    fn refresh_links(&mut self) -> bool {
        let now = Instant::now();
        let mut stalled = Vec::new();
        let mut congested = false;
        for (&conn, l) in &mut self.links {
            self.node
                .mesh_mut()
                .set_backlog(conn, l.queued_bytes.load(Ordering::Relaxed));
            let p = l.progress.load(Ordering::Relaxed);
            if p != l.seen_progress || l.empty() {
                l.seen_progress = p;
                l.progressed_at = now;
            }
            // Any queue over half full holds local commands back, however slowly its peer
            // reads: an honest but slow peer then loses nothing. A peer whose queue stays over
            // half full without any progress for `stall_timeout` is not reading at all: it is
            // dropped, and the commands resume.
            if l.over_half() {
                if now.duration_since(l.progressed_at) > self.cfg.stall_timeout {
                    stalled.push(conn);
                } else {
                    congested = true;
                }
            }
        }
        for conn in stalled {
            self.stalled_disconnects += 1;
            if let Some(link) = self.links.get(&conn) {
                // It cannot flush: stop its writer now instead of waiting on a full socket.
                link.writer.abort();
            }
            self.close_link(conn, CloseReason::Misbehaviour);
        }
        congested
    }

    /// Closes the queue (the writer flushes and shuts down) and ends the reader after a grace
    /// period, so frames the peer already sent are still read; a writer still stuck then is
    /// stopped too.
    fn close_link(&mut self, conn: ConnId, _reason: CloseReason) {
        if let Some(mut link) = self.links.remove(&conn) {
            let kill = link.kill.take();
            let writer = link.writer;
            drop(link.tx);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(2)).await;
                if let Some(k) = kill {
                    let _ = k.send(());
                }
                writer.abort();
            });
        }
    }

    async fn shutdown(&mut self) {
        self.node.shutdown(unix_ms());
        self.drain_outputs();
        // Give writers a moment to flush their goodbyes.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
