//! Media: ingest of a publisher's RTP (codec lookup, layer accounting, audio levels) and its
//! forwarding to every subscriber (readiness, layer choice, rewriting, payload-type mapping, RED
//! stripping, writing); key-frame requests and their throttle; the bandwidth allocation that caps a
//! subscriber's layers and tells str0m what to probe for.
//!
//! It must not negotiate or close anything: a fault while writing closes only that subscriber
//! (through `fail`).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use str0m::bwe::Bitrate;
use str0m::media::{KeyframeRequestKind, MediaKind};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite};

use super::track::OutState;
use super::{Sfu, TrackKey, alloc, check_fault, forward};
use crate::demux::SessionKey;

/// How often a subscriber's bandwidth allocation is re-evaluated (also on every new estimate).
pub(super) const ALLOC_INTERVAL: Duration = Duration::from_millis(200);

impl Sfu {
    /// A subscriber starts (or restarts) receiving a track: choose its layer now and ask the
    /// publisher for a key frame of it, so the first frame it gets is a key frame soon.
    pub(super) fn kick(&mut self, sub: SessionKey, tk: TrackKey) {
        self.choose_layer(sub, tk, true);
        let target = self
            .sessions
            .get(&sub)
            .and_then(|s| s.tracks_out.get(&tk))
            .and_then(|o| o.fwd.target);
        if let Some(layer) = target {
            self.request_keyframe_layer(tk, layer, KeyframeRequestKind::Pli, true);
        }
        self.report_wanted_layers(tk);
        self.report_layer(sub, tk);
    }

    pub(super) fn request_keyframe_layer(
        &mut self,
        tk: TrackKey,
        layer: forward::Layer,
        kind: KeyframeRequestKind,
        force: bool,
    ) {
        let now = self.now;
        let min = self.config.keyframe_min_interval;
        let Some(t) = self.tracks.get_mut(&tk) else {
            return;
        };
        if t.kind != MediaKind::Video {
            return;
        }
        let last = t.last_keyframe_request.get(&layer).copied();
        if last.is_some_and(|l| now < l + min)
            && !(force && last.is_some_and(|l| now >= l + min / 4))
        {
            return;
        }
        t.last_keyframe_request.insert(layer, now);
        let (publisher, mid) = (t.publisher, t.mid);
        let Some(p) = self.sessions.get_mut(&publisher) else {
            return;
        };
        let res = catch_unwind(AssertUnwindSafe(|| {
            check_fault(p);
            if let Some(rx) = p.rtc.direct_api().stream_rx_by_mid(mid, layer) {
                rx.request_keyframe(kind);
                true
            } else {
                false
            }
        }));
        match res {
            Err(_) => self.fail(publisher),
            Ok(sent) => {
                if sent {
                    self.counters.keyframe_requests += 1;
                }
                self.touch(publisher);
            }
        }
    }

