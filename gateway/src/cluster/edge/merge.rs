//! An unfiltered `WatchEvents` in cluster mode: this node's own stream merged with one upstream
//! stream from every other live node, so one stream follows every Room of the cluster. Each Room's
//! events come from its owner's stream, so they stay in order. A node's `GatewayDraining` is not
//! passed on (only this node's ends the stream); when a node's stream breaks, every Room it was
//! known to hold gets `RoomLost { NODE_FAILED }`. Every node registered in the store when the call
//! is made is followed from the start (read from the store, not the last heartbeat's view); nodes
//! that register later are followed from the next heartbeat on; a node whose stream broke is followed again only after a restart (new boot
//! id), so its losses are reported once. Sequences are per node, so `after_sequence` resumes this
//! node's part only; the other nodes are followed live from the call on.

use std::collections::HashSet;
use std::time::Duration;

use switchboard::v1 as pb;
use switchboard::v1::event_service_client::EventServiceClient;
use switchboard::v1::room_service_client::RoomServiceClient;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataMap;
use tonic::{Request, Status, Streaming};

use super::ClusterEdge;
use super::events::{EventStream, Sink, room_lost};
use crate::cluster::agent::LostReason;
use crate::cluster::store::NodeInfo;

impl ClusterEdge {
    /// The cluster-wide stream (see the module docs).
    pub(super) async fn watch_cluster(
        &self,
        req: Request<pb::WatchEventsRequest>,
    ) -> Result<EventStream, Status> {
        let meta = req.metadata().clone();
        let mut local = self.watch_here(req).await?;
        let (tx, out) = self.sink();
        let stop = CancellationToken::new();
        let (t, s) = (tx.clone(), stop.clone());
        tokio::spawn(async move {
            // This node's stream decides the end (its GatewayDraining, or a slow reader).
            loop {
                tokio::select! {
                    () = s.cancelled() => return,
                    item = local.next() => {
                        let Some(item) = item else { break };
                        if !t.deliver(item).await {
                            break;
                        }
                    }
                }
            }
            s.cancel();
        });
        // Follow the nodes live now before answering, so every event after this call is seen.
        let mut followed: HashSet<(String, String)> = HashSet::new();
        let mut opening = tokio::task::JoinSet::new();
        for n in self.agent.nodes_now().await {
            if n.id != self.agent.node_id && followed.insert((n.id.clone(), n.boot_id.clone())) {
                let (edge, meta) = (self.clone(), meta.clone());
                opening.spawn(async move { edge.open(n, &meta).await });
            }
        }
        while let Some(res) = opening.join_next().await {
            if let Ok(Some((node, upstream, rooms))) = res {
                let (edge, tx, stop) = (self.clone(), tx.clone(), stop.clone());
                tokio::spawn(async move { edge.pump_node(node, upstream, rooms, tx, stop).await });
            }
        }
        let edge = self.clone();
        tokio::spawn(async move { edge.follow_nodes(meta, followed, tx, stop).await });
        Ok(out)
    }

    /// Attaches an upstream to every live node not followed yet, every heartbeat, until `stop`.
    async fn follow_nodes(
        self,
        meta: MetadataMap,
        mut followed: HashSet<(String, String)>,
        tx: Sink,
        stop: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(Duration::from_millis(self.agent.cfg.heartbeat_ms));
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tx.closed() => {
                    stop.cancel();
                    return;
                }
                _ = tick.tick() => {}
            }
            for n in self.agent.nodes() {
                if n.id == self.agent.node_id || !followed.insert((n.id.clone(), n.boot_id.clone()))
                {
                    continue;
                }
                let edge = self.clone();
                let (meta, tx, stop) = (meta.clone(), tx.clone(), stop.clone());
                tokio::spawn(async move {
                    if let Some((node, upstream, rooms)) = edge.open(n, &meta).await {
                        edge.pump_node(node, upstream, rooms, tx, stop).await;
                    }
                });
            }
        }
    }

    /// Opens a node's unfiltered stream and reads the Rooms it holds (after subscribing, so none
    /// is missed in between).
    async fn open(
        &self,
        node: NodeInfo,
        meta: &MetadataMap,
    ) -> Option<(NodeInfo, Streaming<pb::Event>, HashSet<String>)> {
        let ch = self.peers.channel(&node.grpc_endpoint).ok()?;
        let mut r = self.forward(meta, pb::WatchEventsRequest::default());
        r.metadata_mut().remove("grpc-timeout");
        let opened = tokio::time::timeout(
            self.peers.timeout,
            EventServiceClient::new(ch.clone()).watch_events(r),
        )
        .await;
        let Ok(Ok(upstream)) = opened else {
            tracing::debug!(node = %node.id, "cannot follow a node's events");
            return None;
        };
        let mut rooms: HashSet<String> = HashSet::new();
        let mut client = RoomServiceClient::new(ch);
        let mut token = String::new();
        // Page by page (bounded: 10 000 pages of the node's largest page size).
        for _ in 0..10_000 {
            let q = pb::ListRoomsRequest {
                page_size: u32::MAX,
                page_token: token,
            };
            let Ok(page) = client.list_rooms(self.forward(meta, q)).await else {
                break;
            };
            let page = page.into_inner();
            rooms.extend(page.rooms.into_iter().map(|r| r.room_id));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        Some((node, upstream.into_inner(), rooms))
    }

    /// Copies one node's events into the merged stream; reports its Rooms lost if it breaks.
    async fn pump_node(
        self,
        node: NodeInfo,
        mut upstream: Streaming<pb::Event>,
        mut rooms: HashSet<String>,
        tx: Sink,
        stop: CancellationToken,
    ) {
        loop {
            let msg = tokio::select! {
                () = stop.cancelled() => return,
                m = upstream.message() => m,
            };
            match msg {
                Ok(Some(ev)) => {
                    match &ev.kind {
                        Some(pb::event::Kind::GatewayDraining(_)) => continue,
                        Some(pb::event::Kind::RoomClosed(_) | pb::event::Kind::RoomLost(_)) => {
                            rooms.remove(&ev.room_id);
                        }
                        _ if !ev.room_id.is_empty() => {
                            rooms.insert(ev.room_id.clone());
                        }
                        _ => {}
                    }
                    if !tx.deliver(Ok(ev)).await {
                        stop.cancel();
                        return;
                    }
                }
                // This stream fell behind on that node: the merged stream has lost events.
                Err(s) if s.code() == tonic::Code::DataLoss => {
                    let _ = tx.deliver(Err(s)).await;
                    stop.cancel();
                    return;
                }
                // Ended or broke: a graceful stop closed its Rooms first (nothing left here).
                Ok(None) | Err(_) => break,
            }
        }
        let mut lost: Vec<String> = rooms.into_iter().collect();
        lost.sort();
        for room in lost {
            tracing::info!(room, node = %node.id, "room lost with its node");
            let ev = room_lost(&room, LostReason::NodeFailed, &node.id, 0);
            if !tx.deliver(Ok(ev)).await {
                stop.cancel();
                return;
            }
        }
    }
}
