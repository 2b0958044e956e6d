//! werift (a pure TypeScript WebRTC stack: its own ICE, DTLS, SRTP and JSEP) through the real
//! gateway, driven by its own Node backend on the gRPC API (`clients/node/werift-cycles.mjs`).
//!
//! A werift watcher joins a Room with a werift publisher that stays, then five more werift
//! publishers join and leave one after the other. Checked: the watcher connects, receives audio
//! and video RTP from every publisher, and answers every offer of the gateway, including those
//! that stop a leaving publisher's m-lines and those that put the next publisher into the
//! stopped slots (#15.4: werift 0.24 failed `createAnswer` on a stopped m-line followed by a new
//! one, so this needs the gateway's recycling), and its m-line count stays at the concurrent
//! Tracks.
//!
//! Runs only inside a network namespace with just `lo` (the README's test command makes one);
//! needs Node and `npm ci` in `clients/node`.

mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};

use common::repo;
use switchboard_gateway::Gateway;
use switchboard_integration_tests::test_config;

/// Publishers that join and leave after the staying one.
const CYCLES: usize = 5;

fn pair(values: &HashMap<String, String>, key: &str) -> (u64, u64) {
    values
        .get(key)
        .and_then(|v| v.split_once(','))
        .and_then(|(a, v)| Some((a.parse().ok()?, v.parse().ok()?)))
        .unwrap_or_else(|| panic!("no audio,video counts {key} in {values:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn werift_answers_every_offer_through_publisher_join_leave_cycles() {
    common::assert_loopback_only_namespace();
    assert!(
        repo().join("clients/node/node_modules/werift").exists(),
        "werift missing: `bash scripts/test.sh` runs `npm ci` in clients/node"
    );
    let gw = Gateway::start(test_config()).await.unwrap();
    let child = Command::new("timeout")
        .arg("120")
        .arg("node")
        .arg(repo().join("clients/node/werift-cycles.mjs"))
        .arg(gw.grpc_addr().to_string())
        .arg(CYCLES.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node is installed (`bash scripts/test.sh` installs it)");
    let stdout = common::stdout_of(child, "werift-cycles.mjs").await;
    eprintln!("werift-cycles.mjs:\n{stdout}");
    let values: HashMap<String, String> = stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();

    assert_eq!(values["connected"], "true", "{values:?}");
    // RTP from the staying publisher (before and after the cycles) and from every cycle's one.
    for key in ["rtp_stay", "rtp_stay_after"]
        .into_iter()
        .map(String::from)
        .chain((0..CYCLES).map(|i| format!("rtp_cycle_{i}")))
    {
        let (audio, video) = pair(&values, &key);
        assert!(audio >= 10 && video >= 10, "{key}: {values:?}");
    }
    // Every offer answered: one for the staying publisher, two (join, leave) per cycle.
    let offers: usize = values["offers"].parse().unwrap();
    assert!(offers > 2 * CYCLES, "{values:?}");
    assert_eq!(values["answered"], offers.to_string(), "{values:?}");
    assert_eq!(values["errors"], "0", "{values:?}");
    // The watcher's m-lines after each cycle: its own 2, the staying publisher's 2, and the 2
    // slots the cycling publishers reuse.
    let mlines: Vec<&str> = values["mlines"].split(',').collect();
    assert_eq!(mlines, vec!["6"; CYCLES], "{values:?}");
    // Each cycle's publisher got its own two mids (a recycled slot takes a new mid).
    let mids: std::collections::HashSet<&str> = (0..CYCLES)
        .flat_map(|i| values[&format!("mids_cycle_{i}")].split(','))
        .collect();
    assert_eq!(mids.len(), 2 * CYCLES, "{values:?}");
    gw.shutdown().await;
}
