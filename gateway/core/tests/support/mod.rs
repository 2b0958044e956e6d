//! In-process test harness: one [`Sfu`] and several str0m Peers ([`PeerCore`]) wired through an
//! in-memory network with a simulated clock. No sockets, no threads, fully deterministic.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use switchboard_core::*;
// Not every test file that includes this module calls it.
#[allow(unused_imports)]
pub use switchboard_testpeer::av;
use switchboard_testpeer::{Codecs, PeerCore, Publish};

pub const SFU_ADDR: &str = "192.0.2.1:4000";
/// The core's passive TCP candidate in [`tcp_config`].
pub const SFU_TCP_ADDR: &str = "192.0.2.1:4443";

pub struct TestPeer {
    pub core: PeerCore,
    /// How the Peer's datagrams reach the core.
    pub transport: Transport,
    /// The Peer's address as the core sees it: its host candidate over UDP, the (simulated)
    /// connection's source address over TCP.
    pub wire: SocketAddr,
    pub session: SessionId,
    pub participant: String,
    /// Answer the gateway's offers automatically.
    pub auto_answer: bool,
    /// Drop everything this Peer sends and receives (a network outage).
    pub cut: bool,
    /// Gateway offers received while `auto_answer` was off: (offer_id, sdp).
    pub offers: Vec<(u64, String)>,
    /// Drop every Nth datagram in each direction (a lossy link).
    pub loss_every: Option<u32>,
    /// Deliver datagrams to the gateway in swapped pairs (a reordering link).
    pub reorder: bool,
    /// Drop everything this Peer sends (its NACKs and reports never arrive).
    pub uplink_cut: bool,
    /// Drop the STUN Binding Requests this Peer sends (no consent checks reach the gateway; its
    /// media, RTCP and DTLS still do), as with a libnice Peer that keeps its pair alive with
    /// Binding Indications only.
    pub no_consent: bool,
    /// A bottleneck on the gateway → Peer direction (rate, queue, delay).
    pub downlink: Option<Downlink>,
    sent: u32,
    recvd: u32,
}

pub struct Net {
    pub sfu: Sfu,
    pub peers: Vec<TestPeer>,
    pub now: Instant,
    pub start: Instant,
    pub events: Vec<SfuEvent>,
    /// Every input given to the core (commands, datagrams, TCP closes, timeouts), when recording.
    pub recording: Option<Vec<Recorded>>,
    sfu_timeout: Instant,
    next_ip: u8,
}

/// One input to the core, as [`Net`] gave it (times relative to [`Net::start`]).
#[derive(Debug, Clone)]
pub enum Recorded {
    /// [`Sfu::handle_command`].
    Command {
        at: Duration,
        wall: SystemTime,
        cmd: Command,
    },
    /// [`Sfu::handle_datagram`].
    Datagram {
        at: Duration,
        transport: Transport,
        source: SocketAddr,
        destination: SocketAddr,
        contents: Vec<u8>,
    },
    /// [`Sfu::handle_tcp_closed`].
    TcpClosed { at: Duration, remote: SocketAddr },
    /// [`Sfu::handle_timeout`].
    Timeout { at: Duration },
}

/// The wall-clock time the harness gives the core at `since` after the start: simulated, so a
/// run never depends on the real clock.
pub fn wall_clock(since: Duration) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000) + since
}

pub fn config() -> SfuConfig {
    SfuConfig {
        candidate_addrs: vec![SFU_ADDR.parse().unwrap()],
        ..SfuConfig::default()
    }
}

/// [`config`] plus a passive TCP candidate (ICE-TCP).
pub fn tcp_config() -> SfuConfig {
    SfuConfig {
        tcp_candidate_addrs: vec![SFU_TCP_ADDR.parse().unwrap()],
        ..config()
    }
}

impl Net {
    pub fn new() -> Self {
        Self::with_config(config())
    }

    pub fn with_config(config: SfuConfig) -> Self {
        let now = Instant::now();
        Self {
            sfu: Sfu::new(now, config, [7; 32]).unwrap(),
            peers: Vec::new(),
            now,
            start: now,
            events: Vec::new(),
            recording: None,
            sfu_timeout: now,
            next_ip: 10,
        }
    }

