//! A Worker's ICE-TCP side: its passive TCP listener and the connections Peers open to it
//! (RFC 6544), each carrying RFC 4571 frames (a 16-bit big-endian length, then one STUN, DTLS,
//! RTP or RTCP message).
//!
//! Owns the listener, the connection table and the per-connection tasks (a reader and a writer on
//! the Worker's current-thread runtime). Readers only split the byte stream into frames and hand
//! them to the Worker loop; the loop alone touches the `Sfu`. Writes go through a bounded queue
//! per connection: a full queue drops the frame, as a congested UDP path would; a closed
//! connection's writer gets a short grace to flush, then is aborted. It makes no
//! protocol decision beyond framing: which Session a frame belongs to is the core's question.
//!
//! Bytes from the network never panic here: a zero or oversize length, or a first frame that is
//! not STUN (RFC 6544 requires the connection to start with a connectivity check), closes only
//! that connection and is counted.
//!
//! Slots cannot be held by strangers: one source (an IPv4 address or IPv6 /64) may hold at most
//! `max_connections_per_ip` of them, and a connection on which no Session accepted a frame
//! (its first valid STUN check) within `first_check_timeout` of the accept is closed.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::framing::Deframer;
use crate::conns::{ConnCount, write_batched};

/// Bytes read from a connection at a time.
const READ_CHUNK_BYTES: usize = 8 * 1024;

/// Frames queued from all readers toward the Worker loop; a full queue makes readers wait (TCP
/// flow control pushes back on the Peers), never the loop.
const INBOUND_QUEUE: usize = 1024;
/// How long a closed connection's writer may still flush its queue. A Peer that stopped reading
/// (or vanished: half-open) would otherwise keep the writer, its queue and the socket forever.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Limits of one Worker's TCP side (from `[media]`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct TcpLimits {
    pub(crate) max_connections: usize,
    pub(crate) max_connections_per_ip: usize,
    pub(crate) first_check_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_frame_bytes: usize,
    pub(crate) send_queue_frames: usize,
}

/// Counters of the TCP side, logged when the Worker stops.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct TcpCounters {
    pub(crate) accepted: u64,
    /// Closed at once: the Worker already had `max_connections`, its source had
    /// `max_connections_per_ip`, or a duplicate remote address.
    pub(crate) refused: u64,
    /// Closed because no Session accepted a frame within `first_check_timeout`.
    pub(crate) unchecked: u64,
    /// Closed for a zero or oversize length, or a first frame that was not STUN.
    pub(crate) garbage: u64,
    /// Closed after `idle_timeout` without a frame a Session accepted.
    pub(crate) idle: u64,
    /// Closed by the Peer (or a read or write error).
    pub(crate) peer_closed: u64,
    pub(crate) frames_in: u64,
    pub(crate) frames_out: u64,
    /// Frames dropped because the connection's send queue was full or it had gone.
    pub(crate) send_drops: u64,
}

/// Why a reader or writer task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// End of stream or an IO error.
    Closed,
    /// Bad framing.
    Garbage,
}

/// What the tasks of a connection tell the Worker loop.
pub(crate) enum ConnEvent {
    Frame {
        id: u64,
        remote: SocketAddr,
        bytes: Vec<u8>,
    },
    Ended {
        id: u64,
        remote: SocketAddr,
        why: Ended,
    },
}

struct Conn {
    id: u64,
    tx: mpsc::Sender<Vec<u8>>,
    /// Accept time, then the time of the last frame a Session accepted.
    last_valid: Instant,
    /// Whether a Session accepted a frame yet (the first valid check).
    checked: bool,
    reader: AbortHandle,
    writer: tokio::task::JoinHandle<()>,
}

