//! Backends and Peers in other languages against the real gateway: the Python and Node examples
//! (generated stubs / @grpc/grpc-js), and two aiortc Peers (an independent WebRTC stack) driven by
//! a Python backend. The README's test command installs Python, Node and their packages and
//! generates the Python stubs; these tests fail loudly when something is missing.

mod common;

use common::{python, repo};
use std::process::Command;
use std::time::Instant;

use switchboard_gateway::Gateway;
use switchboard_integration_tests::test_config;

/// Runs a command to completion (bounded), returning its stdout; panics with its output if it
/// fails.
async fn run(mut cmd: Command, what: &str) -> String {
    let start = Instant::now();
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{what} failed ({}) after {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status,
        start.elapsed()
    );
    stdout
}

/// `timeout SECS program args…`: every external run is bounded.
fn bounded(secs: u64, program: impl AsRef<std::ffi::OsStr>, args: &[&std::ffi::OsStr]) -> Command {
    let mut c = Command::new("timeout");
    c.arg(secs.to_string()).arg(program).args(args);
    c
}

/// Starts a gateway, runs `program script GATEWAY_ADDR` (the script relative to the repository
/// root) for at most `secs`, stops the gateway and returns the script's stdout.
async fn run_against_a_gateway(
    program: impl AsRef<std::ffi::OsStr>,
    script: &str,
    secs: u64,
) -> String {
    let gw = Gateway::start(test_config()).await.unwrap();
    let (path, addr) = (repo().join(script), gw.grpc_addr().to_string());
    let out = run(
        bounded(secs, program, &[path.as_os_str(), addr.as_ref()]),
        script,
    )
    .await;
    gw.shutdown().await;
    out
}

#[tokio::test]
async fn the_python_example_runs() {
    let out = run_against_a_gateway(python(), "clients/python/example.py", 60).await;
    assert!(out.trim_end().ends_with("OK"), "{out}");
}

#[tokio::test]
async fn the_node_example_runs() {
    assert!(
        repo()
            .join("clients/node/node_modules/@grpc/grpc-js")
            .exists(),
        "@grpc/grpc-js missing: `bash scripts/test.sh` runs `npm ci` in clients/node"
    );
    let out = run_against_a_gateway("node", "clients/node/example.mjs", 60).await;
    assert!(out.trim_end().ends_with("OK"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_peers_publish_subscribe_and_exchange_data() {
    // WebRTC: only inside a namespace that has just `lo` (the test command makes one).
    common::assert_loopback_only_namespace();
    let out = run_against_a_gateway(python(), "clients/python/tests/aiortc_call.py", 90).await;
    assert!(out.contains("OK frames"), "{out}");
}
