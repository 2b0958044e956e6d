//! The `switchboard` binary: load the configuration, start the gateway, wait for SIGINT or
//! SIGTERM, shut down gracefully. Nothing else lives here.

use std::path::PathBuf;

use anyhow::Context;
use switchboard_gateway::{Config, Gateway, telemetry};

const USAGE: &str = "\
usage: switchboard [--config PATH] [--check-config]

  --config PATH    TOML configuration file (see switchboard.example.toml)
  --check-config   validate the configuration and exit (in cluster mode also check that the
                   cluster store answers)

Environment variables SWITCHBOARD__SECTION__KEY override the file, e.g.
SWITCHBOARD__GRPC__LISTEN=0.0.0.0:50051 SWITCHBOARD__GRPC__API_KEY=secret";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut path: Option<PathBuf> = None;
    let mut check = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--config" => path = Some(args.next().context("--config needs a path")?.into()),
            "--check-config" => check = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => anyhow::bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    let config = Config::load(path.as_deref()).context("invalid configuration")?;
    if check {
        let c = &config.cluster;
        if c.enabled() {
            switchboard_gateway::cluster::check_store(c)
                .await
                .with_context(|| format!("cluster.redis_url {}", c.redis_url))?;
            println!(
                "cluster {:?}: store answers; node {}, lease {} ms (fence margin {} ms, renewed \
                 every {} ms), heartbeat {} ms (dead after {} ms)",
                c.name,
                if c.node_id.is_empty() {
                    "<random>"
                } else {
                    &c.node_id
                },
                c.lease_ttl_ms,
                c.fence_margin_ms,
                c.renew_ms,
                c.heartbeat_ms,
                c.node_ttl_ms,
            );
        }
        println!("configuration OK");
        return Ok(());
    }
    telemetry::init(&config.log);
    // Install the handlers before serving: a SIGTERM right after the first call must still shut
    // down gracefully rather than kill the process.
    let signals = Signals::install()?;
    let gateway = Gateway::start(config.clone()).await?;
    if let Some(c) = gateway.cluster() {
        println!("Cluster node {} ({})", c.node_id(), config.cluster.name);
    }
    println!(
        "Switchboard gRPC listening on {}://{} ({})",
        if config.grpc.tls_cert.is_some() {
            "https"
        } else {
            "http"
        },
        gateway.grpc_addr(),
        if config.grpc.api_key.is_empty() {
            "no API key: loopback only"
        } else {
            "API key required"
        }
    );
    for (i, a) in gateway.udp_addrs().iter().enumerate() {
        println!("  worker {i}: UDP {a}");
    }
    if let Some(a) = gateway.admin_addr() {
        println!("  metrics: http://{a}/metrics");
    }
    if let Some(turn) = gateway.turn() {
        let a = turn.addrs();
        print!("  TURN: UDP {} TCP {}", a.udp, a.tcp);
        if let Some(tls) = a.tls {
            print!(" TLS {tls}");
        }
        println!(" (URLs {})", turn.urls().join(" "));
    }
    let demo_stop = tokio_util::sync::CancellationToken::new();
    let demo = if config.demo.enabled {
        let (listener, addr) = switchboard_demo::bind(config.demo.listen)
            .await
            .with_context(|| format!("cannot bind the demo on {}", config.demo.listen))?;
        if config.demo.access_token.is_empty() {
            println!("Demo: open http://{addr}/ in two browser tabs to start a call");
        } else {
            println!("Demo: open http://{addr}/?token=<demo.access_token> in two browser tabs");
        }
        let key = (!config.grpc.api_key.is_empty()).then(|| config.grpc.api_key.to_string());
        let token =
            (!config.demo.access_token.is_empty()).then(|| config.demo.access_token.to_string());
        let url = format!("http://{}", gateway.grpc_addr());
        let stop = demo_stop.clone();
        Some(tokio::spawn(async move {
            if let Err(e) =
                switchboard_demo::serve(listener, url, key, token, stop.cancelled_owned()).await
            {
                tracing::error!(error = %e, "demo server failed");
            }
        }))
    } else {
        None
    };
    signals.wait().await;
    println!("shutting down");
    gateway.shutdown().await;
    demo_stop.cancel();
    if let Some(d) = demo {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), d).await;
    }
    Ok(())
}

/// SIGINT and SIGTERM, listened to from installation on.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                term: signal(SignalKind::terminate()).context("installing a SIGTERM handler")?,
                int: signal(SignalKind::interrupt()).context("installing a SIGINT handler")?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Self {})
        }
    }

    async fn wait(mut self) {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.int.recv() => {}
                _ = self.term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
