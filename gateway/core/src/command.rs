//! Backend operations as data: [`Command`] (one variant per operation), its [`Reply`], and
//! [`Sfu::handle_command`], the one door through which a Worker applies them.
//!
//! Because an operation is a value, it can be logged and counted by kind ([`Command::kind`],
//! [`CommandCounts`]), replayed in a deterministic test, and driven by a fuzzer as a sequence.
//! This file owns the shapes and the dispatch only: each operation's rules and effects live with
//! the state they change (`sfu/control.rs`, `sfu/negotiation.rs`, `sfu/data.rs`). It must not read
//! a clock: the wall-clock time a Room or Session records as its creation time arrives as input.

use std::time::{Instant, SystemTime};

use crate::error::CoreError;
use crate::ids::{ParticipantId, RoomId, SessionId, TrackId};
use crate::model::*;
use crate::sfu::{RemoteCandidate, Sfu};

/// One backend operation on a Worker's [`Sfu`].
#[derive(Debug, Clone)]
pub enum Command {
    /// Creates a Room (idempotent for an identical caller-chosen id). Replies
    /// [`Reply::RoomCreated`].
    CreateRoom(RoomSpec),
    /// Reads a Room. Replies [`Reply::Room`].
    GetRoom {
        /// The Room.
        room: RoomId,
    },
    /// Lists this Worker's Rooms, ordered by id: at most `limit`, those after `after`. Replies
    /// [`Reply::Rooms`].
    ListRooms {
        /// Only Rooms whose id sorts after this one (the last of the previous page).
        after: Option<RoomId>,
        /// Most Rooms returned.
        limit: usize,
    },
    /// Deletes a Room and closes its Sessions. Replies [`Reply::SessionsClosed`].
    DeleteRoom {
        /// The Room.
        room: RoomId,
    },
    /// Creates a Session in a Room. Replies [`Reply::Session`].
    CreateSession(SessionSpec),
    /// Reads a Session. Replies [`Reply::Session`].
    GetSession {
        /// The Session.
        session: SessionId,
    },
    /// Lists a Room's Sessions, ordered by id: at most `limit`, those after `after`. Replies
    /// [`Reply::Sessions`].
    ListSessions {
        /// The Room.
        room: RoomId,
        /// Only Sessions whose id sorts after this one (the last of the previous page).
        after: Option<SessionId>,
        /// Most Sessions returned.
        limit: usize,
    },
    /// Closes a Session. Replies [`Reply::Done`].
    CloseSession {
        /// The Session.
        session: SessionId,
    },
    /// Applies the Peer's offer. Replies [`Reply::Answer`].
    ApplyOffer {
        /// The Session.
        session: SessionId,
        /// The SDP offer.
        sdp: String,
    },
    /// Applies the Peer's answer to the gateway's outstanding offer. Replies [`Reply::Done`].
    ApplyAnswer {
        /// The Session.
        session: SessionId,
        /// The SDP answer.
        sdp: String,
        /// The offer answered (from `NegotiationNeeded`); `None` for whichever is outstanding.
        offer_id: Option<u64>,
    },
    /// Adds a trickled candidate of the Peer, or the end of them. Replies [`Reply::Done`].
    AddIceCandidate {
        /// The Session.
        session: SessionId,
        /// The candidate.
        candidate: IceCandidate,
    },
    /// Subscribes a Session to Tracks of its Room. Replies [`Reply::Done`].
    Subscribe {
        /// The subscriber.
        session: SessionId,
        /// The Tracks (at least one).
        tracks: Vec<TrackId>,
    },
    /// Unsubscribes a Session from Tracks. Replies [`Reply::Done`].
    Unsubscribe {
        /// The subscriber.
        session: SessionId,
        /// The Tracks (at least one).
        tracks: Vec<TrackId>,
    },
    /// Sets a subscriber's preference for one Track. Replies [`Reply::Done`].
    SetTrackPreference {
        /// The subscriber.
        session: SessionId,
        /// The Track.
        track: TrackId,
        /// The preference.
        preference: TrackPreference,
    },
    /// Mutes or unmutes a published Track for every subscriber. Replies [`Reply::Done`].
    MuteTrack {
        /// The Room.
        room: RoomId,
        /// The Track.
        track: TrackId,
        /// Muted (true) or unmuted.
        muted: bool,
    },
    /// Closes every Session of a Participant in a Room. Replies [`Reply::SessionsClosed`].
    RemoveParticipant {
        /// The Room.
        room: RoomId,
        /// The Participant.
        participant: ParticipantId,
    },
    /// Sends a backend message on data channels of a Room's Sessions. Replies [`Reply::Sent`].
    SendData {
        /// The Room.
        room: RoomId,
        /// The message and its targets.
        message: DataMessage,
    },
    /// Reads the connection statistics of a Room's Sessions. Replies [`Reply::RoomStats`].
    GetRoomStats {
        /// The Room.
        room: RoomId,
    },
    /// Reads a Session's connection statistics. Replies [`Reply::SessionStats`].
    GetSessionStats {
        /// The Session.
        session: SessionId,
    },
    /// Test hook: the next touch of the Session's `Rtc` panics, as a bug would. Replies
    /// [`Reply::Done`].
    #[cfg(feature = "testing")]
    InjectFault {
        /// The Session.
        session: SessionId,
    },
    /// Test hook: the `Sfu` itself panics (outside any Session's guarded section), now or at its
    /// next datagram or timeout, as a bug in the core would; the Worker's supervisor must contain
    /// it. Replies [`Reply::Done`] when armed for later (`Now` never replies).
    #[cfg(feature = "testing")]
    InjectSfuFault {
        /// When it fires.
        at: SfuFault,
    },
    /// Test hook: counts everything the core holds. Replies [`Reply::Census`].
    #[cfg(feature = "testing")]
    Census,
}

