//! Configuration: precedence of defaults < file < environment, and rejection of bad values with
//! the key named.

use std::io::Write;

use switchboard_gateway::Config;
use switchboard_gateway::config::LogFormat;

fn file(contents: &str) -> tempfile_lite::TempFile {
    tempfile_lite::TempFile::new(contents)
}

mod tempfile_lite {
    //! A file in the target directory that is removed on drop (no extra dependency).
    pub struct TempFile(pub std::path::PathBuf);
    impl TempFile {
        pub fn new(contents: &str) -> Self {
            use std::sync::atomic::{AtomicU32, Ordering};
            static N: AtomicU32 = AtomicU32::new(0);
            let p = std::env::temp_dir().join(format!(
                "switchboard-config-test-{}-{}.toml",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let mut f = std::fs::File::create(&p).unwrap();
            super::Write::write_all(&mut f, contents.as_bytes()).unwrap();
            Self(p)
        }
    }
    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn defaults_are_valid_and_loopback() {
    let c = Config::load_with_env(None, env(&[])).unwrap();
    assert_eq!(c, Config::default());
    assert!(c.grpc.listen.ip().is_loopback());
    assert!(c.grpc.api_key.is_empty());
}

#[test]
fn file_overrides_defaults_and_env_overrides_file() {
    let f = file(
        r#"
[grpc]
listen = "127.0.0.1:7000"
[media]
workers = 3
port_base = 41000
[log]
format = "json"
"#,
    );
    let c = Config::load_with_env(Some(&f.0), env(&[])).unwrap();
    assert_eq!(c.grpc.listen.port(), 7000);
    assert_eq!(c.media.workers, 3);
    assert_eq!(c.log.format, LogFormat::Json);
    assert_eq!(
        c.rooms.default_max_sessions, 100,
        "untouched keys keep defaults"
    );

    let c = Config::load_with_env(
        Some(&f.0),
        env(&[
            ("SWITCHBOARD__MEDIA__WORKERS", "5"),
            ("SWITCHBOARD__GRPC__API_KEY", "k"),
            ("SWITCHBOARD__MEDIA__BIND_IP", "0.0.0.0"),
            (
                "SWITCHBOARD__MEDIA__ANNOUNCE_IPS",
                "203.0.113.7,2001:db8::7",
            ),
            ("UNRELATED", "x"),
        ]),
    )
    .unwrap();
    assert_eq!(c.media.workers, 5, "env beats file");
    assert_eq!(c.grpc.listen.port(), 7000, "file beats default");
    assert_eq!(c.grpc.api_key, "k");
    assert_eq!(c.media.announce_ips.len(), 2);

    let c = Config::load_with_env(
        None,
        env(&[
            ("SWITCHBOARD__MEDIA__TCP_ENABLED", "false"),
            ("SWITCHBOARD__MEDIA__TCP_PORT_BASE", "443"),
            ("SWITCHBOARD__MEDIA__TCP_MAX_CONNECTIONS", "7"),
            ("SWITCHBOARD__MEDIA__TCP_IDLE_TIMEOUT_SECS", "9"),
            ("SWITCHBOARD__MEDIA__TCP_MAX_FRAME_BYTES", "1500"),
            ("SWITCHBOARD__MEDIA__TCP_SEND_QUEUE_FRAMES", "64"),
            ("SWITCHBOARD__MEDIA__TCP_MAX_CONNECTIONS_PER_IP", "3"),
            ("SWITCHBOARD__MEDIA__TCP_FIRST_CHECK_TIMEOUT_SECS", "2"),
        ]),
    )
    .unwrap();
    assert_eq!(
        (
            c.media.tcp_max_connections_per_ip,
            c.media.tcp_first_check_timeout_secs
        ),
        (3, 2)
    );
    assert!(!c.media.tcp_enabled);
    assert_eq!(
        (
            c.media.tcp_port_base,
            c.media.tcp_max_connections,
            c.media.tcp_idle_timeout_secs,
            c.media.tcp_max_frame_bytes,
            c.media.tcp_send_queue_frames
        ),
        (443, 7, 9, 1500, 64)
    );
}

fn rejected(toml: &str, vars: &[(&str, &str)]) -> String {
    let f = file(toml);
    Config::load_with_env(Some(&f.0), env(vars))
        .unwrap_err()
        .to_string()
}

#[test]
fn bad_values_are_rejected_naming_the_key() {
    /// (file contents, environment, key the error must name)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        ("[media]\nworkers = \"many\"", &[], "media.workers"),
        ("[media]\nworkers = 500", &[], "media.workers"),
        (
            "",
            &[("SWITCHBOARD__MEDIA__WORKERS", "abc")],
            "media.workers",
        ),
        ("[grpc]\nlisten = \"nowhere\"", &[], "grpc.listen"),
        ("[grpc]\nlisten = \"0.0.0.0:50051\"", &[], "grpc.api_key"),
        ("[media]\nbind_ip = \"0.0.0.0\"", &[], "media.announce_ips"),
        (
            "[media]\nport_base = 65535\nworkers = 2",
            &[],
            "media.port_base",
        ),
        (
            "[media]\ntcp_port_base = 65535\nworkers = 2",
            &[],
            "media.tcp_port_base",
        ),
        (
            "[media]\ntcp_max_connections = 0",
            &[],
            "media.tcp_max_connections",
        ),
        (
            "",
            &[("SWITCHBOARD__MEDIA__TCP_IDLE_TIMEOUT_SECS", "0")],
            "media.tcp_idle_timeout_secs",
        ),
        (
            "[media]\ntcp_max_frame_bytes = 70000",
            &[],
            "media.tcp_max_frame_bytes",
        ),
        (
            "[media]\ntcp_send_queue_frames = 0",
            &[],
            "media.tcp_send_queue_frames",
        ),
        (
            "[rooms]\nempty_timeout_secs = 0",
            &[],
            "rooms.empty_timeout_secs",
        ),
        (
            "[rooms]\ndefault_max_sessions = 5000",
            &[],
            "rooms.default_max_sessions",
        ),
        ("[log]\nformat = \"xml\"", &[], "log.format"),
        (
            "[[ice_servers]]\nurls = [\"http://x\"]",
            &[],
            "ice_servers.urls",
        ),
        (
            "[bwe]\ninitial_bitrate_kbps = 5",
            &[],
            "bwe.initial_bitrate_kbps",
        ),
        (
            "",
            &[("SWITCHBOARD__BWE__UP_HOLD_MS", "99999999")],
            "bwe.up_hold_ms",
        ),
        (
            "[bwe]\nup_headroom_percent = 900",
            &[],
            "bwe.up_headroom_percent",
        ),
        ("[grpc]\nbogus = 1", &[], "bogus"),
        (
            "[turn]\ndeny_peers = [\"10.0.0.0/40\"]",
            &[],
            "turn.deny_peers",
        ),
        (
            "",
            &[("SWITCHBOARD__TURN__ALLOW_PEERS", "127.0.0.0/8,banana")],
            "turn.allow_peers",
        ),
        (
            "[turn]\nlisten_tls = \"0.0.0.0:5349\"",
            &[],
            "turn.listen_tls",
        ),
        (
            "[turn]\nrelay_port_min = 50000\nrelay_port_max = 40000",
            &[],
            "turn.relay_port_min",
        ),
        ("[turn]\nrealm = \"\"", &[], "turn.realm"),
        (
            "[media]\ntcp_max_connections_per_ip = 0",
            &[],
            "media.tcp_max_connections_per_ip",
        ),
        (
            "[media]\ntcp_first_check_timeout_secs = 0",
            &[],
            "media.tcp_first_check_timeout_secs",
        ),
        (
            "[turn]\nmax_stream_connections_per_ip = 0",
            &[],
            "turn.max_stream_connections_per_ip",
        ),
        (
            "[turn]\nfirst_request_timeout_secs = 0",
            &[],
            "turn.first_request_timeout_secs",
        ),
        (
            "[[ice_servers]]\nurls = [\"turn:x\"]\nusername = \"u\"\nshared_secret = \"s\"",
            &[],
            "ice_servers.shared_secret",
        ),
        ("", &[("SWITCHBOARD__NOPE__X", "1")], "nope"),
        (
            "[grpc]\nlisten = \"0.0.0.0:50051\"\napi_key = \"Zq9\"",
            &[],
            "grpc.api_key",
        ),
        (
            "[grpc]\nlisten = \"0.0.0.0:50051\"\napi_key = \"                    \"",
            &[],
            "grpc.api_key",
        ),
        (
            "[grpc]\napi_key = \"a key with spaces in it\"",
            &[],
            "grpc.api_key",
        ),
        ("[grpc]\ntls_cert = \"/tmp/c.pem\"", &[], "grpc.tls_key"),
        (
            "[grpc]\ntls_handshake_timeout_secs = 0",
            &[],
            "grpc.tls_handshake_timeout_secs",
        ),
        (
            "[grpc]\ntls_cert = \"/tmp/c.pem\"\ntls_key = \"/tmp/k.pem\"",
            &[],
            "demo.enabled",
        ),
        (
            "[demo]\nlisten = \"0.0.0.0:8080\"",
            &[],
            "demo.access_token",
        ),
        (
            "[demo]\nlisten = \"0.0.0.0:8080\"\naccess_token = \"short\"",
            &[],
            "demo.access_token",
        ),
        (
            "[limits]\nevent_stream_bytes = 4096",
            &[],
            "limits.event_stream_bytes",
        ),
        (
            "[limits]\nevent_replay_events = 0",
            &[],
            "limits.event_replay_events",
        ),
        (
            "[limits]\nevent_replay_bytes = 10",
            &[],
            "limits.event_replay_bytes",
        ),
    ];
    for (toml, vars, key) in cases {
        let msg = rejected(toml, vars);
        assert!(
            msg.contains(key),
            "{toml:?} {vars:?}: {msg:?} should name {key}"
        );
    }
}

#[test]
fn api_key_errors_never_show_the_key_and_strong_keys_pass() {
    let msg = rejected("[grpc]\nlisten = \"0.0.0.0:50051\"\napi_key = \"Zq9\"", &[]);
    assert!(!msg.contains("Zq9"), "{msg}");
    let c = Config::load_with_env(
        None,
        env(&[
            ("SWITCHBOARD__GRPC__LISTEN", "0.0.0.0:50051"),
            ("SWITCHBOARD__GRPC__API_KEY", "Zq9-a-long-enough-key"),
            ("SWITCHBOARD__DEMO__ENABLED", "false"),
        ]),
    )
    .unwrap();
    assert_eq!(c.grpc.api_key, "Zq9-a-long-enough-key");
    // A public demo with its own token is allowed.
    let f = file("[demo]\nlisten = \"0.0.0.0:8080\"\naccess_token = \"demo-token-0123456789\"");
    assert!(Config::load_with_env(Some(&f.0), env(&[])).is_ok());
}

#[test]
fn debug_of_config_never_prints_secrets() {
    let f = file(
        r#"
[grpc]
api_key = "SECRET-API-KEY-1"
[turn]
secret = "SECRET-TURN-2"
[demo]
access_token = "SECRET-DEMO-TOKEN-3"
[[ice_servers]]
urls = ["turn:x"]
username = "u"
credential = "SECRET-CREDENTIAL-4"
[[ice_servers]]
urls = ["turn:y"]
shared_secret = "SECRET-SHARED-5"
"#,
    );
    let c = Config::load_with_env(Some(&f.0), env(&[])).unwrap();
    assert_eq!(c.grpc.api_key, "SECRET-API-KEY-1", "the value is there");
    for shown in [format!("{c:?}"), format!("{c:#?}")] {
        assert!(!shown.contains("SECRET"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }
}

#[test]
fn turn_keys_come_from_the_environment() {
    let c = Config::load_with_env(
        None,
        env(&[
            ("SWITCHBOARD__TURN__ENABLED", "false"),
            ("SWITCHBOARD__TURN__LISTEN_UDP", "127.0.0.1:0"),
            ("SWITCHBOARD__TURN__LISTEN_TLS", "127.0.0.1:5349"),
            ("SWITCHBOARD__TURN__TLS_CERT", "/tmp/c.pem"),
            ("SWITCHBOARD__TURN__TLS_KEY", "/tmp/k.pem"),
            ("SWITCHBOARD__TURN__ALLOW_PEERS", "127.0.0.0/8,::1"),
            ("SWITCHBOARD__TURN__RELAY_IP", "127.0.0.1"),
            ("SWITCHBOARD__TURN__MAX_ALLOCATIONS_PER_IDENTITY", "3"),
            ("SWITCHBOARD__TURN__MAX_STREAM_CONNECTIONS_PER_IP", "4"),
            ("SWITCHBOARD__TURN__FIRST_REQUEST_TIMEOUT_SECS", "6"),
        ]),
    )
    .unwrap();
    assert!(!c.turn.enabled);
    assert_eq!(c.turn.listen_udp, "127.0.0.1:0".parse().unwrap());
    assert_eq!(c.turn.listen_tls, Some("127.0.0.1:5349".parse().unwrap()));
    assert_eq!(
        c.turn.tls_key.as_deref(),
        Some(std::path::Path::new("/tmp/k.pem"))
    );
    let allow: Vec<String> = c.turn.allow_peers.iter().map(|c| c.to_string()).collect();
    assert_eq!(allow, ["127.0.0.0/8", "::1/128"]);
    assert_eq!(c.turn.relay_ip, Some("127.0.0.1".parse().unwrap()));
    assert_eq!(c.turn.max_allocations_per_identity, 3);
    assert_eq!(c.turn.max_stream_connections_per_ip, 4);
    assert_eq!(c.turn.first_request_timeout_secs, 6);
    assert_eq!(c.turn.deny_peers, Config::default().turn.deny_peers);
}

#[test]
fn bwe_keys_come_from_the_file_and_the_environment() {
    let f = file("[bwe]\nenabled = false\ndown_hold_ms = 800\n");
    let c = Config::load_with_env(
        Some(&f.0),
        env(&[("SWITCHBOARD__BWE__UP_HEADROOM_PERCENT", "35")]),
    )
    .unwrap();
    assert!(!c.bwe.enabled);
    assert_eq!(c.bwe.down_hold_ms, 800);
    assert_eq!(c.bwe.up_headroom_percent, 35);
    assert_eq!(c.bwe.up_hold_ms, 3000, "unset keys keep their defaults");
}

#[test]
fn a_missing_config_file_is_an_error() {
    let e = Config::load_with_env(Some(std::path::Path::new("/nonexistent/sb.toml")), env(&[]));
    assert!(e.is_err());
}

#[test]
fn the_shipped_example_config_is_valid_and_equals_the_defaults() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../switchboard.example.toml");
    let c = Config::load_with_env(Some(&path), env(&[])).unwrap();
    assert_eq!(c, Config::default());
    // Every key is written out (missing ones would silently take their defaults above).
    fn keys(v: &toml::Value, prefix: &str, out: &mut std::collections::BTreeSet<String>) {
        if let toml::Value::Table(t) = v {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                if v.is_table() {
                    keys(v, &key, out);
                } else {
                    out.insert(key);
                }
            }
        }
    }
    let text = std::fs::read_to_string(&path).unwrap();
    let (mut example, mut defaults) = (Default::default(), Default::default());
    keys(&toml::from_str(&text).unwrap(), "", &mut example);
    keys(
        &toml::Value::try_from(Config::default()).unwrap(),
        "",
        &mut defaults,
    );
    // `[[ice_servers]]` is empty by default; the example shows it commented out.
    assert!(text.contains("# [[ice_servers]]"));
    defaults.remove("ice_servers");
    let missing: Vec<_> = defaults.difference(&example).collect();
    assert!(
        missing.is_empty(),
        "keys missing from the example: {missing:?}"
    );
}
