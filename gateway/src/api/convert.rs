//! Conversions between protobuf messages and core types. Decoding only: every rule a request must
//! follow lives in the core (its operations, or the typed constructors such as `RoomId::parse`),
//! so an embedder calling `GatewayHandle` gets the same contract; a refusal becomes
//! INVALID_ARGUMENT naming the field.

use std::time::{Duration, SystemTime};

use switchboard::v1 as pb;
use switchboard_core::{
    ChannelCloseReason, EventKind, LayerReason, ParticipantId, Permissions, RoomCloseReason,
    RoomId, RoomInfo, RoomSpec, SessionCloseReason, SessionId, SessionInfo, SessionSpec,
    SessionState, TrackId, TrackInfo, TrackKind,
};
use tonic::Status;

use super::status::invalid;
use crate::cluster::Region;
use crate::events::{EventBody, GatewayEvent};
use crate::handle::IceServer;

/// Checked conversion of a request message into a core type (the orphan rule forbids `TryFrom`
/// between two foreign types, so the conversions use these two local traits).
pub(crate) trait FromProto<T>: Sized {
    fn from_proto(t: T) -> Result<Self, Status>;
}

/// Conversion of a core type into a response message.
pub(crate) trait ToProto<T> {
    fn to_proto(self) -> T;
}

// === requests ===

pub(crate) fn room_id(field: &str, s: &str) -> Result<RoomId, Status> {
    RoomId::parse(s).map_err(|e| invalid(field, e.to_string()))
}

pub(crate) fn session_id(field: &str, s: &str) -> Result<SessionId, Status> {
    SessionId::parse(s).map_err(|e| invalid(field, e.to_string()))
}

pub(crate) fn track_id(field: &str, s: &str) -> Result<TrackId, Status> {
    TrackId::parse(s).map_err(|e| invalid(field, e.to_string()))
}

pub(crate) fn track_ids(field: &str, ids: &[String]) -> Result<Vec<TrackId>, Status> {
    ids.iter().map(|s| track_id(field, s)).collect()
}

/// `CreateRoomRequest.region_hint`: a region name or empty. A single gateway checks it too and
/// then has no use for it.
pub(crate) fn region_hint(s: &str) -> Result<Option<Region>, Status> {
    Region::parse(s).map_err(|reason| invalid("region_hint", reason))
}

impl FromProto<pb::CreateRoomRequest> for RoomSpec {
    fn from_proto(r: pb::CreateRoomRequest) -> Result<Self, Status> {
        region_hint(&r.region_hint)?;
        let id = if r.room_id.is_empty() {
            None
        } else {
            Some(room_id("room_id", &r.room_id)?)
        };
        let o = r.options.unwrap_or_default();
        Ok(Self {
            id,
            max_sessions: (o.max_sessions != 0).then_some(o.max_sessions),
            empty_timeout: (o.empty_timeout_seconds != 0)
                .then(|| Duration::from_secs(u64::from(o.empty_timeout_seconds))),
            metadata: o.metadata,
            created_at: SystemTime::UNIX_EPOCH,
            backend_data_labels: o.backend_data_labels,
        })
    }
}

impl FromProto<pb::CreateSessionRequest> for SessionSpec {
    fn from_proto(r: pb::CreateSessionRequest) -> Result<Self, Status> {
        let room = room_id("room_id", &r.room_id)?;
        let participant = ParticipantId::parse(&r.participant_id)
            .map_err(|e| invalid("participant_id", e.to_string()))?;
        let permissions = r
            .permissions
            .map(|p| Permissions {
                publish: p.publish,
                subscribe: p.subscribe,
                data: p.data,
            })
            .unwrap_or_default();
        Ok(Self {
            room,
            participant,
            metadata: r.metadata,
            permissions,
            created_at: SystemTime::UNIX_EPOCH,
            auto_subscribe: !r.manual_subscribe,
        })
    }
}

// === responses ===

fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(t)
}

impl ToProto<pb::Room> for RoomInfo {
    fn to_proto(self) -> pb::Room {
        let r = self;
        pb::Room {
            room_id: r.id.to_string(),
            options: Some(pb::RoomOptions {
                max_sessions: r.max_sessions,
                empty_timeout_seconds: u32::try_from(r.empty_timeout.as_secs()).unwrap_or(u32::MAX),
                metadata: r.metadata,
                backend_data_labels: r.backend_data_labels,
            }),
            session_count: r.session_count,
            created_at: Some(timestamp(r.created_at)),
        }
    }
}

