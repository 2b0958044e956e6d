//! `WatchEvents` in cluster mode. A stream about a Room (or Session) owned here is the local stream
//! plus this node's `RoomLost` announcements; one about a Room owned elsewhere is fed by a
//! [`Relay`]: one upstream stream per Room from its owner, fanned out to every local watcher, in
//! the owner's order. When the owner dies (the upstream breaks, its registration or lease
//! vanishes) the watchers get `RoomLost { NODE_FAILED }` and the stream ends with UNAVAILABLE.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use prost::Message;
use switchboard::v1 as pb;
use switchboard::v1::event_service_client::EventServiceClient;
use switchboard::v1::event_service_server::EventService;
use tokio::sync::{Semaphore, broadcast, mpsc};
use tokio_stream::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use super::{ClusterEdge, Route, is_forwarded};
use crate::cluster::agent::LostReason;
use crate::cluster::store::NodeInfo;

pub(super) type EventStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send>>;
pub(super) type Item = Result<pb::Event, Status>;

/// The `RoomLost` event for `room`.
pub(super) fn room_lost(room: &str, reason: LostReason, node: &str, epoch: u64) -> pb::Event {
    pb::Event {
        // Made by the node serving the stream, outside every gateway's sequence.
        boot_id: String::new(),
        sequence: 0,
        time: Some(SystemTime::now().into()),
        room_id: room.to_string(),
        session_id: String::new(),
        kind: Some(pb::event::Kind::RoomLost(pb::RoomLost {
            reason: match reason {
                LostReason::NodeFailed => pb::RoomLostReason::NodeFailed,
                LostReason::LeaseLost => pb::RoomLostReason::LeaseLost,
            } as i32,
            node_id: node.to_string(),
            epoch,
        })),
    }
}

fn lost_status(room: &str) -> Status {
    Status::unavailable(format!(
        "room {room} was lost with its node; re-create it and watch again"
    ))
}

/// One upstream event stream from a Room's owner, shared by this node's watchers.
struct Relay {
    tx: broadcast::Sender<Item>,
    done: CancellationToken,
}

/// The open relays, by key (`r:<room>` or `s:<session>`).
pub(super) struct Relays {
    map: tokio::sync::Mutex<HashMap<String, Arc<Relay>>>,
    max: usize,
}

impl Relays {
    pub(super) fn new(max: usize) -> Self {
        Self {
            map: tokio::sync::Mutex::default(),
            max,
        }
    }
}

/// The watcher side of one stream: a queue bounded in events (`limits.event_buffer`) and in
/// encoded bytes (`limits.event_stream_bytes`), like a local stream. A backend that does not read
/// fills it and its stream ends with DATA_LOSS.
#[derive(Clone)]
pub(super) struct Sink {
    tx: mpsc::Sender<Item>,
    bytes: Arc<Semaphore>,
    max_bytes: usize,
}

