//! Worker load: how far behind a Worker is (loop lag, queue depth), and the overload rule that
//! refuses new Rooms and Sessions before a Worker saturates, so the calls it carries keep their
//! latency.
//!
//! It owns [`WorkerLoad`] (written by its Worker thread once per timer run, read by the API side:
//! one atomic, no lock) and [`Overload`], the pure rule. It must not touch an `Sfu` or a socket,
//! and it never refuses a call on an existing Room or Session.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use switchboard_core::CoreError;

/// What a Worker measures about itself.
#[derive(Debug, Default)]
pub(crate) struct WorkerLoad {
    /// The loop lag (µs): how late the Worker's last two timers ran after their deadlines, the
    /// smaller of the two, so one scheduling hiccup of the thread is not an overload.
    lag_us: AtomicU64,
    /// How late (µs) the last timer ran (written and read by the Worker thread only).
    last_us: AtomicU64,
}

impl WorkerLoad {
    /// The Worker ran a timer due at `deadline` at `now`.
    pub(crate) fn timer_ran(&self, deadline: Instant, now: Instant) {
        let late = now.saturating_duration_since(deadline);
        let late = u64::try_from(late.as_micros()).unwrap_or(u64::MAX);
        let last = self.last_us.swap(late, Ordering::Relaxed);
        self.lag_us.store(late.min(last), Ordering::Relaxed);
    }

    /// Test hook: the lag as if measured.
    #[cfg(test)]
    pub(crate) fn set_lag(&self, lag: Duration) {
        let us = u64::try_from(lag.as_micros()).unwrap_or(u64::MAX);
        self.lag_us.store(us, Ordering::Relaxed);
    }

    /// The loop lag last measured.
    pub(crate) fn lag(&self) -> Duration {
        Duration::from_micros(self.lag_us.load(Ordering::Relaxed))
    }
}

/// The thresholds of `[overload]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Overload {
    /// `overload.max_queue_depth`.
    pub(crate) max_queue_depth: usize,
    /// `overload.max_loop_lag_ms` (compared with [`WorkerLoad::lag`]).
    pub(crate) max_loop_lag: Duration,
}

