//! Room and Session lifecycle over gRPC, and the event stream in order.

use std::time::Duration;

use switchboard::v1 as pb;
use switchboard::v1::event::Kind;
use switchboard_integration_tests::*;

#[tokio::test]
async fn rooms_and_sessions_lifecycle_with_ordered_events() -> anyhow::Result<()> {
    let gw = start(test_config()).await?;
    let c = Clients::connect(&gw, None).await?;
    let mut stream = c
        .events
        .clone()
        .watch_events(pb::WatchEventsRequest::default())
        .await?
        .into_inner();
    let mut rooms = c.rooms.clone();
    let mut sessions = c.sessions.clone();

    let generated = rooms
        .create_room(pb::CreateRoomRequest {
            room_id: String::new(),
            options: Some(pb::RoomOptions {
                max_sessions: 3,
                empty_timeout_seconds: 60,
                metadata: "{\"topic\":\"standup\"}".into(),
                backend_data_labels: vec!["captions".into()],
            }),
            region_hint: String::new(),
        })
        .await?
        .into_inner();
    let gid = generated.room.as_ref().unwrap().room_id.clone();
    assert!(gid.starts_with("rm_"), "{gid}");
    let opts = generated.room.unwrap().options.unwrap();
    assert_eq!((opts.max_sessions, opts.empty_timeout_seconds), (3, 60));
    c.create_room("lobby").await?;
    let listed: Vec<String> = rooms
        .list_rooms(pb::ListRoomsRequest::default())
        .await?
        .into_inner()
        .rooms
        .into_iter()
        .map(|r| r.room_id)
        .collect();
    let mut expected = vec![gid.clone(), "lobby".to_string()];
    expected.sort();
    assert_eq!(listed, expected);
    let defaults = rooms
        .get_room(pb::GetRoomRequest {
            room_id: "lobby".into(),
        })
        .await?
        .into_inner()
        .room
        .unwrap();
    assert_eq!(defaults.options.unwrap().max_sessions, 100);

    let created = sessions
        .create_session(pb::CreateSessionRequest {
            room_id: "lobby".into(),
            participant_id: "ana".into(),
            metadata: "m".into(),
            permissions: Some(pb::Permissions {
                publish: false,
                subscribe: true,
                data: true,
            }),
            manual_subscribe: false,
        })
        .await?
        .into_inner();
    let s = created.session.unwrap();
    assert!(s.session_id.starts_with("ss_"));
    assert_eq!(s.state, pb::SessionState::New as i32);
    assert!(!s.permissions.unwrap().publish);
    let got = sessions
        .get_session(pb::GetSessionRequest {
            session_id: s.session_id.clone(),
        })
        .await?
        .into_inner()
        .session
        .unwrap();
    assert_eq!(got.participant_id, "ana");
    let n = sessions
        .list_sessions(pb::ListSessionsRequest {
            room_id: "lobby".into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .sessions
        .len();
    assert_eq!(n, 1);
    sessions
        .close_session(pb::CloseSessionRequest {
            session_id: s.session_id.clone(),
        })
        .await?;
    let second = sessions
        .create_session(pb::CreateSessionRequest {
            room_id: "lobby".into(),
            participant_id: "ben".into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .session
        .unwrap();
    let closed = rooms
        .delete_room(pb::DeleteRoomRequest {
            room_id: "lobby".into(),
        })
        .await?
        .into_inner()
        .closed_sessions;
    assert_eq!(closed, 1);

    // The stream, in order.
    let mut seen = Vec::new();
    let mut last_seq = 0;
    while seen.len() < 9 {
        let ev = tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await??
            .expect("stream open");
        assert!(ev.sequence > last_seq, "sequence increases");
        last_seq = ev.sequence;
        assert!(ev.time.is_some());
        seen.push((ev.room_id.clone(), ev.session_id.clone(), ev.kind.unwrap()));
    }
    let shape: Vec<&str> = seen
        .iter()
        .map(|(_, _, k)| match k {
            Kind::RoomCreated(_) => "room_created",
            Kind::ParticipantJoined(_) => "joined",
            Kind::SessionClosed(_) => "session_closed",
            Kind::ParticipantLeft(_) => "left",
            Kind::RoomClosed(_) => "room_closed",
            _ => "other",
        })
        .collect();
    assert_eq!(
        shape,
        [
            "room_created",
            "room_created",
            "joined",
            "session_closed",
            "left",
            "joined",
            "session_closed",
            "left",
            "room_closed",
        ]
    );
    assert!(matches!(&seen[3].2, Kind::SessionClosed(c)
        if c.reason == pb::SessionCloseReason::BackendRequest as i32 && c.participant_id == "ana"));
    assert_eq!(seen[3].1, s.session_id);
    assert!(matches!(&seen[6].2, Kind::SessionClosed(c)
        if c.reason == pb::SessionCloseReason::RoomDeleted as i32));
    assert_eq!(seen[6].1, second.session_id);
    assert!(matches!(&seen[8].2, Kind::RoomClosed(c)
        if c.reason == pb::RoomCloseReason::BackendRequest as i32));
    gw.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn watch_events_filters_by_room_and_by_session() -> anyhow::Result<()> {
    let gw = start(test_config()).await?;
    let c = Clients::connect(&gw, None).await?;
    c.create_room("a").await?;
    c.create_room("b").await?;
    let mut only_b = c
        .events
        .clone()
        .watch_events(pb::WatchEventsRequest {
            room_id: "b".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let mk = |room: &str, who: &str| pb::CreateSessionRequest {
        room_id: room.into(),
        participant_id: who.into(),
        ..Default::default()
    };
    let mut sessions = c.sessions.clone();
    sessions.create_session(mk("a", "x")).await?;
    let sb = sessions
        .create_session(mk("b", "y"))
        .await?
        .into_inner()
        .session
        .unwrap()
        .session_id;
    let mut only_sb = c
        .events
        .clone()
        .watch_events(pb::WatchEventsRequest {
            session_id: sb.clone(),
            ..Default::default()
        })
        .await?
        .into_inner();
    sessions.create_session(mk("b", "z")).await?;
    sessions
        .close_session(pb::CloseSessionRequest {
            session_id: sb.clone(),
        })
        .await?;
    let ev = tokio::time::timeout(Duration::from_secs(5), only_b.message())
        .await??
        .unwrap();
    assert_eq!(ev.room_id, "b");
    assert!(matches!(ev.kind, Some(Kind::ParticipantJoined(ref p)) if p.participant_id == "y"));
    let ev = tokio::time::timeout(Duration::from_secs(5), only_b.message())
        .await??
        .unwrap();
    assert!(matches!(ev.kind, Some(Kind::ParticipantJoined(ref p)) if p.participant_id == "z"));
    let ev = tokio::time::timeout(Duration::from_secs(5), only_sb.message())
        .await??
        .unwrap();
    assert_eq!(ev.session_id, sb);
    assert!(matches!(ev.kind, Some(Kind::SessionClosed(_))));
    gw.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn health_and_reflection_are_served() -> anyhow::Result<()> {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let gw = start(test_config()).await?;
    let ch = tonic::transport::Channel::from_shared(format!("http://{}", gw.grpc_addr()))?
        .connect()
        .await?;
    let mut health = HealthClient::new(ch.clone());
    for svc in [
        "switchboard.v1.RoomService",
        "switchboard.v1.SessionService",
        "switchboard.v1.EventService",
    ] {
        let r = health
            .check(HealthCheckRequest {
                service: svc.into(),
            })
            .await?
            .into_inner();
        assert_eq!(r.status, 1, "{svc} serving");
    }
    // Reflection v1 lists our services (grpcurl and buf curl rely on it; v1alpha is served too).
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut refl = ServerReflectionClient::new(ch.clone());
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut resp = refl
        .server_reflection_info(tokio_stream::once(req))
        .await?
        .into_inner();
    let msg = resp.message().await?.expect("one response");
    let Some(MessageResponse::ListServicesResponse(list)) = msg.message_response else {
        anyhow::bail!("unexpected reflection response");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in [
        "switchboard.v1.RoomService",
        "switchboard.v1.SessionService",
        "switchboard.v1.EventService",
        "grpc.health.v1.Health",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
    }
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest as AlphaRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient as AlphaClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest as AlphaReq;
    let mut alpha = AlphaClient::new(ch);
    let req = AlphaRequest {
        host: String::new(),
        message_request: Some(AlphaReq::ListServices(String::new())),
    };
    let mut resp = alpha
        .server_reflection_info(tokio_stream::once(req))
        .await?
        .into_inner();
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse as AlphaResponse;
    let msg = resp.message().await?.expect("one v1alpha response");
    let Some(AlphaResponse::ListServicesResponse(list)) = msg.message_response else {
        anyhow::bail!("unexpected v1alpha reflection response {msg:?}");
    };
    // Each version lists itself; everything else is the same.
    let without_reflection = |names: Vec<String>| -> Vec<String> {
        names
            .into_iter()
            .filter(|n| !n.starts_with("grpc.reflection."))
            .collect()
    };
    let alpha_names = list.service.into_iter().map(|s| s.name).collect();
    assert_eq!(
        without_reflection(alpha_names),
        without_reflection(names),
        "v1alpha lists what v1 lists"
    );
    gw.shutdown().await;
    Ok(())
}