    pub fn room(&mut self, id: &str) -> RoomId {
        self.room_with_backend_labels(id, &[])
    }

    /// Applies a command the way a Worker does ([`Sfu::handle_command`]), recording it.
    pub fn command(&mut self, cmd: Command) -> Result<Reply, CoreError> {
        let at = self.now - self.start;
        let wall = wall_clock(at);
        if let Some(r) = &mut self.recording {
            r.push(Recorded::Command {
                at,
                wall,
                cmd: cmd.clone(),
            });
        }
        self.sfu.handle_command(self.now, wall, cmd)
    }

    fn create_room(&mut self, spec: RoomSpec) -> RoomId {
        match self.command(Command::CreateRoom(spec)).unwrap() {
            Reply::RoomCreated { room, .. } => room.id,
            other => panic!("CreateRoom replied {other:?}"),
        }
    }

    /// Creates a Session (its Peer joins with [`Net::join_session`]).
    pub fn create_session(&mut self, spec: SessionSpec) -> SessionId {
        match self.command(Command::CreateSession(spec)).unwrap() {
            Reply::Session(s) => s.id,
            other => panic!("CreateSession replied {other:?}"),
        }
    }

    pub fn session(&mut self, room: &RoomId, participant: &str) -> SessionId {
        let spec = SessionSpec {
            room: room.clone(),
            participant: ParticipantId::parse(participant).unwrap(),
            metadata: String::new(),
            permissions: Permissions::default(),
            created_at: SystemTime::now(),
            auto_subscribe: true,
        };
        self.create_session(spec)
    }

    /// Creates a Room whose messages on `labels` also go to the backend.
    pub fn room_with_backend_labels(&mut self, id: &str, labels: &[&str]) -> RoomId {
        let spec = RoomSpec {
            id: Some(RoomId::parse(id).unwrap()),
            max_sessions: None,
            empty_timeout: None,
            metadata: String::new(),
            created_at: SystemTime::now(),
            backend_data_labels: labels.iter().map(|l| l.to_string()).collect(),
        };
        self.create_room(spec)
    }

    /// Creates a Session and a Peer, and negotiates the Peer's initial offer.
    pub fn join(&mut self, room: &RoomId, participant: &str, publish: Publish) -> usize {
        let session = self.session(room, participant);
        self.join_session(session, participant, publish)
    }

    pub fn join_session(
        &mut self,
        session: SessionId,
        participant: &str,
        publish: Publish,
    ) -> usize {
        self.join_session_with(session, participant, publish, &[])
    }

    /// Joins with extra data channels opened in the initial offer.
    pub fn join_with(
        &mut self,
        room: &RoomId,
        participant: &str,
        publish: Publish,
        channels: &[switchboard_testpeer::ChannelConfig],
    ) -> usize {
        let session = self.session(room, participant);
        self.join_session_with(session, participant, publish, channels)
    }

    pub fn join_session_with(
        &mut self,
        session: SessionId,
        participant: &str,
        publish: Publish,
        channels: &[switchboard_testpeer::ChannelConfig],
    ) -> usize {
        self.join_full(session, participant, publish, channels, Codecs::default())
    }

    /// Joins with a Peer that supports only the given codecs (and publishes with them).
    pub fn join_with_codecs(
        &mut self,
        room: &RoomId,
        participant: &str,
        publish: Publish,
        codecs: Codecs,
    ) -> usize {
        let session = self.session(room, participant);
        self.join_full(session, participant, publish, &[], codecs)
    }

    fn join_full(
        &mut self,
        session: SessionId,
        participant: &str,
        publish: Publish,
        channels: &[switchboard_testpeer::ChannelConfig],
        codecs: Codecs,
    ) -> usize {
        let make = move |now, addr| PeerCore::with_codecs(now, addr, codecs);
        self.join_udp(make, session, participant, publish, channels)
    }

