//! Signaling: how a Peer of the media loop joins the SFU under test.
//!
//! - [`Switchboard`]: a real backend over the gRPC API. Per Room it watches the events and answers
//!   each `negotiation_needed` offer with the Peer's answer (`ApplyAnswer`); a join is
//!   `CreateSession` → the Peer's offer → `ApplyOffer` → the answer into the Peer. The Peer's host
//!   candidate travels in its offer (no trickle), so `AddIceCandidate` is not needed.
//! - [`Chat`]: str0m's `examples/chat.rs`, whose page POSTs `{"type":"offer","sdp":…}` to its HTTPS
//!   endpoint and gets the answer back; later offers travel over the data channel (the Peer
//!   answers those itself). The POST goes through `curl` (chat serves a self-signed certificate).
//!
//! This module owns no media state: it only moves SDP between the SFU and the media loop.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use switchboard::v1 as pb;
use switchboard::v1::event_service_client::EventServiceClient;
use switchboard::v1::room_service_client::RoomServiceClient;
use switchboard::v1::session_service_client::SessionServiceClient;
use tokio::io::AsyncWriteExt;
use tonic::transport::Channel;

use crate::Error;
use crate::media::{MediaHandle, PeerId};
use crate::peer::PeerOptions;

/// The SFU under test and how to reach it.
#[derive(Debug, Clone)]
pub enum Target {
    /// Switchboard's gRPC endpoint, e.g. `http://127.0.0.1:50051`, and an API key if set.
    Switchboard {
        /// The gRPC endpoint.
        url: String,
        /// The API key (`authorization: Bearer …`), empty for none.
        api_key: String,
    },
    /// str0m's chat example's HTTPS endpoint, e.g. `https://127.0.0.1:3000/`.
    Chat {
        /// The endpoint its page POSTs offers to.
        url: String,
    },
}

/// Joins Peers to the SFU under test.
pub enum Backend {
    /// A gRPC backend of Switchboard.
    Switchboard(Box<Switchboard>),
    /// str0m chat's HTTP signaling.
    Chat(Chat),
}

impl Backend {
    /// Connects to the target.
    pub async fn connect(target: &Target, media: Arc<MediaHandle>) -> Result<Self, Error> {
        Ok(match target {
            Target::Switchboard { url, api_key } => {
                Self::Switchboard(Box::new(Switchboard::connect(url, api_key, media).await?))
            }
            Target::Chat { url } => Self::Chat(Chat {
                url: url.clone(),
                media,
            }),
        })
    }

    /// Prepares a Room admitting at most `max_sessions` Sessions (chat has a single implicit
    /// one, unbounded).
    pub async fn create_room(&self, room: &str, max_sessions: u32) -> Result<(), Error> {
        match self {
            Self::Switchboard(s) => s.create_room(room, max_sessions).await,
            Self::Chat(_) => Ok(()),
        }
    }

    /// Joins one Peer to `room`; its join time counts from the start of this call.
    pub async fn join(
        &self,
        room: &str,
        participant: &str,
        opts: PeerOptions,
    ) -> Result<PeerId, Error> {
        match self {
            Self::Switchboard(s) => s.join(room, participant, opts).await,
            Self::Chat(c) => c.join(opts).await,
        }
    }
}

type Sessions = Arc<Mutex<HashMap<String, PeerId>>>;

fn status(call: &'static str) -> impl FnOnce(tonic::Status) -> Error {
    move |status| Error::Grpc { call, status }
}

/// A gRPC backend of Switchboard.
pub struct Switchboard {
    rooms: RoomServiceClient<Channel>,
    sessions: SessionServiceClient<Channel>,
    events: EventServiceClient<Channel>,
    api_key: String,
    peers: Sessions,
    media: Arc<MediaHandle>,
    watchers: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Switchboard {
    async fn connect(url: &str, api_key: &str, media: Arc<MediaHandle>) -> Result<Self, Error> {
        let ch = Channel::from_shared(url.to_string())
            .map_err(|e| Error::Signaling(format!("bad gRPC url {url:?}: {e}")))?
            .tcp_nodelay(true)
            .connect()
            .await?;
        Ok(Self {
            rooms: RoomServiceClient::new(ch.clone()),
            sessions: SessionServiceClient::new(ch.clone()),
            events: EventServiceClient::new(ch),
            api_key: api_key.to_string(),
            peers: Sessions::default(),
            media,
            watchers: Mutex::default(),
        })
    }

    fn req<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        if !self.api_key.is_empty()
            && let Ok(v) = format!("Bearer {}", self.api_key).parse()
        {
            r.metadata_mut().insert("authorization", v);
        }
        r
    }

