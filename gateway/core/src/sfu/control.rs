//! The backend operations: create, read, list and delete Rooms and Sessions, subscriptions and
//! preferences, moderation (mute, remove a Participant), and the fault-injection hook for tests.
//!
//! Each operation checks its request and refuses a mistake with a [`CoreError`] before changing
//! anything. It must not drive an `Rtc` itself: it changes state, marks Sessions dirty and lets
//! `session.rs` drive them; negotiation and forwarding live in their own files.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

use str0m::bwe::Bitrate;
use str0m::ice::IceCreds;
use str0m::{Candidate, Rtc};

use super::guard::RtcGuard;
use super::room::Room;
use super::session::Session;
use super::track::{OutState, release_track_out};
use super::{
    MAX_BACKEND_LABELS, MAX_LABEL_BYTES, MAX_METADATA_BYTES, Sfu, TimerKey, TrackKey,
    tcp_passive_candidate,
};
use crate::error::{CoreError, Permission, WrongState};
use crate::ids::{self, ParticipantId, RoomId, SessionId, TrackId};
use crate::keys::SessionKey;
use crate::model::*;

impl Sfu {
    pub(super) fn room_info(room: &Room) -> RoomInfo {
        RoomInfo {
            id: room.id.clone(),
            max_sessions: room.max_sessions,
            empty_timeout: room.empty_timeout,
            metadata: room.metadata.clone(),
            session_count: room.sessions.len() as u32,
            created_at: room.created_at,
            backend_data_labels: room.backend_labels.clone(),
        }
    }

    pub(super) fn session_info(&self, s: &Session) -> SessionInfo {
        let mut published: Vec<TrackId> = s
            .tracks_in
            .values()
            .filter_map(|k| self.tracks.get(k).map(|t| t.info.id.clone()))
            .collect();
        published.sort();
        SessionInfo {
            id: s.id.clone(),
            room: s.room.clone(),
            participant: s.participant.clone(),
            metadata: s.metadata.clone(),
            permissions: s.permissions,
            state: s.state,
            published,
            created_at: s.created_at,
        }
    }

    /// Creates a Room, or returns the identical existing one with `false`.
    pub fn create_room(
        &mut self,
        now: Instant,
        spec: RoomSpec,
    ) -> Result<(RoomInfo, bool), CoreError> {
        self.now = now;
        if self.draining {
            return Err(CoreError::ShuttingDown);
        }
        check_metadata("options.metadata", &spec.metadata)?;
        check_backend_labels(&spec.backend_data_labels)?;
        let max_sessions = spec
            .max_sessions
            .unwrap_or(self.config.default_max_sessions);
        if max_sessions > self.config.max_sessions_limit {
            return Err(CoreError::InvalidArgument {
                field: "options.max_sessions",
                reason: format!("must be at most {}", self.config.max_sessions_limit),
            });
        }
        let empty_timeout = spec
            .empty_timeout
            .unwrap_or(self.config.default_empty_timeout);
        let id = match spec.id {
            Some(id) => id,
            None => RoomId::generate(&mut self.rng),
        };
        if let Some(room) = self.rooms.get(&id) {
            let same = room.max_sessions == max_sessions
                && room.empty_timeout == empty_timeout
                && room.metadata == spec.metadata
                && room.backend_labels == spec.backend_data_labels;
            return if same {
                Ok((Self::room_info(room), false))
            } else {
                Err(CoreError::RoomExists(id))
            };
        }
        if self.rooms.len() >= self.config.max_rooms {
            return Err(CoreError::LimitReached {
                limit: "rooms.max_rooms_per_worker",
                max: self.config.max_rooms as u64,
            });
        }
        let key = self.keys.room();
        let deadline = now + empty_timeout;
        let room = Room {
            key,
            id: id.clone(),
            max_sessions,
            empty_timeout,
            metadata: spec.metadata,
            created_at: spec.created_at,
            sessions: BTreeSet::new(),
            participants: HashMap::new(),
            tracks: BTreeSet::new(),
            empty_deadline: Some(deadline),
            closing: false,
            labels: HashMap::new(),
            backend_labels: spec.backend_data_labels,
            speaker: None,
            speaker_decided: None,
        };
        let info = Self::room_info(&room);
        self.rooms.insert(id.clone(), room);
        self.room_keys.insert(key, id.clone());
        self.timers.insert((deadline, TimerKey::Room(key)));
        self.emit(&id, None, EventKind::RoomCreated);
        Ok((info, true))
    }

