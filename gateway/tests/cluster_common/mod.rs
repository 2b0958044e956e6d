//! Support for the cluster tests: a Debian `redis-server` on a free loopback port, `switchboard`
//! processes on their own loopback addresses, gRPC clients to them, and a minimal backend that
//! relays signaling between the cluster and str0m test Peers. Every wait is a bounded poll; only
//! processes started here are signalled, by their PID.

#![allow(dead_code)]

mod backend;

#[allow(unused_imports)]
pub use backend::{Backend, av, min_frames};

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use switchboard::v1 as pb;
use switchboard::v1::cluster_service_client::ClusterServiceClient;
use switchboard::v1::data_service_client::DataServiceClient;
use switchboard::v1::event_service_client::EventServiceClient;
use switchboard::v1::room_service_client::RoomServiceClient;
use switchboard::v1::session_service_client::SessionServiceClient;
use tonic::transport::Channel;

/// Polls `cond` every 20 ms until it returns `Ok(())` or `timeout` passes.
pub async fn wait_until<F, Fut>(timeout: Duration, mut cond: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let end = Instant::now() + timeout;
    loop {
        let reason = match cond().await {
            Ok(()) => return Ok(()),
            Err(r) => r,
        };
        if Instant::now() > end {
            bail!("timed out after {timeout:?}: {reason}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// A `redis-server` without persistence on 127.0.0.1, stopped (SIGKILL) on drop.
pub struct Redis {
    child: Option<Child>,
    pub port: u16,
}

impl Redis {
    pub fn start() -> anyhow::Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut r = Self { child: None, port };
        r.spawn()?;
        Ok(r)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("redis-server not found: `bash scripts/test.sh` installs it (apt-get install redis-server)")?;
        self.child = Some(child);
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
                let mut buf = [0u8; 7];
                if s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() {
                    return Ok(());
                }
            }
            if Instant::now() > end {
                bail!("redis-server did not answer on port {}", self.port);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL (the data goes with it: no persistence).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again, empty, on the same port.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Short cluster timings for tests: dead after 1.5 s, leases of 4 s (fenced after 3 s without renewal).
pub fn cluster_toml(redis: &str, cluster: &str, node: &str) -> String {
    format!(
        r#"
[cluster]
redis_url = "{redis}"
name = "{cluster}"
node_id = "{node}"
heartbeat_ms = 300
node_ttl_ms = 1500
lease_ttl_ms = 4000
renew_ms = 500
fence_margin_ms = 1000
store_timeout_ms = 400
keepalive_ms = 1000
forward_timeout_ms = 5000
rampup_penalty = 2
"#
    )
}

/// One `switchboard` process on its own loopback address (gRPC and media bound there).
pub struct Node {
    pub id: String,
    pub ip: IpAddr,
    child: Child,
    pub grpc: String,
    pub udp: Vec<SocketAddr>,
    /// The admin listener (`/metrics`).
    pub admin: SocketAddr,
    pub log: PathBuf,
    _dir: TempDir,
}

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!(
            "switchboard-cluster-{tag}-{}-{n}",
            std::process::id()
        ));
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("KEEP_CLUSTER_LOGS").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Node {
    /// Starts node `id` on `ip` in `cluster` with the test timings.
    pub fn start(id: &str, ip: &str, redis: &Redis, cluster: &str) -> anyhow::Result<Self> {
        Self::start_in(id, ip, redis, cluster, "")
    }

    /// [`Node::start`] with `cluster.region = region`.
    pub fn start_in(
        id: &str,
        ip: &str,
        redis: &Redis,
        cluster: &str,
        region: &str,
    ) -> anyhow::Result<Self> {
        let dir = TempDir::new(id);
        let cfg = dir.0.join("switchboard.toml");
        let text = format!(
            r#"
[grpc]
listen = "{ip}:0"
[admin]
listen = "{ip}:0"
[media]
workers = 1
bind_ip = "{ip}"
port_base = 0
tcp_port_base = 0
[turn]
enabled = false
[demo]
enabled = false
[log]
filter = "info,switchboard_gateway::cluster=debug"
{}region = "{region}"
"#,
            cluster_toml(&redis.url(), cluster, id)
        );
        std::fs::write(&cfg, text)?;
        let log = dir.0.join("stderr.log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .arg("--config")
            .arg(&cfg)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        let out = child.stdout.take().context("stdout")?;
        // Read the banner on a thread: the gRPC address and the Workers' UDP addresses.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Keeps draining after the banner so the child never blocks on a full pipe.
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                let _ = tx.send(line);
            }
        });
        let (mut grpc, mut udp, mut admin) = (None, Vec::new(), None);
        let end = Instant::now() + Duration::from_secs(20);
        while grpc.is_none() || udp.is_empty() || admin.is_none() {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let _ = child.kill();
                bail!(
                    "node {id} did not start: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            let Ok(line) = rx.recv_timeout(left.min(Duration::from_millis(200))) else {
                continue;
            };
            if let Some(rest) = line.strip_prefix("Switchboard gRPC listening on ") {
                grpc = rest.split_whitespace().next().map(str::to_string);
            } else if let Some((_, a)) = line.trim().split_once(": UDP ") {
                udp.push(a.trim().parse()?);
            } else if let Some(a) = line.trim().strip_prefix("metrics: http://") {
                admin = Some(a.trim_end_matches("/metrics").parse()?);
            }
        }
        Ok(Self {
            id: id.to_string(),
            ip: ip.parse()?,
            child,
            grpc: grpc.unwrap(),
            udp,
            admin: admin.unwrap(),
            log,
            _dir: dir,
        })
    }

    /// `switchboard_events_live_subscribers` from the node's `/metrics`.
    pub async fn live_subscribers(&self) -> anyhow::Result<u64> {
        switchboard_integration_tests::metric(self.admin, "switchboard_events_live_subscribers")
            .await
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGSTOP, only while the process is ours and running (never a reaped, reusable PID).
    pub fn stop(&mut self) {
        if self.alive() {
            signal(self.pid(), "STOP");
        }
    }

    /// SIGTERM (graceful shutdown), under the same rule.
    pub fn term(&mut self) {
        if self.alive() {
            signal(self.pid(), "TERM");
        }
    }

    /// SIGCONT, under the same rule.
    pub fn cont(&mut self) {
        if self.alive() {
            signal(self.pid(), "CONT");
        }
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn clients(&self) -> Clients {
        Clients::new(&self.grpc, false)
    }

    /// Clients whose calls carry the forwarded mark: served by this node alone (its local view).
    pub fn local(&self) -> Clients {
        Clients::new(&self.grpc, true)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // A stopped process must be continued to die of SIGKILL promptly on every kernel.
        self.cont();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Clone)]
pub struct Mark(bool);

impl tonic::service::Interceptor for Mark {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if self.0 {
            req.metadata_mut()
                .insert("x-switchboard-forwarded", "test".parse().unwrap());
        }
        Ok(req)
    }
}

type Svc = tonic::service::interceptor::InterceptedService<Channel, Mark>;

/// gRPC clients of one node.
#[derive(Clone)]
pub struct Clients {
    pub rooms: RoomServiceClient<Svc>,
    pub sessions: SessionServiceClient<Svc>,
    pub events: EventServiceClient<Svc>,
    pub data: DataServiceClient<Svc>,
    pub cluster: ClusterServiceClient<Svc>,
}

impl Clients {
    fn new(url: &str, forwarded: bool) -> Self {
        let ch = Channel::from_shared(url.to_string())
            .unwrap()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(15))
            .connect_lazy();
        let m = Mark(forwarded);
        Self {
            rooms: RoomServiceClient::with_interceptor(ch.clone(), m.clone()),
            sessions: SessionServiceClient::with_interceptor(ch.clone(), m.clone()),
            events: EventServiceClient::with_interceptor(ch.clone(), m.clone()),
            data: DataServiceClient::with_interceptor(ch.clone(), m.clone()),
            cluster: ClusterServiceClient::with_interceptor(ch, m),
        }
    }

    pub async fn create_room(&self, id: &str) -> Result<pb::CreateRoomResponse, tonic::Status> {
        self.create_room_in(id, "").await
    }

    /// CreateRoom with `region_hint`.
    pub async fn create_room_in(
        &self,
        id: &str,
        region_hint: &str,
    ) -> Result<pb::CreateRoomResponse, tonic::Status> {
        self.rooms
            .clone()
            .create_room(pb::CreateRoomRequest {
                room_id: id.into(),
                options: None,
                region_hint: region_hint.into(),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    /// Retries CreateRoom until it succeeds (bounded).
    pub async fn create_room_within(
        &self,
        timeout: Duration,
        id: &str,
    ) -> anyhow::Result<pb::CreateRoomResponse> {
        let end = Instant::now() + timeout;
        loop {
            match self.create_room(id).await {
                Ok(r) => return Ok(r),
                Err(e) if Instant::now() > end => bail!("CreateRoom {id} kept failing: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Room ids this node serves itself.
    pub async fn local_rooms(&self) -> anyhow::Result<Vec<String>> {
        let req = pb::ListRoomsRequest {
            page_size: 1000,
            ..Default::default()
        };
        let resp = self.rooms.clone().list_rooms(req).await?;
        Ok(switchboard_integration_tests::room_ids(resp.into_inner()))
    }

    pub async fn status(&self) -> anyhow::Result<pb::GetClusterStatusResponse> {
        Ok(self
            .cluster
            .clone()
            .get_cluster_status(pb::GetClusterStatusRequest {})
            .await?
            .into_inner())
    }

    /// Waits until this node sees `n` nodes.
    pub async fn wait_nodes(&self, n: usize) -> anyhow::Result<()> {
        wait_until(Duration::from_secs(15), || async {
            match self.status().await {
                Ok(s) if s.nodes.len() == n && s.store_available => Ok(()),
                Ok(s) => Err(format!("{} nodes", s.nodes.len())),
                Err(e) => Err(e.to_string()),
            }
        })
        .await
    }

    /// A room-filtered event stream, collected in the background.
    pub async fn watch(&self, room: &str) -> anyhow::Result<Watch> {
        let mut s = self
            .events
            .clone()
            .watch_events(pb::WatchEventsRequest {
                room_id: room.into(),
                ..Default::default()
            })
            .await?
            .into_inner();
        let events: Arc<Mutex<Vec<pb::Event>>> = Arc::default();
        let end: Arc<Mutex<Option<tonic::Status>>> = Arc::default();
        let (e, x) = (events.clone(), end.clone());
        let task = tokio::spawn(async move {
            loop {
                match s.message().await {
                    Ok(Some(ev)) => e.lock().unwrap().push(ev),
                    Ok(None) => {
                        *x.lock().unwrap() = Some(tonic::Status::ok("ended"));
                        return;
                    }
                    Err(st) => {
                        *x.lock().unwrap() = Some(st);
                        return;
                    }
                }
            }
        });
        Ok(Watch { events, end, task })
    }
}

/// A collected event stream.
pub struct Watch {
    pub events: Arc<Mutex<Vec<pb::Event>>>,
    pub end: Arc<Mutex<Option<tonic::Status>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Watch {
    pub fn kinds(&self) -> Vec<pb::event::Kind> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| e.kind.clone())
            .collect()
    }

    pub fn room_lost(&self) -> Option<pb::RoomLost> {
        self.kinds().into_iter().find_map(|k| match k {
            pb::event::Kind::RoomLost(l) => Some(l),
            _ => None,
        })
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The owner of `room` according to every node's status (its leases): exactly one node must
/// hold it, or none.
pub async fn lease_holders(via: &Clients, room: &str) -> anyhow::Result<Vec<(String, u64)>> {
    let s = via.status().await?;
    Ok(s.nodes
        .iter()
        .flat_map(|n| {
            n.leases
                .iter()
                .filter(|l| l.room_id == room)
                .map(|l| (n.node_id.clone(), l.epoch))
        })
        .collect())
}