    async fn create_room(&self, room: &str, max_sessions: u32) -> Result<(), Error> {
        let mut stream = self
            .events
            .clone()
            .watch_events(self.req(pb::WatchEventsRequest {
                room_id: room.into(),
                ..Default::default()
            }))
            .await
            .map_err(status("WatchEvents"))?
            .into_inner();
        self.rooms
            .clone()
            .create_room(self.req(pb::CreateRoomRequest {
                room_id: room.into(),
                options: Some(pb::RoomOptions {
                    max_sessions,
                    ..Default::default()
                }),
                region_hint: String::new(),
            }))
            .await
            .map_err(status("CreateRoom"))?;
        let (peers, media, sessions) = (
            self.peers.clone(),
            self.media.clone(),
            self.sessions.clone(),
        );
        let api_key = self.api_key.clone();
        let task = tokio::spawn(async move {
            while let Ok(Some(ev)) = stream.message().await {
                let Some(pb::event::Kind::NegotiationNeeded(n)) = ev.kind else {
                    continue;
                };
                let Some(id) = peers
                    .lock()
                    .expect("not poisoned")
                    .get(&ev.session_id)
                    .copied()
                else {
                    continue;
                };
                // Answer in the background: the media loop holds an offer back until the
                // Peer's own offer is answered, so this must not block the event stream.
                let (media, mut sessions, key) = (media.clone(), sessions.clone(), api_key.clone());
                tokio::spawn(async move {
                    let answer = match media.offer(id, n.sdp).await {
                        Ok(a) => a,
                        Err(e) => {
                            eprintln!("loadgen: peer could not answer the gateway's offer: {e}");
                            return;
                        }
                    };
                    let mut r = tonic::Request::new(pb::ApplyAnswerRequest {
                        session_id: ev.session_id,
                        sdp: answer,
                        offer_id: n.offer_id,
                    });
                    if !key.is_empty()
                        && let Ok(v) = format!("Bearer {key}").parse()
                    {
                        r.metadata_mut().insert("authorization", v);
                    }
                    if let Err(e) = sessions.apply_answer(r).await {
                        eprintln!("loadgen: ApplyAnswer failed: {e}");
                    }
                });
            }
        });
        self.watchers.lock().expect("not poisoned").push(task);
        Ok(())
    }

    async fn join(
        &self,
        room: &str,
        participant: &str,
        opts: PeerOptions,
    ) -> Result<PeerId, Error> {
        let started = Instant::now();
        let session = self
            .sessions
            .clone()
            .create_session(self.req(pb::CreateSessionRequest {
                room_id: room.into(),
                participant_id: participant.into(),
                ..Default::default()
            }))
            .await
            .map_err(status("CreateSession"))?
            .into_inner()
            .session
            .ok_or_else(|| Error::Signaling("CreateSession returned no session".into()))?;
        let (id, offer) = self.media.add(opts, started).await?;
        self.peers
            .lock()
            .expect("not poisoned")
            .insert(session.session_id.clone(), id);
        let answer = self
            .sessions
            .clone()
            .apply_offer(self.req(pb::ApplyOfferRequest {
                session_id: session.session_id,
                sdp: offer,
            }))
            .await
            .map_err(status("ApplyOffer"))?
            .into_inner()
            .sdp;
        self.media.answer(id, answer).await?;
        Ok(id)
    }
}

impl Drop for Switchboard {
    fn drop(&mut self) {
        for t in self.watchers.lock().expect("not poisoned").drain(..) {
            t.abort();
        }
    }
}

/// str0m chat's HTTPS signaling.
pub struct Chat {
    url: String,
    media: Arc<MediaHandle>,
}

impl Chat {
    async fn join(&self, opts: PeerOptions) -> Result<PeerId, Error> {
        let started = Instant::now();
        let opts = PeerOptions {
            dc_signaling: true,
            ..opts
        };
        let (id, offer) = self.media.add(opts, started).await?;
        let body = serde_json::json!({"type": "offer", "sdp": offer}).to_string();
        let mut child = tokio::process::Command::new("curl")
            .args(["-sSk", "--max-time", "10", "--data-binary", "@-"])
            .arg(&self.url)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let mut stdin = child.stdin.take().expect("piped");
        stdin.write_all(body.as_bytes()).await?;
        drop(stdin);
        let out = child.wait_with_output().await?;
        if !out.status.success() {
            return Err(Error::Signaling(format!(
                "POST {}: {}",
                self.url,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| Error::Signaling(format!("chat's answer is not JSON: {e}")))?;
        let sdp = v
            .get("sdp")
            .and_then(|s| s.as_str())
            .ok_or_else(|| Error::Signaling("chat's answer has no sdp".into()))?;
        self.media.answer(id, sdp.to_string()).await?;
        Ok(id)
    }
}