    /// Reads one Room.
    pub fn get_room(&self, id: &RoomId) -> Result<RoomInfo, CoreError> {
        self.rooms
            .get(id)
            .map(Self::room_info)
            .ok_or_else(|| CoreError::RoomNotFound(id.clone()))
    }

    /// Lists Rooms ordered by id: at most `limit`, only those after `after` (one page).
    pub fn list_rooms(&self, after: Option<&RoomId>, limit: usize) -> Vec<RoomInfo> {
        use std::ops::Bound;
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.rooms
            .range::<RoomId, _>((from, Bound::Unbounded))
            .take(limit)
            .map(|(_, r)| Self::room_info(r))
            .collect()
    }

    /// Deletes a Room and closes its Sessions. Returns how many Sessions were closed.
    pub fn delete_room(&mut self, now: Instant, id: &RoomId) -> Result<u32, CoreError> {
        self.now = now;
        if !self.rooms.contains_key(id) {
            return Err(CoreError::RoomNotFound(id.clone()));
        }
        Ok(self.close_room(id, RoomCloseReason::BackendRequest))
    }

    /// Creates a Session (one peer connection) in a Room.
    pub fn create_session(
        &mut self,
        now: Instant,
        spec: SessionSpec,
    ) -> Result<SessionInfo, CoreError> {
        self.now = now;
        if self.draining {
            return Err(CoreError::ShuttingDown);
        }
        check_metadata("metadata", &spec.metadata)?;
        let room = self
            .rooms
            .get(&spec.room)
            .ok_or_else(|| CoreError::RoomNotFound(spec.room.clone()))?;
        if room.sessions.len() >= room.max_sessions as usize {
            return Err(CoreError::LimitReached {
                limit: "max_sessions",
                max: u64::from(room.max_sessions),
            });
        }
        let id = SessionId::generate(self.config.worker, &mut self.rng);
        let (ufrag, pass) = ids::ice_creds(&mut self.rng);
        // Opus RED (RFC 2198) is offered and accepted, and passed through between Peers that
        // both negotiated it (the primary encoding alone goes to those that did not).
        // The gateway never sends on a Peer's own m-lines (answered recvonly), and its offers
        // put new TrackOuts into stopped m-lines (third_party/str0m, see ARCHITECTURE.md).
        let mut builder = Rtc::builder()
            .enable_opus(true, true)
            .set_send_on_remote_media(false)
            .set_recycle_mlines(true)
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .set_stats_interval(self.config.stats_interval)
            .set_local_ice_credentials(IceCreds {
                ufrag: ufrag.clone(),
                pass,
            });
        if let Some(cert) = &self.dtls_cert {
            builder = builder.set_dtls_cert(cert.clone());
        }
        if self.config.bwe.enabled {
            builder = builder.enable_bwe(Some(Bitrate::bps(
                self.config.bwe.initial_bitrate_bps.max(1),
            )));
        }
        let (udp, tcp) = (
            &self.config.candidate_addrs,
            &self.config.tcp_candidate_addrs,
        );
        let built = RtcGuard::build(|| {
            let mut rtc = builder.build(now);
            for a in udp {
                // Validated in Sfu::new: every announced address makes a host candidate.
                let c = Candidate::host(*a, "udp").expect("validated in Sfu::new");
                rtc.add_local_candidate(c);
            }
            for a in tcp {
                // Validated in Sfu::new likewise.
                let c = tcp_passive_candidate(*a).expect("validated in Sfu::new");
                rtc.add_local_candidate(c);
            }
            rtc
        });
        let Ok(rtc) = built else {
            // Nothing refers to the Session yet: it simply never exists.
            self.counters.session_panics += 1;
            tracing::error!(session = %id, "internal fault while creating the session");
            return Err(CoreError::Internal(id));
        };
        let key = self.keys.session();
        let connect_deadline = now + self.config.connect_timeout;
        let session = Session {
            id: id.clone(),
            room: spec.room.clone(),
            participant: spec.participant.clone(),
            metadata: spec.metadata,
            permissions: spec.permissions,
            created_at: spec.created_at,
            state: SessionState::New,
            rtc,
            ufrag: ufrag.clone(),
            addrs: Vec::new(),
            send_to: None,
            sdp_mlines: 0,
            remote_candidates: 0,
            rtc_timeout: now,
            timer: None,
            connect_deadline: Some(connect_deadline),
            disconnect_deadline: None,
            negotiated: false,
            pending: None,
            ssrcs: HashMap::new(),
            tracks_in: HashMap::new(),
            tracks_out: BTreeMap::new(),
            out_by_mid: HashMap::new(),
            channels: HashMap::new(),
            auto_subscribe: spec.auto_subscribe,
            estimate: None,
            link: Default::default(),
            bwe_seed: 0,
            forwarded: false,
            alloc_at: None,
            bwe_set: (0, 0),
            dirty: false,
        };
        self.sessions.insert(key, session);
        self.session_keys.insert(id.clone(), key);
        self.demux.insert_ufrag(ufrag, key);

        // Checked above that the room exists; nothing removed it since.
        let room = self.rooms.get_mut(&spec.room).expect("room exists");
        room.sessions.insert(key);
        if let Some(d) = room.empty_deadline.take() {
            self.timers.remove(&(d, TimerKey::Room(room.key)));
        }
        let first = {
            let n = room
                .participants
                .entry(spec.participant.clone())
                .or_insert(0);
            *n += 1;
            *n == 1
        };
        let existing: Vec<TrackKey> = room.tracks.iter().copied().collect();
        if first {
            self.emit(
                &spec.room,
                Some(&id),
                EventKind::ParticipantJoined(spec.participant.clone()),
            );
        }
        if spec.permissions.subscribe && spec.auto_subscribe {
            for tk in existing {
                self.subscribe_track(key, tk);
            }
        }
        self.touch(key);
        self.drive(key);
        let s = &self.sessions[&key];
        Ok(self.session_info(s))
    }

