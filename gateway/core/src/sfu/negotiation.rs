//! Negotiation: the Peer's offers and answers, the gateway's own offers when a Session's TrackOuts
//! change, glare (the gateway is polite), trickled candidates, and the SDP filtering the ICE-lite,
//! TCP-passive gateway needs.
//!
//! It owns the TrackOut states between ToOpen and Open (and ToStop to gone). It must not forward
//! media or decide layers: an opened TrackOut is handed to `media.rs` with a key-frame request.

use std::time::Instant;

use str0m::Candidate;
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::media::{Direction, MediaKind};
use str0m::net::Protocol;

use super::limits::{self, parse_error};
use super::track::OutState;
use super::{RemoteCandidate, Sfu};
use crate::error::{CoreError, WrongState};
use crate::ids::SessionId;
use crate::keys::SessionKey;
use crate::model::*;

pub(super) struct PendingOffer {
    pub(super) offer: SdpPendingOffer,
    pub(super) id: u64,
}

impl Sfu {
    /// Applies the Peer's offer and returns the answer. If a gateway offer is outstanding (glare),
    /// the gateway yields: its offer is dropped and its changes are offered again afterwards.
    pub fn apply_offer(
        &mut self,
        now: Instant,
        id: &SessionId,
        sdp: &str,
    ) -> Result<String, CoreError> {
        self.now = now;
        check_sdp_present(sdp)?;
        let key = self.session_key(id)?;
        // Bounded before str0m parses anything: size, m-lines and candidates by a line scan.
        let shape = limits::check_sdp(sdp, &self.config.signaling)?;
        // The offer lists every m-line of the Session but those the gateway has yet to offer.
        let unoffered = self.session_mlines(key) - self.sessions[&key].sdp_mlines;
        if shape.mlines + unoffered > self.config.signaling.max_mlines_per_session {
            return Err(limits::too_many_session_mlines(
                shape.mlines + unoffered,
                &self.config.signaling,
            ));
        }
        let sdp = &*without_tcp_candidates(sdp);
        let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| CoreError::InvalidArgument {
            field: "sdp",
            reason: format!("not a valid SDP offer: {}", parse_error(&e, sdp)),
        })?;
        if !self.settle(key) {
            return Err(CoreError::SessionNotFound(id.clone()));
        }
        let s = self.sessions.get_mut(&key).expect("settle checked");
        let glare = s.pending.take().is_some();
        let res = s.rtc.with(|rtc| rtc.sdp_api().accept_offer(offer));
        if glare {
            self.finish_negotiation(key, false);
        }
        let answer = match res {
            Err(_) => {
                self.fail(key);
                return Err(CoreError::Internal(id.clone()));
            }
            Ok(Err(e)) => {
                self.touch(key);
                self.drive(key);
                self.maybe_offer(key);
                return Err(CoreError::InvalidArgument {
                    field: "sdp",
                    reason: format!("offer cannot be accepted: {}", parse_error(&e, sdp)),
                });
            }
            Ok(Ok(answer)) => answer,
        };
        let s = self.sessions.get_mut(&key).expect("key from index");
        s.negotiated = true;
        s.sdp_mlines = shape.mlines;
        if s.state == SessionState::New {
            s.state = SessionState::Connecting;
        }
        // An ICE restart by the Peer gives this side new credentials too: keep the ufrag index
        // right, or checks from the Peer's new address could not be routed.
        let Ok(ufrag) = s
            .rtc
            .with(|rtc| rtc.direct_api().local_ice_credentials().ufrag)
        else {
            self.fail(key);
            return Err(CoreError::Internal(id.clone()));
        };
        if ufrag != s.ufrag {
            // An ICE restart: the Peer trickles a new set of candidates.
            s.remote_candidates = 0;
            let old = std::mem::replace(&mut s.ufrag, ufrag.clone());
            self.demux.remove(&old, &[], key);
            self.demux.insert_ufrag(ufrag, key);
        }
        self.touch(key);
        self.drive(key);
        self.maybe_offer(key);
        Ok(answer.to_sdp_string())
    }

    /// Applies the Peer's answer to the gateway's outstanding offer.
    pub fn apply_answer(
        &mut self,
        now: Instant,
        id: &SessionId,
        sdp: &str,
        offer_id: Option<u64>,
    ) -> Result<(), CoreError> {
        self.now = now;
        check_sdp_present(sdp)?;
        let key = self.session_key(id)?;
        let shape = limits::check_sdp(sdp, &self.config.signaling)?;
        let sdp = &*without_tcp_candidates(sdp);
        let answer = SdpAnswer::from_sdp_string(sdp).map_err(|e| CoreError::InvalidArgument {
            field: "sdp",
            reason: format!("not a valid SDP answer: {}", parse_error(&e, sdp)),
        })?;
        let s = self.sessions.get_mut(&key).expect("key from index");
        let Some(pending) = &s.pending else {
            return Err(CoreError::WrongState {
                session: id.clone(),
                reason: WrongState::NoOfferOutstanding,
            });
        };
        if let Some(want) = offer_id
            && want != pending.id
        {
            return Err(CoreError::WrongState {
                session: id.clone(),
                reason: WrongState::NotTheOutstandingOffer {
                    given: want,
                    outstanding: pending.id,
                },
            });
        }
        if !self.settle(key) {
            return Err(CoreError::SessionNotFound(id.clone()));
        }
        let s = self.sessions.get_mut(&key).expect("settle checked");
        let pending = s.pending.take().expect("checked above");
        let res = s
            .rtc
            .with(|rtc| rtc.sdp_api().accept_answer(pending.offer, answer));
        match res {
            Err(_) => {
                self.fail(key);
                Err(CoreError::Internal(id.clone()))
            }
            Ok(Err(e)) => {
                self.finish_negotiation(key, false);
                self.touch(key);
                self.drive(key);
                self.maybe_offer(key);
                Err(CoreError::InvalidArgument {
                    field: "sdp",
                    reason: format!("answer cannot be accepted: {}", parse_error(&e, sdp)),
                })
            }
            Ok(Ok(())) => {
                if let Some(s) = self.sessions.get_mut(&key) {
                    s.sdp_mlines = shape.mlines;
                }
                self.touch(key);
                self.drive(key);
                self.finish_negotiation(key, true);
                self.maybe_offer(key);
                Ok(())
            }
        }
    }

    /// Adds a trickled candidate from the Peer. Candidates with an mDNS (`.local`) address are
    /// accepted and ignored: the gateway is ICE-lite and learns the Peer's address from its checks.
    pub fn add_remote_candidate(
        &mut self,
        now: Instant,
        id: &SessionId,
        candidate: RemoteCandidate<'_>,
    ) -> Result<(), CoreError> {
        self.now = now;
        let line = match candidate {
            RemoteCandidate::Candidate(line) => {
                let line = line.trim();
                let line = line.strip_prefix("a=").unwrap_or(line);
                if line.is_empty() {
                    return Err(CoreError::InvalidArgument {
                        field: "candidate",
                        reason: "must not be empty unless end_of_candidates is set".into(),
                    });
                }
                Some(line)
            }
            RemoteCandidate::EndOfCandidates => None,
        };
        let key = self.session_key(id)?;
        let Some(line) = line else {
            return Ok(());
        };
        let is_mdns = line
            .split_whitespace()
            .nth(4)
            .is_some_and(|addr| addr.ends_with(".local"));
        if is_mdns && line.starts_with("candidate:") {
            return Ok(());
        }
        let max = self.config.signaling.max_remote_candidates;
        if self.sessions[&key].remote_candidates >= max {
            return Err(CoreError::LimitReached {
                limit: "signaling.max_remote_candidates",
                max: max as u64,
            });
        }
        let c = Candidate::from_sdp_string(line).map_err(|e| CoreError::InvalidArgument {
            field: "candidate",
            reason: format!("not a valid ICE candidate: {}", parse_error(&e, line)),
        })?;
        if c.proto() != Protocol::Udp {
            // See `without_tcp_candidates`: ICE-TCP pairs are learned from the connection.
            return Ok(());
        }
        if !self.settle(key) {
            return Err(CoreError::SessionNotFound(id.clone()));
        }
        let s = self.sessions.get_mut(&key).expect("settle checked");
        let res = s.rtc.with(|rtc| rtc.add_remote_candidate(c));
        if res.is_err() {
            self.fail(key);
            return Err(CoreError::Internal(id.clone()));
        }
        s.remote_candidates += 1;
        self.touch(key);
        Ok(())
    }

    /// Starts a gateway offer for a Session if it has queued changes and none is outstanding.
    pub(super) fn maybe_offer(&mut self, key: SessionKey) {
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        // The first gateway offer waits until the Session has connected (`set_connected`).
        let ever_connected = matches!(
            s.state,
            SessionState::Connected | SessionState::Disconnected
        );
        if !s.negotiated || s.pending.is_some() || !ever_connected {
            return;
        }
        if self.rooms.get(&s.room).is_none_or(|r| r.closing) {
            return;
        }
        let queued = s
            .tracks_out
            .values()
            .any(|o| matches!(o.state, OutState::ToOpen | OutState::ToStop(_)));
        if !queued {
            return;
        }
        let tracks = &self.tracks;
        let tracks_out = &mut s.tracks_out;
        let res = s.rtc.with(|rtc| {
            let mut api = rtc.sdp_api();
            for (tk, o) in tracks_out.iter_mut() {
                match o.state {
                    OutState::ToOpen => {
                        let Some(t) = tracks.get(tk) else { continue };
                        let mid = api.add_media(
                            t.kind,
                            Direction::SendOnly,
                            Some(t.info.session.to_string()),
                            Some(t.info.id.to_string()),
                            None,
                        );
                        o.state = OutState::Negotiating(mid);
                    }
                    OutState::ToStop(mid) => {
                        api.stop_media(mid);
                        o.state = OutState::Stopping(mid);
                    }
                    _ => {}
                }
            }
            api.apply()
        });
        match res {
            Err(_) => self.fail(key),
            Ok(None) => {
                // Nothing needed an offer after all (str0m applied the changes locally).
                self.touch(key);
                self.finish_negotiation(key, true);
            }
            Ok(Some((offer, pending))) => {
                let id = self.next_offer_id;
                self.next_offer_id += 1;
                let s = self.sessions.get_mut(&key).expect("checked above");
                s.pending = Some(PendingOffer { offer: pending, id });
                let (room, sid) = (s.room.clone(), s.id.clone());
                self.touch(key);
                self.emit(
                    &room,
                    Some(&sid),
                    EventKind::NegotiationNeeded {
                        offer_id: id,
                        sdp: offer.to_sdp_string(),
                    },
                );
            }
        }
    }

    /// Settles the TrackOuts of an offer that was answered (`accepted`) or dropped.
    pub(super) fn finish_negotiation(&mut self, key: SessionKey, accepted: bool) {
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        let mut opened = Vec::new();
        let mut gone = Vec::new();
        for (tk, o) in s.tracks_out.iter_mut() {
            match (o.state, accepted) {
                (OutState::Negotiating(mid), true) => {
                    if o.wanted {
                        o.state = OutState::Open(mid);
                        s.out_by_mid.insert(mid, *tk);
                        opened.push((*tk, mid, o.kind));
                    } else {
                        o.state = OutState::ToStop(mid);
                    }
                }
                (OutState::Negotiating(_), false) => {
                    if o.wanted {
                        o.state = OutState::ToOpen;
                    } else {
                        gone.push(*tk);
                    }
                }
                (OutState::Stopping(mid), true) => {
                    s.out_by_mid.remove(&mid);
                    gone.push(*tk);
                }
                (OutState::Stopping(mid), false) => o.state = OutState::ToStop(mid),
                _ => {}
            }
        }
        for tk in gone {
            s.tracks_out.remove(&tk);
        }
        let (rtx, rtx_age, rtx_ratio) = (
            self.config.rtx_cache_packets,
            self.config.rtx_cache_max_age,
            self.config.rtx_ratio,
        );
        let tracks_out = &mut s.tracks_out;
        let res = s.rtc.with(|rtc| {
            for (tk, mid, kind) in &opened {
                let mut api = rtc.direct_api();
                let Some(tx) = api.stream_tx_by_mid(*mid, None) else {
                    continue;
                };
                if *kind == MediaKind::Video {
                    tx.set_rtx_cache(rtx, rtx_age, rtx_ratio);
                }
                let ssrc = tx.ssrc();
                if let Some(o) = tracks_out.get_mut(tk) {
                    o.ssrc = Some(ssrc);
                }
            }
            rtc.is_connected()
        });
        let Ok(connected) = res else {
            return self.fail(key);
        };
        if !opened.is_empty() {
            self.seed_estimate(key);
            if let Some(s) = self.sessions.get_mut(&key) {
                s.forwarded = true;
            }
        }
        if connected {
            for (tk, _, kind) in opened {
                if kind == MediaKind::Video {
                    self.kick(key, tk);
                }
            }
        }
    }
}

