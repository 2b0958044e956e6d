//! Bandwidth-driven simulcast layer choice: how one subscriber's estimated downlink (str0m's TWCC
//! estimate) is shared among the Tracks it receives ([`allocate`]), and the hysteresis that turns
//! those allocations into layer caps that do not flap ([`LayerCap::update`]).
//!
//! Pure logic on numbers and instants handed in: no `Rtc`, no clock, no events. The caller
//! (`Sfu`) measures per-layer bitrates, reads the estimate, applies the caps and reports them.

use std::time::{Duration, Instant};

/// Thresholds of the bandwidth-driven layer choice.
#[derive(Debug, Clone, PartialEq)]
pub struct BweConfig {
    /// Estimate the downlink of every subscriber with TWCC (str0m's BWE, with probing) and cap
    /// its simulcast layers to what fits. Off: layers follow the preference only.
    pub enabled: bool,
    /// Estimate a subscriber starts with, before feedback arrives (bits per second).
    pub initial_bitrate_bps: u64,
    /// Before feedback arrives, the estimate is raised to what the subscriptions need (their
    /// preferred layers' measured bitrates), up to this (bits per second; 0: never raised), so
    /// a subscriber joining a group call is not paced below its media while the estimator
    /// ramps; a lower real capacity then moves layers down.
    pub max_initial_bitrate_bps: u64,
    /// A lower layer is chosen when the allocation stays below the current layer for this long.
    pub down_hold: Duration,
    /// A higher layer is chosen when the allocation stays at it (with headroom) for this long.
    pub up_hold: Duration,
    /// Fraction of a higher layer's bitrate that must fit on top of it before switching up
    /// (0.2 = the estimate must carry 120 % of the layer).
    pub up_headroom: f32,
    /// Minimum time between two bandwidth-driven switches of one subscriber's Track.
    pub min_switch_interval: Duration,
}

impl Default for BweConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            initial_bitrate_bps: 1_000_000,
            max_initial_bitrate_bps: 8_000_000,
            down_hold: Duration::from_millis(500),
            up_hold: Duration::from_secs(3),
            up_headroom: 0.2,
            min_switch_interval: Duration::from_secs(2),
        }
    }
}

/// One Track a subscriber receives, as the allocator sees it.
#[derive(Debug, Clone)]
pub struct Demand {
    /// Audio is served first and in full.
    pub audio: bool,
    /// Bitrate (bps, with packet overhead) of each active layer, lowest first, up to the
    /// subscriber's preference. Empty: nothing to allocate (paused, no media yet).
    pub needs: Vec<u64>,
    /// The layer index sent now (the applied cap), for the up-switch headroom.
    pub current: usize,
}

/// Splits `estimate` among `demands`: audio in full first, then every video Track gets its lowest
/// layer (in the given order, which is the priority), then Tracks are raised one layer at a time,
/// round robin, while the next layer fits. Raising a Track above `current` needs the layer's
/// bitrate plus `headroom` (a fraction of it) to fit, so an estimate hovering near a layer's
/// bitrate does not make it go up and down. A video Track whose lowest layer does not fit still
/// gets it (index 0): the SFU never pauses video for bandwidth.
///
/// Returns, per demand, the highest layer index allocated (`None` for audio and empty demands).
pub fn allocate(estimate: u64, demands: &[Demand], headroom: f32) -> Vec<Option<usize>> {
    let mut budget = estimate as i128;
    let mut out: Vec<Option<usize>> = vec![None; demands.len()];
    for d in demands.iter().filter(|d| d.audio) {
        budget -= d.needs.last().copied().unwrap_or(0) as i128;
    }
    let cost = |d: &Demand, i: usize| -> i128 {
        let n = d.needs[i] as f64;
        let n = if i > d.current {
            n * (1.0 + f64::from(headroom.max(0.0)))
        } else {
            n
        };
        n as i128
    };
    for (i, d) in demands.iter().enumerate() {
        if d.audio || d.needs.is_empty() {
            continue;
        }
        budget -= cost(d, 0);
        out[i] = Some(0);
    }
    loop {
        let mut raised = false;
        for (i, d) in demands.iter().enumerate() {
            let Some(at) = out[i] else { continue };
            if at + 1 >= d.needs.len() {
                continue;
            }
            let extra = cost(d, at + 1) - cost(d, at);
            if extra <= budget {
                budget -= extra;
                out[i] = Some(at + 1);
                raised = true;
            }
        }
        if !raised {
            return out;
        }
    }
}

/// The bandwidth cap of one subscriber's simulcast Track, with hysteresis.
#[derive(Debug, Clone, Default)]
pub struct LayerCap {
    /// Highest layer index the bandwidth allows; `None` = not limited by bandwidth.
    pub cap: Option<usize>,
    /// A different cap proposed by the allocations since this instant (up = true).
    pending: Option<(bool, Instant)>,
    /// When the cap last changed.
    last_switch: Option<Instant>,
}

impl LayerCap {
    /// Feeds one allocation (`alloc`, the highest layer index that fits; `top` the highest the
    /// preference allows). The cap moves down after the allocation stayed lower for `down_hold`,
    /// up after it stayed higher for `up_hold`, and never sooner than `min_switch_interval`
    /// after the previous move. Returns true when the cap changed.
    pub fn update(&mut self, now: Instant, alloc: usize, top: usize, c: &BweConfig) -> bool {
        let alloc = alloc.min(top);
        let cur = self.cap.map_or(top, |c| c.min(top));
        if alloc == cur {
            self.pending = None;
            if alloc == top && self.cap.is_some() {
                // The preference came down to the cap: bandwidth no longer limits.
                self.cap = None;
            }
            return false;
        }
        let up = alloc > cur;
        let since = match self.pending {
            Some((dir, at)) if dir == up => at,
            _ => {
                self.pending = Some((up, now));
                now
            }
        };
        let hold = if up { c.up_hold } else { c.down_hold };
        let held = now.saturating_duration_since(since) >= hold;
        let spaced = self
            .last_switch
            .is_none_or(|t| now.saturating_duration_since(t) >= c.min_switch_interval);
        if !(held && spaced) {
            return false;
        }
        self.cap = if alloc >= top { None } else { Some(alloc) };
        self.pending = None;
        self.last_switch = Some(now);
        true
    }

    /// Forgets the cap (the subscriber restarts, or bandwidth estimation stopped).
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}
