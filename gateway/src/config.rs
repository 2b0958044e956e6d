//! [`Config`]: every setting of the gateway, loaded in layers and validated once at start-up.
//!
//! Layers, later wins: built-in defaults < a TOML file (`--config PATH`) < environment variables
//! `SWITCHBOARD__SECTION__KEY` (lists comma-separated). Unknown keys and bad values are refused
//! with an error naming the key (loading and the rules: `load`). All limits live here; no other
//! module hard-codes policy. This file holds the sections, their defaults and docs.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::turn::settings::{IceServerConfig, InvalidSetting, TurnConfig};

mod load;
mod workers;

pub use load::ConfigError;

/// The whole configuration. See `switchboard.example.toml` for every key, commented.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The gRPC control API.
    pub grpc: GrpcConfig,
    /// Workers and their UDP sockets.
    pub media: MediaConfig,
    /// Room defaults and limits.
    pub rooms: RoomsConfig,
    /// Session timing.
    pub sessions: SessionsConfig,
    /// Queue sizes.
    pub limits: LimitsConfig,
    /// Data-channel relay limits.
    pub data: DataConfig,
    /// Bandwidth estimation toward subscribers and the simulcast layer choice it drives.
    pub bwe: BweConfig,
    /// ICE servers handed to Peers in `CreateSessionResponse`.
    pub ice_servers: Vec<IceServerConfig>,
    /// The embedded TURN/STUN server.
    pub turn: TurnConfig,
    /// Logging.
    pub log: LogConfig,
    /// Shutdown.
    pub shutdown: ShutdownConfig,
    /// The group-call demo (reference backend + page) started by the binary.
    pub demo: DemoConfig,
    /// The admin listener (Prometheus `/metrics`).
    pub admin: AdminConfig,
    /// Bounds on SDP and ICE candidates from backends.
    pub signaling: SignalingConfig,
    /// Paging of `ListRooms` and `ListSessions`.
    pub listing: ListingConfig,
    /// When a Worker refuses new Rooms and Sessions.
    pub overload: OverloadConfig,
    /// Cluster mode (several gateways sharing one Redis); off by default.
    pub cluster: crate::cluster::ClusterConfig,
}

/// `[admin]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Serve the admin listener (`GET /metrics`, Prometheus text format).
    pub enabled: bool,
    /// Where it listens. Loopback by default: it has no authentication, so open it (e.g.
    /// `0.0.0.0:9464`) only toward a trusted scraper. Port 0 picks a free port.
    pub listen: SocketAddr,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
        }
    }
}

/// `[grpc]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GrpcConfig {
    /// Address of the gRPC listener (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Bearer API key backends must send. Empty is allowed only on a loopback `listen` address;
    /// on any other address it must be at least [`MIN_PUBLIC_API_KEY_LEN`] characters. Never
    /// whitespace or control characters.
    pub api_key: Secret,
    /// Serve gRPC reflection (v1 and v1alpha), which lists the services and their messages.
    pub reflection: bool,
    /// Serve reflection without the API key even when one is set. By default reflection needs
    /// the key whenever `api_key` is set (health never does).
    pub reflection_public: bool,
    /// PEM certificate chain: with `tls_key`, the API is served over TLS (HTTP/2 with ALPN `h2`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) for `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Seconds a client has to finish its TLS handshake before the connection is dropped.
    pub tls_handshake_timeout_secs: u64,
}

/// Shortest `grpc.api_key` accepted on a listener that is not a loopback address.
pub const MIN_PUBLIC_API_KEY_LEN: usize = 16;

impl Default for GrpcConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 50051),
            api_key: Secret::default(),
            reflection: true,
            reflection_public: false,
            tls_cert: None,
            tls_key: None,
            tls_handshake_timeout_secs: 10,
        }
    }
}

/// A secret setting (API key, shared secret, access token): its `Debug` never shows the value,
/// so a logged or printed `Config` does not leak it. Read it through `Deref<Target = str>`.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() {
            "\"\""
        } else {
            "\"<redacted>\""
        })
    }
}

