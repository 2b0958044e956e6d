//! [`CoreError`]: every way a backend's request can be refused by the core, with structured
//! fields (which field, which limit, which permission, which state) rather than prose, so that
//! callers can act on them and the API layer can map them to statuses in one table.
//!
//! Only backend mistakes become errors. Peer garbage is dropped and counted, never an error, and
//! broken invariants panic (caught per Session by the core). The core owns every validation rule
//! of a request, so an embedder calling it directly gets the same contract as a gRPC caller.

use std::fmt;

use crate::ids::{ParticipantId, RoomId, SessionId, TrackId};

/// A backend's request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoreError {
    /// A request field is invalid; `field` names it as the API does.
    #[error("invalid {field}: {reason}")]
    InvalidArgument {
        /// The offending field, e.g. `sdp` or `room_id`.
        field: &'static str,
        /// What is wrong with it (for people; a parser's own words where one refused it).
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
    #[error("permission denied: session {session} may not {permission}")]
    PermissionDenied {
        /// The Session.
        session: SessionId,
        /// The permission it lacks.
        permission: Permission,
    },
    /// A Room with that id exists with other options.
    #[error("room {0} already exists with different options")]
    RoomExists(RoomId),
    /// A limit was reached.
    #[error("limit reached: {limit} is {max}")]
    LimitReached {
        /// The limit: a configuration key (e.g. `rooms.max_rooms_per_worker`) or a Room option
        /// (`max_sessions`).
        limit: &'static str,
        /// Its value.
        max: u64,
    },
    /// The request does not fit the Session's negotiation or subscription state.
    #[error("session {session}: {reason}")]
    WrongState {
        /// The Session concerned.
        session: SessionId,
        /// Which state it is in and what the request needed.
        reason: WrongState,
    },
    /// The gateway is shutting down and takes no new Rooms or Sessions.
    #[error("gateway is shutting down")]
    ShuttingDown,
    /// An internal fault (a bug) while handling the request; the Session concerned was closed.
    #[error("internal error; session {0} was closed")]
    Internal(SessionId),
}

/// A permission a Session may lack (see `Permissions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Publish media.
    Publish,
    /// Receive other Participants' media.
    Subscribe,
    /// Send data-channel messages.
    Data,
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Publish => "publish",
            Self::Subscribe => "subscribe",
            Self::Data => "send data",
        })
    }
}

/// Why a request does not fit a Session's state ([`CoreError::WrongState`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WrongState {
    /// An answer arrived but the gateway has no offer outstanding.
    NoOfferOutstanding,
    /// The answer names another offer than the outstanding one.
    NotTheOutstandingOffer {
        /// The offer the answer names.
        given: u64,
        /// The offer outstanding.
        outstanding: u64,
    },
    /// An unsubscribe of the Track is still being negotiated.
    UnsubscribeInProgress(TrackId),
    /// The Session does not receive the Track.
    NotSubscribed(TrackId),
}

impl fmt::Display for WrongState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoOfferOutstanding => f.write_str("no gateway offer is outstanding"),
            Self::NotTheOutstandingOffer { given, outstanding } => write!(
                f,
                "offer {given} is not the outstanding offer (that is {outstanding})"
            ),
            Self::UnsubscribeInProgress(t) => write!(
                f,
                "an unsubscribe of {t} is being negotiated; retry after it"
            ),
            Self::NotSubscribed(t) => write!(f, "not subscribed to {t}"),
        }
    }
}
