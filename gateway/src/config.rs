//! [`Config`]: every setting of the gateway, loaded in layers and validated once at start-up.
//!
//! Layers, later wins: built-in defaults < a TOML file (`--config PATH`) < environment variables
//! `SWITCHBOARD__SECTION__KEY` (lists comma-separated). Unknown keys and bad values are refused
//! with an error naming the key. All limits live here; no other module hard-codes policy.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::turn::settings::{IceServerConfig, InvalidSetting, TurnConfig};

mod workers;

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

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Reading or parsing failed (the message names the key and the source).
    #[error("{0}")]
    Load(#[from] config::ConfigError),
    /// A value parsed but is not acceptable.
    #[error("invalid value for `{key}`: {reason}")]
    Invalid {
        /// The dotted key, e.g. `media.workers`.
        key: &'static str,
        /// Why.
        reason: String,
    },
}

impl From<InvalidSetting> for ConfigError {
    fn from(e: InvalidSetting) -> Self {
        Self::Invalid {
            key: e.key,
            reason: e.reason,
        }
    }
}

impl Config {
    /// Loads defaults < `path` (if given; it must exist) < `SWITCHBOARD__*` environment variables,
    /// then validates.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with_env(path, std::env::vars())
    }

    /// Like [`Config::load`] with an explicit environment (for tests).
    pub fn load_with_env(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut b =
            config::Config::builder().add_source(config::Config::try_from(&Self::default())?);
        if let Some(p) = path {
            b = b.add_source(
                config::File::from(p)
                    .format(config::FileFormat::Toml)
                    .required(true),
            );
        }
        let vars: config::Map<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("SWITCHBOARD__"))
            .collect();
        let cfg: Self = b
            .add_source(
                config::Environment::with_prefix("SWITCHBOARD")
                    .separator("__")
                    .list_separator(",")
                    .with_list_parse_key("media.announce_ips")
                    .with_list_parse_key("turn.deny_peers")
                    .with_list_parse_key("turn.allow_peers")
                    .try_parsing(true)
                    .source(Some(vars)),
            )
            .build()?
            .try_deserialize()?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the values that types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key, reason: &str| {
            Err(ConfigError::Invalid {
                key,
                reason: reason.to_string(),
            })
        };
        self.validate_grpc()?;
        if self.media.workers > 64 {
            return bad("media.workers", "at most 64");
        }
        if self.media.port_base != 0
            && usize::from(self.media.port_base) + self.workers() > usize::from(u16::MAX) + 1
        {
            return bad("media.port_base", "port_base + workers exceeds 65535");
        }
        if self.media.announce_ips.is_empty() && self.media.bind_ip.is_unspecified() {
            return bad(
                "media.announce_ips",
                "required when media.bind_ip is 0.0.0.0 or :: (Peers need a real address)",
            );
        }
        for ip in &self.media.announce_ips {
            if ip.is_unspecified() || ip.is_multicast() {
                return bad("media.announce_ips", "must be unicast, specified addresses");
            }
            if !self.media.bind_ip.is_unspecified() && *ip != self.media.bind_ip {
                return bad(
                    "media.announce_ips",
                    "with a specific bind_ip, announce only that address (or bind 0.0.0.0)",
                );
            }
        }
        if self.media.socket_buffer_bytes < 65536 {
            return bad("media.socket_buffer_bytes", "at least 65536");
        }
        if self.media.tcp_port_base != 0
            && usize::from(self.media.tcp_port_base) + self.workers() > usize::from(u16::MAX) + 1
        {
            return bad(
                "media.tcp_port_base",
                "tcp_port_base + workers exceeds 65535",
            );
        }
        if self.media.tcp_max_connections == 0 {
            return bad("media.tcp_max_connections", "must be at least 1");
        }
        if self.media.tcp_max_connections_per_ip == 0 {
            return bad("media.tcp_max_connections_per_ip", "must be at least 1");
        }
        if self.media.tcp_first_check_timeout_secs == 0 {
            return bad("media.tcp_first_check_timeout_secs", "must be at least 1");
        }
        if self.media.tcp_idle_timeout_secs == 0 {
            return bad("media.tcp_idle_timeout_secs", "must be at least 1");
        }
        if !(1200..=65535).contains(&self.media.tcp_max_frame_bytes) {
            return bad(
                "media.tcp_max_frame_bytes",
                "must be between 1200 and 65535 (RFC 4571 lengths are 16 bits)",
            );
        }
        if self.media.tcp_send_queue_frames == 0 {
            return bad("media.tcp_send_queue_frames", "must be at least 1");
        }
        if self.rooms.default_max_sessions == 0 {
            return bad("rooms.default_max_sessions", "must be at least 1");
        }
        if self.rooms.default_max_sessions > self.rooms.max_sessions_limit {
            return bad(
                "rooms.default_max_sessions",
                "must not exceed rooms.max_sessions_limit",
            );
        }
        if self.rooms.empty_timeout_secs == 0 {
            return bad("rooms.empty_timeout_secs", "must be at least 1");
        }
        if self.rooms.max_rooms_per_worker == 0 {
            return bad("rooms.max_rooms_per_worker", "must be at least 1");
        }
        if self.rooms.active_speaker_interval_ms < 50 {
            return bad("rooms.active_speaker_interval_ms", "must be at least 50");
        }
        if !(self.rooms.active_speaker_smoothing > 0.0
            && self.rooms.active_speaker_smoothing <= 1.0)
        {
            return bad("rooms.active_speaker_smoothing", "must be in (0, 1]");
        }
        if self.rooms.active_speaker_threshold_dbov > 0 {
            return bad(
                "rooms.active_speaker_threshold_dbov",
                "must be between -127 and 0",
            );
        }
        if self.sessions.connect_timeout_secs == 0 {
            return bad("sessions.connect_timeout_secs", "must be at least 1");
        }
        if self.sessions.rtx_cache_packets == 0 {
            return bad("sessions.rtx_cache_packets", "must be at least 1");
        }
        if !(30..=100_000).contains(&self.bwe.initial_bitrate_kbps) {
            return bad("bwe.initial_bitrate_kbps", "must be between 30 and 100000");
        }
        if self.sessions.rtx_cache_max_age_ms == 0 || self.sessions.rtx_cache_max_age_ms > 60_000 {
            return bad(
                "sessions.rtx_cache_max_age_ms",
                "must be between 1 and 60000",
            );
        }
        if self.sessions.rtx_ratio_percent > 100 {
            return bad("sessions.rtx_ratio_percent", "at most 100");
        }
        if self.sessions.stats_interval_ms != 0 && self.sessions.stats_interval_ms < 100 {
            return bad("sessions.stats_interval_ms", "0 (off) or at least 100");
        }
        if self.bwe.max_initial_bitrate_kbps > 100_000 {
            return bad("bwe.max_initial_bitrate_kbps", "at most 100000");
        }
        if self.bwe.up_headroom_percent > 200 {
            return bad("bwe.up_headroom_percent", "must be at most 200");
        }
        for (key, v) in [
            ("bwe.down_hold_ms", self.bwe.down_hold_ms),
            ("bwe.up_hold_ms", self.bwe.up_hold_ms),
            (
                "bwe.min_switch_interval_ms",
                self.bwe.min_switch_interval_ms,
            ),
        ] {
            if v > 60_000 {
                return bad(key, "must be at most 60000");
            }
        }
        if self.data.max_message_bytes == 0 || self.data.max_message_bytes > 16 * 1024 * 1024 {
            return bad("data.max_message_bytes", "must be between 1 and 16777216");
        }
        if self.data.send_buffer_bytes < self.data.max_message_bytes {
            return bad(
                "data.send_buffer_bytes",
                "must be at least data.max_message_bytes",
            );
        }
        if self.data.backend_max_bytes > self.data.max_message_bytes {
            return bad(
                "data.backend_max_bytes",
                "must not exceed data.max_message_bytes",
            );
        }
        if self.limits.command_queue == 0 {
            return bad("limits.command_queue", "must be at least 1");
        }
        if self.limits.event_buffer < 16 {
            return bad("limits.event_buffer", "must be at least 16");
        }
        if self.limits.event_stream_bytes < 1 << 20 {
            return bad(
                "limits.event_stream_bytes",
                "must be at least 1048576 (one event can be a large SDP offer)",
            );
        }
        if self.limits.event_replay_events == 0 {
            return bad("limits.event_replay_events", "must be at least 1");
        }
        if self.limits.event_replay_bytes < 1 << 20 {
            return bad("limits.event_replay_bytes", "must be at least 1048576");
        }
        for s in &self.ice_servers {
            s.validate()?;
        }
        self.turn.validate()?;
        self.validate_bounds()?;
        self.cluster.validate(&self.grpc)?;
        if tracing_subscriber::EnvFilter::try_new(&self.log.filter).is_err() {
            return bad("log.filter", "not a valid tracing filter directive");
        }
        Ok(())
    }

    /// `[signaling]`, `[listing]` and `[overload]`.
    fn validate_bounds(&self) -> Result<(), ConfigError> {
        let bad = |key, reason: &str| {
            Err(ConfigError::Invalid {
                key,
                reason: reason.to_string(),
            })
        };
        let s = &self.signaling;
        if !(1024..=64 << 20).contains(&s.max_sdp_bytes) {
            return bad(
                "signaling.max_sdp_bytes",
                "must be between 1024 and 67108864",
            );
        }
        if s.max_mlines_per_sdp == 0 {
            return bad("signaling.max_mlines_per_sdp", "must be at least 1");
        }
        // Two per other Participant (audio and video) plus a few of its own (audio, video,
        // screen share, data).
        if (s.max_mlines_per_session as u64) < 2 * u64::from(self.rooms.max_sessions_limit) + 8 {
            return bad(
                "signaling.max_mlines_per_session",
                "must be at least twice rooms.max_sessions_limit plus 8 (a full Room)",
            );
        }
        if s.max_candidates_per_sdp == 0 {
            return bad("signaling.max_candidates_per_sdp", "must be at least 1");
        }
        if s.max_remote_candidates == 0 {
            return bad("signaling.max_remote_candidates", "must be at least 1");
        }
        let l = &self.listing;
        if l.max_page_size == 0 || l.max_page_size > 10_000 {
            return bad("listing.max_page_size", "must be between 1 and 10000");
        }
        if l.default_page_size == 0 || l.default_page_size > l.max_page_size {
            return bad(
                "listing.default_page_size",
                "must be between 1 and listing.max_page_size",
            );
        }
        Ok(())
    }

    /// `[grpc]` and the demo, which holds the API key.
    fn validate_grpc(&self) -> Result<(), ConfigError> {
        let bad = |key, reason: &str| {
            Err(ConfigError::Invalid {
                key,
                reason: reason.to_string(),
            })
        };
        let g = &self.grpc;
        if g.api_key.is_empty() && !g.listen.ip().is_loopback() {
            return bad(
                "grpc.api_key",
                "an API key is required when grpc.listen is not a loopback address",
            );
        }
        // The messages name the key, never its value.
        if g.api_key
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return bad(
                "grpc.api_key",
                "must not contain whitespace or control characters",
            );
        }
        if !g.api_key.is_ascii() {
            return bad(
                "grpc.api_key",
                "must be printable ASCII (it travels in an HTTP header)",
            );
        }
        if !g.listen.ip().is_loopback() && g.api_key.len() < MIN_PUBLIC_API_KEY_LEN {
            return bad(
                "grpc.api_key",
                "must be at least 16 characters when grpc.listen is not a loopback address",
            );
        }
        if g.tls_cert.is_some() != g.tls_key.is_some() {
            return bad("grpc.tls_key", "grpc.tls_cert and grpc.tls_key go together");
        }
        if !(1..=300).contains(&g.tls_handshake_timeout_secs) {
            return bad(
                "grpc.tls_handshake_timeout_secs",
                "must be between 1 and 300",
            );
        }
        let d = &self.demo;
        if d.enabled {
            if d.access_token.chars().any(|c| !c.is_ascii_graphic()) {
                return bad(
                    "demo.access_token",
                    "must be printable ASCII without whitespace",
                );
            }
            if !d.listen.ip().is_loopback() && d.access_token.len() < MIN_PUBLIC_API_KEY_LEN {
                return bad(
                    "demo.access_token",
                    "the demo can create Rooms: on a non-loopback demo.listen it needs an \
                     access_token of at least 16 characters (or set demo.enabled = false)",
                );
            }
            if g.tls_cert.is_some() {
                return bad(
                    "demo.enabled",
                    "the demo talks plaintext gRPC to this gateway: set demo.enabled = false \
                     when grpc.tls_cert is set",
                );
            }
        }
        Ok(())
    }

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