/// A Worker's TCP listener and connections. Connections are keyed by the Peer's address: the
/// local side is the Worker's one listening port, so that is the whole 5-tuple.
pub(crate) struct TcpSide {
    limits: TcpLimits,
    conns: HashMap<SocketAddr, Conn>,
    /// Writers of closed connections still flushing, aborted at their deadline. They hold a
    /// socket, so they count toward the limits.
    closing: Vec<(Instant, IpAddr, tokio::task::JoinHandle<()>)>,
    /// Sockets held (open connections and flushing writers), in total and per source.
    count: ConnCount,
    next_id: u64,
    events_tx: mpsc::Sender<ConnEvent>,
    pub(crate) counters: TcpCounters,
}

/// The parts of a Worker's TCP side its loop waits on, apart from the table it mutates.
pub(crate) struct TcpWaits {
    pub(crate) listener: TcpListener,
    pub(crate) events: mpsc::Receiver<ConnEvent>,
}

impl TcpSide {
    /// Wraps a bound, non-blocking listener; must run inside the Worker's runtime.
    pub(crate) fn new(
        listener: std::net::TcpListener,
        limits: TcpLimits,
    ) -> io::Result<(Self, TcpWaits)> {
        let listener = TcpListener::from_std(listener)?;
        let (events_tx, events) = mpsc::channel(INBOUND_QUEUE);
        let side = Self {
            limits,
            conns: HashMap::new(),
            closing: Vec::new(),
            count: ConnCount::new(limits.max_connections, limits.max_connections_per_ip),
            next_id: 1,
            events_tx,
            counters: TcpCounters::default(),
        };
        Ok((side, TcpWaits { listener, events }))
    }

    /// Takes a new connection, or closes it at once when the Worker or its source is full.
    pub(crate) fn on_accept(&mut self, stream: TcpStream, remote: SocketAddr, now: Instant) {
        self.reap_closing(now);
        if self.conns.contains_key(&remote) || !self.count.try_add(remote.ip()) {
            self.counters.refused += 1;
            tracing::debug!(remote = %crate::telemetry::Redact(remote), "TCP connection refused (limit reached)");
            drop(stream);
            return;
        }
        let _ = stream.set_nodelay(true);
        let id = self.next_id;
        self.next_id += 1;
        let (r, w) = stream.into_split();
        let (tx, rx) = mpsc::channel(self.limits.send_queue_frames);
        let reader = tokio::spawn(read_frames(
            r,
            id,
            remote,
            self.limits.max_frame_bytes,
            self.events_tx.clone(),
        ))
        .abort_handle();
        let writer = tokio::spawn(write_frames(w, id, remote, rx, self.events_tx.clone()));
        self.conns.insert(
            remote,
            Conn {
                id,
                tx,
                last_valid: now,
                checked: false,
                reader,
                writer,
            },
        );
        self.counters.accepted += 1;
    }

    /// Whether a frame event still belongs to an open connection (it may have been closed since).
    pub(crate) fn is_current(&self, id: u64, remote: SocketAddr) -> bool {
        self.conns.get(&remote).is_some_and(|c| c.id == id)
    }

    /// A Session accepted a frame from `remote`: the connection is alive.
    pub(crate) fn mark_valid(&mut self, remote: SocketAddr, now: Instant) {
        if let Some(c) = self.conns.get_mut(&remote) {
            c.last_valid = now;
            c.checked = true;
        }
    }

    /// Queues one frame toward `remote`; drops it (counted) when the queue is full or the
    /// connection is gone.
    pub(crate) fn send(&mut self, remote: SocketAddr, contents: Vec<u8>) {
        let ok = contents.len() <= usize::from(u16::MAX)
            && self
                .conns
                .get(&remote)
                .is_some_and(|c| c.tx.try_send(contents).is_ok());
        if ok {
            self.counters.frames_out += 1;
        } else {
            self.counters.send_drops += 1;
        }
    }

    /// Forgets a connection whose task reported its end; returns whether it was current.
    pub(crate) fn on_ended(&mut self, id: u64, remote: SocketAddr, why: Ended) -> bool {
        if !self.is_current(id, remote) {
            return false;
        }
        match why {
            Ended::Closed => self.counters.peer_closed += 1,
            Ended::Garbage => self.counters.garbage += 1,
        }
        self.close(remote, Instant::now());
        true
    }

