//! [`Config`]: every setting of the gateway, loaded in layers and validated once at start-up.
//!
//! Layers, later wins: built-in defaults < a TOML file (`--config PATH`) < environment variables
//! `SWITCHBOARD__SECTION__KEY` (lists comma-separated). Unknown keys and bad values are refused
//! with an error naming the key. All limits live here; no other module hard-codes policy.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

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
    /// Cluster mode (several gateways sharing one Redis); off by default.
    pub cluster: crate::cluster::ClusterConfig,
}

/// `[grpc]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GrpcConfig {
    /// Address of the gRPC listener (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Bearer API key backends must send. Empty is allowed only on a loopback `listen` address.
    pub api_key: String,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 50051),
            api_key: String::new(),
        }
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
}

impl Default for SessionsConfig {
    fn default() -> Self {
        Self {
            connect_timeout_secs: 30,
            disconnect_grace_secs: 10,
            keyframe_min_interval_ms: 500,
            rtx_cache_packets: 512,
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
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            command_queue: 1024,
            event_buffer: 4096,
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
            down_hold_ms: 500,
            up_hold_ms: 3000,
            up_headroom_percent: 20,
            min_switch_interval_ms: 2000,
        }
    }
}

/// One `[[ice_servers]]` entry.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct IceServerConfig {
    /// `stun:` or `turn:` URLs.
    pub urls: Vec<String>,
    /// TURN username (static; leave empty with `shared_secret`).
    pub username: String,
    /// TURN password (static; leave empty with `shared_secret`).
    pub credential: String,
    /// coturn `static-auth-secret`: when set, the gateway mints a time-limited username and
    /// credential for this server per Session (`use-auth-secret` scheme).
    pub shared_secret: String,
    /// Lifetime of minted credentials in seconds; 0 = `turn.credential_ttl_secs`.
    pub credential_ttl_secs: u64,
}

/// `[turn]`: the embedded TURN server (also answers STUN Binding on its ports).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TurnConfig {
    /// Run the embedded TURN server.
    pub enabled: bool,
    /// UDP listener (port 0 picks a free port; the minted URLs carry the real one).
    pub listen_udp: SocketAddr,
    /// TCP listener (plain STUN framing, RFC 8656).
    pub listen_tcp: SocketAddr,
    /// TLS listener (`turns:`); needs `tls_cert` and `tls_key`. None = no TLS.
    pub listen_tls: Option<SocketAddr>,
    /// PEM certificate chain for the TLS listener.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for the TLS listener.
    pub tls_key: Option<PathBuf>,
    /// Host put into the `turn:`/`turns:` URLs. Empty = the first media announce IP.
    pub public_host: String,
    /// REALM of the long-term credentials.
    pub realm: String,
    /// Shared secret of the `username = expiry:identity`, `password = base64(HMAC-SHA1(secret,
    /// username))` scheme. Empty = a random secret per start.
    pub secret: String,
    /// Lifetime of minted credentials, in seconds.
    pub credential_ttl_secs: u64,
    /// Address relay sockets bind to. None = `media.bind_ip`.
    pub relay_ip: Option<IpAddr>,
    /// Lowest relay port.
    pub relay_port_min: u16,
    /// Highest relay port.
    pub relay_port_max: u16,
    /// Most live allocations per identity (the part of the username after the expiry).
    pub max_allocations_per_identity: u32,
    /// Most live allocations in total.
    pub max_allocations: u32,
    /// Relayed bitrate per allocation (both directions), in kbit/s; over it packets are
    /// dropped. 0 = unlimited.
    pub max_relay_bitrate_kbps: u32,
    /// Longest lifetime an Allocate or Refresh may obtain, in seconds.
    pub allocation_max_lifetime_secs: u32,
    /// Most permissions (peer IPs) per allocation; channel bindings are capped the same.
    pub max_permissions_per_allocation: u32,
    /// Most simultaneous TCP and TLS client connections.
    pub max_stream_connections: u32,
    /// Peer address ranges (CIDR) never relayed to.
    pub deny_peers: Vec<String>,
    /// Peer address ranges (CIDR) relayed to even when `deny_peers` matches.
    pub allow_peers: Vec<String>,
}

