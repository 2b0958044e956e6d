//! The admin listener: `GET /metrics` in the Prometheus/OpenMetrics text format
//! (`prometheus-client`). It owns no counter: each scrape asks every Worker for a snapshot of its
//! core's counters ([`crate::driver`]'s `Snapshot` message, answered between two loop turns,
//! never waited on when the Worker's queue is full) and reads the event bus, the embedded TURN
//! server and the log counters, then encodes a fresh registry. It must not touch media or the
//! `Sfu`; it never blocks a Worker.
//!
//! Every metric is prefixed `switchboard_`; per-Worker series carry a `worker` label. Counters
//! are monotonic since the Worker started.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::driver::{WorkerHealth, WorkerSnapshot};
use crate::handle::GatewayHandle;
use crate::turn::{EmbeddedTurn, TurnStats};

/// The OpenMetrics content type `prometheus-client` encodes.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What a scrape reads.
#[derive(Clone)]
pub(crate) struct Sources {
    pub(crate) handle: GatewayHandle,
    pub(crate) turn: Option<EmbeddedTurn>,
}

/// Serves `/metrics` on `listener` until `cancel`.
pub(crate) fn serve(
    listener: tokio::net::TcpListener,
    sources: Sources,
    cancel: CancellationToken,
) {
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(scrape))
        .with_state(Arc::new(sources));
    tokio::spawn(async move {
        let r = axum::serve(listener, app)
            .with_graceful_shutdown(cancel.cancelled_owned())
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "admin listener stopped");
        }
    });
}

/// Binds the admin listener.
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

async fn scrape(State(sources): State<Arc<Sources>>) -> impl IntoResponse {
    let workers = &sources.handle.inner.workers;
    let mut snapshots = Vec::with_capacity(workers.len());
    for w in workers {
        snapshots.push((w.queue_depth(), w.snapshot().await));
    }
    let turn = sources.turn.as_ref().map(EmbeddedTurn::stats);
    let bus = &sources.handle.inner.bus;
    let (published, oldest) = bus.sequences();
    let gauges = BusGauges {
        published,
        kept: if published == 0 {
            0
        } else {
            published + 1 - oldest.min(published + 1)
        },
        backlog: bus.live_backlog() as u64,
        subscribers: bus.live_subscribers() as u64,
    };
    let health = sources.handle.worker_health();
    match render(&snapshots, &health, turn, gauges) {
        Ok(body) => (StatusCode::OK, [(header::CONTENT_TYPE, CONTENT_TYPE)], body),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            String::from("encoding failed\n"),
        ),
    }
}

/// The event bus's figures.
struct BusGauges {
    published: u64,
    kept: u64,
    backlog: u64,
    subscribers: u64,
}

