//! One contract, two doors: the same bad inputs sent over gRPC and through `GatewayHandle` (what
//! an embedder calls) are refused with the same status code and the same named field. Every rule
//! lives in the core, so neither door can be looser than the other.

use std::future::Future;
use std::pin::Pin;

use switchboard::v1 as pb;
use switchboard::v1::data_service_client::DataServiceClient;
use switchboard_gateway::core::{
    IceCandidate, ParticipantId, Permissions, RoomId, RoomSpec, SessionId, SessionSpec, TrackId,
    TrackPreference,
};
use switchboard_gateway::handle::DataMessage;
use switchboard_gateway::{GatewayError, GatewayHandle};
use switchboard_integration_tests::*;
use tonic::Code;
use tonic_types::StatusExt;

type Fut<'a> = Pin<Box<dyn Future<Output = Result<(), tonic::Status>> + 'a>>;

fn field_of(status: &tonic::Status) -> String {
    status
        .get_details_bad_request()
        .and_then(|b| b.field_violations.first().map(|v| v.field.clone()))
        .unwrap_or_default()
}

/// The status a handle error becomes (the API's one table), or the refusal of a typed
/// constructor the embedder calls before the handle.
fn status(e: GatewayError) -> tonic::Status {
    tonic::Status::from(e)
}

/// What a bad input must be refused with: a code, and for INVALID_ARGUMENT the field.
type Expect = (Code, &'static str);

struct Ids {
    room: String,
    full_room: String,
    session: String,
    unknown_session: String,
    track: String,
}

fn room_spec(room: &str) -> RoomSpec {
    RoomSpec {
        id: Some(RoomId::parse(room).unwrap()),
        max_sessions: None,
        empty_timeout: None,
        metadata: String::new(),
        created_at: std::time::SystemTime::UNIX_EPOCH,
        backend_data_labels: Vec::new(),
    }
}

fn session_spec(room: &str, metadata: String) -> SessionSpec {
    SessionSpec {
        room: RoomId::parse(room).unwrap(),
        participant: ParticipantId::parse("p").unwrap(),
        metadata,
        permissions: Permissions::default(),
        created_at: std::time::SystemTime::UNIX_EPOCH,
        auto_subscribe: true,
    }
}

/// One bad input, through both doors.
struct Case {
    name: &'static str,
    expect: Expect,
    grpc: for<'a> fn(
        &'a Clients,
        &'a DataServiceClient<tonic::transport::Channel>,
        &'a Ids,
    ) -> Fut<'a>,
    handle: for<'a> fn(&'a GatewayHandle, &'a Ids) -> Fut<'a>,
}

fn ok_or_status<T>(r: Result<T, GatewayError>) -> Result<(), tonic::Status> {
    r.map(|_| ()).map_err(status)
}

fn constructor<T>(r: Result<T, switchboard_gateway::core::CoreError>) -> Result<T, tonic::Status> {
    r.map_err(|e| status(GatewayError::from(e)))
}

fn sid(s: &str) -> SessionId {
    SessionId::parse(s).unwrap()
}

fn options(f: impl FnOnce(&mut pb::RoomOptions)) -> pb::RoomOptions {
    let mut o = pb::RoomOptions::default();
    f(&mut o);
    o
}

fn spec(f: impl FnOnce(&mut RoomSpec)) -> RoomSpec {
    let mut s = room_spec("bad");
    f(&mut s);
    s
}

async fn room_grpc(c: &Clients, options: pb::RoomOptions) -> Result<(), tonic::Status> {
    let req = pb::CreateRoomRequest {
        room_id: "bad".into(),
        options: Some(options),
        region_hint: String::new(),
    };
    c.rooms.clone().create_room(req).await.map(|_| ())
}

async fn session_grpc(c: &Clients, room: &str, metadata: String) -> Result<(), tonic::Status> {
    let req = pb::CreateSessionRequest {
        room_id: room.into(),
        participant_id: "p".into(),
        metadata,
        ..Default::default()
    };
    c.sessions.clone().create_session(req).await.map(|_| ())
}

async fn offer_grpc(c: &Clients, session: &str, sdp: &str) -> Result<(), tonic::Status> {
    let req = pb::ApplyOfferRequest {
        session_id: session.into(),
        sdp: sdp.into(),
    };
    c.sessions.clone().apply_offer(req).await.map(|_| ())
}

