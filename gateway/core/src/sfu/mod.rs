//! [`Sfu`]: the sans-IO state machine of one Worker. It owns every Room, Session and Track of that
//! Worker and makes every forwarding decision.
//!
//! Inputs are `handle_*(now, …)` calls and the control methods (`create_room`, `apply_offer`, …);
//! outputs come from [`Sfu::poll_output`]. It never reads a clock, opens a socket or spawns a task:
//! all time arrives as `now`, all bytes arrive as [`Datagram`]s and leave as [`Transmit`]s.
//!
//! str0m's single-mutation rule is kept here, one level up: every mutation of a Session's `Rtc`
//! marks the Session dirty, and dirty Sessions are drained (to `Output::Timeout`) before any output
//! leaves the core. Driving an `Rtc` (input, timeouts, draining its output) and writing forwarded
//! media run under `catch_unwind`; a panic there closes only that Session, with
//! `SessionCloseReason::InternalError`. Plain reads and the few control mutations (closing a data
//! channel, sizing the RTX cache) are not wrapped.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant, SystemTime};

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use str0m::bwe::{Bitrate, BweKind};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::channel::ChannelId;
use str0m::format::PayloadParams;
use str0m::ice::IceCreds;
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid, Pt, Rid};
use str0m::net::{Protocol, Receive, TcpType};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite, Ssrc};
use str0m::{Candidate, CandidateKind, Event, IceConnectionState, Input, Output as RtcOutput, Rtc};

use crate::demux::{Demux, SessionKey};
use crate::error::CoreError;
use crate::ids::{self, ParticipantId, RoomId, SessionId, TrackId};
use crate::model::*;

pub(crate) mod alloc;
mod data;
pub(crate) mod forward;

pub use alloc::BweConfig;

pub use data::DIRECT_LABEL;

/// Most remote addresses remembered per Session (a Peer normally uses one; ICE may try a few).
const MAX_ADDRS_PER_SESSION: usize = 8;
/// Longest metadata string accepted, in bytes.
pub const MAX_METADATA_BYTES: usize = 4096;
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
            data_max_message_bytes: 64 * 1024,
            data_send_buffer_bytes: 1024 * 1024,
            data_backend_max_bytes: 16 * 1024,
            speaker_interval: Duration::from_millis(500),
            speaker_smoothing: 0.3,
            speaker_min_loudness: 127 - 70,
            bwe: BweConfig::default(),
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

type TrackKey = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKey {
    Session(SessionKey),
    Room(u64),
}

struct Room {
    key: u64,
    id: RoomId,
    max_sessions: u32,
    empty_timeout: Duration,
    metadata: String,
    created_at: SystemTime,
    sessions: BTreeSet<SessionKey>,
    participants: HashMap<ParticipantId, u32>,
    tracks: BTreeSet<TrackKey>,
    empty_deadline: Option<Instant>,
    closing: bool,
    /// The channel configuration each label has in this Room (fixed by its first channel).
    labels: HashMap<String, ChannelSpec>,
    /// Labels whose messages also go to the backend (`*` means all).
    backend_labels: Vec<String>,
    /// The active speaker last reported, and when the Room last decided.
    speaker: Option<SessionKey>,
    speaker_decided: Option<Instant>,
}

struct PendingOffer {
    offer: SdpPendingOffer,
    id: u64,
}

/// Subscriber side of a Track (what one Session receives of one TrackIn).
///
/// Lifecycle: ToOpen → Negotiating → Open → ToStop → Stopping → gone. A rejected or superseded
/// offer moves Negotiating back to ToOpen and Stopping back to ToStop.
struct TrackOut {
    state: OutState,
    /// False once the TrackIn is gone; the m-line is then stopped at the next offer.
    wanted: bool,
    kind: MediaKind,
    /// Publisher payload type → subscriber payload type, learned on first use.
    /// With RED (RFC 2198) in: `true` when the subscriber did not negotiate RED and gets the
    /// primary encoding only.
    pt_map: Vec<(Pt, Option<(Pt, bool)>)>,
    /// Layer choice, key-frame gating and sequence/timestamp rewriting.
    fwd: forward::Forwarder,
    /// The bandwidth cap on the layer (with hysteresis).
    cap: alloc::LayerCap,
    /// Why the target layer was chosen.
    reason: LayerReason,
    /// What `SubscriptionLayerChanged` last said: (forwarded, target, reason).
    reported: Option<(Option<forward::Layer>, Option<forward::Layer>, LayerReason)>,
    /// The send stream of the m-line once it is open, so forwarding finds it by hash
    /// (`stream_tx`) rather than by str0m's scan over all send streams (`stream_tx_by_mid`).
    ssrc: Option<Ssrc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutState {
    ToOpen,
    Negotiating(Mid),
    Open(Mid),
    ToStop(Mid),
    Stopping(Mid),
}

/// Publisher side of a Track.
struct TrackIn {
    info: TrackInfo,
    publisher: SessionKey,
    room: RoomId,
    mid: Mid,
    kind: MediaKind,
    /// Per-layer receive statistics (one entry, layer `None`, without simulcast).
    layers: Vec<LayerStat>,
    /// Active layers from lowest to highest bitrate.
    ranked: Vec<forward::Layer>,
    /// Bumped whenever `ranked` changes, so subscribers re-choose their layer.
    version: u64,
    window_start: Option<Instant>,
    subscribers: BTreeSet<SessionKey>,
    /// Last key-frame request sent to the publisher, per layer (the throttle).
    last_keyframe_request: HashMap<forward::Layer, Instant>,
    /// The simulcast layers last reported as wanted (`TrackLayersWanted`).
    wanted_reported: Option<Vec<String>>,
    /// Muted by the backend: nothing is forwarded.
    muted: bool,
    /// Smoothed loudness of an audio track (0–127) and when it was last updated.
    loudness: f32,
    loudness_at: Option<Instant>,
    /// Publisher payload type → (its codec, whether it is the RED wrapper of that codec),
    /// learned on first use so forwarding does not scan the codec table per packet.
    pt_codec: Vec<(Pt, Option<(PayloadParams, bool)>)>,
}

struct LayerStat {
    layer: forward::Layer,
    bytes: u64,
    packets: u64,
    /// Bitrate of the last window, with per-packet overhead ([`PACKET_OVERHEAD`]).
    rate_bps: u64,
    last_seen: Instant,
}

/// Where a layer stands in quality order, lowest first. Well-known rid names decide (`q` < `h` <
/// `f`, `l` < `m` < `h`, numbers ascending); otherwise the order of the publisher's
/// `a=simulcast` line, which browsers write as the application listed its encodings.
fn layer_rank(declared: &[String], layer: forward::Layer) -> usize {
    let Some(rid) = layer else { return 0 };
    let name: &str = &rid;
    const SCHEMES: [&[&str]; 2] = [&["q", "h", "f"], &["l", "m", "h"]];
    for scheme in SCHEMES {
        if declared.iter().all(|d| scheme.contains(&d.as_str()))
            && let Some(i) = scheme.iter().position(|s| *s == name)
        {
            return i;
        }
    }
    if declared.iter().all(|d| d.parse::<u32>().is_ok())
        && let Ok(n) = name.parse::<u32>()
    {
        return n as usize;
    }
    declared
        .iter()
        .position(|d| d == name)
        .unwrap_or(usize::MAX)
}

/// A layer is active while packets arrived within this time.
const LAYER_ACTIVE: Duration = Duration::from_secs(1);
/// Bitrates are measured over windows of this length.
const RATE_WINDOW: Duration = Duration::from_millis(500);
/// Bytes a forwarded packet costs on the wire besides its payload (IP, UDP, RTP header and
/// extensions, SRTP tag), counted into a layer's bitrate.
const PACKET_OVERHEAD: u64 = 60;
/// Shortest wait before an `Rtc` that has just handled a timeout is handled again.
const MIN_RTC_WAIT: Duration = Duration::from_millis(1);
/// How often a subscriber's bandwidth allocation is re-evaluated (also on every new estimate).
const ALLOC_INTERVAL: Duration = Duration::from_millis(200);

struct Session {
    id: SessionId,
    room: RoomId,
    participant: ParticipantId,
    metadata: String,
    permissions: Permissions,
    created_at: SystemTime,
    state: SessionState,
    rtc: Rtc,
    ufrag: String,
    addrs: Vec<(Transport, SocketAddr)>,
    rtc_timeout: Instant,
    timer: Option<Instant>,
    connect_deadline: Option<Instant>,
    disconnect_deadline: Option<Instant>,
    /// A remote offer has been applied once; renegotiation is possible.
    negotiated: bool,
    pending: Option<PendingOffer>,
    ssrcs: HashMap<Ssrc, (Mid, Option<Rid>)>,
    tracks_in: HashMap<Mid, TrackKey>,
    tracks_out: BTreeMap<TrackKey, TrackOut>,
    out_by_mid: HashMap<Mid, TrackKey>,
    channels: HashMap<ChannelId, data::OpenChannel>,
    /// Receives new Tracks of the Room without a `subscribe` call.
    auto_subscribe: bool,
    /// The downlink estimate (bps) from str0m's TWCC bandwidth estimation.
    estimate: Option<u64>,
    /// When the bandwidth allocation is evaluated next.
    alloc_at: Option<Instant>,
    /// The (minimum, desired) bitrates last given to str0m's BWE.
    bwe_set: (u64, u64),
    dirty: bool,
    fault: bool,
}

/// The SFU core of one Worker. See the module docs for the contract.
pub struct Sfu {
    config: SfuConfig,
    rng: ChaCha20Rng,
    now: Instant,
    rooms: BTreeMap<RoomId, Room>,
    room_keys: HashMap<u64, RoomId>,
    sessions: HashMap<SessionKey, Session>,
    session_keys: HashMap<SessionId, SessionKey>,
    tracks: HashMap<TrackKey, TrackIn>,
    track_keys: HashMap<TrackId, TrackKey>,
    next_key: u64,
    next_offer_id: u64,
    demux: Demux,
    timers: BTreeSet<(Instant, TimerKey)>,
    dirty: Vec<SessionKey>,
    /// Scratch list of a TrackIn's subscribers, reused for every forwarded packet.
    scratch_subs: Vec<SessionKey>,
    /// Reused by `drive` for a Session's str0m events (one per received RTP packet), so driving
    /// does not allocate; taken while in use (a nested drive gets a fresh one).
    scratch_events: Vec<Event>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<SfuEvent>,
    counters: Counters,
    draining: bool,
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
            next_key: 1,
            next_offer_id: 1,
            demux: Demux::default(),
            timers: BTreeSet::new(),
            dirty: Vec::new(),
            scratch_subs: Vec::new(),
            scratch_events: Vec::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            counters: Counters::default(),
            draining: false,
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

