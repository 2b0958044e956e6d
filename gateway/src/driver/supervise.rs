//! The Worker's supervisor: owns the Worker's [`Sfu`] and runs every input into it (a command, a
//! datagram, a TCP frame or close, a timeout, draining its output) under `catch_unwind`.
//!
//! A Session-level bug is already contained inside the core (its `Rtc` guard closes that Session
//! only). A panic anywhere else in the core, or in command handling, would end the Worker thread
//! silently; here it ends only the faulted core:
//! 1. the events the core had already queued are published (salvaged without driving anything);
//! 2. every Session it held is reported `SessionClosed{INTERNAL_ERROR}` and every Room
//!    `RoomClosed{INTERNAL_ERROR}` (ids read from the faulted core's maps, which a panic cannot
//!    make unsafe to read: [`Sfu::held`]);
//! 3. a fresh core is built from the same configuration (same Worker index, same announced
//!    addresses) and the loop goes on with the same sockets.
//!
//! [`WorkerStatus`] is the Worker's health for the rest of the gateway: `healthy` is false from
//! the panic until the fresh core is in place, and `restarts` counts faults.
//!
//! It must not do IO or make protocol decisions: the loop does IO, the core decides.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use switchboard_core::{EventKind, RoomCloseReason, SessionCloseReason, Sfu, SfuConfig, SfuEvent};

use crate::events::{EventBody, EventBus};

/// A Worker's health, shared with the API layer (health, metrics). Lock-free: written by the
/// Worker thread only.
#[derive(Debug)]
pub struct WorkerStatus {
    restarts: AtomicU64,
    healthy: AtomicBool,
}

impl Default for WorkerStatus {
    fn default() -> Self {
        Self {
            restarts: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
        }
    }
}

impl WorkerStatus {
    /// How many times the Worker's core faulted and was restarted.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// False while the Worker is restarting after a fault, and for good if its thread stopped
    /// for any reason other than a gateway shutdown.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// A snapshot.
    pub fn snapshot(&self) -> WorkerHealth {
        WorkerHealth {
            restarts: self.restarts(),
            healthy: self.is_healthy(),
        }
    }

    pub(super) fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
    }
}

/// One Worker's health at one instant ([`crate::GatewayHandle::worker_health`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerHealth {
    /// Faults of the Worker's core so far (each closed all it held and restarted it).
    pub restarts: u64,
    /// False while restarting, or when the Worker's thread stopped outside a shutdown.
    pub healthy: bool,
}

/// The Worker's core under supervision.
pub(super) struct Core {
    sfu: Sfu,
    /// What the core was built from, to build a fresh one after a fault.
    config: SfuConfig,
    index: u8,
    bus: Arc<EventBus>,
    status: Arc<WorkerStatus>,
}

impl Core {
    pub(super) fn new(sfu: Sfu, index: u8, bus: Arc<EventBus>, status: Arc<WorkerStatus>) -> Self {
        let config = sfu.config().clone();
        Self {
            sfu,
            config,
            index,
            bus,
            status,
        }
    }

    /// The Worker's health.
    pub(super) fn status(&self) -> Arc<WorkerStatus> {
        self.status.clone()
    }

    /// Publishes one event on the gateway's bus.
    pub(super) fn publish(&self, e: EventBody) {
        self.bus.publish(e);
    }

    /// Read-only access (configuration, counters); never panics.
    pub(super) fn sfu(&self) -> &Sfu {
        &self.sfu
    }

    /// Runs `f` on the core. On a panic the core is replaced by a fresh one (see the module
    /// docs) and `None` is returned.
    pub(super) fn run<R>(&mut self, f: impl FnOnce(&mut Sfu) -> R) -> Option<R> {
        match catch_unwind(AssertUnwindSafe(|| f(&mut self.sfu))) {
            Ok(r) => Some(r),
            Err(payload) => {
                self.restart(&*payload);
                None
            }
        }
    }

    /// Steps 1–3 of the module docs.
    fn restart(&mut self, payload: &(dyn std::any::Any + Send)) {
        self.status.set_healthy(false);
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a non-string panic".into());
        let (rooms, sessions) = self.sfu.held();
        tracing::error!(
            worker = self.index,
            panic = %what,
            rooms = rooms.len(),
            sessions = sessions.len(),
            "worker core faulted; closing what it held and restarting it"
        );
        for e in self.sfu.take_events() {
            self.bus.publish(EventBody::Sfu(e));
        }
        for (room, session, participant) in sessions {
            self.bus.publish(EventBody::Sfu(SfuEvent {
                room,
                session: Some(session),
                kind: EventKind::SessionClosed {
                    reason: SessionCloseReason::InternalError,
                    participant,
                },
            }));
        }
        for room in rooms {
            self.bus.publish(EventBody::Sfu(SfuEvent {
                room,
                session: None,
                kind: EventKind::RoomClosed(RoomCloseReason::InternalError),
            }));
        }
        let mut seed = [0u8; 32];
        if getrandom::getrandom(&mut seed).is_err() {
            // No OS randomness now: derive a different seed from the clock and the count; ids
            // only need to differ from the faulted core's.
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            seed[..16].copy_from_slice(&t.to_le_bytes());
            seed[16..24].copy_from_slice(&self.status.restarts().to_le_bytes());
        }
        // The same configuration built the first core, and `Sfu::new` only validates it.
        let fresh = Sfu::new(Instant::now(), self.config.clone(), seed)
            .expect("the configuration that built the first core builds another");
        let old = std::mem::replace(&mut self.sfu, fresh);
        // Dropping the faulted core runs `Rtc` destructors; a panic there must not escape either.
        let _ = catch_unwind(AssertUnwindSafe(move || drop(old)));
        self.status.restarts.fetch_add(1, Ordering::Relaxed);
        self.status.set_healthy(true);
    }
}
