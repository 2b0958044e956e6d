//! The agent's decisions against an in-memory [`ClusterStore`] and a real (single-Worker) gateway:
//! fencing when the store says the lease is someone else's or the deadline passed, and placement
//! that never picks a draining node. No Redis and no timing: each step is driven by hand.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use switchboard_core::{RoomId, RoomSpec};

use super::agent::{Agent, LostReason};
use super::store::{Claim, ClusterStore, NodeInfo, NodeLoad, NodeState, RoomOwner, StoreError};
use super::{ClusterConfig, Region};
use crate::Gateway;

#[derive(Default)]
struct MemStore {
    nodes: Mutex<BTreeMap<String, NodeInfo>>,
    rooms: Mutex<HashMap<String, RoomOwner>>,
    epoch: AtomicU64,
}

#[tonic::async_trait]
impl ClusterStore for MemStore {
    async fn heartbeat(&self, node: &NodeInfo, _ttl: Duration) -> Result<(), StoreError> {
        self.nodes
            .lock()
            .unwrap()
            .insert(node.id.clone(), node.clone());
        Ok(())
    }
    async fn deregister(&self, node: &str) -> Result<(), StoreError> {
        self.nodes.lock().unwrap().remove(node);
        Ok(())
    }
    async fn list_nodes(&self) -> Result<Vec<NodeInfo>, StoreError> {
        Ok(self.nodes.lock().unwrap().values().cloned().collect())
    }
    async fn claim_room(&self, room: &str, node: &str, _: Duration) -> Result<Claim, StoreError> {
        let mut rooms = self.rooms.lock().unwrap();
        if let Some(o) = rooms.get(room) {
            return Ok(Claim::Owned(o.clone()));
        }
        let epoch = self.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        rooms.insert(
            room.into(),
            RoomOwner {
                node: node.into(),
                epoch,
            },
        );
        Ok(Claim::Claimed { epoch })
    }
    async fn renew_rooms(
        &self,
        leases: &[(String, RoomOwner)],
        _: Duration,
    ) -> Result<Vec<bool>, StoreError> {
        let rooms = self.rooms.lock().unwrap();
        Ok(leases
            .iter()
            .map(|(r, o)| rooms.get(r) == Some(o))
            .collect())
    }
    async fn release_room(&self, room: &str, owner: &RoomOwner) -> Result<bool, StoreError> {
        let mut rooms = self.rooms.lock().unwrap();
        let held = rooms.get(room) == Some(owner);
        if held {
            rooms.remove(room);
        }
        Ok(held)
    }
    async fn room_owner(&self, room: &str) -> Result<Option<RoomOwner>, StoreError> {
        Ok(self.rooms.lock().unwrap().get(room).cloned())
    }
}

async fn setup() -> (Gateway, Arc<MemStore>, Arc<Agent>) {
    let c = crate::test_support::loopback_config();
    let gw = Gateway::start(c).await.unwrap();
    let store = Arc::new(MemStore::default());
    let cfg = ClusterConfig {
        node_id: "me".into(),
        ..ClusterConfig::default()
    };
    let agent = Arc::new(Agent::new(
        cfg,
        store.clone(),
        gw.handle(),
        "http://127.0.0.1:1".into(),
        gw.udp_addrs().to_vec(),
    ));
    (gw, store, agent)
}

/// Claims `room` for the agent and creates it, the way `CreateRoom` does; returns the epoch.
async fn own(gw: &Gateway, store: &MemStore, agent: &Agent, room: &str, sent: Instant) -> u64 {
    let Claim::Claimed { epoch } = store
        .claim_room(room, "me", Duration::from_secs(15))
        .await
        .unwrap()
    else {
        panic!("claimed");
    };
    agent.insert_lease(room, epoch, sent);
    gw.handle()
        .create_room(RoomSpec {
            id: Some(RoomId::parse(room).unwrap()),
            max_sessions: None,
            empty_timeout: None,
            metadata: String::new(),
            created_at: SystemTime::now(),
            backend_data_labels: Vec::new(),
        })
        .await
        .unwrap();
    epoch
}

fn exists(rooms: &[switchboard_core::RoomInfo], id: &str) -> bool {
    rooms.iter().any(|r| r.id.to_string() == id)
}

