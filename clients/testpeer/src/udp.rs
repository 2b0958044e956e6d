//! [`UdpPeer`]: a [`PeerCore`] on a real UDP socket (or, TCP-only, on real TCP connections; see
//! `tcp.rs`), driven by a tokio task.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::Notify;

use crate::core::PeerCore;
use crate::tcp::{self, TcpCounters};

/// Longest the driver sleeps between two looks at the Peer (it also wakes on datagrams and on
/// [`UdpPeer::with`]).
const MAX_SLEEP: Duration = Duration::from_millis(5);

/// A test Peer bound to a loopback UDP socket, or a TCP-only one ([`UdpPeer::tcp_only`]).
/// Dropping it stops its task.
pub struct UdpPeer {
    core: Arc<Mutex<PeerCore>>,
    wake: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
    tcp: Option<Arc<TcpCounters>>,
    /// The local address (for a TCP-only Peer its active candidate, `ip:9`).
    pub addr: SocketAddr,
}

/// What a TCP-only Peer moved over TCP.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpStats {
    /// RFC 4571 frames written.
    pub frames_sent: u64,
    /// RFC 4571 frames read.
    pub frames_received: u64,
    /// TCP connections opened.
    pub connections: u64,
}

impl UdpPeer {
    /// Binds `ip:0` and starts driving a fresh Peer.
    pub async fn bind(ip: std::net::IpAddr) -> std::io::Result<Self> {
        let socket = UdpSocket::bind(SocketAddr::new(ip, 0)).await?;
        let addr = socket.local_addr()?;
        let core = Arc::new(Mutex::new(PeerCore::new(Instant::now(), addr)));
        let wake = Arc::new(Notify::new());
        let task = tokio::spawn(drive(socket, core.clone(), wake.clone()));
        Ok(Self {
            core,
            wake,
            task,
            tcp: None,
            addr,
        })
    }

    /// Starts a Peer that has no UDP socket at all: its only ICE candidate is an active TCP host
    /// candidate on `ip`, and it reaches the gateway over ICE-TCP (RFC 6544, RFC 4571 framing)
    /// through connections its driver opens, or not at all.
    pub fn tcp_only(ip: std::net::IpAddr) -> Self {
        let core = PeerCore::new_tcp_active(Instant::now(), ip);
        let addr = core.addr;
        let core = Arc::new(Mutex::new(core));
        let wake = Arc::new(Notify::new());
        let counters = Arc::new(TcpCounters::default());
        let task = tokio::spawn(tcp::drive(core.clone(), wake.clone(), counters.clone()));
        Self {
            core,
            wake,
            task,
            tcp: Some(counters),
            addr,
        }
    }

    /// Stops the driver at once, as if the Peer's machine vanished: its UDP socket or TCP
    /// connections close (a TCP Peer's connections end with a FIN), nothing more is sent.
    pub fn stop(&self) {
        self.task.abort();
    }

    /// Frames moved over TCP; `None` for a UDP Peer.
    pub fn tcp_stats(&self) -> Option<TcpStats> {
        self.tcp.as_ref().map(|c| TcpStats {
            frames_sent: c.frames_sent.load(Ordering::Relaxed),
            frames_received: c.frames_received.load(Ordering::Relaxed),
            connections: c.connections.load(Ordering::Relaxed),
        })
    }

    /// Runs `f` on the Peer (for signaling, sending data, reading stats) and wakes the driver so
    /// that whatever `f` queued is sent at once.
    pub fn with<R>(&self, f: impl FnOnce(&mut PeerCore) -> R) -> R {
        let r = f(&mut self.lock());
        self.wake.notify_one();
        r
    }

    fn lock(&self) -> MutexGuard<'_, PeerCore> {
        // A panic while holding the lock is a test failure already; keep reading the state.
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for UdpPeer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn drive(socket: UdpSocket, core: Arc<Mutex<PeerCore>>, wake: Arc<Notify>) {
    let mut buf = vec![0u8; 2000];
    loop {
        let deadline = {
            let mut c = core.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            if c.next_timeout() <= now {
                c.handle_timeout(now);
            }
            c.tick(now);
            while let Some((_, dst, bytes)) = c.outbox.pop_front() {
                // Loopback sends only fail when the buffer is full: a lost datagram, as on a network.
                let _ = socket.try_send_to(&bytes, dst);
            }
            c.next_timeout().min(now + MAX_SLEEP)
        };
        let sleep = tokio::time::sleep_until(deadline.into());
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                if let Ok((n, src)) = r {
                    let mut c = core.lock().unwrap_or_else(|e| e.into_inner());
                    c.handle_datagram(Instant::now(), src, &buf[..n]);
                    // Drain whatever else is already queued before polling timers again.
                    while let Ok((n, src)) = socket.try_recv_from(&mut buf) {
                        c.handle_datagram(Instant::now(), src, &buf[..n]);
                    }
                }
            }
            _ = sleep => {}
            _ = wake.notified() => {}
        }
    }
}
