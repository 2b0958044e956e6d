//! The driver: Worker threads, each owning one UDP socket, one TCP listener (ICE-TCP, see
//! [`tcp`]), one timer and one [`Sfu`]. It does all IO and no protocol decisions.
//!
//! # The Worker loop
//! 1. Drain [`Sfu::poll_output`] to `Timeout`: send each datagram (UDP: dropped if the socket
//!    buffer is full, as a network would; TCP: queued on its connection, dropped if that queue is
//!    full), publish each event.
//! 2. Wait for the first of: a command from the API layer, frames from TCP connections, a readable
//!    socket, a new TCP connection, the idle sweep, the timeout.
//! 3. A [`Command`] is applied with [`Sfu::handle_command`]; its result answers through its
//!    one-shot channel once its events are published. TCP frames and
//!    UDP datagrams are each drained up to [`IO_LOOP_BOUND`] and handed to the `Sfu`. A new
//!    connection is taken (or closed when the Worker has `tcp_max_connections`). The sweep closes
//!    connections idle for `tcp_idle_timeout_secs`; every closed connection is reported with
//!    [`Sfu::handle_tcp_closed`]. A timeout, or a deadline already past, calls
//!    [`Sfu::handle_timeout`]. Go to 1.
//!
//! Only the loop touches the `Sfu`; the TCP reader and writer tasks run on the same thread and
//! exchange frames with it through queues.
//!
//! Every input goes into the `Sfu` through its supervisor ([`supervise`]): a panic in the core
//! closes what that core held, reports it, and the loop goes on with a fresh core on the same
//! sockets; the command that hit it is answered [`SendError::Faulted`].
//!
//! The API layer reaches a Worker only through a bounded queue ([`WorkerHandle`]); a full queue
//! is reported, never waited on.

pub(crate) mod framing;
mod load;
mod supervise;
mod tcp;

use std::io;
use std::net::{SocketAddr, TcpListener as StdTcpListener, UdpSocket as StdUdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use supervise::Core;
pub use supervise::{WorkerHealth, WorkerStatus};
use switchboard_core::{Command, CoreError, Datagram, Output, Reply, Sfu, SfuConfig, Transport};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use crate::events::{EventBody, EventBus};

pub(crate) use load::Overload;
use load::WorkerLoad;
pub(crate) use tcp::TcpCounters;
pub(crate) use tcp::TcpLimits;
use tcp::{ConnEvent, TcpSide};

/// Most datagrams read in one go before the loop looks at commands and timers again, so a flood
/// cannot starve the control plane.
pub const IO_LOOP_BOUND: usize = 256;
/// How long a stopping Worker lets its TCP writers send the last frames (DTLS close alerts).
const TCP_SHUTDOWN_GRACE: Duration = Duration::from_millis(200);
/// How long a Worker stops accepting TCP connections after an accept error.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// Largest datagram accepted (larger ones are truncated by the kernel and then fail to parse).
const MAX_DATAGRAM_BYTES: usize = 2048;

/// Where a command's result goes once its outputs (events) have been published.
type ReplyTx = oneshot::Sender<Result<Result<Reply, CoreError>, SendError>>;

enum WorkerMsg {
    /// A backend operation, applied with [`Sfu::handle_command`].
    Command(Command, ReplyTx),
    Shutdown(oneshot::Sender<()>),
    /// Test hook: the Worker thread blocks until the sender is dropped or sends (a Worker that is
    /// behind, deterministically).
    #[cfg(test)]
    Pause(std::sync::mpsc::Receiver<()>),
    /// A request for the Worker's counters (metrics), sent at the instant given.
    Snapshot(Instant, oneshot::Sender<WorkerSnapshot>),
}

/// A Worker's counters and gauges at one instant, for the metrics.
#[derive(Debug, Clone)]
pub(crate) struct WorkerSnapshot {
    pub(crate) rooms: usize,
    pub(crate) sessions: usize,
    pub(crate) tracks: usize,
    pub(crate) counters: switchboard_core::Counters,
    pub(crate) commands: switchboard_core::CommandCounts,
    /// Each Session's downlink estimate (bps), where there is one.
    pub(crate) estimates: Vec<u64>,
    /// UDP datagrams dropped because the socket buffer was full.
    pub(crate) udp_drops: u64,
    /// The ICE-TCP side's counters, when enabled.
    pub(crate) tcp: Option<TcpCounters>,
    /// How long the request waited for the loop: the loop's lag behind its queue.
    pub(crate) loop_lag: Duration,
}

/// Why a command did not reach a Worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendError {
    /// The queue is full.
    Full,
    /// The Worker has stopped.
    Stopped,
    /// The Worker's core panicked while handling this command; it was restarted empty.
    Faulted,
}

