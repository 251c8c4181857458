//! Records, and the signed batches that carry them.

use std::sync::Arc;

use bytes::Bytes;
use rs2p_base::wire::pb;
use rs2p_base::{Hash256, Keypair, PeerId, Signature};
use triomphe::ThinArc;

use super::merkle;
use crate::encode::{self, Laid, Spans};
use crate::{RecordError, VerifiedBatches};

/// One write, as its owner signed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The key.
    pub key: Bytes,
    /// The value (empty for a tombstone).
    pub value: Bytes,
    /// Whether this write deletes the key.
    pub tombstone: bool,
    /// Who wrote it.
    pub owner: PeerId,
    /// When (the owner's clock, Unix ms).
    pub issued_at: u64,
    /// Strictly increasing per owner.
    pub version: u64,
    /// Until when the owner leases the key (equal to `issued_at` without a lease).
    pub lease_until: u64,
}

impl Record {
    /// The order in which records are folded: time, then owner id (the lower wins a tie, as the
    /// seeds' "string compare of their IDs"), then version.
    pub fn sort_key(&self) -> (u64, PeerId, u64) {
        (self.issued_at, self.owner, self.version)
    }

    fn parts(&self) -> encode::RecordParts<'_> {
        encode::RecordParts {
            key: &self.key,
            value: &self.value,
            tombstone: self.tombstone,
            issued_at_ms: self.issued_at,
            version: self.version,
            lease_ms: self.lease_until.saturating_sub(self.issued_at),
        }
    }

    #[cfg(test)]
    fn to_pb(&self) -> pb::Record {
        pb::Record {
            key: self.key.clone(),
            value: self.value.clone(),
            tombstone: self.tombstone,
            issued_at_ms: self.issued_at,
            version: self.version,
            lease_ms: self.lease_until.saturating_sub(self.issued_at),
        }
    }
}

/// The signature shared by the records of one batch, with every leaf hash of that batch (so any
/// subset of its records can be sent on with the same signature).
#[derive(Debug)]
pub struct BatchAuth {
    /// The signer.
    pub owner: PeerId,
    /// Over the Merkle root of `leaves`.
    pub signature: Signature,
    /// Every leaf of the batch, in order.
    pub leaves: Vec<Hash256>,
}

/// A verified record as stored: its exact signed bytes, the fields read from them, and its proof
/// of origin, in one reference-counted allocation (a thin pointer; cloning it is one atomic
/// increment). The key and value are read in place from the signed bytes.
///
/// At a million keys a store holds a million of these, so the layout is kept small: a record
/// of a 32-byte key and a 100-byte value takes one 240-byte allocation, where a [`Record`]
/// with its own copy of the bytes, the owner and two `Bytes` handles took three allocations of
/// 416 bytes in all.
#[derive(Clone)]
pub struct Stored(ThinArc<Fields, u8>);

/// What a [`Stored`] keeps beside its signed bytes.
#[derive(Debug)]
struct Fields {
    auth: Arc<BatchAuth>,
    issued_at: u64,
    version: u64,
    lease_until: u64,
    /// The record's position in its batch.
    index: u32,
    /// Where the key and the value lie in the signed bytes.
    key_at: u32,
    key_len: u32,
    value_at: u32,
    value_len: u32,
    tombstone: bool,
}

/// Where `part` (a slice of `raw`, or empty) lies in `raw`.
fn span(raw: &Bytes, part: &Bytes) -> Result<(usize, usize), RecordError> {
    if part.is_empty() {
        return Ok((0, 0));
    }
    let at = (part.as_ptr() as usize)
        .checked_sub(raw.as_ptr() as usize)
        .filter(|at| at + part.len() <= raw.len())
        .ok_or(RecordError::Malformed)?;
    Ok((at, part.len()))
}

/// The fields of `p`, decoded from `raw` (its key and value are slices of `raw`).
fn laid_of(raw: &Bytes, p: &pb::Record) -> Result<Laid, RecordError> {
    Ok(Laid {
        spans: Spans {
            key: span(raw, &p.key)?,
            value: span(raw, &p.value)?,
        },
        tombstone: p.tombstone,
        issued_at_ms: p.issued_at_ms,
        version: p.version,
        lease_ms: p.lease_ms,
    })
}

