//! [`EventBus`]: stamps every event with this process's [`BootId`], a gateway-wide sequence number
//! and a wall-clock time, keeps the most recent ones in a bounded replay ring, and fans them out to
//! subscribers ([`EventSubscription`]).
//!
//! Resuming: a subscriber that saw sequence `n` of boot `b` subscribes with
//! [`EventBus::subscribe_after`]`(n)`: it reads the ring's events after `n` one by one, then the
//! live ones, without gap or duplicate (it attaches its live receiver under the same lock that
//! publishing holds, once it has read the last sequence). A catching-up subscriber holds nothing
//! of its own: if the ring drops an event before it is read, the subscription lags. When events after `n` already left the ring, or `n` is not a
//! sequence of this boot, the call fails with [`ResumeError`] naming the oldest sequence still
//! available; the subscriber then re-reads state. Sequences restart at 1 with a new boot id when
//! the gateway restarts. This is the design a cluster-wide stream shares: one sequence per
//! gateway plus its boot id, replay from a bounded ring, "too old" past it.
//!
//! Workers publish from their own threads. The short lock around "next sequence number + ring +
//! send" keeps sequence order equal to delivery order; it is taken once per control-plane event,
//! never per packet. This module knows nothing of protobuf.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use switchboard_core::{EventKind, RoomId, SessionId, SfuEvent};
use tokio::sync::broadcast;

/// Random per gateway process; tells a backend that the gateway restarted (and that sequence
/// numbers restarted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BootId(u128);

impl BootId {
    /// A fresh random id.
    pub fn random() -> Self {
        let mut b = [0u8; 16];
        // The OS random source failing is unrecoverable for a server; fall back to the clock so
        // the id still differs between boots.
        if getrandom::getrandom(&mut b).is_err() {
            let t = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            return Self(t ^ (u128::from(std::process::id()) << 64));
        }
        Self(u128::from_be_bytes(b))
    }

    /// From its 128 bits (tests, a cluster peer's id).
    pub fn from_u128(v: u128) -> Self {
        Self(v)
    }
}

/// 32 lowercase hex digits.
impl fmt::Display for BootId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl std::str::FromStr for BootId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        u128::from_str_radix(s, 16).map(Self)
    }
}

/// What an event says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventBody {
    /// An event of a Room or Session.
    Sfu(SfuEvent),
    /// The gateway is shutting down; the last event of every stream.
    Draining,
}

/// One event as backends see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayEvent {
    /// The gateway process that published it.
    pub boot_id: BootId,
    /// Strictly increasing by one per gateway process, from 1.
    pub sequence: u64,
    /// When it was published.
    pub time: SystemTime,
    /// What happened.
    pub body: EventBody,
}

impl GatewayEvent {
    /// The Room concerned, if any.
    pub fn room(&self) -> Option<&RoomId> {
        match &self.body {
            EventBody::Sfu(e) => Some(&e.room),
            EventBody::Draining => None,
        }
    }

    /// The Session concerned, if any.
    pub fn session(&self) -> Option<&SessionId> {
        match &self.body {
            EventBody::Sfu(e) => e.session.as_ref(),
            EventBody::Draining => None,
        }
    }

    /// Approximate bytes it holds in memory: the struct, ids, and its variable parts (SDP,
    /// data, labels, rids). What the replay ring's byte bound counts.
    pub fn approx_bytes(&self) -> usize {
        let heap = match &self.body {
            EventBody::Draining => 0,
            EventBody::Sfu(e) => {
                // Room and Session ids (bounded by the core's MAX_ID_LEN) and small fields.
                128 + match &e.kind {
                    EventKind::NegotiationNeeded { sdp, .. } => sdp.len(),
                    EventKind::DataReceived { label, data, .. } => label.len() + data.len(),
                    EventKind::ChannelClosed { label, .. } => label.len(),
                    EventKind::TrackLayersWanted { rids, .. } => {
                        rids.iter().map(|r| r.len() + 24).sum()
                    }
                    EventKind::TrackPublished(t) => t.rids.iter().map(|r| r.len() + 24).sum(),
                    _ => 0,
                }
            }
        };
        std::mem::size_of::<Self>() + heap
    }
}

/// Which events a subscription wants.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Only this Room.
    pub room: Option<RoomId>,
    /// Only this Session.
    pub session: Option<SessionId>,
}

impl EventFilter {
    /// Whether `e` passes. `Draining` passes every filter.
    pub fn matches(&self, e: &GatewayEvent) -> bool {
        if matches!(e.body, EventBody::Draining) {
            return true;
        }
        if let Some(r) = &self.room
            && e.room() != Some(r)
        {
            return false;
        }
        if let Some(s) = &self.session
            && e.session() != Some(s)
        {
            return false;
        }
        true
    }
}

