//! The gRPC services: each method decodes its request, calls the [`GatewayHandle`], encodes the
//! result. No logic lives here.

use std::pin::Pin;

use switchboard::v1 as pb;
use switchboard::v1::data_service_server::DataService;
use switchboard::v1::event_service_server::EventService;
use switchboard::v1::room_service_server::RoomService;
use switchboard::v1::session_service_server::SessionService;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::convert::{FromProto, ToProto, room_id, session_id, track_id, track_ids};
use super::event_stream::{self, StreamLimits};
use super::status::{events_not_kept, invalid};
use crate::events::{BootId, EventFilter};
use crate::handle::{DataMessage, GatewayError, GatewayHandle, IceCandidate};
use crate::paging::PageRequest;
use switchboard_core::TrackPreference;

/// Largest `SendDataRequest` the gRPC layer decodes: the largest `data.max_message_bytes` the
/// configuration accepts (16 MiB) plus room for the ids and the label. Anything up to it reaches
/// the core, which refuses a message over the configured limit with INVALID_ARGUMENT naming
/// `data.max_message_bytes` (tonic's default decode limit, 4 MiB, answered OUT_OF_RANGE first).
pub(crate) const SEND_DATA_DECODE_LIMIT: usize = 16 * 1024 * 1024 + 64 * 1024;

/// Implements every `switchboard.v1` service over one [`GatewayHandle`].
#[derive(Clone)]
pub struct ControlService {
    handle: GatewayHandle,
    event_buffer: usize,
}

impl ControlService {
    /// A service over `handle`; each event stream buffers up to `event_buffer` events.
    pub fn new(handle: GatewayHandle, event_buffer: usize) -> Self {
        Self {
            handle,
            event_buffer,
        }
    }
}

#[tonic::async_trait]
impl RoomService for ControlService {
    async fn create_room(
        &self,
        req: Request<pb::CreateRoomRequest>,
    ) -> Result<Response<pb::CreateRoomResponse>, Status> {
        let spec = FromProto::from_proto(req.into_inner())?;
        let (room, created) = self.handle.create_room(spec).await?;
        Ok(Response::new(pb::CreateRoomResponse {
            room: Some(room.to_proto()),
            created,
            ..Default::default()
        }))
    }

    async fn get_room(
        &self,
        req: Request<pb::GetRoomRequest>,
    ) -> Result<Response<pb::GetRoomResponse>, Status> {
        let id = room_id("room_id", &req.into_inner().room_id)?;
        let room = self.handle.get_room(id).await?;
        Ok(Response::new(pb::GetRoomResponse {
            room: Some(room.to_proto()),
        }))
    }

    async fn get_room_stats(
        &self,
        req: Request<pb::GetRoomStatsRequest>,
    ) -> Result<Response<pb::GetRoomStatsResponse>, Status> {
        let id = room_id("room_id", &req.into_inner().room_id)?;
        let stats = self.handle.get_room_stats(id).await?;
        Ok(Response::new(pb::GetRoomStatsResponse {
            sessions: stats.into_iter().map(ToProto::to_proto).collect(),
        }))
    }

