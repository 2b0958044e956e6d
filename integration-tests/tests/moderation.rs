//! Moderation over real gRPC and UDP: server-side mute of a Track and removal of a Participant.

use std::time::Duration;

use switchboard::v1 as pb;
use switchboard_integration_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mute_a_track_and_remove_a_participant() -> anyhow::Result<()> {
    let gw = start(test_config()).await?;
    let backend = Backend::new(Clients::connect(&gw, None).await?, "mod").await?;
    let (sa, _a) = backend.join("alice", av("chat")).await?;
    let (_sb, b) = backend.join("bob", av("chat")).await?;
    wait_until(Duration::from_secs(10), || {
        let f = min_frames(&b, &backend.tracks_of(&sa));
        if f >= 10 {
            Ok(())
        } else {
            Err(format!("{f} frames"))
        }
    })
    .await?;
    let tracks = backend.tracks_of(&sa);
    let mut rooms = backend.clients.rooms.clone();
    for t in &tracks {
        rooms
            .mute_track(pb::MuteTrackRequest {
                room_id: "mod".into(),
                track_id: t.clone(),
                muted: true,
            })
            .await?;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = min_frames(&b, &tracks);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        min_frames(&b, &tracks),
        before,
        "muted tracks are not forwarded"
    );
    wait_until(Duration::from_secs(5), || {
        let n = backend
            .events_of(&sa)
            .into_iter()
            .filter(|k| matches!(k, pb::event::Kind::TrackMuted(m) if m.muted))
            .count();
        if n == 2 {
            Ok(())
        } else {
            Err(format!("{n} TrackMuted events"))
        }
    })
    .await?;

    let e = rooms
        .mute_track(pb::MuteTrackRequest {
            room_id: "mod".into(),
            track_id: "tr_aaaaaaaaaaaaaaaaaaaa".into(),
            muted: true,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);

    let r = rooms
        .remove_participant(pb::RemoveParticipantRequest {
            room_id: "mod".into(),
            participant_id: "alice".into(),
        })
        .await?
        .into_inner();
    assert_eq!(r.closed_sessions, 1);
    wait_until(Duration::from_secs(5), || {
        let removed = backend.events_of(&sa).iter().any(|k| {
            matches!(k,
            pb::event::Kind::SessionClosed(c) if c.reason == pb::SessionCloseReason::Removed as i32)
        });
        if removed {
            Ok(())
        } else {
            Err("no SessionClosed{REMOVED}".into())
        }
    })
    .await?;
    let e = rooms
        .remove_participant(pb::RemoveParticipantRequest {
            room_id: "mod".into(),
            participant_id: "alice".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    gw.shutdown().await;
    Ok(())
}
