//! [`Agent`]: this node's side of the cluster. It owns the node's registration (heartbeat with the
//! current load), the view of the other nodes, this node's Room leases and the fencing that closes
//! a Room before its lease can pass to another node. It never forwards calls (that is the edge) and
//! never touches a Worker except through [`GatewayHandle`]. Its registration and load reading are in
//! `registration.rs`, its placement of new Rooms in `placing.rs`.
//!
//! Fencing: a lease's local deadline is the send time of its last confirmed claim or renewal +
//! `lease_ttl` − `fence_margin`. Redis counts the lease's life from when it ran the command, which
//! is after the send time, so the local deadline always comes first. When the deadline passes, or a
//! renewal finds the lease held by someone else (or gone), the agent deletes the Room locally and
//! announces [`LostRoom`]; a call routed here for it afterwards finds no lease and is refused.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use switchboard_core::RoomId;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::config::ClusterConfig;
use super::load::Rate;
use super::store::{ClusterStore, NodeInfo, RoomOwner, StoreError};
use crate::handle::{GatewayError, GatewayHandle};

mod placing;
mod registration;

/// Why a Room was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostReason {
    /// Its owner stopped answering.
    NodeFailed,
    /// Its owner could not keep its lease and closed it.
    LeaseLost,
}

/// A Room that left the cluster without a normal close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostRoom {
    /// The Room.
    pub room: String,
    /// Why.
    pub reason: LostReason,
    /// The node that owned it.
    pub node: String,
    /// Its lease epoch there (0 if unknown).
    pub epoch: u64,
}

/// One lease this node holds.
#[derive(Debug, Clone, Copy)]
struct Lease {
    epoch: u64,
    deadline: Instant,
}

/// The other nodes as last read from the store.
#[derive(Debug, Default)]
struct View {
    nodes: Vec<NodeInfo>,
    store_ok: bool,
}

/// Why no node could be chosen for a new Room.
#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    /// The store is unreachable: no new Rooms.
    #[error("{0}; no new rooms can be placed until it is back")]
    Store(#[from] StoreError),
    /// No live, serving node.
    #[error("no serving node is registered in the cluster")]
    NoNode,
}

/// This node's cluster agent.
pub struct Agent {
    pub(crate) cfg: ClusterConfig,
    pub(crate) node_id: String,
    pub(crate) boot_id: String,
    pub(crate) endpoint: String,
    media: Vec<SocketAddr>,
    workers: u32,
    pub(crate) store: Arc<dyn ClusterStore>,
    pub(crate) handle: GatewayHandle,
    leases: Mutex<HashMap<String, Lease>>,
    /// Serialises claim-and-create against release, so a Room and its lease appear and vanish
    /// together.
    pub(crate) ownership: tokio::sync::Mutex<()>,
    view: Mutex<View>,
    lost: broadcast::Sender<LostRoom>,
    draining: AtomicBool,
    claims: Mutex<VecDeque<Instant>>,
    placed: Mutex<HashMap<String, VecDeque<Instant>>>,
    rng: Mutex<ChaCha20Rng>,
    /// CPU ticks per second of this process (see [`Rate`]).
    cpu: Mutex<Rate>,
    /// RTP packets forwarded per second by this node's Workers.
    forwarded: Mutex<Rate>,
    pub(crate) stop: CancellationToken,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means a panic elsewhere mid-update of plain data; keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn random_id(prefix: &str) -> String {
    let mut b = [0u8; 8];
    let _ = getrandom::getrandom(&mut b);
    let mut s = String::from(prefix);
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    s
}

impl Agent {
    /// An agent for this node; call [`Agent::spawn`] to start its loops.
    pub(crate) fn new(
        cfg: ClusterConfig,
        store: Arc<dyn ClusterStore>,
        handle: GatewayHandle,
        endpoint: String,
        media: Vec<SocketAddr>,
    ) -> Self {
        let node_id = if cfg.node_id.is_empty() {
            random_id("n_")
        } else {
            cfg.node_id.clone()
        };
        let mut seed = [0u8; 32];
        let _ = getrandom::getrandom(&mut seed);
        let (lost, _) = broadcast::channel(1024);
        Self {
            workers: media.len().max(1) as u32,
            cfg,
            node_id,
            boot_id: random_id(""),
            endpoint,
            media,
            store,
            handle,
            leases: Mutex::default(),
            ownership: tokio::sync::Mutex::new(()),
            view: Mutex::default(),
            lost,
            draining: AtomicBool::new(false),
            claims: Mutex::default(),
            placed: Mutex::default(),
            rng: Mutex::new(ChaCha20Rng::from_seed(seed)),
            cpu: Mutex::default(),
            forwarded: Mutex::default(),
            stop: CancellationToken::new(),
        }
    }

