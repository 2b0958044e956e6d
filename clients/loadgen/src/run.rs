//! A run: set up Rooms and publishers, add subscribers (all at once, or in ramp steps until the
//! SFU is overloaded), and measure windows of counters, the SFU's CPU time and memory.
//!
//! It owns the run's order of events and the progress line; the figures come from `report.rs`,
//! the media from `media.rs`, the signaling from `backend.rs`.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::Error;
use crate::backend::{Backend, Target};
use crate::delay::Delays;
use crate::media::{MediaHandle, PeerSnapshot, Snapshot};
use crate::peer::Counters;
use crate::peer::PeerOptions;
use crate::report::{self, Report, Step};

/// Ramp mode: add subscribers in steps until loss or late packets exceed 1 %.
#[derive(Debug, Clone, Copy)]
pub struct Ramp {
    /// Subscribers added per Room per step.
    pub step: usize,
    /// Stop after this many subscribers per Room even without overload.
    pub max: usize,
    /// Overloaded steps to measure before stopping (1: stop at the first one), to see how
    /// overload degrades further past the knee.
    pub past: usize,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The SFU under test.
    pub target: Target,
    /// Rooms (str0m chat has one).
    pub rooms: usize,
    /// Publishers per Room; 0 measures idle Sessions (subscribers of Rooms where nobody
    /// publishes: connected, receiving nothing).
    pub publishers: usize,
    /// Subscribers per Room (a ramp's first step when ramping).
    pub subscribers: usize,
    /// Publishers send simulcast (three layers).
    pub simulcast: bool,
    /// Time after joining before measuring.
    pub settle: Duration,
    /// Length of a measurement window.
    pub window: Duration,
    /// Ramp mode.
    pub ramp: Option<Ramp>,
    /// The SFU's process id, for CPU time and RSS.
    pub sfu_pid: Option<u32>,
    /// Joins in flight at once.
    pub join_concurrency: usize,
    /// `max_sessions` of each Room (Switchboard refuses joins past it with
    /// `RESOURCE_EXHAUSTED`, which the report counts as refused).
    pub max_sessions: u32,
    /// Print a progress line to stderr every second.
    pub progress: bool,
    /// The address Peers bind.
    pub bind_ip: IpAddr,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            target: Target::Switchboard {
                url: "http://127.0.0.1:50051".into(),
                api_key: String::new(),
            },
            rooms: 1,
            publishers: 1,
            subscribers: 10,
            simulcast: false,
            settle: Duration::from_secs(3),
            window: Duration::from_secs(5),
            ramp: None,
            sfu_pid: None,
            join_concurrency: 25,
            max_sessions: 1000,
            progress: true,
            bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }
}

