//! Per-Session transport statistics from str0m's stats events (`Event::PeerStats`,
//! `MediaIngressStats`, `MediaEgressStats`, emitted every `SfuConfig::stats_interval`): the latest
//! RTT and loss of a Session, its connection quality class (with hysteresis: a new class counts
//! once measured in [`QUALITY_REPORTS`] consecutive reports), and the NACK/PLI totals the
//! reports add to the core's [`Counters`]. It keeps no timers and reads no clock: str0m emits
//! the events.

use std::collections::HashMap;
use std::time::Duration;

use str0m::media::{Mid, Rid};
use str0m::stats::{MediaEgressStats, MediaIngressStats, PeerStats};

use super::{Sfu, forward};
use crate::error::CoreError;
use crate::ids::{RoomId, SessionId};
use crate::model::{ConnectionQuality, Counters, SessionStats, TrackRates};

/// Consecutive reports a new quality class must be measured in before it is reported.
pub(super) const QUALITY_REPORTS: u8 = 2;

/// The latest statistics of one Session's connection.
#[derive(Debug, Default)]
pub(super) struct Link {
    /// Round-trip time (from RTCP or STUN), when measured.
    pub(super) rtt: Option<Duration>,
    /// Fraction of the packets sent to the Peer that it reported lost (0..=1).
    pub(super) egress_loss: Option<f32>,
    /// Fraction of the Peer's packets that did not arrive (0..=1).
    pub(super) ingress_loss: Option<f32>,
    /// Cumulative NACK and PLI(+FIR) counts last seen per stream, to count only what is new:
    /// `(mid, rid, egress)` → `(nacks, plis)`.
    seen: HashMap<(Mid, Option<Rid>, bool), (u64, u64)>,
    /// The quality class reported (starts Excellent, unreported).
    pub(super) quality: ConnectionQuality,
    /// A different class measured in this many consecutive reports.
    pending: Option<(ConnectionQuality, u8)>,
}

/// A quality change to report: (now, before, rtt in ms, loss in permille).
pub(super) type QualityChange = (ConnectionQuality, ConnectionQuality, Option<u32>, u32);

impl Link {
    /// A connection report; returns the quality change to report, if any.
    pub(super) fn on_peer(&mut self, s: &PeerStats) -> Option<QualityChange> {
        self.rtt = s.rtt.or(self.rtt);
        self.egress_loss = s.egress_loss_fraction.or(self.egress_loss);
        self.ingress_loss = s.ingress_loss_fraction.or(self.ingress_loss);
        let loss = self
            .egress_loss
            .unwrap_or(0.0)
            .max(self.ingress_loss.unwrap_or(0.0))
            .clamp(0.0, 1.0);
        let measured = ConnectionQuality::classify(loss, self.rtt);
        let before = self.quality;
        if !self.observe(measured) {
            return None;
        }
        let rtt_ms = self
            .rtt
            .map(|r| r.as_millis().min(u128::from(u32::MAX)) as u32);
        Some((self.quality, before, rtt_ms, (loss * 1000.0).round() as u32))
    }

    /// Hysteresis: the class changes once a different one was measured in
    /// [`QUALITY_REPORTS`] consecutive reports. Returns whether it changed.
    pub(super) fn observe(&mut self, measured: ConnectionQuality) -> bool {
        if measured == self.quality {
            self.pending = None;
            return false;
        }
        let n = match self.pending {
            Some((q, n)) if q == measured => n + 1,
            _ => 1,
        };
        if n >= QUALITY_REPORTS {
            self.quality = measured;
            self.pending = None;
            true
        } else {
            self.pending = Some((measured, n));
            false
        }
    }

    /// A subscriber's receive report for one of its streams: NACKs and PLIs it sent us.
    pub(super) fn on_egress(&mut self, s: &MediaEgressStats, c: &mut Counters) {
        let (n, p) = self.delta((s.mid, s.rid, true), s.nacks, s.plis + s.firs);
        c.nacks_received += n;
        c.plis_received += p;
    }

    /// A publisher's stream as we receive it: NACKs and PLIs we sent.
    pub(super) fn on_ingress(&mut self, s: &MediaIngressStats, c: &mut Counters) {
        let (n, p) = self.delta((s.mid, s.rid, false), s.nacks, s.plis + s.firs);
        c.nacks_sent += n;
        c.plis_sent += p;
    }

