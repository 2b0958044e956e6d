//! The one table from [`GatewayError`] to `tonic::Status`, plus the statuses the API layer makes
//! itself (bad fields, authentication, event streams cut short). Invalid fields carry a
//! `BadRequest` detail naming the field, so backends can tell which one was wrong.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::handle::GatewayError;
use switchboard_core::CoreError;

/// A bad field, as the API names it.
pub(crate) fn invalid(field: &str, reason: impl Into<String>) -> Status {
    let reason = reason.into();
    Status::with_error_details(
        Code::InvalidArgument,
        format!("invalid {field}: {reason}"),
        ErrorDetails::with_bad_request_violation(field, reason),
    )
}

/// No or a wrong API key (`why` says which).
pub(crate) fn unauthenticated(why: &str) -> Status {
    Status::unauthenticated(why.to_string())
}

/// The event stream fell behind the gateway's buffer and lost `missed` events.
pub(crate) fn events_lost(missed: u64) -> Status {
    Status::data_loss(format!(
        "the event stream fell behind and lost {missed} events; reconnect and re-read state"
    ))
}

/// The backend did not read its event stream, which filled its buffer (`limit` names which).
pub(crate) fn events_unread(limit: &str) -> Status {
    Status::data_loss(format!(
        "the backend read events too slowly ({limit} reached); reconnect with after_sequence \
         or re-read state"
    ))
}

/// `WatchEventsRequest.after_sequence` cannot be resumed (the message names the oldest available).
pub(crate) fn events_not_kept(e: &crate::events::ResumeError) -> Status {
    Status::out_of_range(e.to_string())
}

impl From<GatewayError> for Status {
    fn from(e: GatewayError) -> Self {
        match e {
            GatewayError::Busy { .. } => Self::resource_exhausted(e.to_string()),
            GatewayError::Unavailable(_) => Self::unavailable(e.to_string()),
            GatewayError::WrongReply { .. } => {
                tracing::error!(error = %e, "internal error");
                Self::internal(e.to_string())
            }
            GatewayError::Core(c) => match c {
                CoreError::InvalidArgument { field, reason } => invalid(field, reason),
                CoreError::PermissionDenied { .. } => Self::permission_denied(c.to_string()),
                CoreError::RoomNotFound(_)
                | CoreError::SessionNotFound(_)
                | CoreError::TrackNotFound(_)
                | CoreError::ParticipantNotFound(_) => Self::not_found(c.to_string()),
                CoreError::RoomExists(_) => Self::already_exists(c.to_string()),
                CoreError::LimitReached { .. } => Self::resource_exhausted(c.to_string()),
                CoreError::WrongState { .. } => Self::failed_precondition(c.to_string()),
                CoreError::ShuttingDown => Self::unavailable(c.to_string()),
                CoreError::Internal(_) => {
                    tracing::error!(error = %c, "internal error");
                    Self::internal(c.to_string())
                }
            },
        }
    }
}
