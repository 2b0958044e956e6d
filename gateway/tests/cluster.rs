//! Cluster mode end to end: three `switchboard` processes on 127.0.0.11, .12 and .13 (gRPC and
//! media bound there) share one Debian `redis-server` started by the test. Tests run one at a
//! time (each starts its own Redis and nodes) so their lease timings do not compete for the CPU.

mod cluster_common;

use std::time::{Duration, Instant};

use cluster_common::*;
use switchboard::v1 as pb;
use tonic::Code;

/// One test at a time (an async lock: a failed test does not poison it).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Cluster {
    redis: Redis,
    nodes: Vec<Node>,
}

async fn cluster(name: &str) -> anyhow::Result<Cluster> {
    let redis = Redis::start()?;
    let mut nodes = Vec::new();
    for (id, ip) in [
        ("a", "127.0.0.11"),
        ("b", "127.0.0.12"),
        ("c", "127.0.0.13"),
    ] {
        nodes.push(Node::start(id, ip, &redis, name)?);
    }
    for n in &nodes {
        n.clients().wait_nodes(3).await?;
    }
    Ok(Cluster { redis, nodes })
}

impl Cluster {
    fn node(&self, id: &str) -> &Node {
        self.nodes.iter().find(|n| n.id == id).unwrap()
    }

    fn node_mut(&mut self, id: &str) -> &mut Node {
        self.nodes.iter_mut().find(|n| n.id == id).unwrap()
    }

    fn others(&self, id: &str) -> Vec<&Node> {
        self.nodes.iter().filter(|n| n.id != id).collect()
    }