/// What a core holds ([`Command::Census`]); all zero once everything closed.
#[cfg(feature = "testing")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Census {
    /// Rooms.
    pub rooms: usize,
    /// Sessions.
    pub sessions: usize,
    /// Published Tracks.
    pub tracks: usize,
    /// Routes, counted from both ends ([`Sfu::n_routes`]).
    pub routes: usize,
    /// Demux entries (addresses, ufrags) and timers ([`Sfu::n_index_entries`]).
    pub index: (usize, usize, usize),
}

/// When an injected Sfu-level fault ([`Command::InjectSfuFault`]) fires.
#[cfg(feature = "testing")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SfuFault {
    /// While handling the command itself.
    Now,
    /// In the next [`Sfu::handle_datagram`].
    NextDatagram,
    /// In the next [`Sfu::handle_timeout`].
    NextTimeout,
}

/// What a [`Command`] returns; each command documents its variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The Room, and whether this command created it.
    RoomCreated {
        /// The Room.
        room: RoomInfo,
        /// False when an identical Room existed.
        created: bool,
    },
    /// One Room.
    Room(RoomInfo),
    /// Rooms, ordered by id.
    Rooms(Vec<RoomInfo>),
    /// One Session.
    Session(SessionInfo),
    /// Sessions, ordered by id.
    Sessions(Vec<SessionInfo>),
    /// How many Sessions the command closed.
    SessionsClosed(u32),
    /// The SDP answer to the Peer's offer.
    Answer(String),
    /// What a backend message reached.
    Sent(SendReport),
    /// A Session's connection statistics.
    SessionStats(SessionStats),
    /// The statistics of a Room's Sessions, ordered by Session id.
    RoomStats(Vec<SessionStats>),
    /// Done; nothing to return.
    Done,
    /// What the core holds ([`Command::Census`]).
    #[cfg(feature = "testing")]
    Census(Census),
}

/// A trickled remote candidate, or the end of them (owned; see [`RemoteCandidate`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IceCandidate {
    /// A `candidate:` line (an `a=` prefix is accepted).
    Line(String),
    /// The Peer has no more candidates.
    End,
}