impl Stored {
    /// The bytes a stored record's allocation takes beside its signed bytes: its fields, the
    /// reference count and the length.
    pub const FIXED_BYTES: usize = std::mem::size_of::<Fields>() + 2 * std::mem::size_of::<usize>();

    /// Builds a stored record from its signed bytes `raw`, whose fields are `laid`, owned by
    /// `auth`'s signer at position `index` of the batch.
    fn from_laid(
        raw: &[u8],
        laid: &Laid,
        auth: Arc<BatchAuth>,
        index: u32,
    ) -> Result<Self, RecordError> {
        let n = |v: usize| u32::try_from(v).map_err(|_| RecordError::TooLarge);
        let within =
            |(at, len): (usize, usize)| at.checked_add(len).is_some_and(|e| e <= raw.len());
        if !within(laid.spans.key) || !within(laid.spans.value) {
            return Err(RecordError::Malformed);
        }
        let fields = Fields {
            auth,
            issued_at: laid.issued_at_ms,
            version: laid.version,
            lease_until: laid
                .issued_at_ms
                .checked_add(laid.lease_ms)
                .ok_or(RecordError::Malformed)?,
            index,
            key_at: n(laid.spans.key.0)?,
            key_len: n(laid.spans.key.1)?,
            value_at: n(laid.spans.value.0)?,
            value_len: n(laid.spans.value.1)?,
            tombstone: laid.tombstone,
        };
        Ok(Self(ThinArc::from_header_and_slice(fields, raw)))
    }

    fn fields(&self) -> &Fields {
        &self.0.header.header
    }

    /// The encoded record exactly as signed.
    pub fn raw(&self) -> &[u8] {
        &self.0.slice
    }

    /// [`Stored::raw`] as `Bytes` that keep this record alive (one small allocation).
    pub fn raw_bytes(&self) -> Bytes {
        Bytes::from_owner(RawOwner(self.clone()))
    }

    /// The key.
    pub fn key(&self) -> &[u8] {
        let f = self.fields();
        &self.raw()[f.key_at as usize..][..f.key_len as usize]
    }

    /// The value (empty for a tombstone).
    pub fn value(&self) -> &[u8] {
        let f = self.fields();
        &self.raw()[f.value_at as usize..][..f.value_len as usize]
    }

    /// The key and the value as `Bytes` that share one handle on this record.
    pub fn key_value_bytes(&self) -> (Bytes, Bytes) {
        let f = self.fields();
        let raw = self.raw_bytes();
        (
            part(&raw, f.key_at, f.key_len),
            part(&raw, f.value_at, f.value_len),
        )
    }

    /// [`Stored::key`] as `Bytes` that keep this record alive (one small allocation).
    pub fn key_bytes(&self) -> Bytes {
        let f = self.fields();
        part(&self.raw_bytes(), f.key_at, f.key_len)
    }

    /// [`Stored::value`] as `Bytes` that keep this record alive (one small allocation, none
    /// for an empty value).
    pub fn value_bytes(&self) -> Bytes {
        let f = self.fields();
        if f.value_len == 0 {
            return Bytes::new();
        }
        part(&self.raw_bytes(), f.value_at, f.value_len)
    }

    /// The record, with its key and value as `Bytes` that keep this stored record alive.
    pub fn record(&self) -> Record {
        let (key, value) = self.key_value_bytes();
        let f = self.fields();
        Record {
            key,
            value,
            tombstone: f.tombstone,
            owner: f.auth.owner,
            issued_at: f.issued_at,
            version: f.version,
            lease_until: f.lease_until,
        }
    }

    /// Who wrote it.
    pub fn owner(&self) -> &PeerId {
        &self.fields().auth.owner
    }

    /// When (the owner's clock, Unix ms).
    pub fn issued_at(&self) -> u64 {
        self.fields().issued_at
    }

    /// Strictly increasing per owner.
    pub fn version(&self) -> u64 {
        self.fields().version
    }

    /// Until when the owner leases the key (equal to `issued_at` without a lease).
    pub fn lease_until(&self) -> u64 {
        self.fields().lease_until
    }

    /// Whether this write deletes the key.
    pub fn tombstone(&self) -> bool {
        self.fields().tombstone
    }

    /// [`Record::sort_key`] of the record.
    pub fn sort_key(&self) -> (u64, PeerId, u64) {
        let f = self.fields();
        (f.issued_at, f.auth.owner, f.version)
    }

    /// Its batch's signature and leaves.
    pub fn auth(&self) -> &Arc<BatchAuth> {
        &self.fields().auth
    }