    /// Shares a subscriber's downlink estimate among the Tracks it receives (audio first, then
    /// video fairly, one layer at a time; see `alloc`), moves the bandwidth caps with hysteresis,
    /// and tells str0m's BWE what to probe for: `desired` is what the preferences would use,
    /// `minimum` what the current layers plus the next step up use, so padding lets the
    /// estimate grow toward the next layer before it is switched on.
    pub(super) fn allocate(&mut self, key: SessionKey) {
        let now = self.now;
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        s.alloc_at = None;
        let Some(estimate) = s.estimate.filter(|_| self.config.bwe.enabled) else {
            return;
        };
        s.alloc_at = Some(now + ALLOC_INTERVAL);
        let s = &self.sessions[&key];
        let mut keys = Vec::new();
        let mut demands = Vec::new();
        for (tk, o) in &s.tracks_out {
            if !o.wanted || o.fwd.paused || !matches!(o.state, OutState::Open(_)) {
                continue;
            }
            let Some(t) = self.tracks.get(tk).filter(|t| !t.muted) else {
                continue;
            };
            if t.ranked.is_empty() {
                continue;
            }
            let rate = |l: &forward::Layer| {
                t.layers
                    .iter()
                    .find(|x| x.layer == *l)
                    .map_or(0, |x| x.rate_bps)
            };
            let top = t.ranked.len() - 1;
            let audio = t.kind == MediaKind::Audio;
            let pref = if audio {
                top
            } else {
                o.fwd.max_layer.map_or(top, |m| usize::from(m).min(top))
            };
            let needs: Vec<u64> = t.ranked[..=pref].iter().map(rate).collect();
            let current = o.cap.cap.map_or(pref, |c| c.min(pref));
            demands.push(alloc::Demand {
                audio,
                needs,
                current,
            });
            keys.push((*tk, pref));
        }
        let headroom = self.config.bwe.up_headroom;
        let allocs = alloc::allocate(estimate, &demands, headroom);
        let up = |n: u64| (n as f64 * (1.0 + f64::from(headroom.max(0.0)))) as u64;
        let mut desired = 0;
        let mut minimum = 0;
        let mut step = 0;
        for (d, a) in demands.iter().zip(&allocs) {
            let last = d.needs.last().copied().unwrap_or(0);
            desired += if d.audio { last } else { up(last) };
            let at = a.unwrap_or(d.needs.len().saturating_sub(1));
            let used = d.needs.get(at).copied().unwrap_or(0);
            minimum += used;
            if step == 0
                && let Some(&next) = d.needs.get(at + 1)
            {
                step = up(next).saturating_sub(used);
            }
        }
        minimum += step;
        let cfg = &self.config.bwe;
        let s = self.sessions.get_mut(&key).expect("checked above");
        let mut changed = Vec::new();
        for ((tk, pref), a) in keys.iter().zip(&allocs) {
            let (Some(a), Some(o)) = (a, s.tracks_out.get_mut(tk)) else {
                continue;
            };
            if o.cap.update(now, *a, *pref, cfg) {
                changed.push(*tk);
            }
        }
        let far = |a: u64, b: u64| a.abs_diff(b) * 20 > b.max(1);
        if desired > 0 && (far(minimum, s.bwe_set.0) || far(desired, s.bwe_set.1)) {
            s.bwe_set = (minimum, desired);
            let res = catch_unwind(AssertUnwindSafe(|| {
                check_fault(s);
                s.rtc
                    .bwe()
                    .set_bitrate(Bitrate::bps(minimum), Bitrate::bps(desired));
            }));
            if res.is_err() {
                return self.fail(key);
            }
            self.touch(key);
        }
        for tk in changed {
            tracing::debug!(estimate, "bandwidth moved a layer cap");
            self.kick(key, tk);
        }
        self.update_timer(key);
    }