    /// Which nodes serve `room` themselves right now.
    async fn servers_of(&self, room: &str) -> Vec<String> {
        let mut v = Vec::new();
        for n in &self.nodes {
            if let Ok(rooms) = n.local().local_rooms().await
                && rooms.iter().any(|r| r == room)
            {
                v.push(n.id.clone());
            }
        }
        v
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_and_its_sessions_live_on_one_owner_reached_through_any_node() -> anyhow::Result<()>
{
    let _g = SERIAL.lock().await;
    let c = cluster("share").await?;
    let (a, b, cc) = (
        c.node("a").clients(),
        c.node("b").clients(),
        c.node("c").clients(),
    );

    let created = a.create_room("call").await?;
    let owner = c.node(&created.owner_node_id);
    assert_eq!(
        created.owner_endpoint, owner.grpc,
        "CreateRoom names the owner's endpoint"
    );
    assert!(created.created);
    // The same CreateRoom through another node is idempotent and names the same owner.
    let again = b.create_room("call").await?;
    assert!(!again.created);
    assert_eq!(again.owner_node_id, created.owner_node_id);
    assert_eq!(c.servers_of("call").await, std::slice::from_ref(&owner.id));

    // Events of the room reach a watcher on node C; Sessions are created through B and
    // signalled through A: everything lands on the owner.
    let backend = Backend::new(&cc, &a, "call").await?;
    let (s1, p1, answer) = backend.join(&b, &a, "call", "alice", av("chat")).await?;
    let (s2, p2, _) = backend.join(&cc, &b, "call", "bob", av("chat")).await?;
    let owner_ip = owner.ip.to_string();
    assert!(
        answer
            .lines()
            .filter(|l| l.starts_with("a=candidate"))
            .all(|l| l.contains(&owner_ip)),
        "the Peer is sent to the owner's media address {owner_ip}: {answer}"
    );
    for n in &c.nodes {
        let local = n
            .local()
            .sessions
            .clone()
            .list_sessions(pb::ListSessionsRequest {
                room_id: "call".into(),
                ..Default::default()
            })
            .await;
        if n.id == owner.id {
            assert_eq!(local?.into_inner().sessions.len(), 2);
        } else {
            assert_eq!(local.unwrap_err().code(), Code::NotFound, "node {}", n.id);
        }
    }
    // A Session is found through any node.
    for n in &c.nodes {
        let s = n
            .clients()
            .sessions
            .clone()
            .get_session(pb::GetSessionRequest {
                session_id: s1.clone(),
            })
            .await?
            .into_inner()
            .session
            .unwrap();
        assert_eq!(s.room_id, "call");
    }

    wait_until(Duration::from_secs(20), || async {
        let (t1, t2) = (backend.tracks_of(&s1), backend.tracks_of(&s2));
        let (f1, f2) = (min_frames(&p2, &t1), min_frames(&p1, &t2));
        if t1.len() == 2 && t2.len() == 2 && f1 >= 20 && f2 >= 20 {
            Ok(())
        } else {
            Err(format!(
                "tracks {}/{}, frames {f1}/{f2}",
                t1.len(),
                t2.len()
            ))
        }
    })
    .await?;
    // The owner publishes what it forwards: its load in the store (read through another node)
    // shows the media of the call, at least one publisher's video and audio (~170 packets/s).
    wait_until(Duration::from_secs(10), || async {
        let status = b.status().await.map_err(|e| e.to_string())?;
        let load = status
            .nodes
            .iter()
            .find(|s| s.node_id == owner.id)
            .and_then(|s| s.load)
            .ok_or("no load for the owner")?;
        if load.forwarded_packets_per_second >= 100 {
            Ok(())
        } else {
            Err(format!("owner's published load: {load:?}"))
        }
    })
    .await?;
    // Data both ways between the Peers, through the owner.
    wait_until(Duration::from_secs(10), || async {
        if p1.with(|p| p.channel_open()) && p2.with(|p| p.channel_open()) {
            Ok(())
        } else {
            Err("channels not open".into())
        }
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(p1.with(|p| p.send_data(b"from alice")));
    assert!(p2.with(|p| p.send_data(b"from bob")));
    wait_until(Duration::from_secs(10), || async {
        let (m1, m2) = (
            p1.with(|p| p.stats.messages.clone()),
            p2.with(|p| p.stats.messages.clone()),
        );
        if m1 == [b"from bob".to_vec()] && m2 == [b"from alice".to_vec()] {
            Ok(())
        } else {
            Err(format!("alice got {m1:?}, bob got {m2:?}"))
        }
    })
    .await?;
    let kinds = backend.watch.kinds();
    assert!(
        kinds
            .iter()
            .any(|k| matches!(k, pb::event::Kind::SessionConnected(_))),
        "the watcher on C sees the owner's events: {kinds:?}"
    );
    // In the owner's order: its sequence numbers strictly increase on the relayed stream.
    let seqs: Vec<u64> = backend
        .watch
        .events
        .lock()
        .unwrap()
        .iter()
        .map(|e| e.sequence)
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");

    // A Session-filtered stream on a non-owner follows that Session on the owner.
    let non_owner = c.others(&owner.id)[1].clients();
    let s2_watch = non_owner
        .events
        .clone()
        .watch_events(pb::WatchEventsRequest {
            session_id: s2.clone(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let s2_events = std::sync::Arc::new(std::sync::Mutex::new(Vec::<pb::Event>::new()));
    let sink = s2_events.clone();
    let s2_task = tokio::spawn(async move {
        let mut st = s2_watch;
        while let Ok(Some(e)) = st.message().await {
            sink.lock().unwrap().push(e);
        }
    });

    // Backend calls by room through a non-owner: SendData reaches both Peers' channel.
    let other = c.others(&owner.id)[0].clients();
    let sent = other
        .data
        .clone()
        .send_data(pb::SendDataRequest {
            room_id: "call".into(),
            session_ids: vec![],
            label: "chat".into(),
            binary: false,
            data: b"hello from the backend".to_vec(),
            reliable: true,
        })
        .await?
        .into_inner();
    assert_eq!(sent.delivered, 2);

    // Closing bob through yet another node reaches the Session-filtered watcher.
    c.others(&owner.id)[0]
        .clients()
        .sessions
        .clone()
        .close_session(pb::CloseSessionRequest {
            session_id: s2.clone(),
        })
        .await?;
    wait_until(Duration::from_secs(10), || async {
        let ev = s2_events.lock().unwrap();
        if ev.iter().all(|e| e.session_id == s2)
            && ev
                .iter()
                .any(|e| matches!(e.kind, Some(pb::event::Kind::SessionClosed(_))))
        {
            Ok(())
        } else {
            Err(format!("{} events, none closing bob", ev.len()))
        }
    })
    .await?;
    s2_task.abort();

    // The status names the lease.
    let holders = lease_holders(&b, "call").await?;
    assert_eq!(holders.len(), 1);
    assert_eq!(holders[0].0, owner.id);
    // The status names every node as it registered: endpoint, media addresses, state, load.
    let status = b.status().await?;
    assert!(status.store_available);
    assert_eq!(status.node_id, "b");
    for n in &c.nodes {
        let s = status.nodes.iter().find(|s| s.node_id == n.id).unwrap();
        assert_eq!(s.grpc_endpoint, n.grpc);
        let media: Vec<String> = n.udp.iter().map(ToString::to_string).collect();
        assert_eq!(s.media_addresses, media);
        assert_eq!(s.state, pb::NodeState::Serving as i32);
        assert!(s.reachable, "{}", n.id);
        // As last published (bob's close may not be in the owner's figure yet).
        let load = s.load.unwrap();
        if n.id == owner.id {
            assert!(load.rooms == 1 && load.sessions >= 1, "{load:?}");
        } else {
            assert_eq!((load.rooms, load.sessions), (0, 0), "{}", n.id);
        }
    }

    // DeleteRoom through a non-owner closes it on the owner and frees the id at once.
    other
        .rooms
        .clone()
        .delete_room(pb::DeleteRoomRequest {
            room_id: "call".into(),
        })
        .await?;
    assert!(c.servers_of("call").await.is_empty());
    assert!(lease_holders(&b, "call").await?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creation_through_three_nodes_yields_one_owner_every_time() -> anyhow::Result<()>
{
    let _g = SERIAL.lock().await;
    let c = cluster("race").await?;
    let clients: Vec<Clients> = c.nodes.iter().map(Node::clients).collect();
    for i in 0..50 {
        let room = format!("race-{i}");
        let mut tasks = Vec::new();
        for cl in &clients {
            let (cl, room) = (cl.clone(), room.clone());
            tasks.push(tokio::spawn(async move { cl.create_room(&room).await }));
        }
        let mut owners = Vec::new();
        let mut created = 0;
        for t in tasks {
            let r = t.await??;
            owners.push(r.owner_node_id);
            created += usize::from(r.created);
        }
        assert!(
            owners.iter().all(|o| *o == owners[0]),
            "{room}: owners {owners:?}"
        );
        assert_eq!(created, 1, "{room}: exactly one call created it");
        assert_eq!(
            c.servers_of(&room).await,
            std::slice::from_ref(&owners[0]),
            "{room}"
        );
        let holders = lease_holders(&clients[0], &room).await?;
        assert_eq!(holders.len(), 1, "{room}: {holders:?}");
    }
    Ok(())
}

/// Waits (up to `timeout`) until `watch` has seen its Room lost.
async fn room_lost_within(watch: &Watch, timeout: Duration) -> anyhow::Result<()> {
    wait_until(timeout, || async {
        watch
            .room_lost()
            .map(|_| ())
            .ok_or_else(|| "no room_lost yet".to_string())
    })
    .await
}

/// A room on some node, watched from another: (owner id, watcher's node id).
async fn watched_room(c: &Cluster, room: &str) -> anyhow::Result<(String, String, Watch)> {
    let created = c.node("a").clients().create_room(room).await?;
    let owner = created.owner_node_id;
    let watcher = c.others(&owner)[0].id.clone();
    let watch = c.node(&watcher).clients().watch(room).await?;
    Ok((owner, watcher, watch))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_owner_loses_its_rooms_within_ten_seconds_and_they_are_recreated_elsewhere()
-> anyhow::Result<()> {
    let _g = SERIAL.lock().await;
    let mut c = cluster("kill").await?;
    let (owner, watcher, watch) = watched_room(&c, "doomed").await?;
    // An unfiltered stream follows the whole cluster: a Room created anywhere after it opened,
    // and the loss of the dead node's Rooms.
    let all = c.node(&watcher).clients().watch("").await?;
    for n in &c.nodes {
        n.clients().create_room(&format!("fresh-{}", n.id)).await?;
    }
    wait_until(Duration::from_secs(10), || async {
        let created: Vec<String> = all
            .events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| matches!(e.kind, Some(pb::event::Kind::RoomCreated(_))))
            .map(|e| e.room_id.clone())
            .collect();
        if created.len() == 3 {
            Ok(())
        } else {
            Err(format!("created {created:?}"))
        }
    })
    .await?;
    c.node_mut(&owner).kill9();
    let killed = Instant::now();
    room_lost_within(&watch, Duration::from_secs(10)).await?;
    let lost = watch.room_lost().unwrap();
    assert_eq!(lost.reason, pb::RoomLostReason::NodeFailed as i32);
    wait_until(Duration::from_secs(10), || async {
        let ev = all.events.lock().unwrap();
        if ev
            .iter()
            .any(|e| e.room_id == "doomed" && matches!(e.kind, Some(pb::event::Kind::RoomLost(_))))
        {
            Ok(())
        } else {
            Err("no room_lost on the unfiltered stream".into())
        }
    })
    .await?;
    assert_eq!(lost.node_id, owner);
    assert!(killed.elapsed() < Duration::from_secs(10));
    wait_until(Duration::from_secs(5), || async {
        match &*watch.end.lock().unwrap() {
            Some(s) if s.code() == Code::Unavailable => Ok(()),
            other => Err(format!("stream end {other:?}")),
        }
    })
    .await?;
    // Once the lease expired the room can be created again, on a survivor.
    let w = c.node(&watcher).clients();
    let again = w
        .create_room_within(Duration::from_secs(10), "doomed")
        .await?;
    assert!(again.created);
    assert_ne!(again.owner_node_id, owner);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_owner_fences_its_rooms_and_never_serves_them_again() -> anyhow::Result<()> {
    let _g = SERIAL.lock().await;
    let mut c = cluster("pause").await?;
    let (owner, watcher, watch) = watched_room(&c, "paused").await?;
    let old_epoch = lease_holders(&c.node(&watcher).clients(), "paused").await?[0].1;
    c.node_mut(&owner).stop();
    // The watcher learns of the loss while the owner is stopped (its registration expires).
    room_lost_within(&watch, Duration::from_secs(10)).await?;
    // Past the lease (4 s) the room is created again elsewhere, with a greater epoch.
    let w = c.node(&watcher).clients();
    let again = w
        .create_room_within(Duration::from_secs(10), "paused")
        .await?;
    assert_ne!(again.owner_node_id, owner);
    c.node_mut(&owner).cont();
    // On resume the old owner closes the room and never serves it again; one owner throughout.
    let o = c.node(&owner).local();
    let end = Instant::now() + Duration::from_secs(3);
    let mut fenced_at = None;
    while Instant::now() < end {
        let servers = c.servers_of("paused").await;
        assert!(servers.len() <= 1 || fenced_at.is_none(), "{servers:?}");
        if !servers.contains(&owner) && fenced_at.is_none() {
            fenced_at = Some(Instant::now());
        }
        if fenced_at.is_some() {
            assert_eq!(
                servers,
                std::slice::from_ref(&again.owner_node_id),
                "after the fence"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(fenced_at.is_some(), "the old owner still serves the room");
    let get = o
        .rooms
        .clone()
        .get_room(pb::GetRoomRequest {
            room_id: "paused".into(),
        })
        .await;
    assert_eq!(get.unwrap_err().code(), Code::NotFound);
    assert!(c.node(&owner).log_text().contains("lease lost"));
    let holders = lease_holders(&w, "paused").await?;
    assert_eq!(holders.len(), 1);
    assert_eq!(holders[0].0, again.owner_node_id);
    assert!(
        holders[0].1 > old_epoch,
        "epochs grow: {holders:?} vs {old_epoch}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_means_no_new_rooms_never_a_split_and_recovery_when_it_returns()
-> anyhow::Result<()> {
    let _g = SERIAL.lock().await;
    let mut c = cluster("outage").await?;
    let a = c.node("a").clients();
    let owner = a.create_room("before").await?.owner_node_id;
    let other = c.others(&owner)[0].clients();
    let get = |cl: Clients| async move {
        cl.rooms
            .clone()
            .get_room(pb::GetRoomRequest {
                room_id: "before".into(),
            })
            .await
    };
    get(other.clone()).await?;
    c.redis.kill();
    // No new rooms, with a clear status.
    let e = a.create_room("during").await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert!(e.message().contains("cluster store unavailable"), "{e:?}");
    // Calls for the existing room still reach its owner (until it fences).
    if let Err(e) = get(other.clone()).await {
        for n in &c.nodes {
            eprintln!("--- {}\n{}", n.id, n.log_text());
        }
        panic!("{e:?}");
    }
    // The owner fences its room once it could not renew for lease - margin; never two servers.
    wait_until(Duration::from_secs(10), || async {
        let s = c.servers_of("before").await;
        assert!(s.len() <= 1, "{s:?}");
        if s.is_empty() {
            Ok(())
        } else {
            Err(format!("still on {s:?}"))
        }
    })
    .await?;
    for n in &mut c.nodes {
        assert!(n.alive(), "node {} crashed", n.id);
    }
    c.redis.restart()?;
    for n in &c.nodes {
        n.clients().wait_nodes(3).await?;
    }
    let again = a.create_room("before").await?;
    assert!(again.created);
    assert_eq!(c.servers_of("before").await.len(), 1);
    a.create_room("after").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placement_keeps_new_rooms_off_the_loaded_node() -> anyhow::Result<()> {
    let _g = SERIAL.lock().await;
    let c = cluster("load").await?;
    let a = c.node("a").clients();
    let heavy = a.create_room("heavy").await?.owner_node_id;
    for i in 0..20 {
        a.sessions
            .clone()
            .create_session(pb::CreateSessionRequest {
                room_id: "heavy".into(),
                participant_id: format!("p{i}"),
                metadata: String::new(),
                permissions: None,
                manual_subscribe: false,
            })
            .await?;
    }
    // The load as published in the store (another node's status reads it from there).
    let other = c.others(&heavy)[0].clients();
    wait_until(Duration::from_secs(10), || async {
        let s = other.status().await.map_err(|e| e.to_string())?;
        let n = s.nodes.iter().find(|n| n.node_id == heavy).unwrap();
        match &n.load {
            Some(l) if l.sessions == 20 => Ok(()),
            l => Err(format!("load {l:?}")),
        }
    })
    .await?;
    let mut placed = Vec::new();
    for i in 0..6 {
        let via = &c.nodes[i % 3];
        placed.push(
            via.clients()
                .create_room(&format!("new-{i}"))
                .await?
                .owner_node_id,
        );
    }
    let status = other.status().await?;
    assert!(
        !placed.contains(&heavy),
        "{heavy} is loaded: {placed:?}; nodes: {:?}",
        status.nodes
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_with_sigterm_hands_its_rooms_back_at_once() -> anyhow::Result<()> {
    let _g = SERIAL.lock().await;
    let mut c = cluster("drain").await?;
    let owner = c
        .node("a")
        .clients()
        .create_room("handed")
        .await?
        .owner_node_id;
    let other = c.others(&owner)[0].clients();
    c.node_mut(&owner).term();
    wait_until(Duration::from_secs(10), || {
        let alive = c.node_mut(&owner).alive();
        async move {
            if alive {
                Err("still running".into())
            } else {
                Ok(())
            }
        }
    })
    .await?;
    // Its lease and registration are gone already (not expired later): the room is created
    // again at the first attempt, elsewhere.
    assert!(lease_holders(&other, "handed").await?.is_empty());
    let again = other.create_room("handed").await?;
    assert!(again.created);
    assert_ne!(again.owner_node_id, owner);
    assert_eq!(other.status().await?.nodes.len(), 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_rooms_go_to_the_hinted_region_else_the_callers_else_anywhere() -> anyhow::Result<()> {
    let _g = SERIAL.lock().await;
    let redis = Redis::start()?;
    let mut nodes = Vec::new();
    for (id, ip, region) in [
        ("a", "127.0.0.11", "us"),
        ("b", "127.0.0.12", "us"),
        ("c", "127.0.0.13", "eu"),
    ] {
        nodes.push(Node::start_in(id, ip, &redis, "regions", region)?);
    }
    for n in &nodes {
        n.clients().wait_nodes(3).await?;
    }
    let (a, c) = (nodes[0].clients(), nodes[2].clients());
    let status = a.status().await?;
    let regions: Vec<(String, String)> = status
        .nodes
        .iter()
        .map(|n| (n.node_id.clone(), n.region.clone()))
        .collect();
    assert!(regions.contains(&("c".into(), "eu".into())), "{regions:?}");
    assert!(regions.contains(&("a".into(), "us".into())), "{regions:?}");
    for i in 0..6 {
        // Named region: its only node, whoever is called.
        let r = a.create_room_in(&format!("eu-{i}"), "eu").await?;
        assert_eq!(r.owner_node_id, "c", "eu-{i}");
        // No hint: the region of the node called.
        let r = c.create_room(&format!("near-c-{i}")).await?;
        assert_eq!(r.owner_node_id, "c", "near-c-{i}");
        let r = c.create_room_in(&format!("us-{i}"), "us").await?;
        assert!(
            ["a", "b"].contains(&r.owner_node_id.as_str()),
            "us-{i}: {r:?}"
        );
        // A region without nodes: anywhere, still one owner.
        let r = a.create_room_in(&format!("ap-{i}"), "ap").await?;
        assert!(!r.owner_node_id.is_empty(), "ap-{i}: {r:?}");
    }
    let err = a.create_room_in("bad-hint", "eu west").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("region_hint"), "{err:?}");
    Ok(())
}

/// Waits (10 s) until `node`'s live event subscriptions are above `base` (`above`), or again at
/// most `base`.
async fn subscriptions(node: &Node, base: u64, above: bool) -> anyhow::Result<()> {
    wait_until(Duration::from_secs(10), || async {
        match node.live_subscribers().await {
            Ok(k) if (k > base) == above => Ok(()),
            r => Err(format!(
                "{}: live subscriptions {r:?}, {base} before",
                node.id
            )),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_through_another_node_ends_there_and_on_the_owner_when_its_reader_goes_away()
-> anyhow::Result<()> {
    let _g = SERIAL.lock().await;
    let c = cluster("watch-end").await?;
    let created = c.node("a").clients().create_room("quiet").await?;
    let owner = c.node(&created.owner_node_id);
    let via = c.others(&owner.id)[0];
    let base = owner.live_subscribers().await?;
    // Relayed: `via` holds the watcher, the owner one upstream stream for it. Then directly on
    // the owner (served there, with its lost-Room watch). The Room stays and stays quiet: no
    // event will tell any task that the reader left.
    for through in [via, owner] {
        let watch = through.clients().watch("quiet").await?;
        subscriptions(owner, base, true).await?;
        drop(watch);
        subscriptions(owner, base, false).await?;
    }
    // Cluster-wide (unfiltered) through `via`: one upstream on each other node, all ended when
    // the reader goes away.
    let mut bases = Vec::new();
    for n in &c.nodes {
        bases.push(n.live_subscribers().await?);
    }
    let all = via
        .clients()
        .events
        .clone()
        .watch_events(pb::WatchEventsRequest::default())
        .await?
        .into_inner();
    for (n, base) in c.nodes.iter().zip(&bases) {
        subscriptions(n, *base, true).await?;
    }
    drop(all);
    for (n, base) in c.nodes.iter().zip(&bases) {
        subscriptions(n, *base, false).await?;
    }
    Ok(())
}
