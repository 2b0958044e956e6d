//! [`GatewayHandle`]: the gateway's control surface as typed Rust calls, the same operations the
//! gRPC API offers. The gRPC service is a thin adapter over it; embedders call it directly.
//!
//! It owns dispatch: a Room lives on the Worker chosen by a hash of its id, and a Session id names
//! its Worker, so no shared directory is needed. It never touches a socket or an `Rtc`.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use switchboard_core::{
    CoreError, ParticipantId, RemoteCandidate, RoomId, RoomInfo, RoomSpec, SendReport, SessionId,
    SessionInfo, SessionSpec, TrackId, TrackPreference,
};

use crate::driver::{SendError, WorkerHandle};
use crate::events::{EventBus, EventFilter, EventSubscription};
pub use crate::turn::IceServer;
use crate::turn::IceServers;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// The core refused the request.
    #[error(transparent)]
    Core(#[from] CoreError),
    /// A request field is invalid before it reaches a Worker.
    #[error("invalid {field}: {reason}")]
    InvalidArgument {
        /// The offending field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The Worker's command queue is full; retry later.
    #[error("worker {worker} is overloaded; retry later")]
    Busy {
        /// Which Worker.
        worker: usize,
    },
    /// The gateway is shutting down or a Worker stopped.
    #[error("gateway unavailable: {0}")]
    Unavailable(&'static str),
}

/// A backend message for [`GatewayHandle::send_data`].
#[derive(Debug, Clone, Default)]
pub struct DataMessage {
    /// Target Sessions; empty means the whole Room.
    pub targets: Vec<SessionId>,
    /// Channel label.
    pub label: String,
    /// Binary or text.
    pub binary: bool,
    /// The bytes.
    pub data: Vec<u8>,
    /// Reliable delivery policy (see `data.proto`).
    pub reliable: bool,
}

/// A trickled candidate, owned (see [`RemoteCandidate`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Candidate {
    /// A `candidate:` line.
    Line(String),
    /// End of candidates.
    End,
}

pub(crate) struct Inner {
    pub(crate) workers: Vec<WorkerHandle>,
    pub(crate) bus: Arc<EventBus>,
    pub(crate) ice_servers: IceServers,
    pub(crate) draining: AtomicBool,
    rng: Mutex<ChaCha20Rng>,
}

/// A cheap, clonable handle to a running gateway.
#[derive(Clone)]
pub struct GatewayHandle {
    pub(crate) inner: Arc<Inner>,
}

impl GatewayHandle {
    pub(crate) fn new(
        workers: Vec<WorkerHandle>,
        bus: Arc<EventBus>,
        ice_servers: IceServers,
    ) -> Result<Self, getrandom::Error> {
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed)?;
        Ok(Self {
            inner: Arc::new(Inner {
                workers,
                bus,
                ice_servers,
                draining: AtomicBool::new(false),
                rng: Mutex::new(ChaCha20Rng::from_seed(seed)),
            }),
        })
    }

    fn room_worker(&self, id: &RoomId) -> usize {
        let mut h = DefaultHasher::new();
        id.hash(&mut h);
        (h.finish() % self.inner.workers.len() as u64) as usize
    }

    fn session_worker(&self, id: &SessionId) -> Result<usize, GatewayError> {
        let w = usize::from(id.worker());
        if w >= self.inner.workers.len() {
            return Err(CoreError::SessionNotFound(id.clone()).into());
        }
        Ok(w)
    }

    async fn call<R: Send + 'static>(
        &self,
        worker: usize,
        f: impl FnOnce(&mut switchboard_core::Sfu, std::time::Instant, std::time::SystemTime) -> R
        + Send
        + 'static,
    ) -> Result<R, GatewayError> {
        self.inner.workers[worker]
            .call(f)
            .await
            .map_err(|e| match e {
                SendError::Full => GatewayError::Busy { worker },
                SendError::Stopped => GatewayError::Unavailable("the worker has stopped"),
            })
    }

    fn check_open(&self) -> Result<(), GatewayError> {
        if self.inner.draining.load(Ordering::Acquire) {
            return Err(GatewayError::Unavailable("the gateway is shutting down"));
        }
        Ok(())
    }

    /// Creates a Room (idempotent for an identical caller-chosen id). Returns it and whether this
    /// call created it. `spec.created_at` is overwritten with the current time.
    pub async fn create_room(&self, mut spec: RoomSpec) -> Result<(RoomInfo, bool), GatewayError> {
        self.check_open()?;
        let id = match spec.id.take() {
            Some(id) => id,
            None => {
                let mut rng = self.inner.rng.lock().unwrap_or_else(|e| e.into_inner());
                RoomId::generate(&mut *rng)
            }
        };
        let w = self.room_worker(&id);
        spec.id = Some(id);
        self.call(w, move |sfu, now, wall| {
            spec.created_at = wall;
            sfu.create_room(now, spec)
        })
        .await?
        .map_err(Into::into)
    }

    /// Reads a Room.
    pub async fn get_room(&self, id: RoomId) -> Result<RoomInfo, GatewayError> {
        let w = self.room_worker(&id);
        Ok(self.call(w, move |sfu, _, _| sfu.get_room(&id)).await??)
    }

    /// Lists every Room of every Worker, ordered by id.
    pub async fn list_rooms(&self) -> Result<Vec<RoomInfo>, GatewayError> {
        let mut all = Vec::new();
        for w in 0..self.inner.workers.len() {
            all.extend(self.call(w, |sfu, _, _| sfu.list_rooms()).await?);
        }
        all.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(all)
    }

    /// Deletes a Room, closing its Sessions; returns how many.
    pub async fn delete_room(&self, id: RoomId) -> Result<u32, GatewayError> {
        let w = self.room_worker(&id);
        Ok(self
            .call(w, move |sfu, now, _| sfu.delete_room(now, &id))
            .await??)
    }

    /// Creates a Session in a Room. Returns it and the ICE servers for the Peer, with TURN
    /// credentials minted for this Session (identity = the Session id).
    pub async fn create_session(
        &self,
        mut spec: SessionSpec,
    ) -> Result<(SessionInfo, Vec<IceServer>), GatewayError> {
        self.check_open()?;
        let w = self.room_worker(&spec.room);
        let info = self
            .call(w, move |sfu, now, wall| {
                spec.created_at = wall;
                sfu.create_session(now, spec)
            })
            .await??;
        let ice = self
            .inner
            .ice_servers
            .for_session(&info.id.to_string(), std::time::SystemTime::now());
        Ok((info, ice))
    }

    /// Reads a Session.
    pub async fn get_session(&self, id: SessionId) -> Result<SessionInfo, GatewayError> {
        let w = self.session_worker(&id)?;
        Ok(self
            .call(w, move |sfu, _, _| sfu.get_session(&id))
            .await??)
    }

    /// Lists a Room's Sessions.
    pub async fn list_sessions(&self, room: RoomId) -> Result<Vec<SessionInfo>, GatewayError> {
        let w = self.room_worker(&room);
        Ok(self
            .call(w, move |sfu, _, _| sfu.list_sessions(&room))
            .await??)
    }

    /// Closes a Session.
    pub async fn close_session(&self, id: SessionId) -> Result<(), GatewayError> {
        let w = self.session_worker(&id)?;
        Ok(self
            .call(w, move |sfu, now, _| sfu.close_session(now, &id))
            .await??)
    }

    /// Applies a Peer's offer; returns the answer SDP.
    pub async fn apply_offer(&self, id: SessionId, sdp: String) -> Result<String, GatewayError> {
        let w = self.session_worker(&id)?;
        Ok(self
            .call(w, move |sfu, now, _| sfu.apply_offer(now, &id, &sdp))
            .await??)
    }

    /// Applies a Peer's answer to the gateway's outstanding offer (`offer_id` checks which).
    pub async fn apply_answer(
        &self,
        id: SessionId,
        sdp: String,
        offer_id: Option<u64>,
    ) -> Result<(), GatewayError> {
        let w = self.session_worker(&id)?;
        Ok(self
            .call(w, move |sfu, now, _| {
                sfu.apply_answer(now, &id, &sdp, offer_id)
            })
            .await??)
    }

    /// Adds a trickled remote candidate, or the end of them.
    pub async fn add_ice_candidate(
        &self,
        id: SessionId,
        candidate: Candidate,
    ) -> Result<(), GatewayError> {
        let w = self.session_worker(&id)?;
        Ok(self
            .call(w, move |sfu, now, _| {
                let c = match &candidate {
                    Candidate::Line(l) => RemoteCandidate::Candidate(l),
                    Candidate::End => RemoteCandidate::EndOfCandidates,
                };
                sfu.add_remote_candidate(now, &id, c)
            })
            .await??)
    }

    /// Sends a data-channel message from the backend to Sessions of a Room (all when `targets` is
    /// empty) on their channel labelled `label`. See `data.proto` for the delivery rules.
    pub async fn send_data(
        &self,
        room: RoomId,
        msg: DataMessage,
    ) -> Result<SendReport, GatewayError> {
        if !msg.binary && std::str::from_utf8(&msg.data).is_err() {
            return Err(GatewayError::InvalidArgument {
                field: "data",
                reason: "a text message (binary = false) must be UTF-8".into(),
            });
        }
        let w = self.room_worker(&room);
        Ok(self
            .call(w, move |sfu, now, _| {
                sfu.send_data(
                    now,
                    &room,
                    &msg.targets,
                    &msg.label,
                    msg.binary,
                    &msg.data,
                    msg.reliable,
                )
            })
            .await??)
    }

    /// Mutes or unmutes a published Track on the server.
    pub async fn mute_track(
        &self,
        room: RoomId,
        track: TrackId,
        muted: bool,
    ) -> Result<(), GatewayError> {
        let w = self.room_worker(&room);
        Ok(self
            .call(w, move |sfu, now, _| {
                sfu.set_track_muted(now, &room, &track, muted)
            })
            .await??)
    }

    /// Removes a Participant (all its Sessions) from a Room; returns how many Sessions closed.
    pub async fn remove_participant(
        &self,
        room: RoomId,
        participant: ParticipantId,
    ) -> Result<u32, GatewayError> {
        let w = self.room_worker(&room);
        Ok(self
            .call(w, move |sfu, now, _| {
                sfu.remove_participant(now, &room, &participant)
            })
            .await??)
    }

    /// Subscribes a Session to Tracks of its Room.
    pub async fn subscribe(&self, id: SessionId, tracks: Vec<TrackId>) -> Result<(), GatewayError> {
        let w = self.session_worker(&id)?;
        Ok(self
            .call(w, move |sfu, now, _| sfu.subscribe(now, &id, &tracks))
            .await??)
    }

    /// Unsubscribes a Session from Tracks.
    pub async fn unsubscribe(
        &self,
        id: SessionId,
        tracks: Vec<TrackId>,
    ) -> Result<(), GatewayError> {
        let w = self.session_worker(&id)?;
        Ok(self
            .call(w, move |sfu, now, _| sfu.unsubscribe(now, &id, &tracks))
            .await??)
    }

    /// Sets a subscriber's layer and pause preference for one Track.
    pub async fn set_track_preference(
        &self,
        id: SessionId,
        track: TrackId,
        pref: TrackPreference,
    ) -> Result<(), GatewayError> {
        let w = self.session_worker(&id)?;
        Ok(self
            .call(w, move |sfu, now, _| {
                sfu.set_track_preference(now, &id, &track, pref)
            })
            .await??)
    }

    /// Subscribes to events from now on.
    pub fn watch_events(&self, filter: EventFilter) -> EventSubscription {
        self.inner.bus.subscribe(filter)
    }

    /// Whether the gateway is shutting down.
    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::Acquire)
    }
}

/// The steps of [`crate::Gateway::shutdown`]; nothing else calls them.
impl GatewayHandle {
    /// Refuses new Rooms and Sessions from now on (`is_draining` turns true).
    pub(crate) fn start_draining(&self) {
        self.inner.draining.store(true, Ordering::Release);
    }

    /// Has every Worker close its Sessions (Peers get a DTLS close) and stop; returns once each
    /// has answered or is gone.
    pub(crate) async fn shutdown_workers(&self) {
        for w in &self.inner.workers {
            w.shutdown().await;
        }
    }

    /// Publishes `Draining`, the last event of every stream.
    pub(crate) fn publish_draining(&self) {
        self.inner.bus.publish(crate::events::EventBody::Draining);
    }
}
