//! Switchboard: an embeddable WebRTC SFU controlled over gRPC.
//!
//! Start a [`Gateway`] with a [`Config`]; drive it through its [`GatewayHandle`] (typed Rust
//! calls) or over gRPC (the `switchboard.v1` services, served on `config.grpc.listen`); stop it
//! with [`Gateway::shutdown`].
//!
//! # Layout
//! - `switchboard_core` (crate): the sans-IO SFU; every decision.
//! - `driver`: Worker threads, each with a UDP socket, an ICE-TCP listener and one core.
//! - [`handle`]: the typed control surface and dispatch to Workers.
//! - [`api`]: the gRPC edge (the only module that knows protobuf).
//! - [`events`]: sequence-stamped event fan-out.
//! - [`turn`]: the embedded TURN/STUN server, TURN credential minting and the `[turn]` keys.
//! - `conns`: TCP plumbing shared by the ICE-TCP side and the TURN listeners (accept back-off,
//!   per-source connection limits, the batching queue writer).
//! - `metrics`: the admin listener (`GET /metrics`, Prometheus text) over Worker snapshots.
//! - [`config`], [`telemetry`]: settings (and what the Workers are built from) and logging.
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! let gateway = switchboard_gateway::Gateway::start(Default::default()).await?;
//! println!("gRPC on {}", gateway.grpc_addr());
//! gateway.shutdown().await;
//! # Ok(()) }
//! ```

pub mod api;
pub mod cluster;
pub mod config;
mod conns;
mod driver;
pub mod events;
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod handle;
mod metrics;
pub mod paging;
pub mod telemetry;
#[cfg(test)]
mod test_support;
pub mod turn;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use config::Config;
pub use driver::WorkerHealth;
pub use handle::{GatewayError, GatewayHandle};
pub use switchboard_core as core;

use tokio_util::sync::CancellationToken;