async fn candidate_grpc(
    c: &Clients,
    session: &str,
    candidate: &str,
    end_of_candidates: bool,
) -> Result<(), tonic::Status> {
    let req = pb::AddIceCandidateRequest {
        session_id: session.into(),
        candidate: candidate.into(),
        end_of_candidates,
        ..Default::default()
    };
    c.sessions.clone().add_ice_candidate(req).await.map(|_| ())
}

const LINE: &str = "candidate:1 1 udp 1 192.0.2.1 9 typ host";

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "33 backend data labels",
            expect: (Code::InvalidArgument, "options.backend_data_labels"),
            grpc: |c, _, _| {
                let labels = (0..33).map(|i| format!("l{i}")).collect();
                Box::pin(room_grpc(c, options(|o| o.backend_data_labels = labels)))
            },
            handle: |h, _| {
                let labels = (0..33).map(|i| format!("l{i}")).collect();
                Box::pin(async move {
                    ok_or_status(
                        h.create_room(spec(|s| s.backend_data_labels = labels))
                            .await,
                    )
                })
            },
        },
        Case {
            name: "an empty backend data label",
            expect: (Code::InvalidArgument, "options.backend_data_labels"),
            grpc: |c, _, _| {
                Box::pin(room_grpc(
                    c,
                    options(|o| o.backend_data_labels = vec![String::new()]),
                ))
            },
            handle: |h, _| {
                let s = spec(|s| s.backend_data_labels = vec![String::new()]);
                Box::pin(async move { ok_or_status(h.create_room(s).await) })
            },
        },
        Case {
            name: "room metadata over 4096 bytes",
            expect: (Code::InvalidArgument, "options.metadata"),
            grpc: |c, _, _| Box::pin(room_grpc(c, options(|o| o.metadata = "m".repeat(4097)))),
            handle: |h, _| {
                let s = spec(|s| s.metadata = "m".repeat(4097));
                Box::pin(async move { ok_or_status(h.create_room(s).await) })
            },
        },
        Case {
            name: "max_sessions over rooms.max_sessions_limit",
            expect: (Code::InvalidArgument, "options.max_sessions"),
            grpc: |c, _, _| Box::pin(room_grpc(c, options(|o| o.max_sessions = 1_000_000))),
            handle: |h, _| {
                let s = spec(|s| s.max_sessions = Some(1_000_000));
                Box::pin(async move { ok_or_status(h.create_room(s).await) })
            },
        },
        Case {
            name: "session metadata over 4096 bytes",
            expect: (Code::InvalidArgument, "metadata"),
            grpc: |c, _, ids| Box::pin(session_grpc(c, &ids.room, "m".repeat(4097))),
            handle: |h, ids| {
                let s = session_spec(&ids.room, "m".repeat(4097));
                Box::pin(async move { ok_or_status(h.create_session(s).await) })
            },
        },
        Case {
            name: "a full room",
            expect: (Code::ResourceExhausted, ""),
            grpc: |c, _, ids| Box::pin(session_grpc(c, &ids.full_room, String::new())),
            handle: |h, ids| {
                let s = session_spec(&ids.full_room, String::new());
                Box::pin(async move { ok_or_status(h.create_session(s).await) })
            },
        },
        Case {
            name: "an empty offer",
            expect: (Code::InvalidArgument, "sdp"),
            grpc: |c, _, ids| Box::pin(offer_grpc(c, &ids.session, "")),
            handle: |h, ids| {
                Box::pin(
                    async move { ok_or_status(h.apply_offer(sid(&ids.session), "".into()).await) },
                )
            },
        },
        Case {
            name: "an empty offer for an unknown session",
            expect: (Code::InvalidArgument, "sdp"),
            grpc: |c, _, ids| Box::pin(offer_grpc(c, &ids.unknown_session, "")),
            handle: |h, ids| {
                let s = sid(&ids.unknown_session);
                Box::pin(async move { ok_or_status(h.apply_offer(s, "".into()).await) })
            },
        },
        Case {
            name: "an offer that is not SDP",
            expect: (Code::InvalidArgument, "sdp"),
            grpc: |c, _, ids| Box::pin(offer_grpc(c, &ids.session, "not sdp")),
            handle: |h, ids| {
                let s = sid(&ids.session);
                Box::pin(async move { ok_or_status(h.apply_offer(s, "not sdp".into()).await) })
            },
        },
        Case {
            name: "an empty answer",
            expect: (Code::InvalidArgument, "sdp"),
            grpc: |c, _, ids| {
                let req = pb::ApplyAnswerRequest {
                    session_id: ids.session.clone(),
                    sdp: String::new(),
                    offer_id: 0,
                };
                Box::pin(async move { c.sessions.clone().apply_answer(req).await.map(|_| ()) })
            },
            handle: |h, ids| {
                let s = sid(&ids.session);
                Box::pin(async move { ok_or_status(h.apply_answer(s, String::new(), None).await) })
            },
        },
        Case {
            name: "an unknown session",
            expect: (Code::NotFound, ""),
            grpc: |c, _, ids| {
                let req = pb::GetSessionRequest {
                    session_id: ids.unknown_session.clone(),
                };
                Box::pin(async move { c.sessions.clone().get_session(req).await.map(|_| ()) })
            },
            handle: |h, ids| {
                let s = sid(&ids.unknown_session);
                Box::pin(async move { ok_or_status(h.get_session(s).await) })
            },
        },
        Case {
            name: "a candidate with end_of_candidates set",
            expect: (Code::InvalidArgument, "candidate"),
            grpc: |c, _, ids| Box::pin(candidate_grpc(c, &ids.session, LINE, true)),
            handle: |h, ids| {
                Box::pin(async move {
                    let c = constructor(IceCandidate::from_parts(LINE.into(), true))?;
                    ok_or_status(h.add_ice_candidate(sid(&ids.session), c).await)
                })
            },
        },
        Case {
            name: "an empty candidate",
            expect: (Code::InvalidArgument, "candidate"),
            grpc: |c, _, ids| Box::pin(candidate_grpc(c, &ids.session, "", false)),
            handle: |h, ids| {
                // Built directly, past the constructor: the core itself refuses it.
                let c = IceCandidate::Line(String::new());
                Box::pin(
                    async move { ok_or_status(h.add_ice_candidate(sid(&ids.session), c).await) },
                )
            },
        },
        Case {
            name: "a candidate that does not parse",
            expect: (Code::InvalidArgument, "candidate"),
            grpc: |c, _, ids| Box::pin(candidate_grpc(c, &ids.session, "candidate:x", false)),
            handle: |h, ids| {
                let c = IceCandidate::Line("candidate:x".into());
                Box::pin(
                    async move { ok_or_status(h.add_ice_candidate(sid(&ids.session), c).await) },
                )
            },
        },
        Case {
            name: "a subscribe without tracks",
            expect: (Code::InvalidArgument, "track_ids"),
            grpc: |c, _, ids| {
                let req = pb::SubscribeRequest {
                    session_id: ids.session.clone(),
                    track_ids: vec![],
                };
                Box::pin(async move { c.sessions.clone().subscribe(req).await.map(|_| ()) })
            },
            handle: |h, ids| {
                Box::pin(async move { ok_or_status(h.subscribe(sid(&ids.session), vec![]).await) })
            },
        },
        Case {
            name: "an unsubscribe without tracks",
            expect: (Code::InvalidArgument, "track_ids"),
            grpc: |c, _, ids| {
                let req = pb::UnsubscribeRequest {
                    session_id: ids.session.clone(),
                    track_ids: vec![],
                };
                Box::pin(async move { c.sessions.clone().unsubscribe(req).await.map(|_| ()) })
            },
            handle: |h, ids| {
                Box::pin(
                    async move { ok_or_status(h.unsubscribe(sid(&ids.session), vec![]).await) },
                )
            },
        },
        Case {
            name: "max_layer 256",
            expect: (Code::InvalidArgument, "max_layer"),
            grpc: |c, _, ids| {
                let req = pb::SetTrackPreferenceRequest {
                    session_id: ids.session.clone(),
                    track_id: ids.track.clone(),
                    max_layer: Some(256),
                    paused: false,
                };
                Box::pin(async move {
                    c.sessions
                        .clone()
                        .set_track_preference(req)
                        .await
                        .map(|_| ())
                })
            },
            handle: |h, ids| {
                Box::pin(async move {
                    let pref = constructor(TrackPreference::new(Some(256), false))?;
                    let t = TrackId::parse(&ids.track).unwrap();
                    ok_or_status(h.set_track_preference(sid(&ids.session), t, pref).await)
                })
            },
        },
        Case {
            name: "text data that is not UTF-8",
            expect: (Code::InvalidArgument, "data"),
            grpc: |_, d, ids| Box::pin(send(d, ids, "chat", vec![0xff, 0xfe], false)),
            handle: |h, ids| Box::pin(send_handle(h, ids, "chat", vec![0xff, 0xfe], false)),
        },
        Case {
            name: "data on an empty label",
            expect: (Code::InvalidArgument, "label"),
            grpc: |_, d, ids| Box::pin(send(d, ids, "", b"x".to_vec(), true)),
            handle: |h, ids| Box::pin(send_handle(h, ids, "", b"x".to_vec(), true)),
        },
        Case {
            name: "data one byte over data.max_message_bytes",
            expect: (Code::InvalidArgument, "data"),
            grpc: |_, d, ids| Box::pin(send(d, ids, "chat", vec![0; 64 * 1024 + 1], true)),
            handle: |h, ids| Box::pin(send_handle(h, ids, "chat", vec![0; 64 * 1024 + 1], true)),
        },
        Case {
            name: "5 MiB of data (over gRPC's default message limit)",
            expect: (Code::InvalidArgument, "data"),
            grpc: |_, d, ids| Box::pin(send(d, ids, "chat", vec![0; 5 << 20], true)),
            handle: |h, ids| Box::pin(send_handle(h, ids, "chat", vec![0; 5 << 20], true)),
        },
    ]
}

