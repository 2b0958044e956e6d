//! Real browsers through the real binary: the demo with headless Chromium (driven by
//! `clients/web/test/*.mjs` with playwright-core).
//!
//! These tests need Chromium, Node and `npm ci` in `clients/web/test`; the README's test command
//! installs them. They must run in a network namespace that has only `lo` (the test command does
//! that), so they refuse to run anywhere else rather than let a browser touch a real network.

mod common;

use common::{
    assert_firefox, assert_loopback_only_namespace, assert_tools, repo, run_demo_script, run_node,
    serial, start_gateway,
};

#[test]
fn three_chromium_pages_hold_a_call_through_the_demo() {
    let _one_at_a_time = serial();
    assert_loopback_only_namespace();
    assert_tools();
    let gw = start_gateway();
    let shots = repo().join("target/e2e");
    std::fs::create_dir_all(&shots).unwrap();
    let shot = shots.join("demo-three-pages.png");
    run_node("three-pages.mjs", &[&gw.demo_url, shot.to_str().unwrap()]);
    assert!(
        shot.exists(),
        "a screenshot of the call was written to {}",
        shot.display()
    );
}

#[test]
fn firefox_and_chromium_share_a_call_through_the_demo() {
    assert_firefox();
    run_demo_script("firefox-chromium.mjs", &[]);
}

#[test]
fn a_chromium_page_without_udp_candidates_connects_over_ice_tcp() {
    run_demo_script("tcp-only.mjs", &[]);
}

#[test]
fn a_firefox_page_without_udp_candidates_connects_over_ice_tcp() {
    assert_firefox();
    run_demo_script("tcp-only.mjs", &["firefox"]);
}

#[test]
fn chromium_simulcast_follows_the_layer_preference_then_shares_a_screen_and_restarts_ice() {
    run_demo_script("simulcast.mjs", &[]);
}

#[test]
fn chromium_recycles_m_lines_the_gateway_stopped_when_tracks_left() {
    run_demo_script("mline-reuse.mjs", &[]);
}

/// Issue #15.4 with a real browser: one viewer page stays while 50 publisher pages join (their
/// audio and video received) and leave; the viewer's remote and local descriptions keep its own
/// 3 m-lines (camera, microphone, data channel) + 2, because the gateway's offers put each new
/// publisher's Tracks into the slots the previous one's left stopped.
#[test]
fn chromium_viewer_keeps_its_m_lines_bounded_through_fifty_join_leave_cycles() {
    run_demo_script("mline-cycles.mjs", &[]);
}
