//! `[cluster]`: the settings of cluster mode and their validation. Owns nothing at run time.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, GrpcConfig};

/// `[cluster]`: several gateways sharing one Redis behave as one API. Off unless `redis_url` is set.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// `redis://[user:password@]host:port[/db]` of the cluster store. Empty: a single gateway
    /// (nothing external needed).
    pub redis_url: String,
    /// Name of the cluster: every key lives under `sfu:{name}:`, so clusters can share a Redis.
    pub name: String,
    /// This node's id (1 to 64 characters from `A-Z a-z 0-9 _ - .`). Empty: a random id per start.
    pub node_id: String,
    /// This node's region (1 to 64 characters from `A-Z a-z 0-9 _ - .`, e.g. `eu-west`), or empty
    /// for none. A new Room goes to a serving node of the region named by `region_hint` or,
    /// without a hint, of this region (the region of the node that received the call); when no
    /// node of that one region is serving, to any serving node.
    pub region: String,
    /// The gRPC endpoint other nodes and backends use to reach this node (`http://host:port`).
    /// Empty: `http://` + the address gRPC is bound to, which must then be a specific address.
    pub advertise_grpc: String,
    /// Milliseconds between two heartbeats (registration refresh with the current load).
    pub heartbeat_ms: u64,
    /// Milliseconds a registration lives without a heartbeat: a node silent that long is dead.
    pub node_ttl_ms: u64,
    /// Milliseconds a Room ownership lease lives without renewal.
    pub lease_ttl_ms: u64,
    /// Milliseconds between two renewals of this node's leases.
    pub renew_ms: u64,
    /// Safety margin (ms): the owner closes a Room itself once `lease_ttl_ms - fence_margin_ms`
    /// passed since the send time of its last confirmed renewal, before the lease can expire in
    /// the store and pass to another node.
    pub fence_margin_ms: u64,
    /// Milliseconds a command to the store may take before it counts as failed.
    pub store_timeout_ms: u64,
    /// Milliseconds a forwarded call may take (node to node).
    pub forward_timeout_ms: u64,
    /// HTTP/2 keepalive between nodes (ms): ping interval, and how long an unanswered ping may
    /// take before the connection (and the event relays on it) count as dead.
    pub keepalive_ms: u64,
    /// Seconds a newly placed Room counts in its node's ramp-up penalty.
    pub rampup_secs: u64,
    /// Placement penalty of one Room placed within `rampup_secs`, in Sessions (the load a new
    /// Room is expected to bring), so a burst of creations spreads over the nodes.
    pub rampup_penalty: u32,
    /// Most Rooms owned elsewhere whose events this node relays to its watchers at once.
    pub max_relays: usize,
    /// Most Session-to-node routes remembered (Sessions created on other nodes and called here).
    pub session_routes: usize,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            redis_url: String::new(),
            name: "switchboard".into(),
            node_id: String::new(),
            region: String::new(),
            advertise_grpc: String::new(),
            heartbeat_ms: 2000,
            node_ttl_ms: 6000,
            lease_ttl_ms: 15_000,
            renew_ms: 5000,
            fence_margin_ms: 2000,
            store_timeout_ms: 1000,
            forward_timeout_ms: 10_000,
            keepalive_ms: 5000,
            rampup_secs: 20,
            rampup_penalty: 5,
            max_relays: 10_000,
            session_routes: 100_000,
        }
    }
}

/// A region name as nodes publish it and `CreateRoomRequest.region_hint` names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Region(String);

