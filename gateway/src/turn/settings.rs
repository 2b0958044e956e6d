//! The `[turn]` and `[[ice_servers]]` sections of the configuration: their keys, defaults and
//! the checks types alone cannot make.
//!
//! They live with the TURN server because it is their only reader; [`crate::config`] embeds them
//! in [`crate::Config`] and re-exports them (config imports turn, never the other way round).
//! Pure data: no IO, no sockets.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::policy::{Cidr, default_deny};
use crate::config::Secret;

/// A key whose value cannot be used, with the reason (mapped to
/// [`crate::config::ConfigError::Invalid`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidSetting {
    /// The dotted key, e.g. `turn.realm`.
    pub key: &'static str,
    /// Why.
    pub reason: String,
}

fn bad(key: &'static str, reason: &str) -> Result<(), InvalidSetting> {
    Err(InvalidSetting {
        key,
        reason: reason.to_string(),
    })
}

/// Lifetime of credentials minted for an `[[ice_servers]]` entry whose `credential_ttl_secs` is
/// 0: a day. An external server cannot learn that a Session ended and refuses a Refresh once the
/// credential expired (coturn checks it on every request), so a short lifetime would cut calls.
pub const EXTERNAL_CREDENTIAL_TTL_SECS: u64 = 86_400;

/// One `[[ice_servers]]` entry. Its `Debug` hides `credential` and `shared_secret`.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq)]
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
    pub shared_secret: Secret,
    /// Lifetime of minted credentials in seconds; 0 = [`EXTERNAL_CREDENTIAL_TTL_SECS`] (a day).
    pub credential_ttl_secs: u64,
}

impl std::fmt::Debug for IceServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IceServerConfig")
            .field("urls", &self.urls)
            .field("username", &self.username)
            .field("credential", &Secret::from(self.credential.as_str()))
            .field("shared_secret", &self.shared_secret)
            .field("credential_ttl_secs", &self.credential_ttl_secs)
            .finish()
    }
}

impl IceServerConfig {
    /// Checks one entry.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if self.urls.is_empty() {
            return bad("ice_servers.urls", "each ICE server needs at least one URL");
        }
        if let Some(u) = self.urls.iter().find(|u| {
            !["stun:", "stuns:", "turn:", "turns:"]
                .iter()
                .any(|p| u.starts_with(p))
        }) {
            return Err(InvalidSetting {
                key: "ice_servers.urls",
                reason: format!("{u:?} is not a stun:, stuns:, turn: or turns: URL"),
            });
        }
        if !self.shared_secret.is_empty()
            && (!self.username.is_empty() || !self.credential.is_empty())
        {
            return bad(
                "ice_servers.shared_secret",
                "with a shared_secret the gateway mints username and credential: leave them empty",
            );
        }
        Ok(())
    }
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
    pub secret: Secret,
    /// Lifetime of minted credentials, in seconds. A Session's credentials keep working past it
    /// while the Session lives, and are revoked when it closes (see [`crate::turn`]).
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
    /// Most simultaneous TCP and TLS client connections from one source (an IPv4 address or an
    /// IPv6 /64); more are closed at accept. Raise it when many Peers share one NAT.
    pub max_stream_connections_per_ip: u32,
    /// Seconds a TCP or TLS client has, from its accept (TLS handshake included), to send its
    /// first authenticated request; otherwise the connection is closed.
    pub first_request_timeout_secs: u64,
    /// Peer address ranges (CIDR) never relayed to.
    pub deny_peers: Vec<Cidr>,
    /// Peer address ranges (CIDR) relayed to even when `deny_peers` matches.
    pub allow_peers: Vec<Cidr>,
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
            secret: Secret::default(),
            credential_ttl_secs: 600,
            relay_ip: None,
            relay_port_min: 49152,
            relay_port_max: 65535,
            max_allocations_per_identity: 10,
            max_allocations: 1000,
            max_relay_bitrate_kbps: 10_000,
            allocation_max_lifetime_secs: 3600,
            max_permissions_per_allocation: 32,
            max_stream_connections: 1024,
            max_stream_connections_per_ip: 100,
            first_request_timeout_secs: 5,
            deny_peers: default_deny(),
            allow_peers: Vec::new(),
        }
    }
}

impl TurnConfig {
    /// Checks the values (the CIDR lists were parsed when the configuration was read).
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if !self.enabled {
            return Ok(());
        }
        let positive: [(&'static str, u64); 7] = [
            ("turn.credential_ttl_secs", self.credential_ttl_secs),
            ("turn.max_allocations", self.max_allocations.into()),
            (
                "turn.max_allocations_per_identity",
                self.max_allocations_per_identity.into(),
            ),
            (
                "turn.max_permissions_per_allocation",
                self.max_permissions_per_allocation.into(),
            ),
            (
                "turn.max_stream_connections",
                self.max_stream_connections.into(),
            ),
            (
                "turn.max_stream_connections_per_ip",
                self.max_stream_connections_per_ip.into(),
            ),
            (
                "turn.first_request_timeout_secs",
                self.first_request_timeout_secs,
            ),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return bad(key, "must be at least 1");
        }
        if self.realm.is_empty() || self.realm.len() > 127 {
            return bad("turn.realm", "must be 1 to 127 bytes");
        }
        if self.relay_port_min == 0 || self.relay_port_min > self.relay_port_max {
            return bad(
                "turn.relay_port_min",
                "must be at least 1 and not above turn.relay_port_max",
            );
        }
        if self.allocation_max_lifetime_secs < 60 {
            return bad("turn.allocation_max_lifetime_secs", "must be at least 60");
        }
        if self.listen_tls.is_some() != (self.tls_cert.is_some() && self.tls_key.is_some()) {
            return bad(
                "turn.listen_tls",
                "turn.listen_tls, turn.tls_cert and turn.tls_key must be set together",
            );
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return bad("turn.tls_key", "turn.tls_cert and turn.tls_key go together");
        }
        if let Some(ip) = self.relay_ip
            && ip.is_multicast()
        {
            return bad("turn.relay_ip", "must be a unicast address");
        }
        if self.public_host.contains(['/', '?', ' ']) {
            return bad(
                "turn.public_host",
                "a host name or IP address, nothing else",
            );
        }
        Ok(())
    }
}