    /// Its position in the batch.
    pub fn index(&self) -> u32 {
        self.fields().index
    }

    /// Whether `self` and `other` hold the same record (the same write: key, value, owner,
    /// time, version and lease), whether or not they are the same allocation.
    pub fn same_record(&self, other: &Self) -> bool {
        Self::ptr_eq(self, other)
            || (self.sort_key() == other.sort_key()
                && self.lease_until() == other.lease_until()
                && self.tombstone() == other.tombstone()
                && self.key() == other.key()
                && self.value() == other.value())
    }

    /// Whether `a` and `b` are the same allocation (so certainly the same record).
    pub fn ptr_eq(a: &Self, b: &Self) -> bool {
        a.0.ptr() == b.0.ptr()
    }

    /// The record's leaf hash (its identity).
    pub fn leaf(&self) -> &Hash256 {
        &self.auth().leaves[self.index() as usize]
    }

    /// The first 8 bytes of the leaf hash, for digests.
    pub fn short_hash(&self) -> u64 {
        short(self.leaf())
    }
}

impl std::fmt::Debug for Stored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stored")
            .field("record", &self.record())
            .field("index", &self.index())
            .field("leaf", &short(self.leaf()))
            .finish()
    }
}

/// Equal when they hold the same write ([`Stored::same_record`]).
impl PartialEq for Stored {
    fn eq(&self, other: &Self) -> bool {
        self.same_record(other)
    }
}

impl Eq for Stored {}

/// The `len` bytes at `at` of a record's bytes `raw` (an empty `Bytes` for none).
fn part(raw: &Bytes, at: u32, len: u32) -> Bytes {
    if len == 0 {
        return Bytes::new();
    }
    raw.slice(at as usize..at as usize + len as usize)
}

/// Owns a [`Stored`] for [`Stored::raw_bytes`].
struct RawOwner(Stored);

impl AsRef<[u8]> for RawOwner {
    fn as_ref(&self) -> &[u8] {
        self.0.raw()
    }
}

/// The fields [`crate::resolve`] folds by, read from a [`Record`] or in place from a
/// [`Stored`].
pub trait RecordFields {
    /// Who wrote it.
    fn owner(&self) -> &PeerId;
    /// When (Unix ms).
    fn issued_at(&self) -> u64;
    /// Its version.
    fn version(&self) -> u64;
    /// Until when it leases its key.
    fn lease_until(&self) -> u64;
    /// Whether it deletes its key.
    fn tombstone(&self) -> bool;
    /// `(issued_at, owner, version)`.
    fn sort_key(&self) -> (u64, PeerId, u64) {
        (self.issued_at(), *self.owner(), self.version())
    }
}

impl RecordFields for Record {
    fn owner(&self) -> &PeerId {
        &self.owner
    }
    fn issued_at(&self) -> u64 {
        self.issued_at
    }
    fn version(&self) -> u64 {
        self.version
    }
    fn lease_until(&self) -> u64 {
        self.lease_until
    }
    fn tombstone(&self) -> bool {
        self.tombstone
    }
}

impl RecordFields for Stored {
    fn owner(&self) -> &PeerId {
        Stored::owner(self)
    }
    fn issued_at(&self) -> u64 {
        Stored::issued_at(self)
    }
    fn version(&self) -> u64 {
        Stored::version(self)
    }
    fn lease_until(&self) -> u64 {
        Stored::lease_until(self)
    }
    fn tombstone(&self) -> bool {
        Stored::tombstone(self)
    }
    fn sort_key(&self) -> (u64, PeerId, u64) {
        Stored::sort_key(self)
    }
}

/// The last 32 bytes of an unsigned batch's id. A real signature's last 32 bytes are a scalar
/// below the group order (top byte at most 0x10), so no signature can look like this.
const UNSIGNED_MARK: [u8; 32] = [0xff; 32];

impl BatchAuth {
    /// Whether the batch is signed; an unsigned batch (a trusted network's, see
    /// [`seal_unsigned`]) has an id in place of its signature: its Merkle root and a mark.
    pub fn is_signed(&self) -> bool {
        self.signature[32..] != UNSIGNED_MARK
    }
}

fn unsigned_id(leaves: &[Hash256]) -> Signature {
    let mut id = [0u8; 64];
    id[..32].copy_from_slice(&merkle::root(leaves));
    id[32..].copy_from_slice(&UNSIGNED_MARK);
    id
}