impl IceCandidate {
    /// The candidate from the API's two fields (`candidate`, `end_of_candidates`): exactly one
    /// of them must be set.
    pub fn from_parts(candidate: String, end_of_candidates: bool) -> Result<Self, CoreError> {
        match (end_of_candidates, candidate.is_empty()) {
            (true, true) => Ok(Self::End),
            (true, false) => Err(CoreError::InvalidArgument {
                field: "candidate",
                reason: "must be empty when end_of_candidates is set".into(),
            }),
            (false, true) => Err(CoreError::InvalidArgument {
                field: "candidate",
                reason: "must not be empty unless end_of_candidates is set".into(),
            }),
            (false, false) => Ok(Self::Line(candidate)),
        }
    }
}

/// A backend message for [`Command::SendData`] (see `data.proto` for the delivery rules).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataMessage {
    /// Target Sessions; empty means the whole Room.
    pub targets: Vec<SessionId>,
    /// Channel label.
    pub label: String,
    /// Binary (true) or text (false: must be UTF-8).
    pub binary: bool,
    /// The bytes.
    pub data: Vec<u8>,
    /// Reliable delivery: only reliable channels, and a full receiver's channel is closed.
    pub reliable: bool,
}

/// Every kind of [`Command`], in declaration order ([`Command::kind`] names one).
pub const COMMAND_KINDS: [&str; 22] = [
    "CreateRoom",
    "GetRoom",
    "ListRooms",
    "DeleteRoom",
    "CreateSession",
    "GetSession",
    "ListSessions",
    "CloseSession",
    "ApplyOffer",
    "ApplyAnswer",
    "AddIceCandidate",
    "Subscribe",
    "Unsubscribe",
    "SetTrackPreference",
    "MuteTrack",
    "RemoveParticipant",
    "SendData",
    "InjectFault",
    "GetSessionStats",
    "GetRoomStats",
    "InjectSfuFault",
    "Census",
];

impl Command {
    fn index(&self) -> usize {
        match self {
            Self::CreateRoom(_) => 0,
            Self::GetRoom { .. } => 1,
            Self::ListRooms { .. } => 2,
            Self::DeleteRoom { .. } => 3,
            Self::CreateSession(_) => 4,
            Self::GetSession { .. } => 5,
            Self::ListSessions { .. } => 6,
            Self::CloseSession { .. } => 7,
            Self::ApplyOffer { .. } => 8,
            Self::ApplyAnswer { .. } => 9,
            Self::AddIceCandidate { .. } => 10,
            Self::Subscribe { .. } => 11,
            Self::Unsubscribe { .. } => 12,
            Self::SetTrackPreference { .. } => 13,
            Self::MuteTrack { .. } => 14,
            Self::RemoveParticipant { .. } => 15,
            Self::SendData { .. } => 16,
            #[cfg(feature = "testing")]
            Self::InjectFault { .. } => 17,
            Self::GetSessionStats { .. } => 18,
            Self::GetRoomStats { .. } => 19,
            #[cfg(feature = "testing")]
            Self::InjectSfuFault { .. } => 20,
            #[cfg(feature = "testing")]
            Self::Census => 21,
        }
    }

    /// The command's kind, e.g. `"ApplyOffer"` (for logs and metrics).
    pub fn kind(&self) -> &'static str {
        COMMAND_KINDS[self.index()]
    }
}

/// How many commands of each kind an [`Sfu`] handled (refused ones included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommandCounts([u64; COMMAND_KINDS.len()]);

impl CommandCounts {
    pub(crate) fn count(&mut self, cmd: &Command) {
        self.0[cmd.index()] += 1;
    }

    /// The count of one kind (0 for an unknown name).
    pub fn get(&self, kind: &str) -> u64 {
        COMMAND_KINDS
            .iter()
            .position(|k| *k == kind)
            .map_or(0, |i| self.0[i])
    }

    /// Every kind with its count, in declaration order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        COMMAND_KINDS.iter().copied().zip(self.0.iter().copied())
    }
}