#[tokio::test]
async fn a_renewal_that_finds_the_lease_taken_closes_the_room_here() {
    let (gw, store, agent) = setup().await;
    let mut lost = agent.lost_rooms();
    let epoch = own(&gw, &store, &agent, "r1", Instant::now()).await;
    let kept = own(&gw, &store, &agent, "r2", Instant::now()).await;
    // Another node holds r1 now (a failover lost our key and someone claimed it).
    let other = RoomOwner {
        node: "other".into(),
        epoch: epoch + 10,
    };
    store
        .rooms
        .lock()
        .unwrap()
        .insert("r1".into(), other.clone());
    agent.renew().await;
    let rooms = agent.all_rooms().await.unwrap();
    assert!(!exists(&rooms, "r1"), "r1 must be closed here");
    assert!(exists(&rooms, "r2"), "r2 is still ours");
    let l = lost.try_recv().unwrap();
    assert_eq!(
        (l.room.as_str(), l.reason, l.epoch),
        ("r1", LostReason::LeaseLost, epoch)
    );
    assert_eq!(agent.holds("r1"), None);
    assert_eq!(agent.holds("r2"), Some(kept));
    // The other node's lease is untouched (release is compare-and-delete).
    assert_eq!(store.room_owner("r1").await.unwrap(), Some(other));
    gw.shutdown().await;
}

#[tokio::test]
async fn a_lease_past_its_deadline_is_fenced_before_any_call() {
    let (gw, store, agent) = setup().await;
    let ttl = Duration::from_millis(agent.cfg.lease_ttl_ms);
    // Confirmed by a command sent a whole lease ago: the local deadline has passed.
    let sent = Instant::now().checked_sub(ttl).unwrap();
    own(&gw, &store, &agent, "late", sent).await;
    assert_eq!(agent.holds("late"), None);
    agent.fence_if_expired("late").await;
    let rooms = agent.all_rooms().await.unwrap();
    assert!(!exists(&rooms, "late"));
    assert_eq!(store.room_owner("late").await.unwrap(), None, "released");
    gw.shutdown().await;
}

fn node(id: &str, state: NodeState, sessions: u32) -> NodeInfo {
    in_region(id, "", state, sessions)
}

fn in_region(id: &str, region: &str, state: NodeState, sessions: u32) -> NodeInfo {
    NodeInfo {
        id: id.into(),
        grpc_endpoint: format!("http://{id}:1"),
        region: region.into(),
        media_addrs: Vec::new(),
        state,
        version: String::new(),
        boot_id: String::new(),
        workers: 1,
        load: NodeLoad {
            sessions,
            ..NodeLoad::default()
        },
        heartbeat_unix_ms: 0,
    }
}

#[tokio::test]
async fn placement_never_picks_a_draining_node() {
    let (gw, store, agent) = setup().await;
    agent.beat().await;
    for n in [
        node("idle-but-draining", NodeState::Draining, 0),
        node("busy", NodeState::Serving, 50),
    ] {
        store.heartbeat(&n, Duration::from_secs(6)).await.unwrap();
    }
    for _ in 0..50 {
        let p = agent.place(None).await.unwrap();
        assert_ne!(p.id, "idle-but-draining");
    }
    // Once this node drains too, only the busy one is left.
    agent.drain().await;
    for _ in 0..20 {
        assert_eq!(agent.place(None).await.unwrap().id, "busy");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn placement_keeps_to_the_named_region_while_a_node_there_serves() {
    let (gw, store, agent) = setup().await;
    agent.beat().await;
    let region = |s: &str| Region::parse(s).unwrap();
    for n in [
        in_region("eu-busy", "eu", NodeState::Serving, 500),
        in_region("eu-draining", "eu", NodeState::Draining, 0),
        in_region("us-idle", "us", NodeState::Serving, 0),
    ] {
        store.heartbeat(&n, Duration::from_secs(6)).await.unwrap();
    }
    for _ in 0..30 {
        // The region's only serving node, however loaded; never a draining one.
        assert_eq!(
            agent.place(region("eu").as_ref()).await.unwrap().id,
            "eu-busy"
        );
        assert_eq!(
            agent.place(region("us").as_ref()).await.unwrap().id,
            "us-idle"
        );
    }
    // A region without a serving node, or none named (this node has no region): anywhere.
    let mut seen = std::collections::HashSet::new();
    for _ in 0..60 {
        seen.insert(agent.place(region("ap").as_ref()).await.unwrap().id);
        seen.insert(agent.place(None).await.unwrap().id);
    }
    assert!(seen.contains("us-idle") && seen.contains("me"), "{seen:?}");
    assert!(!seen.contains("eu-draining"), "{seen:?}");
    gw.shutdown().await;
}
