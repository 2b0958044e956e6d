//! One-way delay distributions of received packets, audio and video apart, in fixed-size
//! histograms: 1 ms buckets up to 10 s, 100 ms buckets up to 60 s, then one overflow bucket. The
//! memory is fixed (≈ 84 KiB per histogram) whatever the packet count, and a window's
//! distribution is the difference of two cumulative snapshots.
//!
//! It owns only the counts; it knows nothing of Peers or windows.

/// Fine buckets: 1 ms each, covering [0, 10 s).
const FINE: usize = 10_000;
/// Coarse buckets: 100 ms each, covering [10 s, 60 s).
const COARSE: usize = 500;
const COARSE_US: u64 = 100_000;
/// Fine buckets, coarse buckets, and the overflow bucket (≥ 60 s).
const BUCKETS: usize = FINE + COARSE + 1;

/// Upper edge of the overflow bucket as reported: a percentile that falls there reads "60 s or
/// more".
pub const OVERFLOW_MS: f64 = 60_000.0;

/// Counts of delays, cumulative.
#[derive(Clone, PartialEq, Eq)]
pub struct Histogram {
    counts: Box<[u64]>,
    total: u64,
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Histogram({} samples)", self.total)
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            total: 0,
        }
    }
}

impl Histogram {
    /// Counts one delay, µs.
    pub fn record(&mut self, delay_us: u64) {
        let ms = delay_us / 1000;
        let i = if ms < FINE as u64 {
            ms as usize
        } else {
            let c = (delay_us - FINE as u64 * 1000) / COARSE_US;
            FINE + (c as usize).min(COARSE)
        };
        self.counts[i] += 1;
        self.total += 1;
    }

    /// Samples counted.
    #[cfg(test)]
    pub fn total(&self) -> u64 {
        self.total
    }

    /// What was counted after `earlier` (a snapshot of the same histogram).
    pub fn since(&self, earlier: &Self) -> Self {
        let counts = self
            .counts
            .iter()
            .zip(earlier.counts.iter())
            .map(|(a, b)| a.saturating_sub(*b))
            .collect::<Vec<_>>()
            .into_boxed_slice();
        Self {
            total: counts.iter().sum(),
            counts,
        }
    }

    /// The `q` quantile (0..=1) by nearest rank, ms, as the upper edge of the bucket holding it
    /// (never under the true value by more than the bucket's width: 1 ms up to 10 s, then
    /// 100 ms); [`OVERFLOW_MS`] for 60 s or more; none without samples.
    pub fn percentile_ms(&self, q: f64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(upper_edge_ms(i));
            }
        }
        Some(OVERFLOW_MS)
    }
}

fn upper_edge_ms(bucket: usize) -> f64 {
    if bucket < FINE {
        (bucket + 1) as f64
    } else if bucket < FINE + COARSE {
        (FINE * 1000 + (bucket - FINE + 1) * COARSE_US as usize) as f64 / 1000.0
    } else {
        OVERFLOW_MS
    }
}

/// Delay histograms of everything the load generator's receivers got, by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delays {
    /// Audio packets.
    pub audio: Histogram,
    /// Video packets.
    pub video: Histogram,
}

impl Delays {
    /// Counts one received packet's delay.
    pub fn record(&mut self, video: bool, delay_us: u64) {
        if video {
            self.video.record(delay_us)
        } else {
            self.audio.record(delay_us)
        }
    }

    /// What was counted after `earlier`.
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            audio: self.audio.since(&earlier.audio),
            video: self.video.since(&earlier.video),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> u64 {
        v * 1000
    }

    #[test]
    fn percentiles_are_nearest_rank_bucket_upper_edges() {
        let mut h = Histogram::default();
        assert_eq!(h.percentile_ms(0.5), None);
        // 1..=100 ms, each in the middle of its bucket: p50 is the 50th, p99 the 99th.
        for v in 1..=100 {
            h.record(ms(v) + 500);
        }
        assert_eq!(h.percentile_ms(0.5), Some(51.0));
        assert_eq!(h.percentile_ms(0.99), Some(100.0));
        assert_eq!(h.percentile_ms(1.0), Some(101.0));
        assert_eq!(h.percentile_ms(0.0), Some(2.0));
        // One sample under a millisecond lands in the first bucket.
        let mut one = Histogram::default();
        one.record(300);
        assert_eq!(one.percentile_ms(0.99), Some(1.0));
    }

    #[test]
    fn a_tail_of_one_percent_moves_p99_but_not_p50() {
        let mut h = Histogram::default();
        for _ in 0..990 {
            h.record(ms(20));
        }
        for _ in 0..10 {
            h.record(ms(3_000));
        }
        assert_eq!(h.percentile_ms(0.5), Some(21.0));
        assert_eq!(h.percentile_ms(0.99), Some(21.0));
        h.record(ms(3_000));
        assert_eq!(h.percentile_ms(0.99), Some(3_001.0));
    }

    #[test]
    fn long_delays_use_coarse_buckets_then_overflow() {
        let mut h = Histogram::default();
        h.record(ms(9_999) + 999);
        assert_eq!(h.percentile_ms(1.0), Some(10_000.0));
        let mut h = Histogram::default();
        h.record(ms(10_000));
        assert_eq!(h.percentile_ms(1.0), Some(10_100.0));
        let mut h = Histogram::default();
        h.record(ms(19_750));
        assert_eq!(h.percentile_ms(1.0), Some(19_800.0));
        let mut h = Histogram::default();
        h.record(ms(59_999));
        assert_eq!(h.percentile_ms(1.0), Some(60_000.0));
        h.record(ms(3_600_000));
        h.record(u64::MAX);
        assert_eq!(h.percentile_ms(1.0), Some(OVERFLOW_MS));
        assert_eq!(h.total(), 3);
    }

    #[test]
    fn a_window_is_the_difference_of_two_snapshots() {
        let mut d = Delays::default();
        for _ in 0..100 {
            d.record(false, ms(5));
            d.record(true, ms(7));
        }
        let start = d.clone();
        for _ in 0..100 {
            d.record(false, ms(400));
        }
        let w = d.since(&start);
        assert_eq!(w.audio.total(), 100);
        assert_eq!(w.video.total(), 0);
        assert_eq!(w.audio.percentile_ms(0.5), Some(401.0));
        assert_eq!(w.video.percentile_ms(0.5), None);
        // Cumulative, both windows together.
        assert_eq!(d.audio.percentile_ms(0.5), Some(6.0));
        assert_eq!(d.video.percentile_ms(0.99), Some(8.0));
    }
}
