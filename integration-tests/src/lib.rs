//! Shared support for the black-box tests: start a real gateway on loopback, connect gRPC clients,
//! and act as a minimal backend that relays signaling between the gateway and str0m test Peers
//! over real UDP (or ICE-TCP).
//!
//! It also holds the one [`test_config`] (the gateway's own tests in `gateway/tests` use it too)
//! and the waits every test synchronises with: bounded polls of observable state ([`wait_until`]
//! and the helpers built on it) that fail naming what they waited for. Tests never sleep and
//! hope; a test that checks that something does *not* happen first waits for a control that
//! shows it would have happened by then (see the mute and manual-subscription tests).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use switchboard::v1 as pb;
use switchboard::v1::event_service_client::EventServiceClient;
use switchboard::v1::room_service_client::RoomServiceClient;
use switchboard::v1::session_service_client::SessionServiceClient;
use switchboard_gateway::{Config, Gateway};
use switchboard_testpeer::{Publish, UdpPeer};
/// Re-exported so that every test names one builder for each: a call Peer's tracks, a raw STUN
/// Binding request.
pub use switchboard_testpeer::{av, stun_binding_request};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// The one test configuration of the gateway (the integration tests and `gateway/tests` use it):
/// gRPC, media (UDP and ICE-TCP) and the embedded TURN server on free loopback ports, so parallel
/// tests never collide; two Workers. Tests change what they test on top of it.
pub fn test_config() -> Config {
    let mut c = Config::default();
    c.grpc.listen = "127.0.0.1:0".parse().unwrap();
    c.admin.listen = "127.0.0.1:0".parse().unwrap();
    c.media.port_base = 0;
    c.media.tcp_port_base = 0;
    c.media.workers = 2;
    // Free ports for the embedded TURN server, so parallel tests never collide on 3478.
    c.turn.listen_udp = "127.0.0.1:0".parse().unwrap();
    c.turn.listen_tcp = "127.0.0.1:0".parse().unwrap();
    c
}

/// The Room ids of a `ListRooms` answer, in its order.
pub fn room_ids(resp: pb::ListRoomsResponse) -> Vec<String> {
    resp.rooms.into_iter().map(|r| r.room_id).collect()
}

/// Starts a gateway.
pub async fn start(config: Config) -> anyhow::Result<Gateway> {
    Ok(Gateway::start(config).await?)
}

/// Adds `authorization: Bearer <key>` when a key is set.
#[derive(Clone, Default)]
pub struct Auth(pub Option<String>);

impl Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(k) = &self.0 {
            let v = format!("Bearer {k}").parse().expect("ascii key");
            req.metadata_mut().insert("authorization", v);
        }
        Ok(req)
    }
}

type Svc = InterceptedService<Channel, Auth>;

/// Gateway offers held back per Session: (offer_id, sdp).
pub type HeldOffers = Arc<Mutex<HashMap<String, Vec<(u64, String)>>>>;

/// gRPC clients of every service.
#[derive(Clone)]
pub struct Clients {
    pub rooms: RoomServiceClient<Svc>,
    pub sessions: SessionServiceClient<Svc>,
    pub events: EventServiceClient<Svc>,
}

impl Clients {
    pub async fn connect(gw: &Gateway, key: Option<&str>) -> anyhow::Result<Self> {
        let ch = Channel::from_shared(format!("http://{}", gw.grpc_addr()))?
            .connect()
            .await?;
        let auth = Auth(key.map(str::to_string));
        Ok(Self {
            rooms: RoomServiceClient::with_interceptor(ch.clone(), auth.clone()),
            sessions: SessionServiceClient::with_interceptor(ch.clone(), auth.clone()),
            events: EventServiceClient::with_interceptor(ch, auth),
        })
    }

    pub async fn create_room(&self, id: &str) -> anyhow::Result<pb::Room> {
        let r = self
            .rooms
            .clone()
            .create_room(pb::CreateRoomRequest {
                room_id: id.into(),
                options: None,
                region_hint: String::new(),
            })
            .await?
            .into_inner();
        r.room.context("room in response")
    }
}

/// The value of the unlabelled metric `name` (e.g. `switchboard_events_live_subscribers`) from
/// the admin listener's `/metrics`.
pub async fn metric(admin: std::net::SocketAddr, name: &str) -> anyhow::Result<u64> {
    let (_, body) = http_get(admin, "/metrics").await?;
    let prefix = format!("{name} ");
    body.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no {name} in /metrics"))
}

/// `GET path` over plain HTTP/1.1 (the admin listener); the status line and the body.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<(String, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).await?;
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("no header end in {raw:?}"))?;
    let status = head.lines().next().unwrap_or_default().to_string();
    Ok((status, body.to_string()))
}

