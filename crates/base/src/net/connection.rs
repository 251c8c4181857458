use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rs2p_wire::framing::FrameDecoder;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::handshake::{
    Handshake, LocalInfo, RecvCipher, RemoteInfo, SendCipher, MAX_NOISE_MESSAGE,
    MAX_TRANSPORT_PLAINTEXT, TAG_LEN,
};
use crate::{ConnectionError, HandshakeError, LocalIdentity, Network, PeerId};

/// Which side of the handshake this node plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// We dialed; with `Some`, only that peer may answer.
    Initiator(Option<PeerId>),
    /// We accepted.
    Responder,
}

/// An established, authenticated, encrypted connection, split into its two directions.
#[derive(Debug)]
pub struct SecureConnection {
    /// Who the peer proved to be, and what it said about itself.
    pub remote: RemoteInfo,
    /// The peer's socket address.
    pub peer_addr: SocketAddr,
    /// The receiving half.
    pub reader: FrameReader,
    /// The sending half.
    pub writer: FrameWriter,
}

/// Runs the handshake on `stream`, failing with [`HandshakeError::Timeout`] after `timeout`.
/// Frames over `max_frame_len` are refused afterwards.
pub async fn handshake(
    stream: TcpStream,
    role: Role,
    id: &LocalIdentity,
    network: &Network,
    info: LocalInfo,
    max_frame_len: usize,
    timeout: Duration,
) -> Result<SecureConnection, HandshakeError> {
    match tokio::time::timeout(timeout, run(stream, role, id, network, info, max_frame_len)).await {
        Ok(r) => r,
        Err(_) => Err(HandshakeError::Timeout),
    }
}

async fn run(
    stream: TcpStream,
    role: Role,
    id: &LocalIdentity,
    network: &Network,
    info: LocalInfo,
    max_frame_len: usize,
) -> Result<SecureConnection, HandshakeError> {
    stream.set_nodelay(true)?;
    let peer_addr = stream.peer_addr()?;
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::with_capacity(128 * 1024, read);
    let mut hs = match role {
        Role::Initiator(expected) => Handshake::initiator(id, network, info, expected)?,
        Role::Responder => Handshake::responder(id, network, info)?,
    };
    let mut buf = vec![0u8; MAX_NOISE_MESSAGE];
    while !hs.is_done() {
        let mut sent = false;
        while let Some(msg) = hs.poll_transmit()? {
            write_noise_message(&mut write, &msg).await?;
            sent = true;
        }
        if sent {
            write.flush().await?;
        }
        if hs.is_done() {
            break;
        }
        let n = match read_noise_message(&mut read, &mut buf).await {
            Ok(Some(n)) => n,
            Ok(None) => return Err(HandshakeError::Closed),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(HandshakeError::Closed)
            }
            Err(e) => return Err(e.into()),
        };
        hs.handle_message(&buf[..n])?;
    }
    let (remote, cipher) = hs.finish()?;
    Ok(SecureConnection {
        remote,
        peer_addr,
        reader: FrameReader {
            io: read,
            cipher: cipher.recv,
            ciphertext: vec![0u8; MAX_NOISE_MESSAGE],
            plain: BytesMut::with_capacity(64 * 1024),
            decoder: FrameDecoder::new(max_frame_len),
        },
        writer: FrameWriter {
            io: write,
            cipher: cipher.send,
            plain: BytesMut::with_capacity(64 * 1024),
            out: Vec::with_capacity(64 * 1024),
        },
    })
}

