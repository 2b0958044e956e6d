//! The error contract of the control API, as tables over real gRPC: one row per error a backend
//! can cause, naming the RPC, the bad input, the status code it gets and the field its
//! `BadRequest` detail names (`None`: the status carries no `BadRequest` detail). Every row runs
//! against one gateway; a failure lists every row that broke the contract.

use switchboard::v1 as pb;
use switchboard_integration_tests::*;
use tonic::Code;
use tonic_types::StatusExt;

/// One RPC with its request, as a row of a table sends it.
enum Call {
    CreateRoom(pb::CreateRoomRequest),
    GetRoom(pb::GetRoomRequest),
    DeleteRoom(pb::DeleteRoomRequest),
    ListRooms,
    CreateSession(pb::CreateSessionRequest),
    GetSession(pb::GetSessionRequest),
    CloseSession(pb::CloseSessionRequest),
    ApplyOffer(pb::ApplyOfferRequest),
    ApplyAnswer(pb::ApplyAnswerRequest),
    AddIceCandidate(pb::AddIceCandidateRequest),
    Subscribe(pb::SubscribeRequest),
    WatchEvents(pb::WatchEventsRequest),
}

impl Call {
    /// Sends the call; `Ok` when the gateway accepted it.
    async fn send(self, c: &Clients) -> Result<(), tonic::Status> {
        let (mut rooms, mut sessions) = (c.rooms.clone(), c.sessions.clone());
        match self {
            Self::CreateRoom(r) => rooms.create_room(r).await.map(drop),
            Self::GetRoom(r) => rooms.get_room(r).await.map(drop),
            Self::DeleteRoom(r) => rooms.delete_room(r).await.map(drop),
            Self::ListRooms => rooms
                .list_rooms(pb::ListRoomsRequest::default())
                .await
                .map(drop),
            Self::CreateSession(r) => sessions.create_session(r).await.map(drop),
            Self::GetSession(r) => sessions.get_session(r).await.map(drop),
            Self::CloseSession(r) => sessions.close_session(r).await.map(drop),
            Self::ApplyOffer(r) => sessions.apply_offer(r).await.map(drop),
            Self::ApplyAnswer(r) => sessions.apply_answer(r).await.map(drop),
            Self::AddIceCandidate(r) => sessions.add_ice_candidate(r).await.map(drop),
            Self::Subscribe(r) => sessions.subscribe(r).await.map(drop),
            Self::WatchEvents(r) => c.events.clone().watch_events(r).await.map(drop),
        }
    }
}

/// One row of the contract.
struct Row {
    /// The RPC, as the `.proto` names it.
    rpc: &'static str,
    /// What is wrong with the request.
    input: &'static str,
    call: Call,
    /// The status code the gateway must answer with.
    code: Code,
    /// The field the `BadRequest` detail must name; `None`: no `BadRequest` detail.
    field: Option<&'static str>,
}

fn row(
    rpc: &'static str,
    input: &'static str,
    call: Call,
    code: Code,
    field: Option<&'static str>,
) -> Row {
    Row {
        rpc,
        input,
        call,
        code,
        field,
    }
}

/// The field named by the first violation of the status's `BadRequest` detail, if it has one.
fn field_of(status: &tonic::Status) -> Option<String> {
    status
        .get_details_bad_request()
        .and_then(|b| b.field_violations.first().map(|v| v.field.clone()))
}

/// Sends every row in order and fails with the rows whose outcome differs from the table.
async fn check(c: &Clients, rows: Vec<Row>) {
    let mut broken = Vec::new();
    for r in rows {
        let (rpc, input, want) = (r.rpc, r.input, (r.code, r.field.map(str::to_string)));
        let got = match r.call.send(c).await {
            Ok(()) => {
                broken.push(format!("{rpc} with {input}: accepted, want {want:?}"));
                continue;
            }
            Err(e) => ((e.code(), field_of(&e)), e),
        };
        if got.0 != want {
            broken.push(format!(
                "{rpc} with {input}: got {:?} ({}), want {want:?}",
                got.0,
                got.1.message()
            ));
        }
    }
    assert!(
        broken.is_empty(),
        "rows that break the contract:\n{}",
        broken.join("\n")
    );
}

// Request builders, so that a row reads as its RPC and the one value that is wrong.