impl Region {
    /// A region from its name: 1 to 64 characters from `A-Z a-z 0-9 _ - .`; `None` for "".
    pub fn parse(s: &str) -> Result<Option<Self>, &'static str> {
        match s {
            "" => Ok(None),
            s if valid_id(s) => Ok(Some(Self(s.to_string()))),
            _ => Err("1 to 64 characters from A-Z a-z 0-9 _ - . (or empty)"),
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn valid_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

impl ClusterConfig {
    /// Whether cluster mode is on.
    pub fn enabled(&self) -> bool {
        !self.redis_url.is_empty()
    }

    /// The endpoint this node advertises, its gRPC listener being bound to `bound`.
    pub fn endpoint(&self, bound: std::net::SocketAddr) -> String {
        if self.advertise_grpc.is_empty() {
            format!("http://{bound}")
        } else {
            self.advertise_grpc.clone()
        }
    }

    pub(crate) fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    /// Checks the values that types alone cannot (only when cluster mode is on).
    pub fn validate(&self, grpc: &GrpcConfig) -> Result<(), ConfigError> {
        let bad = |key, reason: &str| {
            Err(ConfigError::Invalid {
                key,
                reason: reason.to_string(),
            })
        };
        if !valid_id(&self.name) {
            return bad("cluster.name", "1 to 64 characters from A-Z a-z 0-9 _ - .");
        }
        if !self.enabled() {
            return Ok(());
        }
        if !self.redis_url.starts_with("redis://") && !self.redis_url.starts_with("unix://") {
            return bad("cluster.redis_url", "must start with redis:// or unix://");
        }
        if let Err(e) = redis::Client::open(self.redis_url.as_str()) {
            return bad("cluster.redis_url", &e.to_string());
        }
        if !self.node_id.is_empty() && !valid_id(&self.node_id) {
            return bad(
                "cluster.node_id",
                "1 to 64 characters from A-Z a-z 0-9 _ - . (or empty for a random id)",
            );
        }
        if let Err(reason) = Region::parse(&self.region) {
            return bad("cluster.region", reason);
        }
        if self.advertise_grpc.is_empty() {
            if grpc.listen.ip().is_unspecified() {
                return bad(
                    "cluster.advertise_grpc",
                    "required when grpc.listen is a wildcard address: other nodes need an \
                     address to reach this one",
                );
            }
        } else if !(self.advertise_grpc.starts_with("http://")
            || self.advertise_grpc.starts_with("https://"))
            || tonic::transport::Endpoint::from_shared(self.advertise_grpc.clone()).is_err()
        {
            return bad(
                "cluster.advertise_grpc",
                "must be an http:// or https:// URL such as http://10.0.0.1:50051",
            );
        }
        if self.heartbeat_ms == 0 || self.heartbeat_ms.saturating_mul(2) > self.node_ttl_ms {
            return bad(
                "cluster.node_ttl_ms",
                "must be at least twice cluster.heartbeat_ms (and heartbeat_ms above 0)",
            );
        }
        if self.node_ttl_ms > 60_000 {
            return bad("cluster.node_ttl_ms", "at most 60000");
        }
        if self.fence_margin_ms == 0 || self.fence_margin_ms >= self.lease_ttl_ms {
            return bad(
                "cluster.fence_margin_ms",
                "must be above 0 and below cluster.lease_ttl_ms",
            );
        }
        if self.renew_ms == 0
            || self.renew_ms.saturating_mul(2) > self.lease_ttl_ms - self.fence_margin_ms
        {
            return bad(
                "cluster.renew_ms",
                "must be above 0 and at most half of lease_ttl_ms - fence_margin_ms (so one \
                 failed renewal never fences a healthy owner)",
            );
        }
        if self.store_timeout_ms == 0 || self.store_timeout_ms >= self.renew_ms {
            return bad(
                "cluster.store_timeout_ms",
                "must be above 0 and below cluster.renew_ms",
            );
        }
        if self.forward_timeout_ms == 0 {
            return bad("cluster.forward_timeout_ms", "must be above 0");
        }
        if self.keepalive_ms < 100 {
            return bad("cluster.keepalive_ms", "at least 100");
        }
        if self.max_relays == 0 || self.session_routes == 0 {
            return bad(
                "cluster.max_relays",
                "max_relays and session_routes must be above 0",
            );
        }
        Ok(())
    }
}
