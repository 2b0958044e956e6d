//! Late joiners, renegotiation on join and leave, glare, teardown leak checks, timeouts.

mod support;

use std::time::Duration;

use support::*;
use switchboard_core::*;
use switchboard_testpeer::Publish;

fn video_only() -> Publish {
    Publish {
        audio: false,
        video: true,
        data_label: None,
        simulcast: false,
    }
}

#[test]
fn late_joiner_gets_a_keyframe_from_the_publisher() {
    let mut net = Net::new();
    let room = net.room("late");
    let a = net.join(&room, "alice", video_only());
    // Alice publishes alone for a while: her one spontaneous key frame is long gone.
    net.run_until(Duration::from_secs(5), "alice connected", |n| {
        n.peer(a).stats.connected
    });
    net.run_for(Duration::from_secs(2));
    let requests_before = net.peer(a).stats.keyframe_requests;
    let b = net.join(&room, "bob", Publish::default());
    net.run_until(Duration::from_secs(5), "bob sees alice's video", |n| {
        n.min_frames(b, a) >= 10
    });
    assert!(
        net.peer(a).stats.keyframe_requests > requests_before,
        "the gateway asked alice for a key frame when bob subscribed"
    );
    let track = &net.published(a)[0];
    let st = &net.peer(b).stats.tracks[track];
    assert!(st.keyframes >= 1, "bob received a key frame: {st:?}");
}

#[test]
fn leaving_renegotiates_and_closing_everything_leaves_nothing_behind() {
    let mut net = Net::new();
    let room = net.room("leak");
    let a = net.join(&room, "a", av("chat"));
    let b = net.join(&room, "b", av("chat"));
    let c = net.join(&room, "c", av("chat"));
    net.run_until(Duration::from_secs(8), "full mesh of media", |n| {
        n.full_mesh(&[a, b, c], 5)
    });
    assert_eq!(net.sfu.n_tracks(), 6);
    // Each track reaches two subscribers; routes are counted on both sides.
    assert_eq!(net.sfu.n_routes(), 6 * 2 * 2);

    let b_session = net.peers[b].session.clone();
    let b_tracks = net.published(b);
    let before = net.events.len();
    net.sfu.close_session(net.now, &b_session).unwrap();
    net.run_for(Duration::from_millis(500));
    assert_eq!(net.sfu.n_tracks(), 4);
    assert_eq!(net.sfu.n_routes(), 4 * 2);
    let after: Vec<&SfuEvent> = net.events[before..].iter().collect();
    let unpublished = after
        .iter()
        .filter(|e| matches!(&e.kind, EventKind::TrackUnpublished { track, .. } if b_tracks.contains(&track.to_string())))
        .count();
    assert_eq!(unpublished, 2);
    assert!(after.iter().any(|e| e.kind
        == EventKind::SessionClosed {
            reason: SessionCloseReason::BackendRequest,
            participant: ParticipantId::parse("b").unwrap()
        }));
    // a and c were offered the removal of b's two m-lines, and answered.
    for p in [a, c] {
        let sid = &net.peers[p].session;
        assert!(after.iter().any(|e| e.session.as_ref() == Some(sid)
            && matches!(e.kind, EventKind::NegotiationNeeded { .. })));
    }
    // a and c still talk.
    let before_frames = net.min_frames(c, a);
    net.run_for(Duration::from_millis(500));
    assert!(net.min_frames(c, a) > before_frames + 5);

    assert_eq!(net.sfu.delete_room(net.now, &room).unwrap(), 2);
    net.run_for(Duration::from_millis(100));
    assert_eq!(net.sfu.n_sessions(), 0);
    assert_eq!(net.sfu.n_rooms(), 0);
    assert_eq!(net.sfu.n_tracks(), 0);
    assert_eq!(net.sfu.n_routes(), 0);
    assert_eq!(net.sfu.n_index_entries(), (0, 0, 0));
    assert!(matches!(
        net.events.last().unwrap().kind,
        EventKind::RoomClosed(RoomCloseReason::BackendRequest)
    ));
}