    fn key(&mut self) -> u64 {
        let k = self.next_key;
        self.next_key += 1;
        k
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

    fn room_info(room: &Room) -> RoomInfo {
        RoomInfo {
            id: room.id.clone(),
            max_sessions: room.max_sessions,
            empty_timeout: room.empty_timeout,
            metadata: room.metadata.clone(),
            session_count: room.sessions.len() as u32,
            created_at: room.created_at,
            backend_data_labels: room.backend_labels.clone(),
        }
    }

    fn session_info(&self, s: &Session) -> SessionInfo {
        let mut published: Vec<TrackId> = s
            .tracks_in
            .values()
            .filter_map(|k| self.tracks.get(k).map(|t| t.info.id.clone()))
            .collect();
        published.sort();
        SessionInfo {
            id: s.id.clone(),
            room: s.room.clone(),
            participant: s.participant.clone(),
            metadata: s.metadata.clone(),
            permissions: s.permissions,
            state: s.state,
            published,
            created_at: s.created_at,
        }
    }
}

// === impl Sfu: control (backend requests) ===

impl Sfu {
    /// Creates a Room, or returns the identical existing one with `false`.
    pub fn create_room(
        &mut self,
        now: Instant,
        spec: RoomSpec,
    ) -> Result<(RoomInfo, bool), CoreError> {
        self.now = now;
        if self.draining {
            return Err(CoreError::ShuttingDown);
        }
        check_metadata("options.metadata", &spec.metadata)?;
        let max_sessions = spec
            .max_sessions
            .unwrap_or(self.config.default_max_sessions);
        if max_sessions > self.config.max_sessions_limit {
            return Err(CoreError::InvalidArgument {
                field: "options.max_sessions",
                reason: format!("must be at most {}", self.config.max_sessions_limit),
            });
        }
        let empty_timeout = spec
            .empty_timeout
            .unwrap_or(self.config.default_empty_timeout);
        let id = match spec.id {
            Some(id) => id,
            None => RoomId::generate(&mut self.rng),
        };
        if let Some(room) = self.rooms.get(&id) {
            let same = room.max_sessions == max_sessions
                && room.empty_timeout == empty_timeout
                && room.metadata == spec.metadata
                && room.backend_labels == spec.backend_data_labels;
            return if same {
                Ok((Self::room_info(room), false))
            } else {
                Err(CoreError::RoomExists(id))
            };
        }
        if self.rooms.len() >= self.config.max_rooms {
            return Err(CoreError::LimitReached(format!(
                "this worker holds its maximum of {} rooms",
                self.config.max_rooms
            )));
        }
        let key = self.key();
        let deadline = now + empty_timeout;
        let room = Room {
            key,
            id: id.clone(),
            max_sessions,
            empty_timeout,
            metadata: spec.metadata,
            created_at: spec.created_at,
            sessions: BTreeSet::new(),
            participants: HashMap::new(),
            tracks: BTreeSet::new(),
            empty_deadline: Some(deadline),
            closing: false,
            labels: HashMap::new(),
            backend_labels: spec.backend_data_labels,
            speaker: None,
            speaker_decided: None,
        };
        let info = Self::room_info(&room);
        self.rooms.insert(id.clone(), room);
        self.room_keys.insert(key, id.clone());
        self.timers.insert((deadline, TimerKey::Room(key)));
        self.emit(&id, None, EventKind::RoomCreated);
        Ok((info, true))
    }

    /// Reads one Room.
    pub fn get_room(&self, id: &RoomId) -> Result<RoomInfo, CoreError> {
        self.rooms
            .get(id)
            .map(Self::room_info)
            .ok_or_else(|| CoreError::RoomNotFound(id.clone()))
    }

    /// Lists every Room, ordered by id.
    pub fn list_rooms(&self) -> Vec<RoomInfo> {
        self.rooms.values().map(Self::room_info).collect()
    }

    /// Deletes a Room and closes its Sessions. Returns how many Sessions were closed.
    pub fn delete_room(&mut self, now: Instant, id: &RoomId) -> Result<u32, CoreError> {
        self.now = now;
        if !self.rooms.contains_key(id) {
            return Err(CoreError::RoomNotFound(id.clone()));
        }
        Ok(self.close_room(id, RoomCloseReason::BackendRequest))
    }

    /// Creates a Session (one peer connection) in a Room.
    pub fn create_session(
        &mut self,
        now: Instant,
        spec: SessionSpec,
    ) -> Result<SessionInfo, CoreError> {
        self.now = now;
        if self.draining {
            return Err(CoreError::ShuttingDown);
        }
        check_metadata("metadata", &spec.metadata)?;
        let room = self
            .rooms
            .get(&spec.room)
            .ok_or_else(|| CoreError::RoomNotFound(spec.room.clone()))?;
        if room.sessions.len() >= room.max_sessions as usize {
            return Err(CoreError::LimitReached(format!(
                "room {} is full ({} sessions)",
                room.id, room.max_sessions
            )));
        }
        let id = SessionId::generate(self.config.worker, &mut self.rng);
        let (ufrag, pass) = ids::ice_creds(&mut self.rng);
        // Opus RED (RFC 2198) is offered and accepted, and passed through between Peers that
        // both negotiated it (the primary encoding alone goes to those that did not).
        let mut builder = Rtc::builder()
            .enable_opus(true, true)
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .set_local_ice_credentials(IceCreds {
                ufrag: ufrag.clone(),
                pass,
            });
        if self.config.bwe.enabled {
            builder = builder.enable_bwe(Some(Bitrate::bps(
                self.config.bwe.initial_bitrate_bps.max(1),
            )));
        }
        let mut rtc = builder.build(now);
        for a in &self.config.candidate_addrs {
            // Validated in Sfu::new: every announced address makes a host candidate.
            let c = Candidate::host(*a, "udp").expect("validated in Sfu::new");
            rtc.add_local_candidate(c);
        }
        for a in &self.config.tcp_candidate_addrs {
            // Validated in Sfu::new likewise.
            let c = tcp_passive_candidate(*a).expect("validated in Sfu::new");
            rtc.add_local_candidate(c);
        }
        let key = self.key();
        let connect_deadline = now + self.config.connect_timeout;
        let session = Session {
            id: id.clone(),
            room: spec.room.clone(),
            participant: spec.participant.clone(),
            metadata: spec.metadata,
            permissions: spec.permissions,
            created_at: spec.created_at,
            state: SessionState::New,
            rtc,
            ufrag: ufrag.clone(),
            addrs: Vec::new(),
            rtc_timeout: now,
            timer: None,
            connect_deadline: Some(connect_deadline),
            disconnect_deadline: None,
            negotiated: false,
            pending: None,
            ssrcs: HashMap::new(),
            tracks_in: HashMap::new(),
            tracks_out: BTreeMap::new(),
            out_by_mid: HashMap::new(),
            channels: HashMap::new(),
            auto_subscribe: spec.auto_subscribe,
            estimate: None,
            alloc_at: None,
            bwe_set: (0, 0),
            dirty: false,
            fault: false,
        };
        self.sessions.insert(key, session);
        self.session_keys.insert(id.clone(), key);
        self.demux.insert_ufrag(ufrag, key);

        // Checked above that the room exists; nothing removed it since.
        let room = self.rooms.get_mut(&spec.room).expect("room exists");
        room.sessions.insert(key);
        if let Some(d) = room.empty_deadline.take() {
            self.timers.remove(&(d, TimerKey::Room(room.key)));
        }
        let first = {
            let n = room
                .participants
                .entry(spec.participant.clone())
                .or_insert(0);
            *n += 1;
            *n == 1
        };
        let existing: Vec<TrackKey> = room.tracks.iter().copied().collect();
        if first {
            self.emit(
                &spec.room,
                Some(&id),
                EventKind::ParticipantJoined(spec.participant.clone()),
            );
        }
        if spec.permissions.subscribe && spec.auto_subscribe {
            for tk in existing {
                self.subscribe_track(key, tk);
            }
        }
        self.touch(key);
        self.drive(key);
        let s = &self.sessions[&key];
        Ok(self.session_info(s))
    }

    /// Reads one Session.
    pub fn get_session(&self, id: &SessionId) -> Result<SessionInfo, CoreError> {
        let key = self.session_key(id)?;
        Ok(self.session_info(&self.sessions[&key]))
    }