type Labels = Vec<(&'static str, String)>;

/// A registry under construction: one call per metric family.
struct Builder {
    reg: Registry,
}

impl Builder {
    fn counter(&mut self, name: &str, help: &str, values: &[(Labels, u64)]) {
        let f = Family::<Labels, Counter>::default();
        for (l, v) in values {
            f.get_or_create(l).inc_by(*v);
        }
        self.reg.register(name, help, f);
    }

    fn gauge(&mut self, name: &str, help: &str, values: &[(Labels, i64)]) {
        let f = Family::<Labels, Gauge>::default();
        for (l, v) in values {
            f.get_or_create(l).set(*v);
        }
        self.reg.register(name, help, f);
    }

    fn gauge_f64(&mut self, name: &str, help: &str, values: &[(Labels, f64)]) {
        let f = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        for (l, v) in values {
            f.get_or_create(l).set(*v);
        }
        self.reg.register(name, help, f);
    }
}

fn worker(i: usize) -> Labels {
    vec![("worker", i.to_string())]
}

/// Encodes one scrape. `snapshots` holds each Worker's queue depth and snapshot (`None`: busy or
/// stopped, its series are left out); `health` each Worker's supervisor status.
fn render(
    snapshots: &[(usize, Option<WorkerSnapshot>)],
    health: &[WorkerHealth],
    turn: Option<TurnStats>,
    bus: BusGauges,
) -> Result<String, std::fmt::Error> {
    let mut b = Builder {
        reg: Registry::with_prefix("switchboard"),
    };
    let live: Vec<(usize, &WorkerSnapshot)> = snapshots
        .iter()
        .enumerate()
        .filter_map(|(i, (_, s))| s.as_ref().map(|s| (i, s)))
        .collect();
    let per = |f: &dyn Fn(&WorkerSnapshot) -> u64| -> Vec<(Labels, u64)> {
        live.iter().map(|(i, s)| (worker(*i), f(s))).collect()
    };
    let per_i = |f: &dyn Fn(&WorkerSnapshot) -> usize| -> Vec<(Labels, i64)> {
        live.iter()
            .map(|(i, s)| (worker(*i), f(s) as i64))
            .collect()
    };

    b.gauge("rooms", "Rooms open.", &per_i(&|s| s.rooms));
    b.gauge("sessions", "Sessions open.", &per_i(&|s| s.sessions));
    b.gauge("tracks", "Published Tracks.", &per_i(&|s| s.tracks));
    b.gauge(
        "worker_queue_depth",
        "Commands waiting in a Worker's queue.",
        &snapshots
            .iter()
            .enumerate()
            .map(|(i, (d, _))| (worker(i), *d as i64))
            .collect::<Vec<_>>(),
    );
    b.gauge_f64(
        "worker_loop_lag_seconds",
        "How long this scrape's request waited for the Worker loop.",
        &live
            .iter()
            .map(|(i, s)| (worker(*i), s.loop_lag.as_secs_f64()))
            .collect::<Vec<_>>(),
    );
    b.gauge(
        "worker_up",
        "1 when the Worker answered this scrape, 0 when its queue was full or it had stopped.",
        &snapshots
            .iter()
            .enumerate()
            .map(|(i, (_, s))| (worker(i), i64::from(s.is_some())))
            .collect::<Vec<_>>(),
    );

    b.gauge(
        "worker_healthy",
        "1 while the Worker serves; 0 while it restarts after a fault of its core, or for good if \
         its thread stopped.",
        &health
            .iter()
            .enumerate()
            .map(|(i, h)| (worker(i), i64::from(h.healthy)))
            .collect::<Vec<_>>(),
    );
    b.counter(
        "worker_restarts",
        "Faults of a Worker's core; each closed every Room and Session it held \
         (INTERNAL_ERROR) and restarted it empty on the same sockets.",
        &health
            .iter()
            .enumerate()
            .map(|(i, h)| (worker(i), h.restarts))
            .collect::<Vec<_>>(),
    );

    let c = |b: &mut Builder, name: &str, help: &str, f: &dyn Fn(&WorkerSnapshot) -> u64| {
        b.counter(name, help, &per(f));
    };
    c(
        &mut b,
        "datagrams_in",
        "Datagrams (UDP, TCP frames) received from Peers.",
        &|s| s.counters.datagrams_in,
    );
    c(&mut b, "bytes_in", "Bytes received from Peers.", &|s| {
        s.counters.bytes_in
    });
    c(&mut b, "datagrams_out", "Datagrams sent to Peers.", &|s| {
        s.counters.datagrams_out
    });
    c(&mut b, "bytes_out", "Bytes sent to Peers.", &|s| {
        s.counters.bytes_out
    });
    c(
        &mut b,
        "udp_send_drops",
        "UDP datagrams dropped because the socket buffer was full.",
        &|s| s.udp_drops,
    );
    c(
        &mut b,
        "datagrams_unrouted",
        "Datagrams from unknown addresses that were not a STUN request for a known Session.",
        &|s| s.counters.datagrams_unrouted,
    );
    c(
        &mut b,
        "datagrams_rejected",
        "Datagrams a Session refused or could not parse.",
        &|s| s.counters.datagrams_rejected,
    );
    c(
        &mut b,
        "rtp_forwarded",
        "RTP packets forwarded to subscribers.",
        &|s| s.counters.rtp_forwarded,
    );
    c(
        &mut b,
        "rtp_dropped",
        "RTP packets dropped (no payload type match, Track not open).",
        &|s| s.counters.rtp_dropped,
    );
    c(
        &mut b,
        "data_forwarded",
        "Data-channel messages forwarded.",
        &|s| s.counters.data_forwarded,
    );
    c(
        &mut b,
        "data_dropped",
        "Data-channel messages dropped.",
        &|s| s.counters.data_dropped + s.counters.data_oversized,
    );
    c(
        &mut b,
        "data_slow_receivers",
        "Reliable channels closed because their receiver was too slow.",
        &|s| s.counters.data_slow_receivers,
    );
    c(
        &mut b,
        "session_panics",
        "Sessions closed because of an internal fault.",
        &|s| s.counters.session_panics,
    );
    c(
        &mut b,
        "keyframe_requests",
        "Keyframe requests sent to publishers.",
        &|s| s.counters.keyframe_requests,
    );
    c(
        &mut b,
        "layer_switches",
        "Times a subscription started or switched simulcast layer.",
        &|s| s.counters.layer_switches,
    );
    c(
        &mut b,
        "nacks_received",
        "NACKs received from subscribers.",
        &|s| s.counters.nacks_received,
    );
    c(&mut b, "nacks_sent", "NACKs sent to publishers.", &|s| {
        s.counters.nacks_sent
    });
    c(
        &mut b,
        "plis_received",
        "PLIs and FIRs received from subscribers.",
        &|s| s.counters.plis_received,
    );
    c(
        &mut b,
        "plis_sent",
        "PLIs and FIRs sent to publishers.",
        &|s| s.counters.plis_sent,
    );

    let commands: Vec<(Labels, u64)> = live
        .iter()
        .flat_map(|(i, s)| {
            s.commands.iter().map(move |(kind, n)| {
                (
                    vec![("worker", i.to_string()), ("kind", kind.to_string())],
                    n,
                )
            })
        })
        .collect();
    b.counter("commands", "Backend commands handled, per kind.", &commands);

    let estimates = Histogram::new(exponential_buckets(100_000.0, 2.0, 10));
    for (_, s) in &live {
        for e in &s.estimates {
            estimates.observe(*e as f64);
        }
    }
    b.reg.register(
        "bwe_estimate_bps",
        "Each Session's current downlink estimate (bits/s), at this scrape.",
        estimates,
    );

    let tcp = |f: &dyn Fn(&crate::driver::TcpCounters) -> u64| -> Vec<(Labels, u64)> {
        live.iter()
            .filter_map(|(i, s)| s.tcp.as_ref().map(|t| (worker(*i), f(t))))
            .collect()
    };
    b.counter(
        "ice_tcp_accepted",
        "ICE-TCP connections accepted.",
        &tcp(&|t| t.accepted),
    );
    b.counter(
        "ice_tcp_refused",
        "ICE-TCP connections refused (limits, duplicates).",
        &tcp(&|t| t.refused),
    );
    b.counter(
        "ice_tcp_unchecked",
        "ICE-TCP connections closed without a valid first check.",
        &tcp(&|t| t.unchecked),
    );
    b.counter(
        "ice_tcp_garbage",
        "ICE-TCP connections closed for bad framing.",
        &tcp(&|t| t.garbage),
    );
    b.counter(
        "ice_tcp_idle",
        "ICE-TCP connections closed when idle.",
        &tcp(&|t| t.idle),
    );
    b.counter(
        "ice_tcp_peer_closed",
        "ICE-TCP connections closed by the Peer.",
        &tcp(&|t| t.peer_closed),
    );
    b.counter(
        "ice_tcp_frames_in",
        "ICE-TCP frames received.",
        &tcp(&|t| t.frames_in),
    );
    b.counter(
        "ice_tcp_frames_out",
        "ICE-TCP frames sent.",
        &tcp(&|t| t.frames_out),
    );
    b.counter(
        "ice_tcp_send_drops",
        "ICE-TCP frames dropped (send queue full).",
        &tcp(&|t| t.send_drops),
    );

    if let Some(t) = turn {
        let one = |v: u64| vec![(Labels::new(), v)];
        b.gauge(
            "turn_allocations",
            "Live TURN allocations.",
            &[(Labels::new(), t.allocations as i64)],
        );
        b.counter(
            "turn_allocations_created",
            "TURN allocations created.",
            &one(t.allocations_created),
        );
        let refused: Vec<(Labels, u64)> = [
            ("unauthorized", t.refused_unauthorized),
            ("forbidden", t.refused_forbidden),
            ("quota", t.refused_quota),
            ("capacity", t.refused_capacity),
            ("other", t.refused_other),
        ]
        .into_iter()
        .map(|(why, v)| (vec![("reason", why.to_string())], v))
        .collect();
        b.counter(
            "turn_refused",
            "TURN requests refused, per reason.",
            &refused,
        );
        b.counter(
            "turn_malformed",
            "TURN frames that did not parse.",
            &one(t.malformed),
        );
        b.counter(
            "turn_bytes_to_peers",
            "Payload bytes relayed from TURN clients to peers.",
            &one(t.bytes_to_peers),
        );
        b.counter(
            "turn_bytes_to_clients",
            "Payload bytes relayed from peers to TURN clients.",
            &one(t.bytes_to_clients),
        );
        let dropped: Vec<(Labels, u64)> = [
            ("no_permission", t.dropped_no_permission),
            ("rate", t.dropped_rate),
        ]
        .into_iter()
        .map(|(why, v)| (vec![("reason", why.to_string())], v))
        .collect();
        b.counter(
            "turn_dropped",
            "TURN packets dropped, per reason.",
            &dropped,
        );
        b.counter(
            "turn_bindings_answered",
            "STUN Binding requests answered by the TURN server.",
            &one(t.bindings_answered),
        );
    }

    let none = Labels::new;
    b.counter(
        "events_published",
        "Events published on the event bus.",
        &[(none(), bus.published)],
    );
    b.gauge(
        "events_replay_kept",
        "Events kept for WatchEvents replay.",
        &[(none(), bus.kept as i64)],
    );
    b.gauge(
        "events_live_backlog",
        "Events not yet read by the slowest live WatchEvents stream (the bus's lag).",
        &[(none(), bus.backlog as i64)],
    );
    b.gauge(
        "events_live_subscribers",
        "Live event subscriptions: WatchEvents streams past their replay plus the gateway's own \
         listeners (each ends when its reader goes away).",
        &[(none(), bus.subscribers as i64)],
    );
    b.counter(
        "peer_driven_log_lines",
        "Log lines caused by Peer input (kept at debug; counted either way).",
        &[(none(), crate::telemetry::peer_driven_lines())],
    );

    let mut out = String::new();
    encode(&mut out, &b.reg)?;
    Ok(out)
}