/// The first 8 bytes of a hash as a little-endian integer.
pub fn short(h: &Hash256) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[..8]);
    u64::from_le_bytes(b)
}

fn signed_message(network_id: &[u8; 32], root: &Hash256, count: usize) -> Vec<u8> {
    [
        b"rs2p/v1/sync-batch".as_slice(),
        network_id,
        root,
        &(count as u32).to_le_bytes(),
    ]
    .concat()
}

/// Signs `records` (all by `keypair`'s owner) as one batch; returns the stored forms and the wire
/// batch to flood.
pub fn seal(
    keypair: &Keypair,
    network_id: &[u8; 32],
    records: Vec<Record>,
) -> (Vec<Stored>, pb::RecordBatch) {
    seal_with(keypair.peer_id(), records, |leaves| {
        Some(keypair.sign(&signed_message(
            network_id,
            &merkle::root(leaves),
            leaves.len(),
        )))
    })
}

/// Builds an unsigned batch of `owner`'s records, for a trusted network where every member
/// vouches for every other (the links are still authenticated and encrypted, but a record's
/// origin is not provable to a third node). Only receivers whose [`Limits::accept_unsigned`] is
/// set accept it; the batch is sent with an empty signature.
pub fn seal_unsigned(owner: PeerId, records: Vec<Record>) -> (Vec<Stored>, pb::RecordBatch) {
    seal_with(owner, records, |_| None)
}

/// Encodes and hashes `records` into one batch of `owner`'s; `sign` gives the signature over the
/// leaves, or `None` for an unsigned batch (whose id is then its root and the unsigned mark).
fn seal_with(
    owner: PeerId,
    records: Vec<Record>,
    sign: impl FnOnce(&[Hash256]) -> Option<Signature>,
) -> (Vec<Stored>, pb::RecordBatch) {
    debug_assert!(
        records.iter().all(|r| r.owner == owner),
        "a batch holds its owner's records only"
    );
    // One buffer for the batch: the wire's records are slices of it.
    let mut buf = Vec::with_capacity(
        records
            .iter()
            .map(|r| r.key.len() + r.value.len() + 40)
            .sum(),
    );
    let mut ends = Vec::with_capacity(records.len());
    let mut laid = Vec::with_capacity(records.len());
    for r in &records {
        laid.push(encode::record(&r.parts(), &mut buf));
        ends.push(buf.len());
    }
    let raws = encode::split(buf, &ends);
    let leaves = merkle::leaves(&raws);
    let signature = sign(&leaves);
    let auth = Arc::new(BatchAuth {
        owner,
        signature: signature.unwrap_or_else(|| unsigned_id(&leaves)),
        leaves,
    });
    let wire = pb::RecordBatch {
        owner: Bytes::copy_from_slice(owner.as_bytes()),
        signature: signature.map_or_else(Bytes::new, |s| Bytes::copy_from_slice(&s)),
        records: raws.clone(),
        leaves: vec![],
        indices: vec![],
        flood_records: vec![],
    };
    let stored = raws
        .iter()
        .zip(&laid)
        .enumerate()
        .map(|(i, (raw, laid))| {
            Stored::from_laid(raw, laid, auth.clone(), i as u32)
                .expect("a record's key and value are under 4 GiB, and its lease ends after it")
        })
        .collect();
    (stored, wire)
}

/// What a receiver checks records against.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The network the signature must be for.
    pub network_id: [u8; 32],
    /// Now (Unix ms).
    pub now: u64,
    /// Allowed clock skew (ms).
    pub max_skew: u64,
    /// The longest lease (ms); 0 when leasing is off.
    pub max_lease: u64,
    /// The longest key.
    pub max_key_len: usize,
    /// The longest value.
    pub max_value_len: usize,
    /// Whether unsigned batches (a trusted network's, [`seal_unsigned`]) are accepted.
    pub accept_unsigned: bool,
}

const MAX_LEAVES: usize = 1 << 16;

/// Verifies a batch from the wire: its signature, and every record against `limits`. All or
/// nothing: one bad record refuses the whole batch.
pub fn open(batch: pb::RecordBatch, limits: &Limits) -> Result<Vec<Stored>, RecordError> {
    open_inner(batch, limits, None, None)
}