/// The API layer's end of a Worker: cheap to clone.
#[derive(Clone)]
pub(crate) struct WorkerHandle {
    tx: mpsc::Sender<WorkerMsg>,
    load: Arc<WorkerLoad>,
    status: Arc<WorkerStatus>,
}

impl WorkerHandle {
    /// Queues `cmd` and waits for its result.
    pub(crate) async fn call(&self, cmd: Command) -> Result<Result<Reply, CoreError>, SendError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .try_send(WorkerMsg::Command(cmd, tx))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => SendError::Full,
                mpsc::error::TrySendError::Closed(_) => SendError::Stopped,
            })?;
        rx.await.map_err(|_| SendError::Stopped)?
    }

    /// The Worker's health: restarts after faults, and whether it is serving.
    pub(crate) fn status(&self) -> &WorkerStatus {
        &self.status
    }

    /// Whether this Worker (index `worker`) may take a new Room or Session now: its queue depth and
    /// loop lag against the `[overload]` thresholds.
    pub(crate) fn admit_new(&self, worker: usize, overload: &Overload) -> Result<(), CoreError> {
        let depth = self.tx.max_capacity() - self.tx.capacity();
        overload.admit_new(worker, depth, self.load.lag())
    }

    /// The Worker's loop lag as it last measured it (how late its timers ran).
    pub(crate) fn loop_lag(&self) -> Duration {
        self.load.lag()
    }

    /// Test hook: blocks the Worker thread until `resume` is dropped or sent to.
    #[cfg(test)]
    pub(crate) fn pause(&self, resume: std::sync::mpsc::Receiver<()>) {
        let _ = self.tx.try_send(WorkerMsg::Pause(resume));
    }

    /// Test hook: the loop lag the Worker reports.
    #[cfg(test)]
    pub(crate) fn set_lag(&self, lag: Duration) {
        self.load.set_lag(lag);
    }

    /// The Worker's counters, or `None` when its queue is full or it has stopped (the metrics
    /// then skip it rather than wait).
    pub(crate) async fn snapshot(&self) -> Option<WorkerSnapshot> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .try_send(WorkerMsg::Snapshot(Instant::now(), tx))
            .ok()?;
        rx.await.ok()
    }

    /// Messages waiting in the Worker's queue.
    pub(crate) fn queue_depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Asks the Worker to close everything and stop; resolves when it has.
    pub(crate) async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(WorkerMsg::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// A started Worker.
pub(crate) struct Worker {
    pub(crate) handle: WorkerHandle,
    pub(crate) local_addr: SocketAddr,
    /// The TCP listener's address, when ICE-TCP is enabled.
    pub(crate) tcp_addr: Option<SocketAddr>,
    pub(crate) thread: std::thread::JoinHandle<()>,
}

/// Where and how a Worker listens for ICE-TCP.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TcpSetup {
    pub(crate) bind: SocketAddr,
    pub(crate) limits: TcpLimits,
}

/// Which of a Worker's sockets failed to bind.
#[derive(Debug)]
pub(crate) enum SpawnError {
    Udp(io::Error),
    Tcp(io::Error),
    Other(io::Error),
}

