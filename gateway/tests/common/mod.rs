//! Shared by the tests that start real clients.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The Python venv's interpreter (clients/python/.venv), after checking that it and the
/// generated gRPC stubs exist; fails loudly otherwise.
pub fn python() -> PathBuf {
    let p = repo().join("clients/python/.venv/bin/python");
    assert!(
        p.exists(),
        "the Python venv is missing: `bash scripts/test.sh` creates clients/python/.venv"
    );
    assert!(
        repo()
            .join("clients/python/gen/switchboard/v1/room_pb2.py")
            .exists(),
        "the Python stubs are missing: `bash scripts/test.sh` runs clients/python/generate.sh"
    );
    p
}

/// A fresh self-signed certificate for `names`, written as PEM to `cert_file` and `key_file` in
/// a temporary folder named after `tag` and this process; the certificate and both paths.
pub fn self_signed_files(
    names: &[&str],
    tag: &str,
    cert_file: &str,
    key_file: &str,
) -> (rcgen::Certificate, PathBuf, PathBuf) {
    let key = rcgen::KeyPair::generate().unwrap();
    let names = names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    let cert = rcgen::CertificateParams::new(names)
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let dir = std::env::temp_dir().join(format!("{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_path, key_path) = (dir.join(cert_file), dir.join(key_file));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (cert, cert_path, key_path)
}

/// Waits for `child` (off the async runtime) and returns its stdout; panics with its status, stdout
/// and stderr when it failed, naming it `what`.
pub async fn stdout_of(child: Child, what: &str) -> String {
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{what} failed ({})\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Fails loudly unless this process sees only the loopback interface: WebRTC clients run only in
/// a network namespace with just `lo` (the README's test command makes one).
pub fn assert_loopback_only_namespace() {
    let dev = std::fs::read_to_string("/proc/self/net/dev").expect("read /proc/self/net/dev");
    let ifaces: Vec<&str> = dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next().map(str::trim))
        .collect();
    assert_eq!(
        ifaces,
        ["lo"],
        "real-client tests run only in a network namespace with just `lo`: use `bash scripts/test.sh`"
    );
}

/// Browser tests run one at a time: several browsers at once on a 2-core machine make timing
/// noise, not coverage.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Holds the one-browser-test-at-a-time lock (a failed test does not poison it for the others).
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Fails loudly unless Chromium and playwright-core are installed.
pub fn assert_tools() {
    assert_browser(
        "Chromium",
        "CHROMIUM",
        "/usr/bin/chromium",
        "chromium",
        "playwright-core",
    );
}

/// Fails loudly unless `name` (at `$var`, else `default`; Debian package `apt`) and the npm
/// package `npm` of `clients/web/test` are installed.
fn assert_browser(name: &str, var: &str, default: &str, apt: &str, npm: &str) {
    let bin = std::env::var(var).unwrap_or_else(|_| default.into());
    assert!(
        Path::new(&bin).exists(),
        "{name} not found at {bin}: `bash scripts/test.sh` installs it (apt-get install {apt})"
    );
    assert!(
        repo()
            .join("clients/web/test/node_modules")
            .join(npm)
            .exists(),
        "{npm} missing: `bash scripts/test.sh` runs `npm ci` in clients/web/test"
    );
}

/// The `switchboard` binary, running with its demo; stopped with SIGTERM on drop.
pub struct Gateway {
    child: Child,
    /// The demo's base URL, without a trailing slash.
    pub demo_url: String,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// Starts the binary as the demo runs it (embedded TURN on), on free loopback ports.
pub fn start_gateway() -> Gateway {
    start_gateway_with(&[], &[])
}

/// Starts the binary on free loopback ports for gRPC, media, TURN and the demo, with more
/// settings (`SWITCHBOARD__…` variables, later ones win) and arguments.
pub fn start_gateway_with(env: &[(&str, &str)], args: &[&str]) -> Gateway {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchboard"));
    cmd.env("SWITCHBOARD__GRPC__LISTEN", "127.0.0.1:0")
        .env("SWITCHBOARD__ADMIN__LISTEN", "127.0.0.1:0")
        .env("SWITCHBOARD__MEDIA__PORT_BASE", "0")
        .env("SWITCHBOARD__MEDIA__TCP_PORT_BASE", "0")
        .env("SWITCHBOARD__TURN__LISTEN_UDP", "127.0.0.1:0")
        .env("SWITCHBOARD__TURN__LISTEN_TCP", "127.0.0.1:0")
        .env("SWITCHBOARD__DEMO__LISTEN", "127.0.0.1:0");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .args(args)
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

/// Runs one of `clients/web/test/*.mjs` with Node; panics unless it exits 0 within 180 s.
pub fn run_node(script: &str, args: &[&str]) {
    run_node_with(script, args, &[]);
}

/// [`run_node`] with more environment variables for the script.
pub fn run_node_with(script: &str, args: &[&str], env: &[(&str, &str)]) {
    let dir = repo().join("clients/web/test");
    let mut child = Command::new("node")
        .arg(dir.join(script))
        .args(args)
        .envs(env.iter().copied())
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

/// A browser test of the demo: one at a time, only inside a lo-only namespace, with the tools
/// checked; starts the binary and runs `clients/web/test/<script>` with the demo URL and `extra`.
pub fn run_demo_script(script: &str, extra: &[&str]) {
    let _one_at_a_time = serial();
    assert_loopback_only_namespace();
    assert_tools();
    let gw = start_gateway();
    let mut args = vec![gw.demo_url.as_str()];
    args.extend_from_slice(extra);
    run_node(script, &args);
}

/// Fails loudly unless Firefox ESR and puppeteer-core are installed.
pub fn assert_firefox() {
    assert_browser(
        "Firefox ESR",
        "FIREFOX",
        "/usr/bin/firefox-esr",
        "firefox-esr",
        "puppeteer-core",
    );
}

/// coturn (`turnserver` at `bin`) as the interop tests run it: shared-secret credentials
/// (`secret`, realm `test.local`) on 127.0.0.1:`port` (UDP and TCP), relaying on 127.0.0.1 to
/// loopback Peers, no TLS, DTLS or CLI, logging to stdout; `extra` adds arguments (e.g. a relay
/// port range). The issue notes give the same command line.
pub fn coturn_command(bin: &Path, port: u16, secret: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args([
        "-n",
        "--listening-ip=127.0.0.1",
        &format!("--listening-port={port}"),
        "--relay-ip=127.0.0.1",
        "--use-auth-secret",
        &format!("--static-auth-secret={secret}"),
        "--realm=test.local",
        "--allow-loopback-peers",
        "--no-cli",
        "--no-tls",
        "--no-dtls",
        "--log-file=stdout",
    ])
    .args(extra);
    cmd
}
