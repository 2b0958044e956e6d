//! This process's CPU use, read from `/proc/self/stat` (Linux), for the load a node publishes,
//! and [`Rate`], which turns a growing total (CPU ticks, forwarded packets) into a per-second
//! figure over intervals long enough to mean something. The figures of the media path themselves
//! (forwarded packets, Worker loop lag) come from the Workers.

use std::time::{Duration, Instant};

/// A per-second rate of a growing total, re-measured only once at least `min_interval` has
/// passed since the last measurement (a caller asking sooner, such as a status call right after
/// a heartbeat, gets the last figure): over a few milliseconds a 10 ms CPU tick would read as a
/// saturated machine and a burst of packets as a flood.
#[derive(Debug, Default)]
pub(crate) struct Rate {
    last: Option<(Instant, u64)>,
    per_sec: f64,
}

impl Rate {
    /// The rate with `total` read at `now` (0 until two readings `min_interval` apart).
    pub(crate) fn update(&mut self, now: Instant, total: u64, min_interval: Duration) -> f64 {
        match self.last {
            None => self.last = Some((now, total)),
            Some((at, before)) => {
                let wall = now.saturating_duration_since(at);
                if wall >= min_interval && !wall.is_zero() {
                    self.per_sec = total.saturating_sub(before) as f64 / wall.as_secs_f64();
                    self.last = Some((now, total));
                }
            }
        }
        self.per_sec
    }
}

/// `/proc/[pid]/stat` counts CPU time in USER_HZ ticks, 100 per second on Linux (its ABI).
pub(crate) const CLOCK_TICKS_PER_SEC: f64 = 100.0;

/// User + system CPU ticks of this process (Linux `/proc/self/stat`; `None` elsewhere).
pub(crate) fn process_cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may contain spaces) start at field 3 (state);
    // utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::Rate;

    #[test]
    fn a_rate_is_measured_only_over_long_enough_intervals() {
        let t0 = Instant::now();
        let min = Duration::from_millis(300);
        let mut r = Rate::default();
        assert_eq!(r.update(t0, 100, min), 0.0);
        // 2 ms later: a tick's worth of growth must not read as 500 per second.
        assert_eq!(r.update(t0 + Duration::from_millis(2), 101, min), 0.0);
        assert_eq!(r.update(t0 + Duration::from_millis(500), 150, min), 100.0);
        // Asked again at once: the last figure, and the baseline stays.
        assert_eq!(r.update(t0 + Duration::from_millis(501), 151, min), 100.0);
        assert_eq!(r.update(t0 + Duration::from_millis(1500), 250, min), 100.0);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn process_cpu_time_is_read_and_grows_with_work() {
        let before = super::process_cpu_ticks().expect("/proc/self/stat");
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(150) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        assert!(super::process_cpu_ticks().unwrap() > before);
    }
}