    /// What grew since the last report of this stream (a reset stream counts from 0 again).
    fn delta(&mut self, key: (Mid, Option<Rid>, bool), nacks: u64, plis: u64) -> (u64, u64) {
        let last = self.seen.insert(key, (nacks, plis)).unwrap_or((0, 0));
        let d = |now: u64, before: u64| if now >= before { now - before } else { now };
        (d(nacks, last.0), d(plis, last.1))
    }
}

impl Sfu {
    /// The statistics of every Session of a Room, ordered by Session id.
    pub fn room_stats(&self, room: &RoomId) -> Result<Vec<SessionStats>, CoreError> {
        let ids: Vec<SessionId> = self
            .list_sessions(room, None, usize::MAX)?
            .into_iter()
            .map(|s| s.id)
            .collect();
        ids.iter().map(|id| self.session_stats(id)).collect()
    }

    /// A Session's connection statistics.
    pub fn session_stats(&self, id: &SessionId) -> Result<SessionStats, CoreError> {
        let key = self.session_key(id)?;
        let s = &self.sessions[&key];
        let permille = |f: Option<f32>| f.map(|l| (l.clamp(0.0, 1.0) * 1000.0).round() as u32);
        let rid = |l: &forward::Layer| l.rid().map(|r| r.to_string());
        let mut published: Vec<TrackRates> = s
            .tracks_in
            .values()
            .filter_map(|k| self.tracks.get(k))
            .map(|t| TrackRates {
                track: t.info.id.clone(),
                layers: t
                    .layers
                    .iter()
                    .map(|l| (rid(&l.layer), l.rate_bps))
                    .collect(),
            })
            .collect();
        published.sort_by(|a, b| a.track.cmp(&b.track));
        let mut received: Vec<TrackRates> = s
            .tracks_out
            .iter()
            .filter_map(|(k, o)| {
                let t = self.tracks.get(k)?;
                let layers = o
                    .fwd
                    .current
                    .and_then(|cur| t.layers.iter().find(|l| l.layer == cur))
                    .map(|l| (rid(&l.layer), l.rate_bps))
                    .into_iter()
                    .collect();
                Some(TrackRates {
                    track: t.info.id.clone(),
                    layers,
                })
            })
            .collect();
        received.sort_by(|a, b| a.track.cmp(&b.track));
        Ok(SessionStats {
            session: s.id.clone(),
            rtt_ms: s
                .link
                .rtt
                .map(|r| r.as_millis().min(u128::from(u32::MAX)) as u32),
            egress_loss_permille: permille(s.link.egress_loss),
            ingress_loss_permille: permille(s.link.ingress_loss),
            quality: s.link.quality,
            estimate_bps: s.estimate,
            published,
            received,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ConnectionQuality::*;

    #[test]
    fn the_worse_of_loss_and_rtt_decides() {
        let ms = |m| Some(Duration::from_millis(m));
        for (loss, rtt, want) in [
            (0.0, None, Excellent),
            (0.0, ms(20), Excellent),
            (0.019, ms(149), Excellent),
            (0.02, ms(20), Good),
            (0.0, ms(150), Good),
            (0.049, ms(299), Good),
            (0.05, ms(20), Poor),
            (0.0, ms(300), Poor),
            (0.199, ms(999), Poor),
            (0.2, ms(20), Lost),
            (0.0, ms(1000), Lost),
            (1.0, None, Lost),
        ] {
            assert_eq!(
                ConnectionQuality::classify(loss, rtt),
                want,
                "loss {loss}, rtt {rtt:?}"
            );
        }
    }

    #[test]
    fn a_class_changes_after_two_consecutive_reports_only() {
        let mut l = Link::default();
        assert_eq!(l.quality, Excellent);
        // One noisy report changes nothing; a good one in between resets the count.
        assert!(!l.observe(Poor));
        assert!(!l.observe(Excellent));
        assert!(!l.observe(Poor));
        assert_eq!(l.quality, Excellent);
        // Two different classes in a row do not add up either.
        assert!(!l.observe(Lost));
        assert_eq!(l.quality, Excellent);
        assert!(l.observe(Lost), "Lost twice in a row");
        assert_eq!(l.quality, Lost);
        assert!(!l.observe(Lost));
        assert!(!l.observe(Good));
        assert!(l.observe(Good));
        assert_eq!(l.quality, Good);
    }
}