impl std::ops::Deref for Secret {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Self(s.to_string())
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl PartialEq<&str> for Secret {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// `[media]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MediaConfig {
    /// Number of Worker threads; 0 means one per CPU core.
    pub workers: usize,
    /// Address the Workers' UDP sockets bind to.
    pub bind_ip: IpAddr,
    /// Worker `i` binds port `port_base + i`; 0 lets the OS pick free ports (tests).
    pub port_base: u16,
    /// Addresses announced to Peers as host candidates. Empty means `bind_ip` (which must then be
    /// a specific address, not 0.0.0.0 or ::).
    pub announce_ips: Vec<IpAddr>,
    /// SO_RCVBUF and SO_SNDBUF of each Worker socket, in bytes (the kernel may cap it).
    pub socket_buffer_bytes: usize,
    /// ICE over TCP: each Worker also listens on TCP and announces passive TCP host candidates
    /// (RFC 6544, RFC 4571 framing), for Peers whose UDP is blocked.
    pub tcp_enabled: bool,
    /// Worker `i` listens on TCP port `tcp_port_base + i`; 0 lets the OS pick free ports (tests).
    pub tcp_port_base: u16,
    /// Most open TCP connections per Worker; more are closed as soon as they are accepted.
    pub tcp_max_connections: usize,
    /// Most open TCP connections per Worker from one source (an IPv4 address or an IPv6 /64);
    /// more are closed as soon as they are accepted. Raise it when many Peers share one NAT.
    pub tcp_max_connections_per_ip: usize,
    /// Seconds a new TCP connection has to carry a valid STUN check for a live Session (a frame
    /// a Session accepted) before it is closed.
    pub tcp_first_check_timeout_secs: u64,
    /// Seconds a TCP connection may go without a frame a Session accepted (STUN, DTLS, media)
    /// before it is closed. ICE consent checks every few seconds keep a live one open.
    pub tcp_idle_timeout_secs: u64,
    /// Largest RFC 4571 frame accepted, in bytes; a larger length closes the connection.
    pub tcp_max_frame_bytes: usize,
    /// Frames queued toward one TCP connection; when it is full further frames are dropped, as a
    /// congested UDP path would drop them.
    pub tcp_send_queue_frames: usize,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            workers: 0,
            bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port_base: 40000,
            announce_ips: Vec::new(),
            socket_buffer_bytes: 4 << 20,
            tcp_enabled: true,
            tcp_port_base: 40000,
            tcp_max_connections: 1000,
            tcp_max_connections_per_ip: 100,
            tcp_first_check_timeout_secs: 5,
            tcp_idle_timeout_secs: 30,
            tcp_max_frame_bytes: 4096,
            tcp_send_queue_frames: 256,
        }
    }
}

/// `[rooms]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RoomsConfig {
    /// `max_sessions` of a Room whose creator does not set one.
    pub default_max_sessions: u32,
    /// Largest `max_sessions` a backend may ask for.
    pub max_sessions_limit: u32,
    /// Seconds an empty Room lives when its creator does not set `empty_timeout_seconds`.
    pub empty_timeout_secs: u64,
    /// Most Rooms per Worker.
    pub max_rooms_per_worker: usize,
    /// How often (ms) a Room re-decides its active speaker.
    pub active_speaker_interval_ms: u64,
    /// Weight (0 < w <= 1) of each new audio level in the smoothed loudness; lower is smoother.
    pub active_speaker_smoothing: f32,
    /// Audio level (dBov, -127 to 0) a participant must exceed, smoothed, to be the speaker.
    pub active_speaker_threshold_dbov: i8,
}

impl Default for RoomsConfig {
    fn default() -> Self {
        Self {
            default_max_sessions: 100,
            max_sessions_limit: 1000,
            empty_timeout_secs: 300,
            max_rooms_per_worker: 10_000,
            active_speaker_interval_ms: 500,
            active_speaker_smoothing: 0.3,
            active_speaker_threshold_dbov: -70,
        }
    }
}

/// `[sessions]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SessionsConfig {
    /// Seconds a new Session has to connect before it is closed.
    pub connect_timeout_secs: u64,
    /// Seconds a disconnected Session has to recover before it is closed.
    pub disconnect_grace_secs: u64,
    /// Minimum milliseconds between two keyframe requests relayed to one published track.
    pub keyframe_min_interval_ms: u64,
    /// RTP packets kept per outgoing video stream to answer NACKs.
    pub rtx_cache_packets: usize,
    /// Milliseconds a packet stays in that cache: older ones are too late to be worth resending.
    pub rtx_cache_max_age_ms: u64,
    /// Most bytes resent per stream, as a percentage of its bitrate (str0m's RTX ratio cap).
    pub rtx_ratio_percent: u32,
    /// Milliseconds between two statistics reports of a Session (RTT, loss, NACKs, PLIs: the
    /// metrics' NACK/PLI counters); 0 turns them off.
    pub stats_interval_ms: u64,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        Self {
            connect_timeout_secs: 30,
            disconnect_grace_secs: 10,
            keyframe_min_interval_ms: 500,
            rtx_cache_packets: 512,
            rtx_cache_max_age_ms: 3000,
            rtx_ratio_percent: 15,
            stats_interval_ms: 1000,
        }
    }
}

