//! A Session: one Peer connection, its str0m `Rtc`, and what the core keeps about it (addresses,
//! negotiation state, published and received Tracks, channels, the bandwidth estimate, timers).
//!
//! It owns driving an `Rtc` (draining it to `Timeout` and dispatching its events), the Session's
//! timers, the panic containment (`fail`) and the Session's teardown. It must not make forwarding
//! or negotiation decisions: events are handed to the file that owns them.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use str0m::bwe::BweKind;
use str0m::channel::ChannelId;
use str0m::media::{MediaKind, Mid};
use str0m::rtp::Ssrc;
use str0m::{Event, IceConnectionState, Input, Output as RtcOutput};

use super::forward::Layer;
use super::guard::{RtcGuard, RtcPanicked};
use super::negotiation::PendingOffer;
use super::track::{OutState, TrackOut};
use super::{Sfu, TimerKey, TrackKey, data, transport_of};
use crate::ids::{ParticipantId, RoomId, SessionId};
use crate::keys::SessionKey;
use crate::model::*;

/// Shortest wait before an `Rtc` that has just handled a timeout is handled again.
pub(super) const MIN_RTC_WAIT: Duration = Duration::from_millis(1);

pub(super) struct Session {
    pub(super) id: SessionId,
    pub(super) room: RoomId,
    pub(super) participant: ParticipantId,
    pub(super) metadata: String,
    pub(super) permissions: Permissions,
    pub(super) created_at: SystemTime,
    pub(super) state: SessionState,
    /// The Session's `Rtc`, reachable only through its guard (`guard.rs`).
    pub(super) rtc: RtcGuard,
    pub(super) ufrag: String,
    /// The remote addresses routed to this Session (at most `MAX_ADDRS_PER_SESSION`), least
    /// recently checked first: a new valid check from a new address evicts the front entry
    /// (never `send_to`), so a roaming Peer is always routed from where its checks succeed.
    pub(super) addrs: Vec<(Transport, SocketAddr)>,
    /// Where the `Rtc` last sent a datagram: the selected pair's remote address.
    pub(super) send_to: Option<(Transport, SocketAddr)>,
    /// m-lines in the last SDP applied (offer or answer), see `limits.rs`.
    pub(super) sdp_mlines: usize,
    /// Trickled remote candidates given to the `Rtc` since the last ICE restart.
    pub(super) remote_candidates: usize,
    pub(super) rtc_timeout: Instant,
    pub(super) timer: Option<Instant>,
    pub(super) connect_deadline: Option<Instant>,
    pub(super) disconnect_deadline: Option<Instant>,
    /// A remote offer has been applied once; renegotiation is possible.
    pub(super) negotiated: bool,
    pub(super) pending: Option<PendingOffer>,
    /// The m-line and layer of each stream the Peer sends, learned from str0m on first use.
    pub(super) ssrcs: HashMap<Ssrc, RxStream>,
    pub(super) tracks_in: HashMap<Mid, TrackKey>,
    pub(super) tracks_out: BTreeMap<TrackKey, TrackOut>,
    pub(super) out_by_mid: HashMap<Mid, TrackKey>,
    pub(super) channels: HashMap<ChannelId, data::OpenChannel>,
    /// Receives new Tracks of the Room without a `subscribe` call.
    pub(super) auto_subscribe: bool,
    /// The downlink estimate (bps) from str0m's TWCC bandwidth estimation.
    pub(super) estimate: Option<u64>,
    /// When the bandwidth allocation is evaluated next.
    pub(super) alloc_at: Option<Instant>,
    /// The (minimum, desired) bitrates last given to str0m's BWE.
    pub(super) bwe_set: (u64, u64),
    /// The estimate str0m's BWE was last restarted from (`seed_estimate`), 0 if never.
    pub(super) bwe_seed: u64,
    /// A TrackOut of this Session has been opened, so str0m's estimator has had media to
    /// measure (its estimate before that is only the configured start, not a measurement).
    pub(super) forwarded: bool,
    /// The latest connection statistics (str0m's stats events).
    pub(super) link: super::stats::Link,
    pub(super) dirty: bool,
}

/// Where a received stream belongs: its m-line (the TrackIn) and its layer.
#[derive(Debug, Clone, Copy)]
pub(super) struct RxStream {
    pub(super) mid: Mid,
    pub(super) layer: Layer,
}

