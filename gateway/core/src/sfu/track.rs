//! Tracks: the publisher side (TrackIn: its layers, their statistics and quality ranking) and the
//! subscriber side (TrackOut: its lifecycle, forwarding state, layer choice and what was reported
//! about it); publishing, unpublishing and subscribing.
//!
//! It must not touch an `Rtc`: forwarding packets and requesting key frames live in `media.rs`,
//! m-line negotiation in `negotiation.rs`.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use str0m::format::PayloadParams;
use str0m::media::{MediaKind, Mid, Pt, Rid};
use str0m::rtp::Ssrc;

use super::session::Session;
use super::{Sfu, TrackKey, alloc, forward};
use crate::ids::{RoomId, TrackId};
use crate::keys::SessionKey;
use crate::model::*;

/// Subscriber side of a Track (what one Session receives of one TrackIn).
///
/// Lifecycle: ToOpen → Negotiating → Open → ToStop → Stopping → gone. A rejected or superseded
/// offer moves Negotiating back to ToOpen and Stopping back to ToStop.
pub(super) struct TrackOut {
    pub(super) state: OutState,
    /// False once the TrackIn is gone; the m-line is then stopped at the next offer.
    pub(super) wanted: bool,
    pub(super) kind: MediaKind,
    /// Publisher payload type → subscriber payload type, learned on first use.
    pub(super) pt_map: Vec<PtMapping>,
    /// Layer choice, key-frame gating and sequence/timestamp rewriting.
    pub(super) fwd: forward::Forwarder,
    /// The bandwidth cap on the layer (with hysteresis).
    pub(super) cap: alloc::LayerCap,
    /// Why the target layer was chosen.
    pub(super) reason: LayerReason,
    /// What `SubscriptionLayerChanged` last said.
    pub(super) reported: Option<LayerReport>,
    /// The send stream of the m-line once it is open, so forwarding finds it by hash
    /// (`stream_tx`) rather than by str0m's scan over all send streams (`stream_tx_by_mid`).
    pub(super) ssrc: Option<Ssrc>,
}

/// What a `SubscriptionLayerChanged` event said about one TrackOut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct LayerReport {
    /// The layer forwarded (`None`: nothing yet, or paused).
    pub(super) forwarded: Option<forward::Layer>,
    /// The layer chosen.
    pub(super) target: Option<forward::Layer>,
    /// Why.
    pub(super) reason: LayerReason,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OutState {
    ToOpen,
    Negotiating(Mid),
    Open(Mid),
    ToStop(Mid),
    Stopping(Mid),
}

/// Publisher side of a Track.
pub(super) struct TrackIn {
    pub(super) info: TrackInfo,
    pub(super) publisher: SessionKey,
    pub(super) room: RoomId,
    pub(super) mid: Mid,
    pub(super) kind: MediaKind,
    /// Per-layer receive statistics (one entry, layer `None`, without simulcast).
    pub(super) layers: Vec<LayerStat>,
    /// Active layers from lowest to highest bitrate.
    pub(super) ranked: Vec<forward::Layer>,
    /// Bumped whenever `ranked` changes, so subscribers re-choose their layer.
    pub(super) version: u64,
    pub(super) window_start: Option<Instant>,
    pub(super) subscribers: BTreeSet<SessionKey>,
    /// Last key-frame request sent to the publisher, per layer (the throttle).
    pub(super) last_keyframe_request: HashMap<forward::Layer, Instant>,
    /// The simulcast layers last reported as wanted (`TrackLayersWanted`).
    pub(super) wanted_reported: Option<Vec<String>>,
    /// Muted by the backend: nothing is forwarded.
    pub(super) muted: bool,
    /// Smoothed loudness of an audio track (0–127) and when it was last updated.
    pub(super) loudness: f32,
    pub(super) loudness_at: Option<Instant>,
    /// What each of the publisher's payload types carries, learned on first use so forwarding
    /// does not scan the codec table per packet.
    pub(super) pt_codec: Vec<PtCodec>,
}

/// What a publisher's payload type carries.
#[derive(Debug, Clone, Copy)]
pub(super) struct InCodec {
    /// The codec (of the primary encoding, for RED).
    pub(super) params: PayloadParams,
    /// The payload type is the Opus RED (RFC 2198) wrapper of that codec.
    pub(super) red: bool,
}

/// One learned entry of a TrackIn's payload-type table.
pub(super) struct PtCodec {
    /// The publisher's payload type.
    pub(super) pt: Pt,
    /// Its codec; `None` when the publisher did not negotiate it (its packets are dropped).
    pub(super) codec: Option<InCodec>,
}

