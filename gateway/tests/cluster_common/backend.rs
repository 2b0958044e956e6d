//! A minimal backend for the cluster tests: it reads a Room's events from one node and answers the
//! gateway's offers with the matching str0m Peer through another.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use switchboard::v1 as pb;
pub use switchboard_testpeer::av;
use switchboard_testpeer::{Publish, UdpPeer};

use super::{Clients, Watch};

/// A minimal backend: it reads a Room's events from one node and answers the gateway's offers
/// with the matching Peer through another.
pub struct Backend {
    pub watch: Watch,
    peers: Arc<Mutex<HashMap<String, Arc<UdpPeer>>>>,
    relay: tokio::task::JoinHandle<()>,
}

impl Backend {
    /// Watches `room` through `watch_via`; answers offers through `signal_via`.
    pub async fn new(
        watch_via: &Clients,
        signal_via: &Clients,
        room: &str,
    ) -> anyhow::Result<Self> {
        let watch = watch_via.watch(room).await?;
        let peers: Arc<Mutex<HashMap<String, Arc<UdpPeer>>>> = Arc::default();
        let (events, p, c) = (watch.events.clone(), peers.clone(), signal_via.clone());
        let relay = tokio::spawn(async move {
            let mut seen = 0;
            loop {
                let fresh: Vec<pb::Event> = events.lock().unwrap()[seen..].to_vec();
                seen += fresh.len();
                for ev in fresh {
                    let Some(pb::event::Kind::NegotiationNeeded(n)) = ev.kind else {
                        continue;
                    };
                    let peer = p.lock().unwrap().get(&ev.session_id).cloned();
                    let Some(peer) = peer else { continue };
                    let settle = Instant::now() + Duration::from_secs(5);
                    while peer.with(|p| p.has_pending_offer()) && Instant::now() < settle {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    let Ok(answer) = peer.with(|p| p.accept_offer(&n.sdp)) else {
                        continue;
                    };
                    let _ = c
                        .sessions
                        .clone()
                        .apply_answer(pb::ApplyAnswerRequest {
                            session_id: ev.session_id.clone(),
                            sdp: answer,
                            offer_id: n.offer_id,
                        })
                        .await;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        Ok(Self {
            watch,
            peers,
            relay,
        })
    }

    /// Creates a Session through `create_via`, a Peer on 127.0.0.1, and negotiates the Peer's offer
    /// through `signal_via`. Returns the Session id, the Peer and the gateway's answer.
    pub async fn join(
        &self,
        create_via: &Clients,
        signal_via: &Clients,
        room: &str,
        participant: &str,
        publish: Publish,
    ) -> anyhow::Result<(String, Arc<UdpPeer>, String)> {
        let s = create_via
            .sessions
            .clone()
            .create_session(pb::CreateSessionRequest {
                room_id: room.into(),
                participant_id: participant.into(),
                metadata: String::new(),
                permissions: None,
                manual_subscribe: false,
            })
            .await?
            .into_inner()
            .session
            .context("session")?;
        let peer = Arc::new(UdpPeer::bind("127.0.0.1".parse()?).await?);
        self.peers
            .lock()
            .unwrap()
            .insert(s.session_id.clone(), peer.clone());
        let offer = peer.with(|p| p.create_offer_with(publish, &[]));
        let answer = signal_via
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
        Ok((s.session_id, peer, answer))
    }

    /// Track ids `session` published, from the events so far.
    pub fn tracks_of(&self, session: &str) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        for k in self.watch.kinds() {
            match k {
                pb::event::Kind::TrackPublished(t) => {
                    let t = t.track.unwrap();
                    if t.session_id == session {
                        v.push(t.track_id);
                    }
                }
                pb::event::Kind::TrackUnpublished(t) => v.retain(|x| *x != t.track_id),
                _ => {}
            }
        }
        v
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.relay.abort();
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