impl Sfu {
    pub(super) fn session_timeout(&mut self, now: Instant, key: SessionKey) {
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        s.timer = None;
        if s.connect_deadline.is_some_and(|d| d <= now) {
            self.close(key, SessionCloseReason::ConnectTimeout, true);
            return;
        }
        if s.disconnect_deadline.is_some_and(|d| d <= now) {
            self.close(key, SessionCloseReason::DisconnectTimeout, true);
            return;
        }
        if s.alloc_at.is_some_and(|d| d <= now) {
            self.allocate(key);
        }
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        if s.rtc_timeout <= now {
            if !self.settle(key) {
                return;
            }
            let s = self.sessions.get_mut(&key).expect("settle checked");
            let res = s.rtc.with(|rtc| rtc.handle_input(Input::Timeout(now)));
            match res {
                Err(_) => return self.fail(key),
                Ok(Err(e)) => {
                    tracing::debug!(session = %s.id, error = %e, "timeout handling failed");
                }
                Ok(Ok(())) => {}
            }
            self.drive(key);
            // An `Rtc` that wants `now` again right after handling `now` (str0m's delay-based
            // BWE does so when the measured RTT is zero) would spin this loop: wait 1 ms.
            if let Some(s) = self.sessions.get_mut(&key)
                && s.rtc_timeout <= now
            {
                s.rtc_timeout = now + MIN_RTC_WAIT;
                self.update_timer(key);
            }
        } else {
            self.update_timer(key);
        }
    }

    /// Drains a Session written to since its last drain (forwarded media, relayed data, a
    /// control change), so that the input it is given next (a datagram, a timeout, an offer)
    /// follows a complete drain: str0m's single-mutation rule. Returns whether the Session still
    /// exists (a drain can close it).
    pub(super) fn settle(&mut self, key: SessionKey) -> bool {
        match self.sessions.get(&key) {
            None => false,
            Some(s) if s.dirty => {
                self.drive(key);
                self.sessions.contains_key(&key)
            }
            Some(_) => true,
        }
    }

    pub(super) fn touch(&mut self, key: SessionKey) {
        if let Some(s) = self.sessions.get_mut(&key)
            && !s.dirty
        {
            s.dirty = true;
            self.dirty.push(key);
        }
    }

    pub(super) fn update_timer(&mut self, key: SessionKey) {
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        let mut next = s.rtc_timeout;
        for d in [s.connect_deadline, s.disconnect_deadline, s.alloc_at]
            .into_iter()
            .flatten()
        {
            next = next.min(d);
        }
        if s.timer != Some(next) {
            if let Some(old) = s.timer {
                self.timers.remove(&(old, TimerKey::Session(key)));
            }
            self.timers.insert((next, TimerKey::Session(key)));
            s.timer = Some(next);
        }
    }

    /// Drains one Session's `Rtc` to `Timeout`, then acts on its events. The gateway offers
    /// those events make necessary (a publisher's Tracks for its subscribers) go out when the
    /// outermost drive ends: one offer per subscriber for the whole batch.
    pub(super) fn drive(&mut self, key: SessionKey) {
        self.drive_depth += 1;
        self.drive_one(key);
        self.drive_depth -= 1;
        if self.drive_depth == 0 {
            self.flush_offers();
        }
    }

    fn drive_one(&mut self, key: SessionKey) {
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        s.dirty = false;
        let mut events = std::mem::take(&mut self.scratch_events);
        let transmits = &mut self.transmits;
        let rtc_timeout = &mut s.rtc_timeout;
        let send_to = &mut s.send_to;
        let res = s.rtc.with(|rtc| {
            loop {
                match rtc.poll_output()? {
                    RtcOutput::Timeout(t) => {
                        *rtc_timeout = t;
                        return Ok(());
                    }
                    RtcOutput::Transmit(t) => {
                        let transport = transport_of(t.proto);
                        *send_to = Some((transport, t.destination));
                        transmits.push_back(Transmit {
                            transport,
                            source: t.source,
                            destination: t.destination,
                            contents: t.contents.into(),
                        });
                    }
                    RtcOutput::Event(e) => events.push(e),
                }
            }
        });
        match res {
            Err(_) => return self.fail(key),
            Ok(Err(e)) => {
                let e: str0m::RtcError = e;
                tracing::debug!(session = %s.id, error = %e, "session failed");
                for ev in events.drain(..) {
                    self.on_rtc_event(key, ev);
                }
                self.scratch_events = events;
                return self.close(key, SessionCloseReason::PeerError, false);
            }
            Ok(Ok(())) => {}
        }
        self.update_timer(key);
        for ev in events.drain(..) {
            self.on_rtc_event(key, ev);
        }
        self.scratch_events = events;
    }

