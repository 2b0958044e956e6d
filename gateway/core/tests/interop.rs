//! What other WebRTC stacks need from the gateway's SDP and offer timing (issue #15): recycled
//! m-lines, recvonly answers, Opus before RED, candidates in every m-section, one offer per
//! batch and none before the Session is connected, and liveness without consent checks.

mod support;

use std::time::Duration;

use support::*;
use switchboard_core::*;
use switchboard_testpeer::{PeerCore, Publish};

fn receiver() -> Publish {
    Publish::default()
}

/// The m-sections of an SDP, each from `m=` to the next.
fn sections(sdp: &str) -> Vec<&str> {
    sdp.split("\r\nm=").skip(1).collect()
}

/// The gateway offers sent to `session`, in order.
fn offers_to<'a>(net: &'a Net, session: &SessionId) -> Vec<&'a str> {
    net.events
        .iter()
        .filter(|e| e.session.as_ref() == Some(session))
        .filter_map(|e| match &e.kind {
            EventKind::NegotiationNeeded { sdp, .. } => Some(sdp.as_str()),
            _ => None,
        })
        .collect()
}

#[test]
fn fifty_join_leave_cycles_keep_a_subscribers_mlines_at_the_concurrent_tracks() {
    let mut net = Net::new();
    let room = net.room("cycles");
    let a = net.join(&room, "a", receiver());
    net.run_until(Duration::from_secs(5), "a connected", |n| {
        n.peer(a).stats.connected
    });
    let a_session = net.peers[a].session.clone();
    let mut counts = Vec::new();
    for cycle in 0..50 {
        let b = net.join(&room, &format!("b{cycle}"), av("chat"));
        net.run_until(Duration::from_secs(5), "a receives b", |n| {
            n.min_frames(a, b) >= 3
        });
        let sid = net.peers[b].session.clone();
        net.sfu.close_session(net.now, &sid).unwrap();
        net.run_for(Duration::from_millis(300));
        let offers = offers_to(&net, &a_session);
        let last = offers.last().expect("a was offered b's tracks");
        counts.push(sections(last).len());
    }
    // b publishes two Tracks (audio, video): a's offers carry a's own m-line and b's two,
    // however many publishers came and went (without recycling: one more per Track per cycle).
    assert!(counts.iter().all(|c| *c == 3), "m-line counts: {counts:?}");
}

#[test]
fn one_offer_per_batch_none_before_connect_and_opus_before_red() {
    let mut net = Net::new();
    let room = net.room("offers");
    let a = net.join(&room, "a", receiver());
    net.run_until(Duration::from_secs(5), "a connected", |n| {
        n.peer(a).stats.connected
    });
    let a_session = net.peers[a].session.clone();
    let b = net.join(&room, "b", av("chat"));
    net.run_until(Duration::from_secs(5), "a receives b", |n| {
        n.min_frames(a, b) >= 3
    });
    // b's two Tracks reached a in one offer.
    let offers = offers_to(&net, &a_session);
    assert_eq!(offers.len(), 1, "{offers:#?}");
    let audio = sections(offers[0])
        .into_iter()
        .find(|s| s.starts_with("audio"))
        .expect("an audio m-line");
    let pts: Vec<&str> = audio.lines().next().unwrap().split(' ').skip(3).collect();
    let red = audio
        .lines()
        .find_map(|l| l.strip_prefix("a=rtpmap:").filter(|r| r.contains(" red/")))
        .and_then(|r| r.split(' ').next())
        .expect("RED offered");
    let opus = audio
        .lines()
        .find_map(|l| l.strip_prefix("a=rtpmap:").filter(|r| r.contains(" opus/")))
        .and_then(|r| r.split(' ').next())
        .expect("Opus offered");
    assert_eq!(pts[0], opus, "Opus first: {pts:?}");
    let pos = |pt: &str| pts.iter().position(|p| *p == pt).unwrap();
    assert!(pos(opus) < pos(red), "{pts:?}");

    // A late joiner that subscribes to b gets its offer only once it is connected.
    let c = net.join(&room, "c", receiver());
    let c_session = net.peers[c].session.clone();
    net.run_until(Duration::from_secs(5), "c receives b", |n| {
        n.min_frames(c, b) >= 3
    });
    let c_events: Vec<&EventKind> = net.events_of(&c_session);
    let connected = c_events
        .iter()
        .position(|k| matches!(k, EventKind::SessionConnected))
        .expect("c connected");
    let first_offer = c_events
        .iter()
        .position(|k| matches!(k, EventKind::NegotiationNeeded { .. }))
        .expect("c was offered b's tracks");
    assert!(
        first_offer > connected,
        "offer before connect: {c_events:#?}"
    );
    assert_eq!(offers_to(&net, &c_session).len(), 1);
}