/// Binds the sockets and starts a Worker thread around a new `Sfu`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn spawn(
    index: u8,
    bind: SocketAddr,
    buffer_bytes: usize,
    tcp: Option<TcpSetup>,
    mut sfu_config: SfuConfig,
    announce: &[std::net::IpAddr],
    queue: usize,
    bus: Arc<EventBus>,
) -> Result<Worker, SpawnError> {
    let socket = bind_udp(bind, buffer_bytes).map_err(SpawnError::Udp)?;
    let local_addr = socket.local_addr().map_err(SpawnError::Udp)?;
    let listener = match tcp {
        Some(t) => Some((bind_tcp(t.bind).map_err(SpawnError::Tcp)?, t.limits)),
        None => None,
    };
    let tcp_addr = match &listener {
        Some((l, _)) => Some(l.local_addr().map_err(SpawnError::Tcp)?),
        None => None,
    };
    sfu_config.worker = index;
    sfu_config.candidate_addrs = announce
        .iter()
        .map(|ip| SocketAddr::new(*ip, local_addr.port()))
        .collect();
    sfu_config.tcp_candidate_addrs = match tcp_addr {
        Some(a) => announce
            .iter()
            .map(|ip| SocketAddr::new(*ip, a.port()))
            .collect(),
        None => Vec::new(),
    };
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed)
        .map_err(|e| SpawnError::Other(io::Error::other(e.to_string())))?;
    let sfu = Sfu::new(Instant::now(), sfu_config, seed).map_err(|e| {
        SpawnError::Other(io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))
    })?;
    let (tx, rx) = mpsc::channel(queue);
    let load = Arc::new(WorkerLoad::default());
    let worker_load = load.clone();
    let status = Arc::new(WorkerStatus::default());
    let core = Core::new(sfu, index, bus, status.clone());
    let thread = std::thread::Builder::new()
        .name(format!("sb-worker-{index}"))
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime with IO and timers builds");
            rt.block_on(run(socket, listener, core, rx, index, worker_load));
        })
        .map_err(SpawnError::Other)?;
    Ok(Worker {
        handle: WorkerHandle { tx, load, status },
        local_addr,
        tcp_addr,
        thread,
    })
}

fn bind_tcp(addr: SocketAddr) -> io::Result<StdTcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // A restarted gateway can listen again while old connections are in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

fn bind_udp(addr: SocketAddr, buffer_bytes: usize) -> io::Result<StdUdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Bursts (a keyframe to many subscribers) overflow the default buffers first; the kernel
    // caps these at net.core.{r,w}mem_max.
    let _ = socket.set_recv_buffer_size(buffer_bytes);
    let _ = socket.set_send_buffer_size(buffer_bytes);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

