//! Per-Session transport statistics from str0m's stats events (`Event::PeerStats`,
//! `MediaIngressStats`, `MediaEgressStats`, emitted every `SfuConfig::stats_interval`): the latest
//! RTT, loss and byte counts of a Session, and the NACK/PLI totals they add to the core's
//! [`Counters`]. It keeps no timers and reads no clock: str0m emits the events.

use std::collections::HashMap;
use std::time::Duration;

use str0m::media::{Mid, Rid};
use str0m::stats::{MediaEgressStats, MediaIngressStats, PeerStats};

use crate::model::Counters;

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
}

impl Link {
    pub(super) fn on_peer(&mut self, s: &PeerStats) {
        self.rtt = s.rtt.or(self.rtt);
        self.egress_loss = s.egress_loss_fraction.or(self.egress_loss);
        self.ingress_loss = s.ingress_loss_fraction.or(self.ingress_loss);
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
