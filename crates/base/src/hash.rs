use blake2::{Blake2s256, Digest};

/// A 32-byte BLAKE2s digest.
pub type Hash256 = [u8; 32];

/// BLAKE2s-256 over a domain separator and the given parts, each length-prefixed so that no two
/// different inputs hash alike.
pub fn hash256(domain: &str, parts: &[&[u8]]) -> Hash256 {
    let mut h = Blake2s256::new();
    h.update((domain.len() as u64).to_le_bytes());
    h.update(domain.as_bytes());
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize().into()
}