impl Sink {
    /// A sink and the stream that drains it (each event read gives its bytes back).
    pub(super) fn new(events: usize, max_bytes: usize) -> (Self, EventStream) {
        let (tx, rx) = mpsc::channel::<Item>(events.max(1));
        let bytes = Arc::new(Semaphore::new(max_bytes));
        let give_back = bytes.clone();
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx).map(move |item: Item| {
            if let Ok(ev) = &item {
                give_back.add_permits(ev.encoded_len().min(max_bytes));
            }
            item
        });
        let sink = Self {
            tx,
            bytes,
            max_bytes,
        };
        (sink, Box::pin(stream))
    }

    /// Queues `item`. Returns whether the stream goes on: an error ends it, and so does a full
    /// queue (then DATA_LOSS).
    pub(super) async fn deliver(&self, item: Item) -> bool {
        let last = item.is_err();
        if let Ok(ev) = &item {
            // An event larger than the bound alone still passes when nothing else is queued.
            let n = u32::try_from(ev.encoded_len().min(self.max_bytes)).unwrap_or(u32::MAX);
            match self.bytes.clone().try_acquire_many_owned(n) {
                Ok(p) => p.forget(),
                Err(_) => {
                    let _ = self
                        .tx
                        .send(Err(Status::data_loss(format!(
                            "the backend read events too slowly: more than {} bytes queued \
                             (limits.event_stream_bytes); reconnect and re-read state",
                            self.max_bytes
                        ))))
                        .await;
                    return false;
                }
            }
        }
        match self.tx.try_send(item) {
            Ok(()) => !last,
            Err(mpsc::error::TrySendError::Full(_)) => {
                let _ = self
                    .tx
                    .send(Err(Status::data_loss(
                        "the backend read events too slowly (limits.event_buffer); reconnect \
                         and re-read state",
                    )))
                    .await;
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Resolves when the watcher went away.
    pub(super) async fn closed(&self) {
        self.tx.closed().await;
    }
}

impl ClusterEdge {
    /// A watcher's bounded queue, with this gateway's stream limits.
    pub(super) fn sink(&self) -> (Sink, EventStream) {
        let bytes = self.agent.handle.inner.bus.limits().stream_bytes;
        Sink::new(self.event_buffer, bytes)
    }

    /// The local stream for `req`, merged with this node's `RoomLost` announcements for the Room
    /// watched (every Room when unfiltered).
    pub(super) async fn watch_here(
        &self,
        req: Request<pb::WatchEventsRequest>,
    ) -> Result<EventStream, Status> {
        let r = req.get_ref().clone();
        let room = if !r.room_id.is_empty() {
            Some(r.room_id.clone())
        } else if let Ok(id) = switchboard_core::SessionId::parse(&r.session_id) {
            self.agent
                .handle
                .get_session(id)
                .await
                .ok()
                .map(|s| s.room.to_string())
        } else {
            None
        };
        let filtered = !r.room_id.is_empty() || !r.session_id.is_empty();
        // Subscribe to both before answering, so nothing after this call is missed.
        let mut lost = self.agent.lost_rooms();
        let mut local = self.local.watch_events(req).await?.into_inner();
        let (tx, stream) = self.sink();
        tokio::spawn(async move {
            loop {
                // Unbiased, so lost-Room notices are not starved by a busy local stream.
                let item = tokio::select! {
                    () = tx.closed() => return,
                    ev = local.next() => match ev {
                        Some(ev) => ev,
                        None => return,
                    },
                    l = lost.recv() => match l {
                        Ok(l) if room.as_ref().is_none_or(|r| *r == l.room) => {
                            let ev = room_lost(&l.room, l.reason, &l.node, l.epoch);
                            if filtered {
                                if tx.deliver(Ok(ev)).await {
                                    let _ = tx.deliver(Err(lost_status(&l.room))).await;
                                }
                                return;
                            }
                            Ok(ev)
                        }
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                };
                if !tx.deliver(item).await {
                    return;
                }
            }
        });
        Ok(stream)
    }

    /// A watcher of the relay for `key` (opened on `node` if none is open).
    async fn watch_relayed(
        &self,
        key: String,
        room: String,
        node: NodeInfo,
        req: Request<pb::WatchEventsRequest>,
    ) -> Result<EventStream, Status> {
        let mut rx = {
            let mut map = self.relays.map.lock().await;
            match map.get(&key) {
                Some(r) if !r.done.is_cancelled() => r.tx.subscribe(),
                _ => {
                    map.retain(|_, r| !r.done.is_cancelled());
                    if map.len() >= self.relays.max {
                        return Err(Status::resource_exhausted(format!(
                            "this node relays events of {} rooms already (cluster.max_relays)",
                            self.relays.max
                        )));
                    }
                    let (meta, _, msg) = req.into_parts();
                    let ch = self.peers.channel(&node.grpc_endpoint)?;
                    let mut r = self.forward(&meta, msg);
                    // The stream lives as long as its watchers: no deadline on the call (opening
                    // it is bounded below).
                    r.metadata_mut().remove("grpc-timeout");
                    let upstream = tokio::time::timeout(
                        self.peers.timeout,
                        EventServiceClient::new(ch).watch_events(r),
                    )
                    .await
                    .map_err(|_| Status::unavailable(format!("node {} did not answer", node.id)))??
                    .into_inner();
                    let (tx, rx) = broadcast::channel(self.event_buffer.max(16));
                    let relay = Arc::new(Relay {
                        tx,
                        done: CancellationToken::new(),
                    });
                    map.insert(key.clone(), relay.clone());
                    let edge = self.clone();
                    tokio::spawn(async move { edge.pump(relay, upstream, room, node).await });
                    rx
                }
            }
        };
        let (tx, out) = self.sink();
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    biased;
                    () = tx.closed() => return,
                    next = rx.recv() => next,
                };
                let item = match next {
                    Ok(item) => item,
                    Err(broadcast::error::RecvError::Closed) => return,
                    Err(broadcast::error::RecvError::Lagged(n)) => Err(Status::data_loss(format!(
                        "the event stream fell behind and lost {n} events; reconnect and \
                         re-read state"
                    ))),
                };
                if !tx.deliver(item).await {
                    return;
                }
            }
        });
        Ok(out)
    }

    /// Copies the owner's events to the relay's watchers until the Room is gone or nobody watches.
    async fn pump(
        self,
        relay: Arc<Relay>,
        mut upstream: Streaming<pb::Event>,
        room: String,
        node: NodeInfo,
    ) {
        let mut check = tokio::time::interval(Duration::from_millis(self.agent.cfg.heartbeat_ms));
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut suspect = false;
        let epoch = match self.agent.store.room_owner(&room).await {
            Ok(Some(o)) if o.node == node.id => o.epoch,
            _ => 0,
        };
        let lost = |why: &str| {
            tracing::info!(room, node = %node.id, why, "room lost with its node");
            let _ = relay.tx.send(Ok(room_lost(
                &room,
                LostReason::NodeFailed,
                &node.id,
                epoch,
            )));
            let _ = relay.tx.send(Err(lost_status(&room)));
        };
        loop {
            tokio::select! {
                m = upstream.message() => match m {
                    Ok(Some(ev)) => {
                        let end = matches!(
                            ev.kind,
                            Some(pb::event::Kind::RoomLost(_)) | Some(pb::event::Kind::RoomClosed(_))
                        ) && ev.room_id == room;
                        let lost_event = matches!(ev.kind, Some(pb::event::Kind::RoomLost(_)));
                        let _ = relay.tx.send(Ok(ev));
                        if lost_event {
                            let _ = relay.tx.send(Err(lost_status(&room)));
                        }
                        if end {
                            break;
                        }
                    }
                    Ok(None) => {
                        lost("the owner ended the stream");
                        break;
                    }
                    Err(s) => {
                        lost(s.message());
                        break;
                    }
                },
                _ = check.tick() => {
                    if relay.tx.receiver_count() == 0 {
                        break;
                    }
                    if self.agent.store_ok() && self.agent.node(&node.id).is_none() {
                        lost("the owner's registration expired");
                        break;
                    }
                    match self.agent.store.room_owner(&room).await {
                        Ok(Some(o)) if o.node == node.id => suspect = false,
                        // Gone or moved: twice in a row, so a normal close whose RoomClosed is
                        // still on its way is not mistaken for a loss.
                        Ok(_) if suspect => {
                            lost("the owner's lease is gone");
                            break;
                        }
                        Ok(_) => suspect = true,
                        Err(_) => {}
                    }
                }
            }
        }
        relay.done.cancel();
        let mut map = self.relays.map.lock().await;
        map.retain(|_, r| !Arc::ptr_eq(r, &relay));
    }
}

