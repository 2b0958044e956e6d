//! Smoke runs of the load generator: an in-process gateway on free loopback ports, one publisher
//! and two subscribers for a few seconds, idle subscribers (no publisher), and joins the gateway
//! refuses. It asserts that packets flowed and that the JSON report
//! has its fields; never timing (speed is for BENCHMARKS.md).

use std::time::Duration;

use switchboard_gateway::{Config, Gateway};
use switchboard_loadgen::{Options, Target};

fn test_config() -> Config {
    let mut c = Config::default();
    c.grpc.listen = "127.0.0.1:0".parse().unwrap();
    c.media.port_base = 0;
    c.media.tcp_port_base = 0;
    c.media.workers = 1;
    c.admin.listen = "127.0.0.1:0".parse().unwrap();
    c.turn.listen_udp = "127.0.0.1:0".parse().unwrap();
    c.turn.listen_tcp = "127.0.0.1:0".parse().unwrap();
    c
}

/// A short run against `gw`, measuring this process (the in-process gateway): `publishers` per
/// Room and `subscribers`, a 1 s settle and a window of `window_s` seconds.
fn options(gw: &Gateway, publishers: usize, subscribers: usize, window_s: u64) -> Options {
    Options {
        target: Target::Switchboard {
            url: format!("http://{}", gw.grpc_addr()),
            api_key: String::new(),
        },
        publishers,
        subscribers,
        settle: Duration::from_secs(1),
        window: Duration::from_secs(window_s),
        // The gateway runs in this process: its CPU time and RSS are ours.
        sfu_pid: Some(std::process::id()),
        progress: false,
        ..Options::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_publisher_two_subscribers_report_what_flowed() -> anyhow::Result<()> {
    let gw = Gateway::start(test_config()).await?;
    let opts = options(&gw, 1, 2, 2);
    let report = switchboard_loadgen::run(&opts).await?;
    let step = report
        .knee
        .as_ref()
        .expect("a fixed run reports its window");
    assert_eq!(step.subscribers, 2);
    assert_eq!(
        step.joined, 2,
        "both subscribers got a complete key frame: {step:?}"
    );
    assert!(step.packets_per_s > 0.0, "packets flowed: {step:?}");
    assert!(step.published_per_s > 0.0, "the publisher sent: {step:?}");
    assert_eq!(step.failed, 0, "{step:?}");
    assert_eq!(step.connected, 2, "{step:?}");
    assert_eq!(step.sfu_sockets, 1, "one Worker: {step:?}");
    assert!(
        step.audio_delivered_pct.is_some_and(|d| d > 0.0),
        "audio flowed: {step:?}"
    );

    let json: serde_json::Value = serde_json::from_str(&serde_json::to_string(&report)?)?;
    assert_eq!(json["target"], "switchboard");
    assert_eq!(json["mode"], "fixed");
    for field in [
        "packets_per_s",
        "sfu_cpu",
        "packets_per_cpu_s",
        "loss_pct",
        "late_pct",
        "delivered_pct",
        "mean_delay_ms",
        "audio_delay_p50_ms",
        "audio_delay_p99_ms",
        "video_delay_p50_ms",
        "video_delay_p99_ms",
        "audio_delivered_pct",
        "rss_kib_per_added_session",
        "join_p50_ms",
        "join_p95_ms",
        "sfu_rss_kib",
        "loadgen_cpu",
    ] {
        assert!(
            json["knee"][field].is_number(),
            "knee.{field} is a number: {}",
            json["knee"]
        );
    }
    assert!(report.table().contains("knee: 2 subscribers"));
    gw.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_subscribers_connect_and_receive_nothing() -> anyhow::Result<()> {
    let gw = Gateway::start(test_config()).await?;
    let opts = options(&gw, 0, 2, 1);
    let report = switchboard_loadgen::run(&opts).await?;
    let step = report
        .knee
        .as_ref()
        .expect("a fixed run reports its window");
    assert_eq!(step.connected, 2, "both idle Sessions connected: {step:?}");
    assert!(!step.overloaded, "idle, not overloaded: {step:?}");
    assert_eq!(step.packets_per_s, 0.0, "{step:?}");
    assert_eq!(step.audio_delay_p99_ms, None, "{step:?}");
    assert!(report.rss_kib_per_session.is_some(), "{report:?}");
    assert!(report.table().contains("per idle Session"));
    gw.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_the_gateway_refuses_are_counted_not_fatal() -> anyhow::Result<()> {
    let gw = Gateway::start(test_config()).await?;
    let opts = Options {
        // Room full after 2 Sessions: the other 2 joins get RESOURCE_EXHAUSTED.
        max_sessions: 2,
        ..options(&gw, 0, 4, 1)
    };
    let report = switchboard_loadgen::run(&opts).await?;
    let step = report
        .knee
        .as_ref()
        .expect("a fixed run reports its window");
    assert_eq!(step.refused, 2, "{step:?}");
    assert_eq!(step.subscribers, 2, "only accepted joins count: {step:?}");
    assert_eq!(step.connected, 2, "{step:?}");
    gw.shutdown().await;
    Ok(())
}
