//! The TCP driver of a TCP-only [`crate::UdpPeer`]: ICE-TCP as an active endpoint (RFC 6544), each
//! datagram of the [`PeerCore`] one RFC 4571 frame (a 16-bit big-endian length, then the bytes)
//! on a real `TcpStream`. It opens a connection to each destination the Peer sends to, the first
//! time it sends there, and owns no protocol logic.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Notify, mpsc};

use crate::core::PeerCore;

/// Longest the driver sleeps between two looks at the Peer.
const MAX_SLEEP: Duration = Duration::from_millis(5);
/// How long a connection attempt may take before the frame is dropped (ICE retries).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Frame counters of a TCP-only Peer (shared with its driver task).
#[derive(Debug, Default)]
pub(crate) struct TcpCounters {
    pub(crate) frames_sent: AtomicU64,
    pub(crate) frames_received: AtomicU64,
    pub(crate) connections: AtomicU64,
}

enum FromConn {
    Frame(SocketAddr, Vec<u8>),
    Closed(SocketAddr),
}

pub(crate) async fn drive(
    core: Arc<Mutex<PeerCore>>,
    wake: Arc<Notify>,
    counters: Arc<TcpCounters>,
) {
    let (tx, mut rx) = mpsc::channel::<FromConn>(1024);
    let mut conns: HashMap<SocketAddr, OwnedWriteHalf> = HashMap::new();
    loop {
        let (batch, deadline) = {
            let mut c = core.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            if c.next_timeout() <= now {
                c.handle_timeout(now);
            }
            c.tick(now);
            let batch: Vec<_> = c.outbox.drain(..).collect();
            (batch, c.next_timeout().min(now + MAX_SLEEP))
        };
        for (_, dst, bytes) in batch {
            let Ok(len) = u16::try_from(bytes.len()) else {
                continue;
            };
            let w = match conns.entry(dst) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => {
                    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(dst)).await {
                        Ok(Ok(stream)) => {
                            let _ = stream.set_nodelay(true);
                            let (r, w) = stream.into_split();
                            tokio::spawn(read_frames(r, dst, tx.clone()));
                            counters.connections.fetch_add(1, Ordering::Relaxed);
                            e.insert(w)
                        }
                        // Refused or timed out: the frame is lost, as a datagram would be.
                        _ => continue,
                    }
                }
            };
            let mut frame = Vec::with_capacity(2 + bytes.len());
            frame.extend_from_slice(&len.to_be_bytes());
            frame.extend_from_slice(&bytes);
            if w.write_all(&frame).await.is_ok() {
                counters.frames_sent.fetch_add(1, Ordering::Relaxed);
            } else {
                conns.remove(&dst);
            }
        }
        let sleep = tokio::time::sleep_until(deadline.into());
        tokio::select! {
            m = rx.recv() => {
                let mut next = m;
                let mut c = core.lock().unwrap_or_else(|e| e.into_inner());
                // Handle what is already queued before polling timers again.
                while let Some(m) = next.take() {
                    match m {
                        FromConn::Frame(src, bytes) => {
                            counters.frames_received.fetch_add(1, Ordering::Relaxed);
                            c.handle_datagram(Instant::now(), src, &bytes);
                        }
                        FromConn::Closed(src) => {
                            conns.remove(&src);
                        }
                    }
                    next = rx.try_recv().ok();
                }
            }
            _ = sleep => {}
            _ = wake.notified() => {}
        }
    }
}

async fn read_frames(r: OwnedReadHalf, peer: SocketAddr, tx: mpsc::Sender<FromConn>) {
    let mut r = BufReader::new(r);
    while let Ok(len) = r.read_u16().await {
        let mut buf = vec![0u8; usize::from(len)];
        if r.read_exact(&mut buf).await.is_err() {
            break;
        }
        if tx.send(FromConn::Frame(peer, buf)).await.is_err() {
            return;
        }
    }
    let _ = tx.send(FromConn::Closed(peer)).await;
}
