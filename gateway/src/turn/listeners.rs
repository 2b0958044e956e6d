//! The embedded TURN server's listeners: the UDP socket, the TCP and TLS listeners with their
//! per-connection tasks (stream framing of RFC 8656 §12.5, a bounded writer queue), and the
//! once-a-second sweeper.
//!
//! Owns the connection slots: at most `max_stream_connections` stream connections, at most
//! `max_stream_connections_per_ip` from one source (IPv4 address or IPv6 /64); a connection
//! must send an authenticated request within `first_request_timeout_secs` of its accept (TLS
//! handshake included), and one without an allocation closes after [`STREAM_IDLE`] without a
//! complete frame. It makes no protocol decision: every frame goes to the engine
//! ([`Shared::handle_client`]) under `catch_unwind`, so a handler panic drops that frame only.

use std::net::{IpAddr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::TurnStats;
use super::server::{ClientSink, FiveTuple, Shared, Transport};
use crate::conns::{ConnCount, accept, write_batched};

/// A stream connection with no allocation is closed after this long without a complete frame
/// (trickling bytes does not keep it open).
const STREAM_IDLE: Duration = Duration::from_secs(30);
/// Frames queued toward one stream client before further ones are dropped (the bytes are
/// bounded too, by `server::STREAM_QUEUE_BYTES`).
const STREAM_QUEUE: usize = 256;

/// Runs one frame through the engine; a panic is contained and counted, never propagated.
/// Returns whether the frame was an authenticated request.
fn guarded(shared: &Arc<Shared>, five: FiveTuple, sink: &ClientSink, frame: &[u8]) -> bool {
    let r = std::panic::catch_unwind(AssertUnwindSafe(|| shared.handle_client(five, sink, frame)));
    r.unwrap_or_else(|_| {
        shared.counters.malformed.fetch_add(1, Ordering::Relaxed);
        tracing::error!(client = %crate::telemetry::Redact(five.client), "TURN frame handler panicked; frame dropped");
        false
    })
}

pub(super) async fn serve_udp(shared: Arc<Shared>, sock: Arc<UdpSocket>, local: SocketAddr) {
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, from) = tokio::select! {
            _ = shared.cancel.cancelled() => return,
            r = sock.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(_) => continue,
            },
        };
        let five = FiveTuple {
            transport: Transport::Udp,
            client: from,
            server: local,
        };
        let sink = ClientSink::Udp(sock.clone(), from);
        guarded(&shared, five, &sink, &buf[..n]);
    }
}

/// The stream connection slots of the TCP and TLS listeners together.
pub(super) struct Slots {
    count: Mutex<ConnCount>,
    /// Time from accept to the first authenticated request.
    first_request: Duration,
}

impl Slots {
    pub(super) fn new(max_total: usize, max_per_source: usize, first_request: Duration) -> Self {
        Self {
            count: Mutex::new(ConnCount::new(max_total, max_per_source)),
            first_request,
        }
    }

    fn take(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let ok = self
            .count
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .try_add(ip);
        ok.then(|| Slot(self.clone(), ip))
    }
}

/// One connection's place in [`Slots`], given back when dropped.
struct Slot(Arc<Slots>, IpAddr);

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.0.count.lock().unwrap_or_else(|e| e.into_inner());
        c.remove(self.1);
    }
}