    pub(super) fn fail(&mut self, key: SessionKey) {
        self.counters.session_panics += 1;
        if let Some(s) = self.sessions.get(&key) {
            tracing::error!(session = %s.id, "internal fault; closing the session");
        }
        self.close(key, SessionCloseReason::InternalError, false);
    }

    pub(super) fn on_rtc_event(&mut self, key: SessionKey, ev: Event) {
        if !self.sessions.contains_key(&key) {
            return;
        }
        match ev {
            Event::RtpPacket(p) => self.forward_rtp(key, p),
            Event::Connected => self.set_connected(key),
            Event::IceConnectionStateChange(st) => self.on_ice_state(key, st),
            Event::MediaAdded(m) if m.direction.is_receiving() => {
                let rids = m
                    .simulcast
                    .map(|s| s.recv.into_iter().map(|l| l.rid).collect())
                    .unwrap_or_default();
                self.publish(key, m.mid, m.kind, rids);
            }
            Event::MediaChanged(c) if !c.direction.is_receiving() => {
                let tk = self.sessions[&key].tracks_in.get(&c.mid).copied();
                if let Some(tk) = tk {
                    self.unpublish(tk);
                }
            }
            Event::ChannelOpen(id, label) => self.on_channel_open(key, id, label),
            Event::ChannelClose(id) => {
                let s = self.sessions.get_mut(&key).expect("checked above");
                s.channels.remove(&id);
            }
            Event::ChannelData(d) => self.on_channel_data(key, d.id, d.binary, &d.data),
            Event::KeyframeRequest(r) => {
                // A subscriber lost video: ask the publisher for a key frame of the layer this
                // subscriber receives (throttled per layer, so a storm of requests is one).
                let s = &self.sessions[&key];
                let tk = s.out_by_mid.get(&r.mid).copied();
                if let Some(tk) = tk {
                    let layer = s
                        .tracks_out
                        .get(&tk)
                        .and_then(|o| o.fwd.current.or(o.fwd.target));
                    if let Some(layer) = layer {
                        self.request_keyframe_layer(tk, layer, r.kind, false);
                    }
                }
            }
            Event::EgressBitrateEstimate(BweKind::Twcc { estimate, .. }) => {
                let s = self.sessions.get_mut(&key).expect("checked above");
                s.estimate = Some(estimate.as_u64());
                self.allocate(key);
            }
            Event::PeerStats(st) => {
                let s = self.sessions.get_mut(&key).expect("checked above");
                if let Some((quality, previous, rtt_ms, loss_permille)) = s.link.on_peer(&st) {
                    let (room, id) = (s.room.clone(), s.id.clone());
                    self.emit(
                        &room,
                        Some(&id),
                        EventKind::ConnectionQualityChanged {
                            quality,
                            previous,
                            rtt_ms,
                            loss_permille,
                        },
                    );
                }
            }
            Event::MediaEgressStats(st) => {
                let s = self.sessions.get_mut(&key).expect("checked above");
                s.link.on_egress(&st, &mut self.counters);
            }
            Event::MediaIngressStats(st) => {
                let s = self.sessions.get_mut(&key).expect("checked above");
                s.link.on_ingress(&st, &mut self.counters);
            }
            Event::Closed => self.close(key, SessionCloseReason::PeerClosed, false),
            _ => {}
        }
    }

    /// Starts the gateway offers that `offer_later` queued.
    pub(super) fn flush_offers(&mut self) {
        while let Some(k) = self.offers_due.pop() {
            self.maybe_offer(k);
        }
    }

    /// Queues a gateway offer for a Session: the whole batch of changes goes out in one offer
    /// when the current input is handled (see `drive`).
    pub(super) fn offer_later(&mut self, key: SessionKey) {
        if !self.offers_due.contains(&key) {
            self.offers_due.push(key);
        }
    }