/// How one of the publisher's payload types goes out to one subscriber.
#[derive(Debug, Clone, Copy)]
pub(super) struct OutPt {
    /// The subscriber's payload type.
    pub(super) pt: Pt,
    /// The publisher sends RED and the subscriber did not negotiate it: it gets the primary
    /// encoding only.
    pub(super) strip_red: bool,
}

/// One learned entry of a TrackOut's payload-type map.
pub(super) struct PtMapping {
    /// The publisher's payload type.
    pub(super) input: Pt,
    /// The subscriber's; `None` when it does not support the codec (nothing is sent).
    pub(super) output: Option<OutPt>,
}

pub(super) struct LayerStat {
    pub(super) layer: forward::Layer,
    pub(super) bytes: u64,
    pub(super) packets: u64,
    /// Bitrate of the last window, with per-packet overhead ([`PACKET_OVERHEAD`]).
    pub(super) rate_bps: u64,
    pub(super) last_seen: Instant,
}

/// Where a layer stands in quality order, lowest first. Well-known rid names decide (`q` < `h` <
/// `f`, `l` < `m` < `h`, numbers ascending); otherwise the order of the publisher's
/// `a=simulcast` line, which browsers write as the application listed its encodings.
pub(super) fn layer_rank(declared: &[String], layer: forward::Layer) -> usize {
    let forward::Layer::Simulcast(rid) = layer else {
        return 0;
    };
    let name: &str = &rid;
    const SCHEMES: [&[&str]; 2] = [&["q", "h", "f"], &["l", "m", "h"]];
    for scheme in SCHEMES {
        if declared.iter().all(|d| scheme.contains(&d.as_str()))
            && let Some(i) = scheme.iter().position(|s| *s == name)
        {
            return i;
        }
    }
    if declared.iter().all(|d| d.parse::<u32>().is_ok())
        && let Ok(n) = name.parse::<u32>()
    {
        return n as usize;
    }
    declared
        .iter()
        .position(|d| d == name)
        .unwrap_or(usize::MAX)
}

/// A layer is active while packets arrived within this time.
pub(super) const LAYER_ACTIVE: Duration = Duration::from_secs(1);
/// Bitrates are measured over windows of this length.
pub(super) const RATE_WINDOW: Duration = Duration::from_millis(500);
/// Bytes a forwarded packet costs on the wire besides its payload (IP, UDP, RTP header and
/// extensions, SRTP tag), counted into a layer's bitrate.
pub(super) const PACKET_OVERHEAD: u64 = 60;

impl Sfu {
    pub(super) fn publish(&mut self, key: SessionKey, mid: Mid, kind: MediaKind, rids: Vec<Rid>) {
        let s = &self.sessions[&key];
        if !s.permissions.publish || s.tracks_in.contains_key(&mid) {
            return;
        }
        let tk = self.keys.track();
        let s = &self.sessions[&key];
        let info = TrackInfo {
            id: TrackId::generate(&mut self.rng),
            session: s.id.clone(),
            participant: s.participant.clone(),
            kind: match kind {
                MediaKind::Audio => TrackKind::Audio,
                MediaKind::Video => TrackKind::Video,
            },
            mid: mid.to_string(),
            rids: rids.iter().map(|r| r.to_string()).collect(),
        };
        let room_id = s.room.clone();
        let publisher_id = s.id.clone();
        let publisher_participant = s.participant.clone();
        self.track_keys.insert(info.id.clone(), tk);
        self.tracks.insert(
            tk,
            TrackIn {
                info: info.clone(),
                publisher: key,
                room: room_id.clone(),
                mid,
                kind,
                layers: Vec::new(),
                ranked: Vec::new(),
                version: 0,
                window_start: None,
                subscribers: BTreeSet::new(),
                last_keyframe_request: HashMap::new(),
                wanted_reported: None,
                loudness: 0.0,
                loudness_at: None,
                muted: false,
                pt_codec: Vec::new(),
            },
        );
        self.sessions
            .get_mut(&key)
            .expect("checked above")
            .tracks_in
            .insert(mid, tk);
        let room = self
            .rooms
            .get_mut(&room_id)
            .expect("a session's room exists");
        room.tracks.insert(tk);
        let others: Vec<SessionKey> = room
            .sessions
            .iter()
            .copied()
            .filter(|k| *k != key)
            .collect();
        self.emit(
            &room_id,
            Some(&publisher_id),
            EventKind::TrackPublished(info),
        );
        for other in others {
            let o = &self.sessions[&other];
            if o.permissions.subscribe && o.auto_subscribe && o.participant != publisher_participant
            {
                self.subscribe_track(other, tk);
                self.offer_later(other);
            }
        }
    }