    /// Creates a Session and a Peer whose ICE agent tolerates unanswered checks (see
    /// [`PeerCore::with_unanswered_checks_tolerated`]), for liveness tests with `no_consent`.
    pub fn join_tolerant(&mut self, room: &RoomId, participant: &str, publish: Publish) -> usize {
        let session = self.session(room, participant);
        let make = PeerCore::with_unanswered_checks_tolerated;
        self.join_udp(make, session, participant, publish, &[])
    }

    /// A UDP Peer made by `make` at the next free address, negotiated into `session`.
    fn join_udp(
        &mut self,
        make: impl FnOnce(Instant, SocketAddr) -> PeerCore,
        session: SessionId,
        participant: &str,
        publish: Publish,
        channels: &[switchboard_testpeer::ChannelConfig],
    ) -> usize {
        let addr: SocketAddr = format!("192.0.2.{}:5000", self.next_ip).parse().unwrap();
        self.next_ip += 1;
        let core = make(self.now, addr);
        self.negotiate(
            core,
            Transport::Udp,
            addr,
            session,
            participant,
            publish,
            channels,
        )
    }

    /// Creates a Session and a TCP-only Peer (an active TCP candidate only) whose traffic reaches
    /// the core as frames of one simulated TCP connection from `ip:5000`.
    pub fn join_tcp(&mut self, room: &RoomId, participant: &str, publish: Publish) -> usize {
        let session = self.session(room, participant);
        let ip: std::net::IpAddr = format!("192.0.2.{}", self.next_ip).parse().unwrap();
        self.next_ip += 1;
        let core = PeerCore::new_tcp_active(self.now, ip);
        let wire = SocketAddr::new(ip, 5000);
        self.negotiate(
            core,
            Transport::Tcp,
            wire,
            session,
            participant,
            publish,
            &[],
        )
    }

    /// Peer `i`'s TCP connection closes: the core is told, and the Peer's later frames travel on
    /// a new connection from the next source port (as a real driver reconnects).
    pub fn tcp_reconnect(&mut self, i: usize) {
        let old = self.peers[i].wire;
        if let Some(r) = &mut self.recording {
            r.push(Recorded::TcpClosed {
                at: self.now - self.start,
                remote: old,
            });
        }
        self.sfu.handle_tcp_closed(self.now, old);
        self.peers[i].wire.set_port(old.port() + 1);
        self.pump();
    }

    #[allow(clippy::too_many_arguments)]
    fn negotiate(
        &mut self,
        mut core: PeerCore,
        transport: Transport,
        wire: SocketAddr,
        session: SessionId,
        participant: &str,
        publish: Publish,
        channels: &[switchboard_testpeer::ChannelConfig],
    ) -> usize {
        let offer = core.create_offer_with(publish, channels);
        let cmd = Command::ApplyOffer {
            session: session.clone(),
            sdp: offer,
        };
        let answer = match self.command(cmd).unwrap() {
            Reply::Answer(a) => a,
            other => panic!("ApplyOffer replied {other:?}"),
        };
        core.accept_answer(&answer).unwrap();
        self.peers.push(TestPeer {
            core,
            transport,
            wire,
            session,
            participant: participant.to_string(),
            auto_answer: true,
            cut: false,
            offers: Vec::new(),
            loss_every: None,
            reorder: false,
            uplink_cut: false,
            no_consent: false,
            downlink: None,
            sent: 0,
            recvd: 0,
        });
        self.peers.len() - 1
    }

