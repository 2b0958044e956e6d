//! Plain data the core hands out: specs a backend gives ([`RoomSpec`], [`SessionSpec`]), snapshots it
//! reads back ([`RoomInfo`], [`SessionInfo`], [`TrackInfo`]) and the events it emits ([`SfuEvent`]).
//!
//! These are domain types, not wire types: the API layer converts them to and from protobuf.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use crate::error::CoreError;
use crate::ids::{ParticipantId, RoomId, SessionId, TrackId};

/// What a backend asks for when creating a Room. `None` means "the configured default".
#[derive(Debug, Clone)]
pub struct RoomSpec {
    /// Caller-chosen id; `None` generates one.
    pub id: Option<RoomId>,
    /// Most Sessions at once.
    pub max_sessions: Option<u32>,
    /// How long the Room may stay empty before it closes.
    pub empty_timeout: Option<Duration>,
    /// Opaque backend data.
    pub metadata: String,
    /// Wall-clock creation time, supplied by the caller (the core reads no clock).
    pub created_at: SystemTime,
    /// Data-channel labels whose messages are also sent to the backend as events (`*` = all).
    pub backend_data_labels: Vec<String>,
}

/// A Room as reported to backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomInfo {
    /// The Room's id.
    pub id: RoomId,
    /// Most Sessions at once (default filled in).
    pub max_sessions: u32,
    /// Empty timeout (default filled in).
    pub empty_timeout: Duration,
    /// Opaque backend data.
    pub metadata: String,
    /// Sessions in the Room now.
    pub session_count: u32,
    /// When it was created.
    pub created_at: SystemTime,
    /// Labels whose messages go to the backend.
    pub backend_data_labels: Vec<String>,
}

/// What a Session may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permissions {
    /// May publish media.
    pub publish: bool,
    /// Receives other Participants' media.
    pub subscribe: bool,
    /// May send data-channel messages.
    pub data: bool,
}

impl Default for Permissions {
    fn default() -> Self {
        Self {
            publish: true,
            subscribe: true,
            data: true,
        }
    }
}

/// What a backend asks for when creating a Session.
#[derive(Debug, Clone)]
pub struct SessionSpec {
    /// The Room to join.
    pub room: RoomId,
    /// The owning Participant.
    pub participant: ParticipantId,
    /// Opaque backend data.
    pub metadata: String,
    /// What the Session may do.
    pub permissions: Permissions,
    /// Wall-clock creation time, supplied by the caller.
    pub created_at: SystemTime,
    /// Receive every other Participant's Tracks automatically (true), or only those the backend
    /// subscribes it to (false).
    pub auto_subscribe: bool,
}

/// A subscriber's preference for one Track.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrackPreference {
    /// Highest simulcast layer to receive, 0 being the lowest; `None` for the highest available.
    pub max_layer: Option<u8>,
    /// Stop forwarding this Track to the Session (the m-line stays).
    pub paused: bool,
}

impl TrackPreference {
    /// The preference from the API's fields, whose `max_layer` is wider than a layer index:
    /// more than 255 is refused (field `max_layer`).
    pub fn new(max_layer: Option<u32>, paused: bool) -> Result<Self, CoreError> {
        let max_layer = match max_layer {
            None => None,
            Some(n) => Some(u8::try_from(n).map_err(|_| CoreError::InvalidArgument {
                field: "max_layer",
                reason: "must be at most 255".into(),
            })?),
        };
        Ok(Self { max_layer, paused })
    }
}

/// Connection state of a Session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// No offer applied yet.
    New,
    /// Negotiated; ICE/DTLS not complete.
    Connecting,
    /// Media and data flow.
    Connected,
    /// Lost connectivity; closes after the grace period unless it recovers.
    Disconnected,
}

/// A Session as reported to backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The Session's id.
    pub id: SessionId,
    /// Its Room.
    pub room: RoomId,
    /// Its Participant.
    pub participant: ParticipantId,
    /// Opaque backend data.
    pub metadata: String,
    /// Permissions.
    pub permissions: Permissions,
    /// Connection state.
    pub state: SessionState,
    /// Tracks it publishes now.
    pub published: Vec<TrackId>,
    /// When it was created.
    pub created_at: SystemTime,
}

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackKind {
    /// Audio.
    Audio,
    /// Video.
    Video,
}

