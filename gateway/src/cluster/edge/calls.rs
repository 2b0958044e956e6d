//! The unary `switchboard.v1` calls in cluster mode: each is routed by Room or by Session (see
//! the parent module) and served locally or forwarded to the node that has it. `CreateRoom`
//! places new Rooms and follows a lost claim to its winner once.

use switchboard::v1 as pb;
use switchboard::v1::data_service_server::DataService;
use switchboard::v1::room_service_server::RoomService;
use switchboard::v1::session_service_server::SessionService;
use switchboard_core::RoomId;
use tonic::{Request, Response, Status};

use super::{ClusterEdge, OWNER_HINT, Route, generate_room_id, is_forwarded, status};
use crate::api::convert;

/// Serves a call by `room`: locally, or on the owner through `$client`.
macro_rules! by_room {
    ($self:ident, $req:ident, $room:expr, $client:ident, $method:ident) => {{
        let room = $room;
        match $self.route_room(&$req, &room).await? {
            Route::Local => $self.local.$method($req).await,
            Route::Remote(n) => {
                let (meta, _, msg) = $req.into_parts();
                $self
                    .$client(&n)?
                    .$method($self.forward(&meta, msg))
                    .await
                    .map_err(|s| status::via(&n, s))
            }
        }
    }};
}

/// Serves a call by Session: locally, or on the node that has it.
macro_rules! by_session {
    ($self:ident, $req:ident, $method:ident) => {{
        let session = $req.get_ref().session_id.clone();
        match $self.route_session(&$req, &session).await? {
            Route::Local => $self.local.$method($req).await,
            Route::Remote(n) => {
                let (meta, _, msg) = $req.into_parts();
                let res = $self
                    .sessions_client(&n)?
                    .$method($self.forward(&meta, msg))
                    .await
                    .map_err(|s| status::via(&n, s));
                if res.is_err() {
                    $self.sessions.forget(&session);
                }
                res
            }
        }
    }};
}

#[tonic::async_trait]
impl RoomService for ClusterEdge {
    async fn create_room(
        &self,
        mut req: Request<pb::CreateRoomRequest>,
    ) -> Result<Response<pb::CreateRoomResponse>, Status> {
        if is_forwarded(&req) {
            return self.create_here(req).await;
        }
        // Checked before any store call, so a bad hint is INVALID_ARGUMENT whatever the store does.
        let hint = convert::region_hint(&req.get_ref().region_hint)?;
        if req.get_ref().room_id.is_empty() {
            req.get_mut().room_id = generate_room_id();
        }
        let room = req.get_ref().room_id.clone();
        if RoomId::parse(&room).is_err() || self.agent.holds(&room).is_some() {
            return self.create_here(req).await;
        }
        let owner = self
            .agent
            .store
            .room_owner(&room)
            .await
            .map_err(status::store)?;
        let mut target = match owner {
            Some(o) if o.node == self.agent.node_id => return self.create_here(req).await,
            Some(o) => self
                .agent
                .find_node(&o.node)
                .await
                .ok_or_else(|| status::owner_gone(&room, &o.node))?,
            None => self
                .agent
                .place(hint.as_ref())
                .await
                .map_err(status::place)?,
        };
        let (meta, _, msg) = req.into_parts();
        // A lost race for the lease names the winner: one more hop there.
        for attempt in 0..2 {
            let res = if target.id == self.agent.node_id {
                let mut r = Request::new(msg.clone());
                *r.metadata_mut() = meta.clone();
                self.create_here(r).await
            } else {
                self.rooms(&target)?
                    .create_room(self.forward(&meta, msg.clone()))
                    .await
                    .map_err(|s| status::via(&target, s))
            };
            match res {
                Err(s) if attempt == 0 && s.metadata().contains_key(OWNER_HINT) => {
                    let owner = s
                        .metadata()
                        .get(OWNER_HINT)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    target = self
                        .agent
                        .find_node(&owner)
                        .await
                        .ok_or_else(|| status::owner_gone(&room, &owner))?;
                }
                other => return other,
            }
        }
        Err(Status::unavailable(format!(
            "room {room}: its ownership changed during creation; retry"
        )))
    }

    async fn get_room(
        &self,
        req: Request<pb::GetRoomRequest>,
    ) -> Result<Response<pb::GetRoomResponse>, Status> {
        by_room!(self, req, req.get_ref().room_id.clone(), rooms, get_room)
    }

    async fn get_room_stats(
        &self,
        req: Request<pb::GetRoomStatsRequest>,
    ) -> Result<Response<pb::GetRoomStatsResponse>, Status> {
        by_room!(
            self,
            req,
            req.get_ref().room_id.clone(),
            rooms,
            get_room_stats
        )
    }