/// Runs the load and returns its report.
pub async fn run(opts: &Options) -> Result<Report, Error> {
    let chat = matches!(opts.target, Target::Chat { .. });
    if chat && opts.rooms != 1 {
        return Err(Error::Options("str0m chat has exactly one room".into()));
    }
    if opts.rooms == 0 {
        return Err(Error::Options("need at least one room".into()));
    }
    let media = Arc::new(MediaHandle::start(opts.bind_ip)?);
    let backend = Arc::new(Backend::connect(&opts.target, media.clone()).await?);
    let rooms: Vec<String> = (0..opts.rooms).map(|r| format!("loadgen-{r}")).collect();
    for (i, room) in rooms.iter().enumerate() {
        backend.create_room(room, opts.max_sessions).await?;
        let publish = PeerOptions {
            publish: true,
            simulcast: opts.simulcast,
            dc_signaling: false,
            room: i,
        };
        for p in 0..opts.publishers {
            backend.join(room, &format!("pub-{p}"), publish).await?;
        }
    }
    wait_connected(&media, Duration::from_secs(10)).await?;
    let mut m = Measure::new(opts.sfu_pid);
    // RSS before any subscriber: the first step's growth per Session is measured from here.
    let mut prev_rss = (0, opts.sfu_pid.and_then(report::rss_kib));
    let mut steps = Vec::new();
    let mut per_room = 0;
    let mut refused_total = 0;
    let mut target = if opts.ramp.is_some() {
        opts.subscribers.max(1)
    } else {
        opts.subscribers
    };
    loop {
        let before = media.snapshot().await?.peers.len();
        let refused =
            add_subscribers(&backend, &rooms, per_room, target, opts.join_concurrency).await?;
        refused_total += refused;
        per_room = target;
        tokio::time::sleep(opts.settle).await;
        let mut step = m
            .window(&media, opts, per_room * rooms.len() - refused_total, before)
            .await?;
        step.refused = refused;
        if let ((subs, Some(old)), Some(new)) = (prev_rss, step.sfu_rss_kib)
            && step.subscribers > subs
        {
            step.rss_kib_per_added_session =
                Some((new as f64 - old as f64) / (step.subscribers - subs) as f64);
        }
        prev_rss = (step.subscribers, step.sfu_rss_kib);
        steps.push(step);
        let overloaded = steps.iter().filter(|s| s.overloaded).count();
        match opts.ramp {
            Some(r) if overloaded < r.past.max(1) && per_room + r.step <= r.max => {
                target = per_room + r.step
            }
            _ => break,
        }
    }
    let knee = match opts.ramp {
        Some(_) => steps.iter().take_while(|s| !s.overloaded).last().cloned(),
        None => steps.last().cloned(),
    };
    let past_knee = steps.iter().find(|s| s.overloaded).cloned();
    let mut slopes: Vec<f64> = steps
        .iter()
        .take_while(|s| !s.overloaded)
        .filter_map(|s| s.rss_kib_per_added_session)
        .collect();
    Ok(Report {
        target: if chat { "chat" } else { "switchboard" }.into(),
        rooms: opts.rooms,
        publishers: opts.publishers,
        subscribers: per_room,
        simulcast: opts.simulcast,
        mode: if opts.ramp.is_some() { "ramp" } else { "fixed" }.into(),
        steps,
        knee,
        past_knee,
        rss_kib_per_session: report::median(&mut slopes),
    })
}

