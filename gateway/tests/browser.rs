//! Real browsers through the real binary: the demo with headless Chromium (driven by
//! `clients/web/test/*.mjs` with playwright-core).
//!
//! These tests need Chromium, Node and `npm ci` in `clients/web/test`; the README's test command
//! installs them. They must run in a network namespace that has only `lo` (the test command does
//! that), so they refuse to run anywhere else rather than let a browser touch a real network.

use std::io::{BufRead, BufReader};
mod common;

use std::path::Path;

use common::{assert_loopback_only_namespace, repo};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Browser tests run one at a time: several browsers at once on a 2-core machine make timing
/// noise, not coverage.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn assert_tools() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "Chromium not found at {chromium}: `bash scripts/test.sh` installs it (apt-get install chromium)"
    );
    assert!(
        repo()
            .join("clients/web/test/node_modules/playwright-core")
            .exists(),
        "playwright-core missing: `bash scripts/test.sh` runs `npm ci` in clients/web/test"
    );
}

struct Gateway {
    child: Child,
    demo_url: String,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn start_gateway() -> Gateway {
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .env("SWITCHBOARD__GRPC__LISTEN", "127.0.0.1:0")
        .env("SWITCHBOARD__MEDIA__PORT_BASE", "0")
        .env("SWITCHBOARD__MEDIA__TCP_PORT_BASE", "0")
        .env("SWITCHBOARD__DEMO__LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the switchboard binary");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut demo_url = None;
    while demo_url.is_none() {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the binary prints the demo URL");
        if line.starts_with("Demo:") {
            demo_url = line
                .split_whitespace()
                .find(|w| w.starts_with("http://"))
                .map(|u| u.trim_end_matches('/').to_string());
        }
    }
    Gateway {
        child,
        demo_url: demo_url.unwrap(),
    }
}

fn run_node(script: &str, args: &[&str]) {
    let dir = repo().join("clients/web/test");
    let mut child = Command::new("node")
        .arg(dir.join(script))
        .args(args)
        .current_dir(&dir)
        .spawn()
        .expect("node is installed (`bash scripts/test.sh` installs it)");
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(180) {
            let _ = child.kill();
            panic!("{script} did not finish within 180 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{script} failed: {status}");
}

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