    /// Moves every queued datagram and event once, then advances the clock to the next deadline
    /// (at least 1 ms, at most 10 ms).
    pub fn step(&mut self) {
        let now = self.now;
        for p in &mut self.peers {
            if let Some(link) = &mut p.downlink {
                while let Some((src, bytes)) = link.pop_due(now) {
                    p.core.handle_datagram(now, src, &bytes);
                }
            }
        }
        for p in &mut self.peers {
            let mut batch: Vec<_> = p.core.outbox.drain(..).collect();
            if p.reorder {
                for pair in batch.chunks_mut(2) {
                    pair.reverse();
                }
            }
            for (src, dst, bytes) in batch {
                p.sent += 1;
                if p.cut || p.uplink_cut || p.loss_every.is_some_and(|n| p.sent % n == 0) {
                    continue;
                }
                if p.no_consent && is_binding_request(&bytes) {
                    continue;
                }
                let source = match p.transport {
                    // A UDP Peer reaches the network only from its current address (`wire`):
                    // after a move, whatever it still sends from the old one is lost.
                    Transport::Udp if src != p.wire => continue,
                    Transport::Udp => src,
                    Transport::Tcp => p.wire,
                };
                let d = Datagram {
                    transport: p.transport,
                    source,
                    destination: dst,
                    contents: &bytes,
                };
                if let Some(r) = &mut self.recording {
                    r.push(Recorded::Datagram {
                        at: now - self.start,
                        transport: d.transport,
                        source,
                        destination: dst,
                        contents: bytes.clone(),
                    });
                }
                self.sfu.handle_datagram(now, d);
            }
        }
        self.pump();
        let mut next = self.sfu_timeout;
        for p in &self.peers {
            next = next.min(p.core.next_timeout());
            if let Some(at) = p.downlink.as_ref().and_then(|l| l.next_due()) {
                next = next.min(at);
            }
        }
        self.now = next.clamp(
            now + Duration::from_millis(1),
            now + Duration::from_millis(10),
        );
        let now = self.now;
        if let Some(r) = &mut self.recording {
            r.push(Recorded::Timeout {
                at: now - self.start,
            });
        }
        self.sfu.handle_timeout(now);
        for p in &mut self.peers {
            if p.core.next_timeout() <= now {
                p.core.handle_timeout(now);
            }
            p.core.tick(now);
        }
        self.pump();
    }

    /// Drains the core's output: datagrams go to Peers, offers to auto-answering Peers.
    pub fn pump(&mut self) {
        loop {
            match self.sfu.poll_output() {
                Output::Transmit(t) => {
                    if let Some(p) = self
                        .peers
                        .iter_mut()
                        .find(|p| p.wire == t.destination && p.transport == t.transport)
                    {
                        p.recvd += 1;
                        let lost = p.loss_every.is_some_and(|n| p.recvd % n == 0);
                        if p.cut || lost {
                            continue;
                        }
                        match &mut p.downlink {
                            Some(link) => link.push(self.now, t.source, t.contents),
                            None => p.core.handle_datagram(self.now, t.source, &t.contents),
                        }
                    }
                }
                Output::Event(e) => {
                    if let EventKind::NegotiationNeeded { offer_id, sdp } = &e.kind {
                        let sid = e.session.clone().unwrap();
                        let mut answer = None;
                        if let Some(p) = self.peers.iter_mut().find(|p| p.session == sid) {
                            if p.auto_answer {
                                answer = Some(p.core.accept_offer(sdp).unwrap());
                            } else {
                                p.offers.push((*offer_id, sdp.clone()));
                            }
                        }
                        if let Some(sdp) = answer {
                            let cmd = Command::ApplyAnswer {
                                session: sid,
                                sdp,
                                offer_id: Some(*offer_id),
                            };
                            self.command(cmd).unwrap();
                        }
                    }
                    self.events.push(e);
                }
                Output::Timeout(t) => {
                    self.sfu_timeout = t;
                    return;
                }
            }
        }
    }

    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.step();
        }
    }

    /// Steps until `cond` holds or `max` simulated time passes; panics with `what` on timeout.
    pub fn run_until(&mut self, max: Duration, what: &str, cond: impl Fn(&Self) -> bool) {
        let end = self.now + max;
        while self.now < end {
            if cond(self) {
                return;
            }
            self.step();
        }
        assert!(
            cond(self),
            "timed out after {max:?} of simulated time: {what}"
        );
    }

    pub fn peer(&self, i: usize) -> &PeerCore {
        &self.peers[i].core
    }

    /// Tracks (id) published by Peer `i`'s Session.
    pub fn published(&self, i: usize) -> Vec<String> {
        self.sfu
            .get_session(&self.peers[i].session)
            .map(|s| s.published.iter().map(|t| t.to_string()).collect())
            .unwrap_or_default()
    }

    /// Frames Peer `to` received of every Track Peer `from` publishes (0 if any is missing).
    pub fn min_frames(&self, to: usize, from: usize) -> u64 {
        let tracks = self.published(from);
        if tracks.is_empty() {
            return 0;
        }
        tracks
            .iter()
            .map(|t| self.peer(to).stats.tracks.get(t).map_or(0, |s| s.frames))
            .min()
            .unwrap_or(0)
    }

    /// Every Peer in `peers` has at least `frames` frames of every Track of every other one.
    pub fn full_mesh(&self, peers: &[usize], frames: u64) -> bool {
        peers.iter().all(|&to| {
            peers
                .iter()
                .filter(|&&from| from != to)
                .all(|&from| self.min_frames(to, from) >= frames)
        })
    }

    pub fn events_of(&self, session: &SessionId) -> Vec<&EventKind> {
        self.events
            .iter()
            .filter(|e| e.session.as_ref() == Some(session))
            .map(|e| &e.kind)
            .collect()
    }
}