impl Default for TurnConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen_udp: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 3478),
            listen_tcp: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 3478),
            listen_tls: None,
            tls_cert: None,
            tls_key: None,
            public_host: String::new(),
            realm: "switchboard".into(),
            secret: String::new(),
            credential_ttl_secs: 86400,
            relay_ip: None,
            relay_port_min: 49152,
            relay_port_max: 65535,
            max_allocations_per_identity: 10,
            max_allocations: 1000,
            max_relay_bitrate_kbps: 10_000,
            allocation_max_lifetime_secs: 3600,
            max_permissions_per_allocation: 32,
            max_stream_connections: 1024,
            deny_peers: [
                "0.0.0.0/8",
                "10.0.0.0/8",
                "100.64.0.0/10",
                "127.0.0.0/8",
                "169.254.0.0/16",
                "172.16.0.0/12",
                "192.0.0.0/24",
                "192.168.0.0/16",
                "198.18.0.0/15",
                "224.0.0.0/4",
                "240.0.0.0/4",
                "::/128",
                "::1/128",
                "64:ff9b::/96",
                "64:ff9b:1::/48",
                "fc00::/7",
                "fe80::/10",
                "ff00::/8",
            ]
            .map(String::from)
            .to_vec(),
            allow_peers: Vec::new(),
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
    /// `RUST_LOG`, when set, takes precedence.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Plain,
            filter: "info".into(),
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
    /// Where the demo's HTTP/WebSocket server listens (port 0 picks a free port).
    pub listen: SocketAddr,
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080),
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
        if self.grpc.api_key.is_empty() && !self.grpc.listen.ip().is_loopback() {
            return bad(
                "grpc.api_key",
                "an API key is required when grpc.listen is not a loopback address",
            );
        }
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
        for s in &self.ice_servers {
            if s.urls.is_empty() {
                return bad("ice_servers.urls", "each ICE server needs at least one URL");
            }
            if let Some(u) = s.urls.iter().find(|u| {
                !["stun:", "stuns:", "turn:", "turns:"]
                    .iter()
                    .any(|p| u.starts_with(p))
            }) {
                return Err(ConfigError::Invalid {
                    key: "ice_servers.urls",
                    reason: format!("{u:?} is not a stun:, stuns:, turn: or turns: URL"),
                });
            }
        }
        for s in &self.ice_servers {
            let minted = !s.shared_secret.is_empty();
            if minted && (!s.username.is_empty() || !s.credential.is_empty()) {
                return bad(
                    "ice_servers.shared_secret",
                    "with a shared_secret the gateway mints username and credential: leave them empty",
                );
            }
        }
        self.validate_turn()?;
        self.cluster.validate(&self.grpc)?;
        if tracing_subscriber::EnvFilter::try_new(&self.log.filter).is_err() {
            return bad("log.filter", "not a valid tracing filter directive");
        }
        Ok(())
    }

    fn validate_turn(&self) -> Result<(), ConfigError> {
        let t = &self.turn;
        let bad = |key, reason: &str| {
            Err(ConfigError::Invalid {
                key,
                reason: reason.to_string(),
            })
        };
        for (key, list) in [
            ("turn.deny_peers", &t.deny_peers),
            ("turn.allow_peers", &t.allow_peers),
        ] {
            for c in list {
                if let Err(e) = c.parse::<crate::turn::Cidr>() {
                    return Err(ConfigError::Invalid {
                        key,
                        reason: format!("{c:?}: {e}"),
                    });
                }
            }
        }
        if !t.enabled {
            return Ok(());
        }
        if t.realm.is_empty() || t.realm.len() > 127 {
            return bad("turn.realm", "must be 1 to 127 bytes");
        }
        if t.credential_ttl_secs == 0 {
            return bad("turn.credential_ttl_secs", "must be at least 1");
        }
        if t.relay_port_min == 0 || t.relay_port_min > t.relay_port_max {
            return bad(
                "turn.relay_port_min",
                "must be at least 1 and not above turn.relay_port_max",
            );
        }
        if t.max_allocations == 0 {
            return bad("turn.max_allocations", "must be at least 1");
        }
        if t.max_allocations_per_identity == 0 {
            return bad("turn.max_allocations_per_identity", "must be at least 1");
        }
        if t.allocation_max_lifetime_secs < 60 {
            return bad("turn.allocation_max_lifetime_secs", "must be at least 60");
        }
        if t.max_permissions_per_allocation == 0 {
            return bad("turn.max_permissions_per_allocation", "must be at least 1");
        }
        if t.max_stream_connections == 0 {
            return bad("turn.max_stream_connections", "must be at least 1");
        }
        if t.listen_tls.is_some() != (t.tls_cert.is_some() && t.tls_key.is_some()) {
            return bad(
                "turn.listen_tls",
                "turn.listen_tls, turn.tls_cert and turn.tls_key must be set together",
            );
        }
        if t.tls_cert.is_some() != t.tls_key.is_some() {
            return bad("turn.tls_key", "turn.tls_cert and turn.tls_key go together");
        }
        if let Some(ip) = t.relay_ip
            && ip.is_multicast()
        {
            return bad("turn.relay_ip", "must be a unicast address");
        }
        if t.public_host.contains(['/', '?', ' ']) {
            return bad(
                "turn.public_host",
                "a host name or IP address, nothing else",
            );
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