async fn run(
    socket: StdUdpSocket,
    listener: Option<(StdTcpListener, TcpLimits)>,
    mut core: Core,
    mut rx: mpsc::Receiver<WorkerMsg>,
    index: u8,
    load: Arc<WorkerLoad>,
) {
    let status = core.status();
    let socket = match UdpSocket::from_std(socket) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(worker = index, error = %e, "cannot register the UDP socket");
            status.set_healthy(false);
            return;
        }
    };
    let (mut tcp, listener, mut tcp_events) =
        match listener.map(|(l, limits)| TcpSide::new(l, limits)) {
            None => (None, None, None),
            Some(Ok((side, w))) => (Some(side), Some(w.listener), Some(w.events)),
            Some(Err(e)) => {
                tracing::error!(worker = index, error = %e, "cannot register the TCP listener");
                status.set_healthy(false);
                return;
            }
        };
    let local = socket.local_addr().ok();
    let candidates = core.sfu().config().candidate_addrs.clone();
    let tcp_candidates = core.sfu().config().tcp_candidate_addrs.clone();
    let sweep_every = tcp
        .as_ref()
        .map_or(Duration::from_secs(3600), TcpSide::sweep_interval);
    let mut next_sweep = Instant::now() + sweep_every;
    let mut buf = vec![0u8; MAX_DATAGRAM_BYTES];
    let mut udp_drops: u64 = 0;
    let mut accept_paused_until: Option<Instant> = None;
    let stopped;
    loop {
        let mut deadline = flush(&mut core, &socket, tcp.as_mut(), &mut udp_drops);
        // Under constant input the timer branch below may never win the select: run it here.
        let now = Instant::now();
        if deadline <= now {
            load.timer_ran(deadline, now);
            core.run(|sfu| sfu.handle_timeout(now));
            deadline = flush(&mut core, &socket, tcp.as_mut(), &mut udp_drops);
        }
        // Likewise the TCP sweep: idle connections must close even under constant input.
        if next_sweep <= now {
            next_sweep = now + sweep_every;
            sweep(&mut core, tcp.as_mut(), now);
            deadline = flush(&mut core, &socket, tcp.as_mut(), &mut udp_drops);
        }
        tokio::select! {
            biased;
            msg = rx.recv() => match msg {
                Some(WorkerMsg::Command(cmd, reply)) => {
                    let res = core
                        .run(|sfu| sfu.handle_command(Instant::now(), SystemTime::now(), cmd))
                        .ok_or(SendError::Faulted);
                    // Publish the command's events before answering: when a call returns, its
                    // events are already in every event stream.
                    flush(&mut core, &socket, tcp.as_mut(), &mut udp_drops);
                    // The caller may have gone away (request cancelled); nothing to do then.
                    let _ = reply.send(res);
                }
                Some(WorkerMsg::Shutdown(done)) => {
                    core.run(|sfu| sfu.shutdown(Instant::now()));
                    flush(&mut core, &socket, tcp.as_mut(), &mut udp_drops);
                    if let Some(side) = tcp.as_mut() {
                        side.close_all(TCP_SHUTDOWN_GRACE).await;
                    }
                    let _ = done.send(());
                    stopped = true;
                    break;
                }
                None => {
                    stopped = true;
                    break;
                }
                #[cfg(test)]
                Some(WorkerMsg::Pause(resume)) => {
                    let _ = resume.recv();
                }
                Some(WorkerMsg::Snapshot(sent, reply)) => {
                    let _ = reply.send(WorkerSnapshot {
                        rooms: core.sfu().n_rooms(),
                        sessions: core.sfu().n_sessions(),
                        tracks: core.sfu().n_tracks(),
                        counters: core.sfu().counters(),
                        commands: core.sfu().command_counts(),
                        estimates: core.sfu().estimates().collect(),
                        udp_drops,
                        tcp: tcp.as_ref().map(|t| t.counters),
                        loop_lag: load.lag().max(sent.elapsed()),
                    });
                }
            },
            ev = async {
                match tcp_events.as_mut() {
                    Some(e) => e.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                let (Some(side), Some(events)) = (tcp.as_mut(), tcp_events.as_mut()) else {
                    continue;
                };
                let mut next = ev;
                let mut n = 0;
                while let Some(ev) = next.take() {
                    on_tcp_event(&mut core, side, ev, &tcp_candidates);
                    n += 1;
                    if n < IO_LOOP_BOUND {
                        next = events.try_recv().ok();
                    }
                }
            }
            r = socket.readable() => {
                if r.is_err() {
                    continue;
                }
                for _ in 0..IO_LOOP_BOUND {
                    match socket.try_recv_from(&mut buf) {
                        Ok((n, source)) => {
                            let destination = destination_for(source, local, &candidates);
                            let d = Datagram {
                                transport: Transport::Udp,
                                source,
                                destination,
                                contents: &buf[..n],
                            };
                            core.run(|sfu| sfu.handle_datagram(Instant::now(), d));
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        // ICMP errors surface here as ECONNREFUSED and the like: a Peer went
                        // away. Nothing to do; ICE notices.
                        Err(_) => break,
                    }
                }
            }
            r = async {
                if let Some(t) = accept_paused_until {
                    tokio::time::sleep_until(t.into()).await;
                }
                match &listener {
                    Some(l) => l.accept().await,
                    None => std::future::pending().await,
                }
            } => {
                accept_paused_until = None;
                match (r, tcp.as_mut()) {
                    (Ok((stream, remote)), Some(side)) => {
                        side.on_accept(stream, remote, Instant::now());
                    }
                    (Err(e), _) => {
                        // Out of file descriptors and the like: the error repeats at once, so
                        // pause accepting instead of spinning.
                        tracing::warn!(worker = index, error = %e, "TCP accept failed");
                        accept_paused_until = Some(Instant::now() + ACCEPT_ERROR_PAUSE);
                    }
                    (Ok(_), None) => {}
                }
            }
            _ = tokio::time::sleep_until(next_sweep.into()) => {
                let now = Instant::now();
                next_sweep = now + sweep_every;
                sweep(&mut core, tcp.as_mut(), now);
            }
            _ = tokio::time::sleep_until(deadline.into()) => {
                let now = Instant::now();
                load.timer_ran(deadline, now);
                core.run(|sfu| sfu.handle_timeout(now));
            }
        }
    }
    if !stopped {
        status.set_healthy(false);
    }
    let sfu = core.sfu();
    tracing::debug!(
        worker = index,
        udp_drops,
        restarts = status.restarts(),
        tcp = ?tcp.as_ref().map(|t| t.counters),
        counters = ?sfu.counters(),
        commands = ?sfu.command_counts().iter().filter(|(_, n)| *n > 0).collect::<Vec<_>>(),
        "worker stopped"
    );
}

/// Closes the TCP connections idle too long and tells the `Sfu`.
fn sweep(core: &mut Core, tcp: Option<&mut TcpSide>, now: Instant) {
    if let Some(side) = tcp {
        for remote in side.sweep_idle(now) {
            core.run(|sfu| sfu.handle_tcp_closed(now, remote));
        }
    }
}

/// Hands one TCP frame to the `Sfu`, or tells it that a connection ended.
fn on_tcp_event(core: &mut Core, side: &mut TcpSide, ev: ConnEvent, candidates: &[SocketAddr]) {
    let now = Instant::now();
    match ev {
        ConnEvent::Frame { id, remote, bytes } => {
            if !side.is_current(id, remote) {
                return;
            }
            side.counters.frames_in += 1;
            let d = Datagram {
                transport: Transport::Tcp,
                source: remote,
                destination: destination_for(remote, None, candidates),
                contents: &bytes,
            };
            if core.run(|sfu| sfu.handle_datagram(now, d)) == Some(true) {
                side.mark_valid(remote, now);
            }
        }
        ConnEvent::Ended { id, remote, why } => {
            if side.on_ended(id, remote, why) {
                tracing::debug!(remote = %crate::telemetry::Redact(remote), ?why, "TCP connection ended");
                core.run(|sfu| sfu.handle_tcp_closed(now, remote));
            }
        }
    }
}

/// The local address str0m must see as the destination: the announced candidate of the source's
/// family (the socket may be bound to 0.0.0.0).
fn destination_for(
    source: SocketAddr,
    local: Option<SocketAddr>,
    candidates: &[SocketAddr],
) -> SocketAddr {
    candidates
        .iter()
        .find(|c| c.is_ipv4() == source.is_ipv4())
        .or(candidates.first())
        .copied()
        .or(local)
        .unwrap_or(source)
}

/// Runs step 1 of the loop; returns the instant of the next timeout. A fault while draining
/// restarts the core (its supervisor) and the drain goes on with the fresh one.
fn flush(
    core: &mut Core,
    socket: &UdpSocket,
    mut tcp: Option<&mut TcpSide>,
    udp_drops: &mut u64,
) -> Instant {
    loop {
        let Some(out) = core.run(Sfu::poll_output) else {
            continue;
        };
        match out {
            Output::Transmit(t) => match (t.transport, tcp.as_deref_mut()) {
                (Transport::Udp, _) => {
                    if socket.try_send_to(&t.contents, t.destination).is_err() {
                        *udp_drops += 1;
                    }
                }
                (Transport::Tcp, Some(side)) => side.send(t.destination, t.contents),
                // No TCP candidates were announced, so str0m never picks a TCP pair.
                (Transport::Tcp, None) => {}
            },
            Output::Event(e) => core.publish(EventBody::Sfu(e)),
            Output::Timeout(t) => return t,
        }
    }
}
