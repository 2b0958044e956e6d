//! [`GatewayHandle`]: the gateway's control surface as typed Rust calls, the same operations the
//! gRPC API offers. The gRPC service is a thin adapter over it; embedders call it directly.
//!
//! Each call builds a core [`Command`], sends it to its Worker's bounded queue and unpacks the
//! [`Reply`]; every rule a request must follow is the core's, so embedders get exactly the gRPC
//! contract. It owns dispatch: a Room lives on the Worker chosen by a hash of its id, and a Session
//! id names its Worker, so no shared directory is needed. It never touches a socket or an `Rtc`,
//! and it validates nothing itself.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use switchboard_core::{
    Command, CoreError, ParticipantId, Reply, RoomId, RoomInfo, RoomSpec, SendReport, SessionId,
    SessionInfo, SessionSpec, TrackId, TrackPreference,
};
pub use switchboard_core::{DataMessage, IceCandidate};

use crate::driver::{SendError, WorkerHandle};
use crate::events::{EventBus, EventFilter, EventSubscription};
use crate::paging::{self, HandleBounds, Listing, Page, PageRequest};
pub use crate::turn::IceServer;
use crate::turn::IceServers;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// The core refused the request.
    #[error(transparent)]
    Core(#[from] CoreError),
    /// The Worker's command queue is full; retry later.
    #[error("worker {worker} is overloaded; retry later")]
    Busy {
        /// Which Worker.
        worker: usize,
    },
    /// The gateway is shutting down or a Worker stopped.
    #[error("gateway unavailable: {0}")]
    Unavailable(&'static str),
    /// A bug: a Worker answered a command with a reply of another command's shape.
    #[error("internal error: a worker answered {command} with {reply}")]
    WrongReply {
        /// The command's kind.
        command: &'static str,
        /// The reply it got.
        reply: String,
    },
}

/// Unpacks the reply a command must get. Any other variant is a bug (the core answers each
/// command with the variant its docs name); it is reported as [`GatewayError::WrongReply`]
/// (INTERNAL) rather than a panic, so one bad answer cannot take down the caller's task.
macro_rules! expect_reply {
    ($answer:expr, $pat:pat => $out:expr) => {{
        let answer: Answer = $answer;
        match answer.reply {
            $pat => Ok($out),
            other => Err(GatewayError::WrongReply {
                command: answer.kind,
                reply: format!("{other:?}"),
            }),
        }
    }};
}

/// A Worker's reply and the kind of command it answers.
struct Answer {
    kind: &'static str,
    reply: Reply,
}

pub(crate) struct Inner {
    pub(crate) workers: Vec<WorkerHandle>,
    pub(crate) bus: Arc<EventBus>,
    pub(crate) ice_servers: IceServers,
    pub(crate) draining: AtomicBool,
    rng: Mutex<ChaCha20Rng>,
    bounds: HandleBounds,
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
        bounds: HandleBounds,
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
                bounds,
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

    /// Sends `cmd` to Worker `worker` and waits for its reply.
    async fn call(&self, worker: usize, cmd: Command) -> Result<Answer, GatewayError> {
        let kind = cmd.kind();
        let res = self.inner.workers[worker]
            .call(cmd)
            .await
            .map_err(|e| match e {
                SendError::Full => GatewayError::Busy { worker },
                SendError::Stopped => GatewayError::Unavailable("the worker has stopped"),
                SendError::Faulted => GatewayError::Unavailable(
                    "the worker faulted on this request and restarted empty; its Rooms closed",
                ),
            })?;
        Ok(Answer { kind, reply: res? })
    }

    /// Refuses a new Room or Session on Worker `w` while it is overloaded (`[overload]`).
    fn admit_new(&self, w: usize) -> Result<(), GatewayError> {
        let overload = &self.inner.bounds.overload;
        Ok(self.inner.workers[w].admit_new(w, overload)?)
    }

    fn check_open(&self) -> Result<(), GatewayError> {
        if self.inner.draining.load(Ordering::Acquire) {
            return Err(GatewayError::Unavailable("the gateway is shutting down"));
        }
        Ok(())
    }

    /// Creates a Room (idempotent for an identical caller-chosen id). Returns it and whether this
    /// call created it. `spec.created_at` is replaced by the Worker's wall-clock time.
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
        self.admit_new(w)?;
        spec.id = Some(id);
        expect_reply!(self.call(w, Command::CreateRoom(spec)).await?,
            Reply::RoomCreated { room, created } => (room, created))
    }

    /// Reads a Room.
    pub async fn get_room(&self, room: RoomId) -> Result<RoomInfo, GatewayError> {
        let w = self.room_worker(&room);
        expect_reply!(self.call(w, Command::GetRoom { room }).await?, Reply::Room(r) => r)
    }

    /// Lists one page of the Rooms of every Worker, ordered by id across Workers.
    pub async fn list_rooms(&self, page: PageRequest) -> Result<Page<RoomInfo>, GatewayError> {
        let size = self.inner.bounds.page_size(page.page_size);
        let after =
            paging::decode_token(Listing::Rooms, &page.page_token, |s| RoomId::parse(s).ok())?;
        let mut all = Vec::new();
        for w in 0..self.inner.workers.len() {
            // One more than a page from each: whether anything follows the page is then known.
            let cmd = Command::ListRooms {
                after: after.clone(),
                limit: size + 1,
            };
            let rooms = expect_reply!(self.call(w, cmd).await?, Reply::Rooms(r) => r)?;
            all.extend(rooms);
        }
        Ok(paging::merge(Listing::Rooms, all, size, |r| {
            r.id.to_string()
        }))
    }

    /// Deletes a Room, closing its Sessions; returns how many.
    pub async fn delete_room(&self, room: RoomId) -> Result<u32, GatewayError> {
        let w = self.room_worker(&room);
        expect_reply!(self.call(w, Command::DeleteRoom { room }).await?,
            Reply::SessionsClosed(n) => n)
    }

    /// Creates a Session in a Room. Returns it and the ICE servers for the Peer, with TURN
    /// credentials minted for this Session (identity = the Session id).
    pub async fn create_session(
        &self,
        spec: SessionSpec,
    ) -> Result<(SessionInfo, Vec<IceServer>), GatewayError> {
        self.check_open()?;
        let w = self.room_worker(&spec.room);
        self.admit_new(w)?;
        let info = expect_reply!(self.call(w, Command::CreateSession(spec)).await?,
            Reply::Session(s) => s)?;
        let ice = self
            .inner
            .ice_servers
            .for_session(&info.id.to_string(), std::time::SystemTime::now());
        Ok((info, ice))
    }

    /// Reads a Session.
    pub async fn get_session(&self, session: SessionId) -> Result<SessionInfo, GatewayError> {
        let w = self.session_worker(&session)?;
        expect_reply!(self.call(w, Command::GetSession { session }).await?,
            Reply::Session(s) => s)
    }

    /// Reads the connection statistics of a Room's Sessions.
    pub async fn get_room_stats(
        &self,
        room: RoomId,
    ) -> Result<Vec<switchboard_core::SessionStats>, GatewayError> {
        let w = self.room_worker(&room);
        expect_reply!(self.call(w, Command::GetRoomStats { room }).await?,
            Reply::RoomStats(s) => s)
    }

    /// Reads a Session's connection statistics.
    pub async fn get_session_stats(
        &self,
        session: SessionId,
    ) -> Result<switchboard_core::SessionStats, GatewayError> {
        let w = self.session_worker(&session)?;
        expect_reply!(self.call(w, Command::GetSessionStats { session }).await?,
            Reply::SessionStats(s) => s)
    }

    /// Lists one page of a Room's Sessions, ordered by id.
    pub async fn list_sessions(
        &self,
        room: RoomId,
        page: PageRequest,
    ) -> Result<Page<SessionInfo>, GatewayError> {
        let size = self.inner.bounds.page_size(page.page_size);
        let after = paging::decode_token(Listing::Sessions, &page.page_token, |s| {
            SessionId::parse(s).ok()
        })?;
        let w = self.room_worker(&room);
        let cmd = Command::ListSessions {
            room,
            after,
            limit: size + 1,
        };
        let sessions = expect_reply!(self.call(w, cmd).await?, Reply::Sessions(s) => s)?;
        Ok(paging::merge(Listing::Sessions, sessions, size, |s| {
            s.id.to_string()
        }))
    }

    /// Closes a Session.
    pub async fn close_session(&self, session: SessionId) -> Result<(), GatewayError> {
        let w = self.session_worker(&session)?;
        expect_reply!(self.call(w, Command::CloseSession { session }).await?, Reply::Done => ())
    }

    /// Applies a Peer's offer; returns the answer SDP.
    pub async fn apply_offer(
        &self,
        session: SessionId,
        sdp: String,
    ) -> Result<String, GatewayError> {
        self.inner.bounds.check_sdp(&sdp)?;
        let w = self.session_worker(&session)?;
        expect_reply!(self.call(w, Command::ApplyOffer { session, sdp }).await?,
            Reply::Answer(a) => a)
    }

    /// Applies a Peer's answer to the gateway's outstanding offer (`offer_id` checks which).
    pub async fn apply_answer(
        &self,
        session: SessionId,
        sdp: String,
        offer_id: Option<u64>,
    ) -> Result<(), GatewayError> {
        self.inner.bounds.check_sdp(&sdp)?;
        let w = self.session_worker(&session)?;
        let cmd = Command::ApplyAnswer {
            session,
            sdp,
            offer_id,
        };
        expect_reply!(self.call(w, cmd).await?, Reply::Done => ())
    }

    /// Adds a trickled remote candidate, or the end of them.
    pub async fn add_ice_candidate(
        &self,
        session: SessionId,
        candidate: IceCandidate,
    ) -> Result<(), GatewayError> {
        let w = self.session_worker(&session)?;
        let cmd = Command::AddIceCandidate { session, candidate };
        expect_reply!(self.call(w, cmd).await?, Reply::Done => ())
    }

    /// Sends a data-channel message from the backend to Sessions of a Room (all when `targets` is
    /// empty) on their channel labelled `label`. See `data.proto` for the delivery rules.
    pub async fn send_data(
        &self,
        room: RoomId,
        message: DataMessage,
    ) -> Result<SendReport, GatewayError> {
        let w = self.room_worker(&room);
        expect_reply!(self.call(w, Command::SendData { room, message }).await?,
            Reply::Sent(r) => r)
    }

    /// Mutes or unmutes a published Track on the server.
    pub async fn mute_track(
        &self,
        room: RoomId,
        track: TrackId,
        muted: bool,
    ) -> Result<(), GatewayError> {
        let w = self.room_worker(&room);
        let cmd = Command::MuteTrack { room, track, muted };
        expect_reply!(self.call(w, cmd).await?, Reply::Done => ())
    }

    /// Removes a Participant (all its Sessions) from a Room; returns how many Sessions closed.
    pub async fn remove_participant(
        &self,
        room: RoomId,
        participant: ParticipantId,
    ) -> Result<u32, GatewayError> {
        let w = self.room_worker(&room);
        let cmd = Command::RemoveParticipant { room, participant };
        expect_reply!(self.call(w, cmd).await?, Reply::SessionsClosed(n) => n)
    }

    /// Subscribes a Session to Tracks of its Room.
    pub async fn subscribe(
        &self,
        session: SessionId,
        tracks: Vec<TrackId>,
    ) -> Result<(), GatewayError> {
        let w = self.session_worker(&session)?;
        expect_reply!(self.call(w, Command::Subscribe { session, tracks }).await?,
            Reply::Done => ())
    }

    /// Unsubscribes a Session from Tracks.
    pub async fn unsubscribe(
        &self,
        session: SessionId,
        tracks: Vec<TrackId>,
    ) -> Result<(), GatewayError> {
        let w = self.session_worker(&session)?;
        expect_reply!(self.call(w, Command::Unsubscribe { session, tracks }).await?,
            Reply::Done => ())
    }

    /// Sets a subscriber's layer and pause preference for one Track.
    pub async fn set_track_preference(
        &self,
        session: SessionId,
        track: TrackId,
        preference: TrackPreference,
    ) -> Result<(), GatewayError> {
        let w = self.session_worker(&session)?;
        let cmd = Command::SetTrackPreference {
            session,
            track,
            preference,
        };
        expect_reply!(self.call(w, cmd).await?, Reply::Done => ())
    }

    /// Subscribes to events from now on.
    pub fn watch_events(&self, filter: EventFilter) -> EventSubscription {
        self.inner.bus.subscribe(filter)
    }

    /// The largest SDP accepted (`signaling.max_sdp_bytes`).
    pub(crate) fn max_sdp_bytes(&self) -> usize {
        self.inner.bounds.max_sdp_bytes
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

/// Worker supervision: health for metrics and probes, and test-only fault injection.
impl GatewayHandle {
    /// Each Worker's health, by Worker index: restarts after faults of its core, and whether it
    /// is serving (see `driver/supervise.rs`).
    pub fn worker_health(&self) -> Vec<crate::WorkerHealth> {
        self.inner
            .workers
            .iter()
            .map(|w| w.status().snapshot())
            .collect()
    }

    /// Test hook: makes Worker `worker`'s core panic outside any Session, now or at its next
    /// datagram or timeout (feature `testing`).
    #[cfg(feature = "testing")]
    pub async fn inject_sfu_fault(
        &self,
        worker: usize,
        at: switchboard_core::SfuFault,
    ) -> Result<(), GatewayError> {
        if worker >= self.inner.workers.len() {
            return Err(GatewayError::Unavailable("no such worker"));
        }
        self.call(worker, Command::InjectSfuFault { at }).await?;
        Ok(())
    }

    /// Test hook: the next touch of the Session's `Rtc` panics, inside its guard (feature
    /// `testing`).
    #[cfg(feature = "testing")]
    pub async fn inject_session_fault(&self, session: SessionId) -> Result<(), GatewayError> {
        let w = self.session_worker(&session)?;
        self.call(w, Command::InjectFault { session }).await?;
        Ok(())
    }

    /// What each Worker's core holds, by Worker index (feature `testing`).
    #[cfg(feature = "testing")]
    pub async fn census(&self) -> Result<Vec<switchboard_core::Census>, GatewayError> {
        let mut v = Vec::new();
        for w in 0..self.inner.workers.len() {
            match self.call(w, Command::Census).await?.reply {
                Reply::Census(c) => v.push(c),
                other => {
                    return Err(GatewayError::WrongReply {
                        command: "Census",
                        reply: format!("{other:?}"),
                    });
                }
            }
        }
        Ok(v)
    }

    /// The Worker index a Room lives on (feature `testing`).
    #[cfg(feature = "testing")]
    pub fn worker_of_room(&self, room: &RoomId) -> usize {
        self.room_worker(room)
    }
}