/// A published Track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackInfo {
    /// The Track's id.
    pub id: TrackId,
    /// The publishing Session.
    pub session: SessionId,
    /// The publishing Participant.
    pub participant: ParticipantId,
    /// Audio or video.
    pub kind: TrackKind,
    /// The m-line mid in the publisher's SDP.
    pub mid: String,
    /// Simulcast rids the publisher sends (empty without simulcast).
    pub rids: Vec<String>,
}

/// Why a Session closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionCloseReason {
    /// The backend closed it.
    BackendRequest,
    /// Its Room was deleted.
    RoomDeleted,
    /// The Peer closed the connection.
    PeerClosed,
    /// Disconnected longer than the grace period.
    DisconnectTimeout,
    /// Never connected within the connect timeout.
    ConnectTimeout,
    /// The gateway is shutting down.
    GatewayShutdown,
    /// A bug while handling this Session; only it was affected.
    InternalError,
    /// The Peer broke the protocol (for example a failed DTLS handshake).
    PeerError,
    /// The backend removed the Participant from the Room.
    Removed,
}

/// How a data channel delivers (what the Peer chose when it opened it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChannelSpec {
    /// Messages arrive in the order they were sent.
    pub ordered: bool,
    /// Whether lost messages are retransmitted, and how far.
    pub reliability: ChannelReliability,
}

/// Partial reliability of a data channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChannelReliability {
    /// Retransmitted until delivered.
    Reliable,
    /// Retransmitted at most this many times.
    MaxRetransmits(u16),
    /// Retransmitted for at most this many milliseconds.
    MaxPacketLifetime(u16),
}

/// Why the gateway closed a Peer's data channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelCloseReason {
    /// The receiver did not take messages fast enough: its send buffer filled on a reliable
    /// channel (the channel is closed instead of buffering without bound).
    SlowReceiver,
    /// The channel's configuration differs from the one this label has in the Room.
    ConfigMismatch,
}

/// What a backend's message reached.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendReport {
    /// Sessions the message was queued to.
    pub delivered: u32,
    /// Sessions that have no open channel with that label (or, for a reliable send, only an
    /// unreliable one).
    pub no_channel: Vec<SessionId>,
    /// Sessions whose send buffer was full: dropped (unreliable) or their channel was closed as a
    /// slow receiver (reliable).
    pub undelivered: Vec<SessionId>,
}

/// Why a Room closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomCloseReason {
    /// The backend deleted it.
    BackendRequest,
    /// Empty longer than its timeout.
    EmptyTimeout,
    /// The gateway is shutting down.
    GatewayShutdown,
    /// A bug in the Worker's core (outside any one Session): the Worker's supervisor closed
    /// everything the core held and restarted it.
    InternalError,
}

