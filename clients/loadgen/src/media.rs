//! The media loop: one thread drives every Peer of a run over its own UDP socket, all sockets in
//! one epoll instance (mio, edge-triggered; each readable socket is drained until it would
//! block), timers scanned at most once per millisecond.
//!
//! It owns the Peers and their sockets; the control side (backends, on tokio) reaches it only
//! through [`MediaHandle`] commands over a channel and a waker, and gets answers on oneshots. It
//! never blocks on the control side, and never allocates per received datagram (one receive
//! buffer; str0m's own allocations aside).

use std::cell::RefCell;
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use tokio::sync::oneshot;

use crate::Error;
use crate::delay::Delays;
use crate::peer::{Counters, Peer, PeerOptions};

const WAKER: Token = Token(usize::MAX);
/// Timers are looked at no more often than this.
const SCAN_EVERY: Duration = Duration::from_millis(1);
/// Longest sleep between two looks at the timers.
const MAX_SLEEP: Duration = Duration::from_millis(10);
/// Socket buffers of each Peer (the kernel doubles it): a key-frame burst must not overflow.
const SOCKET_BUFFER: usize = 1 << 20;

/// A Peer of the media loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerId(pub usize);

/// What one Peer counted, with whether it publishes.
#[derive(Debug, Clone, Copy)]
pub struct PeerSnapshot {
    /// The Peer.
    pub id: PeerId,
    /// It publishes.
    pub publisher: bool,
    /// Index of its Room.
    pub room: usize,
    /// Its counters.
    pub counters: Counters,
}

/// Every Peer's counters and the delay histograms of all received packets, at one instant.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// One entry per Peer, indexed by [`PeerId`].
    pub peers: Vec<PeerSnapshot>,
    /// Delays of every packet received so far, by kind.
    pub delays: Delays,
}

enum Command {
    Add {
        opts: PeerOptions,
        join_started: Instant,
        reply: oneshot::Sender<Result<(PeerId, String), Error>>,
    },
    Answer {
        id: PeerId,
        sdp: String,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Offer {
        id: PeerId,
        sdp: String,
        reply: oneshot::Sender<Result<String, Error>>,
    },
    Snapshot {
        reply: oneshot::Sender<Snapshot>,
    },
    Stop,
}

/// The control side's handle on the media loop. Dropping it stops the loop.
pub struct MediaHandle {
    tx: mpsc::Sender<Command>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
}

impl MediaHandle {
    /// Starts the media loop; its Peers bind sockets on `ip`.
    pub fn start(ip: IpAddr) -> Result<Self, Error> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = mpsc::channel();
        // The run's time origin: send stamps are µs since it.
        let epoch = Instant::now();
        let thread = std::thread::Builder::new()
            .name("loadgen-media".into())
            .spawn(move || Loop::new(poll, rx, ip, epoch).run())?;
        Ok(Self {
            tx,
            waker,
            thread: Some(thread),
        })
    }

    fn send(&self, c: Command) -> Result<(), Error> {
        self.tx.send(c).map_err(|_| Error::MediaGone)?;
        self.waker.wake()?;
        Ok(())
    }

    /// Creates a Peer and its first offer. `join_started` is when its join began (join time).
    pub async fn add(
        &self,
        opts: PeerOptions,
        join_started: Instant,
    ) -> Result<(PeerId, String), Error> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Add {
            opts,
            join_started,
            reply,
        })?;
        rx.await.map_err(|_| Error::MediaGone)?
    }

    /// Applies the SFU's answer to the Peer's offer.
    pub async fn answer(&self, id: PeerId, sdp: String) -> Result<(), Error> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Answer { id, sdp, reply })?;
        rx.await.map_err(|_| Error::MediaGone)?
    }

    /// Answers an SFU offer (after the Peer's own offer is answered, like a browser's queue).
    pub async fn offer(&self, id: PeerId, sdp: String) -> Result<String, Error> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Offer { id, sdp, reply })?;
        rx.await.map_err(|_| Error::MediaGone)?
    }

    /// Counters of every Peer, and the delay histograms.
    pub async fn snapshot(&self) -> Result<Snapshot, Error> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Snapshot { reply })?;
        rx.await.map_err(|_| Error::MediaGone)
    }
}