async fn send(
    d: &DataServiceClient<tonic::transport::Channel>,
    ids: &Ids,
    label: &str,
    data: Vec<u8>,
    binary: bool,
) -> Result<(), tonic::Status> {
    let req = pb::SendDataRequest {
        room_id: ids.room.clone(),
        session_ids: vec![],
        label: label.into(),
        data,
        binary,
        reliable: false,
    };
    d.clone().send_data(req).await.map(|_| ())
}

async fn send_handle(
    h: &GatewayHandle,
    ids: &Ids,
    label: &str,
    data: Vec<u8>,
    binary: bool,
) -> Result<(), tonic::Status> {
    let msg = DataMessage {
        label: label.into(),
        data,
        binary,
        ..DataMessage::default()
    };
    ok_or_status(h.send_data(RoomId::parse(&ids.room).unwrap(), msg).await)
}

#[tokio::test]
async fn the_same_bad_inputs_are_refused_the_same_way_through_grpc_and_the_handle()
-> anyhow::Result<()> {
    let gw = start(test_config()).await?;
    let c = Clients::connect(&gw, None).await?;
    // The client may send large messages: the gateway, not the client, decides what is too big.
    let ch = tonic::transport::Channel::from_shared(format!("http://{}", gw.grpc_addr()))?
        .connect()
        .await?;
    let data = DataServiceClient::new(ch).max_encoding_message_size(64 << 20);
    let h = gw.handle();
    let room = c.create_room("doors").await?.room_id;
    let full_room = c
        .rooms
        .clone()
        .create_room(pb::CreateRoomRequest {
            room_id: "full".into(),
            options: Some(pb::RoomOptions {
                max_sessions: 1,
                ..Default::default()
            }),
            region_hint: String::new(),
        })
        .await?
        .into_inner()
        .room
        .unwrap()
        .room_id;
    let (_, _) = h
        .create_session(session_spec(&full_room, String::new()))
        .await?;
    let (session, _) = h.create_session(session_spec(&room, String::new())).await?;
    let ids = Ids {
        room,
        full_room,
        session: session.id.to_string(),
        // A well-formed id of Worker 0 that no Session has.
        unknown_session: "ss_00aaaaaaaaaaaaaaaaaaaa".into(),
        // A well-formed Track id nobody published.
        track: "tr_aaaaaaaaaaaaaaaaaaaa".into(),
    };
    let mut wrong = Vec::new();
    for case in cases() {
        let by_grpc = (case.grpc)(&c, &data, &ids).await;
        let by_handle = (case.handle)(&h, &ids).await;
        let seen = |r: &Result<(), tonic::Status>| match r {
            Ok(()) => (Code::Ok, String::new()),
            Err(s) => (s.code(), field_of(s)),
        };
        let (g, e) = (seen(&by_grpc), seen(&by_handle));
        let want = (case.expect.0, case.expect.1.to_string());
        if g != want || e != want {
            wrong.push(format!(
                "{}: want {want:?}, gRPC gave {g:?} ({:?}), the handle gave {e:?} ({:?})",
                case.name,
                by_grpc.err().map(|s| s.message().to_string()),
                by_handle.err().map(|s| s.message().to_string()),
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    gw.shutdown().await;
    Ok(())
}