async fn write_noise_message(w: &mut OwnedWriteHalf, msg: &[u8]) -> std::io::Result<()> {
    let len =
        u16::try_from(msg.len()).map_err(|_| std::io::Error::other("noise message over 64 KiB"))?;
    let mut out = Vec::with_capacity(2 + msg.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(msg);
    w.write_all(&out).await
}

/// Reads one `u16`-length-prefixed message into `buf`; `None` at a clean end of stream.
async fn read_noise_message(
    r: &mut BufReader<OwnedReadHalf>,
    buf: &mut [u8],
) -> std::io::Result<Option<usize>> {
    let mut len = [0u8; 2];
    let first = r.read(&mut len[..1]).await?;
    if first == 0 {
        return Ok(None);
    }
    r.read_exact(&mut len[1..]).await?;
    let n = usize::from(u16::from_be_bytes(len));
    r.read_exact(&mut buf[..n]).await?;
    Ok(Some(n))
}

/// The receiving half of a [`SecureConnection`].
pub struct FrameReader {
    io: BufReader<OwnedReadHalf>,
    cipher: RecvCipher,
    ciphertext: Vec<u8>,
    plain: BytesMut,
    decoder: FrameDecoder,
}

impl std::fmt::Debug for FrameReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameReader")
            .field("buffered", &self.plain.len())
            .finish_non_exhaustive()
    }
}

impl FrameReader {
    /// The next frame, or `None` when the peer closed the connection cleanly. Any error is final.
    pub async fn next_frame(&mut self) -> Result<Option<Bytes>, ConnectionError> {
        loop {
            if let Some(frame) = self.decoder.decode(&mut self.plain)? {
                return Ok(Some(frame.freeze()));
            }
            let n = match read_noise_message(&mut self.io, &mut self.ciphertext).await {
                Ok(Some(n)) => n,
                Ok(None) if self.plain.is_empty() => return Ok(None),
                Ok(None) => return Err(ConnectionError::Truncated),
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return Err(ConnectionError::Truncated)
                }
                Err(e) => return Err(e.into()),
            };
            let start = self.plain.len();
            self.plain.resize(start + n, 0);
            let m = self
                .cipher
                .decrypt(&self.ciphertext[..n], &mut self.plain[start..])
                .map_err(|_| ConnectionError::Decrypt)?;
            self.plain.truncate(start + m);
        }
    }
}

/// The sending half of a [`SecureConnection`]: [`FrameWriter::queue`] frames, then
/// [`FrameWriter::flush`] them in one write.
pub struct FrameWriter {
    io: OwnedWriteHalf,
    cipher: SendCipher,
    plain: BytesMut,
    out: Vec<u8>,
}

impl std::fmt::Debug for FrameWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameWriter")
            .field("queued", &self.plain.len())
            .finish_non_exhaustive()
    }
}

impl FrameWriter {
    /// Appends one frame (its encoded body) to what the next flush sends.
    pub fn queue(&mut self, body: &[u8]) {
        rs2p_wire::framing::encode_raw_frame(body, &mut self.plain);
    }

    /// Appends raw bytes to the encrypted stream, bypassing the framing: only for tests that play
    /// a hostile peer.
    #[doc(hidden)]
    pub fn queue_raw_for_tests(&mut self, bytes: &[u8]) {
        self.plain.extend_from_slice(bytes);
    }

    /// Bytes queued and not yet flushed.
    pub fn queued_len(&self) -> usize {
        self.plain.len()
    }

    /// Encrypts everything queued and writes it in one system call (more for very large batches).
    pub async fn flush(&mut self) -> Result<(), ConnectionError> {
        if self.plain.is_empty() {
            return Ok(());
        }
        self.out.clear();
        for chunk in self.plain.chunks(MAX_TRANSPORT_PLAINTEXT) {
            let start = self.out.len();
            let len = chunk.len() + TAG_LEN;
            self.out.extend_from_slice(&(len as u16).to_be_bytes());
            self.out.resize(start + 2 + len, 0);
            self.cipher
                .encrypt(chunk, &mut self.out[start + 2..])
                .map_err(|_| ConnectionError::Decrypt)?;
        }
        self.plain.clear();
        self.io.write_all(&self.out).await?;
        Ok(())
    }

    /// Flushes and closes the sending direction.
    pub async fn shutdown(&mut self) -> Result<(), ConnectionError> {
        self.flush().await?;
        self.io.shutdown().await?;
        Ok(())
    }
}