/// The SDP without the Peer's TCP candidates. The core is ICE-lite and only passive on TCP: it
/// never connects to a Peer, so its TCP pairs are always learned from the first STUN request on a
/// connection the Peer opened (a peer-reflexive candidate). A TCP candidate from the SDP (an active
/// one has port 9) would only make a pair that never sees a request, which str0m's ICE-lite agent
/// keeps "still possible" forever, so a Session whose connection closed would never become
/// Disconnected.
pub(super) fn without_tcp_candidates(sdp: &str) -> std::borrow::Cow<'_, str> {
    let is_tcp_candidate = |line: &str| {
        line.strip_prefix("a=candidate:").is_some_and(|rest| {
            rest.split_whitespace()
                .nth(2)
                .is_some_and(|t| !t.eq_ignore_ascii_case("udp"))
        })
    };
    if !sdp.lines().any(is_tcp_candidate) {
        return sdp.into();
    }
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.split_inclusive('\n') {
        if !is_tcp_candidate(line.trim_end()) {
            out.push_str(line);
        }
    }
    out.into()
}

/// An offer or answer must have a body.
fn check_sdp_present(sdp: &str) -> Result<(), CoreError> {
    if sdp.trim().is_empty() {
        return Err(CoreError::InvalidArgument {
            field: "sdp",
            reason: "must not be empty".into(),
        });
    }
    Ok(())
}
