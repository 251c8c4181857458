/// A 32-byte BLAKE2s digest.
pub type Hash256 = [u8; 32];

/// BLAKE2s-256 over a domain separator and the given parts, each length-prefixed so that no two
/// different inputs hash alike.
pub fn hash256(domain: &str, parts: &[&[u8]]) -> Hash256 {
    let mut h = blake2s_simd::State::new();
    h.update(&(domain.len() as u64).to_le_bytes());
    h.update(domain.as_bytes());
    for p in parts {
        h.update(&(p.len() as u64).to_le_bytes());
        h.update(p);
    }
    *h.finalize().as_array()
}

/// Inputs laid out together per call of [`blake2s_simd::many::hash_many`].
const MANY_CHUNK: usize = 64;

/// [`hash256`] of each item, several at a time on the CPU's vector units (eight at once with
/// AVX2): item by item equal to `hash256(domain, item)`, at about a third of the time for
/// inputs of a few hundred bytes. For the leaves and inner nodes of a batch's hash tree.
pub fn hash256_many<const K: usize>(domain: &str, items: &[[&[u8]; K]]) -> Vec<Hash256> {
    let params = blake2s_simd::Params::new();
    let mut out = Vec::with_capacity(items.len());
    let mut buf = Vec::new();
    let mut spans = Vec::with_capacity(MANY_CHUNK);
    for chunk in items.chunks(MANY_CHUNK) {
        buf.clear();
        spans.clear();
        for parts in chunk {
            let start = buf.len();
            buf.extend_from_slice(&(domain.len() as u64).to_le_bytes());
            buf.extend_from_slice(domain.as_bytes());
            for p in parts {
                buf.extend_from_slice(&(p.len() as u64).to_le_bytes());
                buf.extend_from_slice(p);
            }
            spans.push(start..buf.len());
        }
        let mut jobs: Vec<_> = spans
            .iter()
            .map(|s| blake2s_simd::many::HashManyJob::new(&params, &buf[s.clone()]))
            .collect();
        blake2s_simd::many::hash_many(jobs.iter_mut());
        out.extend(jobs.iter().map(|j| *j.to_hash().as_array()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The digest is BLAKE2s-256 of the length-prefixed parts, as another implementation
    /// computes it.
    #[test]
    fn is_blake2s_256_of_the_length_prefixed_parts() {
        use blake2::{Blake2s256, Digest};
        let mut h = Blake2s256::new();
        for p in [&b"d/x"[..], b"", b"abc"] {
            h.update((p.len() as u64).to_le_bytes());
            h.update(p);
        }
        let want: Hash256 = h.finalize().into();
        assert_eq!(hash256("d/x", &[b"", b"abc"]), want);
    }

    proptest! {
        /// The many-at-once path computes exactly the one-at-a-time hash.
        #[test]
        fn many_at_once_equals_one_at_a_time(
            inputs in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..150),
        ) {
            let one: Vec<[&[u8]; 1]> = inputs.iter().map(|i| [&i[..]]).collect();
            let want: Vec<Hash256> = one.iter().map(|p| hash256("d/one", p)).collect();
            prop_assert_eq!(hash256_many("d/one", &one), want);
            let two: Vec<[&[u8]; 2]> = inputs.windows(2).map(|w| [&w[0][..], &w[1][..]]).collect();
            let want: Vec<Hash256> = two.iter().map(|p| hash256("d/two", p)).collect();
            prop_assert_eq!(hash256_many("d/two", &two), want);
        }
    }
}
