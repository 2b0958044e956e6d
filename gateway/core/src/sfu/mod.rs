//! [`Sfu`]: the sans-IO state machine of one Worker. It owns every Room, Session and Track of that
//! Worker and makes every forwarding decision.
//!
//! Inputs are `handle_*(now, …)` calls and the control methods (`create_room`, `apply_offer`, …);
//! outputs come from [`Sfu::poll_output`]. It never reads a clock, opens a socket or spawns a task:
//! all time arrives as `now`, all bytes arrive as [`Datagram`]s and leave as [`Transmit`]s.
//!
//! This file holds the `Sfu` itself (its state, construction, getters) and its IO surface
//! (`handle_datagram`, `handle_tcp_closed`, `handle_timeout`, `poll_output`). Every decision lives
//! in a file of its own, and none of them reads a clock or does IO:
//! - `session.rs`: a Session, driving its `Rtc`, its timers, its teardown; `guard.rs`: the one
//!   door to an `Rtc` (`catch_unwind`);
//! - `room.rs`: a Room, its teardown and its active speaker;
//! - `track.rs`: TrackIn and TrackOut, publishing, layer statistics, ranking and choice;
//! - `negotiation.rs`: offers, answers, glare, trickled candidates and SDP filtering;
//! - `media.rs`: forwarding RTP to subscribers, key-frame requests, bandwidth allocation glue;
//! - `control.rs`: the backend operations on Rooms, Sessions and Tracks;
//! - `data.rs`: the data-channel relay; `forward.rs` and `alloc.rs`: pure forwarding and
//!   allocation logic without an `Rtc`.
//!
//! str0m's single-mutation rule is kept here, one level up: a Session that received a datagram or
//! a timeout is drained (to `Output::Timeout`) at once, before the next input; a Session written to
//! from elsewhere (forwarded media, relayed data, a control call) is marked dirty, and a dirty
//! Session is drained before its next input (`settle`) and before any output leaves the core.
//!
//! Every touch of a Session's `Rtc`, reads included, goes through its `RtcGuard` (`guard.rs`),
//! which runs it under `catch_unwind`; the `Rtc` is a private field of the guard, so there is no
//! other way to reach it. A panic closes only that Session, with
//! `SessionCloseReason::InternalError`, and its `Rtc` is never touched again.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use str0m::config::DtlsCert;
use str0m::net::{Protocol, Receive, TcpType};
use str0m::{Candidate, CandidateKind, Event, Input};

use crate::command::{Command, CommandCounts};
use crate::demux::{Demux, admit_addr, is_stun, touch_addr};
use crate::error::CoreError;
use crate::ids::{ParticipantId, RoomId, SessionId, TrackId};
use crate::keys::{KeyGen, RoomKey, SessionKey, TrackKey};
use crate::model::*;

pub(crate) mod alloc;
#[cfg(feature = "testing")]
mod check;
mod control;
mod data;
pub(crate) mod forward;
mod guard;
mod limits;
mod media;
mod negotiation;
mod room;
mod session;
mod stats;
mod track;

pub use alloc::BweConfig;
pub use data::DIRECT_LABEL;
pub use limits::SignalingLimits;

use guard::RtcPanicked;
use room::Room;
use session::Session;
use track::TrackIn;

/// Longest metadata string accepted, in bytes.
pub const MAX_METADATA_BYTES: usize = 4096;
/// Most data-channel labels a Room forwards to the backend (`backend_data_labels`).
pub const MAX_BACKEND_LABELS: usize = 32;
/// Longest data-channel label a Room forwards to the backend, in bytes.
pub const MAX_LABEL_BYTES: usize = 128;
/// How long an idle core may sleep when nothing is scheduled.
const IDLE_TIMEOUT: Duration = Duration::from_secs(1);

