//! Placement of new Rooms: the load score and the power-of-two-choices pick. Pure functions; the
//! agent feeds them the node list and its own recent placements.

use rand_core::RngCore;

use super::store::NodeLoad;

/// Forwarded RTP packets per second that count as one Session of work: a subscriber of one
/// 30 fps video and one Opus Track receives about 170 packets/s.
pub const PPS_PER_SESSION: f64 = 200.0;

/// Session-equivalents per Worker added for a node under full pressure (its process using every
/// core, or a Worker loop [`LAG_AT_FULL_PRESSURE_MICROS`] behind), so a saturated node loses to
/// any node with headroom unless that one is far busier.
pub const PRESSURE_WEIGHT: f64 = 50.0;

/// Worker loop lag that counts as full pressure (100 ms).
pub const LAG_AT_FULL_PRESSURE_MICROS: u64 = 100_000;

/// CPU share (per mille of the machine) below which a node is under no pressure: pressure grows
/// linearly from here to full at 1000, so ordinary load and measurement noise move nothing.
pub const CPU_PRESSURE_FROM_PERMILLE: u32 = 500;

/// The placement score of a node (lower takes new Rooms first), in Session-equivalents per
/// Worker: its Sessions and Rooms, plus its forwarded packets/s over [`PPS_PER_SESSION`] (a few
/// large Rooms weigh what they forward, not just their Session count), plus `penalty` Sessions for
/// every Room it took within the ramp-up window (`recent`: what it published plus what this node
/// placed there since, so a burst of creations does not pile onto the node that looked emptiest a
/// moment ago); then [`PRESSURE_WEIGHT`] times its pressure (0 to 1), the larger of its CPU share
/// above [`CPU_PRESSURE_FROM_PERMILLE`] (scaled to reach 1 at the whole machine) and its worst
/// Worker loop lag over [`LAG_AT_FULL_PRESSURE_MICROS`], so a node that is short of CPU takes new
/// Rooms last. Fields published as 0 ("not measured") add nothing.
pub fn score(load: &NodeLoad, workers: u32, recent: u32, penalty: u32) -> f64 {
    let work = f64::from(load.sessions)
        + f64::from(load.rooms)
        + load.forwarded_pps as f64 / PPS_PER_SESSION;
    let rampup = f64::from(penalty) * f64::from(recent);
    let cpu = f64::from(load.cpu_permille.saturating_sub(CPU_PRESSURE_FROM_PERMILLE))
        / f64::from(1000 - CPU_PRESSURE_FROM_PERMILLE);
    let lag = load.loop_lag_micros as f64 / LAG_AT_FULL_PRESSURE_MICROS as f64;
    let pressure = cpu.max(lag).clamp(0.0, 1.0);
    (work + rampup) / f64::from(workers.max(1)) + PRESSURE_WEIGHT * pressure
}

/// The candidates of a placement preferring `region`: the indices of the nodes in `regions`
/// whose region is `region`, when there is one; otherwise every index (no region named, or no
/// serving node there: a Room far away beats no Room).
pub fn in_region(regions: &[&str], region: Option<&str>) -> Vec<usize> {
    let all = || (0..regions.len()).collect();
    let Some(region) = region else {
        return all();
    };
    let local: Vec<usize> = (0..regions.len())
        .filter(|&i| regions[i] == region)
        .collect();
    if local.is_empty() { all() } else { local }
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
    fn a_region_with_a_node_keeps_the_placement_else_every_node_counts() {
        let regions = ["eu", "us", "", "eu"];
        assert_eq!(in_region(&regions, Some("eu")), vec![0, 3]);
        assert_eq!(in_region(&regions, Some("us")), vec![1]);
        assert_eq!(in_region(&regions, Some("ap")), vec![0, 1, 2, 3]);
        assert_eq!(in_region(&regions, None), vec![0, 1, 2, 3]);
        assert_eq!(in_region(&[], Some("eu")), Vec::<usize>::new());
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

    #[test]
    fn forwarded_packets_and_pressure_count_as_load() {
        let two_sessions = NodeLoad {
            sessions: 2,
            ..NodeLoad::default()
        };
        // One Room forwarding 10 000 packets/s weighs 50 Sessions, per Worker.
        let busy = NodeLoad {
            sessions: 2,
            forwarded_pps: 10_000,
            ..NodeLoad::default()
        };
        assert_eq!(score(&two_sessions, 1, 0, 5), 2.0);
        assert_eq!(score(&busy, 2, 0, 5), 26.0);
        // A node whose CPU is saturated, or whose Worker loop lags 100 ms or more, scores as
        // under full pressure; CPU under half the machine adds nothing, 75 % is half the weight;
        // the larger of the two counts.
        let hot_cpu = NodeLoad {
            cpu_permille: 1000,
            ..two_sessions
        };
        let lagging = NodeLoad {
            loop_lag_micros: 250_000,
            ..two_sessions
        };
        let half = NodeLoad {
            cpu_permille: 750,
            loop_lag_micros: 20_000,
            ..two_sessions
        };
        let busy_but_fine = NodeLoad {
            cpu_permille: 500,
            ..two_sessions
        };
        assert_eq!(score(&busy_but_fine, 1, 0, 5), 2.0);
        assert_eq!(score(&hot_cpu, 1, 0, 5), 2.0 + PRESSURE_WEIGHT);
        assert_eq!(score(&lagging, 1, 0, 5), 2.0 + PRESSURE_WEIGHT);
        assert_eq!(score(&half, 1, 0, 5), 2.0 + PRESSURE_WEIGHT / 2.0);
        // A node without Sessions whose CPU is 90 % busy loses to one with ten Sessions and room.
        let starved = NodeLoad {
            cpu_permille: 900,
            ..NodeLoad::default()
        };
        let ten = NodeLoad {
            sessions: 10,
            cpu_permille: 100,
            ..NodeLoad::default()
        };
        assert!(score(&starved, 1, 0, 5) > score(&ten, 1, 0, 5));
    }
}