/// `[limits]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Commands queued per Worker before calls fail with RESOURCE_EXHAUSTED.
    pub command_queue: usize,
    /// Events buffered per `WatchEvents` stream before it ends with DATA_LOSS.
    pub event_buffer: usize,
    /// Bytes (encoded events) buffered per `WatchEvents` stream before it ends with DATA_LOSS.
    pub event_stream_bytes: usize,
    /// Recent events kept for `WatchEventsRequest.after_sequence` replay, at most this many...
    pub event_replay_events: usize,
    /// ...and at most this many bytes (approximate in-memory size); older ones are dropped.
    pub event_replay_bytes: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            command_queue: 1024,
            event_buffer: 4096,
            event_stream_bytes: 16 << 20,
            event_replay_events: 10_000,
            event_replay_bytes: 32 << 20,
        }
    }
}

impl LimitsConfig {
    /// The event bus sizes these limits set.
    pub fn event_bus(&self) -> crate::events::EventBusLimits {
        crate::events::EventBusLimits {
            live_events: self.event_buffer,
            replay_events: self.event_replay_events,
            replay_bytes: self.event_replay_bytes,
            stream_bytes: self.event_stream_bytes,
        }
    }
}

/// `[data]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// Largest data-channel message relayed (bytes); larger ones are dropped and counted.
    pub max_message_bytes: usize,
    /// Bytes queued toward one receiving channel before unreliable messages are dropped and a
    /// reliable channel is closed as a slow receiver.
    pub send_buffer_bytes: usize,
    /// Largest Peer message copied into a `DataReceived` event.
    pub backend_max_bytes: usize,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: 64 * 1024,
            send_buffer_bytes: 1024 * 1024,
            backend_max_bytes: 16 * 1024,
        }
    }
}

/// `[bwe]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BweConfig {
    /// Estimate each subscriber's downlink (TWCC, with probing) and cap its simulcast layers to
    /// what fits. Off: layers follow the subscriber's preference only.
    pub enabled: bool,
    /// Estimate (kbit/s) a subscriber starts with, before feedback arrives.
    pub initial_bitrate_kbps: u64,
    /// Before feedback arrives, a subscriber's estimate is raised to what its subscriptions need
    /// (their preferred layers' measured bitrates), up to this many kbit/s (0: never), so a
    /// subscriber joining a group call is not paced below its media while the estimator ramps.
    pub max_initial_bitrate_kbps: u64,
    /// Milliseconds the estimate must stay below the current layer's bitrate before a lower
    /// layer is chosen.
    pub down_hold_ms: u64,
    /// Milliseconds the estimate must carry a higher layer (with headroom) before it is chosen.
    pub up_hold_ms: u64,
    /// Headroom (percent of a higher layer's bitrate) the estimate must have above it to switch up.
    pub up_headroom_percent: u32,
    /// Minimum milliseconds between two bandwidth-driven switches of one subscription.
    pub min_switch_interval_ms: u64,
}

impl Default for BweConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            initial_bitrate_kbps: 1000,
            max_initial_bitrate_kbps: 8000,
            down_hold_ms: 500,
            up_hold_ms: 3000,
            up_headroom_percent: 20,
            min_switch_interval_ms: 2000,
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `plain` or `json`.
    pub format: LogFormat,
    /// A `tracing` env-filter directive, e.g. `info` or `switchboard_gateway=debug`.
    /// `RUST_LOG`, when set, takes precedence. Peer-driven lines of the WebRTC stack
    /// (`sctp_proto`, `str0m`, `dimpl`) show only when the filter enables `debug` for them or
    /// names them (see `telemetry`).
    pub filter: String,
    /// Replace Peer IP addresses in the gateway's own log lines with `<redacted>`.
    pub redact_ips: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Plain,
            filter: "info".into(),
            redact_ips: false,
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Plain,
    /// One JSON object per line.
    Json,
}

/// `[shutdown]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// Seconds to wait for Peers and streams to close before exiting anyway.
    pub grace_secs: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self { grace_secs: 5 }
    }
}