    /// Lists a Room's Sessions, ordered by id.
    pub fn list_sessions(&self, room: &RoomId) -> Result<Vec<SessionInfo>, CoreError> {
        let r = self
            .rooms
            .get(room)
            .ok_or_else(|| CoreError::RoomNotFound(room.clone()))?;
        let mut v: Vec<SessionInfo> = r
            .sessions
            .iter()
            .filter_map(|k| self.sessions.get(k))
            .map(|s| self.session_info(s))
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(v)
    }

    /// Closes a Session at the backend's request.
    pub fn close_session(&mut self, now: Instant, id: &SessionId) -> Result<(), CoreError> {
        self.now = now;
        let key = self.session_key(id)?;
        self.close(key, SessionCloseReason::BackendRequest, true);
        Ok(())
    }

    /// Applies the Peer's offer and returns the answer. If a gateway offer is outstanding (glare),
    /// the gateway yields: its offer is dropped and its changes are offered again afterwards.
    pub fn apply_offer(
        &mut self,
        now: Instant,
        id: &SessionId,
        sdp: &str,
    ) -> Result<String, CoreError> {
        self.now = now;
        let key = self.session_key(id)?;
        let sdp = &*without_tcp_candidates(sdp);
        let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| CoreError::InvalidArgument {
            field: "sdp",
            reason: format!("not a valid SDP offer: {e}"),
        })?;
        if sdp.is_empty() {
            return Err(CoreError::InvalidArgument {
                field: "sdp",
                reason: "must not be empty".into(),
            });
        }
        let s = self.sessions.get_mut(&key).expect("key from index");
        let glare = s.pending.take().is_some();
        let res = catch_unwind(AssertUnwindSafe(|| {
            check_fault(s);
            s.rtc.sdp_api().accept_offer(offer)
        }));
        if glare {
            self.finish_negotiation(key, false);
        }
        let answer = match res {
            Err(_) => {
                self.fail(key);
                return Err(CoreError::Internal(id.clone()));
            }
            Ok(Err(e)) => {
                self.touch(key);
                self.drive(key);
                self.maybe_offer(key);
                return Err(CoreError::InvalidArgument {
                    field: "sdp",
                    reason: format!("offer cannot be accepted: {e}"),
                });
            }
            Ok(Ok(answer)) => answer,
        };
        let s = self.sessions.get_mut(&key).expect("key from index");
        s.negotiated = true;
        if s.state == SessionState::New {
            s.state = SessionState::Connecting;
        }
        // An ICE restart by the Peer gives this side new credentials too: keep the ufrag index
        // right, or checks from the Peer's new address could not be routed.
        let ufrag = s.rtc.direct_api().local_ice_credentials().ufrag;
        if ufrag != s.ufrag {
            let old = std::mem::replace(&mut s.ufrag, ufrag.clone());
            self.demux.remove(&old, &[], key);
            self.demux.insert_ufrag(ufrag, key);
        }
        self.touch(key);
        self.drive(key);
        self.maybe_offer(key);
        Ok(answer.to_sdp_string())
    }

    /// Applies the Peer's answer to the gateway's outstanding offer.
    pub fn apply_answer(
        &mut self,
        now: Instant,
        id: &SessionId,
        sdp: &str,
        offer_id: Option<u64>,
    ) -> Result<(), CoreError> {
        self.now = now;
        let key = self.session_key(id)?;
        if sdp.is_empty() {
            return Err(CoreError::InvalidArgument {
                field: "sdp",
                reason: "must not be empty".into(),
            });
        }
        let sdp = &*without_tcp_candidates(sdp);
        let answer = SdpAnswer::from_sdp_string(sdp).map_err(|e| CoreError::InvalidArgument {
            field: "sdp",
            reason: format!("not a valid SDP answer: {e}"),
        })?;
        let s = self.sessions.get_mut(&key).expect("key from index");
        let Some(pending) = &s.pending else {
            return Err(CoreError::WrongState {
                session: id.clone(),
                reason: "no gateway offer is outstanding".into(),
            });
        };
        if let Some(want) = offer_id
            && want != pending.id
        {
            return Err(CoreError::WrongState {
                session: id.clone(),
                reason: format!(
                    "offer {want} is not the outstanding offer (that is {})",
                    pending.id
                ),
            });
        }
        let pending = s.pending.take().expect("checked above");
        let res = catch_unwind(AssertUnwindSafe(|| {
            check_fault(s);
            s.rtc.sdp_api().accept_answer(pending.offer, answer)
        }));
        match res {
            Err(_) => {
                self.fail(key);
                Err(CoreError::Internal(id.clone()))
            }
            Ok(Err(e)) => {
                self.finish_negotiation(key, false);
                self.touch(key);
                self.drive(key);
                self.maybe_offer(key);
                Err(CoreError::InvalidArgument {
                    field: "sdp",
                    reason: format!("answer cannot be accepted: {e}"),
                })
            }
            Ok(Ok(())) => {
                self.touch(key);
                self.drive(key);
                self.finish_negotiation(key, true);
                self.maybe_offer(key);
                Ok(())
            }
        }
    }

