//! Simulcast layer choice, selective subscription, pause, and key-frame throttling.

mod support;

use std::time::Duration;

use support::*;
use switchboard_core::*;
use switchboard_testpeer::{Publish, SIMULCAST_FRAME_BYTES};

fn simulcast_video() -> Publish {
    Publish {
        audio: false,
        video: true,
        data_label: None,
        simulcast: true,
    }
}

fn receiver() -> Publish {
    Publish::default()
}

fn layer_bytes(i: usize) -> usize {
    SIMULCAST_FRAME_BYTES[i].1
}

/// Frame size and counters Peer `to` sees of `track`.
fn seen(net: &Net, to: usize, track: &str) -> (usize, u64, u64) {
    net.peer(to).stats.tracks.get(track).map_or((0, 0, 0), |s| {
        (s.last_frame_bytes, s.frames_at_size, s.keyframes_at_size)
    })
}

fn wanted_events(net: &Net) -> Vec<Vec<String>> {
    net.events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::TrackLayersWanted { rids, .. } => Some(rids.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_subscriber_moves_between_simulcast_layers_at_key_frames() {
    let mut net = Net::new();
    let room = net.room("sim");
    let a = net.join(&room, "alice", simulcast_video());
    let b = net.join(&room, "bob", receiver());
    net.run_until(Duration::from_secs(5), "bob gets alice's top layer", |n| {
        let t = n.published(a);
        !t.is_empty() && seen(n, b, &t[0]).0 == layer_bytes(2) && seen(n, b, &t[0]).1 >= 10
    });
    let track = net.published(a)[0].clone();
    let tid = TrackId::parse(&track).unwrap();
    let sb = net.peers[b].session.clone();
    for (max, want) in [(0u8, 0usize), (1, 1), (0, 0)] {
        let pref = TrackPreference {
            max_layer: Some(max),
            paused: false,
        };
        net.sfu
            .set_track_preference(net.now, &sb, &tid, pref)
            .unwrap();
        let label = format!("bob receives layer {want}");
        net.run_until(Duration::from_secs(3), &label, |n| {
            let (bytes, frames, _) = seen(n, b, &track);
            bytes == layer_bytes(want) && frames >= 10
        });
    }
    let pref = TrackPreference {
        max_layer: None,
        paused: false,
    };
    net.sfu
        .set_track_preference(net.now, &sb, &tid, pref)
        .unwrap();
    net.run_until(Duration::from_secs(3), "back to the top layer", |n| {
        let (bytes, frames, _) = seen(n, b, &track);
        bytes == layer_bytes(2) && frames >= 10
    });
    let st = &net.peer(b).stats.tracks[&track];
    assert!(
        st.switches_at_keyframe.len() >= 5,
        "{:?}",
        st.switches_at_keyframe
    );
    assert!(
        st.switches_at_keyframe.iter().all(|k| *k),
        "every layer switch started with a key frame: {:?}",
        st.switches_at_keyframe
    );
    // The publisher was told which layers are needed as they changed.
    let wanted = wanted_events(&net);
    assert!(wanted.contains(&vec!["q".to_string()]), "{wanted:?}");
    assert_eq!(wanted.last().unwrap(), &vec!["f".to_string()]);
}

#[test]
fn a_late_joiners_first_video_frame_is_a_key_frame() {
    let mut net = Net::new();
    let room = net.room("late-key");
    let a = net.join(&room, "alice", simulcast_video());
    net.run_until(Duration::from_secs(5), "alice connected", |n| {
        n.peer(a).stats.connected
    });
    net.run_for(Duration::from_secs(2));
    let b = net.join(&room, "bob", receiver());
    net.run_until(Duration::from_secs(5), "bob receives video", |n| {
        n.published(a).first().is_some_and(|t| seen(n, b, t).1 >= 5)
    });
    let track = &net.published(a)[0];
    assert_eq!(
        net.peer(b).stats.tracks[track].switches_at_keyframe.first(),
        Some(&true)
    );
}

#[test]
fn pause_stops_forwarding_and_resume_restarts_at_a_key_frame() {
    let mut net = Net::new();
    let room = net.room("pause");
    let a = net.join(&room, "alice", simulcast_video());
    let b = net.join(&room, "bob", receiver());
    net.run_until(Duration::from_secs(5), "video flows", |n| {
        n.published(a)
            .first()
            .is_some_and(|t| seen(n, b, t).1 >= 10)
    });
    let track = net.published(a)[0].clone();
    let tid = TrackId::parse(&track).unwrap();
    let sb = net.peers[b].session.clone();
    let paused = TrackPreference {
        max_layer: None,
        paused: true,
    };
    net.sfu
        .set_track_preference(net.now, &sb, &tid, paused)
        .unwrap();
    net.run_for(Duration::from_millis(300));
    let frames = net.peer(b).stats.tracks[&track].frames;
    net.run_for(Duration::from_secs(1));
    assert_eq!(
        net.peer(b).stats.tracks[&track].frames,
        frames,
        "no frames while paused"
    );
    assert_eq!(
        wanted_events(&net).last().unwrap(),
        &Vec::<String>::new(),
        "no layer is wanted"
    );
    let resumed = TrackPreference {
        max_layer: Some(1),
        paused: false,
    };
    net.sfu
        .set_track_preference(net.now, &sb, &tid, resumed)
        .unwrap();
    net.run_until(Duration::from_secs(3), "frames again, on layer 1", |n| {
        let (bytes, f, _) = seen(n, b, &track);
        bytes == layer_bytes(1) && f >= 5
    });
    let st = &net.peer(b).stats.tracks[&track];
    assert!(
        st.switches_at_keyframe.iter().all(|k| *k),
        "{:?}",
        st.switches_at_keyframe
    );
}

#[test]
fn manual_subscription_receives_only_what_it_asks_for_and_unsubscribe_stops_it() {
    let mut net = Net::new();
    let room = net.room("manual");
    let a = net.join(&room, "alice", av("chat"));
    let spec = SessionSpec {
        room: room.clone(),
        participant: ParticipantId::parse("bob").unwrap(),
        metadata: String::new(),
        permissions: Permissions::default(),
        created_at: std::time::SystemTime::now(),
        auto_subscribe: false,
    };
    let sb = net.sfu.create_session(net.now, spec).unwrap().id;
    let b = net.join_session(sb.clone(), "bob", receiver());
    net.run_until(
        Duration::from_secs(5),
        "both connected, alice publishing",
        |n| n.peer(b).stats.connected && n.published(a).len() == 2,
    );
    net.run_for(Duration::from_secs(1));
    assert!(
        net.peer(b).stats.tracks.is_empty(),
        "nothing without a subscription"
    );
    let tracks: Vec<TrackId> = net
        .published(a)
        .iter()
        .map(|t| TrackId::parse(t).unwrap())
        .collect();
    net.sfu.subscribe(net.now, &sb, &tracks[..1]).unwrap();
    net.sfu.subscribe(net.now, &sb, &tracks[..1]).unwrap(); // idempotent
    net.run_until(Duration::from_secs(3), "bob receives the one track", |n| {
        n.peer(b)
            .stats
            .tracks
            .get(tracks[0].as_str())
            .is_some_and(|s| s.frames >= 10)
    });
    assert_eq!(net.peer(b).stats.tracks.len(), 1);
    net.sfu.unsubscribe(net.now, &sb, &tracks[..1]).unwrap();
    net.run_for(Duration::from_millis(300));
    let frames = net.peer(b).stats.tracks[tracks[0].as_str()].frames;
    net.run_for(Duration::from_secs(1));
    assert_eq!(
        net.peer(b).stats.tracks[tracks[0].as_str()].frames,
        frames,
        "unsubscribe stops packets"
    );
    assert_eq!(net.sfu.n_routes(), 0, "no route left for bob");
    // Errors name what is wrong.
    let ghost = TrackId::parse("tr_aaaaaaaaaaaaaaaaaaaa").unwrap();
    assert!(matches!(
        net.sfu.subscribe(net.now, &sb, &[ghost]),
        Err(CoreError::TrackNotFound(_))
    ));
    let pref = TrackPreference::default();
    assert!(matches!(
        net.sfu.set_track_preference(net.now, &sb, &tracks[0], pref),
        Err(CoreError::WrongState { .. })
    ));
    let sa = net.peers[a].session.clone();
    assert!(matches!(
        net.sfu.subscribe(net.now, &sa, &tracks[..1]),
        Err(CoreError::InvalidArgument {
            field: "track_ids",
            ..
        })
    ));
}

#[test]
fn a_storm_of_key_frame_requests_reaches_the_publisher_throttled() {
    let mut net = Net::new();
    let room = net.room("storm");
    let a = net.join(&room, "alice", simulcast_video());
    let subs: Vec<usize> = (0..3)
        .map(|i| net.join(&room, &format!("s{i}"), receiver()))
        .collect();
    net.run_until(Duration::from_secs(5), "all receive", |n| {
        n.published(a)
            .first()
            .is_some_and(|t| subs.iter().all(|&s| seen(n, s, t).1 >= 10))
    });
    net.run_for(Duration::from_secs(1));
    let before = net.peer(a).stats.keyframe_requests;
    // Three subscribers ask for a key frame every 10 ms for two seconds: 600 requests.
    let end = net.now + Duration::from_secs(2);
    while net.now < end {
        for &s in &subs {
            net.peers[s].core.request_keyframes();
        }
        net.step();
    }
    let got = net.peer(a).stats.keyframe_requests - before;
    // One layer is forwarded; 500 ms throttle over 2 s: at most ~5 requests reach alice.
    assert!((2..=6).contains(&got), "alice got {got} key-frame requests");
}

#[test]
fn the_loudest_participant_becomes_the_active_speaker() {
    let mut net = Net::new();
    let room = net.room("speakers");
    let audio = Publish {
        audio: true,
        ..Default::default()
    };
    let p: Vec<usize> = ["ann", "bo", "cy"]
        .iter()
        .map(|n| net.join(&room, n, audio))
        .collect();
    let speaker = |net: &Net| {
        net.events.iter().rev().find_map(|e| match &e.kind {
            EventKind::ActiveSpeakerChanged { participant, .. } => {
                Some(participant.as_ref().map(|p| p.to_string()))
            }
            _ => None,
        })
    };
    let set = |net: &mut Net, levels: [i8; 3]| {
        for (i, l) in levels.into_iter().enumerate() {
            net.peers[p[i]].core.audio_level = l;
        }
    };
    set(&mut net, [-20, -60, -127]);
    net.run_until(Duration::from_secs(5), "ann speaks", |n| {
        speaker(n) == Some(Some("ann".into()))
    });
    set(&mut net, [-127, -10, -127]);
    net.run_until(Duration::from_secs(5), "bo speaks", |n| {
        speaker(n) == Some(Some("bo".into()))
    });
    let changes = net
        .events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::ActiveSpeakerChanged { .. }))
        .count();
    // Steady levels do not flap: one change per speaker so far.
    net.run_for(Duration::from_secs(2));
    assert_eq!(
        net.events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::ActiveSpeakerChanged { .. }))
            .count(),
        changes
    );
    set(&mut net, [-127, -127, -127]);
    net.run_until(Duration::from_secs(5), "silence", |n| {
        speaker(n) == Some(None)
    });
}