#[test]
fn glare_the_gateway_yields_and_reoffers_its_changes() {
    let mut net = Net::new();
    let room = net.room("glare");
    let a = net.join(&room, "alice", av("chat"));
    net.run_until(Duration::from_secs(5), "alice connected", |n| {
        n.peer(a).stats.connected
    });
    net.peers[a].auto_answer = false;
    let b = net.join(&room, "bob", av("chat"));
    net.run_until(
        Duration::from_secs(5),
        "the gateway offers bob's tracks to alice",
        |n| !n.peers[a].offers.is_empty(),
    );
    let (stale_offer, stale_sdp) = net.peers[a].offers.remove(0);

    // Alice renegotiates at the same moment: both sides have an offer out.
    let a_session = net.peers[a].session.clone();
    let offer = net.peers[a].core.create_renegotiation_offer().unwrap();
    let answer = net.sfu.apply_offer(net.now, &a_session, &offer).unwrap();
    net.peers[a].core.accept_answer(&answer).unwrap();
    net.pump();
    // The gateway dropped its offer: a well-formed answer to it (from a bystander, so Alice's
    // state is untouched) is refused because no offer is outstanding, nothing else.
    let bystander = switchboard_testpeer::PeerCore::new(net.now, "10.9.9.9:5000".parse().unwrap())
        .accept_offer(&stale_sdp)
        .unwrap();
    let err = net
        .sfu
        .apply_answer(net.now, &a_session, &bystander, Some(stale_offer))
        .unwrap_err();
    assert!(matches!(err, CoreError::WrongState { .. }), "{err}");
    net.run_until(Duration::from_secs(2), "a fresh gateway offer", |n| {
        !n.peers[a].offers.is_empty()
    });
    let (fresh, sdp) = net.peers[a].offers.remove(0);
    assert!(fresh > stale_offer);
    let stale_answer = net.peers[a].core.accept_offer(&sdp).unwrap();
    let err = net
        .sfu
        .apply_answer(net.now, &a_session, &stale_answer, Some(stale_offer))
        .unwrap_err();
    assert!(matches!(err, CoreError::WrongState { .. }), "{err}");
    net.sfu
        .apply_answer(net.now, &a_session, &stale_answer, Some(fresh))
        .unwrap();
    net.peers[a].auto_answer = true;
    net.run_until(Duration::from_secs(5), "media both ways after glare", |n| {
        n.min_frames(a, b) >= 10 && n.min_frames(b, a) >= 10
    });
}

#[test]
fn answer_without_outstanding_offer_is_wrong_state() {
    let mut net = Net::new();
    let room = net.room("state");
    let a = net.join(&room, "alice", av("chat"));
    let sid = net.peers[a].session.clone();
    let sdp = net.peers[a].core.create_renegotiation_offer().unwrap();
    let err = net.sfu.apply_answer(net.now, &sid, &sdp, None).unwrap_err();
    assert!(matches!(err, CoreError::WrongState { .. }), "{err}");
}

#[test]
fn a_panic_closes_only_that_session() {
    let mut net = Net::new();
    let room = net.room("panic");
    let a = net.join(&room, "a", av("chat"));
    let b = net.join(&room, "b", av("chat"));
    let c = net.join(&room, "c", av("chat"));
    net.run_until(Duration::from_secs(8), "a and c exchange media", |n| {
        n.min_frames(a, c) >= 5 && n.min_frames(c, a) >= 5 && n.min_frames(b, a) >= 5
    });
    let b_session = net.peers[b].session.clone();
    net.sfu.inject_fault(&b_session).unwrap();
    net.run_for(Duration::from_millis(200));
    assert!(net.events_of(&b_session).iter().any(|k| matches!(
        k,
        EventKind::SessionClosed {
            reason: SessionCloseReason::InternalError,
            ..
        }
    )));
    assert!(matches!(
        net.sfu.get_session(&b_session),
        Err(CoreError::SessionNotFound(_))
    ));
    assert_eq!(net.sfu.counters().session_panics, 1);
    let (ac, ca) = (net.min_frames(c, a), net.min_frames(a, c));
    net.run_for(Duration::from_secs(1));
    assert!(net.min_frames(c, a) > ac + 10 && net.min_frames(a, c) > ca + 10);
    assert_eq!(net.sfu.n_tracks(), 4);
}