/// `[demo]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DemoConfig {
    /// Start the demo with the `switchboard` binary.
    pub enabled: bool,
    /// Where the demo's HTTP/WebSocket server listens (port 0 picks a free port). It can create
    /// Rooms with the API key, so a non-loopback address needs `access_token`.
    pub listen: SocketAddr,
    /// Token browsers must give (`?token=` on the page and the WebSocket) to use the demo. Empty
    /// is allowed only on a loopback `listen`; otherwise at least [`MIN_PUBLIC_API_KEY_LEN`]
    /// characters.
    pub access_token: Secret,
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080),
            access_token: Secret::default(),
        }
    }
}

/// `[signaling]`: bounds on what a backend relays from a Peer, checked before a Worker parses it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SignalingConfig {
    /// Largest SDP offer or answer, in bytes. Also bounds a gRPC request of the Session service.
    pub max_sdp_bytes: usize,
    /// Most m-lines in one SDP.
    pub max_mlines_per_sdp: usize,
    /// Most m-lines one Session may have. A subscriber gets about two per other Participant (audio
    /// and video), so this must be at least twice `rooms.max_sessions_limit` plus 8 (its own
    /// m-lines) for a full Room.
    pub max_mlines_per_session: usize,
    /// Most distinct `a=candidate` lines in one SDP.
    pub max_candidates_per_sdp: usize,
    /// Most trickled ICE candidates one Session accepts between ICE restarts.
    pub max_remote_candidates: usize,
}

impl Default for SignalingConfig {
    fn default() -> Self {
        let l = switchboard_core::SignalingLimits::default();
        Self {
            max_sdp_bytes: l.max_sdp_bytes,
            max_mlines_per_sdp: l.max_mlines_per_sdp,
            max_mlines_per_session: l.max_mlines_per_session,
            max_candidates_per_sdp: l.max_candidates_per_sdp,
            max_remote_candidates: l.max_remote_candidates,
        }
    }
}

impl SignalingConfig {
    /// The core's view of these limits.
    pub fn limits(&self) -> switchboard_core::SignalingLimits {
        switchboard_core::SignalingLimits {
            max_sdp_bytes: self.max_sdp_bytes,
            max_mlines_per_sdp: self.max_mlines_per_sdp,
            max_mlines_per_session: self.max_mlines_per_session,
            max_candidates_per_sdp: self.max_candidates_per_sdp,
            max_remote_candidates: self.max_remote_candidates,
        }
    }
}

/// `[listing]`: pages of `ListRooms` and `ListSessions`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ListingConfig {
    /// Items per page when a request's `page_size` is 0.
    pub default_page_size: u32,
    /// Largest page; a larger `page_size` is lowered to it. 500 Rooms with 4 KiB of metadata
    /// each stay well under a default gRPC client's 4 MiB message limit.
    pub max_page_size: u32,
}

impl Default for ListingConfig {
    fn default() -> Self {
        Self {
            default_page_size: 100,
            max_page_size: 500,
        }
    }
}

/// `[overload]`: a Worker refuses new Rooms and Sessions (RESOURCE_EXHAUSTED) while it is behind,
/// so the calls it already carries keep their latency. Calls on existing Rooms and Sessions are
/// never refused for load.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OverloadConfig {
    /// Commands waiting in a Worker's queue above which it refuses new Rooms and Sessions. At or
    /// above `limits.command_queue` it never trips: the full queue refuses every call first.
    pub max_queue_depth: usize,
    /// Loop lag (ms) above which a Worker refuses new Rooms and Sessions: how late its timers
    /// ran, the smaller of its last two (one scheduling hiccup is not an overload).
    pub max_loop_lag_ms: u64,
}

impl Default for OverloadConfig {
    fn default() -> Self {
        Self {
            max_queue_depth: 256,
            max_loop_lag_ms: 250,
        }
    }
}

impl Config {
    /// Number of Workers after resolving 0 to the number of CPU cores.
    pub fn workers(&self) -> usize {
        if self.media.workers == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get().min(64))
        } else {
            self.media.workers
        }
    }

    /// The addresses to announce (resolved default).
    pub fn announce_ips(&self) -> Vec<IpAddr> {
        if self.media.announce_ips.is_empty() {
            vec![self.media.bind_ip]
        } else {
            self.media.announce_ips.clone()
        }
    }

    pub(crate) fn grace(&self) -> Duration {
        Duration::from_secs(self.shutdown.grace_secs)
    }
}
