//! The event bus: sequences, boot id, replay ring bounds, resume without gap or duplicate.

use super::*;

fn limits(replay_events: usize, replay_bytes: usize) -> EventBusLimits {
    EventBusLimits {
        live_events: 100_000,
        replay_events,
        replay_bytes,
        stream_bytes: 1 << 20,
    }
}

fn room(n: u32) -> RoomId {
    RoomId::parse(&format!("room-{n}")).unwrap()
}

fn ev(room_n: u32, sdp_bytes: usize) -> EventBody {
    EventBody::Sfu(SfuEvent {
        room: room(room_n),
        session: None,
        kind: EventKind::NegotiationNeeded {
            offer_id: 1,
            sdp: "v".repeat(sdp_bytes),
        },
    })
}

async fn take(sub: &mut EventSubscription, n: usize) -> Vec<u64> {
    let mut out = Vec::new();
    for _ in 0..n {
        let e = tokio::time::timeout(std::time::Duration::from_secs(5), sub.next())
            .await
            .unwrap_or_else(|_| panic!("only {out:?} within 5 s"));
        out.push(e.unwrap().sequence);
    }
    out
}

#[tokio::test]
async fn resume_replays_the_ring_then_continues_live_without_gap_or_duplicate() {
    let bus = Arc::new(EventBus::new(limits(100, 1 << 30)));
    for _ in 0..10 {
        bus.publish(ev(1, 10));
    }
    let mut sub = bus
        .subscribe_after(4, None, EventFilter::default())
        .unwrap();
    for _ in 0..3 {
        bus.publish(ev(1, 10));
    }
    assert_eq!(take(&mut sub, 9).await, (5..=13).collect::<Vec<_>>());
    // Resuming at the last sequence is a plain live subscription.
    let mut live = bus
        .subscribe_after(13, None, EventFilter::default())
        .unwrap();
    bus.publish(ev(1, 10));
    assert_eq!(take(&mut live, 1).await, [14]);
    // From the very start, while sequence 1 is still kept.
    let mut all = bus
        .subscribe_after(0, None, EventFilter::default())
        .unwrap();
    assert_eq!(take(&mut all, 14).await, (1..=14).collect::<Vec<_>>());
}

#[tokio::test]
async fn resume_applies_the_filter_to_the_replay() {
    let bus = Arc::new(EventBus::new(limits(100, 1 << 30)));
    for i in 0..10 {
        bus.publish(ev(i % 2, 10));
    }
    let filter = EventFilter {
        room: Some(room(1)),
        session: None,
    };
    let mut sub = bus.subscribe_after(3, None, filter).unwrap();
    bus.publish(ev(0, 10));
    bus.publish(ev(1, 10));
    assert_eq!(take(&mut sub, 4).await, [4, 6, 8, 10]);
    assert_eq!(take(&mut sub, 1).await, [12]);
}

#[tokio::test]
async fn a_resuming_subscriber_that_falls_behind_the_ring_lags() {
    let bus = Arc::new(EventBus::new(limits(5, 1 << 30)));
    for _ in 0..10 {
        bus.publish(ev(1, 10));
    }
    let mut sub = bus
        .subscribe_after(5, None, EventFilter::default())
        .unwrap();
    assert_eq!(take(&mut sub, 1).await, [6]);
    // While it does not read, the ring moves on past 7..=15: it holds nothing of its own.
    for _ in 0..10 {
        bus.publish(ev(1, 10));
    }
    assert_eq!(
        sub.next().await.unwrap_err(),
        EventStreamError::Lagged { missed: 9 }
    );
}

#[test]
fn too_old_is_refused_naming_the_oldest_kept() {
    let bus = Arc::new(EventBus::new(limits(5, 1 << 30)));
    for _ in 0..12 {
        bus.publish(ev(1, 10));
    }
    assert_eq!(bus.sequences(), (12, 8));
    let err = bus
        .subscribe_after(6, None, EventFilter::default())
        .unwrap_err();
    assert_eq!(
        err,
        ResumeError::TooOld {
            after: 6,
            oldest: 8
        }
    );
    assert!(err.to_string().contains("oldest available is 8"), "{err}");
    // One before the oldest still resumes: nothing is missing.
    assert!(bus.subscribe_after(7, None, EventFilter::default()).is_ok());
}