fn create_room(room_id: &str, options: Option<pb::RoomOptions>) -> Call {
    Call::CreateRoom(pb::CreateRoomRequest {
        room_id: room_id.into(),
        options,
        region_hint: String::new(),
    })
}

fn max_sessions(n: u32) -> Option<pb::RoomOptions> {
    Some(pb::RoomOptions {
        max_sessions: n,
        ..Default::default()
    })
}

fn create_session(room_id: &str, participant_id: &str) -> Call {
    Call::CreateSession(pb::CreateSessionRequest {
        room_id: room_id.into(),
        participant_id: participant_id.into(),
        ..Default::default()
    })
}

fn apply_offer(session_id: &str, sdp: &str) -> Call {
    Call::ApplyOffer(pb::ApplyOfferRequest {
        session_id: session_id.into(),
        sdp: sdp.into(),
    })
}

fn add_candidate(session_id: &str, candidate: &str, end_of_candidates: bool) -> Call {
    Call::AddIceCandidate(pb::AddIceCandidateRequest {
        session_id: session_id.into(),
        candidate: candidate.into(),
        sdp_mid: String::new(),
        end_of_candidates,
    })
}

fn close_session(session_id: &str) -> Call {
    Call::CloseSession(pb::CloseSessionRequest {
        session_id: session_id.into(),
    })
}