    async fn list_rooms(
        &self,
        req: Request<pb::ListRoomsRequest>,
    ) -> Result<Response<pb::ListRoomsResponse>, Status> {
        // This node's Rooms, paged by the local service (pages cannot span nodes); the cluster's
        // Rooms are in GetClusterStatus.
        self.local.list_rooms(req).await
    }

    async fn delete_room(
        &self,
        req: Request<pb::DeleteRoomRequest>,
    ) -> Result<Response<pb::DeleteRoomResponse>, Status> {
        let room = req.get_ref().room_id.clone();
        match self.route_room(&req, &room).await? {
            Route::Local => {
                let _g = self.agent.ownership.lock().await;
                let res = self.local.delete_room(req).await;
                if res.is_ok() {
                    self.agent.release(&room).await;
                }
                res
            }
            Route::Remote(n) => {
                let (meta, _, msg) = req.into_parts();
                self.rooms(&n)?
                    .delete_room(self.forward(&meta, msg))
                    .await
                    .map_err(|s| status::via(&n, s))
            }
        }
    }

    async fn mute_track(
        &self,
        req: Request<pb::MuteTrackRequest>,
    ) -> Result<Response<pb::MuteTrackResponse>, Status> {
        by_room!(self, req, req.get_ref().room_id.clone(), rooms, mute_track)
    }

    async fn remove_participant(
        &self,
        req: Request<pb::RemoveParticipantRequest>,
    ) -> Result<Response<pb::RemoveParticipantResponse>, Status> {
        by_room!(
            self,
            req,
            req.get_ref().room_id.clone(),
            rooms,
            remove_participant
        )
    }
}

#[tonic::async_trait]
impl SessionService for ClusterEdge {
    async fn create_session(
        &self,
        req: Request<pb::CreateSessionRequest>,
    ) -> Result<Response<pb::CreateSessionResponse>, Status> {
        let room = req.get_ref().room_id.clone();
        match self.route_room(&req, &room).await? {
            Route::Local => self.local.create_session(req).await,
            Route::Remote(n) => {
                let (meta, _, msg) = req.into_parts();
                let res = self
                    .sessions_client(&n)?
                    .create_session(self.forward(&meta, msg))
                    .await
                    .map_err(|s| status::via(&n, s))?;
                if let Some(s) = &res.get_ref().session {
                    self.sessions.put(&s.session_id, &n.id);
                }
                Ok(res)
            }
        }
    }

    async fn get_session(
        &self,
        req: Request<pb::GetSessionRequest>,
    ) -> Result<Response<pb::GetSessionResponse>, Status> {
        by_session!(self, req, get_session)
    }

    async fn get_session_stats(
        &self,
        req: Request<pb::GetSessionStatsRequest>,
    ) -> Result<Response<pb::GetSessionStatsResponse>, Status> {
        by_session!(self, req, get_session_stats)
    }

    async fn list_sessions(
        &self,
        req: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        by_room!(
            self,
            req,
            req.get_ref().room_id.clone(),
            sessions_client,
            list_sessions
        )
    }

    async fn close_session(
        &self,
        req: Request<pb::CloseSessionRequest>,
    ) -> Result<Response<pb::CloseSessionResponse>, Status> {
        by_session!(self, req, close_session)
    }

    async fn apply_offer(
        &self,
        req: Request<pb::ApplyOfferRequest>,
    ) -> Result<Response<pb::ApplyOfferResponse>, Status> {
        by_session!(self, req, apply_offer)
    }

    async fn apply_answer(
        &self,
        req: Request<pb::ApplyAnswerRequest>,
    ) -> Result<Response<pb::ApplyAnswerResponse>, Status> {
        by_session!(self, req, apply_answer)
    }

    async fn add_ice_candidate(
        &self,
        req: Request<pb::AddIceCandidateRequest>,
    ) -> Result<Response<pb::AddIceCandidateResponse>, Status> {
        by_session!(self, req, add_ice_candidate)
    }

    async fn subscribe(
        &self,
        req: Request<pb::SubscribeRequest>,
    ) -> Result<Response<pb::SubscribeResponse>, Status> {
        by_session!(self, req, subscribe)
    }

    async fn unsubscribe(
        &self,
        req: Request<pb::UnsubscribeRequest>,
    ) -> Result<Response<pb::UnsubscribeResponse>, Status> {
        by_session!(self, req, unsubscribe)
    }

    async fn set_track_preference(
        &self,
        req: Request<pb::SetTrackPreferenceRequest>,
    ) -> Result<Response<pb::SetTrackPreferenceResponse>, Status> {
        by_session!(self, req, set_track_preference)
    }
}

#[tonic::async_trait]
impl DataService for ClusterEdge {
    async fn send_data(
        &self,
        req: Request<pb::SendDataRequest>,
    ) -> Result<Response<pb::SendDataResponse>, Status> {
        by_room!(self, req, req.get_ref().room_id.clone(), data, send_data)
    }
}
