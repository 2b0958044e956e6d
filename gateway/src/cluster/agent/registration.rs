//! The Agent's registration: the heartbeat that publishes this node with its current load
//! (Rooms, Sessions, recent claims, forwarded packets/s, Worker loop lag, CPU) and refreshes the
//! view of the other nodes. It reads load through [`GatewayHandle`](crate::handle::GatewayHandle)
//! only and decides nothing about placement (`placing.rs`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use switchboard_core::RoomInfo;

use super::{Agent, lock};
use crate::cluster::config::ClusterConfig;
use crate::cluster::load::{CLOCK_TICKS_PER_SEC, process_cpu_ticks};
use crate::cluster::store::{NodeInfo, NodeLoad, NodeState};
use crate::handle::GatewayError;
use crate::paging::PageRequest;

impl Agent {
    fn recent_claims(&self) -> u32 {
        let now = Instant::now();
        let window = Duration::from_secs(self.cfg.rampup_secs);
        lock(&self.claims)
            .iter()
            .filter(|t| now.duration_since(**t) <= window)
            .count() as u32
    }

    /// The shortest interval a load rate is measured over: most of a heartbeat (heartbeats come
    /// one interval apart, give or take the scheduler).
    fn rate_interval(&self) -> Duration {
        ClusterConfig::ms(self.cfg.heartbeat_ms) * 3 / 4
    }

    /// CPU this process used over the last heartbeat interval, in per mille of the machine.
    fn cpu_permille(&self) -> u32 {
        let Some(ticks) = process_cpu_ticks() else {
            return 0;
        };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let per_sec = lock(&self.cpu).update(Instant::now(), ticks, self.rate_interval());
        ((per_sec / CLOCK_TICKS_PER_SEC / cores) * 1000.0).clamp(0.0, 1000.0) as u32
    }

    /// RTP packets/s forwarded by all Workers over the last heartbeat interval (from each Worker's
    /// snapshot, as `/metrics` reads them; a Worker whose queue is full is skipped this time), and
    /// the worst Worker loop lag (microseconds) as the Workers measure it (how late their timers
    /// ran), which a full queue does not hide.
    async fn traffic(&self) -> (u64, u64) {
        let mut total = 0u64;
        let mut lag = Duration::ZERO;
        for w in &self.handle.inner.workers {
            if let Some(s) = w.snapshot().await {
                total = total.saturating_add(s.counters.rtp_forwarded);
            }
            lag = lag.max(w.loop_lag());
        }
        let pps = lock(&self.forwarded).update(Instant::now(), total, self.rate_interval()) as u64;
        (pps, lag.as_micros().min(u128::from(u64::MAX)) as u64)
    }

    /// Every Room on this node, read page by page (the largest pages `[listing]` allows; at most
    /// 100 000 pages).
    pub(crate) async fn all_rooms(&self) -> Result<Vec<RoomInfo>, GatewayError> {
        let mut out = Vec::new();
        let mut page = PageRequest {
            page_size: u32::MAX,
            page_token: String::new(),
        };
        for _ in 0..100_000 {
            let p = self.handle.list_rooms(page.clone()).await?;
            out.extend(p.items);
            if p.next_page_token.is_empty() {
                break;
            }
            page.page_token = p.next_page_token;
        }
        Ok(out)
    }

    /// This node's registration with its current load.
    pub(crate) async fn info(&self) -> NodeInfo {
        let (rooms, sessions) = match self.all_rooms().await {
            Ok(r) => (r.len() as u32, r.iter().map(|r| r.session_count).sum()),
            Err(_) => (0, 0),
        };
        let (forwarded_pps, loop_lag_micros) = self.traffic().await;
        NodeInfo {
            id: self.node_id.clone(),
            grpc_endpoint: self.endpoint.clone(),
            region: self.cfg.region.clone(),
            media_addrs: self.media.clone(),
            state: if self.draining.load(Ordering::Acquire) {
                NodeState::Draining
            } else {
                NodeState::Serving
            },
            version: env!("CARGO_PKG_VERSION").to_string(),
            boot_id: self.boot_id.clone(),
            workers: self.workers,
            load: NodeLoad {
                rooms,
                sessions,
                recent_rooms: self.recent_claims(),
                forwarded_pps,
                loop_lag_micros,
                cpu_permille: self.cpu_permille(),
            },
            heartbeat_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        }
    }

    /// One heartbeat and a fresh view of the cluster.
    pub(crate) async fn beat(&self) {
        let info = self.info().await;
        let ttl = ClusterConfig::ms(self.cfg.node_ttl_ms);
        let res = match self.store.heartbeat(&info, ttl).await {
            Ok(()) => self.store.list_nodes().await,
            Err(e) => Err(e),
        };
        let mut v = lock(&self.view);
        match res {
            Ok(nodes) => {
                if !v.store_ok {
                    tracing::info!(node = %self.node_id, nodes = nodes.len(), "cluster store reachable: registered");
                }
                v.nodes = nodes;
                v.store_ok = true;
            }
            Err(e) => {
                if v.store_ok {
                    tracing::warn!(error = %e, "cluster store unreachable: no new rooms until it is back");
                }
                v.store_ok = false;
            }
        }
    }

    pub(super) async fn heartbeat_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(ClusterConfig::ms(self.cfg.heartbeat_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = self.stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            self.beat().await;
        }
    }
}
