//! Loading a [`Config`] in layers (defaults < TOML file < `SWITCHBOARD__*` environment) and
//! validating it once: every rule that refuses a setting lives here, each error naming its key
//! ([`ConfigError`]). The settings themselves, their defaults and their docs are in the parent
//! module; the mapping to what the Workers are built from is in `workers`.

use std::path::Path;

use super::{Config, InvalidSetting, MIN_PUBLIC_API_KEY_LEN};

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
}