/// Creates a Room (with `options`) and, when `permissions` is given, a Session in it; returns the
/// session id.
async fn room_with_session(
    c: &Clients,
    room: &str,
    options: Option<pb::RoomOptions>,
    permissions: Option<pb::Permissions>,
) -> anyhow::Result<String> {
    create_room(room, options).send(c).await?;
    let s = c
        .sessions
        .clone()
        .create_session(pb::CreateSessionRequest {
            room_id: room.into(),
            participant_id: "p".into(),
            permissions,
            manual_subscribe: true,
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(s.session.unwrap().session_id)
}

#[tokio::test]
async fn every_backend_mistake_gets_its_status_and_names_its_field() -> anyhow::Result<()> {
    use Code::{
        AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, PermissionDenied,
        ResourceExhausted,
    };
    let gw = start(test_config()).await?;
    let c = Clients::connect(&gw, None).await?;
    // The state the rows run against: a Session in "r"; "same" made with max_sessions 5; "tiny"
    // full (max_sessions 1, one Session); in "perm" a Session that may not subscribe.
    let s = room_with_session(&c, "r", None, None).await?;
    let s = s.as_str();
    create_room("same", max_sessions(5)).send(&c).await?;
    room_with_session(&c, "tiny", max_sessions(1), None).await?;
    let no_subscribe = pb::Permissions {
        publish: true,
        subscribe: false,
        data: true,
    };
    let viewer = room_with_session(&c, "perm", None, Some(no_subscribe)).await?;
    let real_offer =
        switchboard_testpeer::PeerCore::new(std::time::Instant::now(), "127.0.0.1:9".parse()?)
            .create_offer(av("x"));

    #[rustfmt::skip]
    let rows = vec![
        // INVALID_ARGUMENT: the request itself is wrong; the detail names the field.
        row("ApplyOffer", "text that is not SDP", apply_offer(s, "this is not sdp"), InvalidArgument, Some("sdp")),
        row("ApplyOffer", "SDP with only a version line", apply_offer(s, "v=0\r\n"), InvalidArgument, Some("sdp")),
        row("ApplyOffer", "an empty sdp", apply_offer(s, ""), InvalidArgument, Some("sdp")),
        row("GetRoom", "an empty room_id", Call::GetRoom(pb::GetRoomRequest { room_id: String::new() }), InvalidArgument, Some("room_id")),
        row("CreateRoom", "a room_id with a space", create_room("no spaces", None), InvalidArgument, Some("room_id")),
        row("CreateRoom", "a region_hint with a space", Call::CreateRoom(pb::CreateRoomRequest { room_id: "r2".into(), region_hint: "eu west".into(), ..Default::default() }), InvalidArgument, Some("region_hint")),
        row("GetSession", "a malformed session_id", Call::GetSession(pb::GetSessionRequest { session_id: "nope".into() }), InvalidArgument, Some("session_id")),
        row("CreateSession", "an empty participant_id", create_session("r", ""), InvalidArgument, Some("participant_id")),
        row("CreateRoom", "5000 bytes of metadata", create_room("big", Some(pb::RoomOptions { metadata: "x".repeat(5000), ..Default::default() })), InvalidArgument, Some("options.metadata")),
        row("AddIceCandidate", "a candidate that does not parse", add_candidate(s, "candidate:garbage", false), InvalidArgument, Some("candidate")),
        row("AddIceCandidate", "an empty candidate without end_of_candidates", add_candidate(s, "", false), InvalidArgument, Some("candidate")),
        row("AddIceCandidate", "a candidate together with end_of_candidates", add_candidate(s, "candidate:1 1 udp 1 127.0.0.1 9 typ host", true), InvalidArgument, Some("candidate")),
        // NOT_FOUND: well-formed ids that name nothing.
        row("GetRoom", "an unknown room_id", Call::GetRoom(pb::GetRoomRequest { room_id: "ghost".into() }), NotFound, None),
        row("DeleteRoom", "an unknown room_id", Call::DeleteRoom(pb::DeleteRoomRequest { room_id: "ghost".into() }), NotFound, None),
        row("CreateSession", "an unknown room_id", create_session("ghost", "p"), NotFound, None),
        row("CloseSession", "an unknown session on an existing Worker", close_session("ss_00abcdefghijkmnpqrstuv"), NotFound, None),
        row("CloseSession", "a session on a Worker that does not exist", close_session("ss_ffabcdefghijkmnpqrstuv"), NotFound, None),
        // FAILED_PRECONDITION: right request, wrong moment.
        row("ApplyAnswer", "an answer while no offer is out", Call::ApplyAnswer(pb::ApplyAnswerRequest { session_id: s.into(), sdp: real_offer, offer_id: 0 }), FailedPrecondition, None),
        // ALREADY_EXISTS: the same room_id with other options (same options: idempotent, below).
        row("CreateRoom", "an existing room_id with other options", create_room("same", max_sessions(6)), AlreadyExists, None),
        // RESOURCE_EXHAUSTED: a limit is reached.
        row("CreateSession", "one Session more than max_sessions", create_session("tiny", "p"), ResourceExhausted, None),
        // PERMISSION_DENIED: the Session's permissions forbid it.
        row("Subscribe", "a Session without the subscribe permission", Call::Subscribe(pb::SubscribeRequest { session_id: viewer, track_ids: vec!["tr_abcdefghijkmnpqrstuv".into()] }), PermissionDenied, None),
    ];
    check(&c, rows).await;
    gw.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn unauthenticated_without_the_right_api_key() -> anyhow::Result<()> {
    let mut cfg = test_config();
    cfg.grpc.api_key = "s3cret".into();
    let gw = start(cfg).await?;
    for (key, input) in [(None, "no API key"), (Some("wrong"), "a wrong API key")] {
        let c = Clients::connect(&gw, key).await?;
        #[rustfmt::skip]
        let rows = vec![
            row("ListRooms", input, Call::ListRooms, Code::Unauthenticated, None),
            row("WatchEvents", input, Call::WatchEvents(pb::WatchEventsRequest::default()), Code::Unauthenticated, None),
        ];
        check(&c, rows).await;
    }
    let c = Clients::connect(&gw, Some("s3cret")).await?;
    c.rooms
        .clone()
        .list_rooms(pb::ListRoomsRequest::default())
        .await?;
    gw.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn create_room_is_idempotent_for_the_same_options() -> anyhow::Result<()> {
    let gw = start(test_config()).await?;
    let c = Clients::connect(&gw, None).await?;
    let mut rooms = c.rooms.clone();
    let req = || pb::CreateRoomRequest {
        room_id: "same".into(),
        options: max_sessions(5),
        region_hint: String::new(),
    };
    let first = rooms.create_room(req()).await?.into_inner();
    assert!(first.created);
    let again = rooms.create_room(req()).await?.into_inner();
    assert!(!again.created);
    assert_eq!(again.room, first.room);
    gw.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn unavailable_while_shutting_down_never_internal() -> anyhow::Result<()> {
    let gw = start(test_config()).await?;
    let c = Clients::connect(&gw, None).await?;
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
    let e = Call::ListRooms.send(&c).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e}");
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
        set.spawn(async move { h.list_rooms(Default::default()).await });
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
