//! Plumbing shared by the gateway's TCP listeners (the Workers' ICE-TCP side and the TURN
//! server's TCP and TLS listeners): accepting with a back-off, counting connections per source,
//! and a writer task that drains a bounded queue in batched writes.
//!
//! It owns no listener and no table of its own and makes no protocol decision: framing is the
//! caller's (`frame`), and so is what a full table means (the callers close the connection).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Pause after a failed accept (out of file descriptors and the like: the error repeats at once,
/// so pausing is better than spinning).
pub(crate) const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Most bytes a writer gathers from its queue into one write.
pub(crate) const WRITE_BATCH_BYTES: usize = 64 * 1024;

/// The next connection of `listener`; a failed accept is logged and retried after
/// [`ACCEPT_ERROR_PAUSE`]. Cancel-safe (it may be dropped at any await).
pub(crate) async fn accept(listener: &TcpListener, what: &'static str) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(x) => return x,
            Err(e) => {
                tracing::warn!(listener = what, error = %e, "TCP accept failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
            }
        }
    }
}

/// Drains `rx` into `w` until the queue closes, gathering whatever is queued into writes of up
/// to [`WRITE_BATCH_BYTES`], each item appended by `frame`; `written` gets the items' own sizes
/// once they are written. Shuts the write side down at the end; a write error ends it early.
pub(crate) async fn write_batched<W: AsyncWrite + Unpin>(
    mut w: W,
    rx: &mut mpsc::Receiver<Vec<u8>>,
    frame: fn(&mut Vec<u8>, &[u8]),
    mut written: impl FnMut(usize),
) -> io::Result<()> {
    let mut batch = Vec::new();
    while let Some(item) = rx.recv().await {
        batch.clear();
        let mut n = item.len();
        frame(&mut batch, &item);
        while batch.len() < WRITE_BATCH_BYTES {
            let Ok(item) = rx.try_recv() else { break };
            n += item.len();
            frame(&mut batch, &item);
        }
        let r = w.write_all(&batch).await;
        written(n);
        r?;
    }
    w.shutdown().await
}

/// Where a connection comes from, for per-source limits: an IPv4 address, or the /64 of an IPv6
/// address (one host usually holds a whole /64). IPv4-mapped IPv6 counts as IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Source(IpAddr);

impl Source {
    pub(crate) fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V6(v6) => {
                let bits = u128::from(v6) & !(u128::MAX >> 64);
                Self(IpAddr::V6(bits.into()))
            }
            v4 => Self(v4),
        }
    }
}

/// Open connections, in total and per [`Source`], against two limits.
#[derive(Debug)]
pub(crate) struct ConnCount {
    max_total: usize,
    max_per_source: usize,
    total: usize,
    per_source: HashMap<Source, usize>,
}

impl ConnCount {
    pub(crate) fn new(max_total: usize, max_per_source: usize) -> Self {
        Self {
            max_total,
            max_per_source,
            total: 0,
            per_source: HashMap::new(),
        }
    }

    /// Counts one more connection from `ip`, or refuses (false) when either limit is reached.
    pub(crate) fn try_add(&mut self, ip: IpAddr) -> bool {
        let n = self.per_source.entry(Source::of(ip)).or_insert(0);
        if self.total >= self.max_total || *n >= self.max_per_source {
            if *n == 0 {
                self.per_source.remove(&Source::of(ip));
            }
            return false;
        }
        *n += 1;
        self.total += 1;
        true
    }

    /// Forgets one connection from `ip` that [`ConnCount::try_add`] counted.
    pub(crate) fn remove(&mut self, ip: IpAddr) {
        let s = Source::of(ip);
        if let Some(n) = self.per_source.get_mut(&s) {
            *n -= 1;
            self.total -= 1;
            if *n == 0 {
                self.per_source.remove(&s);
            }
        }
    }

    /// Connections counted.
    #[cfg(test)]
    fn total(&self) -> usize {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_hold_per_source_and_in_total() {
        let mut c = ConnCount::new(3, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(c.try_add(a) && c.try_add(a));
        assert!(!c.try_add(a), "a's quota is full");
        assert!(
            !c.try_add("::ffff:192.0.2.1".parse().unwrap()),
            "mapped is the same"
        );
        assert!(c.try_add(b), "another source still gets in");
        assert!(!c.try_add(b), "the total is full");
        c.remove(a);
        assert!(c.try_add(b));
        assert_eq!(c.total(), 3);
        for _ in 0..5 {
            c.remove(a);
            c.remove(b);
        }
        assert_eq!(c.total(), 0);
        assert!(c.per_source.is_empty());
    }

    #[test]
    fn an_ipv6_source_is_its_64() {
        let x: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let y: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let z: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(Source::of(x), Source::of(y));
        assert_ne!(Source::of(x), Source::of(z));
    }

    #[tokio::test]
    async fn the_writer_batches_frames_and_reports_what_it_wrote() {
        let (tx, mut rx) = mpsc::channel(8);
        for f in [&[1u8, 2][..], &[3], &[]] {
            tx.send(f.to_vec()).await.unwrap();
        }
        drop(tx);
        let mut out = Vec::new();
        let mut n = 0;
        write_batched(
            &mut out,
            &mut rx,
            |b, f| {
                b.push(f.len() as u8);
                b.extend_from_slice(f);
            },
            |w| n += w,
        )
        .await
        .unwrap();
        assert_eq!(out, [2, 1, 2, 1, 3, 0]);
        assert_eq!(n, 3);
    }
}
