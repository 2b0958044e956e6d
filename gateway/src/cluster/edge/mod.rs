//! The cluster edge: the `switchboard.v1` services in cluster mode. Every call is routed: served by
//! the local [`ControlService`] when this node owns the Room (or the call was already forwarded),
//! else forwarded over gRPC to the owner. `CreateRoom` places new Rooms and claims their leases.
//!
//! Like `api`, this edge knows protobuf and tonic; it holds no SFU logic and never touches a
//! Worker except through the local service and the agent. Loops are impossible: a forwarded call
//! carries `x-switchboard-forwarded` and is always served locally.

mod calls;
mod events;
mod merge;
mod status;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchboard::v1 as pb;
use switchboard::v1::cluster_service_server::ClusterServiceServer;
use switchboard::v1::data_service_client::DataServiceClient;
use switchboard::v1::data_service_server::DataServiceServer;
use switchboard::v1::event_service_server::EventServiceServer;
use switchboard::v1::room_service_client::RoomServiceClient;
use switchboard::v1::room_service_server::{RoomService, RoomServiceServer};
use switchboard::v1::session_service_client::SessionServiceClient;
use switchboard::v1::session_service_server::SessionServiceServer;
use switchboard_core::{RoomId, SessionId};
use tonic::metadata::MetadataMap;
use tonic::service::Routes;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use super::agent::Agent;
use crate::api::{Auth, ControlService};

/// Metadata on a node-to-node call: the sending node's id. Such a call is served where it lands.
pub(crate) const FORWARDED: &str = "x-switchboard-forwarded";
/// Metadata on a refused claim: the node that holds the Room's lease.
pub(crate) const OWNER_HINT: &str = "x-switchboard-owner";

/// Where a call is served.
enum Route {
    Local,
    Remote(super::store::NodeInfo),
}

/// The cluster-mode implementation of every `switchboard.v1` service.
#[derive(Clone)]
pub struct ClusterEdge {
    agent: Arc<Agent>,
    local: ControlService,
    peers: Arc<Peers>,
    relays: Arc<events::Relays>,
    sessions: Arc<RouteCache>,
    owners: Arc<RouteCache>,
    event_buffer: usize,
}

/// gRPC channels to the other nodes, one per endpoint (HTTP/2 multiplexes every call on it).
struct Peers {
    channels: Mutex<HashMap<String, Channel>>,
    timeout: Duration,
    keepalive: Duration,
}

impl Peers {
    fn channel(&self, endpoint: &str) -> Result<Channel, Status> {
        let mut m = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = m.get(endpoint) {
            return Ok(c.clone());
        }
        let ch = Endpoint::from_shared(endpoint.to_string())
            .map_err(|e| Status::internal(format!("bad node endpoint {endpoint:?}: {e}")))?
            .connect_timeout(self.timeout.min(Duration::from_secs(3)))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(self.keepalive)
            .keep_alive_timeout(self.keepalive)
            .keep_alive_while_idle(true)
            .connect_lazy();
        m.insert(endpoint.to_string(), ch.clone());
        Ok(ch)
    }
}

/// Id → node: Sessions that live on another node, and the last owner seen of each Room (bounded).
struct RouteCache {
    map: Mutex<HashMap<String, (String, Instant)>>,
    cap: usize,
}

impl RouteCache {
    fn get(&self, session: &str) -> Option<String> {
        let m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        m.get(session).map(|(n, _)| n.clone())
    }

    /// Like `get`, for an entry written less than `age` ago.
    fn get_within(&self, key: &str, age: Duration) -> Option<String> {
        let m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        m.get(key)
            .filter(|(_, t)| t.elapsed() < age)
            .map(|(n, _)| n.clone())
    }

    fn put(&self, session: &str, node: &str) {
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= self.cap {
            // Drop the older half; a dropped route is found again by asking the nodes.
            let mut ages: Vec<Instant> = m.values().map(|(_, t)| *t).collect();
            ages.sort();
            let cut = ages[ages.len() / 2];
            m.retain(|_, (_, t)| *t > cut);
        }
        m.insert(session.to_string(), (node.to_string(), Instant::now()));
    }

    fn forget(&self, session: &str) {
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        m.remove(session);
    }
}

