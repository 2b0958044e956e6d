//! A Room: its Sessions and Participants, its Tracks, its data-channel labels, its empty timeout,
//! its teardown and its active speaker.
//!
//! It must not touch an `Rtc`: closing a Room closes its Sessions through `session.rs`.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant, SystemTime};

use str0m::media::MediaKind;

use super::{RoomKey, Sfu, TimerKey, TrackKey};
use crate::ids::{ParticipantId, RoomId};
use crate::keys::SessionKey;
use crate::model::*;

pub(super) struct Room {
    pub(super) key: RoomKey,
    pub(super) id: RoomId,
    pub(super) max_sessions: u32,
    pub(super) empty_timeout: Duration,
    pub(super) metadata: String,
    pub(super) created_at: SystemTime,
    pub(super) sessions: BTreeSet<SessionKey>,
    pub(super) participants: HashMap<ParticipantId, u32>,
    pub(super) tracks: BTreeSet<TrackKey>,
    pub(super) empty_deadline: Option<Instant>,
    pub(super) closing: bool,
    /// The channel configuration each label has in this Room (fixed by its first channel).
    pub(super) labels: HashMap<String, ChannelSpec>,
    /// Labels whose messages also go to the backend (`*` means all).
    pub(super) backend_labels: Vec<String>,
    /// The active speaker last reported, and when the Room last decided.
    pub(super) speaker: Option<SessionKey>,
    pub(super) speaker_decided: Option<Instant>,
}

impl Sfu {
    /// Closes a Room and every Session in it. Returns the number of Sessions closed.
    pub(super) fn close_room(&mut self, id: &RoomId, reason: RoomCloseReason) -> u32 {
        let Some(room) = self.rooms.get_mut(id) else {
            return 0;
        };
        room.closing = true;
        let sessions: Vec<SessionKey> = room.sessions.iter().copied().collect();
        let session_reason = match reason {
            RoomCloseReason::GatewayShutdown => SessionCloseReason::GatewayShutdown,
            _ => SessionCloseReason::RoomDeleted,
        };
        let n = sessions.len() as u32;
        for k in sessions {
            self.close(k, session_reason, true);
        }
        // Every session was removed above, and with them every track of the room.
        let room = self.rooms.remove(id).expect("checked above");
        debug_assert!(room.tracks.is_empty());
        self.room_keys.remove(&room.key);
        if let Some(d) = room.empty_deadline {
            self.timers.remove(&(d, TimerKey::Room(room.key)));
        }
        self.emit(id, None, EventKind::RoomClosed(reason));
        n
    }

    /// Folds one audio level (dBov, 0 loudest, -127 silence) into a track's smoothed loudness, and lets its
    /// Room re-decide the active speaker when the interval has passed.
    pub(super) fn account_loudness(&mut self, tk: TrackKey, level: i8) {
        let now = self.now;
        let w = self.config.speaker_smoothing.clamp(0.01, 1.0);
        let Some(t) = self.tracks.get_mut(&tk) else {
            return;
        };
        // str0m gives the level as a negative dBov value: 0 is the loudest, -127 silence.
        let loud = 127.0 + f32::from(level.clamp(-127, 0));
        t.loudness = t.loudness * (1.0 - w) + loud * w;
        t.loudness_at = Some(now);
        let due = self.rooms.get(&t.room).is_some_and(|r| {
            r.speaker_decided
                .is_none_or(|d| now.saturating_duration_since(d) >= self.config.speaker_interval)
        });
        if due {
            // Only when a decision is due (every speaker interval), not per audio packet.
            let room_id = t.room.clone();
            self.decide_speaker(&room_id);
        }
    }

    pub(super) fn decide_speaker(&mut self, room_id: &RoomId) {
        let now = self.now;
        let Some(room) = self.rooms.get(room_id) else {
            return;
        };
        let min = f32::from(self.config.speaker_min_loudness);
        // A track that stopped sending levels (muted, gone) does not count.
        let stale = self.config.speaker_interval * 3;
        let best = room
            .tracks
            .iter()
            .filter_map(|k| self.tracks.get(k))
            .filter(|t| t.kind == MediaKind::Audio)
            .filter(|t| {
                t.loudness_at
                    .is_some_and(|at| now.saturating_duration_since(at) <= stale)
            })
            .filter(|t| t.loudness > min)
            .max_by(|a, b| a.loudness.total_cmp(&b.loudness))
            .map(|t| (t.publisher, t.loudness));
        let room = self.rooms.get_mut(room_id).expect("checked above");
        room.speaker_decided = Some(now);
        let speaker = best.map(|(k, _)| k);
        if speaker == room.speaker {
            return;
        }
        room.speaker = speaker;
        let (sid, participant) = match speaker.and_then(|k| self.sessions.get(&k)) {
            Some(s) => (Some(s.id.clone()), Some(s.participant.clone())),
            None => (None, None),
        };
        let level = best.map_or(0, |(_, l)| l.round().clamp(0.0, 127.0) as u8);
        self.emit(
            room_id,
            sid.as_ref(),
            EventKind::ActiveSpeakerChanged {
                speaker: sid.clone(),
                participant,
                level,
            },
        );
    }
}