impl Drop for MediaHandle {
    fn drop(&mut self) {
        let _ = self.send(Command::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Slot {
    peer: Peer,
    socket: UdpSocket,
    /// SFU offers that arrived while our own offer was outstanding.
    queued: Vec<(String, oneshot::Sender<Result<String, Error>>)>,
}

struct Loop {
    poll: Poll,
    rx: mpsc::Receiver<Command>,
    ip: IpAddr,
    epoch: Instant,
    slots: Vec<Slot>,
    /// Delays of what every Peer received (each Peer holds a handle; one thread).
    delays: Rc<RefCell<Delays>>,
}

fn sender(socket: &UdpSocket) -> impl FnMut(SocketAddr, &[u8]) + '_ {
    // A full socket buffer loses the datagram, as a network would.
    move |dst, bytes| {
        let _ = socket.send_to(bytes, dst);
    }
}

impl Loop {
    fn new(poll: Poll, rx: mpsc::Receiver<Command>, ip: IpAddr, epoch: Instant) -> Self {
        Self {
            poll,
            rx,
            ip,
            epoch,
            slots: Vec::new(),
            delays: Rc::default(),
        }
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut buf = vec![0u8; 2048];
        let mut last_scan = Instant::now();
        let mut next_due = last_scan;
        loop {
            let now = Instant::now();
            let sleep = next_due
                .saturating_duration_since(now)
                .clamp(Duration::ZERO, MAX_SLEEP);
            if let Err(e) = self.poll.poll(&mut events, Some(sleep))
                && e.kind() != ErrorKind::Interrupted
            {
                eprintln!("loadgen: poll failed: {e}");
                return;
            }
            for ev in events.iter() {
                if ev.token() == WAKER {
                    continue;
                }
                let Some(slot) = self.slots.get_mut(ev.token().0) else {
                    continue;
                };
                let Slot { peer, socket, .. } = slot;
                let mut send = sender(socket);
                loop {
                    match socket.recv_from(&mut buf) {
                        Ok((n, src)) => {
                            peer.handle_datagram(Instant::now(), src, &buf[..n], &mut send)
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        // ICMP errors (a closed port): nothing to read for now.
                        Err(_) => break,
                    }
                }
            }
            if !self.commands() {
                return;
            }
            let now = Instant::now();
            if now.duration_since(last_scan) >= SCAN_EVERY || next_due <= now {
                last_scan = now;
                next_due = now + MAX_SLEEP;
                for slot in &mut self.slots {
                    if slot.peer.next_due() <= now {
                        slot.peer.handle_timeout(now, &mut sender(&slot.socket));
                    }
                    next_due = next_due.min(slot.peer.next_due());
                }
                next_due = next_due.max(now + SCAN_EVERY);
            }
        }
    }

    /// Handles pending commands; false when told to stop.
    fn commands(&mut self) -> bool {
        while let Ok(c) = self.rx.try_recv() {
            match c {
                Command::Stop => return false,
                Command::Add {
                    opts,
                    join_started,
                    reply,
                } => {
                    let _ = reply.send(self.add(opts, join_started));
                }
                Command::Answer { id, sdp, reply } => {
                    let r = match self.slots.get_mut(id.0) {
                        None => Err(Error::Signaling(format!("no peer {}", id.0))),
                        Some(slot) => {
                            let r = slot.peer.accept_answer(&sdp, &mut sender(&slot.socket));
                            for (offer, reply) in std::mem::take(&mut slot.queued) {
                                let a = slot.peer.accept_offer(&offer, &mut sender(&slot.socket));
                                let _ = reply.send(a.map_err(Error::from));
                            }
                            r
                        }
                    };
                    let _ = reply.send(r);
                }
                Command::Offer { id, sdp, reply } => match self.slots.get_mut(id.0) {
                    None => {
                        let _ = reply.send(Err(Error::Signaling(format!("no peer {}", id.0))));
                    }
                    Some(slot) if slot.peer.has_pending_offer() => slot.queued.push((sdp, reply)),
                    Some(slot) => {
                        let a = slot.peer.accept_offer(&sdp, &mut sender(&slot.socket));
                        let _ = reply.send(a.map_err(Error::from));
                    }
                },
                Command::Snapshot { reply } => {
                    let peers = self
                        .slots
                        .iter()
                        .enumerate()
                        .map(|(i, s)| PeerSnapshot {
                            id: PeerId(i),
                            publisher: s.peer.publishes(),
                            room: s.peer.room(),
                            counters: s.peer.counters(),
                        })
                        .collect();
                    let delays = self.delays.borrow().clone();
                    let _ = reply.send(Snapshot { peers, delays });
                }
            }
        }
        true
    }

    fn add(&mut self, opts: PeerOptions, join_started: Instant) -> Result<(PeerId, String), Error> {
        let std_socket = std::net::UdpSocket::bind(SocketAddr::new(self.ip, 0))?;
        std_socket.set_nonblocking(true)?;
        let mut socket = UdpSocket::from_std(std_socket);
        set_buffers(&socket);
        let addr = socket.local_addr()?;
        let id = PeerId(self.slots.len());
        self.poll
            .registry()
            .register(&mut socket, Token(id.0), Interest::READABLE)?;
        let mut peer = Peer::new(addr, opts, self.epoch, join_started, self.delays.clone());
        let offer = peer.create_offer(&mut sender(&socket));
        self.slots.push(Slot {
            peer,
            socket,
            queued: Vec::new(),
        });
        Ok((id, offer))
    }
}

/// Raises the socket's buffers (best effort: the kernel caps them at `net.core.rmem_max`).
fn set_buffers(socket: &UdpSocket) {
    let s = socket2::SockRef::from(socket);
    let _ = s.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = s.set_send_buffer_size(SOCKET_BUFFER);
}