fn is_forwarded<T>(req: &Request<T>) -> bool {
    req.metadata().contains_key(FORWARDED)
}

/// A Room id for a CreateRoom without one, in the core's format (`rm_` + 20 characters).
fn generate_room_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut b = [0u8; 20];
    let _ = getrandom::getrandom(&mut b);
    let mut s = String::from("rm_");
    s.extend(
        b.iter()
            .map(|x| ALPHABET[usize::from(*x) % ALPHABET.len()] as char),
    );
    s
}

impl ClusterEdge {
    pub(crate) fn new(agent: Arc<Agent>, local: ControlService, event_buffer: usize) -> Self {
        let cfg = &agent.cfg;
        let peers = Arc::new(Peers {
            channels: Mutex::default(),
            timeout: Duration::from_millis(cfg.forward_timeout_ms),
            keepalive: Duration::from_millis(cfg.keepalive_ms),
        });
        let sessions = Arc::new(RouteCache {
            map: Mutex::default(),
            cap: cfg.session_routes,
        });
        let owners = Arc::new(RouteCache {
            map: Mutex::default(),
            cap: cfg.session_routes,
        });
        let relays = Arc::new(events::Relays::new(cfg.max_relays));
        Self {
            agent,
            local,
            peers,
            relays,
            sessions,
            owners,
            event_buffer,
        }
    }

    /// A request for `node` carrying `msg`, the caller's credentials and the forwarded mark.
    fn forward<T>(&self, meta: &MetadataMap, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        if let Some(a) = meta.get("authorization") {
            r.metadata_mut().insert("authorization", a.clone());
        }
        if let Ok(v) = self.agent.node_id.parse() {
            r.metadata_mut().insert(FORWARDED, v);
        }
        r.set_timeout(self.peers.timeout);
        r
    }

    fn rooms(&self, n: &super::store::NodeInfo) -> Result<RoomServiceClient<Channel>, Status> {
        Ok(RoomServiceClient::new(
            self.peers.channel(&n.grpc_endpoint)?,
        ))
    }

    fn sessions_client(
        &self,
        n: &super::store::NodeInfo,
    ) -> Result<SessionServiceClient<Channel>, Status> {
        Ok(SessionServiceClient::new(
            self.peers.channel(&n.grpc_endpoint)?,
        ))
    }

    fn data(&self, n: &super::store::NodeInfo) -> Result<DataServiceClient<Channel>, Status> {
        Ok(DataServiceClient::new(
            self.peers.channel(&n.grpc_endpoint)?,
        ))
    }

    /// Where a call about `room` is served.
    async fn route_room<T>(&self, req: &Request<T>, room: &str) -> Result<Route, Status> {
        if RoomId::parse(room).is_err() {
            return Ok(Route::Local);
        }
        self.agent.fence_if_expired(room).await;
        if is_forwarded(req) || self.agent.holds(room).is_some() {
            return Ok(Route::Local);
        }
        let owner = match self.agent.store.room_owner(room).await {
            Ok(o) => o,
            // The store is down: an owner seen less than a lease ago still holds the Room (it
            // fences itself when it cannot renew), so calls keep reaching it.
            Err(e) => {
                let fresh = Duration::from_millis(
                    self.agent.cfg.lease_ttl_ms - self.agent.cfg.fence_margin_ms,
                );
                return match self.owners.get_within(room, fresh) {
                    Some(node) => match self.agent.node(&node) {
                        Some(n) => Ok(Route::Remote(n)),
                        None => Err(status::store(e)),
                    },
                    None => Err(status::store(e)),
                };
            }
        };
        match owner {
            // Unknown here (NOT_FOUND from the local service), or ours but closing.
            None => Ok(Route::Local),
            Some(o) if o.node == self.agent.node_id => Ok(Route::Local),
            Some(o) => match self.agent.find_node(&o.node).await {
                Some(n) => {
                    self.owners.put(room, &n.id);
                    Ok(Route::Remote(n))
                }
                None => Err(status::owner_gone(room, &o.node)),
            },
        }
    }

