//! Input bounds on the signaling path and the Session's routed addresses: SDP size, m-lines and
//! candidates are refused naming their limit before str0m parses anything, parse errors say
//! which line is wrong (never a memory address), and a roaming Peer is routed from every new
//! address its checks succeed on, however many it used before.

mod support;

use std::time::{Duration, SystemTime};

use support::*;
use switchboard_core::*;

fn limited(limits: SignalingLimits) -> SfuConfig {
    SfuConfig {
        signaling: limits,
        ..config()
    }
}

fn offer_of(net: &mut Net, session: &SessionId, sdp: String) -> Result<Reply, CoreError> {
    net.command(Command::ApplyOffer {
        session: session.clone(),
        sdp,
    })
}

#[test]
fn a_peer_roaming_through_twelve_addresses_keeps_sending() {
    let mut net = Net::new();
    let room = net.room("roaming");
    let a = net.join(&room, "a", av("chat"));
    let b = net.join(&room, "b", av("chat"));
    net.run_until(Duration::from_secs(5), "media both ways", |n| {
        n.min_frames(a, b) >= 10 && n.min_frames(b, a) >= 10
    });
    let sa = net.peers[a].session.clone();
    // Each move is a new network (new address, ICE restart): after the eighth, today's cap of
    // routed addresses per Session would leave the Peer answered but never routed.
    for i in 0..12u16 {
        let moved: std::net::SocketAddr = format!("198.51.100.{}:{}", 1 + i, 7000 + i)
            .parse()
            .unwrap();
        let offer = net.peers[a]
            .core
            .move_and_restart_ice(moved)
            .expect("an ICE restart needs an offer");
        net.peers[a].wire = moved;
        let answer = match offer_of(&mut net, &sa, offer).unwrap() {
            Reply::Answer(a) => a,
            other => panic!("ApplyOffer replied {other:?}"),
        };
        net.peers[a].core.accept_answer(&answer).unwrap();
        let before = net.min_frames(b, a);
        net.run_until(
            Duration::from_secs(10),
            &format!("media from a's address number {}", i + 2),
            |n| n.min_frames(b, a) > before + 20,
        );
    }
    assert!(
        net.sfu.counters().addrs_evicted >= 4,
        "old addresses were evicted: {:?}",
        net.sfu.counters()
    );
    // The index stays bounded: at most 8 addresses per Session.
    let (addrs, _, _) = net.sfu.n_index_entries();
    assert!(addrs <= 16, "{addrs} routed addresses for two Sessions");
    assert!(net.sfu.get_session(&sa).is_ok());
}

#[test]
fn sdp_size_mlines_and_candidates_are_refused_naming_their_limit() {
    let limits = SignalingLimits {
        max_sdp_bytes: 64 * 1024,
        max_mlines_per_sdp: 8,
        max_mlines_per_session: 8,
        max_candidates_per_sdp: 4,
        max_remote_candidates: 256,
    };
    let mut net = Net::with_config(limited(limits));
    let room = net.room("limits");
    let s = net.session(&room, "a");
    let cases = [
        (
            "x".repeat(64 * 1024 + 1),
            "signaling.max_sdp_bytes",
            "an oversize SDP",
        ),
        (
            format!("v=0\r\n{}", "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n".repeat(9)),
            "signaling.max_mlines_per_sdp",
            "nine m-lines",
        ),
        (
            format!(
                "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n{}",
                (0..5)
                    .map(|p| format!("a=candidate:1 1 udp 1 192.0.2.9 {} typ host\r\n", 1000 + p))
                    .collect::<String>()
            ),
            "signaling.max_candidates_per_sdp",
            "five distinct candidates",
        ),
    ];
    for (sdp, key, what) in cases {
        for answer in [false, true] {
            let cmd = if answer {
                Command::ApplyAnswer {
                    session: s.clone(),
                    sdp: sdp.clone(),
                    offer_id: None,
                }
            } else {
                Command::ApplyOffer {
                    session: s.clone(),
                    sdp: sdp.clone(),
                }
            };
            match net.command(cmd) {
                Err(e @ CoreError::InvalidArgument { field: "sdp", .. }) => {
                    assert!(e.to_string().contains(key), "{what}: {e}")
                }
                other => panic!("{what} (answer: {answer}): {other:?}"),
            }
        }
    }
    // A real offer within the limits is still accepted on the same Session.
    net.join_session(s, "a", av("chat"));
}

