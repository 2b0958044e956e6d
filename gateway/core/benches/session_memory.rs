//! Heap per receiving Session, with a counting global allocator (not a timing): one publisher of
//! Opus + VP8 (~1.4 Mbit/s, five packets per frame) and N subscribers in the simulated network of
//! the core tests, run for a few simulated seconds, under several RTX cache settings
//! (`SfuConfig::rtx_cache_packets` / `rtx_cache_max_age`, the `sessions.rtx_cache_*` keys).
//!
//! The figure includes the subscribers' own test Peers (str0m receivers), identical in every
//! row, so the difference between rows is what the gateway's send-side cache costs.
//!
//! Run: `cargo bench -p switchboard-core --bench session_memory` (argument: subscribers, default
//! 10). See BENCHMARKS.md.

#[path = "../tests/support/mod.rs"]
mod support;

use std::alloc::System;
use std::time::Duration;

use cap::Cap;
use support::*;
use switchboard_core::SfuConfig;
use switchboard_testpeer::Publish;

/// Counts the bytes currently allocated (no limit).
#[global_allocator]
static ALLOC: Cap<System> = Cap::new(System, usize::MAX);

/// Frame bytes of the publisher's video: five RTP packets per frame at 30 fps.
const FRAME_BYTES: usize = 6000;

/// Live heap (bytes) per subscriber after `secs` of media, and with the publisher alone.
fn run(n: usize, packets: usize, age: Duration, secs: u64) -> (f64, isize) {
    let mut net = Net::with_config(SfuConfig {
        rtx_cache_packets: packets,
        rtx_cache_max_age: age,
        ..config()
    });
    let room = net.room("memory");
    let a = net.join(&room, "alice", av("chat"));
    net.peers[a].core.video_frame_bytes = FRAME_BYTES;
    net.run_for(Duration::from_secs(2));
    let alone = ALLOC.allocated() as isize;
    let subs: Vec<usize> = (0..n)
        .map(|i| net.join(&room, &format!("sub{i}"), Publish::default()))
        .collect();
    net.run_until(
        Duration::from_secs(15),
        "every subscriber gets media",
        |n| subs.iter().all(|s| n.min_frames(*s, a) >= 10),
    );
    net.run_for(Duration::from_secs(secs));
    let live = ALLOC.allocated() as isize;
    ((live - alone) as f64 / n as f64, alone)
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(10);
    println!("subscribers: {n}; heap per receiving Session (gateway Session + its test Peer)");
    println!("| rtx_cache_packets | rtx_cache_max_age_ms | KiB per subscriber |");
    println!("|---:|---:|---:|");
    for (packets, age_ms) in [(512, 3000), (512, 1000), (256, 1000), (128, 500), (1, 1)] {
        let (per, _) = run(n, packets, Duration::from_millis(age_ms), 5);
        println!("| {packets} | {age_ms} | {:.0} |", per / 1024.0);
    }
}