    pub(super) fn subscribe_track(&mut self, key: SessionKey, tk: TrackKey) {
        let Some(t) = self.tracks.get(&tk) else {
            return;
        };
        let s = self.sessions.get(&key).expect("caller checked");
        if t.publisher == key || s.participant == t.info.participant {
            return;
        }
        if self.session_mlines(key) >= self.config.signaling.max_mlines_per_session {
            // A full Session receives no more Tracks (signaling.max_mlines_per_session); the
            // backend can unsubscribe others and subscribe this one explicitly.
            self.counters.subscriptions_refused += 1;
            tracing::debug!(session = %s.id, "m-line limit reached; track not subscribed");
            return;
        }
        let (Some(t), Some(s)) = (self.tracks.get_mut(&tk), self.sessions.get_mut(&key)) else {
            return;
        };
        t.subscribers.insert(key);
        s.tracks_out.insert(
            tk,
            TrackOut {
                state: OutState::ToOpen,
                wanted: true,
                kind: t.kind,
                pt_map: Vec::new(),
                fwd: forward::Forwarder::default(),
                cap: alloc::LayerCap::default(),
                reason: LayerReason::Preference,
                reported: None,
                ssrc: None,
            },
        );
    }

    pub(super) fn unpublish(&mut self, tk: TrackKey) {
        let Some(t) = self.tracks.remove(&tk) else {
            return;
        };
        self.track_keys.remove(&t.info.id);
        if let Some(p) = self.sessions.get_mut(&t.publisher) {
            p.tracks_in.remove(&t.mid);
        }
        if let Some(r) = self.rooms.get_mut(&t.room) {
            r.tracks.remove(&tk);
        }
        self.emit(
            &t.room,
            Some(&t.info.session),
            EventKind::TrackUnpublished {
                track: t.info.id.clone(),
                publisher: t.info.session.clone(),
            },
        );
        for sub in t.subscribers {
            let Some(s) = self.sessions.get_mut(&sub) else {
                continue;
            };
            release_track_out(s, tk);
            self.offer_later(sub);
        }
    }

    /// Updates a TrackIn's per-layer statistics with one packet; re-ranks the layers when a new
    /// layer appears or a measurement window closes.
    pub(super) fn account_layer(&mut self, tk: TrackKey, layer: forward::Layer, bytes: usize) {
        let now = self.now;
        let Some(t) = self.tracks.get_mut(&tk) else {
            return;
        };
        let start = *t.window_start.get_or_insert(now);
        let mut rerank = false;
        match t.layers.iter_mut().find(|l| l.layer == layer) {
            Some(l) => {
                l.bytes += bytes as u64;
                l.packets += 1;
                rerank |= now.saturating_duration_since(l.last_seen) > LAYER_ACTIVE;
                l.last_seen = now;
            }
            None => {
                t.layers.push(LayerStat {
                    layer,
                    bytes: bytes as u64,
                    packets: 1,
                    rate_bps: 0,
                    last_seen: now,
                });
                rerank = true;
            }
        }
        let window = now.saturating_duration_since(start);
        if window >= RATE_WINDOW {
            for l in &mut t.layers {
                let wire = l.bytes + l.packets * PACKET_OVERHEAD;
                l.rate_bps = wire * 8 * 1000 / window.as_millis().max(1) as u64;
                l.bytes = 0;
                l.packets = 0;
            }
            t.window_start = Some(now);
            rerank = true;
        }
        if rerank {
            let mut active: Vec<&LayerStat> = t
                .layers
                .iter()
                .filter(|l| now.saturating_duration_since(l.last_seen) <= LAYER_ACTIVE)
                .collect();
            // Quality order is the publisher's declared order (see `layer_rank`); measured
            // rates are too noisy for it when the publisher is bandwidth- or CPU-limited.
            let order = &t.info.rids;
            active.sort_by_key(|l| layer_rank(order, l.layer));
            let ranked: Vec<forward::Layer> = active.iter().map(|l| l.layer).collect();
            if ranked != t.ranked {
                tracing::debug!(
                    track = %t.info.id,
                    layers = ?t.layers.iter().map(|l| (l.layer.rid().map(|r| r.to_string()), l.rate_bps)).collect::<Vec<_>>(),
                    "layer ranking changed"
                );
                t.ranked = ranked;
                t.version += 1;
            }
        }
    }