pub(super) async fn serve_tcp(
    shared: Arc<Shared>,
    listener: TcpListener,
    local: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    slots: Arc<Slots>,
) {
    let (transport, what) = match tls {
        Some(_) => (Transport::Tls, "TURN TLS"),
        None => (Transport::Tcp, "TURN TCP"),
    };
    loop {
        let (stream, from) = tokio::select! {
            _ = shared.cancel.cancelled() => return,
            c = accept(&listener, what) => c,
        };
        let Some(slot) = slots.take(from.ip()) else {
            tracing::debug!(client = %crate::telemetry::Redact(from), "TURN stream connection refused: too many");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let tls = tls.clone();
        let deadline = Instant::now() + slots.first_request;
        tokio::spawn(async move {
            let _slot = slot;
            let five = FiveTuple {
                transport,
                client: from,
                server: local,
            };
            match tls {
                None => serve_stream(shared, stream, five, deadline).await,
                Some(acc) => match tokio::time::timeout_at(deadline, acc.accept(stream)).await {
                    Ok(Ok(s)) => serve_stream(shared, s, five, deadline).await,
                    _ => {
                        tracing::debug!(client = %crate::telemetry::Redact(from), "TURN TLS handshake failed")
                    }
                },
            }
        });
    }
}

/// Length of the first complete frame in `buf` (STUN message or padded ChannelData), `Ok(None)`
/// when more bytes are needed, `Err` when the stream is not TURN.
fn frame_len(buf: &[u8]) -> Result<Option<(usize, usize)>, ()> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    let (total, used) = match buf[0] >> 6 {
        0 => {
            if len % 4 != 0 {
                return Err(());
            }
            (20 + len, 20 + len)
        }
        1 => (4 + len.div_ceil(4) * 4, 4 + len),
        _ => return Err(()),
    };
    Ok((buf.len() >= total).then_some((total, used)))
}

/// Serves one stream connection until it closes; `first_request` is when it must have sent an
/// authenticated request.
async fn serve_stream<S>(shared: Arc<Shared>, stream: S, five: FiveTuple, first_request: Instant)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut rd, wr) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(STREAM_QUEUE);
    let queued = Arc::new(AtomicUsize::new(0));
    let sink = ClientSink::Stream(tx, queued.clone());
    let writer = async move {
        let sent = |n| {
            queued.fetch_sub(n, Ordering::AcqRel);
        };
        let _ = write_batched(wr, &mut rx, |b, f| b.extend_from_slice(f), sent).await;
    };
    let reader = async {
        let mut buf: Vec<u8> = Vec::with_capacity(4096);
        let mut chunk = vec![0u8; 16384];
        let mut authenticated = false;
        let mut idle_at = Instant::now() + STREAM_IDLE;
        loop {
            loop {
                match frame_len(&buf) {
                    Ok(Some((total, used))) => {
                        authenticated |= guarded(&shared, five, &sink, &buf[..used]);
                        buf.drain(..total);
                        idle_at = Instant::now() + STREAM_IDLE;
                    }
                    Ok(None) => break,
                    Err(()) => {
                        shared.counters.malformed.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
            }
            let wake = if authenticated {
                idle_at
            } else {
                idle_at.min(first_request)
            };
            match tokio::time::timeout_at(wake, rd.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return,
                Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
                Err(_) if !authenticated => {
                    tracing::debug!(client = %crate::telemetry::Redact(five.client), "TURN stream closed: no authenticated request in time");
                    return;
                }
                Err(_) => {
                    if !shared.has_allocation(&five) {
                        return;
                    }
                    idle_at = Instant::now() + STREAM_IDLE;
                }
            }
        }
    };
    tokio::select! {
        _ = writer => {}
        _ = reader => {}
        _ = shared.cancel.cancelled() => {}
    }
    shared.remove(&five);
}

/// Expires state every second and logs the counters once a minute when they changed.
pub(super) async fn sweeper(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    let mut logged = TurnStats::default();
    loop {
        tokio::select! {
            _ = shared.cancel.cancelled() => return,
            _ = tick.tick() => shared.sweep(),
        }
        n += 1;
        if n.is_multiple_of(60) {
            let s = shared.stats();
            if s != logged {
                tracing::info!(stats = ?s, "TURN counters");
                logged = s;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_framing() {
        assert_eq!(frame_len(&[0, 1, 0]), Ok(None));
        // STUN header with 4 bytes of attributes.
        let mut m = vec![0u8, 1, 0, 4];
        m.extend([0; 20]);
        assert_eq!(frame_len(&m), Ok(Some((24, 24))));
        assert_eq!(frame_len(&m[..23]), Ok(None));
        // ChannelData of 5 bytes, padded to 8.
        let cd = super::super::server::channel_data(0x4000, &[1, 2, 3, 4, 5], true);
        assert_eq!(cd.len(), 12);
        assert_eq!(frame_len(&cd), Ok(Some((12, 9))));
        assert_eq!(frame_len(&[0x80, 0, 0, 0]), Err(()));
        assert_eq!(frame_len(&[0, 1, 0, 3]), Err(()));
    }
}
