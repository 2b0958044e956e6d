//! The real gateway on loopback, driven over gRPC, with str0m Peers over real UDP.

use std::time::Duration;

use switchboard::v1 as pb;
use switchboard_integration_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_peers_exchange_media_and_data_through_the_gateway() -> anyhow::Result<()> {
    let gw = start(test_config()).await?;
    let backend = Backend::new(Clients::connect(&gw, None).await?, "call").await?;
    let (sa, a) = backend.join("alice", av("chat")).await?;
    let (sb, b) = backend.join("bob", av("chat")).await?;
    media_both_ways(&backend, (&sa, &a), (&sb, &b), 20).await?;
    data_both_ways(&a, &b, b"ping from alice", b"pong from bob").await?;

    // The Session reads back as connected and publishing two tracks.
    let s = backend
        .clients
        .sessions
        .clone()
        .get_session(pb::GetSessionRequest {
            session_id: sa.clone(),
        })
        .await?
        .into_inner()
        .session
        .unwrap();
    assert_eq!(s.state, pb::SessionState::Connected as i32);
    assert_eq!(s.published_track_ids.len(), 2);
    assert_eq!(s.participant_id, "alice");

    // Events: strictly increasing sequence numbers; alice's connect precedes her tracks.
    let evs = backend.events.lock().unwrap().clone();
    assert!(evs.windows(2).all(|w| w[0].sequence < w[1].sequence));
    assert!(matches!(evs[0].kind, Some(pb::event::Kind::RoomCreated(_))));
    let first_of_alice = |is: fn(&pb::event::Kind) -> bool| {
        evs.iter()
            .position(|e| e.session_id == sa && e.kind.as_ref().is_some_and(is))
    };
    let connected = first_of_alice(|k| matches!(k, pb::event::Kind::SessionConnected(_)));
    let published = first_of_alice(|k| matches!(k, pb::event::Kind::TrackPublished(_)));
    assert!(
        matches!((connected, published), (Some(c), Some(p)) if c < p),
        "alice connected at event {connected:?}, published her first track at {published:?}"
    );
    gw.shutdown().await;
    Ok(())
}

