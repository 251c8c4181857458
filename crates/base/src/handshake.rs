//! The Noise `XXpsk3` handshake as a state machine without I/O.
//!
//! ```text
//! initiator                                   responder
//!   -> e                                (msg 1)
//!   <- e, ee, s, es, {payload R}        (msg 2)
//!   -> s, se, psk, {payload I}          (msg 3)
//!   <- transport #0 {HandshakeConfirm}  (confirm)
//! ```
//!
//! Each payload is a [`pb::HandshakePayload`]: the sender's ed25519 key, its signature over
//! `"rs2p/v1/noise-static-key" || noise static key`, the protocol version, its listen addresses
//! and socket protocols. The pre-shared key is mixed in at message 3, so a responder with another
//! key cannot decrypt it and refuses the connection; the confirm message tells the initiator that
//! the responder accepted, so neither side delivers an application frame unless both keys match.
//!
//! Contract: call [`Handshake::poll_transmit`] until it returns `None` and send what it returns,
//! in order; feed every message received to [`Handshake::handle_message`]; when
//! [`Handshake::is_done`], call [`Handshake::finish`]. Any error is final.

use std::net::SocketAddr;
use std::sync::Arc;

use rs2p_wire::pb;

use crate::identity::NOISE_STATIC_DOMAIN;
use crate::{HandshakeError, LocalIdentity, Network, PeerId, PROTOCOL_VERSION};

/// The longest Noise message.
pub const MAX_NOISE_MESSAGE: usize = 65535;
/// The AEAD tag added to every encrypted message.
pub const TAG_LEN: usize = 16;
/// The most plaintext one transport message carries.
pub const MAX_TRANSPORT_PLAINTEXT: usize = MAX_NOISE_MESSAGE - TAG_LEN;

const PROLOGUE: &[u8] = b"rs2p/v1";
const CONFIRM_MAGIC: &str = "rs2p/v1/confirm";
const MAX_ADDRS: usize = 16;
const MAX_PROTOCOLS: usize = 64;
const MAX_PROTOCOL_LEN: usize = 128;

pub(crate) fn noise_params() -> snow::params::NoiseParams {
    "Noise_XXpsk3_25519_ChaChaPoly_BLAKE2s"
        .parse()
        .expect("a valid Noise pattern name")
}

/// What this node tells its peer in the handshake.
#[derive(Clone, Debug, Default)]
pub struct LocalInfo {
    /// The addresses this node accepts connections on.
    pub listen_addrs: Vec<SocketAddr>,
    /// The socket protocols registered on this node.
    pub protocols: Vec<String>,
    /// When this node's process started (unix milliseconds; 0 if unknown). Peers that still
    /// hold a connection from an earlier run of the same identity keep the new one.
    pub incarnation: u64,
    /// Optional wire features this node understands, one bit each (the layers above define
    /// them; the mesh's compact floods are bit 0, its flat floods bit 1).
    pub features: u32,
}

/// What the peer proved and said about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteInfo {
    /// The peer's verified identity.
    pub peer_id: PeerId,
    /// The addresses the peer says it listens on.
    pub listen_addrs: Vec<SocketAddr>,
    /// The socket protocols the peer has registered.
    pub protocols: Vec<String>,
    /// When the peer's process started (unix milliseconds), as it says; 0 if it did not say.
    pub incarnation: u64,
    /// The optional wire features the peer says it understands (0 from nodes before them).
    pub features: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    SendMsg1,
    AwaitMsg2,
    SendMsg3,
    AwaitConfirm,
    AwaitMsg1,
    SendMsg2,
    AwaitMsg3,
    SendConfirm,
    Done,
    Failed,
}

/// One side of a handshake. See the [module docs](self) for the message flow and contract.
pub struct Handshake {
    noise: Option<snow::HandshakeState>,
    cipher: Option<Cipher>,
    step: Step,
    payload: Vec<u8>,
    local: PeerId,
    expected: Option<PeerId>,
    remote: Option<RemoteInfo>,
}

