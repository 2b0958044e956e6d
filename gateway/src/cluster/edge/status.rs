//! The cluster's statuses (its errors → `tonic::Status`, in one place) and `ClusterService`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use switchboard::v1 as pb;
use switchboard::v1::cluster_service_client::ClusterServiceClient;
use switchboard::v1::cluster_service_server::ClusterService;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

use super::{ClusterEdge, OWNER_HINT, is_forwarded};
use crate::cluster::agent::PlaceError;
use crate::cluster::store::{NodeInfo, NodeState, StoreError};

/// The store failed: UNAVAILABLE, no new Rooms.
pub(super) fn store(e: StoreError) -> Status {
    Status::unavailable(format!("{e}; no new rooms until it is back"))
}

/// No node could take the Room.
pub(super) fn place(e: PlaceError) -> Status {
    Status::unavailable(e.to_string())
}

/// The Room's owner is registered no more (dead or partitioned); its lease has not expired yet.
pub(super) fn owner_gone(room: &str, node: &str) -> Status {
    Status::unavailable(format!(
        "room {room} is owned by node {node}, which is not answering; the room can be \
         re-created once its lease expires"
    ))
}

/// A forwarded call failed: UNAVAILABLE names the node it was forwarded to (its connection may
/// have failed rather than the call); every other status passes through unchanged.
pub(super) fn via(node: &NodeInfo, s: Status) -> Status {
    if s.code() != tonic::Code::Unavailable {
        return s;
    }
    let mut out = Status::unavailable(format!(
        "via node {} ({}): {}",
        node.id,
        node.grpc_endpoint,
        s.message()
    ));
    *out.metadata_mut() = s.metadata().clone();
    out
}

/// Another node won the claim: FAILED_PRECONDITION naming it (metadata `x-switchboard-owner`).
pub(super) fn not_owner(room: &str, node: &str) -> Status {
    let mut s = Status::failed_precondition(format!("room {room} is owned by node {node}"));
    if let Ok(v) = MetadataValue::try_from(node) {
        s.metadata_mut().insert(OWNER_HINT, v);
    }
    s
}

/// The store says this node owns the Room but this run of it holds no such lease (an earlier run
/// with the same node id, or a lease being released).
pub(super) fn stale_own_lease(room: &str, node: &str) -> Status {
    Status::unavailable(format!(
        "room {room} is still leased to node {node} by an earlier claim this run does not hold; \
         retry after cluster.lease_ttl_ms"
    ))
}

fn to_proto(n: &NodeInfo, score: f64) -> pb::ClusterNode {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    pb::ClusterNode {
        node_id: n.id.clone(),
        grpc_endpoint: n.grpc_endpoint.clone(),
        region: n.region.clone(),
        media_addresses: n.media_addrs.iter().map(ToString::to_string).collect(),
        state: match n.state {
            NodeState::Serving => pb::NodeState::Serving,
            NodeState::Draining => pb::NodeState::Draining,
        } as i32,
        version: n.version.clone(),
        boot_id: n.boot_id.clone(),
        workers: n.workers,
        load: Some(pb::NodeLoad {
            rooms: n.load.rooms,
            sessions: n.load.sessions,
            recent_rooms: n.load.recent_rooms,
            score,
            forwarded_packets_per_second: n.load.forwarded_pps,
            worker_loop_lag_micros: n.load.loop_lag_micros,
            cpu_percent: f64::from(n.load.cpu_permille) / 10.0,
        }),
        leases: Vec::new(),
        reachable: false,
        heartbeat_age_ms: now.saturating_sub(n.heartbeat_unix_ms),
    }
}

impl ClusterEdge {
    /// This node as it reports itself, with its leases.
    async fn me(&self) -> pb::ClusterNode {
        let info = self.agent.info().await;
        let mut n = to_proto(&info, self.agent.score(&info));
        n.heartbeat_age_ms = 0;
        n.reachable = true;
        n.leases = self
            .agent
            .leases()
            .into_iter()
            .map(|(room_id, epoch, left)| pb::RoomLease {
                room_id,
                epoch,
                remaining_ms: left.as_millis() as u64,
            })
            .collect();
        n
    }
}

#[tonic::async_trait]
impl ClusterService for ClusterEdge {
    async fn get_cluster_status(
        &self,
        req: Request<pb::GetClusterStatusRequest>,
    ) -> Result<Response<pb::GetClusterStatusResponse>, Status> {
        let mut out = pb::GetClusterStatusResponse {
            cluster_name: self.agent.cfg.name.clone(),
            node_id: self.agent.node_id.clone(),
            store_available: true,
            nodes: Vec::new(),
        };
        if is_forwarded(&req) {
            out.nodes.push(self.me().await);
            return Ok(Response::new(out));
        }
        let nodes = match self.agent.store.list_nodes().await {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(error = %e, "cluster status without the store");
                out.store_available = false;
                out.nodes.push(self.me().await);
                return Ok(Response::new(out));
            }
        };
        let (meta, _, _) = req.into_parts();
        let mut asks = tokio::task::JoinSet::new();
        for (i, n) in nodes.iter().enumerate() {
            if n.id == self.agent.node_id {
                continue;
            }
            let Ok(ch) = self.peers.channel(&n.grpc_endpoint) else {
                continue;
            };
            let mut r = self.forward(&meta, pb::GetClusterStatusRequest {});
            r.set_timeout(Duration::from_millis(
                self.agent.cfg.store_timeout_ms.max(500),
            ));
            asks.spawn(
                async move { (i, ClusterServiceClient::new(ch).get_cluster_status(r).await) },
            );
        }
        let mut leases: Vec<Option<Vec<pb::RoomLease>>> = vec![None; nodes.len()];
        while let Some(Ok((i, res))) = asks.join_next().await {
            if let Ok(r) = res {
                leases[i] = r.into_inner().nodes.into_iter().next().map(|n| n.leases);
            }
        }
        for (i, n) in nodes.iter().enumerate() {
            if n.id == self.agent.node_id {
                out.nodes.push(self.me().await);
                continue;
            }
            let mut p = to_proto(n, self.agent.score(n));
            if let Some(l) = leases[i].take() {
                p.reachable = true;
                p.leases = l;
            }
            out.nodes.push(p);
        }
        Ok(Response::new(out))
    }
}
