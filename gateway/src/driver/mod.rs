//! The driver: Worker threads, each owning one UDP socket, one timer and one [`Sfu`]. It does all
//! IO and no protocol decisions.
//!
//! # The Worker loop
//! 1. Drain [`Sfu::poll_output`] to `Timeout`: send each datagram (dropped if the socket buffer is
//!    full, as a network would), publish each event.
//! 2. Wait for the first of: a command from the API layer, a readable socket, the timeout.
//! 3. A command runs against the `Sfu` and answers through its one-shot channel. A readable socket
//!    is drained up to [`IO_LOOP_BOUND`] datagrams, each handed to the `Sfu`. A timeout calls
//!    [`Sfu::handle_timeout`]. Go to 1.
//!
//! The API layer reaches a Worker only through a bounded queue ([`WorkerHandle`]); a full queue
//! is reported, never waited on.

use std::io;
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use switchboard_core::{Datagram, Output, Sfu, SfuConfig, Transport};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use crate::events::{EventBody, EventBus};

/// Most datagrams read in one go before the loop looks at commands and timers again, so a flood
/// cannot starve the control plane.
pub const IO_LOOP_BOUND: usize = 256;
/// Largest datagram accepted (larger ones are truncated by the kernel and then fail to parse).
const MAX_DATAGRAM_BYTES: usize = 2048;

/// A command: runs on the Worker thread with the `Sfu`, the monotonic and the wall-clock time,
/// and returns the reply to send once the command's outputs (events) have been published.
pub(crate) type Job = Box<dyn FnOnce(&mut Sfu, Instant, SystemTime) -> Reply + Send>;
/// Sends a command's reply.
pub(crate) type Reply = Box<dyn FnOnce() + Send>;

enum WorkerMsg {
    Job(Job),
    Shutdown(oneshot::Sender<()>),
}

/// Why a command did not reach a Worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendError {
    /// The queue is full.
    Full,
    /// The Worker has stopped.
    Stopped,
}

/// The API layer's end of a Worker: cheap to clone.
#[derive(Clone)]
pub(crate) struct WorkerHandle {
    tx: mpsc::Sender<WorkerMsg>,
}

impl WorkerHandle {
    /// Queues `f` and waits for its result.
    pub(crate) async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Sfu, Instant, SystemTime) -> R + Send + 'static,
    ) -> Result<R, SendError> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |sfu, now, wall| {
            let res = f(sfu, now, wall);
            Box::new(move || {
                // The caller may have gone away (request cancelled); nothing to do then.
                let _ = tx.send(res);
            })
        });
        self.tx.try_send(WorkerMsg::Job(job)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SendError::Full,
            mpsc::error::TrySendError::Closed(_) => SendError::Stopped,
        })?;
        rx.await.map_err(|_| SendError::Stopped)
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
    pub(crate) thread: std::thread::JoinHandle<()>,
}

/// Binds a socket and starts a Worker thread around a new `Sfu`.
pub(crate) fn spawn(
    index: u8,
    bind: SocketAddr,
    buffer_bytes: usize,
    mut sfu_config: SfuConfig,
    announce: &[std::net::IpAddr],
    queue: usize,
    bus: Arc<EventBus>,
) -> io::Result<Worker> {
    let socket = bind_udp(bind, buffer_bytes)?;
    let local_addr = socket.local_addr()?;
    sfu_config.worker = index;
    sfu_config.candidate_addrs = announce
        .iter()
        .map(|ip| SocketAddr::new(*ip, local_addr.port()))
        .collect();
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(|e| io::Error::other(e.to_string()))?;
    let sfu = Sfu::new(Instant::now(), sfu_config, seed)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    let (tx, rx) = mpsc::channel(queue);
    let thread = std::thread::Builder::new()
        .name(format!("sb-worker-{index}"))
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime with IO and timers builds");
            rt.block_on(run(socket, sfu, rx, bus, index));
        })?;
    Ok(Worker {
        handle: WorkerHandle { tx },
        local_addr,
        thread,
    })
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
    mut sfu: Sfu,
    mut rx: mpsc::Receiver<WorkerMsg>,
    bus: Arc<EventBus>,
    index: u8,
) {
    let socket = match UdpSocket::from_std(socket) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(worker = index, error = %e, "cannot register the UDP socket");
            return;
        }
    };
    let local = socket.local_addr().ok();
    let candidates = sfu.config().candidate_addrs.clone();
    let mut buf = vec![0u8; MAX_DATAGRAM_BYTES];
    let mut send_drops: u64 = 0;
    loop {
        let deadline = flush(&mut sfu, &socket, &bus, &mut send_drops);
        tokio::select! {
            biased;
            msg = rx.recv() => match msg {
                Some(WorkerMsg::Job(job)) => {
                    let reply = job(&mut sfu, Instant::now(), SystemTime::now());
                    // Publish the command's events before answering: when a call returns, its
                    // events are already in every event stream.
                    flush(&mut sfu, &socket, &bus, &mut send_drops);
                    reply();
                }
                Some(WorkerMsg::Shutdown(done)) => {
                    sfu.shutdown(Instant::now());
                    flush(&mut sfu, &socket, &bus, &mut send_drops);
                    let _ = done.send(());
                    break;
                }
                None => break,
            },
            r = socket.readable() => {
                if r.is_err() {
                    continue;
                }
                for _ in 0..IO_LOOP_BOUND {
                    match socket.try_recv_from(&mut buf) {
                        Ok((n, source)) => {
                            let destination = destination_for(source, local, &candidates);
                            let d = Datagram { transport: Transport::Udp, source, destination, contents: &buf[..n] };
                            sfu.handle_datagram(Instant::now(), d);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        // ICMP errors surface here as ECONNREFUSED and the like: a Peer went
                        // away. Nothing to do; ICE notices.
                        Err(_) => break,
                    }
                }
            }
            _ = tokio::time::sleep_until(deadline.into()) => sfu.handle_timeout(Instant::now()),
        }
    }
    tracing::debug!(worker = index, send_drops, counters = ?sfu.counters(), "worker stopped");
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

/// Runs step 1 of the loop; returns the instant of the next timeout.
fn flush(sfu: &mut Sfu, socket: &UdpSocket, bus: &EventBus, drops: &mut u64) -> Instant {
    loop {
        match sfu.poll_output() {
            Output::Transmit(t) => {
                if socket.try_send_to(&t.contents, t.destination).is_err() {
                    *drops += 1;
                }
            }
            Output::Event(e) => bus.publish(EventBody::Sfu(e)),
            Output::Timeout(t) => return t,
        }
    }
}