    async fn list_rooms(
        &self,
        req: Request<pb::ListRoomsRequest>,
    ) -> Result<Response<pb::ListRoomsResponse>, Status> {
        let r = req.into_inner();
        let page = PageRequest {
            page_size: r.page_size,
            page_token: r.page_token,
        };
        let page = self.handle.list_rooms(page).await?;
        Ok(Response::new(pb::ListRoomsResponse {
            rooms: page.items.into_iter().map(ToProto::to_proto).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn delete_room(
        &self,
        req: Request<pb::DeleteRoomRequest>,
    ) -> Result<Response<pb::DeleteRoomResponse>, Status> {
        let id = room_id("room_id", &req.into_inner().room_id)?;
        let closed_sessions = self.handle.delete_room(id).await?;
        Ok(Response::new(pb::DeleteRoomResponse { closed_sessions }))
    }

    async fn mute_track(
        &self,
        req: Request<pb::MuteTrackRequest>,
    ) -> Result<Response<pb::MuteTrackResponse>, Status> {
        let r = req.into_inner();
        let room = room_id("room_id", &r.room_id)?;
        let track = track_id("track_id", &r.track_id)?;
        self.handle.mute_track(room, track, r.muted).await?;
        Ok(Response::new(pb::MuteTrackResponse {}))
    }

    async fn remove_participant(
        &self,
        req: Request<pb::RemoveParticipantRequest>,
    ) -> Result<Response<pb::RemoveParticipantResponse>, Status> {
        let r = req.into_inner();
        let room = room_id("room_id", &r.room_id)?;
        let participant = switchboard_core::ParticipantId::parse(&r.participant_id)
            .map_err(|e| invalid("participant_id", e.to_string()))?;
        let closed_sessions = self.handle.remove_participant(room, participant).await?;
        Ok(Response::new(pb::RemoveParticipantResponse {
            closed_sessions,
        }))
    }
}

#[tonic::async_trait]
impl SessionService for ControlService {
    async fn create_session(
        &self,
        req: Request<pb::CreateSessionRequest>,
    ) -> Result<Response<pb::CreateSessionResponse>, Status> {
        let spec = FromProto::from_proto(req.into_inner())?;
        let (session, ice) = self.handle.create_session(spec).await?;
        Ok(Response::new(pb::CreateSessionResponse {
            session: Some(session.to_proto()),
            ice_servers: ice.iter().map(ToProto::to_proto).collect(),
        }))
    }

    async fn get_session(
        &self,
        req: Request<pb::GetSessionRequest>,
    ) -> Result<Response<pb::GetSessionResponse>, Status> {
        let id = session_id("session_id", &req.into_inner().session_id)?;
        let session = self.handle.get_session(id).await?;
        Ok(Response::new(pb::GetSessionResponse {
            session: Some(session.to_proto()),
        }))
    }

    async fn get_session_stats(
        &self,
        req: Request<pb::GetSessionStatsRequest>,
    ) -> Result<Response<pb::GetSessionStatsResponse>, Status> {
        let id = session_id("session_id", &req.into_inner().session_id)?;
        let stats = self.handle.get_session_stats(id).await?;
        Ok(Response::new(pb::GetSessionStatsResponse {
            stats: Some(stats.to_proto()),
        }))
    }

    async fn list_sessions(
        &self,
        req: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        let r = req.into_inner();
        let id = room_id("room_id", &r.room_id)?;
        let page = PageRequest {
            page_size: r.page_size,
            page_token: r.page_token,
        };
        let page = self.handle.list_sessions(id, page).await?;
        Ok(Response::new(pb::ListSessionsResponse {
            sessions: page.items.into_iter().map(ToProto::to_proto).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn close_session(
        &self,
        req: Request<pb::CloseSessionRequest>,
    ) -> Result<Response<pb::CloseSessionResponse>, Status> {
        let id = session_id("session_id", &req.into_inner().session_id)?;
        self.handle.close_session(id).await?;
        Ok(Response::new(pb::CloseSessionResponse {}))
    }

    async fn apply_offer(
        &self,
        req: Request<pb::ApplyOfferRequest>,
    ) -> Result<Response<pb::ApplyOfferResponse>, Status> {
        let r = req.into_inner();
        let id = session_id("session_id", &r.session_id)?;
        let sdp = self.handle.apply_offer(id, r.sdp).await?;
        Ok(Response::new(pb::ApplyOfferResponse { sdp }))
    }

    async fn apply_answer(
        &self,
        req: Request<pb::ApplyAnswerRequest>,
    ) -> Result<Response<pb::ApplyAnswerResponse>, Status> {
        let r = req.into_inner();
        let id = session_id("session_id", &r.session_id)?;
        let offer_id = (r.offer_id != 0).then_some(r.offer_id);
        self.handle.apply_answer(id, r.sdp, offer_id).await?;
        Ok(Response::new(pb::ApplyAnswerResponse {}))
    }

    async fn add_ice_candidate(
        &self,
        req: Request<pb::AddIceCandidateRequest>,
    ) -> Result<Response<pb::AddIceCandidateResponse>, Status> {
        let r = req.into_inner();
        let id = session_id("session_id", &r.session_id)?;
        let c = IceCandidate::from_parts(r.candidate, r.end_of_candidates)
            .map_err(GatewayError::from)?;
        self.handle.add_ice_candidate(id, c).await?;
        Ok(Response::new(pb::AddIceCandidateResponse {}))
    }

    async fn subscribe(
        &self,
        req: Request<pb::SubscribeRequest>,
    ) -> Result<Response<pb::SubscribeResponse>, Status> {
        let r = req.into_inner();
        let id = session_id("session_id", &r.session_id)?;
        let tracks = track_ids("track_ids", &r.track_ids)?;
        self.handle.subscribe(id, tracks).await?;
        Ok(Response::new(pb::SubscribeResponse {}))
    }

    async fn unsubscribe(
        &self,
        req: Request<pb::UnsubscribeRequest>,
    ) -> Result<Response<pb::UnsubscribeResponse>, Status> {
        let r = req.into_inner();
        let id = session_id("session_id", &r.session_id)?;
        let tracks = track_ids("track_ids", &r.track_ids)?;
        self.handle.unsubscribe(id, tracks).await?;
        Ok(Response::new(pb::UnsubscribeResponse {}))
    }

    async fn set_track_preference(
        &self,
        req: Request<pb::SetTrackPreferenceRequest>,
    ) -> Result<Response<pb::SetTrackPreferenceResponse>, Status> {
        let r = req.into_inner();
        let id = session_id("session_id", &r.session_id)?;
        let track = track_id("track_id", &r.track_id)?;
        let pref = TrackPreference::new(r.max_layer, r.paused).map_err(GatewayError::from)?;
        self.handle.set_track_preference(id, track, pref).await?;
        Ok(Response::new(pb::SetTrackPreferenceResponse {}))
    }
}

#[tonic::async_trait]
impl DataService for ControlService {
    async fn send_data(
        &self,
        req: Request<pb::SendDataRequest>,
    ) -> Result<Response<pb::SendDataResponse>, Status> {
        let r = req.into_inner();
        let room = room_id("room_id", &r.room_id)?;
        let targets = r
            .session_ids
            .iter()
            .map(|s| session_id("session_ids", s))
            .collect::<Result<Vec<_>, _>>()?;
        let msg = DataMessage {
            targets,
            label: r.label,
            binary: r.binary,
            data: r.data,
            reliable: r.reliable,
        };
        let report = self.handle.send_data(room, msg).await?;
        Ok(Response::new(pb::SendDataResponse {
            delivered: report.delivered,
            no_channel_session_ids: report.no_channel.iter().map(ToString::to_string).collect(),
            undelivered_session_ids: report.undelivered.iter().map(ToString::to_string).collect(),
        }))
    }
}

/// The `WatchEvents` response stream.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send>>;

#[tonic::async_trait]
impl EventService for ControlService {
    type WatchEventsStream = EventStream;

    async fn watch_events(
        &self,
        req: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let r = req.into_inner();
        let filter = EventFilter {
            room: if r.room_id.is_empty() {
                None
            } else {
                Some(room_id("room_id", &r.room_id)?)
            },
            session: if r.session_id.is_empty() {
                None
            } else {
                Some(session_id("session_id", &r.session_id)?)
            },
        };
        // Subscribe before answering, so every event after this call is seen.
        let bus = &self.handle.inner.bus;
        let sub = match r.after_sequence {
            None => self.handle.watch_events(filter),
            Some(after) => {
                let boot = if r.boot_id.is_empty() {
                    None
                } else {
                    Some(
                        r.boot_id
                            .parse::<BootId>()
                            .ok()
                            .filter(|_| r.boot_id.len() == 32)
                            .ok_or_else(|| invalid("boot_id", "not 32 hex digits"))?,
                    )
                };
                bus.subscribe_after(after, boot, filter)
                    .map_err(|e| events_not_kept(&e))?
            }
        };
        let limits = StreamLimits {
            events: self.event_buffer,
            bytes: bus.limits().stream_bytes,
        };
        Ok(Response::new(event_stream::spawn(sub, limits)))
    }
}