    fn ttl(&self) -> Duration {
        ClusterConfig::ms(self.cfg.lease_ttl_ms)
    }

    /// The local deadline of a lease confirmed by a command sent at `sent`.
    pub(crate) fn deadline_from(&self, sent: Instant) -> Instant {
        sent + ClusterConfig::ms(self.cfg.lease_ttl_ms - self.cfg.fence_margin_ms)
    }

    /// Starts the heartbeat, renewal and fencing loops.
    pub(crate) fn spawn(self: &Arc<Self>) {
        let a = self.clone();
        tokio::spawn(async move { a.heartbeat_loop().await });
        let a = self.clone();
        tokio::spawn(async move { a.renew_loop().await });
        let a = self.clone();
        tokio::spawn(async move { a.fence_loop().await });
    }

    // ----- leases -----

    /// The epoch of this node's lease on `room` if it holds one whose deadline has not passed.
    /// A lease past its deadline is fenced at once (in the background) and not reported.
    pub(crate) fn holds(self: &Arc<Self>, room: &str) -> Option<u64> {
        let l = *lock(&self.leases).get(room)?;
        if Instant::now() < l.deadline {
            return Some(l.epoch);
        }
        let a = self.clone();
        let room = room.to_string();
        tokio::spawn(async move { a.fence(&room, LostReason::LeaseLost).await });
        None
    }

    /// Fences `room` now if this node's lease on it is past its deadline (before serving a call
    /// for it, so a node that was paused never answers for a Room it may have lost).
    pub(crate) async fn fence_if_expired(&self, room: &str) {
        let expired = lock(&self.leases)
            .get(room)
            .is_some_and(|l| Instant::now() >= l.deadline);
        if expired {
            self.fence(room, LostReason::LeaseLost).await;
        }
    }

    pub(crate) fn insert_lease(&self, room: &str, epoch: u64, sent: Instant) {
        lock(&self.leases).insert(
            room.to_string(),
            Lease {
                epoch,
                deadline: self.deadline_from(sent),
            },
        );
        let now = Instant::now();
        let mut c = lock(&self.claims);
        c.push_back(now);
        let window = Duration::from_secs(self.cfg.rampup_secs);
        while c.front().is_some_and(|t| now.duration_since(*t) > window) {
            c.pop_front();
        }
    }

    /// Forgets a lease and deletes it in the store (best effort: it expires anyway).
    pub(crate) async fn release(&self, room: &str) {
        let Some(l) = lock(&self.leases).remove(room) else {
            return;
        };
        let owner = RoomOwner {
            node: self.node_id.clone(),
            epoch: l.epoch,
        };
        if let Err(e) = self.store.release_room(room, &owner).await {
            tracing::debug!(room, error = %e, "lease not released; it will expire");
        }
    }

    /// This node's leases: (room, epoch, time left before it fences), ordered by room.
    pub(crate) fn leases(&self) -> Vec<(String, u64, Duration)> {
        let now = Instant::now();
        let mut v: Vec<_> = lock(&self.leases)
            .iter()
            .map(|(r, l)| {
                (
                    r.clone(),
                    l.epoch,
                    l.deadline.saturating_duration_since(now),
                )
            })
            .collect();
        v.sort();
        v
    }

    /// Closes `room` here because this node lost (or may have lost) its lease.
    pub(crate) async fn fence(&self, room: &str, reason: LostReason) {
        let Some(l) = lock(&self.leases).remove(room) else {
            return;
        };
        tracing::warn!(
            room,
            epoch = l.epoch,
            ?reason,
            "lease lost: closing the room here"
        );
        if let Ok(id) = RoomId::parse(room) {
            self.close_room(id).await;
        }
        let _ = self.lost.send(LostRoom {
            room: room.to_string(),
            reason,
            node: self.node_id.clone(),
            epoch: l.epoch,
        });
        // Compare-and-delete: harmless if someone else holds it now.
        let owner = RoomOwner {
            node: self.node_id.clone(),
            epoch: l.epoch,
        };
        let _ = self.store.release_room(room, &owner).await;
    }

    /// Deletes a fenced Room on its Worker. A full command queue is retried (every 10 ms, for
    /// up to 5 s): a Room whose lease is gone must not keep running because its Worker was busy.
    async fn close_room(&self, id: RoomId) {
        for _ in 0..500 {
            match self.handle.delete_room(id.clone()).await {
                Ok(_) => return,
                Err(GatewayError::Busy { .. }) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => {
                    tracing::debug!(room = %id, error = %e, "fenced room was already gone");
                    return;
                }
            }
        }
        tracing::error!(room = %id, "could not close a fenced room: its worker stays overloaded");
    }

