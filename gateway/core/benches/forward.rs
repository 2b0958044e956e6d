//! What the core costs per forwarded packet: one publisher (Opus + VP8, 30 fps) sending to N
//! subscribers through one [`Sfu`], all in-process (str0m Peers, datagrams in memory, a
//! simulated clock), so that nothing but CPU work is measured.
//!
//! Each call into the `Sfu`, into the publisher and into the subscribers is timed separately, in
//! the same run. The figure that travels between machines is the ratio
//! `SFU time per forwarded packet ÷ publisher's str0m time per sent packet`: how many times what
//! str0m alone spends to packetize, encrypt and send one packet the SFU spends to receive,
//! decide, rewrite, encrypt and send one (its receive cost shared by the N copies).
//!
//! Run: `cargo bench -p switchboard-core --bench forward` (arguments: subscriber counts,
//! default `1 10 50`; `--no-bwe` turns bandwidth estimation off). See BENCHMARKS.md.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use switchboard_core::*;
use switchboard_testpeer::{PeerCore, Publish};

const SFU_ADDR: &str = "192.0.2.1:4000";
/// Simulated seconds measured per scenario (after the call is set up).
const MEASURE: Duration = Duration::from_secs(10);
/// Bytes per video frame: five RTP packets per frame, ≈ 1.4 Mbit/s at 30 fps.
const FRAME_BYTES: usize = 6000;

struct Clocks {
    sfu: Duration,
    publisher: Duration,
    subscribers: Duration,
}

struct Run {
    n: usize,
    sfu: Sfu,
    peers: Vec<PeerCore>,
    sessions: Vec<SessionId>,
    now: Instant,
    sfu_timeout: Instant,
    clocks: Clocks,
    /// Datagrams the SFU sent to subscribers.
    forwarded: u64,
    /// Datagrams the publisher sent.
    published: u64,
}

fn timed<R>(acc: &mut Duration, f: impl FnOnce() -> R) -> R {
    let t = Instant::now();
    let r = f();
    *acc += t.elapsed();
    r
}

impl Run {
    fn new(n: usize, bwe: bool) -> Self {
        let now = Instant::now();
        let mut config = SfuConfig {
            candidate_addrs: vec![SFU_ADDR.parse().unwrap()],
            ..SfuConfig::default()
        };
        config.bwe.enabled = bwe;
        let mut sfu = Sfu::new(now, config, [7; 32]).unwrap();
        let room = RoomSpec {
            id: Some(RoomId::parse("bench").unwrap()),
            max_sessions: Some(u32::try_from(n + 1).unwrap()),
            empty_timeout: None,
            metadata: String::new(),
            created_at: SystemTime::now(),
            backend_data_labels: Vec::new(),
        };
        let room = sfu.create_room(now, room).unwrap().0.id;
        let mut peers = Vec::new();
        let mut sessions = Vec::new();
        for i in 0..=n {
            let spec = SessionSpec {
                room: room.clone(),
                participant: ParticipantId::parse(&format!("p{i}")).unwrap(),
                metadata: String::new(),
                permissions: Permissions::default(),
                created_at: SystemTime::now(),
                auto_subscribe: true,
            };
            let session = sfu.create_session(now, spec).unwrap().id;
            let addr: SocketAddr = SocketAddr::new(
                std::net::Ipv4Addr::from(0x0a00_0000 + i as u32 + 1).into(),
                5000,
            );
            let mut core = PeerCore::new(now, addr);
            core.video_frame_bytes = FRAME_BYTES;
            let publish = Publish {
                audio: i == 0,
                video: i == 0,
                data_label: None,
                simulcast: false,
            };
            let offer = core.create_offer_with(publish, &[]);
            let answer = sfu.apply_offer(now, &session, &offer).unwrap();
            core.accept_answer(&answer).unwrap();
            peers.push(core);
            sessions.push(session);
        }
        Self {
            n,
            sfu,
            peers,
            sessions,
            now,
            sfu_timeout: now,
            clocks: Clocks {
                sfu: Duration::ZERO,
                publisher: Duration::ZERO,
                subscribers: Duration::ZERO,
            },
            forwarded: 0,
            published: 0,
        }
    }

    fn peer_clock(&mut self, i: usize) -> &mut Duration {
        if i == 0 {
            &mut self.clocks.publisher
        } else {
            &mut self.clocks.subscribers
        }
    }

