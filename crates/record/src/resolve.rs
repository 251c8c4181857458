//! Which write a key shows: a pure function of the set of its valid records.
//!
//! Records are sorted by [`Record::sort_key`] — `(issued_at, owner, version)` — and folded from
//! an empty slot. With leasing, a record *applies* when
//!
//! 1. the slot is empty, or
//! 2. it is by the current holder with a higher version (an update, renewal or delete by the
//!    owner), or
//! 3. it was issued at or after the holder's `lease_until` (the lease had expired);
//!
//! without leasing every record applies (last writer wins in that order). An applying tombstone
//! empties the slot (py2p: "del relinquishes your lease"). The key shows the holder's value.
//!
//! Because the result depends only on the set, never on arrival order or a local clock, replicas
//! that hold the same records show the same dictionary. Two leases issued in the same
//! millisecond: the lower owner id sorts first and holds; the other does not apply.

#[cfg(doc)]
use super::record::Record;
use super::record::RecordFields;

/// Whether `r` applies on top of `holder` (see the [module docs](self)).
pub fn applies<R: RecordFields>(holder: Option<&R>, r: &R, leasing: bool) -> bool {
    match holder {
        None => true,
        Some(_) if !leasing => true,
        Some(h) => {
            (r.owner() == h.owner() && r.version() > h.version())
                || r.issued_at() >= h.lease_until()
        }
    }
}

/// Without leasing, the fold keeps the record that sorts last: whether `r` replaces `holder`.
/// Stores that keep only each key's newest record (the chord socket, a non-leasing sync store)
/// use this and agree with [`fold`].
pub fn supersedes<R: RecordFields>(holder: &R, r: &R) -> bool {
    r.sort_key() > holder.sort_key()
}

/// Folds records already sorted by [`Record::sort_key`]; returns the index of the holder, or
/// `None` when the key is empty (never written, or deleted).
pub fn fold<'a, R: RecordFields + 'a>(
    sorted: impl IntoIterator<Item = &'a R>,
    leasing: bool,
) -> Option<usize> {
    match fold_from(None, sorted, leasing) {
        Folded::At(i) => Some(i),
        Folded::Empty | Folded::Initial => None,
    }
}

/// The result of [`fold_from`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Folded {
    /// The key is empty.
    Empty,
    /// The initial holder still holds.
    Initial,
    /// The record at this index holds.
    At(usize),
}

