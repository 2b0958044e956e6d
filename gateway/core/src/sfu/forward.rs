//! Per-subscriber forwarding state ([`Forwarder`]) and key-frame detection in RTP payloads.
//!
//! A Forwarder decides, packet by packet, whether a TrackIn's packet goes to one TrackOut, and
//! rewrites its sequence number and timestamp so that the subscriber sees one continuous stream
//! across simulcast layer switches: it starts (and switches) only at a key frame, continues the
//! sequence numbers where the previous layer stopped, and advances the timestamp by the elapsed
//! wall-clock time. Pure logic: no `Rtc`, no clock.

use std::time::Instant;

use str0m::format::Codec;
use str0m::media::Rid;

/// One stream of a TrackIn: a simulcast layer, or the only stream of a Track without simulcast.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layer {
    /// The only stream of a Track without simulcast.
    Single,
    /// The simulcast layer with this rid.
    Simulcast(Rid),
}

impl Layer {
    /// The rid of a simulcast layer.
    pub fn rid(self) -> Option<Rid> {
        match self {
            Self::Single => None,
            Self::Simulcast(rid) => Some(rid),
        }
    }
}

impl From<Option<Rid>> for Layer {
    /// The layer of a received stream from its rid (none without simulcast).
    fn from(rid: Option<Rid>) -> Self {
        rid.map_or(Self::Single, Self::Simulcast)
    }
}

/// The rewrite of one forwarded packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewritten {
    /// Sequence number for the subscriber.
    pub seq: u64,
    /// RTP timestamp for the subscriber.
    pub ts: u32,
}

/// Forwarding state of one TrackOut (see the module docs).
#[derive(Debug, Default)]
pub struct Forwarder {
    /// The layer being forwarded; `None` until the first key frame.
    pub current: Option<Layer>,
    /// The layer wanted; a switch happens at its next key frame.
    pub target: Option<Layer>,
    /// The subscriber paused this track.
    pub paused: bool,
    /// Highest layer index the subscriber accepts (0 = lowest); `None` = any.
    pub max_layer: Option<u8>,
    /// out_seq = in_seq + seq_offset, for the current layer.
    seq_offset: i64,
    /// out_ts = in_ts + ts_offset (wrapping), for the current layer.
    ts_offset: u32,
    last: Option<(u64, u32, Instant)>,
    /// The version of the TrackIn's layer ranking the target was chosen from.
    pub(crate) seen_version: u64,
}

impl Forwarder {
    /// Decides for one packet of `layer`. `keyframe` says whether the packet starts a key frame
    /// (always true for audio). `clock_rate` converts elapsed time to timestamp ticks.
    pub fn on_packet(
        &mut self,
        now: Instant,
        layer: Layer,
        in_seq: u64,
        in_ts: u32,
        keyframe: bool,
        clock_rate: u32,
    ) -> Option<Rewritten> {
        if self.paused {
            return None;
        }
        if self.current.as_ref() != Some(&layer) {
            // Not the layer being sent: switch to it only if it is the target, at a key frame.
            if self.target.as_ref() != Some(&layer) || !keyframe {
                return None;
            }
            let (next_seq, next_ts) = match self.last {
                Some((seq, ts, at)) => {
                    let elapsed = now.saturating_duration_since(at);
                    let ticks =
                        (elapsed.as_micros() as u64 * u64::from(clock_rate) / 1_000_000).max(1);
                    (seq + 1, ts.wrapping_add(ticks as u32))
                }
                // Start near 1 so that SRTP's rollover counter is 0 for the subscriber.
                None => (1, in_ts),
            };
            self.seq_offset = next_seq as i64 - in_seq as i64;
            self.ts_offset = next_ts.wrapping_sub(in_ts);
            self.current = Some(layer);
        }
        let out = in_seq as i64 + self.seq_offset;
        if out <= 0 {
            return None;
        }
        let out = out as u64;
        if let Some((last_seq, _, _)) = self.last {
            // A retransmission or reordering from before the switch: the subscriber's stream has
            // moved on (str0m answers the subscriber's NACKs from its own cache).
            if out + 1000 < last_seq {
                return None;
            }
        }
        let ts = in_ts.wrapping_add(self.ts_offset);
        if self.last.is_none_or(|(s, _, _)| out > s) {
            self.last = Some((out, ts, now));
        }
        Some(Rewritten { seq: out, ts })
    }
}

/// The byte range of the primary encoding in an RFC 2198 RED payload: after the block headers
/// (4 bytes each while the F bit is set, then 1 byte) and the redundant blocks. `None` when the
/// payload is malformed (headers or block lengths run past its end).
pub fn red_primary(payload: &[u8]) -> Option<std::ops::Range<usize>> {
    let mut i = 0;
    let mut redundant = 0usize;
    loop {
        let b = *payload.get(i)?;
        if b & 0x80 == 0 {
            i += 1;
            break;
        }
        let h = payload.get(i..i + 4)?;
        redundant += (usize::from(h[2] & 0x03) << 8) | usize::from(h[3]);
        i += 4;
    }
    let start = i.checked_add(redundant)?;
    (start <= payload.len()).then_some(start..payload.len())
}

/// Whether an RTP payload of `codec` starts a key frame. Unknown codecs count as key frames
/// (forwarding then starts and switches without waiting).
pub fn is_keyframe(codec: Codec, payload: &[u8]) -> bool {
    match codec {
        Codec::Vp8 => vp8_keyframe(payload),
        Codec::Vp9 => vp9_keyframe(payload),
        Codec::H264 => h264_keyframe(payload),
        Codec::Av1 => payload.first().is_some_and(|b| b & 0x08 != 0),
        _ => true,
    }
}

fn vp8_keyframe(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    let (x, s, pid) = (b0 & 0x80 != 0, b0 & 0x10 != 0, b0 & 0x07);
    if !s || pid != 0 {
        return false;
    }
    let mut i = 1;
    if x {
        let Some(&ext) = p.get(i) else { return false };
        i += 1;
        if ext & 0x80 != 0 {
            // PictureID: 7 or 15 bits.
            let Some(&pic) = p.get(i) else { return false };
            i += if pic & 0x80 != 0 { 2 } else { 1 };
        }
        if ext & 0x40 != 0 {
            i += 1; // TL0PICIDX
        }
        if ext & 0x30 != 0 {
            i += 1; // TID/Y/KEYIDX
        }
    }
    // The VP8 frame tag: bit 0 clear means a key frame.
    p.get(i).is_some_and(|b| b & 0x01 == 0)
}

fn vp9_keyframe(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    // I|P|L|F|B|E|V|Z: not inter-predicted (P = 0) and the start of a frame (B = 1).
    b0 & 0x40 == 0 && b0 & 0x08 != 0
}

fn h264_keyframe(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    match b0 & 0x1f {
        5 | 7 => true, // IDR slice or SPS
        24 => {
            // STAP-A: 16-bit sizes followed by NAL units.
            let mut i = 1;
            while i + 2 < p.len() {
                let n = u16::from_be_bytes([p[i], p[i + 1]]) as usize;
                if matches!(p[i + 2] & 0x1f, 5 | 7) {
                    return true;
                }
                i += 2 + n;
            }
            false
        }
        28 => p.get(1).is_some_and(|h| h & 0x80 != 0 && h & 0x1f == 5), // FU-A start of IDR
        _ => false,
    }
}