    pub(super) fn set_connected(&mut self, key: SessionKey) {
        let s = self.sessions.get_mut(&key).expect("caller checked");
        if s.state == SessionState::Connected {
            return;
        }
        s.state = SessionState::Connected;
        s.connect_deadline = None;
        s.disconnect_deadline = None;
        let (room, id) = (s.room.clone(), s.id.clone());
        self.update_timer(key);
        self.emit(&room, Some(&id), EventKind::SessionConnected);
        // Video that was forwarded before the connection was up was dropped: ask for keyframes.
        let outs: Vec<TrackKey> = self.sessions[&key]
            .tracks_out
            .iter()
            .filter(|(_, o)| matches!(o.state, OutState::Open(_)) && o.kind == MediaKind::Video)
            .map(|(k, _)| *k)
            .collect();
        for tk in outs {
            self.kick(key, tk);
        }
        // Gateway offers wait for the connection (some Peers only start receivers that exist
        // when DTLS connects): what queued meanwhile goes out now, in one offer.
        self.maybe_offer(key);
    }

    pub(super) fn on_ice_state(&mut self, key: SessionKey, st: IceConnectionState) {
        let s = self.sessions.get_mut(&key).expect("caller checked");
        match st {
            IceConnectionState::Disconnected if s.state == SessionState::Connected => {
                s.state = SessionState::Disconnected;
                s.disconnect_deadline = Some(self.now + self.config.disconnect_grace);
                let (room, id) = (s.room.clone(), s.id.clone());
                self.update_timer(key);
                let grace = self.config.disconnect_grace;
                self.emit(&room, Some(&id), EventKind::SessionDisconnected { grace });
            }
            IceConnectionState::Connected | IceConnectionState::Completed
                if s.state == SessionState::Disconnected =>
            {
                match s.rtc.is_connected() {
                    Ok(true) => self.set_connected(key),
                    Ok(false) => {}
                    Err(RtcPanicked) => self.fail(key),
                }
            }
            _ => {}
        }
    }

    /// Removes a Session and everything that points at it. `graceful` sends the Peer a DTLS close;
    /// after a fault the `Rtc` is not touched again.
    pub(super) fn close(&mut self, key: SessionKey, reason: SessionCloseReason, graceful: bool) {
        let Some(s) = self.sessions.get(&key) else {
            return;
        };
        // In publication order, so the TrackUnpublished events do not depend on hash order.
        let mut tracks_in: Vec<TrackKey> = s.tracks_in.values().copied().collect();
        tracks_in.sort_unstable();
        for tk in tracks_in {
            self.unpublish(tk);
        }
        self.offers_due.retain(|k| *k != key);
        if self.drive_depth == 0 {
            self.flush_offers();
        }
        let Some(mut s) = self.sessions.remove(&key) else {
            return;
        };
        for tk in s.tracks_out.keys() {
            if let Some(t) = self.tracks.get_mut(tk) {
                t.subscribers.remove(&key);
            }
        }
        if graceful {
            let transmits = &mut self.transmits;
            // A panic here changes nothing: the Session is being removed anyway.
            let _ = s.rtc.with(|rtc| {
                let _ = rtc.close();
                // Bounded: a closed Rtc only flushes what it has queued.
                for _ in 0..64 {
                    match rtc.poll_output() {
                        Ok(RtcOutput::Transmit(t)) => transmits.push_back(Transmit {
                            transport: transport_of(t.proto),
                            source: t.source,
                            destination: t.destination,
                            contents: t.contents.into(),
                        }),
                        Ok(RtcOutput::Event(_)) => {}
                        Ok(RtcOutput::Timeout(_)) | Err(_) => break,
                    }
                }
            });
        }
        self.demux.remove(&s.ufrag, &s.addrs, key);
        if let Some(t) = s.timer {
            self.timers.remove(&(t, TimerKey::Session(key)));
        }
        self.session_keys.remove(&s.id);
        if s.dirty {
            self.dirty.retain(|k| *k != key);
        }
        let mut left = false;
        if let Some(room) = self.rooms.get_mut(&s.room) {
            room.sessions.remove(&key);
            if room.speaker == Some(key) {
                // Decided again with the next audio level; nobody speaks meanwhile.
                room.speaker = None;
                room.speaker_decided = None;
            }
            if let Some(n) = room.participants.get_mut(&s.participant) {
                *n -= 1;
                if *n == 0 {
                    room.participants.remove(&s.participant);
                    left = true;
                }
            }
            if room.sessions.is_empty() && !room.closing {
                let d = self.now + room.empty_timeout;
                room.empty_deadline = Some(d);
                self.timers.insert((d, TimerKey::Room(room.key)));
            }
        }
        self.emit(
            &s.room,
            Some(&s.id),
            EventKind::SessionClosed {
                reason,
                participant: s.participant.clone(),
            },
        );
        if left {
            self.emit(
                &s.room,
                Some(&s.id),
                EventKind::ParticipantLeft(s.participant),
            );
        }
    }
}