/// Settings of one [`Sfu`], fixed for its lifetime.
#[derive(Debug, Clone)]
pub struct SfuConfig {
    /// Index of the Worker that owns this core (embedded in Session ids).
    pub worker: u8,
    /// The addresses announced as UDP host candidates. UDP datagrams must arrive with one of
    /// these as their destination.
    pub candidate_addrs: Vec<SocketAddr>,
    /// The addresses announced as passive TCP host candidates (RFC 6544; empty: no ICE-TCP). TCP
    /// frames must arrive with one of these as their destination.
    pub tcp_candidate_addrs: Vec<SocketAddr>,
    /// Room size when the backend does not choose one.
    pub default_max_sessions: u32,
    /// Upper bound for a Room's `max_sessions`.
    pub max_sessions_limit: u32,
    /// Empty timeout when the backend does not choose one.
    pub default_empty_timeout: Duration,
    /// Most Rooms on this Worker.
    pub max_rooms: usize,
    /// A Session that does not connect within this time after creation is closed.
    pub connect_timeout: Duration,
    /// A disconnected Session that does not recover within this time is closed.
    pub disconnect_grace: Duration,
    /// Minimum time between two keyframe requests the core relays to one publisher track.
    pub keyframe_min_interval: Duration,
    /// Packets kept per outgoing video stream to answer NACKs.
    pub rtx_cache_packets: usize,
    /// How long a packet stays in that cache.
    pub rtx_cache_max_age: Duration,
    /// Most of a stream's bitrate spent on retransmissions (str0m's RTX ratio); `None`: no cap.
    pub rtx_ratio: Option<f32>,
    /// Largest data-channel message relayed; larger ones are dropped and counted.
    pub data_max_message_bytes: usize,
    /// Most bytes queued toward one receiving channel. Past it, unreliable messages are dropped
    /// and a reliable channel is closed as a slow receiver.
    pub data_send_buffer_bytes: usize,
    /// Largest message copied into a `DataReceived` event for the backend.
    pub data_backend_max_bytes: usize,
    /// How often a Room re-decides its active speaker.
    pub speaker_interval: Duration,
    /// Weight of the newest audio level in the smoothed loudness (0 < w <= 1).
    pub speaker_smoothing: f32,
    /// Smoothed loudness (0–127, 127 minus -dBov) a speaker must exceed.
    pub speaker_min_loudness: u8,
    /// Bandwidth estimation toward subscribers and the layer choice it drives.
    pub bwe: BweConfig,
    /// How often str0m reports each Session's statistics (RTT, loss, NACKs, PLIs); `None`: never.
    pub stats_interval: Option<Duration>,
    /// Bounds on SDP and trickled candidates (`limits.rs`).
    pub signaling: SignalingLimits,
}

impl Default for SfuConfig {
    fn default() -> Self {
        Self {
            worker: 0,
            candidate_addrs: vec![SocketAddr::from(([127, 0, 0, 1], 40000))],
            tcp_candidate_addrs: Vec::new(),
            default_max_sessions: 100,
            max_sessions_limit: 1000,
            default_empty_timeout: Duration::from_secs(300),
            max_rooms: 10_000,
            connect_timeout: Duration::from_secs(30),
            disconnect_grace: Duration::from_secs(10),
            keyframe_min_interval: Duration::from_millis(500),
            rtx_cache_packets: 512,
            rtx_cache_max_age: Duration::from_secs(3),
            rtx_ratio: Some(0.15),
            data_max_message_bytes: 64 * 1024,
            data_send_buffer_bytes: 1024 * 1024,
            data_backend_max_bytes: 16 * 1024,
            speaker_interval: Duration::from_millis(500),
            speaker_smoothing: 0.3,
            speaker_min_loudness: 127 - 70,
            // Off by default: str0m's stats events make two runs of the simulated network differ
            // slightly (see the replay and determinism tests); the gateway turns them on.
            stats_interval: None,
            bwe: BweConfig::default(),
            signaling: SignalingLimits::default(),
        }
    }
}

/// One datagram received on the Worker's UDP socket, or one frame received on a TCP connection.
#[derive(Debug, Clone, Copy)]
pub struct Datagram<'a> {
    /// UDP, or TCP (then `source` is the remote address of the connection it came on).
    pub transport: Transport,
    /// The Peer's address.
    pub source: SocketAddr,
    /// The local address it arrived on (must be an announced candidate address of `transport`).
    pub destination: SocketAddr,
    /// The bytes.
    pub contents: &'a [u8],
}

