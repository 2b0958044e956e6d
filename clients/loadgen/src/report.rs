//! What a run reports: one [`Step`] per measured window (a fixed run has one, a ramp one per
//! subscriber count), as a table for people and JSON for machines; and the readings it takes
//! from `/proc` (the SFU's CPU time and RSS, the load generator's own CPU, UDP buffer errors).
//!
//! It owns no state of the run; it only turns counters into figures.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

/// Figures of one measured window.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// Subscribers (not publishing) in the run at this step, all Rooms (joins refused excluded).
    pub subscribers: usize,
    /// Peers that receive (subscribers, and publishers in group calls).
    pub receivers: usize,
    /// Length of the window, seconds.
    pub window_s: f64,
    /// RTP packets received by all Peers per second (what the SFU forwarded and delivered).
    pub packets_per_s: f64,
    /// Packets published per second (all publishers).
    pub published_per_s: f64,
    /// The SFU process's CPU time over the window divided by its length (1.0 = one core busy).
    pub sfu_cpu: Option<f64>,
    /// Received packets per CPU-second of the SFU process.
    pub packets_per_cpu_s: Option<f64>,
    /// Packets missing from the sequence numbers received, % of expected (gaps the SFU left).
    pub loss_pct: f64,
    /// Received packets, % of what the receivers' Rooms' publishers sent in the window (below
    /// 100 when the SFU queues, paces or drops before numbering); none with simulcast, where a
    /// subscriber gets one layer.
    pub delivered_pct: Option<f64>,
    /// Received packets that arrived more than 500 ms after they were sent, %.
    pub late_pct: f64,
    /// Mean one-way delay of received packets, ms.
    pub mean_delay_ms: f64,
    /// One-way delay of received audio packets in the window, median, ms (upper edge of its
    /// 1 ms histogram bucket; 100 ms buckets past 10 s; 60000 = 60 s or more).
    pub audio_delay_p50_ms: Option<f64>,
    /// Audio one-way delay, p99, ms.
    pub audio_delay_p99_ms: Option<f64>,
    /// Video one-way delay, median, ms.
    pub video_delay_p50_ms: Option<f64>,
    /// Video one-way delay, p99, ms.
    pub video_delay_p99_ms: Option<f64>,
    /// Received audio packets, % of the audio the receivers' Rooms' publishers sent (whether
    /// audio keeps flowing under overload).
    pub audio_delivered_pct: Option<f64>,
    /// Join time (join start → first complete key frame), p50, ms, of Peers that joined in this
    /// step (all Peers in a fixed run).
    pub join_p50_ms: Option<f64>,
    /// Join time p95, ms.
    pub join_p95_ms: Option<f64>,
    /// Peers of this step that received a complete key frame by the end of the window.
    pub joined: usize,
    /// Peers of this step that did not.
    pub not_joined: usize,
    /// Peers whose connection failed or closed.
    pub failed: usize,
    /// Joins of this step the SFU refused with `RESOURCE_EXHAUSTED` (its overload protection);
    /// `subscribers` counts only the accepted ones.
    pub refused: usize,
    /// Peers of this step whose ICE and DTLS connected by the end of the window.
    pub connected: usize,
    /// Distinct SFU addresses the Peers received from (with several Workers: how many Workers
    /// carried the run's Sessions).
    pub sfu_sockets: usize,
    /// Resident memory of the SFU process at the end of the window, KiB.
    pub sfu_rss_kib: Option<u64>,
    /// RSS growth since the previous step (the first step: since before any subscriber joined)
    /// per subscriber added, KiB.
    pub rss_kib_per_added_session: Option<f64>,
    /// The load generator's own CPU over the window (1.0 = one core).
    pub loadgen_cpu: f64,
    /// The load generator's CPU per received packet, µs (all its work: publishing, receiving,
    /// decrypting, feedback, signaling).
    pub loadgen_us_per_packet: Option<f64>,
    /// UDP receive-buffer overflows in this network namespace during the window (any socket:
    /// the SFU's or the load generator's).
    pub udp_rcvbuf_errors: u64,
    /// Whether this step is past the knee: loss or late packets over 1 %, or under 99 %
    /// delivered.
    pub overloaded: bool,
}

/// The result of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `switchboard` or `chat`.
    pub target: String,
    /// Rooms.
    pub rooms: usize,
    /// Publishers per Room.
    pub publishers: usize,
    /// Subscribers per Room at the end.
    pub subscribers: usize,
    /// Video sent as three simulcast layers.
    pub simulcast: bool,
    /// `fixed` or `ramp`.
    pub mode: String,
    /// One entry per measured window.
    pub steps: Vec<Step>,
    /// The ramp's knee: the last step not overloaded (a fixed run: its only step).
    pub knee: Option<Step>,
    /// The first overloaded step of a ramp (past the knee): its delay percentiles and audio
    /// delivery say how overload degrades.
    pub past_knee: Option<Step>,
    /// SFU memory per receiving Session: the median over the steps before the knee of
    /// [`Step::rss_kib_per_added_session`], KiB (with no publishers: per idle Session).
    pub rss_kib_per_session: Option<f64>,
}

