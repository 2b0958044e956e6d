//! The gRPC edge as a backend meets it: resumable events (replay, OUT_OF_RANGE, boot id),
//! undecodable request bodies (INVALID_ARGUMENT, not INTERNAL), the reflection switch, and TLS.
//! Every gateway runs on loopback with free ports.

use std::time::Duration;

mod common;

use bytes::{Buf, BufMut};
use switchboard::v1 as pb;
use switchboard::v1::event_service_client::EventServiceClient;
use switchboard::v1::room_service_client::RoomServiceClient;
use switchboard_gateway::{Config, Gateway};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

const KEY: &str = "0123456789abcdef-test-key";

fn config() -> Config {
    let mut c = switchboard_integration_tests::test_config();
    c.media.workers = 1;
    c.turn.enabled = false;
    c.demo.enabled = false;
    c
}

async fn channel(gw: &Gateway) -> Channel {
    Channel::from_shared(format!("http://{}", gw.grpc_addr()))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

async fn create_room(rooms: &mut RoomServiceClient<Channel>, id: &str) {
    rooms
        .create_room(pb::CreateRoomRequest {
            room_id: id.into(),
            options: None,
            region_hint: String::new(),
        })
        .await
        .unwrap();
}

async fn next(s: &mut tonic::Streaming<pb::Event>) -> pb::Event {
    tokio::time::timeout(Duration::from_secs(10), s.message())
        .await
        .expect("an event within 10 s")
        .unwrap()
        .expect("the stream is open")
}

fn watch_after(after: u64, boot_id: &str) -> pb::WatchEventsRequest {
    pb::WatchEventsRequest {
        after_sequence: Some(after),
        boot_id: boot_id.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn watch_events_resumes_after_a_sequence_and_refuses_what_is_gone() {
    let mut cfg = config();
    cfg.limits.event_replay_events = 3;
    let gw = Gateway::start(cfg).await.unwrap();
    let ch = channel(&gw).await;
    let mut rooms = RoomServiceClient::new(ch.clone());
    let mut events = EventServiceClient::new(ch);
    for i in 1..=5 {
        create_room(&mut rooms, &format!("r{i}")).await;
    }
    // Replay of 4 and 5 from the ring (which keeps 3..=5), then live events, no gap, no duplicate.
    let mut s = events
        .watch_events(watch_after(3, ""))
        .await
        .unwrap()
        .into_inner();
    let (e4, e5) = (next(&mut s).await, next(&mut s).await);
    assert_eq!((e4.sequence, e4.room_id.as_str()), (4, "r4"));
    assert_eq!((e5.sequence, e5.room_id.as_str()), (5, "r5"));
    create_room(&mut rooms, "r6").await;
    let e6 = next(&mut s).await;
    assert_eq!((e6.sequence, e6.room_id.as_str()), (6, "r6"));
    let boot = e4.boot_id.clone();
    assert_eq!(boot.len(), 32);
    assert!(boot.chars().all(|c| c.is_ascii_hexdigit()));
    assert!([&e5, &e6].iter().all(|e| e.boot_id == boot));

    // With the right boot id it resumes too.
    let mut s = events
        .watch_events(watch_after(5, &boot))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next(&mut s).await.sequence, 6);

    // Sequence 2 left the ring (it keeps 4..=6 now): OUT_OF_RANGE naming the oldest.
    let err = events.watch_events(watch_after(2, "")).await.unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    assert!(err.message().contains("oldest available is 4"), "{err:?}");
    // A sequence this run never published, and a boot id of another run: OUT_OF_RANGE.
    let err = events.watch_events(watch_after(99, "")).await.unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    let other = if boot.starts_with('0') { "1" } else { "0" }.repeat(32);
    let err = events
        .watch_events(watch_after(5, &other))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    assert!(err.message().contains("oldest available is 4"), "{err:?}");
    // A malformed boot id is the backend's mistake.
    let err = events
        .watch_events(watch_after(5, "not-a-boot-id"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    // Another gateway process has another boot id, and its sequences start at 1.
    let gw2 = Gateway::start(config()).await.unwrap();
    let ch2 = channel(&gw2).await;
    let mut s2 = EventServiceClient::new(ch2.clone())
        .watch_events(pb::WatchEventsRequest::default())
        .await
        .unwrap()
        .into_inner();
    create_room(&mut RoomServiceClient::new(ch2), "x").await;
    let first = next(&mut s2).await;
    assert_eq!(first.sequence, 1);
    assert_ne!(first.boot_id, boot);
    gw2.shutdown().await;
    gw.shutdown().await;
}

/// Sends and receives raw bytes, whatever the method's message types.
#[derive(Clone, Copy, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Self;
    type Decoder = Self;
    fn encoder(&mut self) -> Self {
        Self
    }
    fn decoder(&mut self) -> Self {
        Self
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let v = src.chunk().to_vec();
        src.advance(v.len());
        Ok(Some(v))
    }
}

#[tokio::test]
async fn undecodable_requests_are_invalid_argument() {
    let gw = Gateway::start(config()).await.unwrap();
    let mut grpc = tonic::client::Grpc::new(channel(&gw).await);
    // (method, body, what it is)
    let cases: &[(&str, &[u8], &str)] = &[
        (
            "/switchboard.v1.RoomService/CreateRoom",
            &[0xff, 0xff, 0xff],
            "not protobuf",
        ),
        (
            // GetRoomRequest.room_id (field 1, a string) holding bytes that are not UTF-8.
            "/switchboard.v1.RoomService/GetRoom",
            &[0x0a, 0x02, 0xc3, 0x28],
            "non-UTF-8 string",
        ),
        (
            // A length that runs past the end of the body.
            "/switchboard.v1.SessionService/ApplyOffer",
            &[0x12, 0x7f, b'v'],
            "truncated field",
        ),
    ];
    for (path, body, what) in cases {
        grpc.ready().await.unwrap();
        let err = grpc
            .unary(
                Request::new(body.to_vec()),
                tonic::codegen::http::uri::PathAndQuery::from_static(path),
                Raw,
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
        assert!(err.message().contains("decode"), "{what}: {err:?}");
    }
    // A server-streaming method decodes its request the same way.
    grpc.ready().await.unwrap();
    let res = grpc
        .server_streaming(
            Request::new(vec![0x0a, 0x01, 0xff]),
            tonic::codegen::http::uri::PathAndQuery::from_static(
                "/switchboard.v1.EventService/WatchEvents",
            ),
            Raw,
        )
        .await;
    let Err(err) = res else {
        panic!("WatchEvents must refuse a bad request");
    };
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    gw.shutdown().await;
}

/// Lists services over reflection v1 with an optional key.
async fn reflection_list(ch: Channel, key: Option<&str>) -> Result<Vec<String>, Status> {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut refl = ServerReflectionClient::new(ch);
    let mut req = Request::new(tokio_stream::once(ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    }));
    if let Some(k) = key {
        req.metadata_mut()
            .insert("authorization", format!("Bearer {k}").parse().unwrap());
    }
    let mut resp = refl.server_reflection_info(req).await?.into_inner();
    let msg = resp.message().await?.expect("one response");
    match msg.message_response {
        Some(MessageResponse::ListServicesResponse(l)) => {
            Ok(l.service.into_iter().map(|s| s.name).collect())
        }
        other => panic!("unexpected reflection response {other:?}"),
    }
}

#[tokio::test]
async fn reflection_needs_the_key_unless_public_and_can_be_switched_off() {
    // Default with a key: reflection needs it; health stays open.
    let mut cfg = config();
    cfg.grpc.api_key = KEY.into();
    let gw = Gateway::start(cfg.clone()).await.unwrap();
    let ch = channel(&gw).await;
    let err = reflection_list(ch.clone(), None).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    let err = reflection_list(ch.clone(), Some("wrong-key-wrong-key"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    let names = reflection_list(ch.clone(), Some(KEY)).await.unwrap();
    assert!(names.iter().any(|n| n == "switchboard.v1.RoomService"));
    let mut health = tonic_health::pb::health_client::HealthClient::new(ch);
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health needs no key");
    gw.shutdown().await;

    // reflection_public: open without the key.
    cfg.grpc.reflection_public = true;
    let gw = Gateway::start(cfg.clone()).await.unwrap();
    let names = reflection_list(channel(&gw).await, None).await.unwrap();
    assert!(names.iter().any(|n| n == "switchboard.v1.EventService"));
    gw.shutdown().await;

    // Off: not served at all, even with the key.
    cfg.grpc.reflection = false;
    let gw = Gateway::start(cfg).await.unwrap();
    let err = reflection_list(channel(&gw).await, Some(KEY))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented, "{err:?}");
    gw.shutdown().await;

    // No key on loopback (the default): open, as before.
    let gw = Gateway::start(config()).await.unwrap();
    assert!(reflection_list(channel(&gw).await, None).await.is_ok());
    gw.shutdown().await;
}

#[tokio::test]
async fn tls_serves_the_api_to_a_client_that_trusts_the_certificate() {
    let (cert, cert_path, key_path) =
        common::self_signed_files(&["localhost"], "sb-grpc-tls", "grpc.crt", "grpc.key");
    let dir = cert_path.parent().unwrap().to_path_buf();

    let mut cfg = config();
    cfg.grpc.tls_cert = Some(cert_path);
    cfg.grpc.tls_key = Some(key_path);
    let gw = Gateway::start(cfg).await.unwrap();
    let port = gw.grpc_addr().port();

    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(cert.pem()))
        .domain_name("localhost");
    let ch = Channel::from_shared(format!("https://localhost:{port}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut rooms = RoomServiceClient::new(ch);
    create_room(&mut rooms, "over-tls").await;
    let listed = rooms
        .list_rooms(pb::ListRoomsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.rooms.iter().any(|r| r.room_id == "over-tls"));

    // A plaintext client gets no API.
    let plain = Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .connect_lazy();
    let res = RoomServiceClient::new(plain)
        .list_rooms(pb::ListRoomsRequest::default())
        .await;
    assert!(res.is_err(), "plaintext must fail against TLS: {res:?}");
    gw.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}
