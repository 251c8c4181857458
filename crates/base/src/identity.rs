//! ed25519 identities: [`Keypair`], [`PeerId`], and the node's [`LocalIdentity`].

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};

use crate::BaseError;

/// A node's identity: its ed25519 public key (32 bytes).
///
/// Displayed as 64 lowercase hex digits; [`PeerId::short`] gives the first 8 for logs. Ordered
/// bytewise, which is the order used for every tie-break in rs2p.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId([u8; 32]);

impl PeerId {
    /// The peer id of an ed25519 public key. Use [`PeerId::verifying_key`] to check it is a point.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// A peer id from a slice, if it is 32 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }

    /// The 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The first 8 hex digits, for logs.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }

    /// The ed25519 key, or `None` if these bytes are not a valid public key.
    pub fn verifying_key(&self) -> Option<VerifyingKey> {
        VerifyingKey::from_bytes(&self.0).ok()
    }

    /// [`PeerId::verifying_key`] through a small per-thread cache: decompressing the point costs
    /// about a third of a verification, and a node verifies the same few peers' signatures over
    /// and over.
    fn cached_verifying_key(&self) -> Option<VerifyingKey> {
        const CAPACITY: usize = 1024;
        thread_local! {
            static KEYS: std::cell::RefCell<std::collections::HashMap<PeerId, VerifyingKey>> =
                std::cell::RefCell::new(std::collections::HashMap::new());
        }
        if let Some(k) = KEYS.with(|c| c.borrow().get(self).copied()) {
            return Some(k);
        }
        let key = self.verifying_key()?;
        if key.is_weak() {
            // A small-order point: with it, one signature verifies for every message.
            return None;
        }
        KEYS.with(|c| {
            let mut c = c.borrow_mut();
            if c.len() >= CAPACITY {
                c.clear();
            }
            c.insert(*self, key);
        });
        Some(key)
    }

    /// Checks `signature` over `message`: ed25519 with a canonical `s` (no one but the signer can
    /// make another valid signature of a message), from a key that is not of small order
    /// (checked once per key). `verify_strict`'s one further check, that the signature's `R`
    /// is not of small order, only keeps the signer itself from making a second signature of
    /// one message, which it can do anyway with another nonce; it costs a point decompression,
    /// a third more per check (about 23 against 17 µs on the bench machine).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        use ed25519_dalek::Verifier;
        let Some(key) = self.cached_verifying_key() else {
            return false;
        };
        let Ok(sig) = ed25519_dalek::Signature::from_slice(signature) else {
            return false;
        };
        key.verify(message, &sig).is_ok()
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({})", self.short())
    }
}

impl FromStr for PeerId {
    type Err = BaseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| BaseError::BadPeerId(s.to_owned()))?;
        Ok(Self(out))
    }
}

/// An ed25519 signature (64 bytes).
pub type Signature = [u8; 64];

/// An ed25519 key pair.
#[derive(Clone)]
pub struct Keypair(SigningKey);

impl Keypair {
    /// A fresh random key pair from the operating system's generator.
    pub fn generate() -> Self {
        use rand::RngCore;
        let mut seed = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut seed);
        Self(SigningKey::from_bytes(&seed))
    }

    /// The key pair whose secret is `seed` (for tests and simulations; keep real seeds secret).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self(SigningKey::from_bytes(&seed))
    }

    /// The 32 secret bytes (`from_seed` of them gives this key pair back). Keep them secret.
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// This key pair's peer id.
    pub fn peer_id(&self) -> PeerId {
        PeerId(self.0.verifying_key().to_bytes())
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> Signature {
        self.0.sign(message).to_bytes()
    }

    /// Loads the key pair from `path` (32 raw secret bytes).
    pub fn load(path: &Path) -> Result<Self, BaseError> {
        let bytes = std::fs::read(path).map_err(|source| BaseError::KeyFile {
            path: path.display().to_string(),
            source,
        })?;
        let seed: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| BaseError::BadKeyFile {
                path: path.display().to_string(),
                len: bytes.len() as u64,
            })?;
        Ok(Self::from_seed(seed))
    }

    /// Writes the secret to `path`, readable and writable by the owner only (mode 0600), failing
    /// if the file exists.
    pub fn save(&self, path: &Path) -> Result<(), BaseError> {
        use std::io::Write;
        let err = |source| BaseError::KeyFile {
            path: path.display().to_string(),
            source,
        };
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut file = opts.open(path).map_err(err)?;
        file.write_all(&self.0.to_bytes()).map_err(err)?;
        file.sync_all().map_err(err)
    }

    /// Loads the key pair at `path`, or creates and saves a new one if there is no file.
    pub fn load_or_generate(path: &Path) -> Result<Self, BaseError> {
        if path.exists() {
            Self::load(path)
        } else {
            let kp = Self::generate();
            kp.save(path)?;
            Ok(kp)
        }
    }
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keypair({:?})", self.peer_id())
    }
}