impl ToProto<pb::Session> for SessionInfo {
    fn to_proto(self) -> pb::Session {
        let s = self;
        let state = match s.state {
            SessionState::New => pb::SessionState::New,
            SessionState::Connecting => pb::SessionState::Connecting,
            SessionState::Connected => pb::SessionState::Connected,
            SessionState::Disconnected => pb::SessionState::Disconnected,
        };
        pb::Session {
            session_id: s.id.to_string(),
            room_id: s.room.to_string(),
            participant_id: s.participant.to_string(),
            metadata: s.metadata,
            permissions: Some(pb::Permissions {
                publish: s.permissions.publish,
                subscribe: s.permissions.subscribe,
                data: s.permissions.data,
            }),
            state: state as i32,
            published_track_ids: s.published.iter().map(ToString::to_string).collect(),
            created_at: Some(timestamp(s.created_at)),
        }
    }
}

impl ToProto<pb::IceServer> for &IceServer {
    fn to_proto(self) -> pb::IceServer {
        let s = self;
        pb::IceServer {
            urls: s.urls.clone(),
            username: s.username.clone(),
            credential: s.credential.clone(),
        }
    }
}

impl ToProto<pb::Track> for TrackInfo {
    fn to_proto(self) -> pb::Track {
        let t = self;
        pb::Track {
            track_id: t.id.to_string(),
            session_id: t.session.to_string(),
            participant_id: t.participant.to_string(),
            kind: match t.kind {
                TrackKind::Audio => pb::TrackKind::Audio,
                TrackKind::Video => pb::TrackKind::Video,
            } as i32,
            mid: t.mid,
            rids: t.rids,
        }
    }
}

fn session_reason(r: SessionCloseReason) -> pb::SessionCloseReason {
    use pb::SessionCloseReason as P;
    match r {
        SessionCloseReason::BackendRequest => P::BackendRequest,
        SessionCloseReason::RoomDeleted => P::RoomDeleted,
        SessionCloseReason::PeerClosed => P::PeerClosed,
        SessionCloseReason::DisconnectTimeout => P::DisconnectTimeout,
        SessionCloseReason::ConnectTimeout => P::ConnectTimeout,
        SessionCloseReason::GatewayShutdown => P::GatewayShutdown,
        SessionCloseReason::InternalError => P::InternalError,
        SessionCloseReason::PeerError => P::PeerError,
        SessionCloseReason::Removed => P::Removed,
    }
}

fn room_reason(r: RoomCloseReason) -> pb::RoomCloseReason {
    match r {
        RoomCloseReason::BackendRequest => pb::RoomCloseReason::BackendRequest,
        RoomCloseReason::EmptyTimeout => pb::RoomCloseReason::EmptyTimeout,
        RoomCloseReason::GatewayShutdown => pb::RoomCloseReason::GatewayShutdown,
        RoomCloseReason::InternalError => pb::RoomCloseReason::InternalError,
    }
}

