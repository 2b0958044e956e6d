//! Data-channel relay: Room broadcast by label, directed messages, backend send and receive,
//! size limits and per-receiver backpressure.
//!
//! Rules (documented for backends in `proto/switchboard/v1/data.proto`):
//! - A message on a channel with label L goes to every other Session of the Room that has an open
//!   channel labelled L. The first channel opened with L in a Room fixes L's configuration
//!   (ordered, reliability); a later channel with L and another configuration is closed
//!   (`ChannelClosed{ConfigMismatch}`), so delivery semantics are the same end to end.
//! - Label [`DIRECT_LABEL`] carries directed messages: `<target session id>\n<payload>` in;
//!   the target receives `<sender session id>\n<payload>` on its own channel with that label.
//! - Receivers have a bounded send buffer: unreliable messages are dropped when it is full;
//!   a reliable channel whose buffer is full is closed (`ChannelClosed{SlowReceiver}`).

use str0m::channel::Reliability;
use str0m::channel::{ChannelConfig, ChannelId};

use super::Sfu;
use super::guard::RtcPanicked;
use crate::error::CoreError;
use crate::ids::{RoomId, SessionId};
use crate::keys::SessionKey;
use crate::model::*;

/// The label of directed (session-to-session) messages.
pub const DIRECT_LABEL: &str = "sb.direct";
/// Longest envelope header (a session id) accepted on [`DIRECT_LABEL`].
const MAX_ENVELOPE_HEADER: usize = 64;

/// A data channel the Peer opened.
pub(crate) struct OpenChannel {
    pub(crate) label: String,
    pub(crate) spec: ChannelSpec,
}

fn spec_of(c: &ChannelConfig) -> ChannelSpec {
    ChannelSpec {
        ordered: c.ordered,
        reliability: match c.reliability {
            Reliability::Reliable => ChannelReliability::Reliable,
            Reliability::MaxRetransmits { retransmits } => {
                ChannelReliability::MaxRetransmits(retransmits)
            }
            Reliability::MaxPacketLifetime { lifetime } => {
                ChannelReliability::MaxPacketLifetime(lifetime)
            }
        },
    }
}

enum Write {
    Queued,
    Full,
    Gone,
}

impl Sfu {
    pub(super) fn on_channel_open(&mut self, key: SessionKey, id: ChannelId, label: String) {
        let s = self.sessions.get_mut(&key).expect("caller checked");
        let spec = s
            .rtc
            .with(|rtc| rtc.channel(id).and_then(|c| c.config().map(spec_of)));
        let spec = match spec {
            Ok(Some(spec)) => spec,
            Ok(None) => return,
            Err(RtcPanicked) => return self.fail(key),
        };
        let Some(room) = self.rooms.get_mut(&s.room) else {
            return;
        };
        let fixed = *room.labels.entry(label.clone()).or_insert(spec);
        if fixed != spec {
            let (room, sid) = (s.room.clone(), s.id.clone());
            if s.rtc
                .with(|rtc| rtc.direct_api().close_data_channel(id))
                .is_err()
            {
                return self.fail(key);
            }
            self.touch(key);
            self.emit(
                &room,
                Some(&sid),
                EventKind::ChannelClosed {
                    label,
                    reason: ChannelCloseReason::ConfigMismatch,
                },
            );
            return;
        }
        s.channels.insert(id, OpenChannel { label, spec });
    }

    pub(super) fn on_channel_data(
        &mut self,
        key: SessionKey,
        id: ChannelId,
        binary: bool,
        data: &[u8],
    ) {
        let s = &self.sessions[&key];
        let Some(ch) = s.channels.get(&id) else {
            self.counters.data_dropped += 1;
            return;
        };
        if data.len() > self.config.data_max_message_bytes {
            self.counters.data_oversized += 1;
            return;
        }
        if !s.permissions.data {
            self.counters.data_dropped += 1;
            return;
        }
        let label = ch.label.clone();
        let reliable = ch.spec.reliability == ChannelReliability::Reliable;
        let (room_id, sender) = (s.room.clone(), s.id.clone());
        let Some(room) = self.rooms.get(&room_id) else {
            return;
        };
        let to_backend = room.backend_labels.iter().any(|l| l == "*" || *l == label);
        let targets: Vec<SessionKey> = room
            .sessions
            .iter()
            .copied()
            .filter(|k| *k != key)
            .collect();
        if to_backend {
            if data.len() <= self.config.data_backend_max_bytes {
                self.emit(
                    &room_id,
                    Some(&sender),
                    EventKind::DataReceived {
                        label: label.clone(),
                        binary,
                        data: data.to_vec(),
                    },
                );
            } else {
                self.counters.data_oversized += 1;
            }
        }
        if label == DIRECT_LABEL {
            self.relay_direct(key, &room_id, &sender, binary, data, reliable);
            return;
        }
        for t in targets {
            match self.write_label(t, &label, binary, data, reliable, false) {
                Some(_) => {}
                None => self.counters.data_dropped += 1,
            }
        }
    }