impl Report {
    /// A table for people.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "target {}  rooms {}  publishers/room {}  simulcast {}  mode {}",
            self.target, self.rooms, self.publishers, self.simulcast, self.mode
        );
        let _ = writeln!(
            s,
            "{:>5} {:>9} {:>6} {:>6} {:>7} {:>9} {:>7} {:>6} {:>7} {:>13} {:>13} {:>8} {:>6} {:>6} {:>7} {:>7} {:>9} {:>8} {:>6} {:>5}",
            "subs",
            "pkts/s",
            "deliv%",
            "audio%",
            "sfu cpu",
            "pkt/cpu-s",
            "loss %",
            "late %",
            "delay",
            "audio p50/p99",
            "video p50/p99",
            "join p50",
            "p95",
            "joined",
            "missing",
            "refused",
            "rss MiB",
            "KiB/sess",
            "lg cpu",
            "drops"
        );
        for st in &self.steps {
            let _ = writeln!(
                s,
                "{:>5} {:>9.0} {:>6} {:>6} {:>7} {:>9} {:>7.2} {:>6.2} {:>5.0}ms {:>13} {:>13} {:>6}ms {:>4}ms {:>6} {:>7} {:>7} {:>9} {:>8} {:>6.2} {:>5}{}",
                st.subscribers,
                st.packets_per_s,
                opt(st.delivered_pct.map(|d| format!("{d:.1}"))),
                opt(st.audio_delivered_pct.map(|d| format!("{d:.1}"))),
                opt(st.sfu_cpu.map(|c| format!("{c:.2}"))),
                opt(st.packets_per_cpu_s.map(|c| format!("{c:.0}"))),
                st.loss_pct,
                st.late_pct,
                st.mean_delay_ms,
                pair_ms(st.audio_delay_p50_ms, st.audio_delay_p99_ms),
                pair_ms(st.video_delay_p50_ms, st.video_delay_p99_ms),
                opt(st.join_p50_ms.map(|c| format!("{c:.0}"))),
                opt(st.join_p95_ms.map(|c| format!("{c:.0}"))),
                st.joined,
                st.not_joined,
                st.refused,
                opt(st.sfu_rss_kib.map(|k| format!("{:.1}", k as f64 / 1024.0))),
                opt(st.rss_kib_per_added_session.map(|k| format!("{k:.0}"))),
                st.loadgen_cpu,
                st.udp_rcvbuf_errors,
                if st.overloaded { "  overloaded" } else { "" }
            );
        }
        match &self.knee {
            Some(k) => {
                let _ = writeln!(
                    s,
                    "knee: {} subscribers, {:.0} packets/s, {} packets per SFU CPU-second",
                    k.subscribers,
                    k.packets_per_s,
                    opt(k.packets_per_cpu_s.map(|c| format!("{c:.0}")))
                );
            }
            None => {
                let _ = writeln!(s, "knee: none (the first step was already overloaded)");
            }
        }
        if let Some(k) = &self.past_knee {
            let _ = writeln!(
                s,
                "past the knee ({} subscribers): audio delivered {} %, audio delay p99 {} ms, video delay p99 {} ms",
                k.subscribers,
                opt(k.audio_delivered_pct.map(|d| format!("{d:.1}"))),
                opt(k.audio_delay_p99_ms.map(|d| format!("{d:.0}"))),
                opt(k.video_delay_p99_ms.map(|d| format!("{d:.0}"))),
            );
        }
        if let Some(k) = self.rss_kib_per_session {
            let _ = writeln!(
                s,
                "SFU memory per {} Session: {k:.0} KiB (median RSS slope over the steps before the knee)",
                if self.publishers == 0 {
                    "idle"
                } else {
                    "receiving"
                },
            );
        }
        s
    }
}

/// "p50/p99" in ms, or "-".
fn pair_ms(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) => format!("{a:.0}/{b:.0}"),
        _ => "-".into(),
    }
}

fn opt(v: Option<String>) -> String {
    v.unwrap_or_else(|| "-".into())
}

/// The `q` quantile (0..=1) of `v`, in ms (nearest rank).
pub fn percentile_ms(v: &mut [Duration], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1].as_secs_f64() * 1000.0)
}

/// The median of `v` (the mean of the middle two for an even count); none when empty.
pub fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Clock ticks per second of `/proc/<pid>/stat` times (`getconf CLK_TCK`, 100 if unknown).
pub fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of a process (`self` or a pid), in clock ticks.
pub fn cpu_ticks(pid: &str) -> Option<u64> {
    parse_cpu_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // Fields after the command name (which may contain spaces and parentheses): state is field 3.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// VmRSS of a process, KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `Udp: RcvbufErrors` of this network namespace (`/proc/net/snmp`).
pub fn udp_rcvbuf_errors() -> u64 {
    let Ok(snmp) = std::fs::read_to_string("/proc/net/snmp") else {
        return 0;
    };
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp: "));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut v: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        assert_eq!(percentile_ms(&mut v, 0.5), Some(50.0));
        assert_eq!(percentile_ms(&mut v, 0.95), Some(95.0));
        // Nearest rank rounds up: 10 values, p95 is the 10th; 3 values, p50 is the 2nd.
        let mut ten: Vec<Duration> = (1..=10).map(Duration::from_millis).collect();
        assert_eq!(percentile_ms(&mut ten, 0.95), Some(10.0));
        let mut three: Vec<Duration> = (1..=3).map(Duration::from_millis).collect();
        assert_eq!(percentile_ms(&mut three, 0.5), Some(2.0));
        assert_eq!(percentile_ms(&mut [], 0.5), None);
    }

    #[test]
    fn cpu_time_is_utime_plus_stime() {
        // A command name with a space and a parenthesis; utime 1100, stime 220.
        let stat = "4242 (sw (worker) 1) S 1 4242 4242 0 -1 4194560 900 0 0 0 1100 220 0 0 20 0 9 0 77 1000 200";
        assert_eq!(parse_cpu_ticks(stat), Some(1320));
        assert!(cpu_ticks("self").is_some());
        assert!(rss_kib(std::process::id()).is_some_and(|k| k > 0));
    }
}