impl std::fmt::Debug for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handshake")
            .field("step", &self.step)
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl Handshake {
    /// The dialing side. With `expected`, the handshake fails unless that peer answers.
    pub fn initiator(
        id: &LocalIdentity,
        network: &Network,
        info: LocalInfo,
        expected: Option<PeerId>,
    ) -> Result<Self, HandshakeError> {
        let noise = builder(id, network)?
            .build_initiator()
            .map_err(|_| HandshakeError::Noise)?;
        Ok(Self::new(id, noise, info, expected, Step::SendMsg1))
    }

    /// The accepting side.
    pub fn responder(
        id: &LocalIdentity,
        network: &Network,
        info: LocalInfo,
    ) -> Result<Self, HandshakeError> {
        let noise = builder(id, network)?
            .build_responder()
            .map_err(|_| HandshakeError::Noise)?;
        Ok(Self::new(id, noise, info, None, Step::AwaitMsg1))
    }

    fn new(
        id: &LocalIdentity,
        noise: snow::HandshakeState,
        info: LocalInfo,
        expected: Option<PeerId>,
        step: Step,
    ) -> Self {
        let payload = pb::HandshakePayload {
            identity_key: id.peer_id().as_bytes().to_vec().into(),
            identity_sig: id.noise_sig().to_vec().into(),
            protocol_version: PROTOCOL_VERSION,
            listen_addrs: info.listen_addrs.iter().map(ToString::to_string).collect(),
            protocols: info.protocols,
            incarnation: info.incarnation,
            features: info.features,
        };
        Self {
            noise: Some(noise),
            cipher: None,
            step,
            payload: prost::Message::encode_to_vec(&payload),
            local: id.peer_id(),
            expected,
            remote: None,
        }
    }

    /// Whether the handshake completed successfully.
    pub fn is_done(&self) -> bool {
        self.step == Step::Done
    }

    /// The next message to send, if it is this side's turn.
    pub fn poll_transmit(&mut self) -> Result<Option<Vec<u8>>, HandshakeError> {
        let r = self.transmit();
        if r.is_err() {
            self.step = Step::Failed;
        }
        r
    }

    fn transmit(&mut self) -> Result<Option<Vec<u8>>, HandshakeError> {
        let mut buf = vec![0u8; MAX_NOISE_MESSAGE];
        match self.step {
            Step::SendMsg1 => {
                let n = self
                    .noise()?
                    .write_message(&[], &mut buf)
                    .map_err(|_| HandshakeError::Noise)?;
                buf.truncate(n);
                self.step = Step::AwaitMsg2;
            }
            Step::SendMsg2 => {
                let payload = std::mem::take(&mut self.payload);
                let n = self
                    .noise()?
                    .write_message(&payload, &mut buf)
                    .map_err(|_| HandshakeError::Noise)?;
                buf.truncate(n);
                self.step = Step::AwaitMsg3;
            }
            Step::SendMsg3 => {
                let payload = std::mem::take(&mut self.payload);
                let n = self
                    .noise()?
                    .write_message(&payload, &mut buf)
                    .map_err(|_| HandshakeError::Noise)?;
                buf.truncate(n);
                self.enter_transport()?;
                self.step = Step::AwaitConfirm;
            }
            Step::SendConfirm => {
                let confirm = prost::Message::encode_to_vec(&pb::HandshakeConfirm {
                    magic: CONFIRM_MAGIC.into(),
                });
                let cipher = self
                    .cipher
                    .as_mut()
                    .ok_or(HandshakeError::OutOfOrder("no cipher"))?;
                let n = cipher
                    .send
                    .encrypt(&confirm, &mut buf)
                    .map_err(|_| HandshakeError::Noise)?;
                buf.truncate(n);
                self.step = Step::Done;
            }
            _ => return Ok(None),
        }
        Ok(Some(buf))
    }

    /// Processes one message from the peer.
    pub fn handle_message(&mut self, msg: &[u8]) -> Result<(), HandshakeError> {
        let r = self.receive(msg);
        if r.is_err() {
            self.step = Step::Failed;
        }
        r
    }

    fn receive(&mut self, msg: &[u8]) -> Result<(), HandshakeError> {
        if msg.len() > MAX_NOISE_MESSAGE {
            return Err(HandshakeError::TooLong(msg.len()));
        }
        let mut buf = vec![0u8; MAX_NOISE_MESSAGE];
        match self.step {
            Step::AwaitMsg1 => {
                self.noise()?
                    .read_message(msg, &mut buf)
                    .map_err(|_| HandshakeError::Noise)?;
                self.step = Step::SendMsg2;
            }
            Step::AwaitMsg2 => {
                let n = self
                    .noise()?
                    .read_message(msg, &mut buf)
                    .map_err(|_| HandshakeError::Noise)?;
                self.remote = Some(self.verify_payload(&buf[..n])?);
                self.step = Step::SendMsg3;
            }
            Step::AwaitMsg3 => {
                let n = self
                    .noise()?
                    .read_message(msg, &mut buf)
                    .map_err(|_| HandshakeError::Noise)?;
                self.remote = Some(self.verify_payload(&buf[..n])?);
                self.enter_transport()?;
                self.step = Step::SendConfirm;
            }
            Step::AwaitConfirm => {
                let cipher = self
                    .cipher
                    .as_mut()
                    .ok_or(HandshakeError::OutOfOrder("no cipher"))?;
                let n = cipher
                    .recv
                    .decrypt(msg, &mut buf)
                    .map_err(|_| HandshakeError::Noise)?;
                let confirm: pb::HandshakeConfirm =
                    rs2p_wire::decode(&buf[..n]).map_err(|_| HandshakeError::Noise)?;
                if confirm.magic != CONFIRM_MAGIC {
                    return Err(HandshakeError::InvalidPayload("bad confirm message"));
                }
                self.step = Step::Done;
            }
            _ => return Err(HandshakeError::OutOfOrder("unexpected message")),
        }
        Ok(())
    }

    /// The peer's verified identity and the transport cipher, once [`Handshake::is_done`].
    pub fn finish(self) -> Result<(RemoteInfo, Cipher), HandshakeError> {
        match (self.step, self.remote, self.cipher) {
            (Step::Done, Some(remote), Some(cipher)) => Ok((remote, cipher)),
            _ => Err(HandshakeError::OutOfOrder(
                "finish before the handshake is done",
            )),
        }
    }

    fn noise(&mut self) -> Result<&mut snow::HandshakeState, HandshakeError> {
        self.noise
            .as_mut()
            .ok_or(HandshakeError::OutOfOrder("handshake already finished"))
    }

    fn enter_transport(&mut self) -> Result<(), HandshakeError> {
        let noise = self
            .noise
            .take()
            .ok_or(HandshakeError::OutOfOrder("no handshake state"))?;
        let state = Arc::new(
            noise
                .into_stateless_transport_mode()
                .map_err(|_| HandshakeError::Noise)?,
        );
        self.cipher = Some(Cipher {
            send: SendCipher {
                state: state.clone(),
                nonce: 0,
            },
            recv: RecvCipher { state, nonce: 0 },
        });
        Ok(())
    }

    fn verify_payload(&mut self, bytes: &[u8]) -> Result<RemoteInfo, HandshakeError> {
        let payload: pb::HandshakePayload = rs2p_wire::decode(bytes)
            .map_err(|_| HandshakeError::InvalidPayload("not a handshake payload"))?;
        let remote_static = self
            .noise()?
            .get_remote_static()
            .ok_or(HandshakeError::OutOfOrder("no remote static key"))?
            .to_vec();
        let peer_id = PeerId::from_slice(&payload.identity_key).ok_or(
            HandshakeError::InvalidPayload("identity key is not 32 bytes"),
        )?;
        if !peer_id.verify(
            &[NOISE_STATIC_DOMAIN, &remote_static].concat(),
            &payload.identity_sig,
        ) {
            return Err(HandshakeError::BadSignature);
        }
        if payload.protocol_version != PROTOCOL_VERSION {
            return Err(HandshakeError::VersionMismatch {
                ours: PROTOCOL_VERSION,
                theirs: payload.protocol_version,
            });
        }
        if peer_id == self.local {
            return Err(HandshakeError::SelfConnection);
        }
        if let Some(expected) = self.expected {
            if expected != peer_id {
                return Err(HandshakeError::UnexpectedPeer {
                    expected,
                    actual: peer_id,
                });
            }
        }
        if payload.listen_addrs.len() > MAX_ADDRS {
            return Err(HandshakeError::InvalidPayload("too many listen addresses"));
        }
        if payload.protocols.len() > MAX_PROTOCOLS
            || payload.protocols.iter().any(|p| p.len() > MAX_PROTOCOL_LEN)
        {
            return Err(HandshakeError::InvalidPayload(
                "too many or too long protocol ids",
            ));
        }
        let listen_addrs = payload
            .listen_addrs
            .iter()
            .map(|a| a.parse())
            .collect::<Result<Vec<SocketAddr>, _>>()
            .map_err(|_| HandshakeError::InvalidPayload("listen address is not ip:port"))?;
        Ok(RemoteInfo {
            peer_id,
            listen_addrs,
            protocols: payload.protocols,
            incarnation: payload.incarnation,
            features: payload.features,
        })
    }
}

