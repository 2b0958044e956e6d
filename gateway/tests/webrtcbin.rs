//! GStreamer webrtcbin (libnice ICE, OpenSSL DTLS with webrtcbin's default RSA-2048 certificate)
//! through the real gateway, in one Room with an aiortc Peer; each Peer has its own small Python
//! backend on the gRPC API (clients/gstreamer/webrtcbin_peer.py, clients/gstreamer/aiortc_peer.py).
//!
//! Checked: webrtcbin connects with its RSA certificate, its VP8 and Opus reach the
//! aiortc Peer, the aiortc Peer's video and audio reach webrtcbin within 10 s of connecting, and
//! data-channel messages go both ways, and:
//!
//! - liveness (#15.3): libnice keeps the pair alive with Binding Indications only, no consent
//!   requests; the gateway counts authenticated traffic on the selected pair (the str0m patch in
//!   third_party/), so webrtcbin stays connected for the whole 24 s run (it was dropped at 15 s).
//! - Opus before RED (#15.5): webrtcbin answers Opus to every audio m-line the gateway offers
//!   (with an aiortc publisher the offer has no RED; the codec order itself is asserted in the
//!   core's negotiation tests).
//!
//! Runs only inside a network namespace with just `lo` (the README's test command makes one);
//! needs Debian's GStreamer packages, clients/gstreamer/.venv and the Python venv and stubs that
//! `scripts/test.sh` sets up.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::repo;
use switchboard_gateway::Gateway;
use switchboard_integration_tests::test_config;

/// How long each Peer stays in the Room (longer than the 15 s after which a Peer that sends no
/// consent requests used to be dropped).
const SECONDS: &str = "24";

fn interpreter(venv: &str, what: &str) -> PathBuf {
    let p = repo().join(venv).join("bin/python");
    assert!(
        p.exists(),
        "{what} is missing ({}): `bash scripts/test.sh` creates it",
        p.display()
    );
    p
}

/// Starts `script GATEWAY ROOM PARTICIPANT SECONDS` with `python`, bounded by `timeout`.
fn start(python: PathBuf, script: &str, gw: &Gateway, name: &str) -> std::process::Child {
    Command::new("timeout")
        .arg("90")
        .arg(python)
        .arg(repo().join(script))
        .arg(gw.grpc_addr().to_string())
        .arg("webrtcbin")
        .arg(name)
        .arg(SECONDS)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {script}: {e}"))
}

/// Waits for `child`; its `name=value` lines, or a panic with its output if it failed.
async fn finish(child: std::process::Child, what: &str) -> HashMap<String, String> {
    let stdout = common::stdout_of(child, what).await;
    eprintln!("{what}:\n{stdout}");
    stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn number(values: &HashMap<String, String>, key: &str) -> u64 {
    values
        .get(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no number {key} in {values:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webrtcbin_with_its_rsa_certificate_exchanges_media_with_aiortc() {
    common::assert_loopback_only_namespace();
    assert!(
        Command::new("gst-inspect-1.0")
            .arg("webrtcbin")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success()),
        "GStreamer webrtcbin is missing: `bash scripts/test.sh` installs gstreamer1.0-plugins-bad"
    );
    let gw = Gateway::start(test_config()).await.unwrap();
    let gst = start(
        interpreter("clients/gstreamer/.venv", "the GStreamer Python venv"),
        "clients/gstreamer/webrtcbin_peer.py",
        &gw,
        "gus",
    );
    let aio = start(
        interpreter("clients/python/.venv", "the Python venv"),
        "clients/gstreamer/aiortc_peer.py",
        &gw,
        "aio",
    );
    let (gst, aio) = (
        finish(gst, "webrtcbin_peer.py").await,
        finish(aio, "aiortc_peer.py").await,
    );

    // webrtcbin's certificate is RSA, so these prove the gateway takes RSA client certificates.
    assert_eq!(gst["dtls_key"], "RSA", "{gst:?}");
    assert_eq!(gst["connected"], "True", "{gst:?}");
    assert_eq!(number(&gst, "errors"), 0, "{gst:?}");
    // The gateway to webrtcbin: the aiortc Peer's video and audio, within 10 s of connecting.
    assert!(number(&gst, "rtp_10s_video") >= 50, "{gst:?}");
    assert!(number(&gst, "rtp_10s_audio") >= 50, "{gst:?}");
    // webrtcbin to the gateway: its VP8 and Opus, decoded by the aiortc Peer.
    assert!(number(&aio, "frames_video") >= 50, "{aio:?}");
    assert!(number(&aio, "frames_audio") >= 50, "{aio:?}");
    // Data channels both ways (each side sends one message a second once its channel is open).
    assert!(number(&gst, "messages_from_aiortc") >= 3, "{gst:?}");
    assert!(number(&aio, "messages_from_webrtcbin") >= 3, "{aio:?}");
    // Liveness without consent requests: never disconnected, never closed, over 24 s.
    assert_eq!(gst["disconnected_after"], "never", "{gst:?}");
    assert_eq!(gst["closed"], "no", "{gst:?}");
    // Every audio m-line webrtcbin answered starts with Opus (not RED alone).
    let answers = &gst["answer_audio_codecs"];
    assert!(
        answers != "none"
            && answers.split(',').all(|m| m
                .split('/')
                .next()
                .is_some_and(|c| c.eq_ignore_ascii_case("opus"))),
        "{gst:?}"
    );
    gw.shutdown().await;
}