#[tonic::async_trait]
impl EventService for ClusterEdge {
    type WatchEventsStream = EventStream;

    async fn watch_events(
        &self,
        req: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let r = req.get_ref().clone();
        if is_forwarded(&req) {
            return Ok(Response::new(self.watch_here(req).await?));
        }
        if r.room_id.is_empty() && r.session_id.is_empty() {
            return Ok(Response::new(self.watch_cluster(req).await?));
        }
        let (route, key, room) = if !r.session_id.is_empty() {
            let route = self.route_session(&req, &r.session_id).await?;
            // The relay watches the Session's Room for losses: ask its node which Room it is.
            let room = match &route {
                Route::Local => String::new(),
                Route::Remote(n) => {
                    let q = self.forward(
                        req.metadata(),
                        pb::GetSessionRequest {
                            session_id: r.session_id.clone(),
                        },
                    );
                    self.sessions_client(n)?
                        .get_session(q)
                        .await?
                        .into_inner()
                        .session
                        .map(|s| s.room_id)
                        .unwrap_or_default()
                }
            };
            (route, format!("s:{}", r.session_id), room)
        } else {
            let route = self.route_room(&req, &r.room_id).await?;
            (route, format!("r:{}", r.room_id), r.room_id.clone())
        };
        // A resuming stream replays from the owner's ring: it gets an upstream of its own (a
        // shared one is already past that point).
        let key = if r.after_sequence.is_some() {
            static PRIVATE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = PRIVATE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            format!("{key}#{n}")
        } else {
            key
        };
        match route {
            Route::Local => Ok(Response::new(self.watch_here(req).await?)),
            Route::Remote(n) => Ok(Response::new(self.watch_relayed(key, room, n, req).await?)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn big(n: usize) -> Item {
        Ok(pb::Event {
            room_id: "r".repeat(n),
            ..Default::default()
        })
    }

    #[tokio::test]
    async fn a_stalled_watcher_is_bounded_by_bytes_and_ends_with_data_loss() {
        let (sink, mut stream) = Sink::new(1000, 10_000);
        assert!(sink.deliver(big(4000)).await);
        assert!(sink.deliver(big(4000)).await);
        // A third would pass 10 000 queued bytes.
        assert!(!sink.deliver(big(4000)).await);
        drop(sink);
        let mut got = Vec::new();
        while let Some(item) = stream.next().await {
            got.push(item);
        }
        assert_eq!(got.len(), 3);
        let end = got.pop().unwrap().unwrap_err();
        assert_eq!(end.code(), tonic::Code::DataLoss);
        assert!(
            end.message().contains("limits.event_stream_bytes"),
            "{end:?}"
        );
    }

    #[tokio::test]
    async fn a_watcher_that_reads_gets_every_large_event() {
        let (sink, mut stream) = Sink::new(1000, 10_000);
        for _ in 0..20 {
            // Larger than the bound alone: it passes when nothing else is queued.
            assert!(sink.deliver(big(30_000)).await);
            assert!(stream.next().await.unwrap().is_ok());
        }
    }
}