/// Sizes of an [`EventBus`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventBusLimits {
    /// Events a live subscriber may fall behind before it lags (and its stream ends).
    pub live_events: usize,
    /// Most events kept for replay.
    pub replay_events: usize,
    /// Most bytes ([`GatewayEvent::approx_bytes`]) kept for replay.
    pub replay_bytes: usize,
    /// Most bytes (as sent) queued toward one stream whose reader does not keep up.
    pub stream_bytes: usize,
}

/// Why a subscription cannot resume where the subscriber asked.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ResumeError {
    /// Events after `after` already left the replay ring.
    #[error(
        "events after sequence {after} are no longer kept; the oldest available is {oldest}: \
         re-read state with the Get/List RPCs and watch again"
    )]
    TooOld {
        /// The sequence asked for.
        after: u64,
        /// The oldest sequence still available (the next one published when none is kept).
        oldest: u64,
    },
    /// The subscriber's boot id is not this process's: the gateway restarted.
    #[error(
        "boot {given} is not this gateway's (boot {boot_id}): it restarted and its sequences \
         restarted; the oldest available is {oldest}: re-read state and watch again"
    )]
    OtherBoot {
        /// The boot id the subscriber gave.
        given: BootId,
        /// This gateway's boot id.
        boot_id: BootId,
        /// The oldest sequence still available.
        oldest: u64,
    },
    /// `after` was never published by this gateway process: it comes from an earlier boot.
    #[error(
        "sequence {after} was never published by this gateway (boot {boot_id}, last sequence \
         {last}): it restarted; the oldest available is {oldest}: re-read state and watch again"
    )]
    NotThisBoot {
        /// The sequence asked for.
        after: u64,
        /// The last sequence published.
        last: u64,
        /// The oldest sequence still available.
        oldest: u64,
        /// This gateway's boot id.
        boot_id: BootId,
    },
}

#[derive(Debug)]
struct Ring {
    /// The last sequence published (0 before the first event).
    last: u64,
    /// Each event with its [`GatewayEvent::approx_bytes`].
    events: VecDeque<(Arc<GatewayEvent>, usize)>,
    bytes: usize,
}

impl Ring {
    /// The oldest sequence a subscriber can still get.
    fn oldest(&self) -> u64 {
        self.events
            .front()
            .map_or(self.last + 1, |(e, _)| e.sequence)
    }
}

/// The gateway's event fan-out with its replay ring.
#[derive(Debug)]
pub struct EventBus {
    boot_id: BootId,
    limits: EventBusLimits,
    ring: Mutex<Ring>,
    tx: broadcast::Sender<Arc<GatewayEvent>>,
}

impl EventBus {
    /// A bus with a fresh random [`BootId`].
    pub fn new(limits: EventBusLimits) -> Self {
        Self::with_boot_id(limits, BootId::random())
    }

    /// A bus with a given boot id (tests).
    pub fn with_boot_id(limits: EventBusLimits, boot_id: BootId) -> Self {
        let (tx, _) = broadcast::channel(limits.live_events.max(1));
        Self {
            boot_id,
            limits,
            ring: Mutex::new(Ring {
                last: 0,
                events: VecDeque::new(),
                bytes: 0,
            }),
            tx,
        }
    }

    /// Its sizes.
    pub fn limits(&self) -> EventBusLimits {
        self.limits
    }

    /// This process's boot id, carried by every event.
    pub fn boot_id(&self) -> BootId {
        self.boot_id
    }

    fn ring(&self) -> MutexGuard<'_, Ring> {
        // A poisoned lock only means another publisher panicked mid-publish; the ring is a queue
        // of complete events and the counter is intact.
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stamps, keeps and sends an event.
    pub fn publish(&self, body: EventBody) {
        let mut ring = self.ring();
        ring.last += 1;
        let ev = Arc::new(GatewayEvent {
            boot_id: self.boot_id,
            sequence: ring.last,
            time: SystemTime::now(),
            body,
        });
        let size = ev.approx_bytes();
        ring.bytes += size;
        ring.events.push_back((ev.clone(), size));
        while ring.events.len() > self.limits.replay_events || ring.bytes > self.limits.replay_bytes
        {
            let Some((_, size)) = ring.events.pop_front() else {
                break;
            };
            ring.bytes -= size;
        }
        // No subscribers is fine: nobody is watching.
        let _ = self.tx.send(ev);
    }