    /// Where a call about `session` is served: here if it lives here, else on the node that
    /// answers for it (remembered, or found by asking every live node).
    async fn route_session<T>(&self, req: &Request<T>, session: &str) -> Result<Route, Status> {
        if is_forwarded(req) {
            return Ok(Route::Local);
        }
        let Ok(id) = SessionId::parse(session) else {
            return Ok(Route::Local);
        };
        if self.agent.handle.get_session(id).await.is_ok() {
            return Ok(Route::Local);
        }
        if let Some(node) = self.sessions.get(session) {
            if let Some(n) = self.agent.node(&node) {
                return Ok(Route::Remote(n));
            }
            self.sessions.forget(session);
        }
        let mut asks = tokio::task::JoinSet::new();
        for n in self.agent.nodes() {
            if n.id == self.agent.node_id {
                continue;
            }
            let Ok(mut c) = self.sessions_client(&n) else {
                continue;
            };
            let r = self.forward(
                req.metadata(),
                pb::GetSessionRequest {
                    session_id: session.to_string(),
                },
            );
            asks.spawn(async move { c.get_session(r).await.ok().map(|_| n) });
        }
        while let Some(res) = asks.join_next().await {
            if let Ok(Some(n)) = res {
                self.sessions.put(session, &n.id);
                return Ok(Route::Remote(n));
            }
        }
        Ok(Route::Local)
    }

    /// Creates the Room here: claims its lease first (or finds it ours), then creates it locally.
    async fn create_here(
        &self,
        req: Request<pb::CreateRoomRequest>,
    ) -> Result<Response<pb::CreateRoomResponse>, Status> {
        let room = req.get_ref().room_id.clone();
        if RoomId::parse(&room).is_err() {
            return self.local.create_room(req).await;
        }
        self.agent.fence_if_expired(&room).await;
        let _g = self.agent.ownership.lock().await;
        if self.agent.holds(&room).is_none() {
            if self.agent.is_draining() {
                return Err(Status::unavailable(
                    "this node is draining and takes no new rooms",
                ));
            }
            let sent = Instant::now();
            let claim = self
                .agent
                .store
                .claim_room(
                    &room,
                    &self.agent.node_id,
                    Duration::from_millis(self.agent.cfg.lease_ttl_ms),
                )
                .await
                .map_err(status::store)?;
            match claim {
                super::store::Claim::Claimed { epoch } => {
                    self.agent.insert_lease(&room, epoch, sent);
                    tracing::debug!(room, epoch, "room lease claimed");
                }
                super::store::Claim::Owned(o) if o.node == self.agent.node_id => {
                    return Err(status::stale_own_lease(&room, &o.node));
                }
                super::store::Claim::Owned(o) => return Err(status::not_owner(&room, &o.node)),
            }
            return match self.local.create_room(req).await {
                Ok(r) => Ok(self.decorate(r)),
                Err(e) => {
                    self.agent.release(&room).await;
                    Err(e)
                }
            };
        }
        self.local.create_room(req).await.map(|r| self.decorate(r))
    }

    fn decorate(
        &self,
        mut r: Response<pb::CreateRoomResponse>,
    ) -> Response<pb::CreateRoomResponse> {
        let m = r.get_mut();
        m.owner_endpoint = self.agent.endpoint.clone();
        m.owner_node_id = self.agent.node_id.clone();
        r
    }

    /// Registers the cluster-mode services (each behind `auth`) on `routes`.
    pub(crate) fn add_routes(self, routes: Routes, auth: &Auth) -> Routes {
        let (a1, a2, a3, a4, a5) = (
            auth.clone(),
            auth.clone(),
            auth.clone(),
            auth.clone(),
            auth.clone(),
        );
        routes
            .add_service(RoomServiceServer::with_interceptor(
                self.clone(),
                move |r| a1.check(r),
            ))
            .add_service(SessionServiceServer::with_interceptor(
                self.clone(),
                move |r| a2.check(r),
            ))
            .add_service(EventServiceServer::with_interceptor(
                self.clone(),
                move |r| a3.check(r),
            ))
            .add_service(DataServiceServer::with_interceptor(
                self.clone(),
                move |r| a4.check(r),
            ))
            .add_service(ClusterServiceServer::with_interceptor(self, move |r| {
                a5.check(r)
            }))
    }
}