/// What a node needs to run handshakes: its ed25519 key pair, and a Noise static key pair signed
/// by it, made once per node.
#[derive(Clone)]
pub struct LocalIdentity {
    keypair: Keypair,
    noise_private: [u8; 32],
    noise_public: [u8; 32],
    noise_sig: Signature,
}

/// The domain of the signature over a node's Noise static key.
pub(crate) const NOISE_STATIC_DOMAIN: &[u8] = b"rs2p/v1/noise-static-key";

impl LocalIdentity {
    /// Makes a Noise static key for `keypair` and signs it.
    pub fn new(keypair: Keypair) -> Self {
        let builder = snow::Builder::new(crate::handshake::noise_params());
        // Key generation only fails if the resolver lacks a DH implementation, which ours has.
        let kp = builder
            .generate_keypair()
            .expect("curve25519 is compiled in");
        let mut noise_private = [0u8; 32];
        let mut noise_public = [0u8; 32];
        noise_private.copy_from_slice(&kp.private);
        noise_public.copy_from_slice(&kp.public);
        let noise_sig = keypair.sign(&[NOISE_STATIC_DOMAIN, &noise_public].concat());
        Self {
            keypair,
            noise_private,
            noise_public,
            noise_sig,
        }
    }

    /// The node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.keypair.peer_id()
    }

    /// The node's ed25519 key pair.
    pub fn keypair(&self) -> &Keypair {
        &self.keypair
    }

    pub(crate) fn noise_private(&self) -> &[u8; 32] {
        &self.noise_private
    }

    /// The node's Noise static public key (X25519), which its handshake signature covers.
    pub fn noise_public(&self) -> &[u8; 32] {
        &self.noise_public
    }

    pub(crate) fn noise_sig(&self) -> &Signature {
        &self.noise_sig
    }
}

impl fmt::Debug for LocalIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LocalIdentity({:?})", self.peer_id())
    }
}

#[cfg(test)]
impl LocalIdentity {
    /// Replaces the signature with one over another key (to test that peers refuse it).
    pub(crate) fn noise_sig_for_tests(&mut self, other_noise_public: &[u8; 32]) {
        self.noise_sig = self
            .keypair
            .sign(&[NOISE_STATIC_DOMAIN, other_noise_public].concat());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_small_order_key_verifies_nothing() {
        // The identity point as a public key: R = s·B then satisfies the verification equation
        // for every message. Here s = 1 and R is the base point.
        let mut weak = [0u8; 32];
        weak[0] = 1;
        let mut sig = [0u8; 64];
        sig[0] = 0x58;
        sig[1..32].fill(0x66);
        sig[32] = 1;
        let key = VerifyingKey::from_bytes(&weak).unwrap();
        let unchecked = ed25519_dalek::Verifier::verify(
            &key,
            b"any message",
            &ed25519_dalek::Signature::from_bytes(&sig),
        );
        assert!(unchecked.is_ok(), "the forgery holds without the key check");
        let id = PeerId::from_slice(&weak).unwrap();
        assert!(!id.verify(b"any message", &sig));
        assert!(!id.verify(b"another", &sig));
    }

    #[test]
    fn key_files_round_trip_with_mode_0600() {
        let dir = std::env::temp_dir().join(format!("rs2p-key-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("node.key");
        let kp = Keypair::load_or_generate(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(Keypair::load(&path).unwrap().peer_id(), kp.peer_id());
        assert!(kp.save(&path).is_err(), "save never overwrites a key");
        std::fs::write(&path, b"short").unwrap();
        assert!(matches!(
            Keypair::load(&path),
            Err(BaseError::BadKeyFile { len: 5, .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    proptest! {
        #[test]
        fn peer_ids_round_trip_through_text(bytes in any::<[u8; 32]>()) {
            let id = PeerId::from_bytes(bytes);
            prop_assert_eq!(id.to_string().parse::<PeerId>().unwrap(), id);
        }

        #[test]
        fn signatures_verify_only_for_their_message(seed in any::<[u8; 32]>(), msg in any::<Vec<u8>>(), flip in any::<usize>()) {
            let kp = Keypair::from_seed(seed);
            let sig = kp.sign(&msg);
            prop_assert!(kp.peer_id().verify(&msg, &sig));
            let mut bad = sig;
            bad[flip % 64] ^= 1;
            prop_assert!(!kp.peer_id().verify(&msg, &bad));
        }
    }

    #[test]
    fn garbage_text_is_not_a_peer_id() {
        assert!("xyz".parse::<PeerId>().is_err());
        assert!("00".parse::<PeerId>().is_err());
    }
}
