//! DTLS client certificates with RSA keys, from a real stack, through the real gateway: aiortc
//! Peers (OpenSSL via pyOpenSSL) holding an RSA certificate, driven by a Python backend over the
//! gRPC API (clients/python/tests/aiortc_rsa.py). The gateway answers `a=setup:passive`, so the
//! Peer's certificate is the DTLS client certificate: RSA keys of 2048 bits or more are accepted
//! (patched dimpl, third_party/README.md), smaller ones are refused and the Session ends.
//!
//! Runs only inside a network namespace with just `lo` (the README's test command makes one);
//! needs the Python venv and stubs that `scripts/test.sh` sets up.

mod common;

use std::process::{Command, Stdio};

use common::{python, repo};
use switchboard_gateway::{Config, Gateway};
use switchboard_integration_tests::test_config;

/// The close reason a Session gets when its Peer's RSA key is too small: the core closes it as
/// soon as the DTLS handshake fails (issue-notes "RSA certificates"), not at the connect timeout.
const WEAK_KEY_CLOSE_REASON: &str = "SESSION_CLOSE_REASON_PEER_ERROR";

fn config() -> Config {
    let mut c = test_config();
    // Longer than the test's own bound: a refused Peer must be closed by the failed handshake
    // (PEER_ERROR), never by this timeout.
    c.sessions.connect_timeout_secs = 120;
    c
}

/// Runs `aiortc_rsa.py GATEWAY MODE` (bounded by `timeout`), returning its stdout; panics with
/// its output if it fails.
async fn aiortc_rsa(gw: &Gateway, mode: &str) -> String {
    let mut cmd = Command::new("timeout");
    cmd.arg("90")
        .arg(python())
        .arg(repo().join("clients/python/tests/aiortc_rsa.py"))
        .arg(gw.grpc_addr().to_string())
        .arg(mode)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("start aiortc_rsa.py");
    common::stdout_of(child, &format!("aiortc_rsa.py {mode}")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_with_an_rsa_2048_certificate_exchanges_media_and_data() {
    common::assert_loopback_only_namespace();
    let gw = Gateway::start(config()).await.unwrap();
    let out = aiortc_rsa(&gw, "accept").await;
    assert!(out.contains("OK frames rita="), "{out}");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_with_an_rsa_1024_certificate_is_refused_and_its_session_closes() {
    common::assert_loopback_only_namespace();
    let gw = Gateway::start(config()).await.unwrap();
    let out = aiortc_rsa(&gw, "refuse").await;
    let line = out
        .lines()
        .find(|l| l.starts_with("CLOSED "))
        .unwrap_or_else(|| panic!("no CLOSED line: {out}"));
    assert!(
        line.contains(&format!("reason={WEAK_KEY_CLOSE_REASON} ")),
        "{line}"
    );
    // The Peer learns it was refused, and why: a fatal insufficient_security alert (the key
    // size), not handshake_failure (no usable certificate) and not a silent timeout.
    assert!(line.contains("dtls=failed"), "{line}");
    assert!(
        line.contains("alert=71"),
        "insufficient_security expected: {line}"
    );
    gw.shutdown().await;
}