/// What happened, for the backend's event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// A Room was created.
    RoomCreated,
    /// A Room closed (after all its Sessions).
    RoomClosed(RoomCloseReason),
    /// A Participant's first Session joined.
    ParticipantJoined(ParticipantId),
    /// A Participant's last Session left.
    ParticipantLeft(ParticipantId),
    /// ICE+DTLS up.
    SessionConnected,
    /// ICE lost; closes after `grace` unless it recovers.
    SessionDisconnected {
        /// The grace period.
        grace: Duration,
    },
    /// The Session closed.
    SessionClosed {
        /// Why.
        reason: SessionCloseReason,
        /// Its Participant.
        participant: ParticipantId,
    },
    /// The gateway needs the backend to relay this offer and return the answer.
    NegotiationNeeded {
        /// Echo in `ApplyAnswer`.
        offer_id: u64,
        /// The SDP offer.
        sdp: String,
    },
    /// A Track was published.
    TrackPublished(TrackInfo),
    /// A Peer sent a message on a label the Room forwards to the backend.
    DataReceived {
        /// The channel label.
        label: String,
        /// Binary (true) or text (false).
        binary: bool,
        /// The message.
        data: Vec<u8>,
    },
    /// The gateway closed one of the Session's data channels.
    ChannelClosed {
        /// The channel label.
        label: String,
        /// Why.
        reason: ChannelCloseReason,
    },
    /// The simulcast layers of a published Track that some subscriber needs changed; the
    /// publisher may stop sending the others.
    TrackLayersWanted {
        /// The Track.
        track: TrackId,
        /// The wanted rids, sorted (empty: no subscriber needs any layer).
        rids: Vec<String>,
    },
    /// The loudest speaker of the Room changed (from the audio-level header extension).
    ActiveSpeakerChanged {
        /// The speaking Session, or `None` when nobody is above the threshold.
        speaker: Option<SessionId>,
        /// Its Participant.
        participant: Option<ParticipantId>,
        /// Smoothed loudness, 0 (silence) to 127 (loudest): 127 plus the level in dBov.
        level: u8,
    },
    /// The backend muted or unmuted a published Track (server side: nothing is forwarded while
    /// muted).
    TrackMuted {
        /// The Track.
        track: TrackId,
        /// Muted now.
        muted: bool,
    },
    /// The simulcast layer a subscriber receives of a Track changed, or the layer chosen for it
    /// (the target, switched to at its next key frame), or the reason. Emitted for simulcast
    /// Tracks only; `SfuEvent::session` is the subscriber.
    SubscriptionLayerChanged {
        /// The Track.
        track: TrackId,
        /// The rid forwarded now; `None` when nothing is (paused, or before the first key frame).
        layer: Option<String>,
        /// The rid forwarded before this change.
        previous: Option<String>,
        /// The rid chosen; differs from `layer` while waiting for its key frame.
        target: Option<String>,
        /// Why `target` was chosen.
        reason: LayerReason,
        /// True while the target is chosen but its key frame has not arrived yet.
        keyframe_wait: bool,
        /// The subscriber's downlink estimate when this was decided (bps), if estimated.
        estimate_bps: Option<u64>,
    },
    /// The Session's connection quality class changed (see [`ConnectionQuality`]).
    ConnectionQualityChanged {
        /// The class now.
        quality: ConnectionQuality,
        /// The class before.
        previous: ConnectionQuality,
        /// The round-trip time measured, if any.
        rtt_ms: Option<u32>,
        /// The loss fraction used, in permille.
        loss_permille: u32,
    },
    /// A Track was unpublished.
    TrackUnpublished {
        /// The Track.
        track: TrackId,
        /// Its publisher.
        publisher: SessionId,
    },
}

/// Why a subscriber receives the simulcast layer it does (see
/// [`EventKind::SubscriptionLayerChanged`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerReason {
    /// The highest layer the subscriber's preference (`max_layer`) allows, and the bandwidth
    /// estimate carries it.
    Preference,
    /// A lower layer than the preference allows, because the subscriber's estimated downlink
    /// cannot carry more.
    Bandwidth,
    /// A lower layer than the preference allows, because the publisher does not send the
    /// preferred layer (no packets of it for a second).
    PublisherLayerInactive,
    /// Nothing: the subscriber paused the Track, or the backend muted it.
    Paused,
}

/// One event emitted by the core. The driver stamps it with a sequence number and a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SfuEvent {
    /// The Room concerned.
    pub room: RoomId,
    /// The Session concerned, for Session-level events.
    pub session: Option<SessionId>,
    /// What happened.
    pub kind: EventKind,
}

/// How a datagram travels between a Peer and the Worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// A UDP datagram on the Worker's socket.
    Udp,
    /// One RFC 4571 frame on a TCP connection the Peer opened to the Worker's TCP listener (ICE-TCP,
    /// RFC 6544). The connection is identified by the Peer's address (its `source`/`destination`).
    Tcp,
}

/// A datagram for the driver to send.
#[derive(Debug)]
pub struct Transmit {
    /// UDP, or a frame on the TCP connection whose remote address is `destination`.
    pub transport: Transport,
    /// Local address to send from (one of the Worker's announced addresses).
    pub source: SocketAddr,
    /// The Peer's address.
    pub destination: SocketAddr,
    /// The bytes.
    pub contents: Vec<u8>,
}