impl ToProto<pb::Event> for &GatewayEvent {
    fn to_proto(self) -> pb::Event {
        let e = self;
        use pb::event::Kind;
        let (room_id, session_id, kind) = match &e.body {
            EventBody::Draining => (
                String::new(),
                String::new(),
                Kind::GatewayDraining(pb::GatewayDraining {}),
            ),
            EventBody::Sfu(ev) => {
                let kind = match ev.kind.clone() {
                    EventKind::RoomCreated => Kind::RoomCreated(pb::RoomCreated {}),
                    EventKind::RoomClosed(r) => Kind::RoomClosed(pb::RoomClosed {
                        reason: room_reason(r) as i32,
                    }),
                    EventKind::ParticipantJoined(p) => {
                        Kind::ParticipantJoined(pb::ParticipantJoined {
                            participant_id: p.to_string(),
                        })
                    }
                    EventKind::ParticipantLeft(p) => Kind::ParticipantLeft(pb::ParticipantLeft {
                        participant_id: p.to_string(),
                    }),
                    EventKind::SessionConnected => Kind::SessionConnected(pb::SessionConnected {}),
                    EventKind::SessionDisconnected { grace } => {
                        Kind::SessionDisconnected(pb::SessionDisconnected {
                            grace_seconds: u32::try_from(grace.as_secs()).unwrap_or(u32::MAX),
                        })
                    }
                    EventKind::SessionClosed {
                        reason,
                        participant,
                    } => Kind::SessionClosed(pb::SessionClosed {
                        reason: session_reason(reason) as i32,
                        participant_id: participant.to_string(),
                    }),
                    EventKind::NegotiationNeeded { offer_id, sdp } => {
                        Kind::NegotiationNeeded(pb::NegotiationNeeded { offer_id, sdp })
                    }
                    EventKind::TrackPublished(t) => Kind::TrackPublished(pb::TrackPublished {
                        track: Some(t.to_proto()),
                    }),
                    EventKind::DataReceived {
                        label,
                        binary,
                        data,
                    } => Kind::DataReceived(pb::DataReceived {
                        label,
                        data,
                        binary,
                    }),
                    EventKind::ChannelClosed { label, reason } => {
                        Kind::ChannelClosed(pb::ChannelClosed {
                            label,
                            reason: match reason {
                                ChannelCloseReason::SlowReceiver => {
                                    pb::ChannelCloseReason::SlowReceiver
                                }
                                ChannelCloseReason::ConfigMismatch => {
                                    pb::ChannelCloseReason::ConfigMismatch
                                }
                            } as i32,
                        })
                    }
                    EventKind::ActiveSpeakerChanged {
                        participant, level, ..
                    } => Kind::ActiveSpeakerChanged(pb::ActiveSpeakerChanged {
                        participant_id: participant.map(|p| p.to_string()).unwrap_or_default(),
                        level: u32::from(level),
                    }),
                    EventKind::TrackMuted { track, muted } => Kind::TrackMuted(pb::TrackMuted {
                        track_id: track.to_string(),
                        muted,
                    }),
                    EventKind::TrackLayersWanted { track, rids } => {
                        Kind::TrackLayersWanted(pb::TrackLayersWanted {
                            track_id: track.to_string(),
                            rids,
                        })
                    }
                    EventKind::SubscriptionLayerChanged {
                        track,
                        layer,
                        previous,
                        target,
                        reason,
                        keyframe_wait,
                        estimate_bps,
                    } => Kind::SubscriptionLayerChanged(pb::SubscriptionLayerChanged {
                        track_id: track.to_string(),
                        layer: layer.unwrap_or_default(),
                        previous_layer: previous.unwrap_or_default(),
                        target_layer: target.unwrap_or_default(),
                        reason: match reason {
                            LayerReason::Preference => pb::LayerReason::Preference,
                            LayerReason::Bandwidth => pb::LayerReason::Bandwidth,
                            LayerReason::PublisherLayerInactive => {
                                pb::LayerReason::PublisherLayerInactive
                            }
                            LayerReason::Paused => pb::LayerReason::Paused,
                        } as i32,
                        keyframe_wait,
                        estimate_bps: estimate_bps.unwrap_or(0),
                    }),
                    EventKind::ConnectionQualityChanged {
                        quality,
                        previous,
                        rtt_ms,
                        loss_permille,
                    } => Kind::ConnectionQualityChanged(pb::ConnectionQualityChanged {
                        quality: quality_to_proto(quality) as i32,
                        previous: quality_to_proto(previous) as i32,
                        rtt_ms: rtt_ms.unwrap_or(0),
                        loss_permille,
                    }),
                    EventKind::TrackUnpublished { track, publisher } => {
                        Kind::TrackUnpublished(pb::TrackUnpublished {
                            track_id: track.to_string(),
                            publisher_session_id: publisher.to_string(),
                        })
                    }
                };
                (
                    ev.room.to_string(),
                    ev.session
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                    kind,
                )
            }
        };
        pb::Event {
            boot_id: e.boot_id.to_string(),
            sequence: e.sequence,
            time: Some(timestamp(e.time)),
            room_id,
            session_id,
            kind: Some(kind),
        }
    }
}

impl ToProto<pb::SessionStats> for switchboard_core::SessionStats {
    fn to_proto(self) -> pb::SessionStats {
        let rates = |v: Vec<switchboard_core::TrackRates>| {
            v.into_iter()
                .map(|t| pb::TrackLayerRates {
                    track_id: t.track.to_string(),
                    layers: t
                        .layers
                        .into_iter()
                        .map(|(rid, bitrate_bps)| pb::LayerRate {
                            rid: rid.unwrap_or_default(),
                            bitrate_bps,
                        })
                        .collect(),
                })
                .collect()
        };
        pb::SessionStats {
            session_id: self.session.to_string(),
            rtt_ms: self.rtt_ms.unwrap_or(0),
            egress_loss_permille: self.egress_loss_permille.unwrap_or(0),
            ingress_loss_permille: self.ingress_loss_permille.unwrap_or(0),
            quality: quality_to_proto(self.quality) as i32,
            estimate_bps: self.estimate_bps.unwrap_or(0),
            published: rates(self.published),
            received: rates(self.received),
        }
    }
}

fn quality_to_proto(q: switchboard_core::ConnectionQuality) -> pb::ConnectionQuality {
    use switchboard_core::ConnectionQuality as Q;
    match q {
        Q::Excellent => pb::ConnectionQuality::Excellent,
        Q::Good => pb::ConnectionQuality::Good,
        Q::Poor => pb::ConnectionQuality::Poor,
        Q::Lost => pb::ConnectionQuality::Lost,
    }
}