    /// Reads one Session.
    pub fn get_session(&self, id: &SessionId) -> Result<SessionInfo, CoreError> {
        let key = self.session_key(id)?;
        Ok(self.session_info(&self.sessions[&key]))
    }

    /// Lists a Room's Sessions ordered by id: at most `limit`, only those after `after` (one
    /// page).
    pub fn list_sessions(
        &self,
        room: &RoomId,
        after: Option<&SessionId>,
        limit: usize,
    ) -> Result<Vec<SessionInfo>, CoreError> {
        let r = self
            .rooms
            .get(room)
            .ok_or_else(|| CoreError::RoomNotFound(room.clone()))?;
        let mut v: Vec<&Session> = r
            .sessions
            .iter()
            .filter_map(|k| self.sessions.get(k))
            .filter(|s| after.is_none_or(|a| &s.id > a))
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(v.into_iter()
            .take(limit)
            .map(|s| self.session_info(s))
            .collect())
    }

    /// Closes a Session at the backend's request.
    pub fn close_session(&mut self, now: Instant, id: &SessionId) -> Result<(), CoreError> {
        self.now = now;
        let key = self.session_key(id)?;
        self.close(key, SessionCloseReason::BackendRequest, true);
        Ok(())
    }

    pub(super) fn track_in_room(
        &self,
        key: SessionKey,
        track: &TrackId,
    ) -> Result<TrackKey, CoreError> {
        let room = &self.sessions[&key].room;
        self.track_keys
            .get(track)
            .copied()
            .filter(|tk| self.tracks.get(tk).is_some_and(|t| &t.room == room))
            .ok_or_else(|| CoreError::TrackNotFound(track.clone()))
    }

    /// The common start of (un)subscribe: records `now`, checks the Track ids, finds the
    /// Session and, for a subscribe, checks that it may subscribe.
    fn track_command(
        &mut self,
        now: Instant,
        id: &SessionId,
        tracks: &[TrackId],
        subscribing: bool,
    ) -> Result<SessionKey, CoreError> {
        self.now = now;
        check_track_ids(tracks)?;
        let key = self.session_key(id)?;
        if subscribing && !self.sessions[&key].permissions.subscribe {
            return Err(CoreError::PermissionDenied {
                session: id.clone(),
                permission: Permission::Subscribe,
            });
        }
        Ok(key)
    }

