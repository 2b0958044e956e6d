//! This process's CPU use, read from `/proc/self/stat` (Linux), for the load a node publishes.
//! Nothing else: the figures of the media path (forwarded packets/s, Worker loop lag) come from
//! the gateway's metrics.

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