    fn relay_direct(
        &mut self,
        key: SessionKey,
        room: &RoomId,
        sender: &SessionId,
        binary: bool,
        data: &[u8],
        reliable: bool,
    ) {
        let header_end = data
            .iter()
            .take(MAX_ENVELOPE_HEADER + 1)
            .position(|b| *b == b'\n');
        let Some(end) = header_end else {
            self.counters.data_dropped += 1;
            return;
        };
        let target = std::str::from_utf8(&data[..end])
            .ok()
            .and_then(|t| SessionId::parse(t).ok())
            .and_then(|t| self.session_keys.get(&t).copied())
            .filter(|t| *t != key && self.sessions.get(t).is_some_and(|s| &s.room == room));
        let Some(target) = target else {
            self.counters.data_dropped += 1;
            return;
        };
        let mut out = Vec::with_capacity(sender.as_str().len() + 1 + data.len() - end - 1);
        out.extend_from_slice(sender.as_str().as_bytes());
        out.push(b'\n');
        out.extend_from_slice(&data[end + 1..]);
        if self
            .write_label(target, DIRECT_LABEL, binary, &out, reliable, false)
            .is_none()
        {
            self.counters.data_dropped += 1;
        }
    }

    /// Writes to `target`'s open channel labelled `label`. `None` if it has none (or, with
    /// `need_reliable`, none that is reliable); otherwise whether it was queued.
    fn write_label(
        &mut self,
        target: SessionKey,
        label: &str,
        binary: bool,
        data: &[u8],
        reliable: bool,
        need_reliable: bool,
    ) -> Option<bool> {
        let ts = self.sessions.get_mut(&target)?;
        let (cid, ch_reliable) = ts
            .channels
            .iter()
            .find(|(_, c)| c.label == label)
            .map(|(id, c)| (*id, c.spec.reliability == ChannelReliability::Reliable))?;
        if need_reliable && !ch_reliable {
            return None;
        }
        let limit = self.config.data_send_buffer_bytes;
        let res = ts.rtc.with(|rtc| {
            let Some(mut ch) = rtc.channel(cid) else {
                return Write::Gone;
            };
            if ch.buffered_amount() + data.len() > limit {
                return Write::Full;
            }
            match ch.write(binary, data) {
                Ok(true) => Write::Queued,
                Ok(false) => Write::Full,
                Err(_) => Write::Gone,
            }
        });
        match res {
            Err(_) => {
                self.fail(target);
                Some(false)
            }
            Ok(Write::Queued) => {
                self.counters.data_forwarded += 1;
                self.touch(target);
                Some(true)
            }
            Ok(Write::Gone) => None,
            Ok(Write::Full) => {
                if reliable {
                    self.close_slow_channel(target, cid);
                } else {
                    self.counters.data_dropped += 1;
                }
                Some(false)
            }
        }
    }

    fn close_slow_channel(&mut self, key: SessionKey, cid: ChannelId) {
        let s = self.sessions.get_mut(&key).expect("caller checked");
        let Some(ch) = s.channels.remove(&cid) else {
            return;
        };
        if s.rtc
            .with(|rtc| rtc.direct_api().close_data_channel(cid))
            .is_err()
        {
            return self.fail(key);
        }
        let (room, sid) = (s.room.clone(), s.id.clone());
        self.counters.data_slow_receivers += 1;
        self.touch(key);
        self.emit(
            &room,
            Some(&sid),
            EventKind::ChannelClosed {
                label: ch.label,
                reason: ChannelCloseReason::SlowReceiver,
            },
        );
    }

    /// Sends a backend message to Sessions of a Room (all of them when `targets` is empty) on
    /// their open channel labelled `label`. With `reliable`, only reliable channels are used and
    /// a full receiver's channel is closed as a slow receiver; without, full receivers drop it.
    #[allow(clippy::too_many_arguments)]
    pub fn send_data(
        &mut self,
        now: std::time::Instant,
        room: &RoomId,
        targets: &[SessionId],
        label: &str,
        binary: bool,
        data: &[u8],
        reliable: bool,
    ) -> Result<SendReport, CoreError> {
        self.now = now;
        if label.is_empty() {
            return Err(CoreError::InvalidArgument {
                field: "label",
                reason: "must not be empty".into(),
            });
        }
        if data.len() > self.config.data_max_message_bytes {
            return Err(CoreError::InvalidArgument {
                field: "data",
                reason: format!(
                    "{} bytes is more than data.max_message_bytes ({})",
                    data.len(),
                    self.config.data_max_message_bytes
                ),
            });
        }
        if !binary && std::str::from_utf8(data).is_err() {
            return Err(CoreError::InvalidArgument {
                field: "data",
                reason: "a text message (binary = false) must be UTF-8".into(),
            });
        }
        let r = self
            .rooms
            .get(room)
            .ok_or_else(|| CoreError::RoomNotFound(room.clone()))?;
        let keys: Vec<SessionKey> = if targets.is_empty() {
            r.sessions.iter().copied().collect()
        } else {
            let mut v = Vec::with_capacity(targets.len());
            for t in targets {
                match self.session_keys.get(t) {
                    Some(k) if r.sessions.contains(k) => v.push(*k),
                    _ => return Err(CoreError::SessionNotFound(t.clone())),
                }
            }
            v
        };
        let mut report = SendReport::default();
        for k in keys {
            let id = self.sessions[&k].id.clone();
            match self.write_label(k, label, binary, data, reliable, reliable) {
                Some(true) => report.delivered += 1,
                Some(false) => report.undelivered.push(id),
                None => report.no_channel.push(id),
            }
        }
        Ok(report)
    }
}