    /// Drains the SFU: datagrams to Peers, gateway offers answered at once.
    fn pump(&mut self) {
        loop {
            let out = timed(&mut self.clocks.sfu, || self.sfu.poll_output());
            match out {
                Output::Transmit(t) => {
                    let Some(i) = self.peers.iter().position(|p| p.addr == t.destination) else {
                        continue;
                    };
                    if i != 0 {
                        self.forwarded += 1;
                    }
                    let now = self.now;
                    let mut clock = *self.peer_clock(i);
                    timed(&mut clock, || {
                        self.peers[i].handle_datagram(now, t.source, &t.contents)
                    });
                    *self.peer_clock(i) = clock;
                }
                Output::Event(e) => {
                    if let EventKind::NegotiationNeeded { offer_id, sdp } = &e.kind {
                        let sid = e.session.clone().unwrap();
                        if let Some(i) = self.sessions.iter().position(|s| *s == sid) {
                            let answer = self.peers[i].accept_offer(sdp).unwrap();
                            self.sfu
                                .apply_answer(self.now, &sid, &answer, Some(*offer_id))
                                .unwrap();
                        }
                    }
                }
                Output::Timeout(t) => {
                    self.sfu_timeout = t;
                    return;
                }
            }
        }
    }

    fn step(&mut self) {
        let now = self.now;
        for i in 0..self.peers.len() {
            let batch: Vec<_> = self.peers[i].outbox.drain(..).collect();
            if i == 0 {
                self.published += batch.len() as u64;
            }
            for (src, dst, bytes) in batch {
                let d = Datagram {
                    transport: Transport::Udp,
                    source: src,
                    destination: dst,
                    contents: &bytes,
                };
                timed(&mut self.clocks.sfu, || self.sfu.handle_datagram(now, d));
            }
        }
        self.pump();
        let mut next = self.sfu_timeout;
        for p in &self.peers {
            next = next.min(p.next_timeout());
        }
        self.now = next.clamp(
            now + Duration::from_millis(1),
            now + Duration::from_millis(10),
        );
        let now = self.now;
        timed(&mut self.clocks.sfu, || self.sfu.handle_timeout(now));
        for i in 0..self.peers.len() {
            let mut clock = *self.peer_clock(i);
            timed(&mut clock, || {
                let p = &mut self.peers[i];
                if p.next_timeout() <= now {
                    p.handle_timeout(now);
                }
                p.tick(now);
            });
            *self.peer_clock(i) = clock;
        }
        self.pump();
    }
}

fn main() {
    // `--no-bwe`: without the per-subscriber bandwidth estimation (TWCC, probing, allocation),
    // to see what it costs.
    let bwe = !std::env::args().any(|a| a == "--no-bwe");
    let counts: Vec<usize> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .filter_map(|a| a.parse().ok())
        .collect();
    let counts = if counts.is_empty() {
        vec![1, 10, 50]
    } else {
        counts
    };
    println!(
        "{:>4} | {:>9} | {:>11} | {:>12} | {:>13} | {:>14} | {:>7}",
        "N", "forwarded", "SFU µs/fwd", "pub µs/sent", "sub µs/recvd", "fwd/SFU-CPU-s", "ratio"
    );
    for n in counts {
        let mut run = Run::new(n, bwe);
        // Set up: everyone connected and receiving video.
        let setup_end = run.now + Duration::from_secs(10);
        while run.now < setup_end
            && !(run.peers.iter().all(|p| p.stats.connected)
                && run.peers[1..]
                    .iter()
                    .all(|p| p.stats.tracks.values().map(|t| t.frames).max().unwrap_or(0) >= 10))
        {
            run.step();
        }
        assert!(
            run.peers[1..]
                .iter()
                .all(|p| p.stats.tracks.values().any(|t| t.frames >= 10)),
            "N={n}: not every subscriber receives video after 10 s of set-up"
        );
        run.clocks = Clocks {
            sfu: Duration::ZERO,
            publisher: Duration::ZERO,
            subscribers: Duration::ZERO,
        };
        run.forwarded = 0;
        run.published = 0;
        let end = run.now + MEASURE;
        while run.now < end {
            run.step();
        }
        let fwd = run.forwarded.max(1) as f64;
        let sfu_us = run.clocks.sfu.as_secs_f64() * 1e6 / fwd;
        let pub_us = run.clocks.publisher.as_secs_f64() * 1e6 / run.published.max(1) as f64;
        let sub_us = run.clocks.subscribers.as_secs_f64() * 1e6 / fwd;
        println!(
            "{:>4} | {:>9} | {:>11.2} | {:>12.2} | {:>13.2} | {:>14.0} | {:>6.2}x",
            run.n,
            run.forwarded,
            sfu_us,
            pub_us,
            sub_us,
            fwd / run.clocks.sfu.as_secs_f64(),
            sfu_us / pub_us
        );
        black_box(&run.sfu);
    }
}
