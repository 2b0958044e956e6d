//! Chromium forced through TURN relays into the real binary (`clients/web/test/relay.mjs`):
//! the embedded TURN server over UDP, TCP and TLS, and a Debian coturn that shares the gateway's
//! secret (coturn's `use-auth-secret` scheme). Each run also checks that good credentials get a
//! relayed candidate and that wrong or expired ones are refused with 401.
//!
//! Like the other browser tests these need Chromium, Node and `npm ci` in `clients/web/test`,
//! and coturn (`turnserver`) for the last one; the README's test command installs them. They
//! refuse to run outside a network namespace that has only `lo`.

mod common;

use std::net::{TcpListener, UdpSocket};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{
    assert_loopback_only_namespace, assert_tools, coturn_command, run_node, run_node_with, serial,
    start_gateway_with,
};

const SECRET: &str = "relay-test-secret";

#[test]
fn chromium_relays_through_the_embedded_turn_over_udp_tcp_and_tls() {
    let _one_at_a_time = serial();
    assert_loopback_only_namespace();
    assert_tools();
    // A certificate for TURN over TLS (turns:). Chromium is told to accept it: a test cannot get
    // a publicly trusted one.
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let dir = std::env::temp_dir().join(format!("sb-relay-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();

    let gw = start_gateway_with(
        &[
            ("SWITCHBOARD__TURN__ENABLED", "true"),
            ("SWITCHBOARD__TURN__PUBLIC_HOST", "127.0.0.1"),
            ("SWITCHBOARD__TURN__SECRET", SECRET),
            ("SWITCHBOARD__TURN__LISTEN_TLS", "127.0.0.1:0"),
            ("SWITCHBOARD__TURN__TLS_CERT", cert_path.to_str().unwrap()),
            ("SWITCHBOARD__TURN__TLS_KEY", key_path.to_str().unwrap()),
        ],
        &[],
    );
    run_node("relay.mjs", &[&gw.demo_url, "udp", SECRET, "relay-udp"]);
    run_node("relay.mjs", &[&gw.demo_url, "tcp", SECRET, "relay-tcp"]);
    run_node_with(
        "relay.mjs",
        &[&gw.demo_url, "tls", SECRET, "relay-tls"],
        &[("CHROMIUM_EXTRA_ARGS", "--ignore-certificate-errors")],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// coturn, stopped on drop.
struct Coturn(Child);

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port free for both UDP and TCP on 127.0.0.1 (coturn listens on both).
fn free_port() -> u16 {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both UDP and TCP");
}

#[test]
fn chromium_relays_through_coturn_with_the_shared_secret() {
    let _one_at_a_time = serial();
    assert_loopback_only_namespace();
    assert_tools();
    let turnserver = std::env::var("TURNSERVER").unwrap_or_else(|_| "/usr/bin/turnserver".into());
    assert!(
        Path::new(&turnserver).exists(),
        "coturn not found at {turnserver}: `bash scripts/test.sh` installs it (apt-get install coturn)"
    );
    let port = free_port();
    let coturn_secret = "coturn-shared-secret";
    let child = coturn_command(
        Path::new(&turnserver),
        port,
        coturn_secret,
        &["--simple-log"],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::inherit())
    .spawn()
    .expect("start coturn");
    let _coturn = Coturn(child);
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "coturn did not listen on 127.0.0.1:{port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // The gateway hands out coturn (and only coturn) with credentials it mints from the secret.
    let dir = std::env::temp_dir().join(format!("sb-coturn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("switchboard.toml");
    std::fs::write(
        &config,
        format!(
            r#"[[ice_servers]]
urls = ["turn:127.0.0.1:{port}?transport=udp", "turn:127.0.0.1:{port}?transport=tcp"]
shared_secret = "{coturn_secret}"
"#
        ),
    )
    .unwrap();
    let gw = start_gateway_with(
        &[("SWITCHBOARD__TURN__ENABLED", "false")],
        &["--config", config.to_str().unwrap()],
    );
    run_node("relay.mjs", &[&gw.demo_url, "udp", coturn_secret, "coturn"]);
    let _ = std::fs::remove_dir_all(&dir);
}