#[test]
fn answers_are_recvonly_with_candidates_in_every_mline() {
    let mut net = Net::new();
    let room = net.room("answer");
    // A browser-like publisher offers its m-lines sendrecv (the test Peer says sendonly).
    let session = net.session(&room, "b");
    let mut peer = PeerCore::new(net.now, "192.0.2.200:5000".parse().unwrap());
    let offer = peer
        .create_offer(av("chat"))
        .replace("a=sendonly", "a=sendrecv");
    assert!(offer.contains("a=sendrecv"));
    let answer = match net.command(Command::ApplyOffer {
        session,
        sdp: offer,
    }) {
        Ok(Reply::Answer(a)) => a,
        other => panic!("ApplyOffer replied {other:?}"),
    };
    let mlines = sections(&answer);
    assert_eq!(mlines.len(), 3, "audio, video, data: {answer}");
    for s in mlines {
        // A Peer that reads the candidates of any one m-section (aiortc: the last) finds them.
        assert!(s.contains("a=candidate:"), "no candidate: {s}");
        assert!(
            s.contains("a=end-of-candidates"),
            "no end-of-candidates: {s}"
        );
        if s.starts_with("audio") || s.starts_with("video") {
            assert!(
                s.contains("a=recvonly"),
                "publishing m-line not recvonly: {s}"
            );
            assert!(
                !s.contains("a=ssrc:"),
                "our SSRC on a publishing m-line: {s}"
            );
            assert!(
                !s.contains("a=msid:"),
                "our msid on a publishing m-line: {s}"
            );
        }
    }
}

/// Liveness (ARCHITECTURE.md, "Liveness"): a Peer that sends no consent checks after connecting
/// (libnice keeps its pair alive with Binding Indications only) stays connected as long as
/// authenticated media or RTCP arrives on the selected pair; a Peer that goes silent is still
/// disconnected and closed.
#[test]
fn peers_without_consent_checks_stay_while_their_media_flows_and_silent_ones_close() {
    let mut net = Net::new();
    let room = net.room("liveness");
    // a publishes (SRTP), b only receives (its SRTCP reports and feedback), c publishes and will
    // go silent.
    let a = net.join_tolerant(&room, "a", av("chat"));
    let b = net.join_tolerant(&room, "b", receiver());
    let c = net.join_tolerant(&room, "c", av("chat"));
    net.run_until(Duration::from_secs(10), "media flows", |n| {
        n.min_frames(b, a) >= 5 && n.min_frames(b, c) >= 5
    });
    for p in [a, b, c] {
        net.peers[p].no_consent = true;
    }
    net.peers[c].cut = true;
    let frames_before = net.min_frames(b, a);
    net.run_for(Duration::from_secs(60));

    for p in [a, b] {
        let sid = net.peers[p].session.clone();
        let gone: Vec<_> = net
            .events_of(&sid)
            .into_iter()
            .filter(|k| {
                matches!(
                    k,
                    EventKind::SessionDisconnected { .. } | EventKind::SessionClosed { .. }
                )
            })
            .collect();
        assert!(gone.is_empty(), "peer {p} was dropped: {gone:?}");
    }
    // a's media still reaches b after a minute without a consent check from either (30 fps).
    let frames_after = net.min_frames(b, a);
    assert!(
        frames_after >= frames_before + 60 * 25,
        "b received {} frames of a in 60 s",
        frames_after - frames_before
    );
    let sid = net.peers[c].session.clone();
    assert!(
        net.events_of(&sid).iter().any(|k| matches!(
            k,
            EventKind::SessionClosed {
                reason: SessionCloseReason::DisconnectTimeout,
                ..
            }
        )),
        "the silent Peer was closed: {:?}",
        net.events_of(&sid)
    );
}