use crate::events::EventBus;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// A socket could not be bound.
    #[error("cannot bind {what} {addr}: {source}")]
    Bind {
        /// Which socket.
        what: &'static str,
        /// Where.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The embedded TURN server could not start (a listener, the TLS files, the relay address).
    #[error(transparent)]
    Turn(#[from] turn::TurnError),
    /// Something else in start-up failed.
    #[error("start-up failed: {0}")]
    Other(String),
}

/// A running gateway. Dropping it without [`Gateway::shutdown`] leaves its threads running until
/// the process exits.
pub struct Gateway {
    handle: GatewayHandle,
    grpc_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    udp_addrs: Vec<SocketAddr>,
    tcp_addrs: Vec<SocketAddr>,
    cancel: CancellationToken,
    server: api::Server,
    threads: Vec<std::thread::JoinHandle<()>>,
    grace: Duration,
    turn: Option<turn::TurnServer>,
    cluster: Option<cluster::Cluster>,
}

impl Gateway {
    /// Validates `config`, binds every socket, starts the Workers and the gRPC server.
    pub async fn start(config: Config) -> Result<Self, StartError> {
        config.validate()?;
        let bus = Arc::new(EventBus::new(config.limits.event_bus()));
        let n = config.workers();
        let sfu_config = config.sfu_config();
        let announce = config.announce_ips();
        let mut workers = Vec::with_capacity(n);
        for i in 0..n {
            let addr = config.worker_udp_addr(i);
            let tcp = config.worker_tcp_addr(i).map(|bind| driver::TcpSetup {
                bind,
                limits: config.tcp_limits(),
            });
            let w = driver::spawn(
                i as u8,
                addr,
                config.media.socket_buffer_bytes,
                tcp,
                sfu_config.clone(),
                &announce,
                config.limits.command_queue,
                bus.clone(),
            )
            .map_err(|e| match e {
                driver::SpawnError::Udp(source) => StartError::Bind {
                    what: "worker UDP socket",
                    addr,
                    source,
                },
                driver::SpawnError::Other(e) => StartError::Other(format!("worker {i}: {e}")),
                driver::SpawnError::Tcp(source) => StartError::Bind {
                    what: "worker TCP listener",
                    addr: tcp.map_or(addr, |t| t.bind),
                    source,
                },
            })?;
            workers.push(w);
        }
        let udp_addrs: Vec<SocketAddr> = workers.iter().map(|w| w.local_addr).collect();
        let tcp_addrs = workers.iter().filter_map(|w| w.tcp_addr).collect();
        let turn = if config.turn.enabled {
            let media = turn::MediaAddrs {
                bind_ip: config.media.bind_ip,
                announce_ips: announce.clone(),
                sockets: udp_addrs.clone(),
            };
            let mut t = turn::TurnServer::start(&config.turn, &media).await?;
            t.revoke_closed_sessions(bus.subscribe(Default::default()));
            Some(t)
        } else {
            None
        };
        let ice = turn::IceServers::new(
            config.ice_servers.clone(),
            turn.as_ref().map(turn::TurnServer::embedded),
        );
        let bounds = paging::HandleBounds {
            default_page_size: config.listing.default_page_size,
            max_page_size: config.listing.max_page_size,
            max_sdp_bytes: config.signaling.max_sdp_bytes,
            overload: driver::Overload {
                max_queue_depth: config.overload.max_queue_depth,
                max_loop_lag: Duration::from_millis(config.overload.max_loop_lag_ms),
            },
        };
        let workers_handles = workers.iter().map(|w| w.handle.clone()).collect();
        let handle = GatewayHandle::new(workers_handles, bus, ice, bounds)
            .map_err(|e| StartError::Other(e.to_string()))?;
        let threads = workers.into_iter().map(|w| w.thread).collect();

        let listener = tokio::net::TcpListener::bind(config.grpc.listen)
            .await
            .map_err(|source| StartError::Bind {
                what: "gRPC listener",
                addr: config.grpc.listen,
                source,
            })?;
        let grpc_addr = listener.local_addr().map_err(|source| StartError::Bind {
            what: "gRPC listener",
            addr: config.grpc.listen,
            source,
        })?;
        let cluster =
            cluster::Cluster::start(&config.cluster, handle.clone(), grpc_addr, &udp_addrs)
                .await
                .map_err(|e| StartError::Other(e.to_string()))?;
        let cancel = CancellationToken::new();
        let server = api::serve(
            listener,
            handle.clone(),
            &config.grpc,
            config.limits.event_buffer,
            cancel.clone(),
            cluster.clone(),
        )
        .await
        .map_err(|e| StartError::Other(e.to_string()))?;
        server.watch_workers(handle.clone(), cancel.clone());
        let admin_addr = if config.admin.enabled {
            let bind_err = |source| StartError::Bind {
                what: "admin listener",
                addr: config.admin.listen,
                source,
            };
            let l = metrics::bind(config.admin.listen).await.map_err(bind_err)?;
            let addr = l.local_addr().map_err(bind_err)?;
            let sources = metrics::Sources {
                handle: handle.clone(),
                turn: turn.as_ref().map(turn::TurnServer::embedded),
            };
            metrics::serve(l, sources, cancel.clone());
            Some(addr)
        } else {
            None
        };
        if config.grpc.api_key.is_empty() {
            tracing::warn!(
                listen = %grpc_addr,
                "no API key configured: the control API is open to anyone who can reach this \
                 loopback address (set grpc.api_key or SWITCHBOARD__GRPC__API_KEY)"
            );
        }
        Ok(Self {
            handle,
            grpc_addr,
            admin_addr,
            udp_addrs,
            tcp_addrs,
            cancel,
            server,
            threads,
            grace: config.grace(),
            turn,
            cluster,
        })
    }

    /// Where the embedded TURN server listens (real ports), when `turn.enabled`.
    pub fn turn_addrs(&self) -> Option<turn::TurnAddrs> {
        self.turn.as_ref().map(turn::TurnServer::addrs)
    }

    /// The embedded TURN server (URLs, counters, minting), when `turn.enabled`.
    pub fn turn(&self) -> Option<&turn::TurnServer> {
        self.turn.as_ref()
    }

    /// The cluster agent, in cluster mode.
    pub fn cluster(&self) -> Option<&cluster::Cluster> {
        self.cluster.as_ref()
    }

    /// The typed control surface.
    pub fn handle(&self) -> GatewayHandle {
        self.handle.clone()
    }

    /// Where gRPC listens.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// Where the admin listener (`/metrics`) listens, when `admin.enabled`.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// Where each Worker's UDP socket is bound.
    pub fn udp_addrs(&self) -> &[SocketAddr] {
        &self.udp_addrs
    }

    /// The Workers' ICE-TCP listener addresses, in Worker order (empty when `media.tcp_enabled`
    /// is off).
    pub fn tcp_addrs(&self) -> &[SocketAddr] {
        &self.tcp_addrs
    }

    /// Graceful shutdown: refuse new Rooms and Sessions, close every Session (Peers get a DTLS
    /// close, through the embedded TURN server too, which stops after the Workers), send
    /// `GatewayDraining` to every event stream, stop the gRPC server and the Workers.
    /// Bounded by `shutdown.grace_secs`.
    pub async fn shutdown(self) {
        let Self {
            handle,
            cancel,
            server,
            threads,
            grace,
            turn,
            cluster,
            ..
        } = self;
        if let Some(c) = &cluster {
            c.drain().await;
        }
        handle.start_draining();
        server.set_not_serving().await;
        let closed = tokio::time::timeout(grace, handle.shutdown_workers()).await;
        if closed.is_err() {
            tracing::warn!("workers did not close within the grace period");
        }
        tracing::debug!("workers closed");
        if let Some(t) = turn {
            t.shutdown().await;
        }
        if let Some(c) = &cluster {
            c.shutdown().await;
        }
        handle.publish_draining();
        // Stop accepting calls; open event streams deliver what they hold (the Draining event
        // last) and end.
        cancel.cancel();
        if !server.stopped_within(grace).await {
            tracing::warn!("gRPC server did not stop within the grace period");
        }
        tracing::debug!("gRPC server stopped");
        drop(handle);
        let joined = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        });
        let _ = tokio::time::timeout(grace, joined).await;
        tracing::debug!("worker threads joined");
    }
}