/// A Session's connection statistics (str0m's stats events, every `SfuConfig::stats_interval`;
/// all `None` until the first report).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionStats {
    /// The Session.
    pub session: SessionId,
    /// Round-trip time, milliseconds.
    pub rtt_ms: Option<u32>,
    /// Permille of our packets the Peer reported lost.
    pub egress_loss_permille: Option<u32>,
    /// Permille of the Peer's packets that did not arrive.
    pub ingress_loss_permille: Option<u32>,
    /// The quality class reported last.
    pub quality: ConnectionQuality,
    /// The downlink estimate (bps), when bandwidth estimation runs and has one.
    pub estimate_bps: Option<u64>,
    /// Each published Track: its layers with their measured bitrates.
    pub published: Vec<TrackRates>,
    /// Each received Track: the layer forwarded and that layer's measured bitrate.
    pub received: Vec<TrackRates>,
}

/// A Track's layers and their measured bitrates (bps, with packet overhead).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackRates {
    /// The Track.
    pub track: TrackId,
    /// (rid, bitrate): every layer of a published Track (rid `None` without simulcast), or the
    /// one forwarded of a received Track (empty while nothing is).
    pub layers: Vec<(Option<String>, u64)>,
}

/// A Session's connection quality class, from loss and round-trip time: the worse of the two
/// decides ([`ConnectionQuality::classify`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum ConnectionQuality {
    /// Loss under 2 % and round trip under 150 ms.
    #[default]
    Excellent,
    /// Loss under 5 % and round trip under 300 ms.
    Good,
    /// Loss under 20 % and round trip under 1 s.
    Poor,
    /// Loss of 20 % or more, or a round trip of 1 s or more.
    Lost,
}

impl ConnectionQuality {
    /// The class of a loss fraction (0..=1) and a round-trip time (`None`: not measured, so
    /// only the loss counts).
    pub fn classify(loss: f32, rtt: Option<std::time::Duration>) -> Self {
        let by_loss = match loss {
            l if l < 0.02 => Self::Excellent,
            l if l < 0.05 => Self::Good,
            l if l < 0.20 => Self::Poor,
            _ => Self::Lost,
        };
        let by_rtt = match rtt.map(|r| r.as_millis()) {
            None => Self::Excellent,
            Some(ms) if ms < 150 => Self::Excellent,
            Some(ms) if ms < 300 => Self::Good,
            Some(ms) if ms < 1000 => Self::Poor,
            Some(_) => Self::Lost,
        };
        by_loss.max(by_rtt)
    }
}

/// Counters of things the core dropped or refused, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Datagrams from an unknown address that were not a STUN request for a known Session.
    pub datagrams_unrouted: u64,
    /// Datagrams a Session refused or could not parse.
    pub datagrams_rejected: u64,
    /// RTP packets forwarded to subscribers.
    pub rtp_forwarded: u64,
    /// RTP packets dropped (no payload type match, track not open).
    pub rtp_dropped: u64,
    /// Data-channel messages forwarded.
    pub data_forwarded: u64,
    /// Data-channel messages dropped (no permission, no matching channel, buffer full).
    pub data_dropped: u64,
    /// Data-channel messages dropped for being larger than the limit.
    pub data_oversized: u64,
    /// Reliable channels closed because their receiver was too slow.
    pub data_slow_receivers: u64,
    /// Sessions closed because of an internal fault.
    pub session_panics: u64,
    /// Keyframe requests sent to publishers.
    pub keyframe_requests: u64,
    /// Datagrams (UDP datagrams and TCP frames) handed to the core.
    pub datagrams_in: u64,
    /// Bytes of those datagrams.
    pub bytes_in: u64,
    /// Datagrams the core output for the Peers.
    pub datagrams_out: u64,
    /// Bytes of those datagrams.
    pub bytes_out: u64,
    /// Times a subscriber's TrackOut started or switched to another simulcast layer.
    pub layer_switches: u64,
    /// NACKs received from subscribers (str0m's egress stats; needs `stats_interval`).
    pub nacks_received: u64,
    /// NACKs sent to publishers (str0m's ingress stats).
    pub nacks_sent: u64,
    /// PLIs and FIRs received from subscribers (str0m's egress stats).
    pub plis_received: u64,
    /// PLIs and FIRs sent to publishers (str0m's ingress stats).
    pub plis_sent: u64,
    /// Automatic subscriptions skipped because the subscriber had its maximum of m-lines.
    pub subscriptions_refused: u64,
    /// Remote addresses of a Session evicted (least recently checked) to route a new one.
    pub addrs_evicted: u64,
}