    /// Subscribes a Session to Tracks of its Room (idempotent). The gateway then offers the new
    /// m-lines (`NegotiationNeeded`).
    pub fn subscribe(
        &mut self,
        now: Instant,
        id: &SessionId,
        tracks: &[TrackId],
    ) -> Result<(), CoreError> {
        let key = self.track_command(now, id, tracks, true)?;
        let mut keys = Vec::with_capacity(tracks.len());
        for t in tracks {
            let tk = self.track_in_room(key, t)?;
            let tr = &self.tracks[&tk];
            if tr.info.participant == self.sessions[&key].participant {
                return Err(CoreError::InvalidArgument {
                    field: "track_ids",
                    reason: format!("{t} is published by the same participant"),
                });
            }
            keys.push(tk);
        }
        let new = keys
            .iter()
            .filter(|tk| !self.sessions[&key].tracks_out.contains_key(tk))
            .count();
        let mlines = self.session_mlines(key) + new;
        if new > 0 && mlines > self.config.signaling.max_mlines_per_session {
            return Err(super::limits::too_many_session_mlines(
                mlines,
                &self.config.signaling,
            ));
        }
        for (tk, t) in keys.iter().zip(tracks) {
            let s = &self.sessions[&key];
            if let Some(OutState::Stopping(_)) = s.tracks_out.get(tk).map(|o| o.state) {
                return Err(CoreError::WrongState {
                    session: id.clone(),
                    reason: WrongState::UnsubscribeInProgress(t.clone()),
                });
            }
        }
        for tk in keys {
            let s = self.sessions.get_mut(&key).expect("key from index");
            match s.tracks_out.get_mut(&tk) {
                None => self.subscribe_track(key, tk),
                Some(o) => {
                    // Undo an unsubscribe that was not offered yet.
                    if let OutState::ToStop(mid) = o.state {
                        o.state = OutState::Open(mid);
                    }
                    if !o.wanted {
                        o.wanted = true;
                        o.fwd.paused = false;
                        o.fwd.current = None;
                        o.cap.reset();
                    }
                    if let Some(t) = self.tracks.get_mut(&tk) {
                        t.subscribers.insert(key);
                    }
                }
            }
        }
        self.maybe_offer(key);
        Ok(())
    }

    /// Unsubscribes a Session from Tracks (idempotent); their m-lines are removed by the next
    /// gateway offer and no more packets are forwarded.
    pub fn unsubscribe(
        &mut self,
        now: Instant,
        id: &SessionId,
        tracks: &[TrackId],
    ) -> Result<(), CoreError> {
        let key = self.track_command(now, id, tracks, false)?;
        let mut keys = Vec::with_capacity(tracks.len());
        for t in tracks {
            keys.push(self.track_in_room(key, t)?);
        }
        for tk in keys {
            if let Some(t) = self.tracks.get_mut(&tk) {
                t.subscribers.remove(&key);
            }
            let s = self.sessions.get_mut(&key).expect("key from index");
            release_track_out(s, tk);
            self.report_wanted_layers(tk);
        }
        self.maybe_offer(key);
        Ok(())
    }

    /// Sets a subscriber's preference for one Track: the highest simulcast layer it receives, and
    /// whether forwarding is paused. A layer change happens at the next key frame of the new
    /// layer, which is requested at once.
    pub fn set_track_preference(
        &mut self,
        now: Instant,
        id: &SessionId,
        track: &TrackId,
        pref: TrackPreference,
    ) -> Result<(), CoreError> {
        self.now = now;
        let key = self.session_key(id)?;
        let tk = self.track_in_room(key, track)?;
        let s = self.sessions.get_mut(&key).expect("key from index");
        let Some(o) = s.tracks_out.get_mut(&tk).filter(|o| o.wanted) else {
            return Err(CoreError::WrongState {
                session: id.clone(),
                reason: WrongState::NotSubscribed(track.clone()),
            });
        };
        let resumed = o.fwd.paused && !pref.paused;
        o.fwd.max_layer = pref.max_layer;
        o.fwd.paused = pref.paused;
        if resumed {
            // Resume at a key frame, continuing the sequence numbers.
            o.fwd.current = None;
            o.cap.reset();
        }
        if pref.paused {
            self.report_wanted_layers(tk);
            self.report_layer(key, tk);
        } else {
            self.kick(key, tk);
        }
        Ok(())
    }