/// Polls `cond` every 10 ms until it returns `Ok(())` or `timeout` passes; fails with the last
/// reason it gave.
pub async fn wait_until(
    timeout: Duration,
    mut cond: impl FnMut() -> Result<(), String>,
) -> anyhow::Result<()> {
    let end = Instant::now() + timeout;
    loop {
        let reason = match cond() {
            Ok(()) => return Ok(()),
            Err(r) => r,
        };
        if Instant::now() > end {
            bail!("timed out after {timeout:?}: {reason}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A minimal backend for one Room: it watches the Room's events and answers the gateway's offers
/// with the matching Peer, the way a real backend relays them to browsers.
pub struct Backend {
    pub clients: Clients,
    pub room: String,
    peers: Arc<Mutex<HashMap<String, Arc<UdpPeer>>>>,
    /// Every event of the Room, in arrival order.
    pub events: Arc<Mutex<Vec<pb::Event>>>,
    /// Sessions whose offers are collected instead of answered.
    pub hold: HeldOffers,
    /// The address new Peers bind (127.0.0.1 unless a test sets another, e.g. `::1`).
    pub peer_ip: IpAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Backend {
    /// Creates the Room and starts watching it.
    pub async fn new(clients: Clients, room: &str) -> anyhow::Result<Self> {
        Self::with_options(clients, room, None).await
    }

    /// Like [`Backend::new`], with Room options.
    pub async fn with_options(
        clients: Clients,
        room: &str,
        options: Option<pb::RoomOptions>,
    ) -> anyhow::Result<Self> {
        let mut stream = clients
            .events
            .clone()
            .watch_events(pb::WatchEventsRequest {
                room_id: room.into(),
                ..Default::default()
            })
            .await?
            .into_inner();
        clients
            .rooms
            .clone()
            .create_room(pb::CreateRoomRequest {
                room_id: room.into(),
                options,
                region_hint: String::new(),
            })
            .await?;
        let peers: Arc<Mutex<HashMap<String, Arc<UdpPeer>>>> = Arc::default();
        let events: Arc<Mutex<Vec<pb::Event>>> = Arc::default();
        let hold: HeldOffers = Arc::default();
        let (p, e, h, c) = (peers.clone(), events.clone(), hold.clone(), clients.clone());
        let task = tokio::spawn(async move {
            while let Ok(Some(ev)) = stream.message().await {
                e.lock().unwrap().push(ev.clone());
                let Some(pb::event::Kind::NegotiationNeeded(n)) = ev.kind else {
                    continue;
                };
                if let Some(held) = h.lock().unwrap().get_mut(&ev.session_id) {
                    held.push((n.offer_id, n.sdp));
                    continue;
                }
                let peer = p.lock().unwrap().get(&ev.session_id).cloned();
                let Some(peer) = peer else { continue };
                // Like a browser's signaling queue: finish our own offer/answer first.
                let settled = wait_until(Duration::from_secs(5), || {
                    if peer.with(|p| p.has_pending_offer()) {
                        Err("the Peer's own offer is still unanswered".into())
                    } else {
                        Ok(())
                    }
                })
                .await;
                if let Err(err) = settled {
                    eprintln!("gateway offer {} left unanswered: {err}", n.offer_id);
                    continue;
                }
                let answer = match peer.with(|p| p.accept_offer(&n.sdp)) {
                    Ok(a) => a,
                    Err(err) => {
                        eprintln!("peer could not accept the gateway offer: {err}");
                        continue;
                    }
                };
                let res = c
                    .sessions
                    .clone()
                    .apply_answer(pb::ApplyAnswerRequest {
                        session_id: ev.session_id.clone(),
                        sdp: answer,
                        offer_id: n.offer_id,
                    })
                    .await;
                if let Err(err) = res {
                    eprintln!("ApplyAnswer failed: {err}");
                }
            }
        });
        Ok(Self {
            clients,
            room: room.into(),
            peers,
            events,
            hold,
            peer_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            task,
        })
    }

    /// Creates a Session, a Peer on [`Backend::peer_ip`], and negotiates the Peer's offer. Returns the
    /// session id and the Peer.
    pub async fn join(
        &self,
        participant: &str,
        publish: Publish,
    ) -> anyhow::Result<(String, Arc<UdpPeer>)> {
        self.join_with(participant, publish, &[]).await
    }

    /// Like [`Backend::join`], also opening the given data channels in the first offer.
    pub async fn join_with(
        &self,
        participant: &str,
        publish: Publish,
        channels: &[switchboard_testpeer::ChannelConfig],
    ) -> anyhow::Result<(String, Arc<UdpPeer>)> {
        self.join_full(participant, publish, channels, false, false)
            .await
    }

    /// Like [`Backend::join`] with a TCP-only Peer ([`UdpPeer::tcp_only`]): its only candidate is
    /// an active TCP one, so it connects over ICE-TCP or not at all.
    pub async fn join_tcp(
        &self,
        participant: &str,
        publish: Publish,
    ) -> anyhow::Result<(String, Arc<UdpPeer>)> {
        self.join_full(participant, publish, &[], false, true).await
    }

    /// Joins with manual subscription: the Session receives only what `Subscribe` asks for.
    pub async fn join_manual(
        &self,
        participant: &str,
        publish: Publish,
    ) -> anyhow::Result<(String, Arc<UdpPeer>)> {
        self.join_full(participant, publish, &[], true, false).await
    }

    async fn join_full(
        &self,
        participant: &str,
        publish: Publish,
        channels: &[switchboard_testpeer::ChannelConfig],
        manual_subscribe: bool,
        tcp_only: bool,
    ) -> anyhow::Result<(String, Arc<UdpPeer>)> {
        let s = self
            .clients
            .sessions
            .clone()
            .create_session(pb::CreateSessionRequest {
                room_id: self.room.clone(),
                participant_id: participant.into(),
                metadata: format!("{participant}'s laptop"),
                permissions: None,
                manual_subscribe,
            })
            .await?
            .into_inner()
            .session
            .context("session")?;
        let ip = self.peer_ip;
        let peer = Arc::new(if tcp_only {
            UdpPeer::tcp_only(ip)
        } else {
            UdpPeer::bind(ip).await?
        });
        self.peers
            .lock()
            .unwrap()
            .insert(s.session_id.clone(), peer.clone());
        let offer = peer.with(|p| p.create_offer_with(publish, channels));
        let answer = self
            .clients
            .sessions
            .clone()
            .apply_offer(pb::ApplyOfferRequest {
                session_id: s.session_id.clone(),
                sdp: offer,
            })
            .await?
            .into_inner()
            .sdp;
        peer.with(|p| p.accept_answer(&answer))?;
        Ok((s.session_id, peer))
    }

    /// Events of one Session, so far.
    pub fn events_of(&self, session: &str) -> Vec<pb::event::Kind> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.session_id == session)
            .filter_map(|e| e.kind.clone())
            .collect()
    }

    /// Track ids a Session published, from the events so far.
    pub fn tracks_of(&self, session: &str) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        for e in self.events.lock().unwrap().iter() {
            match &e.kind {
                Some(pb::event::Kind::TrackPublished(t)) => {
                    let t = t.track.as_ref().unwrap();
                    if t.session_id == session {
                        v.push(t.track_id.clone());
                    }
                }
                Some(pb::event::Kind::TrackUnpublished(t)) => v.retain(|x| *x != t.track_id),
                _ => {}
            }
        }
        v
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Frames `peer` received of every track in `tracks` (the minimum; 0 if any is missing).
pub fn min_frames(peer: &UdpPeer, tracks: &[String]) -> u64 {
    if tracks.is_empty() {
        return 0;
    }
    peer.with(|p| {
        tracks
            .iter()
            .map(|t| p.stats.tracks.get(t).map_or(0, |s| s.frames))
            .min()
            .unwrap_or(0)
    })
}

/// Frames `peer` received of each of `tracks`, in order (0 for a Track it has not seen).
pub fn frames_per_track(peer: &UdpPeer, tracks: &[String]) -> Vec<u64> {
    peer.with(|p| {
        tracks
            .iter()
            .map(|t| p.stats.tracks.get(t).map_or(0, |s| s.frames))
            .collect()
    })
}

/// Waits (up to 10 s) until `to` has received `more` frames of every Track Session `from`
/// publishes beyond what it had when called; `what` names what the flow shows (e.g. "after the
/// renegotiation").
pub async fn frames_flow(
    backend: &Backend,
    from: &str,
    to: &UdpPeer,
    more: u64,
    what: &str,
) -> anyhow::Result<()> {
    let tracks = backend.tracks_of(from);
    anyhow::ensure!(!tracks.is_empty(), "{from} publishes no Track ({what})");
    let start = frames_per_track(to, &tracks);
    wait_until(Duration::from_secs(10), || {
        let now = frames_per_track(to, &tracks);
        if now.iter().zip(&start).all(|(n, s)| *n >= s + more) {
            Ok(())
        } else {
            Err(format!(
                "{what}: frames of {from} from {start:?} to {now:?}"
            ))
        }
    })
    .await
}

/// Waits (up to 15 s) until both Peers receive both Tracks (audio and video) of the other, at
/// least `frames` frames of each.
pub async fn media_both_ways(
    backend: &Backend,
    (sa, a): (&str, &UdpPeer),
    (sb, b): (&str, &UdpPeer),
    frames: u64,
) -> anyhow::Result<()> {
    wait_until(Duration::from_secs(15), || {
        let (ta, tb) = (backend.tracks_of(sa), backend.tracks_of(sb));
        let (fa, fb) = (min_frames(b, &ta), min_frames(a, &tb));
        if ta.len() == 2 && tb.len() == 2 && fa >= frames && fb >= frames {
            Ok(())
        } else {
            Err(format!(
                "tracks {}/{}, frames {sa}->{sb} {fa}, {sb}->{sa} {fb}",
                ta.len(),
                tb.len()
            ))
        }
    })
    .await
}

/// Waits (up to 10 s) until both Peers receive 20 more frames of every Track of the other than
/// they had when called: the call goes on (`what` names the event it must survive).
pub async fn media_keeps_flowing(
    backend: &Backend,
    (sa, a): (&str, &UdpPeer),
    (sb, b): (&str, &UdpPeer),
    what: &str,
) -> anyhow::Result<()> {
    tokio::try_join!(
        frames_flow(backend, sa, b, 20, what),
        frames_flow(backend, sb, a, 20, what)
    )?;
    Ok(())
}

/// Waits (up to 5 s) for both Peers' data channels to open (see [`channels_open`]), then sends
/// `from_a` from `a` and `from_b` from `b`, and waits until each received exactly the other's
/// message.
pub async fn data_both_ways(
    a: &UdpPeer,
    b: &UdpPeer,
    from_a: &[u8],
    from_b: &[u8],
) -> anyhow::Result<()> {
    wait_until(Duration::from_secs(5), || {
        if a.with(|p| p.channel_open()) && b.with(|p| p.channel_open()) {
            Ok(())
        } else {
            Err("channels not open".into())
        }
    })
    .await?;
    // No pause needed: a Peer's channel counts as open on the gateway's DCEP ACK, which the
    // gateway sends only once its own end is open (see [`channels_open`]).
    anyhow::ensure!(a.with(|p| p.send_data(from_a)), "a could not send");
    anyhow::ensure!(b.with(|p| p.send_data(from_b)), "b could not send");
    wait_until(Duration::from_secs(5), || {
        let (ma, mb) = (
            a.with(|p| p.stats.messages.clone()),
            b.with(|p| p.stats.messages.clone()),
        );
        if ma == [from_b] && mb == [from_a] {
            Ok(())
        } else {
            Err(format!("a got {ma:?}, b got {mb:?}"))
        }
    })
    .await
}

/// Waits (up to 10 s) until every Peer has every channel in `labels` open. A channel a Peer opens
/// counts as open when the gateway's DCEP ACK arrives, and the gateway's end is open before that
/// ACK leaves it (str0m queues the ACK and reports the open in the same poll; the core records
/// the channel before the Worker sends anything): from then on the gateway delivers messages on
/// it both ways, so no pause is needed after this.
pub async fn channels_open(peers: &[&UdpPeer], labels: &[&str]) -> anyhow::Result<()> {
    wait_until(Duration::from_secs(10), || {
        for (i, p) in peers.iter().enumerate() {
            for l in labels {
                if !p.with(|c| c.has_channel(l)) {
                    return Err(format!("peer {i}: channel {l} not open"));
                }
            }
        }
        Ok(())
    })
    .await
}

/// Waits (up to 10 s) until `peer` (named `who` in the failure) is connected: ICE, DTLS and SRTP up.
pub async fn connected(peer: &UdpPeer, who: &str) -> anyhow::Result<()> {
    wait_until(Duration::from_secs(10), || {
        if peer.with(|p| p.stats.connected) {
            Ok(())
        } else {
            Err(format!("{who} not connected"))
        }
    })
    .await
}

/// Waits (up to `timeout`) until Session `session` was reported Disconnected and then closed with
/// `DISCONNECT_TIMEOUT`.
pub async fn disconnected_then_closed(
    backend: &Backend,
    session: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    wait_until(timeout, || {
        let kinds = backend.events_of(session);
        let disconnected = kinds
            .iter()
            .position(|k| matches!(k, pb::event::Kind::SessionDisconnected(_)));
        let closed = kinds.iter().position(|k| {
            matches!(k, pb::event::Kind::SessionClosed(c)
                if c.reason == pb::SessionCloseReason::DisconnectTimeout as i32)
        });
        match (disconnected, closed) {
            (Some(d), Some(c)) if d < c => Ok(()),
            other => Err(format!("{session} disconnected/closed at events {other:?}")),
        }
    })
    .await
}
