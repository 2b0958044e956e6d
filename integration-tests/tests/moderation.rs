//! Moderation over real gRPC and UDP: server-side mute of a Track and removal of a Participant.

use std::time::Duration;

use switchboard::v1 as pb;
use switchboard_integration_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mute_a_track_and_remove_a_participant() -> anyhow::Result<()> {
    let gw = start(test_config()).await?;
    let backend = Backend::new(Clients::connect(&gw, None).await?, "mod").await?;
    let (sa, a) = backend.join("alice", av("chat")).await?;
    let (sb, b) = backend.join("bob", av("chat")).await?;
    media_both_ways(&backend, (&sa, &a), (&sb, &b), 10).await?;
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
    // Bob's Tracks go on to Alice through the same Worker: once 20 more frames of each have
    // arrived, whatever of Alice's was on its way before the mute has arrived too. From then on,
    // while 20 more of Bob's frames reach Alice, not one of Alice's reaches Bob.
    frames_flow(&backend, &sb, &a, 20, "bob to alice, draining").await?;
    let before = frames_per_track(&b, &tracks);
    frames_flow(&backend, &sb, &a, 20, "bob to alice, while alice is muted").await?;
    assert_eq!(
        frames_per_track(&b, &tracks),
        before,
        "muted tracks are not forwarded"
    );

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