#[test]
fn the_ring_is_bounded_by_bytes() {
    // Events of ~321 KB like NegotiationNeeded offers of a long Room: a 1 MiB ring keeps three.
    let bus = Arc::new(EventBus::new(limits(10_000, 1 << 20)));
    for _ in 0..20 {
        bus.publish(ev(1, 321_000));
    }
    let (last, oldest) = bus.sequences();
    assert_eq!(last, 20);
    assert_eq!(oldest, 18, "only the newest events that fit in 1 MiB stay");
    let ring = bus.ring();
    assert!(ring.bytes <= 1 << 20);
    assert_eq!(
        ring.bytes,
        ring.events.iter().map(|(_, s)| s).sum::<usize>(),
        "the byte count matches what is kept"
    );
}

#[test]
fn an_event_larger_than_the_ring_is_not_kept_and_resume_past_it_is_refused() {
    let bus = Arc::new(EventBus::new(limits(10, 1 << 20)));
    bus.publish(ev(1, 2 << 20));
    assert_eq!(bus.sequences(), (1, 2));
    assert!(matches!(
        bus.subscribe_after(0, None, EventFilter::default()),
        Err(ResumeError::TooOld {
            after: 0,
            oldest: 2
        })
    ));
    assert!(bus.subscribe_after(1, None, EventFilter::default()).is_ok());
}

#[test]
fn a_sequence_from_another_boot_is_refused() {
    let bus = Arc::new(EventBus::with_boot_id(
        limits(10, 1 << 20),
        BootId::from_u128(0xab),
    ));
    bus.publish(ev(1, 10));
    let err = bus
        .subscribe_after(500, None, EventFilter::default())
        .unwrap_err();
    assert!(matches!(
        err,
        ResumeError::NotThisBoot {
            after: 500,
            last: 1,
            oldest: 1,
            ..
        }
    ));
    assert!(
        err.to_string().contains("000000000000000000000000000000ab"),
        "{err}"
    );
}

#[test]
fn a_boot_id_of_another_run_is_refused() {
    let bus = Arc::new(EventBus::with_boot_id(
        limits(10, 1 << 20),
        BootId::from_u128(1),
    ));
    bus.publish(ev(1, 10));
    let err = bus
        .subscribe_after(1, Some(BootId::from_u128(2)), EventFilter::default())
        .unwrap_err();
    assert!(
        matches!(err, ResumeError::OtherBoot { oldest: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("oldest available is 1"), "{err}");
    assert!(
        bus.subscribe_after(1, Some(BootId::from_u128(1)), EventFilter::default())
            .is_ok()
    );
}

#[tokio::test]
async fn every_event_carries_the_boot_id_and_boots_differ() {
    let a = EventBus::new(limits(10, 1 << 20));
    let b = EventBus::new(limits(10, 1 << 20));
    assert_ne!(a.boot_id(), b.boot_id());
    let mut sub = a.subscribe(EventFilter::default());
    a.publish(ev(1, 1));
    a.publish(EventBody::Draining);
    for _ in 0..2 {
        assert_eq!(sub.next().await.unwrap().boot_id, a.boot_id());
    }
    let id = a.boot_id().to_string();
    assert_eq!(id.len(), 32);
    assert_eq!(id.parse::<BootId>().unwrap(), a.boot_id());
}

#[test]
fn resume_races_with_publishers_without_gap_or_duplicate() {
    const PER_THREAD: u64 = 20_000;
    let bus = Arc::new(EventBus::new(limits(100_000, 1 << 30)));
    let publishers: Vec<_> = (0..2)
        .map(|_| {
            let bus = bus.clone();
            std::thread::spawn(move || {
                for _ in 0..PER_THREAD {
                    bus.publish(ev(1, 1));
                }
            })
        })
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    for _ in 0..50 {
        let (last, _) = bus.sequences();
        let after = last.saturating_sub(50);
        let mut sub = bus
            .subscribe_after(after, None, EventFilter::default())
            .unwrap();
        // Every sequence up to the total is published eventually, so this never waits forever.
        let n = (2 * PER_THREAD - after).min(100) as usize;
        let got = rt.block_on(take(&mut sub, n));
        let want: Vec<u64> = (after + 1..=after + n as u64).collect();
        assert_eq!(got, want);
    }
    for p in publishers {
        p.join().unwrap();
    }
}