#[test]
fn garbage_datagrams_are_dropped_and_counted_never_fatal() {
    let mut net = Net::new();
    let room = net.room("garbage");
    let a = net.join(&room, "a", av("chat"));
    let b = net.join(&room, "b", av("chat"));
    net.run_until(Duration::from_secs(5), "media", |n| n.min_frames(b, a) >= 5);
    let dst = SFU_ADDR.parse().unwrap();
    let known = net.peers[a].core.addr;
    let stranger = "198.51.100.7:9".parse().unwrap();
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for i in 0..5000u32 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = (x % 1400) as usize;
        let mut buf: Vec<u8> = (0..len)
            .map(|j| (x.rotate_left(j as u32 % 64)) as u8)
            .collect();
        // Make some of it look like STUN, DTLS and RTP to get past the first checks.
        if let Some(b0) = buf.first_mut() {
            *b0 = [0x00, 0x16, 0x80, 0x90, *b0][i as usize % 5];
        }
        let source = if i % 2 == 0 { known } else { stranger };
        net.sfu.handle_datagram(
            net.now,
            Datagram {
                transport: Transport::Udp,
                source,
                destination: dst,
                contents: &buf,
            },
        );
    }
    let c = net.sfu.counters();
    assert!(c.datagrams_unrouted >= 2500, "{c:?}");
    assert_eq!(c.session_panics, 0);
    let before = net.min_frames(b, a);
    net.run_for(Duration::from_secs(1));
    assert!(net.min_frames(b, a) > before + 10, "the call survives");
}

#[test]
fn a_session_that_never_connects_times_out() {
    let mut net = Net::new();
    let room = net.room("timeout");
    let s = net.session(&room, "ghost");
    net.run_for(Duration::from_secs(31));
    assert!(net.events_of(&s).iter().any(|k| matches!(
        k,
        EventKind::SessionClosed {
            reason: SessionCloseReason::ConnectTimeout,
            ..
        }
    )));
    assert_eq!(net.sfu.n_sessions(), 0);
}

#[test]
fn a_lost_peer_is_disconnected_then_closed_after_the_grace_period() {
    let mut net = Net::new();
    let room = net.room("lost");
    let a = net.join(&room, "a", av("chat"));
    let b = net.join(&room, "b", av("chat"));
    net.run_until(Duration::from_secs(5), "media", |n| n.min_frames(b, a) >= 5);
    net.peers[a].cut = true;
    let sid = net.peers[a].session.clone();
    net.run_until(Duration::from_secs(60), "disconnect then close", |n| {
        n.events_of(&sid)
            .iter()
            .any(|k| matches!(k, EventKind::SessionClosed { .. }))
    });
    let kinds = net.events_of(&sid);
    let disc = kinds
        .iter()
        .position(|k| matches!(k, EventKind::SessionDisconnected { .. }))
        .expect("disconnected event");
    let closed = kinds
        .iter()
        .position(|k| {
            matches!(
                k,
                EventKind::SessionClosed {
                    reason: SessionCloseReason::DisconnectTimeout,
                    ..
                }
            )
        })
        .expect("closed after the grace period");
    assert!(disc < closed);
    assert_eq!(net.sfu.n_sessions(), 1);
}

#[test]
fn an_empty_room_closes_after_its_timeout() {
    let mut net = Net::new();
    let spec = RoomSpec {
        id: None,
        max_sessions: Some(1),
        empty_timeout: Some(Duration::from_secs(5)),
        metadata: "m".into(),
        created_at: std::time::SystemTime::now(),
        backend_data_labels: Vec::new(),
    };
    let (room, created) = net.sfu.create_room(net.now, spec).unwrap();
    assert!(created);
    assert!(room.id.as_str().starts_with("rm_"));
    let s = net.session(&room.id, "x");
    // The room is full.
    let spec = SessionSpec {
        room: room.id.clone(),
        participant: ParticipantId::parse("y").unwrap(),
        metadata: String::new(),
        permissions: Permissions::default(),
        created_at: std::time::SystemTime::now(),
        auto_subscribe: true,
    };
    assert_eq!(
        net.sfu.create_session(net.now, spec).unwrap_err(),
        CoreError::LimitReached {
            limit: "max_sessions",
            max: 1
        }
    );
    net.run_for(Duration::from_secs(6));
    assert_eq!(net.sfu.n_rooms(), 1, "not empty yet");
    net.sfu.close_session(net.now, &s).unwrap();
    net.run_for(Duration::from_secs(6));
    assert_eq!(net.sfu.n_rooms(), 0);
    assert!(
        net.events
            .iter()
            .any(|e| e.kind == EventKind::RoomClosed(RoomCloseReason::EmptyTimeout))
    );
    assert_eq!(net.sfu.n_index_entries(), (0, 0, 0));
}

