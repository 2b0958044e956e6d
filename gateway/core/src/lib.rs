//! Switchboard's SFU core: every decision about Rooms, Sessions, Tracks, forwarding, keyframes
//! and data relay, as a sans-IO state machine ([`Sfu`]).
//!
//! # Invariants
//! - No IO: this crate depends on no async runtime, socket or RPC library (its `Cargo.toml` is the
//!   proof), and never reads the clock: time arrives as `now: Instant` on every input.
//! - One owner: an [`Sfu`] is owned by one Worker thread and mutated through `&mut self` only.
//! - Bytes from a Peer never panic and never produce an error; they are dropped and counted.
//!
//! # Driving loop
//! 1. Feed one input: a backend operation ([`Sfu::handle_command`] with a [`Command`]; each
//!    operation is also a method, `create_room`, `apply_offer`, …), [`Sfu::handle_datagram`]
//!    (a UDP datagram or a TCP frame, tagged with its [`Transport`]), [`Sfu::handle_tcp_closed`]
//!    or [`Sfu::handle_timeout`].
//! 2. Call [`Sfu::poll_output`] until it returns [`Output::Timeout`]: send each
//!    [`Output::Transmit`], publish each [`Output::Event`].
//! 3. Wait for the next datagram, control call, or the timeout instant; go to 1.

#![warn(missing_docs)]

mod command;
mod demux;
mod error;
mod ids;
mod keys;
mod model;
mod sfu;

pub use command::{COMMAND_KINDS, Command, CommandCounts, DataMessage, IceCandidate, Reply};
#[cfg(feature = "testing")]
pub use command::{Census, SfuFault};
pub use demux::stun_local_ufrag;
pub use error::{CoreError, Permission, WrongState};
pub use ids::{IdError, MAX_ID_LEN, ParticipantId, RoomId, SessionId, TrackId};
pub use model::*;
pub use sfu::{
    BweConfig, DIRECT_LABEL, Datagram, MAX_BACKEND_LABELS, MAX_LABEL_BYTES, MAX_METADATA_BYTES,
    Output, RemoteCandidate, Sfu, SfuConfig, SignalingLimits,
};

/// Fuzz bodies (feature `testing`), called by the `fuzz/` targets and replayed by `tests/fuzz.rs`.
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod fuzzing;

/// Internals exposed for the crate's own tests (feature `testing`); not a stable API.
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod testing {
    pub use crate::sfu::alloc::{Demand, LayerCap, allocate};
    pub use crate::sfu::forward::{Forwarder, Layer, Rewritten, is_keyframe, red_primary};
}
