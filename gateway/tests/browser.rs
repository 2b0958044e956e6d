//! Real browsers through the real binary: the demo with headless Chromium (driven by
//! `clients/web/test/*.mjs` with playwright-core).
//!
//! These tests need Chromium, Node and `npm ci` in `clients/web/test`; the README's test command
//! installs them. They must run in a network namespace that has only `lo` (the test command does
//! that), so they refuse to run anywhere else rather than let a browser touch a real network.

mod common;

use std::path::Path;

use common::{assert_loopback_only_namespace, assert_tools, repo, run_node, serial, start_gateway};

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
    let _one_at_a_time = serial();
    assert_loopback_only_namespace();
    assert_tools();
    let firefox = std::env::var("FIREFOX").unwrap_or_else(|_| "/usr/bin/firefox-esr".into());
    assert!(
        Path::new(&firefox).exists(),
        "Firefox ESR not found at {firefox}: `bash scripts/test.sh` installs it (apt-get install firefox-esr)"
    );
    assert!(
        repo()
            .join("clients/web/test/node_modules/puppeteer-core")
            .exists(),
        "puppeteer-core missing: `bash scripts/test.sh` runs `npm ci` in clients/web/test"
    );
    let gw = start_gateway();
    run_node("firefox-chromium.mjs", &[&gw.demo_url]);
}

#[test]
fn a_chromium_page_without_udp_candidates_connects_over_ice_tcp() {
    let _one_at_a_time = serial();
    assert_loopback_only_namespace();
    assert_tools();
    let gw = start_gateway();
    run_node("tcp-only.mjs", &[&gw.demo_url]);
}

#[test]
fn a_firefox_page_without_udp_candidates_connects_over_ice_tcp() {
    let _one_at_a_time = serial();
    assert_loopback_only_namespace();
    assert_tools();
    let firefox = std::env::var("FIREFOX").unwrap_or_else(|_| "/usr/bin/firefox-esr".into());
    assert!(
        Path::new(&firefox).exists(),
        "Firefox ESR not found at {firefox}: `bash scripts/test.sh` installs it (apt-get install firefox-esr)"
    );
    let gw = start_gateway();
    run_node("tcp-only.mjs", &[&gw.demo_url, "firefox"]);
}

#[test]
fn chromium_simulcast_follows_the_layer_preference_then_shares_a_screen_and_restarts_ice() {
    let _one_at_a_time = serial();
    assert_loopback_only_namespace();
    assert_tools();
    let gw = start_gateway();
    run_node("simulcast.mjs", &[&gw.demo_url]);
}

#[test]
fn chromium_recycles_m_lines_the_gateway_stopped_when_tracks_left() {
    let _one_at_a_time = serial();
    assert_loopback_only_namespace();
    assert_tools();
    let gw = start_gateway();
    run_node("mline-reuse.mjs", &[&gw.demo_url]);
}
