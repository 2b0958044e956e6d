//! The reference backend of the group-call demo, and the pattern for backend authors.
//!
//! It serves the demo page and the web client (`clients/web/`), and relays each browser's
//! signaling between a WebSocket and the gateway's gRPC API, as any backend would:
//! the browser joins (CreateRoom, CreateSession), sends its offer (ApplyOffer → answer),
//! trickles candidates (AddIceCandidate), and receives the gateway's offers from `WatchEvents`
//! (NegotiationNeeded → relayed; the browser's answer → ApplyAnswer). Closing the WebSocket
//! closes the Session. It holds no media and knows nothing of the gateway's internals.
//!
//! WebSocket messages are JSON objects with a `type`; see [`ClientMsg`] and [`ServerMsg`].
//!
//! Access: the demo creates Rooms and Sessions with the gateway's API key, so anyone who reaches
//! it can. [`serve`] refuses a listener that is not a loopback address unless an access token is
//! given; with a token, the page must be opened once as `/?token=<token>` (which sets an HttpOnly,
//! SameSite=Strict cookie) and the WebSocket needs that cookie (or `?token=`), and a WebSocket
//! from another origin is refused.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use switchboard::v1 as pb;
use switchboard::v1::event_service_client::EventServiceClient;
use switchboard::v1::room_service_client::RoomServiceClient;
use switchboard::v1::session_service_client::SessionServiceClient;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

const INDEX_HTML: &str = include_str!("../../web/demo/index.html");
const DEMO_JS: &str = include_str!("../../web/demo/demo.js");
const CLIENT_JS: &str = include_str!("../../web/switchboard.js");

/// A message from the browser.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ClientMsg {
    /// The browser's offer (initial or its own renegotiation).
    Offer {
        /// SDP.
        sdp: String,
    },
    /// The browser's answer to a gateway offer.
    Answer {
        /// SDP.
        sdp: String,
        /// The offer answered.
        offer_id: u64,
    },
    /// What to receive of a remote track: highest simulcast layer (0 = lowest, absent = best)
    /// and whether it is paused.
    Preference {
        /// The gateway's track id (the remote `MediaStreamTrack.id`).
        track_id: String,
        /// Highest layer; `null` for the best available.
        #[serde(default)]
        max_layer: Option<u32>,
        /// Paused.
        #[serde(default)]
        paused: bool,
    },
    /// A trickled candidate; an empty `candidate` is the end of candidates.
    Candidate {
        /// The candidate line.
        candidate: String,
        /// Its mid.
        #[serde(default)]
        sdp_mid: String,
    },
}

/// Another Session of the Room.
#[derive(Debug, Serialize, Clone)]
pub struct Peer {
    /// Its session id (the stream id of its tracks in the gateway's offers).
    pub session_id: String,
    /// Its Participant.
    pub participant: String,
}

/// A message to the browser.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ServerMsg {
    /// Joined: who we are, the ICE servers, who is already here.
    Welcome {
        /// Our session id.
        session_id: String,
        /// ICE servers for `RTCPeerConnection`.
        ice_servers: Vec<IceServer>,
        /// The Room's other Sessions.
        peers: Vec<Peer>,
    },
    /// The gateway's answer to our offer.
    Answer {
        /// SDP.
        sdp: String,
    },
    /// A gateway offer to answer.
    Offer {
        /// SDP.
        sdp: String,
        /// Echo in the answer.
        offer_id: u64,
    },
    /// Another Session joined.
    PeerJoined(Peer),
    /// Another Session left.
    PeerLeft {
        /// Its session id.
        session_id: String,
    },
    /// The Room's active speaker changed (`session_id` empty when nobody speaks).
    ActiveSpeaker {
        /// The speaking Session.
        session_id: String,
    },
    /// Something went wrong.
    Error {
        /// What.
        message: String,
    },
}

/// An ICE server for the browser.
#[derive(Debug, Serialize)]
pub struct IceServer {
    urls: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    username: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    credential: String,
}

#[derive(Clone)]
struct Auth(Option<String>);

impl Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(k) = &self.0
            && let Ok(v) = format!("Bearer {k}").parse()
        {
            req.metadata_mut().insert("authorization", v);
        }
        Ok(req)
    }
}

type Svc = InterceptedService<Channel, Auth>;

#[derive(Clone)]
struct AppState {
    rooms: RoomServiceClient<Svc>,
    sessions: SessionServiceClient<Svc>,
    events: EventServiceClient<Svc>,
}

/// Why the demo cannot serve.
#[derive(Debug)]
pub struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// The cookie that carries the access token after `/?token=`.
const COOKIE: &str = "switchboard_demo_token";