/// The gateway is ICE-lite: it never sends checks, so it learns a Peer's address only from the
/// Peer's own checks, and no trickled candidate can make or break connectivity (the Peer below
/// would connect without them). What trickling does do, and what this test holds it to: a
/// candidate reaches the Session on its Worker (an unknown Session is NOT_FOUND), every kind a
/// browser sends is accepted (its own host, mDNS, TCP, end of candidates), and a trickled
/// candidate that never sends a check does not hold the Session up: when the Peer goes silent
/// the Session is still Disconnected, then closed after the grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_candidates_are_routed_accepted_and_never_hold_a_session_up() -> anyhow::Result<()>
{
    let mut config = test_config();
    config.sessions.disconnect_grace_secs = 1;
    let gw = start(config).await?;
    let clients = Clients::connect(&gw, None).await?;
    let backend = Backend::new(clients.clone(), "trickle").await?;
    let (sa, a) = backend.join("alice", av("chat")).await?;
    let port = a.addr.port();
    let mut sessions = clients.sessions.clone();
    let trickle = |session: &str, candidate: &str| pb::AddIceCandidateRequest {
        session_id: session.into(),
        candidate: candidate.into(),
        sdp_mid: "0".into(),
        end_of_candidates: candidate.is_empty(),
    };
    let never_checks = "candidate:3 1 udp 2130706175 127.0.0.1 9 typ host";
    let e = sessions
        .add_ice_candidate(trickle("ss_00abcdefghijkmnpqrstuv", never_checks))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e}");
    for candidate in [
        // The Peer's own host candidate, as a browser would trickle it.
        format!("candidate:1 1 udp 2130706431 127.0.0.1 {port} typ host"),
        // mDNS: accepted and ignored.
        "candidate:2 1 udp 2130706431 4f1b2c3d-aaaa.local 5000 typ host".into(),
        // An address that never sends a check.
        never_checks.into(),
        // TCP: accepted and ignored (ICE-TCP pairs are learned from the connection).
        "candidate:4 1 tcp 1518280447 127.0.0.1 9 typ host tcptype active".into(),
        // The end of candidates.
        String::new(),
    ] {
        sessions
            .add_ice_candidate(trickle(&sa, &candidate))
            .await
            .map_err(|e| anyhow::anyhow!("{candidate:?}: {e}"))?;
    }
    connected(&a, "alice").await?;
    a.stop();
    disconnected_then_closed(&backend, &sa, Duration::from_secs(30)).await?;
    gw.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_and_leave_renegotiate_the_others() -> anyhow::Result<()> {
    let gw = start(test_config()).await?;
    let backend = Backend::new(Clients::connect(&gw, None).await?, "churn").await?;
    let (sa, a) = backend.join("alice", av("chat")).await?;
    let (sb, b) = backend.join("bob", av("chat")).await?;
    let (sc, c) = backend.join("carol", av("chat")).await?;
    wait_until(Duration::from_secs(15), || {
        let pairs = [
            (&a, &sb),
            (&a, &sc),
            (&b, &sa),
            (&b, &sc),
            (&c, &sa),
            (&c, &sb),
        ];
        for (to, from) in pairs {
            let f = min_frames(to, &backend.tracks_of(from));
            if f < 10 {
                return Err(format!("{from} -> peer: {f} frames"));
            }
        }
        Ok(())
    })
    .await?;
    let carol_tracks = backend.tracks_of(&sc);
    assert_eq!(carol_tracks.len(), 2);
    let offers_before = backend
        .events_of(&sa)
        .iter()
        .filter(|k| matches!(k, pb::event::Kind::NegotiationNeeded(_)))
        .count();
    backend
        .clients
        .sessions
        .clone()
        .close_session(pb::CloseSessionRequest {
            session_id: sc.clone(),
        })
        .await?;
    wait_until(Duration::from_secs(5), || {
        let offers = backend
            .events_of(&sa)
            .iter()
            .filter(|k| matches!(k, pb::event::Kind::NegotiationNeeded(_)))
            .count();
        let left = backend.events_of(&sc).iter().any(
            |k| matches!(k, pb::event::Kind::ParticipantLeft(p) if p.participant_id == "carol"),
        );
        if offers > offers_before && left && backend.tracks_of(&sc).is_empty() {
            Ok(())
        } else {
            Err(format!(
                "offers {offers} (before {offers_before}), left {left}"
            ))
        }
    })
    .await?;
    // Alice and Bob keep talking after the renegotiation removed Carol's m-lines.
    media_keeps_flowing(&backend, (&sa, &a), (&sb, &b), "after carol left").await?;
    let sessions = backend
        .clients
        .sessions
        .clone()
        .list_sessions(pb::ListSessionsRequest {
            room_id: "churn".into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .sessions;
    assert_eq!(sessions.len(), 2);
    gw.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn glare_over_grpc_the_gateway_yields_then_reoffers() -> anyhow::Result<()> {
    let gw = start(test_config()).await?;
    let backend = Backend::new(Clients::connect(&gw, None).await?, "glare").await?;
    let (sa, a) = backend.join("alice", av("chat")).await?;
    connected(&a, "alice").await?;
    backend.hold.lock().unwrap().insert(sa.clone(), Vec::new());
    let (sb, b) = backend.join("bob", av("chat")).await?;
    wait_until(Duration::from_secs(5), || {
        if backend.hold.lock().unwrap()[&sa].is_empty() {
            Err("no gateway offer for alice yet".into())
        } else {
            Ok(())
        }
    })
    .await?;
    let (stale, _) = backend.hold.lock().unwrap().get_mut(&sa).unwrap().remove(0);
    // Alice offers at the same time.
    let offer = a.with(|p| p.create_renegotiation_offer()).unwrap();
    let mut sessions = backend.clients.sessions.clone();
    let answer = sessions
        .apply_offer(pb::ApplyOfferRequest {
            session_id: sa.clone(),
            sdp: offer,
        })
        .await?
        .into_inner()
        .sdp;
    a.with(|p| p.accept_answer(&answer))?;
    wait_until(Duration::from_secs(5), || {
        if backend.hold.lock().unwrap()[&sa].is_empty() {
            Err("no fresh offer".into())
        } else {
            Ok(())
        }
    })
    .await?;
    let (fresh, sdp) = backend.hold.lock().unwrap().get_mut(&sa).unwrap().remove(0);
    assert!(fresh > stale);
    let answer = a.with(|p| p.accept_offer(&sdp))?;
    let err = sessions
        .apply_answer(pb::ApplyAnswerRequest {
            session_id: sa.clone(),
            sdp: answer.clone(),
            offer_id: stale,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    sessions
        .apply_answer(pb::ApplyAnswerRequest {
            session_id: sa.clone(),
            sdp: answer,
            offer_id: fresh,
        })
        .await?;
    backend.hold.lock().unwrap().remove(&sa);
    wait_until(Duration::from_secs(10), || {
        let (ab, ba) = (
            min_frames(&b, &backend.tracks_of(&sa)),
            min_frames(&a, &backend.tracks_of(&sb)),
        );
        if ab >= 10 && ba >= 10 {
            Ok(())
        } else {
            Err(format!("a->b {ab}, b->a {ba}"))
        }
    })
    .await?;
    gw.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_sessions_and_ends_streams_with_a_final_event() -> anyhow::Result<()> {
    let gw = start(test_config()).await?;
    let clients = Clients::connect(&gw, None).await?;
    let mut all = clients
        .events
        .clone()
        .watch_events(pb::WatchEventsRequest::default())
        .await?
        .into_inner();
    let backend = Backend::new(clients.clone(), "bye").await?;
    let (sa, a) = backend.join("alice", av("chat")).await?;
    connected(&a, "alice").await?;
    let started = std::time::Instant::now();
    gw.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(10));
    let mut kinds = Vec::new();
    let drained = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(ev)) = all.message().await {
            kinds.push((ev.session_id.clone(), ev.kind.clone()));
        }
    })
    .await;
    assert!(drained.is_ok(), "the stream ended");
    assert!(matches!(
        kinds.last().unwrap().1,
        Some(pb::event::Kind::GatewayDraining(_))
    ));
    assert!(kinds.iter().any(|(s, k)| *s == sa
        && matches!(k, Some(pb::event::Kind::SessionClosed(c))
            if c.reason == pb::SessionCloseReason::GatewayShutdown as i32)));
    assert!(
        kinds
            .iter()
            .any(|(_, k)| matches!(k, Some(pb::event::Kind::RoomClosed(c))
        if c.reason == pb::RoomCloseReason::GatewayShutdown as i32))
    );
    // The Peer was told: DTLS close_notify.
    wait_until(Duration::from_secs(5), || {
        if a.with(|p| p.stats.closed) {
            Ok(())
        } else {
            Err("peer not closed".into())
        }
    })
    .await?;
    Ok(())
}