#[test]
fn moderation_mutes_tracks_and_removes_participants() {
    let mut net = Net::new();
    let room = net.room("moderated");
    let a = net.join(&room, "alice", av("chat"));
    let a2 = net.join(&room, "alice", av("chat"));
    let b = net.join(&room, "bob", av("chat"));
    net.run_until(Duration::from_secs(5), "bob receives alice", |n| {
        n.min_frames(b, a) >= 10
    });
    let video = net
        .published(a)
        .into_iter()
        .find(|t| net.peer(b).stats.tracks[t].kind == Some(str0m::media::MediaKind::Video))
        .unwrap();
    let tid = TrackId::parse(&video).unwrap();
    net.sfu.set_track_muted(net.now, &room, &tid, true).unwrap();
    net.run_for(Duration::from_millis(300));
    let frames = net.peer(b).stats.tracks[&video].frames;
    net.run_for(Duration::from_secs(1));
    assert_eq!(
        net.peer(b).stats.tracks[&video].frames,
        frames,
        "muted: nothing forwarded"
    );
    net.sfu
        .set_track_muted(net.now, &room, &tid, false)
        .unwrap();
    net.run_until(Duration::from_secs(3), "video again", |n| {
        n.peer(b).stats.tracks[&video].frames > frames + 10
    });
    let muted: Vec<bool> = net
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::TrackMuted { muted, .. } => Some(*muted),
            _ => None,
        })
        .collect();
    assert_eq!(muted, vec![true, false]);

    let alice = ParticipantId::parse("alice").unwrap();
    assert_eq!(
        net.sfu.remove_participant(net.now, &room, &alice).unwrap(),
        2
    );
    net.pump();
    for p in [a, a2] {
        let sid = net.peers[p].session.clone();
        assert!(net.events_of(&sid).iter().any(|k| matches!(
            k,
            EventKind::SessionClosed {
                reason: SessionCloseReason::Removed,
                ..
            }
        )));
    }
    assert!(matches!(
        net.sfu.remove_participant(net.now, &room, &alice),
        Err(CoreError::ParticipantNotFound(_))
    ));
    assert_eq!(net.sfu.n_sessions(), 1);
    assert_eq!(net.sfu.n_tracks(), 2, "only bob's tracks remain");
}