    /// The last sequence published (0 before the first) and the oldest still kept for replay.
    pub fn sequences(&self) -> (u64, u64) {
        let ring = self.ring();
        (ring.last, ring.oldest())
    }

    /// Events published but not yet read by the slowest live subscriber (the bus's lag; a
    /// subscriber that falls `live_events` behind ends with `Lagged`).
    pub fn live_backlog(&self) -> usize {
        self.tx.len()
    }

    /// Live subscriptions: `WatchEvents` streams past their replay plus the gateway's own
    /// listeners. Each ends when its reader goes away, so this returns to its idle value.
    pub fn live_subscribers(&self) -> usize {
        self.tx.receiver_count()
    }

    /// Subscribes from the next event on.
    pub fn subscribe(&self, filter: EventFilter) -> EventSubscription {
        EventSubscription {
            from: Source::Live(self.tx.subscribe()),
            filter,
        }
    }

    /// Subscribes to every event after sequence `after` of boot `boot_id` (`None`: this one):
    /// first those still in the ring (filtered), read from the ring as the subscriber asks for
    /// them, then live ones. `after` equal to the last sequence is the same as
    /// [`EventBus::subscribe`].
    pub fn subscribe_after(
        self: &Arc<Self>,
        after: u64,
        boot_id: Option<BootId>,
        filter: EventFilter,
    ) -> Result<EventSubscription, ResumeError> {
        let ring = self.ring();
        let oldest = ring.oldest();
        if let Some(given) = boot_id
            && given != self.boot_id
        {
            return Err(ResumeError::OtherBoot {
                given,
                boot_id: self.boot_id,
                oldest,
            });
        }
        if after > ring.last {
            return Err(ResumeError::NotThisBoot {
                after,
                last: ring.last,
                oldest,
                boot_id: self.boot_id,
            });
        }
        if after + 1 < oldest {
            return Err(ResumeError::TooOld { after, oldest });
        }
        Ok(EventSubscription {
            from: Source::Ring {
                bus: self.clone(),
                next: after + 1,
            },
            filter,
        })
    }
}

/// Why an [`EventSubscription`] ended.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventStreamError {
    /// The subscriber read too slowly and `missed` events were lost.
    #[error("event stream fell behind and lost {missed} events")]
    Lagged {
        /// How many.
        missed: u64,
    },
    /// The gateway is gone.
    #[error("the gateway stopped")]
    Closed,
}

/// A stream of events that pass a filter: catching up from the replay ring, then live events.
#[derive(Debug)]
pub struct EventSubscription {
    from: Source,
    filter: EventFilter,
}

/// Where an [`EventSubscription`] reads next.
#[derive(Debug)]
enum Source {
    /// Catching up: the next sequence to read from the ring. Nothing is held for the subscriber
    /// meanwhile; if the ring drops `next` before it is read, the subscription lags.
    Ring { bus: Arc<EventBus>, next: u64 },
    /// Caught up: live events.
    Live(broadcast::Receiver<Arc<GatewayEvent>>),
}

impl EventSubscription {
    /// Whether it is still catching up from the replay ring: right after [`Self::next`], whether
    /// that event came from the ring. Those are held by the ring anyway, so a consumer may wait
    /// for its reader while it passes them on.
    pub fn catching_up(&self) -> bool {
        matches!(self.from, Source::Ring { .. })
    }

    /// The next matching event. After a `Draining` event the caller should stop.
    pub async fn next(&mut self) -> Result<Arc<GatewayEvent>, EventStreamError> {
        loop {
            let rx = match &mut self.from {
                Source::Ring { bus, next } => {
                    let ring = bus.ring();
                    if *next > ring.last {
                        // Caught up. Attached under the publish lock: the receiver's first
                        // event is exactly `next`.
                        let rx = bus.tx.subscribe();
                        drop(ring);
                        self.from = Source::Live(rx);
                        continue;
                    }
                    let oldest = ring.oldest();
                    if *next < oldest {
                        return Err(EventStreamError::Lagged {
                            missed: oldest - *next,
                        });
                    }
                    // The ring holds consecutive sequences from `oldest`.
                    let e = ring.events[(*next - oldest) as usize].0.clone();
                    *next += 1;
                    drop(ring);
                    if self.filter.matches(&e) {
                        return Ok(e);
                    }
                    continue;
                }
                Source::Live(rx) => rx,
            };
            match rx.recv().await {
                Ok(e) if self.filter.matches(&e) => return Ok(e),
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    return Err(EventStreamError::Lagged { missed });
                }
                Err(broadcast::error::RecvError::Closed) => return Err(EventStreamError::Closed),
            }
        }
    }
}

#[cfg(test)]
#[path = "events_tests.rs"]
mod tests;