    /// Rooms lost on this node from now on.
    pub(crate) fn lost_rooms(&self) -> broadcast::Receiver<LostRoom> {
        self.lost.subscribe()
    }

    async fn renew_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(ClusterConfig::ms(self.cfg.renew_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = self.stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            self.renew().await;
            self.reconcile().await;
        }
    }

    /// Renews every lease; one that is no longer ours is fenced at once.
    pub(crate) async fn renew(&self) {
        let held: Vec<(String, RoomOwner)> = lock(&self.leases)
            .iter()
            .map(|(r, l)| {
                let owner = RoomOwner {
                    node: self.node_id.clone(),
                    epoch: l.epoch,
                };
                (r.clone(), owner)
            })
            .collect();
        if held.is_empty() {
            return;
        }
        let sent = Instant::now();
        match self.store.renew_rooms(&held, self.ttl()).await {
            Ok(ok) => {
                for ((room, owner), ok) in held.iter().zip(ok) {
                    if ok {
                        if let Some(l) = lock(&self.leases).get_mut(room)
                            && l.epoch == owner.epoch
                        {
                            l.deadline = self.deadline_from(sent);
                        }
                    } else {
                        self.fence(room, LostReason::LeaseLost).await;
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, rooms = held.len(), "lease renewal failed"),
        }
    }

    /// Releases the leases of Rooms that closed here (empty timeout, DeleteRoom, …).
    async fn reconcile(&self) {
        let _g = self.ownership.lock().await;
        let Ok(rooms) = self.all_rooms().await else {
            return;
        };
        let live: std::collections::HashSet<String> =
            rooms.iter().map(|r| r.id.to_string()).collect();
        let gone: Vec<String> = lock(&self.leases)
            .keys()
            .filter(|r| !live.contains(*r))
            .cloned()
            .collect();
        for r in gone {
            tracing::debug!(room = %r, "room closed: releasing its lease");
            self.release(&r).await;
        }
    }

    async fn fence_loop(self: Arc<Self>) {
        let period = ClusterConfig::ms((self.cfg.fence_margin_ms / 4).clamp(10, 100));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                () = self.stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = Instant::now();
            let expired: Vec<String> = lock(&self.leases)
                .iter()
                .filter(|(_, l)| l.deadline <= now)
                .map(|(r, _)| r.clone())
                .collect();
            for r in expired {
                self.fence(&r, LostReason::LeaseLost).await;
            }
        }
    }

    // ----- the view of the cluster (registration and load: `registration.rs`) -----

    /// Whether the last store operation of the heartbeat succeeded.
    pub(crate) fn store_ok(&self) -> bool {
        lock(&self.view).store_ok
    }

    /// Live nodes as last read (this node included once registered).
    pub(crate) fn nodes(&self) -> Vec<NodeInfo> {
        lock(&self.view).nodes.clone()
    }

    /// The live nodes read from the store now (falling back to the last heartbeat's view when the
    /// store does not answer), for callers that must not miss a node registered since that
    /// heartbeat (a cluster-wide event stream follows every node live at the call).
    pub(crate) async fn nodes_now(&self) -> Vec<NodeInfo> {
        match self.store.list_nodes().await {
            Ok(nodes) => {
                lock(&self.view).nodes = nodes.clone();
                nodes
            }
            Err(_) => self.nodes(),
        }
    }

    /// A live node by id, as last read.
    pub(crate) fn node(&self, id: &str) -> Option<NodeInfo> {
        lock(&self.view).nodes.iter().find(|n| n.id == id).cloned()
    }

    /// A live node by id; a node missing from the last read (it registered since) is looked up
    /// in the store again.
    pub(crate) async fn find_node(&self, id: &str) -> Option<NodeInfo> {
        if let Some(n) = self.node(id) {
            return Some(n);
        }
        let nodes = self.store.list_nodes().await.ok()?;
        let found = nodes.iter().find(|n| n.id == id).cloned();
        lock(&self.view).nodes = nodes;
        found
    }

    /// Stops taking new Rooms (published with the next heartbeat, sent now).
    pub(crate) async fn drain(&self) {
        self.draining.store(true, Ordering::Release);
        self.beat().await;
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Stops the loops, releases every lease and removes the registration.
    pub(crate) async fn shutdown(&self) {
        self.stop.cancel();
        let rooms: Vec<String> = lock(&self.leases).keys().cloned().collect();
        for r in rooms {
            self.release(&r).await;
        }
        if let Err(e) = self.store.deregister(&self.node_id).await {
            tracing::debug!(error = %e, "registration not removed; it will expire");
        }
    }
}