/// Folds sorted records on top of an initial holder (a checkpoint: the fold of every earlier
/// record). `fold(P ∪ S) = fold_from(fold(P), S)` whenever every record of `P` sorts before every
/// record of `S`, which is what makes checkpoints exact.
pub fn fold_from<'a, R: RecordFields + 'a>(
    initial: Option<&'a R>,
    sorted: impl IntoIterator<Item = &'a R>,
    leasing: bool,
) -> Folded {
    let mut holder: Option<&R> = initial;
    let mut result = if initial.is_some() {
        Folded::Initial
    } else {
        Folded::Empty
    };
    for (i, r) in sorted.into_iter().enumerate() {
        if applies(holder, r, leasing) {
            holder = (!r.tombstone()).then_some(r);
            result = if r.tombstone() {
                Folded::Empty
            } else {
                Folded::At(i)
            };
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Record;
    use bytes::Bytes;
    use proptest::prelude::*;
    use rs2p_base::PeerId;

    const LEASE: u64 = 3600;

    fn rec(owner: u8, t: u64, v: u64, tomb: bool) -> Record {
        Record {
            key: Bytes::from_static(b"k"),
            value: if tomb {
                Bytes::new()
            } else {
                Bytes::from(format!("{owner}@{t}"))
            },
            tombstone: tomb,
            owner: PeerId::from_bytes([owner; 32]),
            issued_at: t,
            version: v,
            lease_until: t + LEASE,
        }
    }

    fn visible(mut set: Vec<Record>, leasing: bool) -> Option<Record> {
        set.sort_by_key(Record::sort_key);
        set.dedup();
        fold(set.iter(), leasing).map(|i| set[i].clone())
    }

    #[test]
    fn the_examples_of_the_design() {
        // {A@0, B@1000, A@2000}: A's lease blocks B; A's second write renews.
        let s = vec![
            rec(1, 0, 1, false),
            rec(2, 1000, 1, false),
            rec(1, 2000, 2, false),
        ];
        assert_eq!(visible(s.clone(), true).unwrap().value, "1@2000");
        // Dropping A@0 would make B win: why records cannot be pruned by a window.
        assert_eq!(visible(s[1..].to_vec(), true).unwrap().value, "2@1000");
        // Same millisecond: the lower owner id holds.
        assert_eq!(
            visible(vec![rec(2, 5, 1, false), rec(1, 5, 1, false)], true)
                .unwrap()
                .owner,
            PeerId::from_bytes([1; 32])
        );
        // Expired lease: a later writer takes over.
        assert_eq!(
            visible(vec![rec(1, 0, 1, false), rec(2, LEASE, 1, false)], true)
                .unwrap()
                .value,
            "2@3600"
        );
        // The owner's delete frees the key at once.
        assert_eq!(
            visible(
                vec![rec(1, 0, 1, false), rec(1, 1, 2, true), rec(2, 2, 1, false)],
                true
            )
            .unwrap()
            .value,
            "2@2"
        );
        // Another peer's delete during the lease does nothing.
        assert_eq!(
            visible(vec![rec(1, 0, 1, false), rec(2, 1, 1, true)], true)
                .unwrap()
                .value,
            "1@0"
        );
        // Without leasing, the last write in sort order wins, the lower id on a tie.
        assert_eq!(
            visible(vec![rec(1, 0, 1, false), rec(2, 1, 1, false)], false)
                .unwrap()
                .value,
            "2@1"
        );
        assert_eq!(
            visible(vec![rec(2, 1, 1, false), rec(1, 1, 1, false)], false)
                .unwrap()
                .value,
            "2@1"
        );
    }

    fn arb_set() -> impl Strategy<Value = Vec<Record>> {
        // Few owners and a short time range, so leases overlap and ties happen.
        proptest::collection::vec((1u8..5, 0u64..3 * LEASE, any::<bool>()), 0..12).prop_map(|v| {
            let mut versions = [0u64; 8];
            let mut v = v;
            // Versions increase with time per owner, as honest owners issue them.
            v.sort_by_key(|&(o, t, _)| (o, t));
            v.into_iter()
                .map(|(o, t, tomb)| {
                    versions[o as usize] += 1;
                    rec(o, t, versions[o as usize], tomb && t % 3 == 0)
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn any_permutation_or_duplication_gives_the_same_state(
            set in arb_set(), leasing in any::<bool>(), seed in any::<u64>(), dups in proptest::collection::vec(any::<prop::sample::Index>(), 0..5)
        ) {
            use rand::{seq::SliceRandom, SeedableRng};
            let expected = visible(set.clone(), leasing);
            let mut shuffled = set.clone();
            for d in &dups {
                if !set.is_empty() {
                    shuffled.push(set[d.index(set.len())].clone());
                }
            }
            shuffled.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
            prop_assert_eq!(visible(shuffled, leasing), expected);
        }

        #[test]
        fn a_lease_is_never_violated(set in arb_set()) {
            // Whenever a record of another owner applies over a holder, the holder's lease had
            // expired at its issue time.
            let mut s = set;
            s.sort_by_key(Record::sort_key);
            s.dedup();
            let mut holder: Option<&Record> = None;
            for r in &s {
                if applies(holder, r, true) {
                    if let Some(h) = holder {
                        prop_assert!(r.owner == h.owner || r.issued_at >= h.lease_until);
                    }
                    holder = if r.tombstone { None } else { Some(r) };
                }
            }
        }

        #[test]
        fn replaying_an_old_record_never_rolls_a_key_back_without_leasing(set in arb_set(), pick in any::<prop::sample::Index>()) {
            prop_assume!(!set.is_empty());
            let state = visible(set.clone(), false);
            let mut again = set.clone();
            again.push(set[pick.index(set.len())].clone());
            prop_assert_eq!(visible(again, false), state);
        }
    }
}