    /// Forgets the writers of closed connections that finished, and aborts those still flushing
    /// after [`CLOSE_GRACE`].
    fn reap_closing(&mut self, now: Instant) {
        let count = &mut self.count;
        self.closing.retain(|(deadline, ip, w)| {
            let done = w.is_finished() || *deadline <= now;
            if done {
                w.abort();
                count.remove(*ip);
            }
            !done
        });
    }

    /// Closes the connections that got no valid check within `first_check_timeout` of their
    /// accept, or none for `idle_timeout` since, and aborts the writers of closed connections
    /// still flushing after [`CLOSE_GRACE`]; returns the closed remote addresses.
    pub(crate) fn sweep_idle(&mut self, now: Instant) -> Vec<SocketAddr> {
        self.reap_closing(now);
        let l = self.limits;
        let gone: Vec<(SocketAddr, bool)> = self
            .conns
            .iter()
            .filter_map(|(a, c)| {
                let quiet = now.saturating_duration_since(c.last_valid);
                if !c.checked && quiet >= l.first_check_timeout {
                    Some((*a, true))
                } else {
                    (quiet >= l.idle_timeout).then_some((*a, false))
                }
            })
            .collect();
        for (a, unchecked) in &gone {
            if *unchecked {
                self.counters.unchecked += 1;
            } else {
                self.counters.idle += 1;
            }
            tracing::debug!(remote = %crate::telemetry::Redact(a), unchecked, "TCP connection closed (no valid check)");
            self.close(*a, now);
        }
        gone.into_iter().map(|(a, _)| a).collect()
    }

    /// How often [`TcpSide::sweep_idle`] should run.
    pub(crate) fn sweep_interval(&self) -> Duration {
        (self
            .limits
            .idle_timeout
            .min(self.limits.first_check_timeout)
            / 4)
        .clamp(Duration::from_millis(50), Duration::from_secs(1))
    }

    /// Closes every connection, letting each writer send what is queued (the DTLS close alerts of
    /// a shutdown) for at most `grace`.
    pub(crate) async fn close_all(&mut self, grace: Duration) {
        let writers: Vec<_> = self
            .conns
            .drain()
            .map(|(_, c)| {
                c.reader.abort();
                c.writer
            })
            .chain(self.closing.drain(..).map(|(_, _, w)| w))
            .collect();
        self.count = ConnCount::new(
            self.limits.max_connections,
            self.limits.max_connections_per_ip,
        );
        let aborts: Vec<_> = writers.iter().map(|w| w.abort_handle()).collect();
        let _ = tokio::time::timeout(grace, async {
            for w in writers {
                let _ = w.await;
            }
        })
        .await;
        for a in aborts {
            a.abort();
        }
    }

    /// Connections holding a socket: open ones plus closed ones whose writer is still flushing.
    #[cfg(test)]
    fn sockets(&self) -> usize {
        self.conns.len()
            + self
                .closing
                .iter()
                .filter(|(_, _, w)| !w.is_finished())
                .count()
    }

    /// Ends a connection: the reader stops at once; the writer sends what is queued, then FIN,
    /// or is aborted by the sweep after [`CLOSE_GRACE`].
    fn close(&mut self, remote: SocketAddr, now: Instant) {
        if let Some(c) = self.conns.remove(&remote) {
            c.reader.abort();
            // Dropping `c.tx` ends the writer once its queue is empty.
            self.closing
                .push((now + CLOSE_GRACE, remote.ip(), c.writer));
        }
    }
}

async fn read_frames(
    r: OwnedReadHalf,
    id: u64,
    remote: SocketAddr,
    max_frame_bytes: usize,
    tx: mpsc::Sender<ConnEvent>,
) {
    let why = read_loop(r, id, remote, max_frame_bytes, &tx).await;
    let _ = tx.send(ConnEvent::Ended { id, remote, why }).await;
}

