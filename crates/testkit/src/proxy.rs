//! [`ChaosProxy`]: a TCP forwarder between real sockets that can stall, for links that neither
//! close nor carry data (what `tc netem` would do, which this kernel lacks).
//!
//! While stalled, the proxy stops reading from both sides of every connection: the senders'
//! kernel buffers fill, their writes stop making progress, and nothing is closed or reset. On
//! [`ChaosProxy::resume`] the bytes held in those buffers flow again, in order.
//!
//! ```
//! use std::io::{Read, Write};
//! use rs2p_testkit::proxy::ChaosProxy;
//!
//! let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
//! let proxy = ChaosProxy::spawn("127.0.0.1:0".parse().unwrap(), server.local_addr().unwrap()).unwrap();
//! let mut client = std::net::TcpStream::connect(proxy.local_addr()).unwrap();
//! let (mut inside, _) = server.accept().unwrap();
//! client.write_all(b"ping").unwrap();
//! let mut buf = [0; 4];
//! inside.read_exact(&mut buf).unwrap();
//! assert_eq!(&buf, b"ping");
//! assert_eq!(proxy.forwarded(), 4);
//! ```

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Default)]
struct State {
    stalled: AtomicBool,
    stopped: AtomicBool,
    forwarded: AtomicU64,
    connections: AtomicU64,
}

/// A forwarder from a local address to `target`. Threads end when it is dropped.
pub struct ChaosProxy {
    state: Arc<State>,
    addr: SocketAddr,
}

impl ChaosProxy {
    /// Listens on `listen` and forwards every connection to `target`.
    pub fn spawn(listen: SocketAddr, target: SocketAddr) -> std::io::Result<ChaosProxy> {
        let listener = TcpListener::bind(listen)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::default());
        let s = state.clone();
        std::thread::spawn(move || {
            while !s.stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((inbound, _)) => {
                        let Ok(outbound) =
                            TcpStream::connect_timeout(&target, Duration::from_secs(5))
                        else {
                            continue;
                        };
                        s.connections.fetch_add(1, Ordering::Relaxed);
                        let _ = inbound.set_nonblocking(false);
                        for (from, to) in [
                            (inbound.try_clone(), outbound.try_clone()),
                            (outbound.try_clone(), inbound.try_clone()),
                        ] {
                            if let (Ok(from), Ok(to)) = (from, to) {
                                let s = s.clone();
                                std::thread::spawn(move || pump(from, to, &s));
                            }
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(ChaosProxy { state, addr })
    }

    /// Where the proxy listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops moving bytes (nothing is closed).
    pub fn stall(&self) {
        self.state.stalled.store(true, Ordering::SeqCst);
    }

    /// Moves bytes again.
    pub fn resume(&self) {
        self.state.stalled.store(false, Ordering::SeqCst);
    }

    /// Bytes forwarded so far, both ways.
    pub fn forwarded(&self) -> u64 {
        self.state.forwarded.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.state.connections.load(Ordering::Relaxed)
    }
}

impl Drop for ChaosProxy {
    fn drop(&mut self) {
        self.state.stopped.store(true, Ordering::SeqCst);
        self.state.stalled.store(false, Ordering::SeqCst);
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, s: &State) {
    let mut buf = [0u8; 16 * 1024];
    let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
    loop {
        if s.stopped.load(Ordering::Relaxed) {
            break;
        }
        if s.stalled.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                while s.stalled.load(Ordering::Relaxed) && !s.stopped.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(10));
                }
                // Counted before the write, so a receiver that has the bytes sees the count.
                s.forwarded.fetch_add(n as u64, Ordering::SeqCst);
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}