fn builder<'a>(
    id: &'a LocalIdentity,
    network: &'a Network,
) -> Result<snow::Builder<'a>, HandshakeError> {
    snow::Builder::new(noise_params())
        .local_private_key(id.noise_private())
        .and_then(|b| b.psk(3, network.psk()))
        .and_then(|b| b.prologue(PROLOGUE))
        .map_err(|_| HandshakeError::Noise)
}

/// A message failed to decrypt: it was forged, corrupted, replayed or reordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("transport message failed to decrypt")]
pub struct DecryptError;

/// The transport keys of an established connection, one direction each.
#[derive(Debug)]
pub struct Cipher {
    /// Encrypts what this side sends.
    pub send: SendCipher,
    /// Decrypts what this side receives.
    pub recv: RecvCipher,
}

/// Encrypts outgoing transport messages with consecutive nonces.
pub struct SendCipher {
    state: Arc<snow::StatelessTransportState>,
    nonce: u64,
}

/// Decrypts incoming transport messages, expecting consecutive nonces.
pub struct RecvCipher {
    state: Arc<snow::StatelessTransportState>,
    nonce: u64,
}

impl SendCipher {
    /// Encrypts `plaintext` (at most [`MAX_TRANSPORT_PLAINTEXT`] bytes) into `out`, which must
    /// hold `plaintext.len() + TAG_LEN` bytes; returns the ciphertext length.
    pub fn encrypt(&mut self, plaintext: &[u8], out: &mut [u8]) -> Result<usize, DecryptError> {
        let n = self
            .state
            .write_message(self.nonce, plaintext, out)
            .map_err(|_| DecryptError)?;
        self.nonce += 1;
        Ok(n)
    }
}

