//! Ring arithmetic: positions on the 2^64 identifier circle and the half-open intervals that
//! decide who owns what. Everything wraps around.

use rs2p_base::{hash256, PeerId};

/// A point on the ring.
pub type Pos = u64;

/// A node's position: the first 8 bytes (little endian) of `BLAKE2s("rs2p/v1/chord-node", id)`.
pub fn node_pos(peer: &PeerId) -> Pos {
    rs2p_record::short(&hash256("rs2p/v1/chord-node", &[peer.as_bytes()]))
}

/// A key's position: the first 8 bytes (little endian) of `BLAKE2s("rs2p/v1/chord-key", key)`.
pub fn key_pos(key: &[u8]) -> Pos {
    rs2p_record::short(&hash256("rs2p/v1/chord-key", &[key]))
}

/// How far `to` lies clockwise from `from` (0 when equal).
pub fn dist(from: Pos, to: Pos) -> u64 {
    to.wrapping_sub(from)
}

/// Whether `x` lies in the half-open arc `(from, to]`. When `from == to` the arc is the whole
/// ring (a node that is its own predecessor owns everything).
pub fn in_arc(x: Pos, from: Pos, to: Pos) -> bool {
    from == to || (dist(from, x) != 0 && dist(from, x) <= dist(from, to))
}

/// Whether `x` lies strictly between `from` and `to` going clockwise (`(from, to)`); when
/// `from == to`, everything but that point.
pub fn strictly_between(x: Pos, from: Pos, to: Pos) -> bool {
    x != to && in_arc(x, from, to)
}

/// The target of finger `i` (0 ≤ i < 64) of the node at `at`: `at + 2^i`.
pub fn finger_target(at: Pos, i: u32) -> Pos {
    at.wrapping_add(1u64 << (i % 64))
}

/// Among `positions`, the successor of `x`: the first at or after it clockwise.
pub fn successor_of(x: Pos, positions: impl IntoIterator<Item = Pos>) -> Option<Pos> {
    positions.into_iter().min_by_key(|&p| dist(x, p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn every_point_has_exactly_one_owner(mut nodes in proptest::collection::btree_set(any::<u64>(), 1..40), x in any::<u64>()) {
            // Each node owns (its predecessor, itself]; the arcs partition the ring.
            let v: Vec<u64> = std::mem::take(&mut nodes).into_iter().collect();
            let owners: Vec<u64> = (0..v.len())
                .filter(|&i| in_arc(x, v[(i + v.len() - 1) % v.len()], v[i]))
                .map(|i| v[i])
                .collect();
            prop_assert_eq!(owners.len(), 1);
            prop_assert_eq!(Some(owners[0]), successor_of(x, v.iter().copied()));
        }

        #[test]
        fn a_join_moves_exactly_the_keys_between_the_predecessor_and_the_newcomer(
            nodes in proptest::collection::btree_set(any::<u64>(), 1..30),
            new in any::<u64>(),
            keys in proptest::collection::vec(any::<u64>(), 0..100),
        ) {
            prop_assume!(!nodes.contains(&new));
            let before: Vec<u64> = nodes.iter().copied().collect();
            let mut after = before.clone();
            after.push(new);
            let pred = before.iter().copied().min_by_key(|&p| dist(p, new)).expect("nonempty");
            for k in keys {
                let (a, b) = (successor_of(k, before.iter().copied()), successor_of(k, after.iter().copied()));
                if in_arc(k, pred, new) {
                    prop_assert_eq!(b, Some(new));
                } else {
                    // Nobody else's keys move; a leave is the same change backwards.
                    prop_assert_eq!(a, b);
                }
            }
        }

        #[test]
        fn finger_targets_halve_the_distance(at in any::<u64>(), x in any::<u64>()) {
            prop_assume!(x != at);
            // The largest finger before x covers at least half the way to it.
            let d = dist(at, x);
            let i = 63 - d.leading_zeros();
            let f = finger_target(at, i);
            prop_assert!(in_arc(f, at, x));
            prop_assert!(dist(f, x) < d / 2 + 1);
        }

        #[test]
        fn arcs_and_distances_agree(x in any::<u64>(), a in any::<u64>(), b in any::<u64>()) {
            prop_assume!(a != b);
            prop_assert_eq!(in_arc(x, a, b), x != a && dist(a, x) <= dist(a, b));
            prop_assert!(in_arc(b, a, b));
            prop_assert!(!in_arc(a, a, b));
            prop_assert_eq!(in_arc(x, a, b), !in_arc(x, b, a));
        }
    }

    #[test]
    fn the_whole_ring_when_alone() {
        assert!(in_arc(5, 9, 9));
        assert!(in_arc(9, 9, 9));
        assert!(!strictly_between(9, 9, 9));
        assert_eq!(finger_target(u64::MAX, 0), 0);
    }
}
