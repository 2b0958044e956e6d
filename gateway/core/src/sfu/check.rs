//! Cross-map invariants of the [`Sfu`] (feature `testing`): what the fuzz bodies and the soak
//! check after every step. Reads only; must not mutate or touch any `Rtc`.

use super::{Sfu, TimerKey};

impl Sfu {
    /// Checks that the core's maps agree with each other: ids and keys map both ways, every
    /// Session is in its Room and every Room lists only live Sessions and Tracks, every Track's
    /// publisher and subscribers are live Sessions (and each subscriber has the TrackOut), every
    /// demux entry and every Session timer points at a live Session, every Room timer at a live
    /// Room. Returns the first violation.
    pub fn check_invariants(&self) -> Result<(), String> {
        if self.sessions.len() != self.session_keys.len() {
            return Err(format!(
                "{} sessions, {} session ids",
                self.sessions.len(),
                self.session_keys.len()
            ));
        }
        for (id, key) in &self.session_keys {
            match self.sessions.get(key) {
                Some(s) if &s.id == id => {}
                _ => {
                    return Err(format!(
                        "session id {id} maps to a wrong or missing session"
                    ));
                }
            }
        }
        if self.rooms.len() != self.room_keys.len() {
            return Err(format!(
                "{} rooms, {} room keys",
                self.rooms.len(),
                self.room_keys.len()
            ));
        }
        for (key, id) in &self.room_keys {
            match self.rooms.get(id) {
                Some(r) if r.key == *key => {}
                _ => {
                    return Err(format!(
                        "room key {key:?} maps to a wrong or missing room {id}"
                    ));
                }
            }
        }
        for (key, s) in &self.sessions {
            let Some(room) = self.rooms.get(&s.room) else {
                return Err(format!("session {} in missing room {}", s.id, s.room));
            };
            if !room.sessions.contains(key) {
                return Err(format!("room {} does not list session {}", s.room, s.id));
            }
            for tk in s.tracks_out.keys() {
                match self.tracks.get(tk) {
                    Some(t) if t.subscribers.contains(key) => {}
                    _ => return Err(format!("session {} has a TrackOut of no Track", s.id)),
                }
            }
        }
        for room in self.rooms.values() {
            if let Some(k) = room
                .sessions
                .iter()
                .find(|k| !self.sessions.contains_key(k))
            {
                return Err(format!("room {} lists a dead session {k:?}", room.id));
            }
            if let Some(k) = room.tracks.iter().find(|k| !self.tracks.contains_key(k)) {
                return Err(format!("room {} lists a dead track {k:?}", room.id));
            }
        }
        if self.tracks.len() != self.track_keys.len() {
            return Err(format!(
                "{} tracks, {} track ids",
                self.tracks.len(),
                self.track_keys.len()
            ));
        }
        for (key, t) in &self.tracks {
            if !self.sessions.contains_key(&t.publisher) {
                return Err(format!("track {key:?} of a dead publisher"));
            }
            for sub in &t.subscribers {
                match self.sessions.get(sub) {
                    Some(s) if s.tracks_out.contains_key(key) => {}
                    _ => return Err(format!("track {key:?} has a dead or unaware subscriber")),
                }
            }
        }
        if let Some(k) = self
            .demux
            .targets()
            .find(|k| !self.sessions.contains_key(k))
        {
            return Err(format!("a demux entry points at a dead session {k:?}"));
        }
        for (_, t) in &self.timers {
            let live = match t {
                TimerKey::Session(k) => self.sessions.contains_key(k),
                TimerKey::Room(k) => self.room_keys.contains_key(k),
            };
            if !live {
                return Err(format!("a timer for a dead {t:?}"));
            }
        }
        Ok(())
    }

    /// The ICE ufrags of the live Sessions (for fuzz bodies that address one).
    pub fn session_ufrags(&self) -> Vec<String> {
        let mut v: Vec<String> = self.sessions.values().map(|s| s.ufrag.clone()).collect();
        v.sort();
        v
    }
}