impl Sfu {
    /// Applies one backend operation at `now`. `wall_clock` is the wall-clock time a created Room
    /// or Session records (`created_at`; the spec's own value is replaced). Every command is
    /// counted by kind ([`Sfu::command_counts`]) and logged at debug.
    pub fn handle_command(
        &mut self,
        now: Instant,
        wall_clock: SystemTime,
        cmd: Command,
    ) -> Result<Reply, CoreError> {
        self.count_command(&cmd);
        let kind = cmd.kind();
        let res = self.apply_command(now, wall_clock, cmd);
        match &res {
            Ok(_) => tracing::debug!(command = kind, "command applied"),
            Err(e) => tracing::debug!(command = kind, error = %e, "command refused"),
        }
        res
    }

    fn apply_command(
        &mut self,
        now: Instant,
        wall_clock: SystemTime,
        cmd: Command,
    ) -> Result<Reply, CoreError> {
        Ok(match cmd {
            Command::CreateRoom(mut spec) => {
                spec.created_at = wall_clock;
                let (room, created) = self.create_room(now, spec)?;
                Reply::RoomCreated { room, created }
            }
            Command::GetRoom { room } => Reply::Room(self.get_room(&room)?),
            Command::ListRooms { after, limit } => {
                Reply::Rooms(self.list_rooms(after.as_ref(), limit))
            }
            Command::DeleteRoom { room } => Reply::SessionsClosed(self.delete_room(now, &room)?),
            Command::CreateSession(mut spec) => {
                spec.created_at = wall_clock;
                Reply::Session(self.create_session(now, spec)?)
            }
            Command::GetSession { session } => Reply::Session(self.get_session(&session)?),
            Command::ListSessions { room, after, limit } => {
                Reply::Sessions(self.list_sessions(&room, after.as_ref(), limit)?)
            }
            Command::GetRoomStats { room } => Reply::RoomStats(self.room_stats(&room)?),
            Command::GetSessionStats { session } => {
                Reply::SessionStats(self.session_stats(&session)?)
            }
            Command::CloseSession { session } => {
                self.close_session(now, &session)?;
                Reply::Done
            }
            Command::ApplyOffer { session, sdp } => {
                Reply::Answer(self.apply_offer(now, &session, &sdp)?)
            }
            Command::ApplyAnswer {
                session,
                sdp,
                offer_id,
            } => {
                self.apply_answer(now, &session, &sdp, offer_id)?;
                Reply::Done
            }
            Command::AddIceCandidate { session, candidate } => {
                let c = match &candidate {
                    IceCandidate::Line(l) => RemoteCandidate::Candidate(l),
                    IceCandidate::End => RemoteCandidate::EndOfCandidates,
                };
                self.add_remote_candidate(now, &session, c)?;
                Reply::Done
            }
            Command::Subscribe { session, tracks } => {
                self.subscribe(now, &session, &tracks)?;
                Reply::Done
            }
            Command::Unsubscribe { session, tracks } => {
                self.unsubscribe(now, &session, &tracks)?;
                Reply::Done
            }
            Command::SetTrackPreference {
                session,
                track,
                preference,
            } => {
                self.set_track_preference(now, &session, &track, preference)?;
                Reply::Done
            }
            Command::MuteTrack { room, track, muted } => {
                self.set_track_muted(now, &room, &track, muted)?;
                Reply::Done
            }
            Command::RemoveParticipant { room, participant } => {
                Reply::SessionsClosed(self.remove_participant(now, &room, &participant)?)
            }
            Command::SendData { room, message } => {
                let m = &message;
                Reply::Sent(self.send_data(
                    now, &room, &m.targets, &m.label, m.binary, &m.data, m.reliable,
                )?)
            }
            #[cfg(feature = "testing")]
            Command::InjectFault { session } => {
                self.inject_fault(&session)?;
                Reply::Done
            }
            #[cfg(feature = "testing")]
            Command::InjectSfuFault { at } => {
                self.inject_sfu_fault(at);
                Reply::Done
            }
            #[cfg(feature = "testing")]
            Command::Census => Reply::Census(Census {
                rooms: self.n_rooms(),
                sessions: self.n_sessions(),
                tracks: self.n_tracks(),
                routes: self.n_routes(),
                index: self.n_index_entries(),
            }),
        })
    }
}
