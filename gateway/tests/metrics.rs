//! The admin listener: `/metrics` scraped over HTTP after a real call (two str0m Peers over UDP,
//! driven over gRPC) shows the counters that moved and the gauges of what is open; and
//! `GetSessionStats` over gRPC for the same kind of call.

use std::collections::HashMap;

use std::time::{Duration, Instant};

use switchboard::v1 as pb;
use switchboard_integration_tests::*;

/// Each sample `name{labels} value`, summed over the label sets of one name (the Workers).
fn totals(body: &str) -> HashMap<String, f64> {
    let mut m = HashMap::new();
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let name = series.split('{').next().unwrap_or(series).to_string();
        let v: f64 = value.parse().unwrap_or(f64::NAN);
        *m.entry(name).or_insert(0.0) += v;
        // Also keep labelled series one by one, for per-kind checks.
        *m.entry(series.to_string()).or_insert(0.0) += v;
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_a_call_show_what_moved() -> anyhow::Result<()> {
    let gw = start(test_config()).await?;
    let admin = gw
        .admin_addr()
        .expect("the admin listener is on by default");
    assert!(admin.ip().is_loopback());
    let backend = Backend::new(Clients::connect(&gw, None).await?, "metrics").await?;
    let (sa, a) = backend.join("alice", av("chat")).await?;
    let (sb, b) = backend.join("bob", av("chat")).await?;
    media_both_ways(&backend, (&sa, &a), (&sb, &b), 20).await?;

    let (status, body) = http_get(admin, "/metrics").await?;
    assert!(status.contains("200"), "{status}");
    assert!(
        body.ends_with("# EOF\n"),
        "OpenMetrics text ends with # EOF"
    );
    let m = totals(&body);
    let at = |k: &str| {
        m.get(k)
            .copied()
            .unwrap_or_else(|| panic!("no {k} in\n{body}"))
    };
    assert_eq!(at("switchboard_sessions"), 2.0);
    assert_eq!(at("switchboard_rooms"), 1.0);
    assert_eq!(
        at("switchboard_tracks"),
        4.0,
        "audio and video of two Peers"
    );
    assert_eq!(at("switchboard_worker_up"), 2.0, "both Workers answered");
    assert!(at("switchboard_rtp_forwarded_total") > 0.0);
    assert!(at("switchboard_datagrams_in_total") > 0.0);
    assert!(at("switchboard_bytes_out_total") > at("switchboard_datagrams_out_total"));
    assert!(
        at("switchboard_layer_switches_total") >= 2.0,
        "each video subscription started"
    );
    assert!(at("switchboard_events_published_total") > 0.0);
    let creates: f64 = m
        .iter()
        .filter(|(k, _)| {
            k.starts_with("switchboard_commands_total{") && k.contains("kind=\"CreateSession\"")
        })
        .map(|(_, v)| v)
        .sum();
    assert_eq!(creates, 2.0);
    // The estimator runs toward both subscribers.
    assert!(at("switchboard_bwe_estimate_bps_count") >= 1.0, "{body}");

    let (status, _) = http_get(admin, "/nothing").await?;
    assert!(status.contains("404"), "{status}");
    gw.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn the_admin_listener_can_be_turned_off() -> anyhow::Result<()> {
    let mut config = test_config();
    config.admin.enabled = false;
    let gw = start(config).await?;
    assert_eq!(gw.admin_addr(), None);
    gw.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_stats_over_grpc_show_rates_estimate_and_quality() -> anyhow::Result<()> {
    let gw = start(test_config()).await?;
    let backend = Backend::new(Clients::connect(&gw, None).await?, "stats").await?;
    let (sa, a) = backend.join("alice", av("chat")).await?;
    let (sb, b) = backend.join("bob", av("chat")).await?;
    media_both_ways(&backend, (&sa, &a), (&sb, &b), 20).await?;
    let mut sessions = backend.clients.sessions.clone();
    let ask = |id: &str| pb::GetSessionStatsRequest {
        session_id: id.into(),
    };
    // Statistics come every second (sessions.stats_interval_ms); layer rates every window.
    let end = Instant::now() + Duration::from_secs(15);
    let stats = loop {
        let s = sessions
            .get_session_stats(ask(&sb))
            .await?
            .into_inner()
            .stats
            .unwrap_or_default();
        let flowing = |v: &[pb::TrackLayerRates]| {
            v.len() == 2
                && v.iter()
                    .all(|t| !t.layers.is_empty() && t.layers.iter().all(|l| l.bitrate_bps > 0))
        };
        if (flowing(&s.published) && flowing(&s.received) && s.estimate_bps > 0)
            || Instant::now() > end
        {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(stats.session_id, sb);
    assert_eq!(stats.published.len(), 2, "{stats:?}");
    assert_eq!(stats.received.len(), 2, "{stats:?}");
    for t in stats.published.iter().chain(&stats.received) {
        assert_eq!(t.layers.len(), 1, "no simulcast: one layer each: {stats:?}");
        assert!(t.layers[0].bitrate_bps > 0, "{stats:?}");
        assert_eq!(t.layers[0].rid, "");
    }
    assert!(stats.estimate_bps > 0, "bob is estimated: {stats:?}");
    assert_eq!(stats.quality, pb::ConnectionQuality::Excellent as i32);
    assert!(stats.egress_loss_permille < 20 && stats.ingress_loss_permille < 20);
    // The Room's view: both Sessions, ordered by id.
    let room = backend
        .clients
        .rooms
        .clone()
        .get_room_stats(pb::GetRoomStatsRequest {
            room_id: "stats".into(),
        })
        .await?
        .into_inner();
    let mut ids = vec![sa.clone(), sb.clone()];
    ids.sort();
    let got: Vec<String> = room.sessions.iter().map(|s| s.session_id.clone()).collect();
    assert_eq!(got, ids);
    assert!(room.sessions.iter().all(|s| s.published.len() == 2));
    let e = sessions
        .get_session_stats(ask("ss_00abcdefghijkmnpqrstuv"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e}");
    let e = sessions.get_session_stats(ask("")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    gw.shutdown().await;
    Ok(())
}