#[test]
fn a_session_gets_no_more_mlines_than_its_limit() {
    let limits = SignalingLimits {
        // a's own offer has three (audio, video, data); one more Track fits.
        max_mlines_per_session: 4,
        ..SignalingLimits::default()
    };
    let mut net = Net::with_config(limited(limits));
    let room = net.room("mlines");
    let spec = SessionSpec {
        room: room.clone(),
        participant: ParticipantId::parse("a").unwrap(),
        metadata: String::new(),
        permissions: Permissions::default(),
        created_at: SystemTime::now(),
        auto_subscribe: false,
    };
    let sa = net.create_session(spec);
    let a = net.join_session(sa.clone(), "a", av("chat"));
    let b = net.join(&room, "b", av("chat"));
    net.run_until(Duration::from_secs(5), "b publishes", |n| {
        n.published(b).len() == 2
    });
    let tracks: Vec<TrackId> = net
        .published(b)
        .iter()
        .map(|t| TrackId::parse(t).unwrap())
        .collect();
    let both = Command::Subscribe {
        session: sa.clone(),
        tracks: tracks.clone(),
    };
    match net.command(both) {
        Err(e @ CoreError::LimitReached { .. }) => {
            assert!(
                e.to_string().contains("signaling.max_mlines_per_session"),
                "{e}"
            )
        }
        other => panic!("two more m-lines than fit: {other:?}"),
    }
    let one = Command::Subscribe {
        session: sa,
        tracks: tracks[..1].to_vec(),
    };
    net.command(one).expect("one more m-line fits");
    // d subscribes automatically to a's and b's Tracks when it is created (four, the limit),
    // before its Peer offers: its offer's three m-lines on top are past the limit.
    let sd = net.session(&room, "d");
    let mut peer = switchboard_testpeer::PeerCore::new(net.now, "192.0.2.60:5000".parse().unwrap());
    let offer = peer.create_offer(av("chat"));
    match offer_of(&mut net, &sd, offer) {
        Err(e @ CoreError::LimitReached { .. }) => {
            assert!(
                e.to_string().contains("signaling.max_mlines_per_session"),
                "{e}"
            )
        }
        other => panic!("an offer past the Session's m-lines: {other:?}"),
    }
    net.run_until(Duration::from_secs(5), "a receives the one Track", |n| {
        n.peer(a)
            .stats
            .tracks
            .get(&tracks[0].to_string())
            .is_some_and(|s| s.frames > 5)
    });
}

#[test]
fn trickled_candidates_are_bounded_per_session() {
    let limits = SignalingLimits {
        max_remote_candidates: 5,
        ..SignalingLimits::default()
    };
    let mut net = Net::with_config(limited(limits));
    let room = net.room("trickle");
    let a = net.join(&room, "a", av("chat"));
    let s = net.peers[a].session.clone();
    let add = |net: &mut Net, port: u16| {
        net.command(Command::AddIceCandidate {
            session: s.clone(),
            candidate: IceCandidate::Line(format!(
                "candidate:1 1 udp 2130706431 192.0.2.200 {port} typ host"
            )),
        })
    };
    for port in 0..5 {
        add(&mut net, 2000 + port).expect("within the limit");
    }
    match add(&mut net, 3000) {
        Err(e @ CoreError::LimitReached { .. }) => {
            assert!(
                e.to_string().contains("signaling.max_remote_candidates"),
                "{e}"
            )
        }
        other => panic!("the sixth candidate: {other:?}"),
    }
    // An ICE restart starts a new set.
    let moved: std::net::SocketAddr = "198.51.100.50:7000".parse().unwrap();
    let offer = net.peers[a].core.move_and_restart_ice(moved).unwrap();
    net.peers[a].wire = moved;
    let answer = match offer_of(&mut net, &s, offer).unwrap() {
        Reply::Answer(a) => a,
        other => panic!("{other:?}"),
    };
    net.peers[a].core.accept_answer(&answer).unwrap();
    add(&mut net, 4000).expect("a new set after the restart");
}

#[test]
fn a_bad_sdp_is_refused_naming_the_line_never_a_memory_address() {
    let mut net = Net::new();
    let room = net.room("parse");
    let s = net.session(&room, "a");
    let mut peer = switchboard_testpeer::PeerCore::new(net.now, "192.0.2.50:5000".parse().unwrap());
    let good = peer.create_offer(av("chat"));
    // The audio m-line loses its rtpmap: the error is reported at that m-line.
    let n = good[..good.find("\r\nm=audio").unwrap()]
        .matches("\r\n")
        .count()
        + 2;
    let bad = good.replacen("a=rtpmap:111 ", "a=rtpmap:xx ", 1);
    assert_ne!(bad, good);
    let e = match offer_of(&mut net, &s, bad) {
        Err(e @ CoreError::InvalidArgument { field: "sdp", .. }) => e.to_string(),
        other => panic!("a broken SDP: {other:?}"),
    };
    assert!(!e.contains("0x"), "a memory address leaks: {e}");
    assert!(!e.contains("PointerOffset"), "{e}");
    assert!(
        e.contains(&format!("line {n} (\"m=audio 9 ")),
        "the line is named: {e}"
    );
    // A bad trickled candidate likewise.
    let e = net
        .command(Command::AddIceCandidate {
            session: s,
            candidate: IceCandidate::Line(
                "candidate:1 1 udp notanumber 192.0.2.1 9 typ host".into(),
            ),
        })
        .unwrap_err()
        .to_string();
    assert!(!e.contains("0x"), "a memory address leaks: {e}");
}