async fn wait_connected(media: &MediaHandle, timeout: Duration) -> Result<(), Error> {
    let end = Instant::now() + timeout;
    loop {
        let snap = media.snapshot().await?.peers;
        if snap.iter().all(|p| p.counters.connected) {
            return Ok(());
        }
        if Instant::now() > end {
            let n = snap.iter().filter(|p| !p.counters.connected).count();
            return Err(Error::Signaling(format!(
                "{n} publisher(s) not connected after {timeout:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Brings every Room from `from` to `to` subscribers, `concurrency` joins at a time. Returns how
/// many joins the SFU refused with `RESOURCE_EXHAUSTED` (overload protection: counted, not an
/// error).
async fn add_subscribers(
    backend: &Arc<Backend>,
    rooms: &[String],
    from: usize,
    to: usize,
    concurrency: usize,
) -> Result<usize, Error> {
    let mut refused = 0;
    let mut jobs = (from..to).flat_map(|i| {
        rooms
            .iter()
            .enumerate()
            .map(move |(r, name)| (r, name.clone(), format!("sub-{i}")))
    });
    let mut set = tokio::task::JoinSet::new();
    loop {
        while set.len() < concurrency.max(1) {
            let Some((r, room, who)) = jobs.next() else {
                break;
            };
            let b = backend.clone();
            let opts = PeerOptions {
                room: r,
                ..PeerOptions::default()
            };
            set.spawn(async move { b.join(&room, &who, opts).await });
        }
        match set.join_next().await {
            Some(r) => match r.map_err(|e| Error::Signaling(format!("join task: {e}")))? {
                Ok(_) => {}
                Err(Error::Grpc { status, .. })
                    if status.code() == tonic::Code::ResourceExhausted =>
                {
                    refused += 1
                }
                Err(e) => return Err(e),
            },
            None => return Ok(refused),
        }
    }
}

/// Readings at the start of a window.
struct Mark {
    at: Instant,
    peers: Vec<PeerSnapshot>,
    delays: Delays,
    sfu_ticks: Option<u64>,
    own_ticks: Option<u64>,
    udp_errors: u64,
}

struct Measure {
    sfu_pid: Option<u32>,
    ticks: f64,
}

impl Measure {
    fn new(sfu_pid: Option<u32>) -> Self {
        Self {
            sfu_pid,
            ticks: report::clock_ticks(),
        }
    }

    async fn mark(&self, media: &MediaHandle) -> Result<Mark, Error> {
        let Snapshot { peers, delays } = media.snapshot().await?;
        Ok(Mark {
            at: Instant::now(),
            peers,
            delays,
            sfu_ticks: self.sfu_pid.and_then(|p| report::cpu_ticks(&p.to_string())),
            own_ticks: report::cpu_ticks("self"),
            udp_errors: report::udp_rcvbuf_errors(),
        })
    }

    /// Figures between two marks. `new_from`: Peers with this index or above joined in this step.
    /// `idle`: no publishers, so a step is overloaded only when Sessions fail to connect.
    fn step(
        &self,
        a: &Mark,
        b: &Mark,
        subscribers: usize,
        new_from: usize,
        opts: &Options,
    ) -> Step {
        let secs = b.at.duration_since(a.at).as_secs_f64().max(1e-3);
        let (mut rx, mut audio, mut expected, mut late, mut delay, mut sent) =
            (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
        let mut receivers = 0;
        let mut joins = Vec::new();
        let (mut not_joined, mut failed, mut connected) = (0, 0, 0);
        let mut sfu_sockets = std::collections::HashSet::new();
        for p in &b.peers {
            let c = &p.counters;
            let old = old_counters(a, p);
            rx += c.received - old.received;
            audio += (c.received - c.video) - (old.received - old.video);
            expected += c.expected - old.expected;
            late += c.late - old.late;
            delay += c.delay_sum_us - old.delay_sum_us;
            sent += c.sent - old.sent;
            if c.received > 0 || !p.publisher {
                receivers += 1;
            }
            failed += usize::from(c.failed);
            sfu_sockets.extend(c.sfu_addr);
            if !p.publisher && p.id.0 >= new_from {
                connected += usize::from(c.connected);
                match c.join {
                    Some(j) => joins.push(j),
                    None => not_joined += 1,
                }
            }
        }
        let owed_all = owed(a, b, |c| c.sent);
        let owed_audio = owed(a, b, |c| c.sent_audio);
        let simulcast = opts.simulcast;
        let delivered_pct =
            (!simulcast && owed_all > 0).then(|| rx as f64 * 100.0 / owed_all as f64);
        let audio_delivered_pct =
            (owed_audio > 0).then(|| audio as f64 * 100.0 / owed_audio as f64);
        let delays = b.delays.since(&a.delays);
        let sfu = match (a.sfu_ticks, b.sfu_ticks) {
            (Some(x), Some(y)) => Some((y - x) as f64 / self.ticks),
            _ => None,
        };
        let own = match (a.own_ticks, b.own_ticks) {
            (Some(x), Some(y)) => (y - x) as f64 / self.ticks,
            _ => 0.0,
        };
        let loss_pct = if expected > 0 {
            expected.saturating_sub(rx) as f64 * 100.0 / expected as f64
        } else {
            0.0
        };
        let late_pct = if rx > 0 {
            late as f64 * 100.0 / rx as f64
        } else {
            0.0
        };
        let new_subscribers = b
            .peers
            .iter()
            .filter(|p| !p.publisher && p.id.0 >= new_from)
            .count();
        let overloaded = if opts.publishers == 0 {
            failed > 0 || connected < new_subscribers
        } else {
            loss_pct > 1.0 || late_pct > 1.0 || rx == 0 || delivered_pct.is_some_and(|d| d < 99.0)
        };
        Step {
            subscribers,
            receivers,
            window_s: secs,
            packets_per_s: rx as f64 / secs,
            published_per_s: sent as f64 / secs,
            sfu_cpu: sfu.map(|c| c / secs),
            packets_per_cpu_s: sfu.filter(|c| *c > 0.0).map(|c| rx as f64 / c),
            loss_pct,
            late_pct,
            mean_delay_ms: if rx > 0 {
                delay as f64 / rx as f64 / 1000.0
            } else {
                0.0
            },
            audio_delay_p50_ms: delays.audio.percentile_ms(0.5),
            audio_delay_p99_ms: delays.audio.percentile_ms(0.99),
            video_delay_p50_ms: delays.video.percentile_ms(0.5),
            video_delay_p99_ms: delays.video.percentile_ms(0.99),
            audio_delivered_pct,
            join_p50_ms: report::percentile_ms(&mut joins, 0.5),
            join_p95_ms: report::percentile_ms(&mut joins, 0.95),
            joined: joins.len(),
            not_joined,
            failed,
            refused: 0,
            connected,
            sfu_sockets: sfu_sockets.len(),
            sfu_rss_kib: self.sfu_pid.and_then(report::rss_kib),
            rss_kib_per_added_session: None,
            loadgen_cpu: own / secs,
            loadgen_us_per_packet: (rx > 0).then(|| own * 1e6 / rx as f64),
            udp_rcvbuf_errors: b.udp_errors.saturating_sub(a.udp_errors),
            delivered_pct,
            overloaded,
        }
    }

    /// Measures one window, printing a progress line every second.
    async fn window(
        &mut self,
        media: &MediaHandle,
        opts: &Options,
        subscribers: usize,
        new_from: usize,
    ) -> Result<Step, Error> {
        let start = self.mark(media).await?;
        let end = start.at + opts.window;
        let mut last = self.mark(media).await?;
        while Instant::now() < end {
            let next = (Instant::now() + Duration::from_secs(1)).min(end);
            tokio::time::sleep_until(next.into()).await;
            let now = self.mark(media).await?;
            if opts.progress {
                let s = self.step(&last, &now, subscribers, new_from, opts);
                eprintln!(
                    "  subs {:>4}  rx {:>8.0} pkt/s  delivered {}  sfu cpu {}  loss {:>5.2} %  late {:>5.2} %  delay {:>6.1} ms  rss {}",
                    subscribers,
                    s.packets_per_s,
                    s.delivered_pct.map_or("-".into(), |d| format!("{d:.1} %")),
                    s.sfu_cpu
                        .map_or("-".into(), |c| format!("{:.0} %", c * 100.0)),
                    s.loss_pct,
                    s.late_pct,
                    s.mean_delay_ms,
                    s.sfu_rss_kib
                        .map_or("-".into(), |k| format!("{:.0} MiB", k as f64 / 1024.0)),
                );
            }
            last = now;
        }
        Ok(self.step(&start, &last, subscribers, new_from, opts))
    }
}

/// A Peer's counters at mark `a` (zero if it joined after).
fn old_counters(a: &Mark, p: &PeerSnapshot) -> Counters {
    a.peers.get(p.id.0).map(|o| o.counters).unwrap_or_default()
}

/// What every receiver should have got between two marks: all packets (as counted by `sent`)
/// its Room's other publishers sent.
fn owed(a: &Mark, b: &Mark, sent: impl Fn(&Counters) -> u64) -> u64 {
    let rooms = b.peers.iter().map(|p| p.room + 1).max().unwrap_or(0);
    let mut published = vec![0u64; rooms];
    let delta = |p: &PeerSnapshot| sent(&p.counters) - sent(&old_counters(a, p));
    for p in b.peers.iter().filter(|p| p.publisher) {
        published[p.room] += delta(p);
    }
    b.peers
        .iter()
        .filter(|p| !p.publisher || published[p.room] > delta(p))
        .map(|p| published[p.room] - if p.publisher { delta(p) } else { 0 })
        .sum()
}