impl RecvCipher {
    /// Decrypts `ciphertext` into `out`; returns the plaintext length.
    pub fn decrypt(&mut self, ciphertext: &[u8], out: &mut [u8]) -> Result<usize, DecryptError> {
        let n = self
            .state
            .read_message(self.nonce, ciphertext, out)
            .map_err(|_| DecryptError)?;
        self.nonce += 1;
        Ok(n)
    }
}

impl std::fmt::Debug for SendCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SendCipher(nonce {})", self.nonce)
    }
}

impl std::fmt::Debug for RecvCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RecvCipher(nonce {})", self.nonce)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Keypair;

    fn ident(seed: u8) -> LocalIdentity {
        LocalIdentity::new(Keypair::from_seed([seed; 32]))
    }

    /// Runs both sides to completion or to the first error, returning each side's result.
    fn run(
        mut a: Handshake,
        mut b: Handshake,
    ) -> (
        Result<Handshake, HandshakeError>,
        Result<Handshake, HandshakeError>,
    ) {
        for _ in 0..4 {
            match a.poll_transmit() {
                Ok(Some(m)) => {
                    if let Err(e) = b.handle_message(&m) {
                        return (Ok(a), Err(e));
                    }
                }
                Ok(None) => {}
                Err(e) => return (Err(e), Ok(b)),
            }
            match b.poll_transmit() {
                Ok(Some(m)) => {
                    if let Err(e) = a.handle_message(&m) {
                        return (Err(e), Ok(b));
                    }
                }
                Ok(None) => {}
                Err(e) => return (Ok(a), Err(e)),
            }
        }
        (Ok(a), Ok(b))
    }

    #[test]
    fn a_handshake_completes_and_the_ciphers_match() {
        let net = Network::named("t");
        let (ia, ib) = (ident(1), ident(2));
        let info = LocalInfo {
            listen_addrs: vec!["127.0.0.1:9".parse().unwrap()],
            protocols: vec!["/x/1".into()],
            incarnation: 7,
            features: 5,
        };
        let a = Handshake::initiator(&ia, &net, info.clone(), Some(ib.peer_id())).unwrap();
        let b = Handshake::responder(&ib, &net, info).unwrap();
        let (a, b) = run(a, b);
        let (ra, mut ca) = a.unwrap().finish().unwrap();
        let (rb, mut cb) = b.unwrap().finish().unwrap();
        assert_eq!(ra.peer_id, ib.peer_id());
        assert_eq!(rb.peer_id, ia.peer_id());
        assert_eq!(rb.protocols, vec!["/x/1".to_string()]);
        assert_eq!((ra.incarnation, rb.incarnation), (7, 7));
        assert_eq!((ra.features, rb.features), (5, 5));
        let mut ct = vec![0u8; 64];
        let n = ca.send.encrypt(b"hello", &mut ct).unwrap();
        let mut pt = vec![0u8; 64];
        let m = cb.recv.decrypt(&ct[..n], &mut pt).unwrap();
        assert_eq!(&pt[..m], b"hello");
        // A replayed message fails: the nonce has moved on.
        assert!(cb.recv.decrypt(&ct[..n], &mut pt).is_err());
    }

    #[test]
    fn a_wrong_psk_is_refused_by_the_responder_and_the_initiator_never_finishes() {
        let (ia, ib) = (ident(1), ident(2));
        let a =
            Handshake::initiator(&ia, &Network::named("one"), LocalInfo::default(), None).unwrap();
        let b = Handshake::responder(&ib, &Network::named("two"), LocalInfo::default()).unwrap();
        let (a, b) = run(a, b);
        assert!(matches!(b, Err(HandshakeError::Noise)));
        let a = a.unwrap();
        assert!(
            !a.is_done(),
            "the initiator waits for a confirm that never comes"
        );
        assert!(a.finish().is_err());
    }

    #[test]
    fn an_unexpected_peer_is_refused() {
        let net = Network::named("t");
        let a = Handshake::initiator(
            &ident(1),
            &net,
            LocalInfo::default(),
            Some(ident(3).peer_id()),
        )
        .unwrap();
        let b = Handshake::responder(&ident(2), &net, LocalInfo::default()).unwrap();
        let (a, _) = run(a, b);
        assert!(matches!(a, Err(HandshakeError::UnexpectedPeer { .. })));
    }

    #[test]
    fn a_connection_to_oneself_is_refused() {
        let net = Network::named("t");
        let a = Handshake::initiator(&ident(1), &net, LocalInfo::default(), None).unwrap();
        let b = Handshake::responder(&ident(1), &net, LocalInfo::default()).unwrap();
        let (a, b) = run(a, b);
        assert!(
            matches!(a, Err(HandshakeError::SelfConnection))
                || matches!(b, Err(HandshakeError::SelfConnection))
        );
    }

    #[test]
    fn garbage_instead_of_a_handshake_is_an_error_not_a_panic() {
        let net = Network::named("t");
        let mut b = Handshake::responder(&ident(2), &net, LocalInfo::default()).unwrap();
        // Shorter than an ephemeral key: refused at once.
        assert!(matches!(
            b.handle_message(b"GET / HTTP/1.1\r\n"),
            Err(HandshakeError::Noise)
        ));
        // With a pre-shared key even message 1 carries an AEAD tag, so garbage of any length
        // fails at the first message.
        let mut b = Handshake::responder(&ident(2), &net, LocalInfo::default()).unwrap();
        assert!(matches!(
            b.handle_message(&[9u8; 48]),
            Err(HandshakeError::Noise)
        ));
        assert!(b.poll_transmit().unwrap().is_none());
        assert!(
            b.handle_message(&[7u8; 100]).is_err(),
            "a failed handshake stays failed"
        );
    }

    #[test]
    fn a_signature_over_another_key_is_refused() {
        // Forge: an identity whose signature covers some other Noise key.
        let net = Network::named("t");
        let mut liar = ident(5);
        let honest = ident(6);
        liar.noise_sig_for_tests(honest.noise_public());
        let a = Handshake::initiator(&ident(1), &net, LocalInfo::default(), None).unwrap();
        let b = Handshake::responder(&liar, &net, LocalInfo::default()).unwrap();
        let (a, _) = run(a, b);
        assert!(matches!(a, Err(HandshakeError::BadSignature)));
    }
}