impl Overload {
    /// Whether Worker `worker`, with `depth` commands queued and a loop lag of `lag`, may take a
    /// new Room or Session. A refusal is `LimitReached` (RESOURCE_EXHAUSTED) naming the key.
    pub(crate) fn admit_new(
        &self,
        worker: usize,
        depth: usize,
        lag: Duration,
    ) -> Result<(), CoreError> {
        if depth > self.max_queue_depth {
            tracing::debug!(worker, depth, "overloaded: refusing new work");
            return Err(CoreError::LimitReached {
                limit: "overload.max_queue_depth",
                max: self.max_queue_depth as u64,
            });
        }
        if lag > self.max_loop_lag {
            tracing::debug!(
                worker,
                lag_ms = lag.as_millis() as u64,
                "overloaded: refusing new work"
            );
            return Err(CoreError::LimitReached {
                limit: "overload.max_loop_lag_ms",
                max: self.max_loop_lag.as_millis() as u64,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_past_either_threshold_naming_it() {
        let o = Overload {
            max_queue_depth: 2,
            max_loop_lag: Duration::from_millis(100),
        };
        assert!(o.admit_new(0, 2, Duration::from_millis(100)).is_ok());
        let e = o.admit_new(1, 3, Duration::ZERO).unwrap_err().to_string();
        assert!(e.contains("overload.max_queue_depth"), "{e}");
        let e = o
            .admit_new(1, 0, Duration::from_millis(101))
            .unwrap_err()
            .to_string();
        assert!(e.contains("overload.max_loop_lag_ms"), "{e}");
    }

    #[test]
    fn the_lag_is_how_late_the_last_timer_ran() {
        let load = WorkerLoad::default();
        let t = Instant::now();
        let ms = Duration::from_millis;
        // One late run is a hiccup; two in a row are a lag (the smaller of the two).
        load.timer_ran(t, t + ms(250));
        assert_eq!(load.lag(), Duration::ZERO);
        load.timer_ran(t, t + ms(300));
        assert_eq!(load.lag(), ms(250));
        load.timer_ran(t, t + ms(400));
        assert_eq!(load.lag(), ms(300));
        // A timer run on time (or early) ends it.
        load.timer_ran(t + Duration::from_secs(1), t);
        assert_eq!(load.lag(), Duration::ZERO);
    }
}

/// The rule at the gateway's door, with a real Worker held behind (paused) deterministically.
#[cfg(test)]
mod worker_tests {
    use std::time::{Duration, SystemTime};

    use switchboard_core::{CoreError, ParticipantId, Permissions, RoomId, RoomSpec, SessionSpec};

    use crate::{Config, Gateway, GatewayError};

    fn config() -> Config {
        let mut c = crate::test_support::loopback_config();
        c.overload.max_queue_depth = 2;
        // Far above any scheduling delay of a loaded test machine: only `set_lag` trips it.
        c.overload.max_loop_lag_ms = 10_000;
        c
    }

    fn room(id: &str) -> RoomSpec {
        RoomSpec {
            id: Some(RoomId::parse(id).unwrap()),
            max_sessions: None,
            empty_timeout: None,
            metadata: String::new(),
            created_at: SystemTime::now(),
            backend_data_labels: Vec::new(),
        }
    }

    fn session(room: &str, who: &str) -> SessionSpec {
        SessionSpec {
            room: RoomId::parse(room).unwrap(),
            participant: ParticipantId::parse(who).unwrap(),
            metadata: String::new(),
            permissions: Permissions::default(),
            created_at: SystemTime::now(),
            auto_subscribe: true,
        }
    }

    /// Polls `call` once: a refusal at the door is ready at once, while a call that reached the
    /// paused Worker's queue would wait (and fails the test here instead of hanging it).
    async fn refused_naming<T: std::fmt::Debug>(
        call: impl std::future::Future<Output = Result<T, GatewayError>>,
        key: &str,
    ) {
        let r = tokio::select! {
            biased;
            r = call => Some(r),
            () = std::future::ready(()) => None,
        };
        match r {
            Some(Err(GatewayError::Core(e @ CoreError::LimitReached { .. }))) => {
                assert!(e.to_string().contains(key), "{e}")
            }
            other => panic!("expected a refusal naming {key} at once: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_worker_behind_refuses_new_work_but_serves_what_it_has() {
        let gw = Gateway::start(config()).await.unwrap();
        let h = gw.handle();
        h.create_room(room("existing")).await.unwrap();
        let (s, _) = h.create_session(session("existing", "a")).await.unwrap();
        let worker = h.inner.workers[0].clone();

        // The Worker stops taking commands; three calls on what exists queue up behind it.
        let (resume, paused) = std::sync::mpsc::channel::<()>();
        worker.pause(paused);
        while worker.queue_depth() > 0 {
            tokio::task::yield_now().await;
        }
        let mut queued = Vec::new();
        for _ in 0..3 {
            let (h, id) = (h.clone(), s.id.clone());
            queued.push(tokio::spawn(async move { h.get_session(id).await }));
        }
        while worker.queue_depth() < 3 {
            tokio::task::yield_now().await;
        }
        // Three queued > overload.max_queue_depth (2): new Rooms and Sessions are refused.
        refused_naming(h.create_room(room("new")), "overload.max_queue_depth").await;
        refused_naming(
            h.create_session(session("existing", "b")),
            "overload.max_queue_depth",
        )
        .await;
        drop(resume);
        for q in queued {
            q.await
                .unwrap()
                .expect("calls on an existing Session are served");
        }

        // A loop running late: the same refusal, naming the lag (held paused, so no timer
        // run measures it again meanwhile).
        let (resume, paused) = std::sync::mpsc::channel::<()>();
        worker.pause(paused);
        worker.set_lag(Duration::from_secs(60));
        refused_naming(h.create_room(room("new")), "overload.max_loop_lag_ms").await;
        let existing = {
            let (h, id) = (h.clone(), s.id.clone());
            tokio::spawn(async move { h.get_session(id).await })
        };
        worker.set_lag(Duration::ZERO);
        drop(resume);
        existing
            .await
            .unwrap()
            .expect("an existing Session is served");
        h.create_room(room("new"))
            .await
            .expect("a Worker caught up takes new Rooms");
        gw.shutdown().await;
    }
}