    /// Adds a trickled candidate from the Peer. Candidates with an mDNS (`.local`) address are
    /// accepted and ignored: the gateway is ICE-lite and learns the Peer's address from its checks.
    pub fn add_remote_candidate(
        &mut self,
        now: Instant,
        id: &SessionId,
        candidate: RemoteCandidate<'_>,
    ) -> Result<(), CoreError> {
        self.now = now;
        let key = self.session_key(id)?;
        let RemoteCandidate::Candidate(line) = candidate else {
            return Ok(());
        };
        let line = line.trim();
        let line = line.strip_prefix("a=").unwrap_or(line);
        if line.is_empty() {
            return Err(CoreError::InvalidArgument {
                field: "candidate",
                reason: "must not be empty unless end_of_candidates is set".into(),
            });
        }
        let is_mdns = line
            .split_whitespace()
            .nth(4)
            .is_some_and(|addr| addr.ends_with(".local"));
        if is_mdns && line.starts_with("candidate:") {
            return Ok(());
        }
        let c = Candidate::from_sdp_string(line).map_err(|e| CoreError::InvalidArgument {
            field: "candidate",
            reason: format!("not a valid ICE candidate: {e}"),
        })?;
        if c.proto() != Protocol::Udp {
            // See `without_tcp_candidates`: ICE-TCP pairs are learned from the connection.
            return Ok(());
        }
        let s = self.sessions.get_mut(&key).expect("key from index");
        let res = catch_unwind(AssertUnwindSafe(|| {
            check_fault(s);
            s.rtc.add_remote_candidate(c)
        }));
        if res.is_err() {
            self.fail(key);
            return Err(CoreError::Internal(id.clone()));
        }
        self.touch(key);
        Ok(())
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

    fn track_in_room(&self, key: SessionKey, track: &TrackId) -> Result<TrackKey, CoreError> {
        let room = &self.sessions[&key].room;
        self.track_keys
            .get(track)
            .copied()
            .filter(|tk| self.tracks.get(tk).is_some_and(|t| &t.room == room))
            .ok_or_else(|| CoreError::TrackNotFound(track.clone()))
    }

    /// Subscribes a Session to Tracks of its Room (idempotent). The gateway then offers the new
    /// m-lines (`NegotiationNeeded`).
    pub fn subscribe(
        &mut self,
        now: Instant,
        id: &SessionId,
        tracks: &[TrackId],
    ) -> Result<(), CoreError> {
        self.now = now;
        let key = self.session_key(id)?;
        if !self.sessions[&key].permissions.subscribe {
            return Err(CoreError::PermissionDenied(format!(
                "session {id} may not subscribe"
            )));
        }
        let mut keys = Vec::with_capacity(tracks.len());
        for t in tracks {
            let tk = self.track_in_room(key, t)?;
            let tr = &self.tracks[&tk];
            if tr.info.participant == self.sessions[&key].participant {
                return Err(CoreError::InvalidArgument {
                    field: "track_ids",
                    reason: format!("{t} is published by the same participant"),
                });
            }
            keys.push(tk);
        }
        for tk in &keys {
            let s = &self.sessions[&key];
            if let Some(OutState::Stopping(_)) = s.tracks_out.get(tk).map(|o| o.state) {
                return Err(CoreError::WrongState {
                    session: id.clone(),
                    reason: "an unsubscribe of this track is being negotiated; retry after it"
                        .into(),
                });
            }
        }
        for tk in keys {
            let s = self.sessions.get_mut(&key).expect("key from index");
            match s.tracks_out.get_mut(&tk) {
                None => self.subscribe_track(key, tk),
                Some(o) => {
                    // Undo an unsubscribe that was not offered yet.
                    if let OutState::ToStop(mid) = o.state {
                        o.state = OutState::Open(mid);
                    }
                    if !o.wanted {
                        o.wanted = true;
                        o.fwd.paused = false;
                        o.fwd.current = None;
                        o.cap.reset();
                    }
                    if let Some(t) = self.tracks.get_mut(&tk) {
                        t.subscribers.insert(key);
                    }
                }
            }
        }
        self.maybe_offer(key);
        Ok(())
    }

    /// Unsubscribes a Session from Tracks (idempotent); their m-lines are removed by the next
    /// gateway offer and no more packets are forwarded.
    pub fn unsubscribe(
        &mut self,
        now: Instant,
        id: &SessionId,
        tracks: &[TrackId],
    ) -> Result<(), CoreError> {
        self.now = now;
        let key = self.session_key(id)?;
        let mut keys = Vec::with_capacity(tracks.len());
        for t in tracks {
            keys.push(self.track_in_room(key, t)?);
        }
        for tk in keys {
            if let Some(t) = self.tracks.get_mut(&tk) {
                t.subscribers.remove(&key);
            }
            let s = self.sessions.get_mut(&key).expect("key from index");
            release_track_out(s, tk);
            self.report_wanted_layers(tk);
        }
        self.maybe_offer(key);
        Ok(())
    }

    /// Sets a subscriber's preference for one Track: the highest simulcast layer it receives, and
    /// whether forwarding is paused. A layer change happens at the next key frame of the new
    /// layer, which is requested at once.
    pub fn set_track_preference(
        &mut self,
        now: Instant,
        id: &SessionId,
        track: &TrackId,
        pref: TrackPreference,
    ) -> Result<(), CoreError> {
        self.now = now;
        let key = self.session_key(id)?;
        let tk = self.track_in_room(key, track)?;
        let s = self.sessions.get_mut(&key).expect("key from index");
        let Some(o) = s.tracks_out.get_mut(&tk).filter(|o| o.wanted) else {
            return Err(CoreError::WrongState {
                session: id.clone(),
                reason: format!("not subscribed to {track}"),
            });
        };
        let resumed = o.fwd.paused && !pref.paused;
        o.fwd.max_layer = pref.max_layer;
        o.fwd.paused = pref.paused;
        if resumed {
            // Resume at a key frame, continuing the sequence numbers.
            o.fwd.current = None;
            o.cap.reset();
        }
        if pref.paused {
            self.report_wanted_layers(tk);
            self.report_layer(key, tk);
        } else {
            self.kick(key, tk);
        }
        Ok(())
    }

    /// Mutes or unmutes a published Track for every subscriber (moderation). Unmuting resumes
    /// video at the next key frame, which is requested at once. Idempotent.
    pub fn set_track_muted(
        &mut self,
        now: Instant,
        room: &RoomId,
        track: &TrackId,
        muted: bool,
    ) -> Result<(), CoreError> {
        self.now = now;
        if !self.rooms.contains_key(room) {
            return Err(CoreError::RoomNotFound(room.clone()));
        }
        let tk = self
            .track_keys
            .get(track)
            .copied()
            .filter(|tk| self.tracks.get(tk).is_some_and(|t| &t.room == room))
            .ok_or_else(|| CoreError::TrackNotFound(track.clone()))?;
        let t = self.tracks.get_mut(&tk).expect("checked above");
        if t.muted == muted {
            return Ok(());
        }
        t.muted = muted;
        let (publisher, subs) = (t.info.session.clone(), t.subscribers.clone());
        if muted {
            for sub in &subs {
                self.report_layer(*sub, tk);
            }
        } else {
            for sub in &subs {
                if let Some(o) = self
                    .sessions
                    .get_mut(sub)
                    .and_then(|s| s.tracks_out.get_mut(&tk))
                {
                    o.fwd.current = None;
                }
            }
            for sub in subs {
                self.kick(sub, tk);
            }
        }
        self.emit(
            room,
            Some(&publisher),
            EventKind::TrackMuted {
                track: track.clone(),
                muted,
            },
        );
        Ok(())
    }

    /// Removes a Participant from a Room: closes all its Sessions (reason `Removed`). Returns
    /// how many were closed.
    pub fn remove_participant(
        &mut self,
        now: Instant,
        room: &RoomId,
        participant: &ParticipantId,
    ) -> Result<u32, CoreError> {
        self.now = now;
        let r = self
            .rooms
            .get(room)
            .ok_or_else(|| CoreError::RoomNotFound(room.clone()))?;
        let keys: Vec<SessionKey> = r
            .sessions
            .iter()
            .copied()
            .filter(|k| {
                self.sessions
                    .get(k)
                    .is_some_and(|s| &s.participant == participant)
            })
            .collect();
        if keys.is_empty() {
            return Err(CoreError::ParticipantNotFound(participant.clone()));
        }
        let n = keys.len() as u32;
        for k in keys {
            self.close(k, SessionCloseReason::Removed, true);
        }
        Ok(n)
    }

    /// Test hook: the next time this Session's `Rtc` is touched, the core panics inside the
    /// Session's guarded section, exactly as a bug would.
    #[cfg(feature = "testing")]
    pub fn inject_fault(&mut self, id: &SessionId) -> Result<(), CoreError> {
        let key = self.session_key(id)?;
        let s = self.sessions.get_mut(&key).expect("key from index");
        s.fault = true;
        self.touch(key);
        Ok(())
    }
}

// === impl Sfu: network and time ===

impl Sfu {
    /// Handles one datagram from the Worker's UDP socket or one frame from a TCP connection.
    /// Garbage is dropped and counted; this never fails and never panics. Returns whether the
    /// bytes reached a Session that accepted them (the driver keeps a TCP connection alive only
    /// while it carries such traffic).
    pub fn handle_datagram(&mut self, now: Instant, d: Datagram<'_>) -> bool {
        self.now = now;
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
            if !s.rtc.accepts(&input) {
                self.counters.datagrams_rejected += 1;
                return false;
            }
            let addr = (d.transport, d.source);
            if s.addrs.len() < MAX_ADDRS_PER_SESSION && !s.addrs.contains(&addr) {
                s.addrs.push(addr);
                self.demux.insert_addr(addr, key);
            }
        }
        let res = catch_unwind(AssertUnwindSafe(|| {
            check_fault(s);
            s.rtc.handle_input(input)
        }));
        match res {
            Err(_) => {
                self.fail(key);
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
        let res = catch_unwind(AssertUnwindSafe(|| {
            check_fault(s);
            s.rtc.direct_api().invalidate_candidate(&prflx);
            // Lets the ICE agent re-evaluate its state now rather than at its next timeout.
            s.rtc.handle_input(Input::Timeout(now))
        }));
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

    fn session_timeout(&mut self, now: Instant, key: SessionKey) {
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        s.timer = None;
        if s.connect_deadline.is_some_and(|d| d <= now) {
            self.close(key, SessionCloseReason::ConnectTimeout, true);
            return;
        }
        if s.disconnect_deadline.is_some_and(|d| d <= now) {
            self.close(key, SessionCloseReason::DisconnectTimeout, true);
            return;
        }
        if s.alloc_at.is_some_and(|d| d <= now) {
            self.allocate(key);
        }
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        if s.rtc_timeout <= now {
            let res = catch_unwind(AssertUnwindSafe(|| {
                check_fault(s);
                s.rtc.handle_input(Input::Timeout(now))
            }));
            match res {
                Err(_) => return self.fail(key),
                Ok(Err(e)) => {
                    tracing::debug!(session = %s.id, error = %e, "timeout handling failed");
                }
                Ok(Ok(())) => {}
            }
            self.drive(key);
            // An `Rtc` that wants `now` again right after handling `now` (str0m's delay-based
            // BWE does so when the measured RTT is zero) would spin this loop: wait 1 ms.
            if let Some(s) = self.sessions.get_mut(&key)
                && s.rtc_timeout <= now
            {
                s.rtc_timeout = now + MIN_RTC_WAIT;
                self.update_timer(key);
            }
        } else {
            self.update_timer(key);
        }
    }

    fn touch(&mut self, key: SessionKey) {
        if let Some(s) = self.sessions.get_mut(&key)
            && !s.dirty
        {
            s.dirty = true;
            self.dirty.push(key);
        }
    }

    fn update_timer(&mut self, key: SessionKey) {
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        let mut next = s.rtc_timeout;
        for d in [s.connect_deadline, s.disconnect_deadline, s.alloc_at]
            .into_iter()
            .flatten()
        {
            next = next.min(d);
        }
        if s.timer != Some(next) {
            if let Some(old) = s.timer {
                self.timers.remove(&(old, TimerKey::Session(key)));
            }
            self.timers.insert((next, TimerKey::Session(key)));
            s.timer = Some(next);
        }
    }

    /// Drains one Session's `Rtc` to `Timeout`, then acts on its events.
    fn drive(&mut self, key: SessionKey) {
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        s.dirty = false;
        let mut events = std::mem::take(&mut self.scratch_events);
        let transmits = &mut self.transmits;
        let res = catch_unwind(AssertUnwindSafe(|| {
            check_fault(s);
            loop {
                match s.rtc.poll_output()? {
                    RtcOutput::Timeout(t) => {
                        s.rtc_timeout = t;
                        return Ok(());
                    }
                    RtcOutput::Transmit(t) => transmits.push_back(Transmit {
                        transport: transport_of(t.proto),
                        source: t.source,
                        destination: t.destination,
                        contents: t.contents.into(),
                    }),
                    RtcOutput::Event(e) => events.push(e),
                }
            }
        }));
        match res {
            Err(_) => return self.fail(key),
            Ok(Err(e)) => {
                let e: str0m::RtcError = e;
                tracing::debug!(session = %s.id, error = %e, "session failed");
                for ev in events.drain(..) {
                    self.on_rtc_event(key, ev);
                }
                self.scratch_events = events;
                return self.close(key, SessionCloseReason::PeerError, false);
            }
            Ok(Ok(())) => {}
        }
        self.update_timer(key);
        for ev in events.drain(..) {
            self.on_rtc_event(key, ev);
        }
        self.scratch_events = events;
    }

    fn fail(&mut self, key: SessionKey) {
        self.counters.session_panics += 1;
        if let Some(s) = self.sessions.get(&key) {
            tracing::error!(session = %s.id, "internal fault; closing the session");
        }
        self.close(key, SessionCloseReason::InternalError, false);
    }
}

// === impl Sfu: reacting to a Session's events ===

impl Sfu {
    fn on_rtc_event(&mut self, key: SessionKey, ev: Event) {
        if !self.sessions.contains_key(&key) {
            return;
        }
        match ev {
            Event::RtpPacket(p) => self.forward_rtp(key, p),
            Event::Connected => self.set_connected(key),
            Event::IceConnectionStateChange(st) => self.on_ice_state(key, st),
            Event::MediaAdded(m) if m.direction.is_receiving() => {
                let rids = m
                    .simulcast
                    .map(|s| s.recv.into_iter().map(|l| l.rid).collect())
                    .unwrap_or_default();
                self.publish(key, m.mid, m.kind, rids);
            }
            Event::MediaChanged(c) if !c.direction.is_receiving() => {
                let tk = self.sessions[&key].tracks_in.get(&c.mid).copied();
                if let Some(tk) = tk {
                    self.unpublish(tk);
                }
            }
            Event::ChannelOpen(id, label) => self.on_channel_open(key, id, label),
            Event::ChannelClose(id) => {
                let s = self.sessions.get_mut(&key).expect("checked above");
                s.channels.remove(&id);
            }
            Event::ChannelData(d) => self.on_channel_data(key, d.id, d.binary, &d.data),
            Event::KeyframeRequest(r) => {
                // A subscriber lost video: ask the publisher for a key frame of the layer this
                // subscriber receives (throttled per layer, so a storm of requests is one).
                let s = &self.sessions[&key];
                let tk = s.out_by_mid.get(&r.mid).copied();
                if let Some(tk) = tk {
                    let layer = s
                        .tracks_out
                        .get(&tk)
                        .and_then(|o| o.fwd.current.or(o.fwd.target));
                    if let Some(layer) = layer {
                        self.request_keyframe_layer(tk, layer, r.kind, false);
                    }
                }
            }
            Event::EgressBitrateEstimate(BweKind::Twcc { estimate, .. }) => {
                let s = self.sessions.get_mut(&key).expect("checked above");
                s.estimate = Some(estimate.as_u64());
                self.allocate(key);
            }
            Event::Closed => self.close(key, SessionCloseReason::PeerClosed, false),
            _ => {}
        }
    }

    fn set_connected(&mut self, key: SessionKey) {
        let s = self.sessions.get_mut(&key).expect("caller checked");
        if s.state == SessionState::Connected {
            return;
        }
        s.state = SessionState::Connected;
        s.connect_deadline = None;
        s.disconnect_deadline = None;
        let (room, id) = (s.room.clone(), s.id.clone());
        self.update_timer(key);
        self.emit(&room, Some(&id), EventKind::SessionConnected);
        // Video that was forwarded before the connection was up was dropped: ask for keyframes.
        let outs: Vec<TrackKey> = self.sessions[&key]
            .tracks_out
            .iter()
            .filter(|(_, o)| matches!(o.state, OutState::Open(_)) && o.kind == MediaKind::Video)
            .map(|(k, _)| *k)
            .collect();
        for tk in outs {
            self.kick(key, tk);
        }
    }

    fn on_ice_state(&mut self, key: SessionKey, st: IceConnectionState) {
        let s = self.sessions.get_mut(&key).expect("caller checked");
        match st {
            IceConnectionState::Disconnected if s.state == SessionState::Connected => {
                s.state = SessionState::Disconnected;
                s.disconnect_deadline = Some(self.now + self.config.disconnect_grace);
                let (room, id) = (s.room.clone(), s.id.clone());
                self.update_timer(key);
                let grace = self.config.disconnect_grace;
                self.emit(&room, Some(&id), EventKind::SessionDisconnected { grace });
            }
            IceConnectionState::Connected | IceConnectionState::Completed
                if s.state == SessionState::Disconnected && s.rtc.is_connected() =>
            {
                self.set_connected(key);
            }
            _ => {}
        }
    }

    fn publish(&mut self, key: SessionKey, mid: Mid, kind: MediaKind, rids: Vec<Rid>) {
        let s = &self.sessions[&key];
        if !s.permissions.publish || s.tracks_in.contains_key(&mid) {
            return;
        }
        let tk = self.key();
        let s = &self.sessions[&key];
        let info = TrackInfo {
            id: TrackId::generate(&mut self.rng),
            session: s.id.clone(),
            participant: s.participant.clone(),
            kind: match kind {
                MediaKind::Audio => TrackKind::Audio,
                MediaKind::Video => TrackKind::Video,
            },
            mid: mid.to_string(),
            rids: rids.iter().map(|r| r.to_string()).collect(),
        };
        let room_id = s.room.clone();
        let publisher_id = s.id.clone();
        let publisher_participant = s.participant.clone();
        self.track_keys.insert(info.id.clone(), tk);
        self.tracks.insert(
            tk,
            TrackIn {
                info: info.clone(),
                publisher: key,
                room: room_id.clone(),
                mid,
                kind,
                layers: Vec::new(),
                ranked: Vec::new(),
                version: 0,
                window_start: None,
                subscribers: BTreeSet::new(),
                last_keyframe_request: HashMap::new(),
                wanted_reported: None,
                loudness: 0.0,
                loudness_at: None,
                muted: false,
                pt_codec: Vec::new(),
            },
        );
        self.sessions
            .get_mut(&key)
            .expect("checked above")
            .tracks_in
            .insert(mid, tk);
        let room = self
            .rooms
            .get_mut(&room_id)
            .expect("a session's room exists");
        room.tracks.insert(tk);
        let others: Vec<SessionKey> = room
            .sessions
            .iter()
            .copied()
            .filter(|k| *k != key)
            .collect();
        self.emit(
            &room_id,
            Some(&publisher_id),
            EventKind::TrackPublished(info),
        );
        for other in others {
            let o = &self.sessions[&other];
            if o.permissions.subscribe && o.auto_subscribe && o.participant != publisher_participant
            {
                self.subscribe_track(other, tk);
                self.maybe_offer(other);
            }
        }
    }

    fn subscribe_track(&mut self, key: SessionKey, tk: TrackKey) {
        let Some(t) = self.tracks.get_mut(&tk) else {
            return;
        };
        let s = self.sessions.get_mut(&key).expect("caller checked");
        if t.publisher == key || s.participant == t.info.participant {
            return;
        }
        t.subscribers.insert(key);
        s.tracks_out.insert(
            tk,
            TrackOut {
                state: OutState::ToOpen,
                wanted: true,
                kind: t.kind,
                pt_map: Vec::new(),
                fwd: forward::Forwarder::default(),
                cap: alloc::LayerCap::default(),
                reason: LayerReason::Preference,
                reported: None,
                ssrc: None,
            },
        );
    }

    fn unpublish(&mut self, tk: TrackKey) {
        let Some(t) = self.tracks.remove(&tk) else {
            return;
        };
        self.track_keys.remove(&t.info.id);
        if let Some(p) = self.sessions.get_mut(&t.publisher) {
            p.tracks_in.remove(&t.mid);
        }
        if let Some(r) = self.rooms.get_mut(&t.room) {
            r.tracks.remove(&tk);
        }
        self.emit(
            &t.room,
            Some(&t.info.session),
            EventKind::TrackUnpublished {
                track: t.info.id.clone(),
                publisher: t.info.session.clone(),
            },
        );
        for sub in t.subscribers {
            let Some(s) = self.sessions.get_mut(&sub) else {
                continue;
            };
            release_track_out(s, tk);
            self.maybe_offer(sub);
        }
    }

    /// Starts a gateway offer for a Session if it has queued changes and none is outstanding.
    fn maybe_offer(&mut self, key: SessionKey) {
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        if !s.negotiated || s.pending.is_some() {
            return;
        }
        if self.rooms.get(&s.room).is_none_or(|r| r.closing) {
            return;
        }
        let queued = s
            .tracks_out
            .values()
            .any(|o| matches!(o.state, OutState::ToOpen | OutState::ToStop(_)));
        if !queued {
            return;
        }
        let tracks = &self.tracks;
        let res = catch_unwind(AssertUnwindSafe(|| {
            check_fault(s);
            let mut api = s.rtc.sdp_api();
            for (tk, o) in s.tracks_out.iter_mut() {
                match o.state {
                    OutState::ToOpen => {
                        let Some(t) = tracks.get(tk) else { continue };
                        let mid = api.add_media(
                            t.kind,
                            Direction::SendOnly,
                            Some(t.info.session.to_string()),
                            Some(t.info.id.to_string()),
                            None,
                        );
                        o.state = OutState::Negotiating(mid);
                    }
                    OutState::ToStop(mid) => {
                        api.stop_media(mid);
                        o.state = OutState::Stopping(mid);
                    }
                    _ => {}
                }
            }
            api.apply()
        }));
        match res {
            Err(_) => self.fail(key),
            Ok(None) => {
                // Nothing needed an offer after all (str0m applied the changes locally).
                self.touch(key);
                self.finish_negotiation(key, true);
            }
            Ok(Some((offer, pending))) => {
                let id = self.next_offer_id;
                self.next_offer_id += 1;
                let s = self.sessions.get_mut(&key).expect("checked above");
                s.pending = Some(PendingOffer { offer: pending, id });
                let (room, sid) = (s.room.clone(), s.id.clone());
                self.touch(key);
                self.emit(
                    &room,
                    Some(&sid),
                    EventKind::NegotiationNeeded {
                        offer_id: id,
                        sdp: offer.to_sdp_string(),
                    },
                );
            }
        }
    }

    /// Settles the TrackOuts of an offer that was answered (`accepted`) or dropped.
    fn finish_negotiation(&mut self, key: SessionKey, accepted: bool) {
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        let mut opened = Vec::new();
        let mut gone = Vec::new();
        for (tk, o) in s.tracks_out.iter_mut() {
            match (o.state, accepted) {
                (OutState::Negotiating(mid), true) => {
                    if o.wanted {
                        o.state = OutState::Open(mid);
                        s.out_by_mid.insert(mid, *tk);
                        opened.push((*tk, mid, o.kind));
                    } else {
                        o.state = OutState::ToStop(mid);
                    }
                }
                (OutState::Negotiating(_), false) => {
                    if o.wanted {
                        o.state = OutState::ToOpen;
                    } else {
                        gone.push(*tk);
                    }
                }
                (OutState::Stopping(mid), true) => {
                    s.out_by_mid.remove(&mid);
                    gone.push(*tk);
                }
                (OutState::Stopping(mid), false) => o.state = OutState::ToStop(mid),
                _ => {}
            }
        }
        for tk in gone {
            s.tracks_out.remove(&tk);
        }
        let rtx = self.config.rtx_cache_packets;
        for (tk, mid, kind) in &opened {
            let mut api = s.rtc.direct_api();
            let Some(tx) = api.stream_tx_by_mid(*mid, None) else {
                continue;
            };
            if *kind == MediaKind::Video {
                tx.set_rtx_cache(rtx, Duration::from_secs(3), Some(0.15));
            }
            let ssrc = tx.ssrc();
            if let Some(o) = s.tracks_out.get_mut(tk) {
                o.ssrc = Some(ssrc);
            }
        }
        let connected = s.rtc.is_connected();
        if connected {
            for (tk, _, kind) in opened {
                if kind == MediaKind::Video {
                    self.kick(key, tk);
                }
            }
        }
    }

    /// A subscriber starts (or restarts) receiving a track: choose its layer now and ask the
    /// publisher for a key frame of it, so the first frame it gets is a key frame soon.
    fn kick(&mut self, sub: SessionKey, tk: TrackKey) {
        self.choose_layer(sub, tk, true);
        let target = self
            .sessions
            .get(&sub)
            .and_then(|s| s.tracks_out.get(&tk))
            .and_then(|o| o.fwd.target);
        if let Some(layer) = target {
            self.request_keyframe_layer(tk, layer, KeyframeRequestKind::Pli, true);
        }
        self.report_wanted_layers(tk);
        self.report_layer(sub, tk);
    }

    fn request_keyframe_layer(
        &mut self,
        tk: TrackKey,
        layer: forward::Layer,
        kind: KeyframeRequestKind,
        force: bool,
    ) {
        let now = self.now;
        let min = self.config.keyframe_min_interval;
        let Some(t) = self.tracks.get_mut(&tk) else {
            return;
        };
        if t.kind != MediaKind::Video {
            return;
        }
        let last = t.last_keyframe_request.get(&layer).copied();
        if last.is_some_and(|l| now < l + min)
            && !(force && last.is_some_and(|l| now >= l + min / 4))
        {
            return;
        }
        t.last_keyframe_request.insert(layer, now);
        let (publisher, mid) = (t.publisher, t.mid);
        let Some(p) = self.sessions.get_mut(&publisher) else {
            return;
        };
        let res = catch_unwind(AssertUnwindSafe(|| {
            check_fault(p);
            if let Some(rx) = p.rtc.direct_api().stream_rx_by_mid(mid, layer) {
                rx.request_keyframe(kind);
                true
            } else {
                false
            }
        }));
        match res {
            Err(_) => self.fail(publisher),
            Ok(sent) => {
                if sent {
                    self.counters.keyframe_requests += 1;
                }
                self.touch(publisher);
            }
        }
    }

    /// Updates a TrackIn's per-layer statistics with one packet; re-ranks the layers when a new
    /// layer appears or a measurement window closes.
    fn account_layer(&mut self, tk: TrackKey, layer: forward::Layer, bytes: usize) {
        let now = self.now;
        let Some(t) = self.tracks.get_mut(&tk) else {
            return;
        };
        let start = *t.window_start.get_or_insert(now);
        let mut rerank = false;
        match t.layers.iter_mut().find(|l| l.layer == layer) {
            Some(l) => {
                l.bytes += bytes as u64;
                l.packets += 1;
                rerank |= now.saturating_duration_since(l.last_seen) > LAYER_ACTIVE;
                l.last_seen = now;
            }
            None => {
                t.layers.push(LayerStat {
                    layer,
                    bytes: bytes as u64,
                    packets: 1,
                    rate_bps: 0,
                    last_seen: now,
                });
                rerank = true;
            }
        }
        let window = now.saturating_duration_since(start);
        if window >= RATE_WINDOW {
            for l in &mut t.layers {
                let wire = l.bytes + l.packets * PACKET_OVERHEAD;
                l.rate_bps = wire * 8 * 1000 / window.as_millis().max(1) as u64;
                l.bytes = 0;
                l.packets = 0;
            }
            t.window_start = Some(now);
            rerank = true;
        }
        if rerank {
            let mut active: Vec<&LayerStat> = t
                .layers
                .iter()
                .filter(|l| now.saturating_duration_since(l.last_seen) <= LAYER_ACTIVE)
                .collect();
            // Quality order is the publisher's declared order (see `layer_rank`); measured
            // rates are too noisy for it when the publisher is bandwidth- or CPU-limited.
            let order = &t.info.rids;
            active.sort_by_key(|l| layer_rank(order, l.layer));
            let ranked: Vec<forward::Layer> = active.iter().map(|l| l.layer).collect();
            if ranked != t.ranked {
                tracing::debug!(
                    track = %t.info.id,
                    layers = ?t.layers.iter().map(|l| (l.layer.map(|r| r.to_string()), l.rate_bps)).collect::<Vec<_>>(),
                    "layer ranking changed"
                );
                t.ranked = ranked;
                t.version += 1;
            }
        }
    }

    /// Folds one audio level (dBov, 0 loudest, -127 silence) into a track's smoothed loudness, and lets its
    /// Room re-decide the active speaker when the interval has passed.
    fn account_loudness(&mut self, tk: TrackKey, level: i8) {
        let now = self.now;
        let w = self.config.speaker_smoothing.clamp(0.01, 1.0);
        let Some(t) = self.tracks.get_mut(&tk) else {
            return;
        };
        // str0m gives the level as a negative dBov value: 0 is the loudest, -127 silence.
        let loud = 127.0 + f32::from(level.clamp(-127, 0));
        t.loudness = t.loudness * (1.0 - w) + loud * w;
        t.loudness_at = Some(now);
        let due = self.rooms.get(&t.room).is_some_and(|r| {
            r.speaker_decided
                .is_none_or(|d| now.saturating_duration_since(d) >= self.config.speaker_interval)
        });
        if due {
            // Only when a decision is due (every speaker interval), not per audio packet.
            let room_id = t.room.clone();
            self.decide_speaker(&room_id);
        }
    }

    fn decide_speaker(&mut self, room_id: &RoomId) {
        let now = self.now;
        let Some(room) = self.rooms.get(room_id) else {
            return;
        };
        let min = f32::from(self.config.speaker_min_loudness);
        // A track that stopped sending levels (muted, gone) does not count.
        let stale = self.config.speaker_interval * 3;
        let best = room
            .tracks
            .iter()
            .filter_map(|k| self.tracks.get(k))
            .filter(|t| t.kind == MediaKind::Audio)
            .filter(|t| {
                t.loudness_at
                    .is_some_and(|at| now.saturating_duration_since(at) <= stale)
            })
            .filter(|t| t.loudness > min)
            .max_by(|a, b| a.loudness.total_cmp(&b.loudness))
            .map(|t| (t.publisher, t.loudness));
        let room = self.rooms.get_mut(room_id).expect("checked above");
        room.speaker_decided = Some(now);
        let speaker = best.map(|(k, _)| k);
        if speaker == room.speaker {
            return;
        }
        room.speaker = speaker;
        let (sid, participant) = match speaker.and_then(|k| self.sessions.get(&k)) {
            Some(s) => (Some(s.id.clone()), Some(s.participant.clone())),
            None => (None, None),
        };
        let level = best.map_or(0, |(_, l)| l.round().clamp(0.0, 127.0) as u8);
        self.emit(
            room_id,
            sid.as_ref(),
            EventKind::ActiveSpeakerChanged {
                speaker: sid.clone(),
                participant,
                level,
            },
        );
    }

    /// Re-chooses a TrackOut's target layer from its preference and the TrackIn's ranking.
    /// Returns the new target when it changed.
    fn choose_layer(
        &mut self,
        sub: SessionKey,
        tk: TrackKey,
        force: bool,
    ) -> Option<forward::Layer> {
        let t = self.tracks.get(&tk)?;
        let s = self.sessions.get_mut(&sub)?;
        let o = s.tracks_out.get_mut(&tk)?;
        if !force && o.fwd.seen_version == t.version {
            return None;
        }
        o.fwd.seen_version = t.version;
        if t.ranked.is_empty() {
            return None;
        }
        let top = t.ranked.len() - 1;
        let pref = o.fwd.max_layer.map_or(top, |m| usize::from(m).min(top));
        let idx = o.cap.cap.map_or(pref, |c| c.min(pref));
        let target = t.ranked[idx];
        // The declared layer the preference asks for, to tell "the publisher does not send it".
        let declared_top = t.info.rids.len().saturating_sub(1);
        let wanted = o
            .fwd
            .max_layer
            .map_or(declared_top, |m| usize::from(m).min(declared_top));
        o.reason = if idx < pref {
            LayerReason::Bandwidth
        } else if layer_rank(&t.info.rids, target) < wanted {
            LayerReason::PublisherLayerInactive
        } else {
            LayerReason::Preference
        };
        if o.fwd.target == Some(target) {
            return None;
        }
        o.fwd.target = Some(target);
        Some(target)
    }

    /// Reports which simulcast layers of a track any subscriber needs, when that changes.
    fn report_wanted_layers(&mut self, tk: TrackKey) {
        let Some(t) = self.tracks.get(&tk) else {
            return;
        };
        if t.layers.iter().all(|l| l.layer.is_none()) {
            return;
        }
        let mut wanted: Vec<String> = t
            .subscribers
            .iter()
            .filter_map(|k| self.sessions.get(k)?.tracks_out.get(&tk))
            .filter(|o| !o.fwd.paused)
            .flat_map(|o| [o.fwd.current.flatten(), o.fwd.target.flatten()])
            .flatten()
            .map(|r| r.to_string())
            .collect();
        wanted.sort();
        wanted.dedup();
        if t.wanted_reported.as_ref() == Some(&wanted) {
            return;
        }
        let (room, publisher, track) = (t.room.clone(), t.info.session.clone(), t.info.id.clone());
        let t = self.tracks.get_mut(&tk).expect("checked above");
        t.wanted_reported = Some(wanted.clone());
        self.emit(
            &room,
            Some(&publisher),
            EventKind::TrackLayersWanted {
                track,
                rids: wanted,
            },
        );
    }

    /// Tells the backend which layer a subscriber receives of a simulcast Track, which it
    /// chose, and why, when any of the three changed.
    fn report_layer(&mut self, sub: SessionKey, tk: TrackKey) {
        let Some(t) = self.tracks.get(&tk) else {
            return;
        };
        if t.info.rids.is_empty() {
            return;
        }
        let muted = t.muted;
        let track = t.info.id.clone();
        let Some(s) = self.sessions.get_mut(&sub) else {
            return;
        };
        let estimate_bps = s.estimate;
        let Some(o) = s.tracks_out.get_mut(&tk) else {
            return;
        };
        if !o.wanted {
            return;
        }
        let paused = o.fwd.paused || muted;
        let state = if paused {
            (None, None, LayerReason::Paused)
        } else {
            (o.fwd.current, o.fwd.target, o.reason)
        };
        if (!paused && state.1.is_none()) || o.reported == Some(state) {
            return;
        }
        let name = |l: Option<forward::Layer>| l.flatten().map(|r| r.to_string());
        let previous = name(o.reported.and_then(|r| r.0));
        o.reported = Some(state);
        let (layer, target, reason) = state;
        let kind = EventKind::SubscriptionLayerChanged {
            track,
            layer: name(layer),
            previous,
            target: name(target),
            reason,
            keyframe_wait: !paused && target != layer,
            estimate_bps,
        };
        let (room, id) = (s.room.clone(), s.id.clone());
        self.emit(&room, Some(&id), kind);
    }

    /// Shares a subscriber's downlink estimate among the Tracks it receives (audio first, then
    /// video fairly, one layer at a time; see `alloc`), moves the bandwidth caps with hysteresis,
    /// and tells str0m's BWE what to probe for: `desired` is what the preferences would use,
    /// `minimum` what the current layers plus the next step up use, so padding lets the
    /// estimate grow toward the next layer before it is switched on.
    fn allocate(&mut self, key: SessionKey) {
        let now = self.now;
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        s.alloc_at = None;
        let Some(estimate) = s.estimate.filter(|_| self.config.bwe.enabled) else {
            return;
        };
        s.alloc_at = Some(now + ALLOC_INTERVAL);
        let s = &self.sessions[&key];
        let mut keys = Vec::new();
        let mut demands = Vec::new();
        for (tk, o) in &s.tracks_out {
            if !o.wanted || o.fwd.paused || !matches!(o.state, OutState::Open(_)) {
                continue;
            }
            let Some(t) = self.tracks.get(tk).filter(|t| !t.muted) else {
                continue;
            };
            if t.ranked.is_empty() {
                continue;
            }
            let rate = |l: &forward::Layer| {
                t.layers
                    .iter()
                    .find(|x| x.layer == *l)
                    .map_or(0, |x| x.rate_bps)
            };
            let top = t.ranked.len() - 1;
            let audio = t.kind == MediaKind::Audio;
            let pref = if audio {
                top
            } else {
                o.fwd.max_layer.map_or(top, |m| usize::from(m).min(top))
            };
            let needs: Vec<u64> = t.ranked[..=pref].iter().map(rate).collect();
            let current = o.cap.cap.map_or(pref, |c| c.min(pref));
            demands.push(alloc::Demand {
                audio,
                needs,
                current,
            });
            keys.push((*tk, pref));
        }
        let headroom = self.config.bwe.up_headroom;
        let allocs = alloc::allocate(estimate, &demands, headroom);
        let up = |n: u64| (n as f64 * (1.0 + f64::from(headroom.max(0.0)))) as u64;
        let mut desired = 0;
        let mut minimum = 0;
        let mut step = 0;
        for (d, a) in demands.iter().zip(&allocs) {
            let last = d.needs.last().copied().unwrap_or(0);
            desired += if d.audio { last } else { up(last) };
            let at = a.unwrap_or(d.needs.len().saturating_sub(1));
            let used = d.needs.get(at).copied().unwrap_or(0);
            minimum += used;
            if step == 0
                && let Some(&next) = d.needs.get(at + 1)
            {
                step = up(next).saturating_sub(used);
            }
        }
        minimum += step;
        let cfg = &self.config.bwe;
        let s = self.sessions.get_mut(&key).expect("checked above");
        let mut changed = Vec::new();
        for ((tk, pref), a) in keys.iter().zip(&allocs) {
            let (Some(a), Some(o)) = (a, s.tracks_out.get_mut(tk)) else {
                continue;
            };
            if o.cap.update(now, *a, *pref, cfg) {
                changed.push(*tk);
            }
        }
        let far = |a: u64, b: u64| a.abs_diff(b) * 20 > b.max(1);
        if desired > 0 && (far(minimum, s.bwe_set.0) || far(desired, s.bwe_set.1)) {
            s.bwe_set = (minimum, desired);
            let res = catch_unwind(AssertUnwindSafe(|| {
                check_fault(s);
                s.rtc
                    .bwe()
                    .set_bitrate(Bitrate::bps(minimum), Bitrate::bps(desired));
            }));
            if res.is_err() {
                return self.fail(key);
            }
            self.touch(key);
        }
        for tk in changed {
            tracing::debug!(estimate, "bandwidth moved a layer cap");
            self.kick(key, tk);
        }
        self.update_timer(key);
    }

    fn forward_rtp(&mut self, key: SessionKey, p: RtpPacket) {
        let s = self.sessions.get_mut(&key).expect("caller checked");
        let ssrc = p.header.ssrc;
        let (mid, rid) = match s.ssrcs.get(&ssrc) {
            Some(v) => *v,
            None => {
                let mut api = s.rtc.direct_api();
                let Some(v) = api.stream_rx(&ssrc).map(|rx| (rx.mid(), rx.rid())) else {
                    self.counters.rtp_dropped += 1;
                    return;
                };
                s.ssrcs.insert(ssrc, v);
                v
            }
        };
        let Some(&tk) = s.tracks_in.get(&mid) else {
            self.counters.rtp_dropped += 1;
            return;
        };
        let in_pt = p.header.payload_type;
        let Some(t) = self.tracks.get_mut(&tk) else {
            self.counters.rtp_dropped += 1;
            return;
        };
        let found = match t.pt_codec.iter().find(|(pt, _)| *pt == in_pt) {
            Some((_, v)) => *v,
            None => {
                // Opus RED (RFC 2198) arrives with the RED payload type of its primary codec.
                let cc = s.rtc.codec_config();
                let v = match cc.find(|c| c.pt() == in_pt) {
                    Some(c) => Some((*c, false)),
                    None => cc.find(|c| c.red() == Some(in_pt)).map(|c| (*c, true)),
                };
                t.pt_codec.push((in_pt, v));
                v
            }
        };
        let Some((params, red_in)) = found else {
            self.counters.rtp_dropped += 1;
            return;
        };
        let spec = params.spec();
        let t = &self.tracks[&tk];
        if t.muted {
            return;
        }
        let is_video = t.kind == MediaKind::Video;
        // Audio frames are independent; padding-only packets never start anything.
        let keyframe =
            !is_video || (!p.payload.is_empty() && forward::is_keyframe(spec.codec, &p.payload));
        let clock_rate = spec.clock_rate.get();
        self.account_layer(tk, rid, p.payload.len());
        if !is_video && let Some(level) = p.header.ext_vals.audio_level {
            self.account_loudness(tk, level);
        }
        let ext = ExtensionValues {
            audio_level: p.header.ext_vals.audio_level,
            voice_activity: p.header.ext_vals.voice_activity,
            video_orientation: p.header.ext_vals.video_orientation,
            ..Default::default()
        };
        // A reused buffer: no allocation per forwarded packet.
        let mut subs = std::mem::take(&mut self.scratch_subs);
        subs.clear();
        subs.extend(self.tracks[&tk].subscribers.iter().copied());
        let in_seq = *p.seq_no;
        let mut targets_changed = false;
        let mut primary: Option<std::sync::Arc<[u8]>> = None;
        for &sub in &subs {
            // Layer choice and key-frame requests only for TrackOuts that can receive: a key
            // frame requested before the m-line is negotiated would be wasted.
            let ready = self.sessions.get(&sub).is_some_and(|s| {
                s.rtc.is_connected()
                    && s.tracks_out
                        .get(&tk)
                        .is_some_and(|o| matches!(o.state, OutState::Open(_)) && !o.fwd.paused)
            });
            if !ready {
                continue;
            }
            let changed = self.choose_layer(sub, tk, false).is_some();
            targets_changed |= changed;
            if changed {
                self.report_layer(sub, tk);
            }
            let (current, target) = {
                let o = &self.sessions[&sub].tracks_out[&tk];
                (o.fwd.current, o.fwd.target)
            };
            if let Some(target) = target
                && current != Some(target)
            {
                // Waiting for a key frame of the target layer: ask now if the target just
                // changed, else again once the throttle allows (a request can be lost).
                self.request_keyframe_layer(tk, target, KeyframeRequestKind::Pli, changed);
            }
            let now = self.now;
            let Some(s) = self.sessions.get_mut(&sub) else {
                continue;
            };
            if !s.rtc.is_connected() {
                continue;
            }
            let Some(o) = s.tracks_out.get_mut(&tk) else {
                continue;
            };
            let (OutState::Open(_), Some(out_ssrc)) = (o.state, o.ssrc) else {
                continue;
            };
            let was = o.fwd.current;
            let Some(rw) =
                o.fwd
                    .on_packet(now, rid, in_seq, p.header.timestamp, keyframe, clock_rate)
            else {
                continue;
            };
            if was != o.fwd.current {
                targets_changed = true;
                self.report_layer(sub, tk);
            }
            let Some(s) = self.sessions.get_mut(&sub) else {
                continue;
            };
            let Some(o) = s.tracks_out.get_mut(&tk) else {
                continue;
            };
            let out_pt = match o.pt_map.iter().find(|(i, _)| *i == in_pt) {
                Some((_, out)) => *out,
                None => {
                    let out = s.rtc.codec_config().match_params(params).map(|c| {
                        match (red_in, c.red()) {
                            (false, _) => (c.pt(), false),
                            // Both sides negotiated RED: pass it through.
                            (true, Some(red)) => (red, false),
                            (true, None) => (c.pt(), true),
                        }
                    });
                    o.pt_map.push((in_pt, out));
                    out
                }
            };
            let Some((out_pt, strip_red)) = out_pt else {
                self.counters.rtp_dropped += 1;
                continue;
            };
            let payload = if strip_red {
                // The primary encoding, cut out once per packet for every subscriber without RED.
                if primary.is_none()
                    && let Some(r) = forward::red_primary(&p.payload)
                {
                    primary = Some(p.payload[r].into());
                }
                match &primary {
                    Some(b) => b.clone(),
                    None => {
                        self.counters.rtp_dropped += 1;
                        continue;
                    }
                }
            } else {
                p.payload.clone()
            };
            let w = RtpWrite::new(out_pt, rw.seq.into(), rw.ts, p.timestamp, payload)
                .marker(p.header.marker)
                .ext_vals(ext.clone())
                .nackable(is_video);
            let res = catch_unwind(AssertUnwindSafe(|| {
                check_fault(s);
                match s.rtc.direct_api().stream_tx(&out_ssrc) {
                    Some(tx) => {
                        tx.write_rtp(w);
                        true
                    }
                    None => false,
                }
            }));
            match res {
                Err(_) => self.fail(sub),
                Ok(true) => {
                    self.counters.rtp_forwarded += 1;
                    self.touch(sub);
                }
                Ok(false) => self.counters.rtp_dropped += 1,
            }
        }
        self.scratch_subs = subs;
        if targets_changed {
            self.report_wanted_layers(tk);
        }
    }
}

// === impl Sfu: teardown ===

impl Sfu {
    /// Closes a Room and every Session in it. Returns the number of Sessions closed.
    fn close_room(&mut self, id: &RoomId, reason: RoomCloseReason) -> u32 {
        let Some(room) = self.rooms.get_mut(id) else {
            return 0;
        };
        room.closing = true;
        let sessions: Vec<SessionKey> = room.sessions.iter().copied().collect();
        let session_reason = match reason {
            RoomCloseReason::GatewayShutdown => SessionCloseReason::GatewayShutdown,
            _ => SessionCloseReason::RoomDeleted,
        };
        let n = sessions.len() as u32;
        for k in sessions {
            self.close(k, session_reason, true);
        }
        // Every session was removed above, and with them every track of the room.
        let room = self.rooms.remove(id).expect("checked above");
        debug_assert!(room.tracks.is_empty());
        self.room_keys.remove(&room.key);
        if let Some(d) = room.empty_deadline {
            self.timers.remove(&(d, TimerKey::Room(room.key)));
        }
        self.emit(id, None, EventKind::RoomClosed(reason));
        n
    }

    /// Removes a Session and everything that points at it. `graceful` sends the Peer a DTLS close;
    /// after a fault the `Rtc` is not touched again.
    fn close(&mut self, key: SessionKey, reason: SessionCloseReason, graceful: bool) {
        let Some(s) = self.sessions.get(&key) else {
            return;
        };
        let tracks_in: Vec<TrackKey> = s.tracks_in.values().copied().collect();
        for tk in tracks_in {
            self.unpublish(tk);
        }
        let mut s = self.sessions.remove(&key).expect("checked above");
        for tk in s.tracks_out.keys() {
            if let Some(t) = self.tracks.get_mut(tk) {
                t.subscribers.remove(&key);
            }
        }
        if graceful {
            let transmits = &mut self.transmits;
            let _ = catch_unwind(AssertUnwindSafe(|| {
                check_fault(&s);
                let _ = s.rtc.close();
                // Bounded: a closed Rtc only flushes what it has queued.
                for _ in 0..64 {
                    match s.rtc.poll_output() {
                        Ok(RtcOutput::Transmit(t)) => transmits.push_back(Transmit {
                            transport: transport_of(t.proto),
                            source: t.source,
                            destination: t.destination,
                            contents: t.contents.into(),
                        }),
                        Ok(RtcOutput::Event(_)) => {}
                        Ok(RtcOutput::Timeout(_)) | Err(_) => break,
                    }
                }
            }));
        }
        self.demux.remove(&s.ufrag, &s.addrs, key);
        if let Some(t) = s.timer {
            self.timers.remove(&(t, TimerKey::Session(key)));
        }
        self.session_keys.remove(&s.id);
        if s.dirty {
            self.dirty.retain(|k| *k != key);
        }
        let mut left = false;
        if let Some(room) = self.rooms.get_mut(&s.room) {
            room.sessions.remove(&key);
            if room.speaker == Some(key) {
                // Decided again with the next audio level; nobody speaks meanwhile.
                room.speaker = None;
                room.speaker_decided = None;
            }
            if let Some(n) = room.participants.get_mut(&s.participant) {
                *n -= 1;
                if *n == 0 {
                    room.participants.remove(&s.participant);
                    left = true;
                }
            }
            if room.sessions.is_empty() && !room.closing {
                let d = self.now + room.empty_timeout;
                room.empty_deadline = Some(d);
                self.timers.insert((d, TimerKey::Room(room.key)));
            }
        }
        self.emit(
            &s.room,
            Some(&s.id),
            EventKind::SessionClosed {
                reason,
                participant: s.participant.clone(),
            },
        );
        if left {
            self.emit(
                &s.room,
                Some(&s.id),
                EventKind::ParticipantLeft(s.participant),
            );
        }
    }
}

/// A Session stops receiving a Track: forwarding stops at once; an m-line that was negotiated
/// is stopped by the next gateway offer, one that was not is dropped.
fn release_track_out(s: &mut Session, tk: TrackKey) {
    let Some(o) = s.tracks_out.get_mut(&tk) else {
        return;
    };
    o.wanted = false;
    o.fwd.paused = true;
    match o.state {
        OutState::ToOpen => {
            s.tracks_out.remove(&tk);
        }
        OutState::Open(mid) => o.state = OutState::ToStop(mid),
        OutState::Negotiating(_) | OutState::ToStop(_) | OutState::Stopping(_) => {}
    }
}

fn check_metadata(field: &'static str, m: &str) -> Result<(), CoreError> {
    if m.len() > MAX_METADATA_BYTES {
        return Err(CoreError::InvalidArgument {
            field,
            reason: format!("must be at most {MAX_METADATA_BYTES} bytes"),
        });
    }
    Ok(())
}

/// The fault-injection hook: a Session marked faulty panics where a bug would.
fn check_fault(s: &Session) {
    if s.fault {
        panic!("injected fault in session {}", s.id);
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

/// The SDP without the Peer's TCP candidates. The core is ICE-lite and only passive on TCP: it
/// never connects to a Peer, so its TCP pairs are always learned from the first STUN request on a
/// connection the Peer opened (a peer-reflexive candidate). A TCP candidate from the SDP (an active
/// one has port 9) would only make a pair that never sees a request, which str0m's ICE-lite agent
/// keeps "still possible" forever, so a Session whose connection closed would never become
/// Disconnected.
fn without_tcp_candidates(sdp: &str) -> std::borrow::Cow<'_, str> {
    let is_tcp_candidate = |line: &str| {
        line.strip_prefix("a=candidate:").is_some_and(|rest| {
            rest.split_whitespace()
                .nth(2)
                .is_some_and(|t| !t.eq_ignore_ascii_case("udp"))
        })
    };
    if !sdp.lines().any(is_tcp_candidate) {
        return sdp.into();
    }
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.split_inclusive('\n') {
        if !is_tcp_candidate(line.trim_end()) {
            out.push_str(line);
        }
    }
    out.into()
}
