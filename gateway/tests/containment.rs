//! Fault containment over gRPC, at both levels: a bug inside one Session's `Rtc` closes that
//! Session only; a bug in a Worker's core itself (in a command, a datagram or a timeout) closes
//! everything that core held, reported to the backend, and the Worker serves again on the same
//! ports with a fresh core (`driver/supervise.rs`). Faults are injected with the `testing` hooks.

use std::time::Duration;

use switchboard::v1 as pb;
use switchboard::v1::event::Kind;
use switchboard_gateway::GatewayHandle;
use switchboard_gateway::core::{RoomId, SessionId, SfuFault};
use switchboard_integration_tests::*;

/// A Room name (prefix + counter) that lives on Worker `worker`.
fn room_on(h: &GatewayHandle, worker: usize, prefix: &str) -> String {
    (0..)
        .map(|i| format!("{prefix}-{i}"))
        .find(|r| h.worker_of_room(&RoomId::parse(r).unwrap()) == worker)
        .expect("some name hashes to every worker")
}

fn closed_reason(b: &Backend, session: &str) -> Option<i32> {
    b.events_of(session).into_iter().find_map(|k| match k {
        Kind::SessionClosed(c) => Some(c.reason),
        _ => None,
    })
}

fn room_closed_reason(b: &Backend) -> Option<i32> {
    b.events.lock().unwrap().iter().find_map(|e| match &e.kind {
        Some(Kind::RoomClosed(c)) if e.session_id.is_empty() => Some(c.reason),
        _ => None,
    })
}

async fn listed_rooms(c: &Clients) -> anyhow::Result<Vec<String>> {
    let req = pb::ListRoomsRequest::default();
    let resp = c.rooms.clone().list_rooms(req).await?;
    Ok(room_ids(resp.into_inner()))
}

/// Injects `at` into the Worker holding a live call, then checks: both Sessions and the Room are
/// reported closed with `INTERNAL_ERROR`, a Room on the other Worker goes on, the Worker counts a
/// restart and is healthy, `ListRooms` works, and a new call on the same Worker exchanges media.
async fn sfu_fault_is_contained(at: SfuFault) -> anyhow::Result<()> {
    let gw = start(test_config()).await?;
    let h = gw.handle();
    let w = 0;
    let c = Clients::connect(&gw, None).await?;
    let call = room_on(&h, w, "call");
    let backend = Backend::new(c.clone(), &call).await?;
    let (sa, a) = backend.join("alice", av("chat")).await?;
    let (sb, b) = backend.join("bob", av("chat")).await?;
    media_both_ways(&backend, (&sa, &a), (&sb, &b), 10).await?;
    // A call on the other Worker, which must not notice.
    let other = Backend::new(c.clone(), &room_on(&h, 1 - w, "other")).await?;
    let (sc, pc) = other.join("carol", av("chat")).await?;
    let (sd, pd) = other.join("dave", av("chat")).await?;
    media_both_ways(&other, (&sc, &pc), (&sd, &pd), 10).await?;

    let res = h.inject_sfu_fault(w, at).await;
    match at {
        // The command itself hit the fault: its caller is told, retryably.
        SfuFault::Now => assert!(res.is_err(), "{res:?}"),
        _ => res?,
    }
    let internal = pb::SessionCloseReason::InternalError as i32;
    wait_until(Duration::from_secs(10), || {
        let got = (
            closed_reason(&backend, &sa),
            closed_reason(&backend, &sb),
            room_closed_reason(&backend),
        );
        let want = (
            Some(internal),
            Some(internal),
            Some(pb::RoomCloseReason::InternalError as i32),
        );
        if got == want {
            Ok(())
        } else {
            Err(format!("closes (alice, bob, room) {got:?}"))
        }
    })
    .await?;
    let health = h.worker_health();
    assert_eq!((health[w].restarts, health[w].healthy), (1, true));
    assert_eq!((health[1 - w].restarts, health[1 - w].healthy), (0, true));
    // Operators see it: per-Worker restarts and health on /metrics.
    let admin = gw.admin_addr().expect("the admin listener is on");
    let (_, body) = http_get(admin, "/metrics").await?;
    for line in [
        format!("switchboard_worker_restarts_total{{worker=\"{w}\"}} 1"),
        format!(
            "switchboard_worker_restarts_total{{worker=\"{}\"}} 0",
            1 - w
        ),
        format!("switchboard_worker_healthy{{worker=\"{w}\"}} 1"),
    ] {
        assert!(body.lines().any(|l| l == line), "no {line:?} in:\n{body}");
    }

    // The gateway keeps serving: the other call goes on, ListRooms answers from every Worker.
    media_keeps_flowing(
        &other,
        (&sc, &pc),
        (&sd, &pd),
        "a fault on the other worker",
    )
    .await?;
    assert_eq!(listed_rooms(&c).await?, vec![other.room.clone()]);
    assert_eq!(closed_reason(&other, &sc), None);

    // The restarted Worker takes a new call (same Room name, so the same Worker) on the same
    // ports, and media flows.
    let again = Backend::new(c.clone(), &call).await?;
    let (se, pe) = again.join("erin", av("chat")).await?;
    let (sf, pf) = again.join("frank", av("chat")).await?;
    media_both_ways(&again, (&se, &pe), (&sf, &pf), 10).await?;
    assert_eq!(h.worker_health()[w].restarts, 1);
    gw.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_a_command_closes_the_workers_rooms_and_the_worker_serves_again()
-> anyhow::Result<()> {
    sfu_fault_is_contained(SfuFault::Now).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_on_a_datagram_closes_the_workers_rooms_and_the_worker_serves_again()
-> anyhow::Result<()> {
    sfu_fault_is_contained(SfuFault::NextDatagram).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_on_a_timeout_closes_the_workers_rooms_and_the_worker_serves_again()
-> anyhow::Result<()> {
    sfu_fault_is_contained(SfuFault::NextTimeout).await
}

/// A bug inside one Session's `Rtc` (the guarded section) closes that Session only: the other
/// Session of the Room and the Room stay, and the Worker does not restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_a_session_closes_that_session_only() -> anyhow::Result<()> {
    let gw = start(test_config()).await?;
    let h = gw.handle();
    let c = Clients::connect(&gw, None).await?;
    let backend = Backend::new(c.clone(), "call").await?;
    let (sa, a) = backend.join("alice", av("chat")).await?;
    let (sb, b) = backend.join("bob", av("chat")).await?;
    media_both_ways(&backend, (&sa, &a), (&sb, &b), 10).await?;

    h.inject_session_fault(SessionId::parse(&sa)?).await?;
    let internal = pb::SessionCloseReason::InternalError as i32;
    wait_until(Duration::from_secs(10), || {
        match closed_reason(&backend, &sa) {
            Some(r) if r == internal => Ok(()),
            other => Err(format!("alice closed with {other:?}")),
        }
    })
    .await?;
    // bob, alone now, still connects a new peer and exchanges media with it.
    let (sc, pc) = backend.join("carol", av("chat")).await?;
    media_both_ways(&backend, (&sb, &b), (&sc, &pc), 10).await?;
    assert_eq!(closed_reason(&backend, &sb), None);
    assert_eq!(room_closed_reason(&backend), None);
    assert_eq!(listed_rooms(&c).await?, vec!["call".to_string()]);
    assert!(
        h.worker_health()
            .iter()
            .all(|w| w.restarts == 0 && w.healthy)
    );
    gw.shutdown().await;
    Ok(())
}