/// [`open`], remembering the batches it verifies in `verified` and skipping the root and the
/// signature check of a batch it verified before (same owner, signature and leaf list). Each
/// record's bytes are still hashed and checked against its leaf, and against `limits`.
pub fn open_with(
    batch: pb::RecordBatch,
    limits: &Limits,
    verified: &mut VerifiedBatches,
) -> Result<Vec<Stored>, RecordError> {
    open_inner(batch, limits, Some(verified), None)
}

/// [`open_with`] for a live batch that came in a flood issued at `flood_ms`: its records are
/// rebuilt from `flood_records` first (see [`crate::relative`]), when it has them; a batch with
/// both kinds is [`RecordError::Malformed`].
pub fn open_flooded(
    mut batch: pb::RecordBatch,
    flood_ms: u64,
    limits: &Limits,
    verified: &mut VerifiedBatches,
) -> Result<Vec<Stored>, RecordError> {
    if batch.flood_records.is_empty() {
        return open_with(batch, limits, verified);
    }
    if !batch.records.is_empty() || batch.flood_records.len() > MAX_LEAVES {
        return Err(RecordError::Malformed);
    }
    let (raws, laid) = crate::relative::rebuild_laid(&batch.flood_records, flood_ms)?;
    batch.records = raws;
    batch.flood_records = Vec::new();
    open_inner(batch, limits, Some(verified), Some(laid))
}

fn open_inner(
    batch: pb::RecordBatch,
    limits: &Limits,
    verified: Option<&mut VerifiedBatches>,
    rebuilt: Option<Vec<Laid>>,
) -> Result<Vec<Stored>, RecordError> {
    let owner = PeerId::from_slice(&batch.owner).ok_or(RecordError::Malformed)?;
    let signed = !batch.signature.is_empty();
    if !signed && !limits.accept_unsigned {
        return Err(RecordError::BadSignature);
    }
    let signature: Signature = if signed {
        batch
            .signature
            .as_ref()
            .try_into()
            .map_err(|_| RecordError::Malformed)?
    } else {
        [0; 64]
    };
    // Relative records are rebuilt first ([`open_flooded`]).
    if batch.records.is_empty()
        || !batch.flood_records.is_empty()
        || batch.records.len() > MAX_LEAVES
        || batch.leaves.len() > MAX_LEAVES
    {
        return Err(RecordError::Malformed);
    }
    let (leaves, indices): (Vec<Hash256>, Vec<u32>) = if batch.leaves.is_empty() {
        if !batch.indices.is_empty() {
            return Err(RecordError::Malformed);
        }
        (
            merkle::leaves(&batch.records),
            (0..batch.records.len() as u32).collect(),
        )
    } else {
        let leaves = batch
            .leaves
            .iter()
            .map(|l| Hash256::try_from(l.as_ref()).map_err(|_| RecordError::Malformed))
            .collect::<Result<Vec<_>, _>>()?;
        if batch.indices.len() != batch.records.len() {
            return Err(RecordError::Malformed);
        }
        let computed = merkle::leaves(&batch.records);
        for (leaf, &i) in computed.iter().zip(&batch.indices) {
            if leaves.get(i as usize) != Some(leaf) {
                return Err(RecordError::BadSignature);
            }
        }
        (leaves, batch.indices)
    };
    let known = verified.as_deref().and_then(|v| {
        if signed {
            v.get(&owner, &signature, &leaves)
        } else {
            v.get_unsigned(&owner, &leaves)
        }
    });
    let auth = match known {
        Some(auth) => auth,
        None => {
            if signed
                && !owner.verify(
                    &signed_message(&limits.network_id, &merkle::root(&leaves), leaves.len()),
                    &signature,
                )
            {
                return Err(RecordError::BadSignature);
            }
            let auth = Arc::new(BatchAuth {
                owner,
                signature: if signed {
                    signature
                } else {
                    unsigned_id(&leaves)
                },
                leaves,
            });
            if let Some(v) = verified {
                v.insert(auth.clone());
            }
            auth
        }
    };
    let mut out = Vec::with_capacity(batch.records.len());
    for (i, (raw, index)) in batch.records.into_iter().zip(indices).enumerate() {
        // Rebuilt records come with their fields; others are decoded in place (the key and
        // value are slices of `raw`). Each is then copied with its fields into an allocation
        // of its own, so a stored record never pins a whole received frame.
        let laid = match rebuilt.as_ref().and_then(|r| r.get(i)) {
            Some(laid) => *laid,
            None => {
                let p: pb::Record = rs2p_base::wire::decode_bytes(raw.clone())
                    .map_err(|_| RecordError::Malformed)?;
                laid_of(&raw, &p)?
            }
        };
        check(&laid, limits)?;
        out.push(Stored::from_laid(&raw, &laid, auth.clone(), index)?);
    }
    Ok(out)
}

