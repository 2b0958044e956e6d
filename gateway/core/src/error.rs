//! [`CoreError`]: every way a backend's request can be refused by the core.
//!
//! Only backend mistakes become errors. Peer garbage is dropped and counted, never an error, and
//! broken invariants panic (caught per Session by the core).

use crate::ids::{ParticipantId, RoomId, SessionId, TrackId};

/// A backend's request was refused.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// A request field is invalid; `field` names it as the API does.
    #[error("invalid {field}: {reason}")]
    InvalidArgument {
        /// The offending field, e.g. `sdp` or `room_id`.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// No Room with that id exists.
    #[error("room {0} not found")]
    RoomNotFound(RoomId),
    /// No Session with that id exists.
    #[error("session {0} not found")]
    SessionNotFound(SessionId),
    /// No Track with that id is published in the Session's Room.
    #[error("track {0} not found")]
    TrackNotFound(TrackId),
    /// No Session of that Participant is in the Room.
    #[error("participant {0} not found in the room")]
    ParticipantNotFound(ParticipantId),
    /// The Session lacks the permission the request needs.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// A Room with that id exists with other options.
    #[error("room {0} already exists with different options")]
    RoomExists(RoomId),
    /// A limit was reached (`what` says which).
    #[error("limit reached: {0}")]
    LimitReached(String),
    /// The request does not fit the Session's negotiation state.
    #[error("session {session}: {reason}")]
    WrongState {
        /// The Session concerned.
        session: SessionId,
        /// Which state it is in and what was expected.
        reason: String,
    },
    /// The gateway is shutting down and takes no new Rooms or Sessions.
    #[error("gateway is shutting down")]
    ShuttingDown,
    /// An internal fault (a bug) while handling the request; the Session concerned was closed.
    #[error("internal error; session {0} was closed")]
    Internal(SessionId),
}
