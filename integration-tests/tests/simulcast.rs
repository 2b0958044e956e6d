//! Selective subscription and simulcast layer preference over real gRPC and UDP, with a str0m
//! Peer publishing three simulcast layers.

use std::time::Duration;

use switchboard::v1 as pb;
use switchboard_integration_tests::*;
use switchboard_testpeer::{Publish, SIMULCAST_FRAME_BYTES, UdpPeer};

fn last_size(p: &UdpPeer, track: &str) -> (usize, u64) {
    p.with(|c| {
        c.stats
            .tracks
            .get(track)
            .map_or((0, 0), |s| (s.last_frame_bytes, s.frames_at_size))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_and_choose_simulcast_layers_over_grpc() -> anyhow::Result<()> {
    let gw = start(test_config()).await?;
    let backend = Backend::new(Clients::connect(&gw, None).await?, "simulcast").await?;
    let publish = Publish {
        audio: false,
        video: true,
        data_label: None,
        simulcast: true,
    };
    let (sa, _a) = backend.join("alice", publish).await?;
    let (sb, b) = backend.join_manual("bob", Publish::default()).await?;
    wait_until(Duration::from_secs(10), || {
        let t = backend.tracks_of(&sa);
        if t.len() == 1 && b.with(|p| p.stats.connected) {
            Ok(())
        } else {
            Err(format!("tracks {t:?}"))
        }
    })
    .await?;
    let track = backend.tracks_of(&sa)[0].clone();
    // Carol subscribes automatically: once she has received Alice's video, the gateway has been
    // forwarding it, and Bob, subscribed to nothing, has had every chance to get it too.
    let (sc, c) = backend.join("carol", Publish::default()).await?;
    wait_until(Duration::from_secs(10), || {
        match frames_per_track(&c, std::slice::from_ref(&track))[..] {
            [n] if n >= 10 => Ok(()),
            ref f => Err(format!("carol got {f:?} frames")),
        }
    })
    .await?;
    assert_eq!(
        frames_per_track(&b, std::slice::from_ref(&track)),
        [0],
        "manual subscription: nothing before Subscribe"
    );
    let mut sessions = backend.clients.sessions.clone();
    sessions
        .close_session(pb::CloseSessionRequest { session_id: sc })
        .await?;

    sessions
        .subscribe(pb::SubscribeRequest {
            session_id: sb.clone(),
            track_ids: vec![track.clone()],
        })
        .await?;
    let top = SIMULCAST_FRAME_BYTES[2].1;
    wait_until(Duration::from_secs(10), || match last_size(&b, &track) {
        (bytes, n) if bytes == top && n >= 10 => Ok(()),
        other => Err(format!("bob at {other:?}")),
    })
    .await?;

    sessions
        .set_track_preference(pb::SetTrackPreferenceRequest {
            session_id: sb.clone(),
            track_id: track.clone(),
            max_layer: Some(0),
            paused: false,
        })
        .await?;
    let low = SIMULCAST_FRAME_BYTES[0].1;
    wait_until(Duration::from_secs(10), || match last_size(&b, &track) {
        (bytes, n) if bytes == low && n >= 10 => Ok(()),
        other => Err(format!("bob at {other:?}")),
    })
    .await?;
    wait_until(Duration::from_secs(5), || {
        let wanted: Vec<Vec<String>> = backend
            .events_of(&sa)
            .into_iter()
            .filter_map(|k| match k {
                pb::event::Kind::TrackLayersWanted(w) => Some(w.rids),
                _ => None,
            })
            .collect();
        if wanted.last() == Some(&vec!["q".to_string()]) {
            Ok(())
        } else {
            Err(format!("wanted {wanted:?}"))
        }
    })
    .await?;

    // The decisions were explained to the backend: bob first received f for his preference,
    // then q was chosen and waited for its key frame, then q was forwarded.
    let layer_events = || -> Vec<(String, String, i32, bool, u64)> {
        backend
            .events_of(&sb)
            .into_iter()
            .filter_map(|k| match k {
                pb::event::Kind::SubscriptionLayerChanged(e) if e.track_id == track => Some((
                    e.layer,
                    e.target_layer,
                    e.reason,
                    e.keyframe_wait,
                    e.estimate_bps,
                )),
                _ => None,
            })
            .collect()
    };
    wait_until(Duration::from_secs(5), || {
        let ev = layer_events();
        let pref = pb::LayerReason::Preference as i32;
        let is = |e: &(String, String, i32, bool, u64), layer: &str, target: &str, wait: bool| {
            e.0 == layer && e.1 == target && e.2 == pref && e.3 == wait
        };
        // The estimate comes from bob's TWCC feedback over real UDP.
        let f_then_q = ev
            .iter()
            .position(|e| is(e, "f", "f", false))
            .and_then(|i| {
                ev[i..]
                    .iter()
                    .position(|e| is(e, "f", "q", true))
                    .map(|j| i + j)
            })
            .is_some_and(|i| ev[i..].iter().any(|e| is(e, "q", "q", false) && e.4 > 0));
        if f_then_q {
            Ok(())
        } else {
            Err(format!("layer events {ev:?}"))
        }
    })
    .await?;

    // Errors: an unknown track, a malformed one, a preference without a subscription.
    let e = sessions
        .subscribe(pb::SubscribeRequest {
            session_id: sb.clone(),
            track_ids: vec!["tr_aaaaaaaaaaaaaaaaaaaa".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    let e = sessions
        .subscribe(pb::SubscribeRequest {
            session_id: sb.clone(),
            track_ids: vec!["bogus".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    sessions
        .unsubscribe(pb::UnsubscribeRequest {
            session_id: sb.clone(),
            track_ids: vec![track.clone()],
        })
        .await?;
    let e = sessions
        .set_track_preference(pb::SetTrackPreferenceRequest {
            session_id: sb.clone(),
            track_id: track.clone(),
            max_layer: None,
            paused: true,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    gw.shutdown().await;
    Ok(())
}