/// Rebuilds a stored record from its exact signed bytes and its batch's proof, as kept in a data
/// directory. The signature is not checked again (the record was verified before it was stored);
/// the leaf hash and the owner are, so a damaged or mismatched record is refused as
/// [`RecordError::Malformed`] rather than stored under another record's proof.
pub fn reopen(raw: Bytes, auth: Arc<BatchAuth>, index: u32) -> Result<Stored, RecordError> {
    if auth.leaves.get(index as usize) != Some(&merkle::leaf(&raw)) {
        return Err(RecordError::Malformed);
    }
    let p: pb::Record =
        rs2p_base::wire::decode_bytes(raw.clone()).map_err(|_| RecordError::Malformed)?;
    Stored::from_laid(&raw, &laid_of(&raw, &p)?, auth, index)
}

/// Checks a record's fields against `l`.
fn check(f: &Laid, l: &Limits) -> Result<(), RecordError> {
    let (key_len, value_len) = (f.spans.key.1, f.spans.value.1);
    if key_len == 0 || key_len > l.max_key_len || value_len > l.max_value_len {
        return Err(RecordError::TooLarge);
    }
    if f.tombstone && value_len != 0 {
        return Err(RecordError::Malformed);
    }
    if f.issued_at_ms > l.now.saturating_add(l.max_skew) {
        return Err(RecordError::FutureTimestamp);
    }
    if f.lease_ms > l.max_lease {
        return Err(RecordError::LeaseTooLong);
    }
    Ok(())
}

