//! Media: ingest of a publisher's RTP (codec lookup, layer accounting, audio levels) and its
//! forwarding to every subscriber (readiness, layer choice, rewriting, payload-type mapping, RED
//! stripping, writing); key-frame requests and their throttle; the bandwidth allocation that caps a
//! subscriber's layers and tells str0m what to probe for.
//!
//! It must not negotiate or close anything: a fault while writing closes only that subscriber
//! (through `fail`).

use std::sync::Arc;
use std::time::Duration;

use str0m::bwe::Bitrate;
use str0m::media::{KeyframeRequestKind, MediaKind, Pt};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite, Ssrc};

use super::forward::{Layer, Rewritten};
use super::guard::RtcPanicked;
use super::session::RxStream;
use super::track::{InCodec, OutPt, OutState, PtCodec, PtMapping};
use super::{Sfu, TrackKey, alloc, forward};
use crate::keys::SessionKey;

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
        let res = p.rtc.with(|rtc| {
            if let Some(rx) = rtc.direct_api().stream_rx_by_mid(mid, layer.rid()) {
                rx.request_keyframe(kind);
                true
            } else {
                false
            }
        });
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

    /// Before the estimator of a Session has measured anything (no estimate yet, or no media
    /// forwarded to it yet: offers wait for the Session to connect, and a connected `Rtc`
    /// reports its configured start as an estimate): starts str0m's estimator from what its
    /// subscriptions need (each Track's preferred layer, as measured), capped at
    /// `bwe.max_initial_bitrate_bps`, when that is above where it started. Without this a
    /// subscriber of four publishers starts at `initial_bitrate_bps` and the pacer queues the
    /// rest for seconds; with it, a real capacity below the seed shows as delay and loss within
    /// a few feedback intervals and the allocation moves layers down.
    pub(super) fn seed_estimate(&mut self, key: SessionKey) {
        let cfg = &self.config.bwe;
        if !cfg.enabled || cfg.max_initial_bitrate_bps == 0 {
            return;
        }
        let Some(s) = self.sessions.get(&key) else {
            return;
        };
        if s.estimate.is_some() && s.forwarded {
            return;
        }
        let mut need = 0;
        for (tk, o) in &s.tracks_out {
            if !o.wanted || o.fwd.paused || !matches!(o.state, OutState::Open(_)) {
                continue;
            }
            let Some(t) = self.tracks.get(tk).filter(|t| !t.muted) else {
                continue;
            };
            let Some(top) = t.ranked.len().checked_sub(1) else {
                continue;
            };
            let pref = match (t.kind, o.fwd.max_layer) {
                (MediaKind::Video, Some(m)) => usize::from(m).min(top),
                _ => top,
            };
            let l = t.ranked[pref];
            need += t
                .layers
                .iter()
                .find(|x| x.layer == l)
                .map_or(0, |x| x.rate_bps);
        }
        let seed = need.min(cfg.max_initial_bitrate_bps);
        if seed <= cfg.initial_bitrate_bps.max(s.bwe_seed) {
            return;
        }
        let s = self.sessions.get_mut(&key).expect("checked above");
        s.bwe_seed = seed;
        if s.rtc
            .with(|rtc| rtc.bwe().reset(Bitrate::bps(seed)))
            .is_err()
        {
            return self.fail(key);
        }
        self.touch(key);
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
            let res = s.rtc.with(|rtc| {
                rtc.bwe()
                    .set_bitrate(Bitrate::bps(minimum), Bitrate::bps(desired));
            });
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

    /// Forwards one RTP packet a publisher sent to every subscriber of its TrackIn: identify the
    /// TrackIn and layer, resolve the codec, account the packet, then per subscriber: ready?,
    /// choose the layer, rewrite, map the payload type (stripping RED where needed), write.
    pub(super) fn forward_rtp(&mut self, key: SessionKey, p: RtpPacket) {
        let Some((tk, layer)) = self.identify_track_in(key, p.header.ssrc) else {
            return;
        };
        let in_pt = p.header.payload_type;
        let Some(codec) = self.resolve_codec(key, tk, in_pt) else {
            return;
        };
        let t = &self.tracks[&tk];
        if t.muted {
            return;
        }
        let spec = codec.params.spec();
        let is_video = t.kind == MediaKind::Video;
        // Audio frames are independent; padding-only packets never start anything.
        let keyframe =
            !is_video || (!p.payload.is_empty() && forward::is_keyframe(spec.codec, &p.payload));
        let clock_rate = spec.clock_rate.get();
        self.account_layer(tk, layer, p.payload.len());
        if !is_video && let Some(level) = p.header.ext_vals.audio_level {
            self.account_loudness(tk, level);
        }
        let pkt = InPacket {
            p: &p,
            layer,
            in_pt,
            codec,
            keyframe,
            clock_rate,
            is_video,
            ext: ExtensionValues {
                audio_level: p.header.ext_vals.audio_level,
                voice_activity: p.header.ext_vals.voice_activity,
                video_orientation: p.header.ext_vals.video_orientation,
                ..Default::default()
            },
        };
        // A reused buffer: no allocation per forwarded packet.
        let mut subs = std::mem::take(&mut self.scratch_subs);
        subs.clear();
        subs.extend(self.tracks[&tk].subscribers.iter().copied());
        let mut targets_changed = false;
        let mut primary: Option<Arc<[u8]>> = None;
        for &sub in &subs {
            targets_changed |= self.forward_to(sub, tk, &pkt, &mut primary);
        }
        self.scratch_subs = subs;
        if targets_changed {
            self.report_wanted_layers(tk);
        }
    }

    /// Which TrackIn and layer a publisher's packet belongs to (by SSRC, learned from str0m on
    /// first use). `None` (counted as dropped) for a stream that is not a published Track.
    fn identify_track_in(&mut self, key: SessionKey, ssrc: Ssrc) -> Option<(TrackKey, Layer)> {
        let s = self.sessions.get_mut(&key).expect("caller checked");
        let rx = match s.ssrcs.get(&ssrc) {
            Some(v) => *v,
            None => {
                let found = s.rtc.with(|rtc| {
                    rtc.direct_api().stream_rx(&ssrc).map(|rx| RxStream {
                        mid: rx.mid(),
                        layer: Layer::from(rx.rid()),
                    })
                });
                let v = match found {
                    Ok(Some(v)) => v,
                    Ok(None) => {
                        self.counters.rtp_dropped += 1;
                        return None;
                    }
                    Err(RtcPanicked) => {
                        self.fail(key);
                        return None;
                    }
                };
                s.ssrcs.insert(ssrc, v);
                v
            }
        };
        let Some(&tk) = s.tracks_in.get(&rx.mid) else {
            self.counters.rtp_dropped += 1;
            return None;
        };
        if !self.tracks.contains_key(&tk) {
            self.counters.rtp_dropped += 1;
            return None;
        }
        Some((tk, rx.layer))
    }

    /// The codec of a publisher's payload type (Opus RED arrives with the RED payload type of
    /// its primary codec), learned from the publisher's codec table on first use. `None`
    /// (counted as dropped) for a payload type it did not negotiate.
    fn resolve_codec(&mut self, key: SessionKey, tk: TrackKey, in_pt: Pt) -> Option<InCodec> {
        let t = self
            .tracks
            .get_mut(&tk)
            .expect("checked by identify_track_in");
        let found = match t.pt_codec.iter().find(|c| c.pt == in_pt) {
            Some(c) => c.codec,
            None => {
                let s = &self.sessions[&key];
                let looked_up = s.rtc.read(|rtc| {
                    let cc = rtc.codec_config();
                    match cc.find(|c| c.pt() == in_pt) {
                        Some(c) => Some(InCodec {
                            params: *c,
                            red: false,
                        }),
                        None => cc.find(|c| c.red() == Some(in_pt)).map(|c| InCodec {
                            params: *c,
                            red: true,
                        }),
                    }
                });
                let Ok(codec) = looked_up else {
                    self.fail(key);
                    return None;
                };
                t.pt_codec.push(PtCodec { pt: in_pt, codec });
                codec
            }
        };
        if found.is_none() {
            self.counters.rtp_dropped += 1;
        }
        found
    }

    /// Forwards one packet to one subscriber. Returns whether the layers it needs changed
    /// (its target or the layer it receives).
    fn forward_to(
        &mut self,
        sub: SessionKey,
        tk: TrackKey,
        pkt: &InPacket<'_>,
        primary: &mut Option<Arc<[u8]>>,
    ) -> bool {
        // Layer choice and key-frame requests only for TrackOuts that can receive: a key frame
        // requested before the m-line is negotiated would be wasted.
        if !self.subscriber_ready(sub, tk) {
            return false;
        }
        let mut changed = self.choose_layer_and_ask(sub, tk);
        let Some((rw, layer_changed)) = self.rewrite(sub, tk, pkt) else {
            return changed;
        };
        if layer_changed {
            changed = true;
            self.counters.layer_switches += 1;
            self.report_layer(sub, tk);
        }
        let Some(out) = self.map_payload_type(sub, tk, pkt) else {
            self.counters.rtp_dropped += 1;
            return changed;
        };
        let Some(payload) = payload_for(pkt.p, out.strip_red, primary) else {
            self.counters.rtp_dropped += 1;
            return changed;
        };
        let p = pkt.p;
        let w = RtpWrite::new(out.pt, rw.seq.into(), rw.ts, p.timestamp, payload)
            .marker(p.header.marker)
            .ext_vals(pkt.ext.clone())
            .nackable(pkt.is_video);
        self.write_rtp(sub, tk, w);
        changed
    }

    /// Whether a subscriber can receive a Track now: connected, its m-line open, not paused.
    fn subscriber_ready(&mut self, sub: SessionKey, tk: TrackKey) -> bool {
        let Some(s) = self.sessions.get(&sub) else {
            return false;
        };
        let open = s
            .tracks_out
            .get(&tk)
            .is_some_and(|o| matches!(o.state, OutState::Open(_)) && !o.fwd.paused);
        match s.rtc.is_connected() {
            Ok(connected) => connected && open,
            Err(RtcPanicked) => {
                self.fail(sub);
                false
            }
        }
    }

    /// Re-chooses the subscriber's target layer (reported when it changed) and, while it waits
    /// for a key frame of the target, asks the publisher for one: now if the target just changed,
    /// else again once the throttle allows (a request can be lost). Returns whether the target
    /// changed.
    fn choose_layer_and_ask(&mut self, sub: SessionKey, tk: TrackKey) -> bool {
        let changed = self.choose_layer(sub, tk, false).is_some();
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
            self.request_keyframe_layer(tk, target, KeyframeRequestKind::Pli, changed);
        }
        changed
    }

    /// Lets the subscriber's Forwarder decide on the packet and rewrite its sequence number and
    /// timestamp. `None` when the packet does not go to this subscriber; otherwise the rewrite
    /// and whether the layer it receives changed with this packet.
    fn rewrite(
        &mut self,
        sub: SessionKey,
        tk: TrackKey,
        pkt: &InPacket<'_>,
    ) -> Option<(Rewritten, bool)> {
        let now = self.now;
        let s = self.sessions.get_mut(&sub)?;
        match s.rtc.is_connected() {
            Ok(true) => {}
            Ok(false) => return None,
            Err(RtcPanicked) => {
                self.fail(sub);
                return None;
            }
        }
        let o = s.tracks_out.get_mut(&tk)?;
        if !matches!((o.state, o.ssrc), (OutState::Open(_), Some(_))) {
            return None;
        }
        let was = o.fwd.current;
        let rw = o.fwd.on_packet(
            now,
            pkt.layer,
            *pkt.p.seq_no,
            pkt.p.header.timestamp,
            pkt.keyframe,
            pkt.clock_rate,
        )?;
        Some((rw, was != o.fwd.current))
    }

    /// The subscriber's payload type for the publisher's, learned from its codec table on first
    /// use: its own RED payload type when both negotiated RED, else its payload type of the
    /// primary codec (then RED is stripped). `None` when it does not support the codec.
    fn map_payload_type(
        &mut self,
        sub: SessionKey,
        tk: TrackKey,
        pkt: &InPacket<'_>,
    ) -> Option<OutPt> {
        let s = self.sessions.get_mut(&sub)?;
        let o = s.tracks_out.get_mut(&tk)?;
        if let Some(m) = o.pt_map.iter().find(|m| m.input == pkt.in_pt) {
            return m.output;
        }
        let InCodec { params, red } = pkt.codec;
        let looked_up = s.rtc.read(|rtc| {
            rtc.codec_config()
                .match_params(params)
                .map(|c| match (red, c.red()) {
                    (false, _) => OutPt {
                        pt: c.pt(),
                        strip_red: false,
                    },
                    // Both sides negotiated RED: pass it through.
                    (true, Some(red)) => OutPt {
                        pt: red,
                        strip_red: false,
                    },
                    (true, None) => OutPt {
                        pt: c.pt(),
                        strip_red: true,
                    },
                })
        });
        let Ok(output) = looked_up else {
            self.fail(sub);
            return None;
        };
        o.pt_map.push(PtMapping {
            input: pkt.in_pt,
            output,
        });
        output
    }

    /// Writes the rewritten packet to the subscriber's send stream (str0m encrypts and paces it,
    /// and keeps video for NACKs); the Session is then drained before output leaves the core.
    fn write_rtp(&mut self, sub: SessionKey, tk: TrackKey, w: RtpWrite) {
        let Some(s) = self.sessions.get_mut(&sub) else {
            return;
        };
        let Some(out_ssrc) = s.tracks_out.get(&tk).and_then(|o| o.ssrc) else {
            return;
        };
        let res = s
            .rtc
            .with(|rtc| match rtc.direct_api().stream_tx(&out_ssrc) {
                Some(tx) => {
                    tx.write_rtp(w);
                    true
                }
                None => false,
            });
        match res {
            Err(RtcPanicked) => self.fail(sub),
            Ok(true) => {
                self.counters.rtp_forwarded += 1;
                self.touch(sub);
            }
            Ok(false) => self.counters.rtp_dropped += 1,
        }
    }
}

/// A publisher's packet, identified and resolved once for all its subscribers.
struct InPacket<'a> {
    p: &'a RtpPacket,
    layer: Layer,
    in_pt: Pt,
    codec: InCodec,
    keyframe: bool,
    clock_rate: u32,
    is_video: bool,
    /// The header extensions passed through (audio level, voice activity, orientation).
    ext: ExtensionValues,
}

/// The payload for one subscriber: the packet's as it came, or, for a subscriber without RED,
/// the primary encoding (cut out once per packet and shared). `None` when a RED packet has no
/// primary block.
fn payload_for(
    p: &RtpPacket,
    strip_red: bool,
    primary: &mut Option<Arc<[u8]>>,
) -> Option<Arc<[u8]>> {
    if !strip_red {
        return Some(p.payload.clone());
    }
    if primary.is_none()
        && let Some(r) = forward::red_primary(&p.payload)
    {
        *primary = Some(p.payload[r].into());
    }
    primary.clone()
}