async fn read_loop(
    mut r: OwnedReadHalf,
    id: u64,
    remote: SocketAddr,
    max_frame_bytes: usize,
    tx: &mpsc::Sender<ConnEvent>,
) -> Ended {
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    let mut frames = Deframer::new(max_frame_bytes);
    loop {
        loop {
            match frames.next_frame() {
                Ok(Some(bytes)) => {
                    if tx
                        .send(ConnEvent::Frame { id, remote, bytes })
                        .await
                        .is_err()
                    {
                        // The Worker stopped.
                        return Ended::Closed;
                    }
                }
                Ok(None) => break,
                Err(_) => return Ended::Garbage,
            }
        }
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => return Ended::Closed,
            Ok(n) => frames.push(&chunk[..n]),
        }
    }
}

async fn write_frames(
    w: OwnedWriteHalf,
    id: u64,
    remote: SocketAddr,
    mut rx: mpsc::Receiver<Vec<u8>>,
    events: mpsc::Sender<ConnEvent>,
) {
    if write_batched(w, &mut rx, push_frame, |_| {}).await.is_err() {
        let why = Ended::Closed;
        let _ = events.send(ConnEvent::Ended { id, remote, why }).await;
    }
}

/// Appends one RFC 4571 frame. The caller checked that `frame` fits a 16-bit length.
fn push_frame(batch: &mut Vec<u8>, frame: &[u8]) {
    let len = u16::try_from(frame.len()).unwrap_or(u16::MAX);
    batch.extend_from_slice(&len.to_be_bytes());
    batch.extend_from_slice(&frame[..usize::from(len)]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::framing::looks_like_stun;

    #[test]
    fn stun_detection_is_bounds_checked() {
        for n in 0..24 {
            let mut b = vec![0u8; n];
            if n >= 8 {
                b[4..8].copy_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
            }
            assert_eq!(looks_like_stun(&b), n >= 20);
        }
        let mut rtp = vec![0x80u8; 40];
        rtp[4..8].copy_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
        assert!(!looks_like_stun(&rtp));
    }

    #[tokio::test]
    async fn a_closed_connection_whose_peer_stopped_reading_is_aborted_after_the_grace() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        let limits = TcpLimits {
            max_connections: 1,
            max_connections_per_ip: 1,
            first_check_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            max_frame_bytes: 4096,
            send_queue_frames: 64,
        };
        let (mut side, waits) = TcpSide::new(l, limits).unwrap();
        // A Peer that never reads.
        let mut peer = TcpStream::connect(addr).await.unwrap();
        let (s, remote) = waits.listener.accept().await.unwrap();
        let t0 = Instant::now();
        side.on_accept(s, remote, t0);
        // Far more than the socket buffers hold: the writer ends up stuck in a write.
        for _ in 0..2000 {
            side.send(remote, vec![0u8; 60_000]);
            tokio::task::yield_now().await;
        }
        assert!(side.counters.send_drops > 0, "the queue filled up");
        // Idle: closed. The stuck writer still holds the socket and counts toward the limit.
        assert_eq!(side.sweep_idle(t0 + Duration::from_secs(1)), vec![remote]);
        assert_eq!(side.sockets(), 1);
        let _second = TcpStream::connect(addr).await.unwrap();
        let (s2, r2) = waits.listener.accept().await.unwrap();
        side.on_accept(s2, r2, t0 + Duration::from_secs(1));
        assert_eq!(side.counters.refused, 1, "the lingering socket counts");
        // After the grace the writer is aborted and the socket closed.
        assert!(side.sweep_idle(t0 + Duration::from_secs(4)).is_empty());
        for _ in 0..100 {
            if side.sockets() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(side.sockets(), 0);
        // The Peer sees the end of the stream (or a reset) after what was buffered.
        let mut buf = vec![0u8; 1 << 16];
        let end = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match peer.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(end.is_ok(), "the socket was closed");
    }

    #[test]
    fn frames_carry_a_big_endian_length() {
        let mut b = Vec::new();
        push_frame(&mut b, &[1, 2, 3]);
        push_frame(&mut b, &[]);
        assert_eq!(b, vec![0, 3, 1, 2, 3, 0, 0]);
    }
}