/// What the core wants done next.
#[derive(Debug)]
#[must_use]
pub enum Output {
    /// Send this datagram.
    Transmit(Transmit),
    /// Tell backends this.
    Event(SfuEvent),
    /// Nothing more now; call [`Sfu::handle_timeout`] at this instant (or earlier).
    Timeout(Instant),
}

/// A trickled remote candidate, or the end of them.
#[derive(Debug, Clone, Copy)]
pub enum RemoteCandidate<'a> {
    /// A `candidate:` line.
    Candidate(&'a str),
    /// The Peer has no more candidates.
    EndOfCandidates,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKey {
    Session(SessionKey),
    Room(RoomKey),
}

/// The SFU core of one Worker. See the module docs for the contract.
pub struct Sfu {
    config: SfuConfig,
    rng: ChaCha20Rng,
    now: Instant,
    rooms: BTreeMap<RoomId, Room>,
    room_keys: HashMap<RoomKey, RoomId>,
    sessions: HashMap<SessionKey, Session>,
    session_keys: HashMap<SessionId, SessionKey>,
    tracks: HashMap<TrackKey, TrackIn>,
    track_keys: HashMap<TrackId, TrackKey>,
    keys: KeyGen,
    next_offer_id: u64,
    demux: Demux,
    timers: BTreeSet<(Instant, TimerKey)>,
    dirty: Vec<SessionKey>,
    /// Scratch list of a TrackIn's subscribers, reused for every forwarded packet.
    scratch_subs: Vec<SessionKey>,
    /// Reused by `drive` for a Session's str0m events (one per received RTP packet), so driving
    /// does not allocate; taken while in use (a nested drive gets a fresh one).
    scratch_events: Vec<Event>,
    /// Sessions whose gateway offer waits for the end of the current input (`offer_later`).
    offers_due: Vec<SessionKey>,
    /// How deeply `drive` is nested; queued offers go out when the outermost one ends.
    drive_depth: u32,
    transmits: VecDeque<Transmit>,
    events: VecDeque<SfuEvent>,
    counters: Counters,
    /// Commands handled, per kind.
    commands: CommandCounts,
    /// A DTLS certificate every new Session uses; `None` (always, outside tests): str0m draws a
    /// fresh one per Session.
    dtls_cert: Option<DtlsCert>,
    draining: bool,
    /// An armed Sfu-level test fault ([`Command::InjectSfuFault`]).
    #[cfg(feature = "testing")]
    armed_fault: Option<crate::command::SfuFault>,
}

// === impl Sfu: construction and getters ===

impl Sfu {
    /// Creates a core. `seed` feeds the generator of ids and ICE credentials (use OS randomness in
    /// production, a constant in tests).
    pub fn new(now: Instant, config: SfuConfig, seed: [u8; 32]) -> Result<Self, CoreError> {
        if config.candidate_addrs.is_empty() {
            return Err(CoreError::InvalidArgument {
                field: "candidate_addrs",
                reason: "at least one address is needed".into(),
            });
        }
        for a in &config.candidate_addrs {
            Candidate::host(*a, "udp").map_err(|e| CoreError::InvalidArgument {
                field: "candidate_addrs",
                reason: format!("{a}: {e}"),
            })?;
        }
        for a in &config.tcp_candidate_addrs {
            tcp_passive_candidate(*a).map_err(|e| CoreError::InvalidArgument {
                field: "tcp_candidate_addrs",
                reason: format!("{a}: {e}"),
            })?;
        }
        Ok(Self {
            config,
            rng: ChaCha20Rng::from_seed(seed),
            now,
            rooms: BTreeMap::new(),
            room_keys: HashMap::new(),
            sessions: HashMap::new(),
            session_keys: HashMap::new(),
            tracks: HashMap::new(),
            track_keys: HashMap::new(),
            keys: KeyGen::default(),
            next_offer_id: 1,
            demux: Demux::default(),
            timers: BTreeSet::new(),
            dirty: Vec::new(),
            scratch_subs: Vec::new(),
            scratch_events: Vec::new(),
            offers_due: Vec::new(),
            drive_depth: 0,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            counters: Counters::default(),
            commands: CommandCounts::default(),
            dtls_cert: None,
            draining: false,
            #[cfg(feature = "testing")]
            armed_fault: None,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SfuConfig {
        &self.config
    }

    /// Drop and forward counters.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Commands handled ([`Sfu::handle_command`]), per kind.
    pub fn command_counts(&self) -> CommandCounts {
        self.commands
    }

    /// Test hook: every Session created from now on uses `cert` as its DTLS certificate, instead
    /// of one str0m draws from the crypto provider's randomness, so that a replayed run produces
    /// the same SDP (its fingerprint) as another replay.
    #[cfg(feature = "testing")]
    pub fn pin_dtls_cert(&mut self, cert: DtlsCert) {
        self.dtls_cert = Some(cert);
    }

    /// Test hook ([`Command::InjectSfuFault`]): panics now, or arms a panic for the next datagram
    /// or timeout, outside any Session's guarded section.
    #[cfg(feature = "testing")]
    pub(crate) fn inject_sfu_fault(&mut self, at: crate::command::SfuFault) {
        if at == crate::command::SfuFault::Now {
            panic!("injected Sfu fault (command)");
        }
        self.armed_fault = Some(at);
    }

    /// Fires an armed test fault of kind `at`.
    #[cfg(feature = "testing")]
    fn fire_fault(&mut self, at: crate::command::SfuFault) {
        if self.armed_fault == Some(at) {
            self.armed_fault = None;
            panic!("injected Sfu fault ({at:?})");
        }
    }

    /// What this core holds: every Room and every Session (with its Room and Participant),
    /// sorted. For a
    /// supervisor reporting what a faulted core took down: it reads the maps only (touches no
    /// `Rtc`, cannot panic) and takes a Room from either its own entry or a Session naming it,
    /// since a panic may have left the two half-updated.
    #[allow(clippy::type_complexity)]
    pub fn held(&self) -> (Vec<RoomId>, Vec<(RoomId, SessionId, ParticipantId)>) {
        let mut sessions: Vec<_> = self
            .sessions
            .values()
            .map(|s| (s.room.clone(), s.id.clone(), s.participant.clone()))
            .collect();
        sessions.sort();
        let mut rooms: Vec<RoomId> = self.rooms.keys().cloned().collect();
        rooms.extend(sessions.iter().map(|(r, _, _)| r.clone()));
        rooms.sort();
        rooms.dedup();
        (rooms, sessions)
    }

    /// Takes the events queued but not yet polled, without driving anything (for a supervisor
    /// salvaging what a faulted core already decided; `poll_output` would touch Sessions).
    pub fn take_events(&mut self) -> Vec<SfuEvent> {
        self.events.drain(..).collect()
    }

    pub(crate) fn count_command(&mut self, cmd: &Command) {
        self.commands.count(cmd);
    }

    /// Each Session's latest downlink estimate (bps), for those that have one.
    pub fn estimates(&self) -> impl Iterator<Item = u64> + '_ {
        self.sessions.values().filter_map(|s| s.estimate)
    }

    /// Number of Rooms.
    pub fn n_rooms(&self) -> usize {
        self.rooms.len()
    }

    /// Number of Sessions.
    pub fn n_sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Number of published Tracks.
    pub fn n_tracks(&self) -> usize {
        self.tracks.len()
    }

    /// Forwarding routes counted from both ends: each (TrackIn → Session) route once in the
    /// Track's subscribers and once in the Session's TrackOuts (so twice the routes; a leak on
    /// either side shows).
    pub fn n_routes(&self) -> usize {
        self.tracks
            .values()
            .map(|t| t.subscribers.len())
            .sum::<usize>()
            + self
                .sessions
                .values()
                .map(|s| s.tracks_out.len())
                .sum::<usize>()
    }

    /// Entries in the demux indexes (addresses, ufrags) and timers: all zero once everything
    /// closed.
    pub fn n_index_entries(&self) -> (usize, usize, usize) {
        let (a, u) = self.demux.len();
        (a, u, self.timers.len())
    }

    fn emit(&mut self, room: &RoomId, session: Option<&SessionId>, kind: EventKind) {
        self.events.push_back(SfuEvent {
            room: room.clone(),
            session: session.cloned(),
            kind,
        });
    }

    fn session_key(&self, id: &SessionId) -> Result<SessionKey, CoreError> {
        self.session_keys
            .get(id)
            .copied()
            .ok_or_else(|| CoreError::SessionNotFound(id.clone()))
    }
}

// === impl Sfu: network, time and output ===

impl Sfu {
    /// Handles one datagram from the Worker's UDP socket or one frame from a TCP connection.
    /// Garbage is dropped and counted; this never fails and never panics. Returns whether the
    /// bytes reached a Session that accepted them (the driver keeps a TCP connection alive only
    /// while it carries such traffic).
    pub fn handle_datagram(&mut self, now: Instant, d: Datagram<'_>) -> bool {
        #[cfg(feature = "testing")]
        self.fire_fault(crate::command::SfuFault::NextDatagram);
        self.now = now;
        self.counters.datagrams_in += 1;
        self.counters.bytes_in += d.contents.len() as u64;
        let Some((key, via_ufrag)) = self.demux.route(d.transport, d.source, d.contents) else {
            self.counters.datagrams_unrouted += 1;
            return false;
        };
        let proto = match d.transport {
            Transport::Udp => Protocol::Udp,
            Transport::Tcp => Protocol::Tcp,
        };
        let Ok(recv) = Receive::new(proto, d.source, d.destination, d.contents) else {
            self.counters.datagrams_rejected += 1;
            return false;
        };
        let input = Input::Receive(now, recv);
        let Some(s) = self.sessions.get_mut(&key) else {
            self.counters.datagrams_unrouted += 1;
            return false;
        };
        if via_ufrag {
            // The ufrag is public (it is in the SDP): str0m checks the message integrity.
            match s.rtc.read(|rtc| rtc.accepts(&input)) {
                Ok(true) => {}
                Ok(false) => {
                    self.counters.datagrams_rejected += 1;
                    return false;
                }
                Err(RtcPanicked) => {
                    self.fail(key);
                    return false;
                }
            }
            // A valid check from an address not yet routed: route it from now on, evicting the
            // least recently checked address if the Session has its maximum (never the one it
            // sends to). Every check str0m answers is thus on a path that is routed.
            let addr = (d.transport, d.source);
            if let Some(evicted) = admit_addr(&mut s.addrs, s.send_to, addr) {
                self.demux.remove_addr_of(evicted, key);
                self.counters.addrs_evicted += 1;
            }
            self.demux.insert_addr(addr, key);
        } else if is_stun(d.contents) {
            // A check on a routed path keeps that path fresh.
            touch_addr(&mut s.addrs, (d.transport, d.source));
        }
        if !self.settle(key) {
            return false;
        }
        let s = self.sessions.get_mut(&key).expect("settle checked");
        let res = s.rtc.with(|rtc| rtc.handle_input(input));
        match res {
            Err(_) => {
                self.fail(key);
                false
            }
            // A DTLS handshake that fails (a certificate refused, e.g. an RSA key under 2048
            // bits, or a bad signature) ends the Session at once as PEER_ERROR rather than after
            // the connect timeout. Only before the Session connected: later DTLS errors are
            // dropped records, counted like any other garbage.
            Ok(Err(e @ str0m::RtcError::Dtls(_)))
                if matches!(s.state, SessionState::New | SessionState::Connecting) =>
            {
                self.counters.datagrams_rejected += 1;
                tracing::info!(session = %s.id, error = %e, "DTLS handshake failed; closing the session");
                // Drain first: the fatal alert dimpl queued tells the Peer why.
                self.drive(key);
                self.close(key, SessionCloseReason::PeerError, false);
                false
            }
            Ok(Err(e)) => {
                self.counters.datagrams_rejected += 1;
                tracing::trace!(session = %s.id, error = %e, "datagram rejected");
                self.drive(key);
                false
            }
            // In RTP mode str0m holds one received packet until the next poll: drain now, before
            // the next datagram. Subscribers written to are only marked dirty and drained once
            // per batch (see `poll_output`).
            Ok(Ok(())) => {
                self.drive(key);
                true
            }
        }
    }

    /// The TCP connection from `remote` closed (the Peer hung up, or the driver closed it). Its
    /// Session, if any, forgets the address and drops the ICE pairs that used it: with no other
    /// working pair it becomes Disconnected and closes after the disconnect grace unless the Peer
    /// comes back (a new connection, UDP, an ICE restart).
    pub fn handle_tcp_closed(&mut self, now: Instant, remote: SocketAddr) {
        self.now = now;
        let addr = (Transport::Tcp, remote);
        let Some(key) = self.demux.remove_addr(addr) else {
            return;
        };
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        s.addrs.retain(|a| *a != addr);
        // The remote side of an ICE-TCP connection is always peer-reflexive for us: active
        // candidates carry port 9 (RFC 6544), so the pair was learned from the first STUN
        // request on the connection. This matches it field by field (str0m compares the
        // address, base, related address, kind and protocol).
        let prflx = Candidate::from_parts(
            String::new(),
            1,
            Protocol::Tcp,
            0,
            remote,
            CandidateKind::PeerReflexive,
            None,
            None,
            None,
        );
        if !self.settle(key) {
            return;
        }
        let s = self.sessions.get_mut(&key).expect("settle checked");
        let res = s.rtc.with(|rtc| {
            rtc.direct_api().invalidate_candidate(&prflx);
            // Lets the ICE agent re-evaluate its state now rather than at its next timeout.
            rtc.handle_input(Input::Timeout(now))
        });
        match res {
            Err(_) => self.fail(key),
            Ok(Err(e)) => {
                tracing::debug!(session = %s.id, error = %e, "timeout after a TCP close failed");
                self.drive(key);
            }
            Ok(Ok(())) => self.drive(key),
        }
    }

    /// Advances time: runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        #[cfg(feature = "testing")]
        self.fire_fault(crate::command::SfuFault::NextTimeout);
        self.now = now;
        while let Some(&(at, tk)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            match tk {
                TimerKey::Session(key) => self.session_timeout(now, key),
                TimerKey::Room(rk) => {
                    let Some(id) = self.room_keys.get(&rk).cloned() else {
                        continue;
                    };
                    let due = self.rooms.get(&id).is_some_and(|r| {
                        r.sessions.is_empty() && r.empty_deadline.is_some_and(|d| d <= now)
                    });
                    if due {
                        self.close_room(&id, RoomCloseReason::EmptyTimeout);
                    }
                }
            }
        }
    }

    /// The next output. Call until it returns [`Output::Timeout`].
    pub fn poll_output(&mut self) -> Output {
        while let Some(k) = self.dirty.pop() {
            self.drive(k);
        }
        if let Some(t) = self.transmits.pop_front() {
            self.counters.datagrams_out += 1;
            self.counters.bytes_out += t.contents.len() as u64;
            return Output::Transmit(t);
        }
        if let Some(e) = self.events.pop_front() {
            return Output::Event(e);
        }
        let next = self
            .timers
            .first()
            .map(|(t, _)| *t)
            .unwrap_or(self.now + IDLE_TIMEOUT);
        Output::Timeout(next.min(self.now + IDLE_TIMEOUT))
    }

    /// Stops taking new Rooms and Sessions and closes everything (reason `GatewayShutdown`).
    /// Peers get a DTLS close; the transmits are in the output.
    pub fn shutdown(&mut self, now: Instant) {
        self.now = now;
        self.draining = true;
        let ids: Vec<RoomId> = self.rooms.keys().cloned().collect();
        for id in ids {
            self.close_room(&id, RoomCloseReason::GatewayShutdown);
        }
    }
}

/// A passive TCP host candidate (RFC 6544): the Peer connects to it.
fn tcp_passive_candidate(addr: SocketAddr) -> Result<Candidate, str0m::error::IceError> {
    Candidate::builder()
        .tcp()
        .host(addr)
        .tcptype(TcpType::Passive)
        .build()
}

/// The transport of a str0m transmit. Only UDP and plain TCP candidates are ever added locally,
/// so str0m never picks another protocol; were it to, TCP framing is the only other path.
fn transport_of(proto: Protocol) -> Transport {
    match proto {
        Protocol::Udp => Transport::Udp,
        Protocol::Tcp | Protocol::SslTcp | Protocol::Tls => Transport::Tcp,
    }
}
