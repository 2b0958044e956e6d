//! ListRooms and ListSessions return pages (through gRPC and through the `GatewayHandle`), ordered
//! by id across Workers and stable while Rooms come and go; an SDP over `signaling.max_sdp_bytes`
//! is refused before it reaches a Worker.

use switchboard::v1 as pb;
use switchboard_gateway::GatewayError;
use switchboard_gateway::core::CoreError;
use switchboard_gateway::paging::PageRequest;
use switchboard_integration_tests::*;
use tonic::Code;
use tonic_types::StatusExt;

async fn page_via_grpc(
    c: &Clients,
    page_size: u32,
    page_token: String,
) -> anyhow::Result<(Vec<String>, String)> {
    let r = c
        .rooms
        .clone()
        .list_rooms(pb::ListRoomsRequest {
            page_size,
            page_token,
        })
        .await?
        .into_inner();
    Ok((
        r.rooms.into_iter().map(|r| r.room_id).collect(),
        r.next_page_token,
    ))
}

#[tokio::test]
async fn rooms_are_listed_in_stable_pages_through_both_doors() -> anyhow::Result<()> {
    let mut config = test_config();
    // Rooms spread over four Workers: a page must be ordered across them.
    config.media.workers = 4;
    let gw = start(config).await?;
    let c = Clients::connect(&gw, None).await?;
    let h = gw.handle();
    let mut all: Vec<String> = (0..250).map(|i| format!("room-{i:03}")).collect();
    for id in &all {
        c.create_room(id).await?;
    }
    all.sort();

    // gRPC: 100, 100, 50, each in order, the last page without a token.
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut sizes = Vec::new();
    loop {
        let (ids, next) = page_via_grpc(&c, 100, token).await?;
        sizes.push(ids.len());
        seen.extend(ids);
        if next.is_empty() {
            break;
        }
        token = next;
    }
    assert_eq!(sizes, vec![100, 100, 50]);
    assert_eq!(seen, all);

    // The handle: the same pages.
    let first = h
        .list_rooms(PageRequest {
            page_size: 100,
            page_token: String::new(),
        })
        .await?;
    let ids: Vec<String> = first.items.iter().map(|r| r.id.to_string()).collect();
    assert_eq!(ids, all[..100]);
    // A Room deleted from the first page and one created before the second shift nothing.
    h.delete_room(first.items[10].id.clone()).await?;
    c.create_room("room-000a").await?;
    let second = h
        .list_rooms(PageRequest {
            page_size: 100,
            page_token: first.next_page_token.clone(),
        })
        .await?;
    let ids: Vec<String> = second.items.iter().map(|r| r.id.to_string()).collect();
    assert_eq!(ids, all[100..200]);

    // page_size 0 is the default (100); above the maximum (500) it is lowered to it.
    assert_eq!(page_via_grpc(&c, 0, String::new()).await?.0.len(), 100);
    let (everything, next) = page_via_grpc(&c, 100_000, String::new()).await?;
    assert_eq!((everything.len(), next.as_str()), (250, ""));

    // A token no page returned: INVALID_ARGUMENT naming page_token, through both doors.
    for bad in ["not-a-token", "cjE6", "czE6cm9vbS0wMDA"] {
        let e = page_via_grpc(&c, 100, bad.to_string())
            .await
            .unwrap_err()
            .downcast::<tonic::Status>()?;
        assert_eq!(e.code(), Code::InvalidArgument, "{bad}: {e:?}");
        let field = e
            .get_details_bad_request()
            .and_then(|b| b.field_violations.first().map(|v| v.field.clone()));
        assert_eq!(field.as_deref(), Some("page_token"), "{bad}");
        let e = h
            .list_rooms(PageRequest {
                page_size: 100,
                page_token: bad.to_string(),
            })
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                GatewayError::Core(CoreError::InvalidArgument {
                    field: "page_token",
                    ..
                })
            ),
            "{bad}: {e:?}"
        );
    }
    gw.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn sessions_are_listed_in_pages() -> anyhow::Result<()> {
    let gw = start(test_config()).await?;
    let c = Clients::connect(&gw, None).await?;
    c.create_room("big").await?;
    let mut ids = Vec::new();
    for i in 0..25 {
        let s = c
            .sessions
            .clone()
            .create_session(pb::CreateSessionRequest {
                room_id: "big".into(),
                participant_id: format!("p{i}"),
                ..Default::default()
            })
            .await?
            .into_inner();
        ids.push(s.session.unwrap().session_id);
    }
    ids.sort();
    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut token = String::new();
    loop {
        let r = c
            .sessions
            .clone()
            .list_sessions(pb::ListSessionsRequest {
                room_id: "big".into(),
                page_size: 10,
                page_token: token,
            })
            .await?
            .into_inner();
        sizes.push(r.sessions.len());
        seen.extend(r.sessions.into_iter().map(|s| s.session_id));
        if r.next_page_token.is_empty() {
            break;
        }
        token = r.next_page_token;
    }
    assert_eq!(sizes, vec![10, 10, 5]);
    assert_eq!(seen, ids);
    // A Rooms token ("r1:big") is not a Sessions token.
    let e = c
        .sessions
        .clone()
        .list_sessions(pb::ListSessionsRequest {
            room_id: "big".into(),
            page_size: 10,
            page_token: "cjE6Ymln".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    gw.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn an_sdp_over_the_limit_is_refused_before_a_worker_parses_it() -> anyhow::Result<()> {
    let mut config = test_config();
    config.signaling.max_sdp_bytes = 8192;
    let gw = start(config).await?;
    let c = Clients::connect(&gw, None).await?;
    c.create_room("sdp").await?;
    let s = c
        .sessions
        .clone()
        .create_session(pb::CreateSessionRequest {
            room_id: "sdp".into(),
            participant_id: "a".into(),
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
        .apply_offer(pb::ApplyOfferRequest {
            session_id: s.clone(),
            sdp: format!("v=0\r\n{}", "a=x\r\n".repeat(2000)),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("signaling.max_sdp_bytes"), "{e:?}");
    // Far past the limit, the request is not even decoded.
    let e = c
        .sessions
        .clone()
        .apply_offer(pb::ApplyOfferRequest {
            session_id: s,
            sdp: "x".repeat(200 * 1024),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            e.code(),
            Code::InvalidArgument | Code::OutOfRange | Code::ResourceExhausted
        ),
        "{e:?}"
    );
    assert!(
        !e.message().contains("signaling.max_sdp_bytes"),
        "decoded: {e:?}"
    );
    gw.shutdown().await;
    Ok(())
}