/// Groups stored records by their batch and builds wire batches that carry them with their
/// original signatures (the leaves travel along unless the group is the whole batch in order).
pub fn regroup<'a>(records: impl IntoIterator<Item = &'a Stored>) -> Vec<pb::RecordBatch> {
    let mut groups: Vec<(Arc<BatchAuth>, Vec<&'a Stored>)> = Vec::new();
    let mut index: std::collections::HashMap<*const BatchAuth, usize> =
        std::collections::HashMap::new();
    for s in records {
        let key = Arc::as_ptr(s.auth());
        let slot = *index.entry(key).or_insert_with(|| {
            groups.push((s.auth().clone(), Vec::new()));
            groups.len() - 1
        });
        groups[slot].1.push(s);
    }
    groups
        .into_iter()
        .map(|(auth, mut members)| {
            members.sort_by_key(|s| s.index());
            members.dedup_by_key(|s| s.index());
            let whole = members.len() == auth.leaves.len();
            pb::RecordBatch {
                owner: Bytes::copy_from_slice(auth.owner.as_bytes()),
                signature: if auth.is_signed() {
                    Bytes::copy_from_slice(&auth.signature)
                } else {
                    Bytes::new()
                },
                records: members.iter().map(|s| s.raw_bytes()).collect(),
                leaves: if whole {
                    vec![]
                } else {
                    auth.leaves
                        .iter()
                        .map(|l| Bytes::copy_from_slice(l))
                        .collect()
                },
                indices: if whole {
                    vec![]
                } else {
                    members.iter().map(|s| s.index()).collect()
                },
                flood_records: vec![],
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            network_id: [1; 32],
            now: 1_000_000,
            max_skew: 10_000,
            max_lease: 3_600_000,
            max_key_len: 64,
            max_value_len: 64,
            accept_unsigned: false,
        }
    }

    fn rec(kp: &Keypair, key: &str, t: u64) -> Record {
        Record {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::from_static(b"v"),
            tombstone: false,
            owner: kp.peer_id(),
            issued_at: t,
            version: t << 10,
            lease_until: t + 3_600_000,
        }
    }

    fn arb_record() -> impl proptest::strategy::Strategy<Value = Record> {
        use proptest::prelude::*;
        (
            proptest::collection::vec(any::<u8>(), 1..300),
            proptest::collection::vec(any::<u8>(), 0..300),
            any::<bool>(),
            0u64..1_000_000,
            any::<u64>(),
            0u64..3_600_000,
        )
            .prop_map(
                |(key, value, tombstone, issued_at, version, lease)| Record {
                    key: key.into(),
                    value: if tombstone {
                        Bytes::new()
                    } else {
                        value.into()
                    },
                    tombstone,
                    owner: Keypair::from_seed([5; 32]).peer_id(),
                    issued_at,
                    version,
                    lease_until: issued_at + lease,
                },
            )
    }

    proptest::proptest! {
        /// A stored record reads back the record it was made from, whether it was sealed here
        /// or opened from the wire, and both forms hold the same bytes.
        #[test]
        fn a_stored_record_reads_back_its_record(
            records in proptest::collection::vec(arb_record(), 1..8),
        ) {
            let kp = Keypair::from_seed([5; 32]);
            let mut l = limits();
            l.max_key_len = 300;
            l.max_value_len = 300;
            let (sealed, wire) = seal(&kp, &[1; 32], records.clone());
            let opened = open(wire, &l).unwrap();
            for ((r, s), o) in records.iter().zip(&sealed).zip(&opened) {
                proptest::prop_assert_eq!(&s.record(), r);
                proptest::prop_assert_eq!(&o.record(), r);
                proptest::prop_assert_eq!(s.key(), &r.key[..]);
                proptest::prop_assert_eq!(o.value(), &r.value[..]);
                proptest::prop_assert_eq!(&o.value_bytes(), &r.value);
                proptest::prop_assert_eq!(s.raw(), o.raw());
                proptest::prop_assert_eq!(&o.raw_bytes()[..], s.raw());
                proptest::prop_assert!(s.same_record(o) && s == o);
                proptest::prop_assert_eq!(RecordFields::sort_key(o), r.sort_key());
            }
        }
    }

    #[test]
    fn a_sealed_batch_opens_whole_and_in_parts() {
        let kp = Keypair::from_seed([5; 32]);
        let records: Vec<Record> = (0..5)
            .map(|i| rec(&kp, &format!("k{i}"), 1000 + i))
            .collect();
        let (stored, wire) = seal(&kp, &[1; 32], records.clone());
        let opened = open(wire, &limits()).unwrap();
        assert_eq!(
            opened.iter().map(|s| s.record()).collect::<Vec<_>>(),
            records
        );
        // Any subset travels with the leaves and opens with the same signature.
        let part = regroup([&stored[1], &stored[3]]);
        assert_eq!(part.len(), 1);
        assert_eq!(part[0].leaves.len(), 5);
        let opened = open(part[0].clone(), &limits()).unwrap();
        assert_eq!(opened.len(), 2);
        assert_eq!(opened[1].record(), records[3]);
    }

    #[test]
    fn a_batch_split_in_parts_is_verified_once_and_still_checked_per_record() {
        let kp = Keypair::from_seed([5; 32]);
        let records: Vec<Record> = (0..6)
            .map(|i| rec(&kp, &format!("k{i}"), 1000 + i))
            .collect();
        let (stored, _) = seal(&kp, &[1; 32], records.clone());
        let first = regroup(&stored[..3]).remove(0);
        let second = regroup(&stored[3..]).remove(0);
        let mut verified = VerifiedBatches::default();
        let a = open_with(first, &limits(), &mut verified).unwrap();
        assert_eq!(verified.len(), 1);
        // The second part reuses the first part's proof (one copy of the leaves).
        let b = open_with(second.clone(), &limits(), &mut verified).unwrap();
        assert!(Arc::ptr_eq(a[0].auth(), b[0].auth()));
        assert_eq!(b[2].record(), records[5]);
        // A record swapped into a later part is still refused by its leaf.
        let mut bad = second.clone();
        bad.records[1] = rs2p_base::wire::encode(&rec(&kp, "other", 1000).to_pb());
        assert_eq!(
            open_with(bad, &limits(), &mut verified).unwrap_err(),
            RecordError::BadSignature
        );
        // So is the same proof claimed by another owner, or under other leaves.
        let mut bad = second.clone();
        bad.owner = Bytes::copy_from_slice(Keypair::from_seed([6; 32]).peer_id().as_bytes());
        assert_eq!(
            open_with(bad, &limits(), &mut verified).unwrap_err(),
            RecordError::BadSignature
        );
        // And limits are checked on every part: a later part under stricter limits is refused.
        let mut strict = limits();
        strict.max_lease = 0;
        assert_eq!(
            open_with(second, &strict, &mut verified).unwrap_err(),
            RecordError::LeaseTooLong
        );
    }

    #[test]
    fn unsigned_batches_open_only_where_accepted_and_travel_unsigned() {
        let kp = Keypair::from_seed([5; 32]);
        let records: Vec<Record> = (0..4)
            .map(|i| rec(&kp, &format!("k{i}"), 1000 + i))
            .collect();
        let (stored, wire) = seal_unsigned(kp.peer_id(), records.clone());
        assert!(!stored[0].auth().is_signed());
        assert!(wire.signature.is_empty());
        assert_eq!(
            open(wire.clone(), &limits()).unwrap_err(),
            RecordError::BadSignature
        );
        let mut trusting = limits();
        trusting.accept_unsigned = true;
        let opened = open(wire, &trusting).unwrap();
        assert_eq!(opened[3].record(), records[3]);
        assert_eq!(opened[0].auth().signature, stored[0].auth().signature);
        // Parts of it still travel unsigned, and still check each record's leaf.
        let mut part = regroup(&stored[1..3]).remove(0);
        assert!(part.signature.is_empty());
        assert_eq!(open(part.clone(), &trusting).unwrap().len(), 2);
        part.records[0] = rs2p_base::wire::encode(&rec(&kp, "other", 1000).to_pb());
        assert_eq!(
            open(part, &trusting).unwrap_err(),
            RecordError::BadSignature
        );
        // Parts opened with a memory share one proof, with the same id as the whole.
        let mut verified = VerifiedBatches::default();
        let x = open_with(regroup(&stored[..2]).remove(0), &trusting, &mut verified).unwrap();
        let y = open_with(regroup(&stored[2..]).remove(0), &trusting, &mut verified).unwrap();
        assert!(Arc::ptr_eq(x[0].auth(), y[0].auth()));
        assert_eq!(y[0].auth().signature, stored[0].auth().signature);
        // A signed batch is still verified where unsigned ones are accepted.
        let (signed, mut w) = seal(&kp, &[1; 32], records);
        assert!(signed[0].auth().is_signed());
        w.signature = Bytes::from(vec![7; 64]);
        assert_eq!(open(w, &trusting).unwrap_err(), RecordError::BadSignature);
    }

    #[test]
    fn forgeries_are_refused() {
        let kp = Keypair::from_seed([5; 32]);
        let other = Keypair::from_seed([6; 32]);
        let (_, wire) = seal(&kp, &[1; 32], vec![rec(&kp, "k", 1000)]);
        // Another network.
        let mut l = limits();
        l.network_id = [2; 32];
        assert_eq!(
            open(wire.clone(), &l).unwrap_err(),
            RecordError::BadSignature
        );
        // A record swapped in.
        let mut w = wire.clone();
        w.records[0] = rs2p_base::wire::encode(&rec(&kp, "other", 1000).to_pb());
        assert_eq!(open(w, &limits()).unwrap_err(), RecordError::BadSignature);
        // Claimed for another owner than the signer: the records carry no owner of their own,
        // so the claim fails the signature check.
        let mut w = wire.clone();
        w.owner = Bytes::copy_from_slice(other.peer_id().as_bytes());
        assert_eq!(open(w, &limits()).unwrap_err(), RecordError::BadSignature);
        // Future timestamp, over-long lease, oversized value.
        let mut r = rec(&kp, "k", 1_000_000 + 10_001);
        let (_, w) = seal(&kp, &[1; 32], vec![r.clone()]);
        assert_eq!(
            open(w, &limits()).unwrap_err(),
            RecordError::FutureTimestamp
        );
        r.issued_at = 1000;
        r.lease_until = 1000 + 3_600_001;
        let (_, w) = seal(&kp, &[1; 32], vec![r.clone()]);
        assert_eq!(open(w, &limits()).unwrap_err(), RecordError::LeaseTooLong);
        r.lease_until = 2000;
        r.value = Bytes::from(vec![0; 65]);
        let (_, w) = seal(&kp, &[1; 32], vec![r]);
        assert_eq!(open(w, &limits()).unwrap_err(), RecordError::TooLarge);
        // Garbage fields.
        let mut w = wire;
        w.signature = Bytes::from_static(b"short");
        assert_eq!(open(w, &limits()).unwrap_err(), RecordError::Malformed);
    }
}