    /// Re-chooses a TrackOut's target layer from its preference and the TrackIn's ranking.
    /// Returns the new target when it changed.
    pub(super) fn choose_layer(
        &mut self,
        sub: SessionKey,
        tk: TrackKey,
        force: bool,
    ) -> Option<forward::Layer> {
        let t = self.tracks.get(&tk)?;
        let s = self.sessions.get_mut(&sub)?;
        let o = s.tracks_out.get_mut(&tk)?;
        if !force && o.fwd.seen_version == t.version {
            return None;
        }
        o.fwd.seen_version = t.version;
        if t.ranked.is_empty() {
            return None;
        }
        let top = t.ranked.len() - 1;
        let pref = o.fwd.max_layer.map_or(top, |m| usize::from(m).min(top));
        let idx = o.cap.cap.map_or(pref, |c| c.min(pref));
        let target = t.ranked[idx];
        // The declared layer the preference asks for, to tell "the publisher does not send it".
        let declared_top = t.info.rids.len().saturating_sub(1);
        let wanted = o
            .fwd
            .max_layer
            .map_or(declared_top, |m| usize::from(m).min(declared_top));
        o.reason = if idx < pref {
            LayerReason::Bandwidth
        } else if layer_rank(&t.info.rids, target) < wanted {
            LayerReason::PublisherLayerInactive
        } else {
            LayerReason::Preference
        };
        if o.fwd.target == Some(target) {
            return None;
        }
        o.fwd.target = Some(target);
        Some(target)
    }

    /// Reports which simulcast layers of a track any subscriber needs, when that changes.
    pub(super) fn report_wanted_layers(&mut self, tk: TrackKey) {
        let Some(t) = self.tracks.get(&tk) else {
            return;
        };
        if t.layers.iter().all(|l| l.layer == forward::Layer::Single) {
            return;
        }
        let mut wanted: Vec<String> = t
            .subscribers
            .iter()
            .filter_map(|k| self.sessions.get(k)?.tracks_out.get(&tk))
            .filter(|o| !o.fwd.paused)
            .flat_map(|o| [o.fwd.current, o.fwd.target])
            .flatten()
            .filter_map(forward::Layer::rid)
            .map(|r| r.to_string())
            .collect();
        wanted.sort();
        wanted.dedup();
        if t.wanted_reported.as_ref() == Some(&wanted) {
            return;
        }
        let (room, publisher, track) = (t.room.clone(), t.info.session.clone(), t.info.id.clone());
        let t = self.tracks.get_mut(&tk).expect("checked above");
        t.wanted_reported = Some(wanted.clone());
        self.emit(
            &room,
            Some(&publisher),
            EventKind::TrackLayersWanted {
                track,
                rids: wanted,
            },
        );
    }

    /// Tells the backend which layer a subscriber receives of a simulcast Track, which it
    /// chose, and why, when any of the three changed.
    pub(super) fn report_layer(&mut self, sub: SessionKey, tk: TrackKey) {
        let Some(t) = self.tracks.get(&tk) else {
            return;
        };
        if t.info.rids.is_empty() {
            return;
        }
        let muted = t.muted;
        let track = t.info.id.clone();
        let Some(s) = self.sessions.get_mut(&sub) else {
            return;
        };
        let estimate_bps = s.estimate;
        let Some(o) = s.tracks_out.get_mut(&tk) else {
            return;
        };
        if !o.wanted {
            return;
        }
        let paused = o.fwd.paused || muted;
        let state = if paused {
            LayerReport {
                forwarded: None,
                target: None,
                reason: LayerReason::Paused,
            }
        } else {
            LayerReport {
                forwarded: o.fwd.current,
                target: o.fwd.target,
                reason: o.reason,
            }
        };
        if (!paused && state.target.is_none()) || o.reported == Some(state) {
            return;
        }
        let name =
            |l: Option<forward::Layer>| l.and_then(forward::Layer::rid).map(|r| r.to_string());
        let previous = name(o.reported.and_then(|r| r.forwarded));
        o.reported = Some(state);
        let kind = EventKind::SubscriptionLayerChanged {
            track,
            layer: name(state.forwarded),
            previous,
            target: name(state.target),
            reason: state.reason,
            keyframe_wait: !paused && state.target != state.forwarded,
            estimate_bps,
        };
        let (room, id) = (s.room.clone(), s.id.clone());
        self.emit(&room, Some(&id), kind);
    }
}

/// A Session stops receiving a Track: forwarding stops at once; an m-line that was negotiated
/// is stopped by the next gateway offer, one that was not is dropped.
pub(super) fn release_track_out(s: &mut Session, tk: TrackKey) {
    let Some(o) = s.tracks_out.get_mut(&tk) else {
        return;
    };
    o.wanted = false;
    o.fwd.paused = true;
    match o.state {
        OutState::ToOpen => {
            s.tracks_out.remove(&tk);
        }
        OutState::Open(mid) => o.state = OutState::ToStop(mid),
        OutState::Negotiating(_) | OutState::ToStop(_) | OutState::Stopping(_) => {}
    }
}