/// A bottleneck link: a token bucket refilled at `rate_bps` (at most `burst_bytes` saved up)
/// serializes packets in arrival order; packets wait in a queue of at most `queue_bytes`
/// (drop-tail: a packet that would overflow it is dropped) and arrive `delay` after they leave.
/// Deterministic: departure times are computed from the simulated clock only.
pub struct Downlink {
    pub rate_bps: u64,
    pub queue_bytes: usize,
    pub burst_bytes: usize,
    pub delay: Duration,
    /// When the bucket has serialized everything accepted so far.
    busy_until: Option<Instant>,
    /// Accepted packets: (arrival at the Peer, source, bytes).
    in_flight: VecDeque<(Instant, SocketAddr, Vec<u8>)>,
    /// Packets dropped at the tail of the full queue.
    pub dropped: u64,
    /// Packets and bytes delivered.
    pub delivered: u64,
    pub delivered_bytes: u64,
}

impl Downlink {
    pub fn new(rate_bps: u64, queue_bytes: usize, delay: Duration) -> Self {
        Self {
            rate_bps,
            queue_bytes,
            burst_bytes: 1500,
            delay,
            busy_until: None,
            in_flight: VecDeque::new(),
            dropped: 0,
            delivered: 0,
            delivered_bytes: 0,
        }
    }

    fn serialize(&self, bytes: usize) -> Duration {
        Duration::from_nanos(bytes as u64 * 8 * 1_000_000_000 / self.rate_bps.max(1))
    }

    /// A packet reaches the bottleneck at `now`.
    pub fn push(&mut self, now: Instant, src: SocketAddr, bytes: Vec<u8>) {
        // Saved-up tokens let a burst of `burst_bytes` through without waiting.
        let earliest = now
            .checked_sub(self.serialize(self.burst_bytes))
            .unwrap_or(now);
        let start = self.busy_until.map_or(earliest, |b| b.max(earliest));
        // Bytes still waiting to be serialized at `now`: the queue.
        let backlog = start.saturating_duration_since(now).as_nanos() as u64 * self.rate_bps
            / 8
            / 1_000_000_000;
        if backlog as usize + bytes.len() > self.queue_bytes {
            self.dropped += 1;
            return;
        }
        let done = start + self.serialize(bytes.len());
        self.busy_until = Some(done);
        self.in_flight
            .push_back((done.max(now) + self.delay, src, bytes));
    }

    /// The next packet that has arrived by `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(SocketAddr, Vec<u8>)> {
        if self.in_flight.front().is_some_and(|(at, _, _)| *at <= now) {
            let (_, src, bytes) = self.in_flight.pop_front()?;
            self.delivered += 1;
            self.delivered_bytes += bytes.len() as u64;
            return Some((src, bytes));
        }
        None
    }

    /// When the next packet arrives.
    pub fn next_due(&self) -> Option<Instant> {
        self.in_flight.front().map(|(at, _, _)| *at)
    }
}

/// A STUN Binding Request (RFC 8489: type 0x0001 and the magic cookie).
pub fn is_binding_request(b: &[u8]) -> bool {
    b.len() >= 20 && b[0..2] == [0x00, 0x01] && b[4..8] == [0x21, 0x12, 0xa4, 0x42]
}
