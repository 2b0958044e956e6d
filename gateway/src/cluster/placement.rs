//! Placement of new Rooms: the load score and the power-of-two-choices pick. Pure functions; the
//! agent feeds them the node list and its own recent placements.

use rand_core::RngCore;

use super::store::NodeLoad;

/// The placement score of a node (lower takes new Rooms first): Sessions and Rooms per Worker, plus
/// `penalty` Sessions for every Room it took within the ramp-up window (`recent`: what it published
/// plus what this node placed there since), so a burst of creations does not pile onto the node
/// that looked emptiest a moment ago.
pub fn score(load: &NodeLoad, workers: u32, recent: u32, penalty: u32) -> f64 {
    let work = f64::from(load.sessions) + f64::from(load.rooms);
    let rampup = f64::from(penalty) * f64::from(recent);
    (work + rampup) / f64::from(workers.max(1))
}

/// Power of two choices: two distinct candidates drawn at random, the lower score wins (the first
/// drawn on a tie). `None` when there is no candidate.
pub fn pick(scores: &[f64], rng: &mut impl RngCore) -> Option<usize> {
    match scores.len() {
        0 => None,
        1 => Some(0),
        n => {
            let a = (rng.next_u64() % n as u64) as usize;
            let mut b = (rng.next_u64() % (n as u64 - 1)) as usize;
            if b >= a {
                b += 1;
            }
            Some(if scores[b] < scores[a] { b } else { a })
        }
    }
}

#[cfg(test)]
mod tests {
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    use super::*;

    #[test]
    fn the_most_loaded_node_is_never_picked_among_three() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let scores = [3.0, 40.0, 2.0];
        let mut seen = [0u32; 3];
        for _ in 0..1000 {
            seen[pick(&scores, &mut rng).unwrap()] += 1;
        }
        assert_eq!(seen[1], 0, "{seen:?}");
        // The least loaded wins both its pairings, the middle one only against the loaded one.
        assert!(seen[2] > seen[0] && seen[0] > 0, "{seen:?}");
    }

    #[test]
    fn rampup_penalty_spreads_a_burst() {
        let idle = NodeLoad::default();
        let a = score(&idle, 2, 0, 5);
        let b = score(&idle, 2, 3, 5);
        assert!(a < b);
        assert_eq!(b, 7.5);
        assert_eq!(pick(&[], &mut ChaCha20Rng::seed_from_u64(1)), None);
        assert_eq!(pick(&[9.0], &mut ChaCha20Rng::seed_from_u64(1)), Some(0));
    }
}
