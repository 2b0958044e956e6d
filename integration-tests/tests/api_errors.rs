//! Every error class of the control API, one test each, over real gRPC. Invalid fields are named
//! in a `BadRequest` detail.

use switchboard::v1 as pb;
use switchboard_integration_tests::*;
use tonic::Code;
use tonic_types::StatusExt;

fn field_of(status: &tonic::Status) -> String {
    status
        .get_details_bad_request()
        .and_then(|b| b.field_violations.first().map(|v| v.field.clone()))
        .unwrap_or_default()
}

async fn setup() -> anyhow::Result<(switchboard_gateway::Gateway, Clients)> {
    let gw = start(test_config()).await?;
    let c = Clients::connect(&gw, None).await?;
    Ok((gw, c))
}

async fn session_in(c: &Clients, room: &str) -> anyhow::Result<String> {
    c.create_room(room).await?;
    Ok(c.sessions
        .clone()
        .create_session(pb::CreateSessionRequest {
            room_id: room.into(),
            participant_id: "p".into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .session
        .unwrap()
        .session_id)
}

#[tokio::test]
async fn invalid_argument_bad_sdp_names_the_sdp_field() -> anyhow::Result<()> {
    let (gw, c) = setup().await?;
    let s = session_in(&c, "r").await?;
    for sdp in ["this is not sdp", "v=0\r\n"] {
        let e = c
            .sessions
            .clone()
            .apply_offer(pb::ApplyOfferRequest {
                session_id: s.clone(),
                sdp: sdp.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e}");
        assert_eq!(field_of(&e), "sdp");
    }
    let e = c
        .sessions
        .clone()
        .apply_offer(pb::ApplyOfferRequest {
            session_id: s.clone(),
            sdp: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), field_of(&e).as_str()),
        (Code::InvalidArgument, "sdp")
    );
    gw.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn invalid_argument_empty_and_malformed_ids_name_their_field() -> anyhow::Result<()> {
    let (gw, c) = setup().await?;
    let e = c
        .rooms
        .clone()
        .get_room(pb::GetRoomRequest {
            room_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), field_of(&e).as_str()),
        (Code::InvalidArgument, "room_id")
    );
    let e = c
        .rooms
        .clone()
        .create_room(pb::CreateRoomRequest {
            room_id: "no spaces".into(),
            options: None,
        })
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), field_of(&e).as_str()),
        (Code::InvalidArgument, "room_id")
    );
    let e = c
        .sessions
        .clone()
        .get_session(pb::GetSessionRequest {
            session_id: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), field_of(&e).as_str()),
        (Code::InvalidArgument, "session_id")
    );
    c.create_room("r").await?;
    let e = c
        .sessions
        .clone()
        .create_session(pb::CreateSessionRequest {
            room_id: "r".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), field_of(&e).as_str()),
        (Code::InvalidArgument, "participant_id")
    );
    let e = c
        .rooms
        .clone()
        .create_room(pb::CreateRoomRequest {
            room_id: "big".into(),
            options: Some(pb::RoomOptions {
                metadata: "x".repeat(5000),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), field_of(&e).as_str()),
        (Code::InvalidArgument, "options.metadata")
    );
    gw.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn invalid_argument_bad_candidate_names_the_candidate_field() -> anyhow::Result<()> {
    let (gw, c) = setup().await?;
    let s = session_in(&c, "r").await?;
    let mut sessions = c.sessions.clone();
    for (candidate, eoc) in [
        ("candidate:garbage", false),
        ("", false),
        ("candidate:1 1 udp 1 127.0.0.1 9 typ host", true),
    ] {
        let e = sessions
            .add_ice_candidate(pb::AddIceCandidateRequest {
                session_id: s.clone(),
                candidate: candidate.into(),
                sdp_mid: String::new(),
                end_of_candidates: eoc,
            })
            .await
            .unwrap_err();
        assert_eq!(
            (e.code(), field_of(&e).as_str()),
            (Code::InvalidArgument, "candidate"),
            "{e}"
        );
    }
    gw.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn not_found_for_unknown_room_and_session() -> anyhow::Result<()> {
    let (gw, c) = setup().await?;
    let e = c
        .rooms
        .clone()
        .get_room(pb::GetRoomRequest {
            room_id: "ghost".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = c
        .rooms
        .clone()
        .delete_room(pb::DeleteRoomRequest {
            room_id: "ghost".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = c
        .sessions
        .clone()
        .create_session(pb::CreateSessionRequest {
            room_id: "ghost".into(),
            participant_id: "p".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    // Well-formed ids that name nothing, on an existing worker and on a worker that does not exist.
    for id in ["ss_00abcdefghijkmnpqrstuv", "ss_ffabcdefghijkmnpqrstuv"] {
        let e = c
            .sessions
            .clone()
            .close_session(pb::CloseSessionRequest {
                session_id: id.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{id}: {e}");
    }
    gw.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn failed_precondition_for_an_answer_without_an_offer() -> anyhow::Result<()> {
    let (gw, c) = setup().await?;
    let s = session_in(&c, "r").await?;
    let sdp =
        switchboard_testpeer::PeerCore::new(std::time::Instant::now(), "127.0.0.1:9".parse()?)
            .create_offer(av("x"));
    let e = c
        .sessions
        .clone()
        .apply_answer(pb::ApplyAnswerRequest {
            session_id: s,
            sdp,
            offer_id: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    gw.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn already_exists_for_a_room_id_with_other_options_and_idempotent_otherwise()
-> anyhow::Result<()> {
    let (gw, c) = setup().await?;
    let opts = |n| {
        Some(pb::RoomOptions {
            max_sessions: n,
            ..Default::default()
        })
    };
    let mut rooms = c.rooms.clone();
    let first = rooms
        .create_room(pb::CreateRoomRequest {
            room_id: "same".into(),
            options: opts(5),
        })
        .await?
        .into_inner();
    assert!(first.created);
    let again = rooms
        .create_room(pb::CreateRoomRequest {
            room_id: "same".into(),
            options: opts(5),
        })
        .await?
        .into_inner();
    assert!(!again.created);
    assert_eq!(again.room, first.room);
    let e = rooms
        .create_room(pb::CreateRoomRequest {
            room_id: "same".into(),
            options: opts(6),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    gw.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn resource_exhausted_when_a_room_is_full() -> anyhow::Result<()> {
    let (gw, c) = setup().await?;
    c.rooms
        .clone()
        .create_room(pb::CreateRoomRequest {
            room_id: "tiny".into(),
            options: Some(pb::RoomOptions {
                max_sessions: 1,
                ..Default::default()
            }),
        })
        .await?;
    let req = || pb::CreateSessionRequest {
        room_id: "tiny".into(),
        participant_id: "p".into(),
        ..Default::default()
    };
    c.sessions.clone().create_session(req()).await?;
    let e = c.sessions.clone().create_session(req()).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e}");
    gw.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn unauthenticated_without_the_right_api_key() -> anyhow::Result<()> {
    let mut cfg = test_config();
    cfg.grpc.api_key = "s3cret".into();
    let gw = start(cfg).await?;
    for key in [None, Some("wrong")] {
        let c = Clients::connect(&gw, key).await?;
        let e = c
            .rooms
            .clone()
            .list_rooms(pb::ListRoomsRequest {})
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{key:?}");
        let e = c
            .events
            .clone()
            .watch_events(pb::WatchEventsRequest::default())
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
    }
    let c = Clients::connect(&gw, Some("s3cret")).await?;
    c.rooms.clone().list_rooms(pb::ListRoomsRequest {}).await?;
    gw.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn unavailable_while_shutting_down_never_internal() -> anyhow::Result<()> {
    let (gw, c) = setup().await?;
    let handle = gw.handle();
    gw.shutdown().await;
    let spec = switchboard_gateway::core::RoomSpec {
        id: None,
        max_sessions: None,
        empty_timeout: None,
        metadata: String::new(),
        created_at: std::time::SystemTime::now(),
        backend_data_labels: Vec::new(),
    };
    let e = handle.create_room(spec).await.unwrap_err();
    assert_eq!(tonic::Status::from(e).code(), Code::Unavailable);
    // The listener is gone too.
    assert!(
        c.rooms
            .clone()
            .list_rooms(pb::ListRoomsRequest {})
            .await
            .is_err()
    );
    Ok(())
}

#[tokio::test]
async fn resource_exhausted_when_a_worker_queue_is_full() -> anyhow::Result<()> {
    let mut cfg = test_config();
    cfg.media.workers = 1;
    cfg.limits.command_queue = 1;
    let gw = start(cfg).await?;
    let handle = gw.handle();
    // Many calls at once against a queue of one: the ones that find it full are refused at once
    // (RESOURCE_EXHAUSTED), never queued without bound; the others succeed.
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..500 {
        let h = handle.clone();
        set.spawn(async move { h.list_rooms().await });
    }
    let (mut ok, mut busy) = (0, 0);
    while let Some(r) = set.join_next().await {
        match r? {
            Ok(_) => ok += 1,
            Err(e) => {
                let status = tonic::Status::from(e);
                assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
                busy += 1;
            }
        }
    }
    assert!(ok >= 1 && busy >= 1, "ok {ok}, busy {busy}");
    gw.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn permission_denied_when_a_session_without_subscribe_subscribes() -> anyhow::Result<()> {
    let (gw, c) = setup().await?;
    c.create_room("perm").await?;
    let s = c
        .sessions
        .clone()
        .create_session(pb::CreateSessionRequest {
            room_id: "perm".into(),
            participant_id: "viewer".into(),
            permissions: Some(pb::Permissions {
                publish: true,
                subscribe: false,
                data: true,
            }),
            manual_subscribe: true,
            ..Default::default()
        })
        .await?
        .into_inner()
        .session
        .unwrap()
        .session_id;
    let e = c
        .sessions
        .clone()
        .subscribe(pb::SubscribeRequest {
            session_id: s,
            track_ids: vec!["tr_abcdefghijkmnpqrstuv".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    gw.shutdown().await;
    Ok(())
}