/// Serves the demo on `listener`, talking to the gateway at `grpc_url` (e.g.
/// `http://127.0.0.1:50051`) with an optional API key. Browsers must present `access_token` when
/// one is given; a listener that is not a loopback address is refused without one. Runs until
/// `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    grpc_url: String,
    api_key: Option<String>,
    access_token: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let access_token = access_token.filter(|t| !t.is_empty());
    let local = listener.local_addr()?;
    if access_token.is_none() && !local.ip().is_loopback() {
        return Err(Box::new(Refused(format!(
            "the demo can create Rooms: it listens on {local}, which is not a loopback address, \
             so it needs an access token (demo.access_token)"
        ))));
    }
    let channel = Channel::from_shared(grpc_url)?.connect_lazy();
    let auth = Auth(api_key);
    let state = AppState {
        rooms: RoomServiceClient::with_interceptor(channel.clone(), auth.clone()),
        sessions: SessionServiceClient::with_interceptor(channel.clone(), auth.clone()),
        events: EventServiceClient::with_interceptor(channel, auth),
    };
    let guarded = Router::new()
        .route(
            "/",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                    INDEX_HTML,
                )
            }),
        )
        .route("/ws", get(ws))
        .with_state(state)
        .layer(axum::middleware::from_fn(move |req, next| {
            guard(access_token.clone(), req, next)
        }));
    let app = Router::new()
        .route(
            "/demo.js",
            get(|| async { ([(header::CONTENT_TYPE, "text/javascript")], DEMO_JS) }),
        )
        .route(
            "/switchboard.js",
            get(|| async { ([(header::CONTENT_TYPE, "text/javascript")], CLIENT_JS) }),
        )
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .merge(guarded);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