#[test]
fn permissions_limit_publishing_and_data() {
    let mut net = Net::new();
    let room = net.room("perm");
    let viewer = net.sfu.create_session(
        net.now,
        SessionSpec {
            room: room.clone(),
            participant: ParticipantId::parse("viewer").unwrap(),
            metadata: String::new(),
            permissions: Permissions {
                publish: false,
                subscribe: true,
                data: false,
            },
            created_at: std::time::SystemTime::now(),
            auto_subscribe: true,
        },
    );
    let v = net.join_session(viewer.unwrap().id, "viewer", av("chat"));
    let a = net.join(&room, "a", av("chat"));
    net.run_until(Duration::from_secs(5), "viewer receives", |n| {
        n.min_frames(v, a) >= 5
    });
    assert!(net.published(v).is_empty(), "viewer cannot publish");
    assert!(
        net.peer(a).stats.tracks.is_empty(),
        "nothing from the viewer"
    );
    net.run_for(Duration::from_millis(300));
    assert!(net.peers[v].core.send_data(b"spam"));
    assert!(net.peers[a].core.send_data(b"hi"));
    net.run_until(Duration::from_secs(2), "a's message arrives", |n| {
        !n.peer(v).stats.messages.is_empty()
    });
    net.run_for(Duration::from_millis(300));
    assert!(
        net.peer(a).stats.messages.is_empty(),
        "viewer's message was dropped"
    );
}

#[test]
fn an_ice_restart_after_a_network_change_keeps_the_call() {
    let mut net = Net::new();
    let room = net.room("restart");
    let a = net.join(&room, "a", av("chat"));
    let b = net.join(&room, "b", av("chat"));
    net.run_until(Duration::from_secs(5), "media both ways", |n| {
        n.min_frames(a, b) >= 10 && n.min_frames(b, a) >= 10
    });
    // Alice's network changes: new address, ICE restart offer through the backend.
    let sa = net.peers[a].session.clone();
    let moved: std::net::SocketAddr = "192.0.2.99:6000".parse().unwrap();
    let offer = net.peers[a]
        .core
        .move_and_restart_ice(moved)
        .expect("an ICE restart needs an offer");
    // The old address is gone: nothing sent from it or to it arrives any more.
    net.peers[a].wire = moved;
    let answer = net.sfu.apply_offer(net.now, &sa, &offer).unwrap();
    net.peers[a].core.accept_answer(&answer).unwrap();
    let (ab, ba) = (net.min_frames(b, a), net.min_frames(a, b));
    net.run_until(
        Duration::from_secs(10),
        "media flows again from the new address",
        |n| n.min_frames(b, a) > ab + 20 && n.min_frames(a, b) > ba + 20,
    );
    assert_eq!(net.sfu.n_sessions(), 2);
    // The same Session, with its subscriptions (media above) and its data channels.
    assert!(net.sfu.get_session(&sa).is_ok(), "alice's Session lives on");
    net.run_until(Duration::from_secs(5), "channels open", |n| {
        n.peer(a).channel_open() && n.peer(b).channel_open()
    });
    assert!(net.peers[a].core.send_data(b"after the restart"));
    assert!(net.peers[b].core.send_data(b"still here"));
    net.run_until(Duration::from_secs(5), "data both ways", |n| {
        n.peer(b)
            .stats
            .messages
            .iter()
            .any(|m| m == b"after the restart")
            && n.peer(a).stats.messages.iter().any(|m| m == b"still here")
    });
    let closed = net
        .events
        .iter()
        .any(|e| matches!(e.kind, EventKind::SessionClosed { .. }));
    assert!(!closed, "no Session closed during the restart");
}
