//! A new subscriber in a group call is not starved by its initial bandwidth estimate: joining
//! four publishers whose video needs ~4 Mbit/s together, it receives every Track's frames at
//! their rate within a second and a half of simulated time, because its estimate starts from
//! what its subscriptions need (`BweConfig::max_initial_bitrate_bps`) rather than from
//! `initial_bitrate_bps`, whose shortfall the pacer would queue while the estimator ramps.

mod support;

use std::time::Duration;

use str0m::media::MediaKind;
use support::*;
use switchboard_core::*;
use switchboard_testpeer::Publish;

/// Video frame bytes of each publisher: 4000 bytes at 30 fps is ~1 Mbit/s with overhead.
const FRAME_BYTES: usize = 4000;

#[test]
fn a_subscriber_of_four_publishers_gets_every_track_at_full_rate_at_once() {
    // On the simulated network (no CPU contention, 40 ms one-way delay) the estimator ramps
    // from the default 1 Mbit/s within half a second; a 100 kbit/s start makes the starving
    // that a loaded gateway shows at 1 Mbit/s visible here.
    let mut net = Net::with_config(SfuConfig {
        bwe: BweConfig {
            initial_bitrate_bps: 100_000,
            ..Default::default()
        },
        ..config()
    });
    let room = net.room("group");
    let publishers: Vec<usize> = (0..4)
        .map(|i| {
            let p = net.join(&room, &format!("pub{i}"), av("chat"));
            net.peers[p].core.video_frame_bytes = FRAME_BYTES;
            p
        })
        .collect();
    net.run_until(
        Duration::from_secs(15),
        "the publishers see each other",
        |n| n.full_mesh(&publishers, 10),
    );
    let bob = net.join(&room, "bob", Publish::default());
    net.peers[bob].downlink = Some(Downlink::new(
        50_000_000,
        1_000_000,
        Duration::from_millis(40),
    ));
    let tracks: Vec<String> = publishers.iter().flat_map(|p| net.published(*p)).collect();
    assert_eq!(tracks.len(), 8);
    let video_frames = |n: &Net| -> Vec<u64> {
        tracks
            .iter()
            .filter_map(|t| n.peer(bob).stats.tracks.get(t))
            .filter(|s| s.kind == Some(MediaKind::Video))
            .map(|s| s.frames)
            .collect()
    };
    net.run_for(Duration::from_millis(1500));
    let got = video_frames(&net);
    // 45 frames were sent per Track since bob joined; connecting takes ~0.2 s of them.
    assert!(
        got.len() == 4 && got.iter().all(|n| *n >= 30),
        "every Track at its rate 1.5 s after joining: {got:?} frames"
    );
}