    pub(super) fn forward_rtp(&mut self, key: SessionKey, p: RtpPacket) {
        let s = self.sessions.get_mut(&key).expect("caller checked");
        let ssrc = p.header.ssrc;
        let (mid, rid) = match s.ssrcs.get(&ssrc) {
            Some(v) => *v,
            None => {
                let mut api = s.rtc.direct_api();
                let Some(v) = api.stream_rx(&ssrc).map(|rx| (rx.mid(), rx.rid())) else {
                    self.counters.rtp_dropped += 1;
                    return;
                };
                s.ssrcs.insert(ssrc, v);
                v
            }
        };
        let Some(&tk) = s.tracks_in.get(&mid) else {
            self.counters.rtp_dropped += 1;
            return;
        };
        let in_pt = p.header.payload_type;
        let Some(t) = self.tracks.get_mut(&tk) else {
            self.counters.rtp_dropped += 1;
            return;
        };
        let found = match t.pt_codec.iter().find(|(pt, _)| *pt == in_pt) {
            Some((_, v)) => *v,
            None => {
                // Opus RED (RFC 2198) arrives with the RED payload type of its primary codec.
                let cc = s.rtc.codec_config();
                let v = match cc.find(|c| c.pt() == in_pt) {
                    Some(c) => Some((*c, false)),
                    None => cc.find(|c| c.red() == Some(in_pt)).map(|c| (*c, true)),
                };
                t.pt_codec.push((in_pt, v));
                v
            }
        };
        let Some((params, red_in)) = found else {
            self.counters.rtp_dropped += 1;
            return;
        };
        let spec = params.spec();
        let t = &self.tracks[&tk];
        if t.muted {
            return;
        }
        let is_video = t.kind == MediaKind::Video;
        // Audio frames are independent; padding-only packets never start anything.
        let keyframe =
            !is_video || (!p.payload.is_empty() && forward::is_keyframe(spec.codec, &p.payload));
        let clock_rate = spec.clock_rate.get();
        self.account_layer(tk, rid, p.payload.len());
        if !is_video && let Some(level) = p.header.ext_vals.audio_level {
            self.account_loudness(tk, level);
        }
        let ext = ExtensionValues {
            audio_level: p.header.ext_vals.audio_level,
            voice_activity: p.header.ext_vals.voice_activity,
            video_orientation: p.header.ext_vals.video_orientation,
            ..Default::default()
        };
        // A reused buffer: no allocation per forwarded packet.
        let mut subs = std::mem::take(&mut self.scratch_subs);
        subs.clear();
        subs.extend(self.tracks[&tk].subscribers.iter().copied());
        let in_seq = *p.seq_no;
        let mut targets_changed = false;
        let mut primary: Option<std::sync::Arc<[u8]>> = None;
        for &sub in &subs {
            // Layer choice and key-frame requests only for TrackOuts that can receive: a key
            // frame requested before the m-line is negotiated would be wasted.
            let ready = self.sessions.get(&sub).is_some_and(|s| {
                s.rtc.is_connected()
                    && s.tracks_out
                        .get(&tk)
                        .is_some_and(|o| matches!(o.state, OutState::Open(_)) && !o.fwd.paused)
            });
            if !ready {
                continue;
            }
            let changed = self.choose_layer(sub, tk, false).is_some();
            targets_changed |= changed;
            if changed {
                self.report_layer(sub, tk);
            }
            let (current, target) = {
                let o = &self.sessions[&sub].tracks_out[&tk];
                (o.fwd.current, o.fwd.target)
            };
            if let Some(target) = target
                && current != Some(target)
            {
                // Waiting for a key frame of the target layer: ask now if the target just
                // changed, else again once the throttle allows (a request can be lost).
                self.request_keyframe_layer(tk, target, KeyframeRequestKind::Pli, changed);
            }
            let now = self.now;
            let Some(s) = self.sessions.get_mut(&sub) else {
                continue;
            };
            if !s.rtc.is_connected() {
                continue;
            }
            let Some(o) = s.tracks_out.get_mut(&tk) else {
                continue;
            };
            let (OutState::Open(_), Some(out_ssrc)) = (o.state, o.ssrc) else {
                continue;
            };
            let was = o.fwd.current;
            let Some(rw) =
                o.fwd
                    .on_packet(now, rid, in_seq, p.header.timestamp, keyframe, clock_rate)
            else {
                continue;
            };
            if was != o.fwd.current {
                targets_changed = true;
                self.report_layer(sub, tk);
            }
            let Some(s) = self.sessions.get_mut(&sub) else {
                continue;
            };
            let Some(o) = s.tracks_out.get_mut(&tk) else {
                continue;
            };
            let out_pt = match o.pt_map.iter().find(|(i, _)| *i == in_pt) {
                Some((_, out)) => *out,
                None => {
                    let out = s.rtc.codec_config().match_params(params).map(|c| {
                        match (red_in, c.red()) {
                            (false, _) => (c.pt(), false),
                            // Both sides negotiated RED: pass it through.
                            (true, Some(red)) => (red, false),
                            (true, None) => (c.pt(), true),
                        }
                    });
                    o.pt_map.push((in_pt, out));
                    out
                }
            };
            let Some((out_pt, strip_red)) = out_pt else {
                self.counters.rtp_dropped += 1;
                continue;
            };
            let payload = if strip_red {
                // The primary encoding, cut out once per packet for every subscriber without RED.
                if primary.is_none()
                    && let Some(r) = forward::red_primary(&p.payload)
                {
                    primary = Some(p.payload[r].into());
                }
                match &primary {
                    Some(b) => b.clone(),
                    None => {
                        self.counters.rtp_dropped += 1;
                        continue;
                    }
                }
            } else {
                p.payload.clone()
            };
            let w = RtpWrite::new(out_pt, rw.seq.into(), rw.ts, p.timestamp, payload)
                .marker(p.header.marker)
                .ext_vals(ext.clone())
                .nackable(is_video);
            let res = catch_unwind(AssertUnwindSafe(|| {
                check_fault(s);
                match s.rtc.direct_api().stream_tx(&out_ssrc) {
                    Some(tx) => {
                        tx.write_rtp(w);
                        true
                    }
                    None => false,
                }
            }));
            match res {
                Err(_) => self.fail(sub),
                Ok(true) => {
                    self.counters.rtp_forwarded += 1;
                    self.touch(sub);
                }
                Ok(false) => self.counters.rtp_dropped += 1,
            }
        }
        self.scratch_subs = subs;
        if targets_changed {
            self.report_wanted_layers(tk);
        }
    }
}
