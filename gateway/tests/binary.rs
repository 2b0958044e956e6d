//! The `switchboard` binary: starts with embedded defaults, prints where gRPC listens, serves the
//! API, and exits cleanly on SIGTERM; refuses a bad configuration naming the key.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use switchboard::v1 as pb;
use switchboard::v1::room_service_client::RoomServiceClient;

#[tokio::test]
async fn runs_serves_and_stops_on_sigterm() -> anyhow::Result<()> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .env("SWITCHBOARD__GRPC__LISTEN", "127.0.0.1:0")
        .env("SWITCHBOARD__ADMIN__LISTEN", "127.0.0.1:0")
        .env("SWITCHBOARD__MEDIA__PORT_BASE", "0")
        .env("SWITCHBOARD__TURN__LISTEN_UDP", "127.0.0.1:0")
        .env("SWITCHBOARD__TURN__LISTEN_TCP", "127.0.0.1:0")
        .env("SWITCHBOARD__MEDIA__TCP_PORT_BASE", "0")
        .env("SWITCHBOARD__MEDIA__WORKERS", "2")
        .env("SWITCHBOARD__DEMO__LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let first = rx.recv_timeout(Duration::from_secs(30))?;
    let url = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {first:?}"))
        .to_string();
    assert!(first.contains("listening"), "{first}");
    // The embedded TURN server (on by default) reports its real ports and URLs.
    let turn = loop {
        let l = rx.recv_timeout(Duration::from_secs(30))?;
        if l.trim_start().starts_with("TURN:") {
            break l;
        }
    };
    assert!(
        turn.contains("UDP 127.0.0.1:") && turn.contains("turn:127.0.0.1:"),
        "{turn}"
    );
    let mut rooms = RoomServiceClient::connect(url).await?;
    let r = rooms
        .create_room(pb::CreateRoomRequest {
            room_id: "from-bin".into(),
            options: None,
            region_hint: String::new(),
        })
        .await?
        .into_inner();
    assert!(r.created);

    // Close our connection first: the server waits for open connections during its grace period.
    drop(rooms);
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()?
            .success()
    );
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "exits within the grace period"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[test]
fn a_bad_configuration_is_refused_with_the_key_named() {
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .env("SWITCHBOARD__MEDIA__WORKERS", "lots")
        .arg("--check-config")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("media.workers"), "{err}");
}
