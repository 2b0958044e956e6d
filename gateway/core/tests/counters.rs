//! The core's counters for the metrics: traffic in and out, layer switches, and the NACKs
//! subscribers send (from str0m's stats events, so only with `stats_interval`); and the
//! `ConnectionQualityChanged` event of a lossy subscriber.

mod support;

use std::time::Duration;

use support::*;
use switchboard_core::*;
use switchboard_testpeer::Publish;

/// A publisher of video and a subscriber whose link loses 5 % each way for 6 s.
fn lossy_call(stats_interval: Option<Duration>) -> (Counters, Vec<EventKind>) {
    let mut net = Net::with_config(SfuConfig {
        stats_interval,
        ..config()
    });
    let room = net.room("counted");
    let a = net.join(
        &room,
        "alice",
        Publish {
            video: true,
            ..Default::default()
        },
    );
    let b = net.join(&room, "bob", Publish::default());
    net.run_until(Duration::from_secs(5), "video flows", |n| {
        n.min_frames(b, a) >= 10
    });
    net.peers[b].loss_every = Some(20);
    net.run_for(Duration::from_secs(6));
    let bob = net.peers[b].session.clone();
    let events = net.events_of(&bob).into_iter().cloned().collect();
    (net.sfu.counters(), events)
}

fn qualities(events: &[EventKind]) -> Vec<(ConnectionQuality, ConnectionQuality)> {
    events
        .iter()
        .filter_map(|e| match e {
            EventKind::ConnectionQualityChanged {
                quality, previous, ..
            } => Some((*previous, *quality)),
            _ => None,
        })
        .collect()
}

#[test]
fn counters_show_traffic_layer_starts_and_the_nacks_of_a_lossy_subscriber() {
    let (c, events) = lossy_call(Some(Duration::from_millis(500)));
    assert!(
        c.datagrams_in > 100 && c.bytes_in > c.datagrams_in * 10,
        "{c:?}"
    );
    assert!(
        c.datagrams_out > 100 && c.bytes_out > c.datagrams_out * 10,
        "{c:?}"
    );
    assert!(c.rtp_forwarded > 150, "{c:?}");
    assert_eq!(c.layer_switches, 1, "bob's video started once: {c:?}");
    assert!(c.nacks_received > 0, "bob asked for what he lost: {c:?}");
    assert_eq!(c.nacks_sent, 0, "alice's uplink is clean: {c:?}");
    // 5 % of bob's datagrams are lost each way: his quality drops from Excellent, once.
    let q = qualities(&events);
    assert!(
        matches!(q.first(), Some((ConnectionQuality::Excellent, worse)) if *worse >= ConnectionQuality::Good),
        "bob's quality dropped: {q:?}"
    );
}

#[test]
fn without_stats_events_nacks_are_not_counted() {
    let (c, events) = lossy_call(None);
    assert!(c.rtp_forwarded > 150, "{c:?}");
    assert_eq!((c.nacks_received, c.plis_received), (0, 0), "{c:?}");
    assert_eq!(qualities(&events), vec![], "no quality without statistics");
}
