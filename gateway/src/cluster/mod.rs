//! Cluster mode: several gateways ("nodes") sharing one cluster store (Redis) behave as one API.
//! Off unless `cluster.redis_url` is set; a single gateway needs nothing external.
//!
//! - [`store`]: the [`ClusterStore`] trait (registry, Room leases); [`redis`]: its Redis
//!   implementation.
//! - [`agent`]: this node's registration and heartbeat, its leases and the fencing that closes a
//!   Room before its lease can pass to another node.
//! - [`placement`]: the load score and the power-of-two-choices pick for new Rooms; `load`: the
//!   process CPU a node publishes.
//! - `edge`: the `switchboard.v1` services in cluster mode (routing and forwarding of the unary
//!   calls, event relays per Room, the cluster-wide unfiltered stream) and `ClusterService`; with
//!   `api`, the only place that knows protobuf and tonic.
//!
//! This module never touches a Worker or an `Rtc`: it reaches the Rooms through
//! [`GatewayHandle`] and the local gRPC service like a backend would.

pub mod agent;
mod config;
mod edge;
mod load;
pub mod placement;
pub mod redis;
pub mod store;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;

pub use config::{ClusterConfig, Region};
pub use store::{Claim, ClusterStore, NodeInfo, NodeLoad, NodeState, RoomOwner, StoreError};

use crate::handle::GatewayHandle;

/// A running cluster agent (cheap to clone).
#[derive(Clone)]
pub struct Cluster {
    pub(crate) agent: Arc<agent::Agent>,
}

impl Cluster {
    /// Starts the agent for a gateway whose gRPC listener is bound to `grpc_addr` and whose
    /// Workers' UDP sockets are `media`. `None` when cluster mode is off. A store that is down is
    /// not an error: the node serves no new Rooms until it answers.
    pub(crate) async fn start(
        cfg: &ClusterConfig,
        handle: GatewayHandle,
        grpc_addr: SocketAddr,
        media: &[SocketAddr],
    ) -> Result<Option<Self>, StoreError> {
        if !cfg.enabled() {
            return Ok(None);
        }
        let timeout = ClusterConfig::ms(cfg.store_timeout_ms);
        let store = redis::RedisStore::new(&cfg.redis_url, &cfg.name, timeout)?;
        let agent = Arc::new(agent::Agent::new(
            cfg.clone(),
            Arc::new(store),
            handle,
            cfg.endpoint(grpc_addr),
            media.to_vec(),
        ));
        // Register before serving, so the first calls can already place Rooms.
        agent.beat().await;
        agent.spawn();
        tracing::info!(
            node = %agent.node_id,
            endpoint = %agent.endpoint,
            store_ok = agent.store_ok(),
            "cluster mode on"
        );
        Ok(Some(Self { agent }))
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.agent.node_id
    }

    /// Stops taking new Rooms (first step of a graceful shutdown).
    pub async fn drain(&self) {
        self.agent.drain().await;
    }

    /// Releases every lease and the registration (last step of a graceful shutdown).
    pub async fn shutdown(&self) {
        self.agent.shutdown().await;
    }

    /// The gRPC routes of cluster mode over the local service.
    pub(crate) fn routes(
        &self,
        routes: tonic::service::Routes,
        local: crate::api::ControlService,
        auth: &crate::api::Auth,
        event_buffer: usize,
    ) -> tonic::service::Routes {
        edge::ClusterEdge::new(self.agent.clone(), local, event_buffer).add_routes(routes, auth)
    }
}

/// Checks that the store of `cfg` answers (for `switchboard --check-config`).
pub async fn check_store(cfg: &ClusterConfig) -> Result<(), StoreError> {
    let store = redis::RedisStore::new(
        &cfg.redis_url,
        &cfg.name,
        ClusterConfig::ms(cfg.store_timeout_ms),
    )?;
    store.ping().await
}