    /// Mutes or unmutes a published Track for every subscriber (moderation). Unmuting resumes
    /// video at the next key frame, which is requested at once. Idempotent.
    pub fn set_track_muted(
        &mut self,
        now: Instant,
        room: &RoomId,
        track: &TrackId,
        muted: bool,
    ) -> Result<(), CoreError> {
        self.now = now;
        if !self.rooms.contains_key(room) {
            return Err(CoreError::RoomNotFound(room.clone()));
        }
        let tk = self
            .track_keys
            .get(track)
            .copied()
            .filter(|tk| self.tracks.get(tk).is_some_and(|t| &t.room == room))
            .ok_or_else(|| CoreError::TrackNotFound(track.clone()))?;
        let t = self.tracks.get_mut(&tk).expect("checked above");
        if t.muted == muted {
            return Ok(());
        }
        t.muted = muted;
        let (publisher, subs) = (t.info.session.clone(), t.subscribers.clone());
        if muted {
            for sub in &subs {
                self.report_layer(*sub, tk);
            }
        } else {
            for sub in &subs {
                if let Some(o) = self
                    .sessions
                    .get_mut(sub)
                    .and_then(|s| s.tracks_out.get_mut(&tk))
                {
                    o.fwd.current = None;
                }
            }
            for sub in subs {
                self.kick(sub, tk);
            }
        }
        self.emit(
            room,
            Some(&publisher),
            EventKind::TrackMuted {
                track: track.clone(),
                muted,
            },
        );
        Ok(())
    }

    /// Removes a Participant from a Room: closes all its Sessions (reason `Removed`). Returns
    /// how many were closed.
    pub fn remove_participant(
        &mut self,
        now: Instant,
        room: &RoomId,
        participant: &ParticipantId,
    ) -> Result<u32, CoreError> {
        self.now = now;
        let r = self
            .rooms
            .get(room)
            .ok_or_else(|| CoreError::RoomNotFound(room.clone()))?;
        let keys: Vec<SessionKey> = r
            .sessions
            .iter()
            .copied()
            .filter(|k| {
                self.sessions
                    .get(k)
                    .is_some_and(|s| &s.participant == participant)
            })
            .collect();
        if keys.is_empty() {
            return Err(CoreError::ParticipantNotFound(participant.clone()));
        }
        let n = keys.len() as u32;
        for k in keys {
            self.close(k, SessionCloseReason::Removed, true);
        }
        Ok(n)
    }

    /// Test hook: the next time this Session's `Rtc` is touched, the core panics inside the
    /// Session's guarded section, exactly as a bug would.
    #[cfg(feature = "testing")]
    pub fn inject_fault(&mut self, id: &SessionId) -> Result<(), CoreError> {
        let key = self.session_key(id)?;
        let s = self.sessions.get_mut(&key).expect("key from index");
        s.rtc.inject_fault();
        self.touch(key);
        Ok(())
    }
}

pub(super) fn check_metadata(field: &'static str, m: &str) -> Result<(), CoreError> {
    if m.len() > MAX_METADATA_BYTES {
        return Err(CoreError::InvalidArgument {
            field,
            reason: format!("must be at most {MAX_METADATA_BYTES} bytes"),
        });
    }
    Ok(())
}

/// Subscribe and Unsubscribe name at least one Track.
fn check_track_ids(tracks: &[TrackId]) -> Result<(), CoreError> {
    if tracks.is_empty() {
        return Err(CoreError::InvalidArgument {
            field: "track_ids",
            reason: "at least one track id is needed".into(),
        });
    }
    Ok(())
}

/// A Room forwards at most [`MAX_BACKEND_LABELS`] labels to the backend, each 1 to
/// [`MAX_LABEL_BYTES`] bytes.
fn check_backend_labels(labels: &[String]) -> Result<(), CoreError> {
    const FIELD: &str = "options.backend_data_labels";
    if labels.len() > MAX_BACKEND_LABELS {
        return Err(CoreError::InvalidArgument {
            field: FIELD,
            reason: format!("at most {MAX_BACKEND_LABELS} labels"),
        });
    }
    if labels
        .iter()
        .any(|l| l.is_empty() || l.len() > MAX_LABEL_BYTES)
    {
        return Err(CoreError::InvalidArgument {
            field: FIELD,
            reason: format!("each label must be 1 to {MAX_LABEL_BYTES} bytes"),
        });
    }
    Ok(())
}
