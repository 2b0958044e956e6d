//! Data channels over the real gateway: Peer to Room, Peer to Peer (directed), backend to Peers
//! (`SendData`) and Peers to backend (`DataReceived`), over gRPC and UDP.

use std::time::Duration;

use switchboard::v1 as pb;
use switchboard::v1::data_service_client::DataServiceClient;
use switchboard_integration_tests::*;
use switchboard_testpeer::{ChannelConfig, Publish, UdpPeer};

fn captions() -> ChannelConfig {
    ChannelConfig {
        label: "captions".into(),
        ..Default::default()
    }
}

fn direct() -> ChannelConfig {
    ChannelConfig {
        label: "sb.direct".into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_between_peers_and_the_backend() -> anyhow::Result<()> {
    let gw = start(test_config()).await?;
    let clients = Clients::connect(&gw, None).await?;
    let options = pb::RoomOptions {
        backend_data_labels: vec!["captions".into()],
        ..Default::default()
    };
    let backend = Backend::with_options(clients.clone(), "data", Some(options)).await?;
    let publish = Publish {
        audio: false,
        video: false,
        data_label: Some("chat"),
        simulcast: false,
    };
    let chans = [captions(), direct()];
    let (sa, a) = backend.join_with("alice", publish, &chans).await?;
    let (sb, b) = backend.join_with("bob", publish, &chans).await?;
    let (sc, c) = backend.join_with("carol", publish, &chans).await?;
    channels_open(
        &[a.as_ref(), b.as_ref(), c.as_ref()],
        &["chat", "captions", "sb.direct"],
    )
    .await?;

    // Peer to Room.
    assert!(a.with(|p| p.send_on("chat", false, b"hi all")));
    // Peer to Peer: alice to carol only.
    assert!(a.with(|p| p.send_on("sb.direct", true, format!("{sc}\n\x01\x02").as_bytes())));
    // Peer to backend (and Room).
    assert!(b.with(|p| p.send_on("captions", false, b"bob says hello")));
    // Backend to Room, and to bob only.
    let mut data = DataServiceClient::new(
        tonic::transport::Channel::from_shared(format!("http://{}", gw.grpc_addr()))?
            .connect()
            .await?,
    );
    let r = data
        .send_data(pb::SendDataRequest {
            room_id: "data".into(),
            session_ids: vec![],
            label: "chat".into(),
            data: b"from the backend".to_vec(),
            binary: false,
            reliable: true,
        })
        .await?
        .into_inner();
    assert_eq!(r.delivered, 3);
    let r = data
        .send_data(pb::SendDataRequest {
            room_id: "data".into(),
            session_ids: vec![sb.clone()],
            label: "chat".into(),
            data: vec![9, 9],
            binary: true,
            reliable: false,
        })
        .await?
        .into_inner();
    assert_eq!((r.delivered, r.no_channel_session_ids.len()), (1, 0));

    let has = |p: &UdpPeer, label: &str, data: &[u8], binary: bool| {
        p.with(|c| {
            c.stats
                .received
                .iter()
                .any(|r| r.label == label && r.data == data && r.binary == binary)
        })
    };
    wait_until(Duration::from_secs(10), || {
        let checks = [
            ("bob got alice's chat", has(&b, "chat", b"hi all", false)),
            ("carol got alice's chat", has(&c, "chat", b"hi all", false)),
            (
                "carol got alice's direct message",
                has(&c, "sb.direct", format!("{sa}\n\x01\x02").as_bytes(), true),
            ),
            (
                "alice got bob's captions",
                has(&a, "captions", b"bob says hello", false),
            ),
            (
                "all got the backend's message",
                has(&a, "chat", b"from the backend", false)
                    && has(&b, "chat", b"from the backend", false)
                    && has(&c, "chat", b"from the backend", false),
            ),
            (
                "bob got the backend's binary message",
                has(&b, "chat", &[9, 9], true),
            ),
        ];
        match checks.iter().find(|(_, ok)| !ok) {
            Some((what, _)) => Err(what.to_string()),
            None => Ok(()),
        }
    })
    .await?;
    assert!(!b.with(|p| p.stats.received.iter().any(|r| r.label == "sb.direct")));
    assert!(!has(&a, "chat", &[9, 9], true) && !has(&c, "chat", &[9, 9], true));

    // The backend saw bob's captions as an event, and nothing from chat.
    wait_until(Duration::from_secs(5), || {
        let got = backend.events_of(&sb).into_iter().any(|k| {
            matches!(k, pb::event::Kind::DataReceived(d)
                if d.label == "captions" && d.data == b"bob says hello" && !d.binary)
        });
        if got {
            Ok(())
        } else {
            Err("no DataReceived event".into())
        }
    })
    .await?;
    let data_events = backend
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| matches!(e.kind, Some(pb::event::Kind::DataReceived(_))))
        .count();
    assert_eq!(data_events, 1);

    // Errors: a text message that is not UTF-8, an empty label, an unknown room.
    let bad = |room: &str, label: &str, data: Vec<u8>| pb::SendDataRequest {
        room_id: room.into(),
        session_ids: vec![],
        label: label.into(),
        data,
        binary: false,
        reliable: false,
    };
    let e = data
        .send_data(bad("data", "chat", vec![0xff, 0xfe]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let e = data
        .send_data(bad("data", "", b"x".to_vec()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let e = data
        .send_data(bad("nope", "chat", b"x".to_vec()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    gw.shutdown().await;
    Ok(())
}
