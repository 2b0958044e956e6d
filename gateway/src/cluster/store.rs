//! [`ClusterStore`]: the narrow interface to the distributed engine that holds the node registry
//! and the Room ownership leases. Redis ([`super::redis::RedisStore`]) is the first
//! implementation; etcd (leases and transactions) can be another without touching the rest.
//!
//! The store decides nothing: placement, fencing and forwarding live in the agent and the edge.

use std::net::SocketAddr;
use std::time::Duration;

/// Whether a node takes new Rooms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    /// Takes new Rooms.
    Serving,
    /// Shutting down: takes no new Rooms.
    Draining,
}

impl NodeState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Serving => "serving",
            Self::Draining => "draining",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "serving" => Some(Self::Serving),
            "draining" => Some(Self::Draining),
            _ => None,
        }
    }
}

/// A node's load as published in its registration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeLoad {
    /// Rooms on the node.
    pub rooms: u32,
    /// Sessions on the node.
    pub sessions: u32,
    /// Rooms claimed within the ramp-up window.
    pub recent_rooms: u32,
    /// RTP packets per second the node's Workers forwarded over the last heartbeat interval (0 in
    /// the first heartbeat).
    pub forwarded_pps: u64,
    /// The worst Worker loop lag at the heartbeat, in microseconds (how late the Workers' timers
    /// ran, as the overload rule reads it).
    pub loop_lag_micros: u64,
    /// CPU the node's process used over the last heartbeat interval, in per mille of the whole
    /// machine (all cores); 0 where it cannot be read (not Linux).
    pub cpu_permille: u32,
}

/// A node's registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// The node id.
    pub id: String,
    /// Where its gRPC API is reached.
    pub grpc_endpoint: String,
    /// Its region (`cluster.region`); empty for none.
    pub region: String,
    /// Its Workers' UDP addresses.
    pub media_addrs: Vec<SocketAddr>,
    /// Serving or draining.
    pub state: NodeState,
    /// Gateway version.
    pub version: String,
    /// Random id of this run.
    pub boot_id: String,
    /// Worker threads.
    pub workers: u32,
    /// Load.
    pub load: NodeLoad,
    /// Unix milliseconds of the heartbeat that wrote this (the writer's clock).
    pub heartbeat_unix_ms: u64,
}

/// Who holds a Room's lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomOwner {
    /// The owning node.
    pub node: String,
    /// The lease epoch (fencing token).
    pub epoch: u64,
}

impl RoomOwner {
    /// The value stored for the lease: `node|epoch`.
    pub(crate) fn value(&self) -> String {
        format!("{}|{}", self.node, self.epoch)
    }

    pub(crate) fn parse(v: &str) -> Option<Self> {
        let (node, epoch) = v.rsplit_once('|')?;
        Some(Self {
            node: node.to_string(),
            epoch: epoch.parse().ok()?,
        })
    }
}

/// The outcome of a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The caller now holds the lease with this epoch.
    Claimed {
        /// The new epoch, greater than every earlier one.
        epoch: u64,
    },
    /// Someone holds it already.
    Owned(RoomOwner),
}

/// The store could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store did not answer in time or the connection failed.
    #[error("cluster store unavailable: {0}")]
    Unavailable(String),
    /// The store answered something this gateway does not understand.
    #[error("cluster store answered unexpectedly: {0}")]
    Protocol(String),
}

/// The distributed engine behind the cluster.
#[tonic::async_trait]
pub trait ClusterStore: Send + Sync + 'static {
    /// Writes (or refreshes) `node`'s registration; it expires after `ttl` without refresh.
    async fn heartbeat(&self, node: &NodeInfo, ttl: Duration) -> Result<(), StoreError>;
    /// Removes a registration at once (graceful stop).
    async fn deregister(&self, node: &str) -> Result<(), StoreError>;
    /// Every registration that has not expired, ordered by id.
    async fn list_nodes(&self) -> Result<Vec<NodeInfo>, StoreError>;
    /// Claims `room` for `node` unless someone holds it: a new epoch, greater than every earlier
    /// one, and a lease that expires after `ttl` unless renewed.
    async fn claim_room(&self, room: &str, node: &str, ttl: Duration) -> Result<Claim, StoreError>;
    /// Extends each lease to `ttl` if it is still held by that owner; per lease, whether it was.
    async fn renew_rooms(
        &self,
        leases: &[(String, RoomOwner)],
        ttl: Duration,
    ) -> Result<Vec<bool>, StoreError>;
    /// Deletes the lease if `owner` still holds it; whether it did.
    async fn release_room(&self, room: &str, owner: &RoomOwner) -> Result<bool, StoreError>;
    /// The current holder of `room`'s lease, if any.
    async fn room_owner(&self, room: &str) -> Result<Option<RoomOwner>, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_values_round_trip_and_garbage_is_refused() {
        let o = RoomOwner {
            node: "n-1.a".into(),
            epoch: 1_796_000_000_123,
        };
        assert_eq!(RoomOwner::parse(&o.value()), Some(o));
        assert_eq!(RoomOwner::parse("n1"), None);
        assert_eq!(RoomOwner::parse("n1|x"), None);
    }
}