/// Lets a request to the page or the WebSocket through when no token is configured, or when it
/// carries the token (`?token=` or the cookie); a WebSocket must come from the demo's own origin.
async fn guard(token: Option<String>, req: Request, next: Next) -> Response {
    if !same_origin(req.headers()) {
        return (StatusCode::FORBIDDEN, "cross-origin request refused").into_response();
    }
    let Some(token) = token else {
        return next.run(req).await;
    };
    let from_query = req.uri().query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("token="))
            .map(str::to_string)
    });
    let from_cookie = req
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            c.trim()
                .strip_prefix(&format!("{COOKIE}="))
                .map(str::to_string)
        });
    let given = from_query.clone().or(from_cookie);
    if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
        return (
            StatusCode::UNAUTHORIZED,
            "this demo needs its access token: open /?token=<demo.access_token>",
        )
            .into_response();
    }
    let mut resp = next.run(req).await;
    if from_query.is_some()
        && let Ok(v) = format!("{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/").parse()
    {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

/// A request without `Origin` (not from a browser page) or whose `Origin` names the host it was
/// sent to.
fn same_origin(h: &HeaderMap) -> bool {
    let Some(origin) = h.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = h.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    origin_host.is_some() && origin_host == host
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Binds `addr` and returns the listener and its address (for printing the URL).
pub async fn bind(addr: SocketAddr) -> std::io::Result<(tokio::net::TcpListener, SocketAddr)> {
    let l = tokio::net::TcpListener::bind(addr).await?;
    let a = l.local_addr()?;
    Ok((l, a))
}

#[derive(Deserialize)]
struct JoinParams {
    room: String,
    name: String,
}

async fn ws(
    upgrade: WebSocketUpgrade,
    Query(p): Query<JoinParams>,
    State(state): State<AppState>,
) -> impl IntoResponse {
    upgrade.on_upgrade(move |socket| async move {
        if let Err(e) = relay(socket, state, p.room, p.name).await {
            tracing::debug!(error = %e, "demo session ended with an error");
        }
    })
}

fn json(m: &ServerMsg) -> Message {
    // Serializing these plain structs cannot fail.
    Message::Text(serde_json::to_string(m).unwrap_or_default().into())
}

async fn relay(
    socket: WebSocket,
    mut st: AppState,
    room: String,
    name: String,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let (mut tx, mut rx) = socket.split();
    // Watch the Room before joining it, so no event about us is missed.
    let mut events = st
        .events
        .watch_events(pb::WatchEventsRequest {
            room_id: room.clone(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let joined = async {
        st.rooms
            .create_room(pb::CreateRoomRequest {
                room_id: room.clone(),
                options: None,
                region_hint: String::new(),
            })
            .await?;
        let created = st
            .sessions
            .create_session(pb::CreateSessionRequest {
                room_id: room.clone(),
                participant_id: name.clone(),
                metadata: String::new(),
                permissions: None,
                manual_subscribe: false,
            })
            .await?
            .into_inner();
        let others = st
            .sessions
            .list_sessions(pb::ListSessionsRequest {
                room_id: room.clone(),
                ..Default::default()
            })
            .await?
            .into_inner()
            .sessions;
        Ok::<_, tonic::Status>((created, others))
    }
    .await;
    let (created, others) = match joined {
        Ok(v) => v,
        Err(e) => {
            let _ = tx
                .send(json(&ServerMsg::Error {
                    message: e.message().to_string(),
                }))
                .await;
            return Ok(());
        }
    };
    let me = created.session.map(|s| s.session_id).unwrap_or_default();
    let peers = others
        .into_iter()
        .filter(|s| s.session_id != me)
        .map(|s| Peer {
            session_id: s.session_id,
            participant: s.participant_id,
        })
        .collect();
    let ice_servers = created
        .ice_servers
        .into_iter()
        .map(|s| IceServer {
            urls: s.urls,
            username: s.username,
            credential: s.credential,
        })
        .collect();
    tx.send(json(&ServerMsg::Welcome {
        session_id: me.clone(),
        ice_servers,
        peers,
    }))
    .await?;

    let result = loop {
        tokio::select! {
            msg = rx.next() => {
                let Some(Ok(msg)) = msg else { break Ok(()) };
                let text = match msg {
                    Message::Text(t) => t.to_string(),
                    Message::Close(_) => break Ok(()),
                    _ => continue,
                };
                let reply = match serde_json::from_str::<ClientMsg>(&text) {
                    Ok(m) => handle(&mut st, &me, m).await,
                    Err(e) => Some(ServerMsg::Error { message: format!("bad message: {e}") }),
                };
                if let Some(r) = reply {
                    tx.send(json(&r)).await?;
                }
            }
            ev = events.message() => {
                let ev = match ev {
                    Ok(Some(ev)) => ev,
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(e.into()),
                };
                let out = match ev.kind {
                    Some(pb::event::Kind::NegotiationNeeded(n)) if ev.session_id == me => {
                        Some(ServerMsg::Offer { sdp: n.sdp, offer_id: n.offer_id })
                    }
                    Some(pb::event::Kind::ParticipantJoined(p)) if ev.session_id != me => {
                        Some(ServerMsg::PeerJoined(Peer { session_id: ev.session_id, participant: p.participant_id }))
                    }
                    Some(pb::event::Kind::SessionClosed(_)) if ev.session_id == me => {
                        let _ = tx.send(json(&ServerMsg::Error { message: "session closed".into() })).await;
                        break Ok(());
                    }
                    Some(pb::event::Kind::SessionClosed(_)) => {
                        Some(ServerMsg::PeerLeft { session_id: ev.session_id })
                    }
                    Some(pb::event::Kind::ActiveSpeakerChanged(_)) => {
                        Some(ServerMsg::ActiveSpeaker { session_id: ev.session_id })
                    }
                    Some(pb::event::Kind::GatewayDraining(_)) => break Ok(()),
                    _ => None,
                };
                if let Some(o) = out {
                    tx.send(json(&o)).await?;
                }
            }
        }
    };
    let _ = st
        .sessions
        .close_session(pb::CloseSessionRequest { session_id: me })
        .await;
    result
}

async fn handle(st: &mut AppState, me: &str, m: ClientMsg) -> Option<ServerMsg> {
    let res = match m {
        ClientMsg::Offer { sdp } => st
            .sessions
            .apply_offer(pb::ApplyOfferRequest {
                session_id: me.into(),
                sdp,
            })
            .await
            .map(|r| {
                Some(ServerMsg::Answer {
                    sdp: r.into_inner().sdp,
                })
            }),
        ClientMsg::Answer { sdp, offer_id } => st
            .sessions
            .apply_answer(pb::ApplyAnswerRequest {
                session_id: me.into(),
                sdp,
                offer_id,
            })
            .await
            .map(|_| None),
        ClientMsg::Preference {
            track_id,
            max_layer,
            paused,
        } => st
            .sessions
            .set_track_preference(pb::SetTrackPreferenceRequest {
                session_id: me.into(),
                track_id,
                max_layer,
                paused,
            })
            .await
            .map(|_| None),
        ClientMsg::Candidate { candidate, sdp_mid } => st
            .sessions
            .add_ice_candidate(pb::AddIceCandidateRequest {
                session_id: me.into(),
                end_of_candidates: candidate.is_empty(),
                candidate,
                sdp_mid,
            })
            .await
            .map(|_| None),
    };
    match res {
        Ok(r) => r,
        Err(e) => Some(ServerMsg::Error {
            message: format!("{:?}: {}", e.code(), e.message()),
        }),
    }
}
