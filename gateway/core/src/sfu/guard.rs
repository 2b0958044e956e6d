//! [`RtcGuard`]: the one door to a Session's str0m `Rtc`. Every call into an `Rtc`, reads
//! included, runs inside [`RtcGuard::with`] or [`RtcGuard::read`], under `catch_unwind`.
//!
//! The `Rtc` is a private field of the guard, so no other file can reach it without going through
//! this door: the invariant "every touch of a Session's `Rtc` runs under `catch_unwind`" is kept by
//! the compiler. A call that panics poisons the guard (the `Rtc` is never touched again) and
//! returns [`RtcPanicked`]; the caller must then close the Session with `Sfu::fail`
//! (`SessionClosed{InternalError}`). This file must not know anything about Sessions, Rooms or
//! forwarding.

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};

use str0m::Rtc;

/// A call into a Session's `Rtc` panicked (a bug in str0m or the core). The Session must be
/// closed; its `Rtc` is not touched again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RtcPanicked;

/// Owns one `Rtc` and lets it be touched only under `catch_unwind` (see the module docs).
pub(super) struct RtcGuard {
    rtc: Rtc,
    /// Set once a call panicked: every later call fails without touching the `Rtc`.
    poisoned: Cell<bool>,
    /// Fault injection (tests): the next call panics inside the guard, as a bug would.
    fault: bool,
}

impl RtcGuard {
    /// Builds the `Rtc` (`make` runs under `catch_unwind` too) and guards it.
    pub(super) fn build(make: impl FnOnce() -> Rtc) -> Result<Self, RtcPanicked> {
        let rtc = catch_unwind(AssertUnwindSafe(make)).map_err(|_| RtcPanicked)?;
        Ok(Self {
            rtc,
            poisoned: Cell::new(false),
            fault: false,
        })
    }

    /// Runs `f` on the `Rtc` under `catch_unwind`.
    pub(super) fn with<R>(&mut self, f: impl FnOnce(&mut Rtc) -> R) -> Result<R, RtcPanicked> {
        if self.poisoned.get() {
            return Err(RtcPanicked);
        }
        let fault = self.fault;
        let rtc = &mut self.rtc;
        let res = catch_unwind(AssertUnwindSafe(move || {
            check_fault(fault);
            f(rtc)
        }));
        res.map_err(|_| {
            self.poisoned.set(true);
            RtcPanicked
        })
    }

    /// Runs a read `f` on the `Rtc` under `catch_unwind`.
    pub(super) fn read<R>(&self, f: impl FnOnce(&Rtc) -> R) -> Result<R, RtcPanicked> {
        if self.poisoned.get() {
            return Err(RtcPanicked);
        }
        let res = catch_unwind(AssertUnwindSafe(|| {
            check_fault(self.fault);
            f(&self.rtc)
        }));
        res.map_err(|_| {
            self.poisoned.set(true);
            RtcPanicked
        })
    }

    /// Whether the `Rtc` has ICE and DTLS up.
    pub(super) fn is_connected(&self) -> Result<bool, RtcPanicked> {
        self.read(Rtc::is_connected)
    }

    /// Test hook: the next call through the guard panics.
    #[cfg(feature = "testing")]
    pub(super) fn inject_fault(&mut self) {
        self.fault = true;
    }
}

/// The fault-injection hook: a guard marked faulty panics where a bug would.
fn check_fault(fault: bool) {
    if fault {
        panic!("injected fault");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_is_contained_and_poisons_the_guard_for_good() {
        // A base instant for the `Rtc` from the test support; the code under test reads no clock.
        let now = switchboard_testpeer::base_instant();
        let mut g = RtcGuard::build(|| Rtc::new(now)).unwrap();
        assert_eq!(g.read(Rtc::is_connected), Ok(false));
        g.fault = true;
        assert_eq!(g.with(|_| ()), Err(RtcPanicked));
        // Poisoned: later calls fail without running, even once the fault is gone.
        g.fault = false;
        let mut ran = false;
        assert_eq!(g.with(|_| ran = true), Err(RtcPanicked));
        assert!(!ran, "a poisoned Rtc is never touched again");
        assert_eq!(g.is_connected(), Err(RtcPanicked));
        // A panic inside the closure itself is caught the same way.
        let mut g = RtcGuard::build(|| Rtc::new(now)).unwrap();
        assert_eq!(g.read(|_| panic!("a bug")), Err::<(), _>(RtcPanicked));
        assert_eq!(g.with(|_| ()), Err(RtcPanicked));
    }
}
