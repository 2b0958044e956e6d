//! The TURN protocol engine of the embedded server (RFC 8656 for UDP relays, RFC 8489 STUN):
//! this file has the shared state ([`Shared`]: allocation table, quotas' tallies, counters) and
//! the dispatch of client frames; each concern has its own file:
//! `auth` (long-term credentials, nonces, refusals), `sessions` (which identities are live
//! Sessions, revocation), `allocations` (Allocate, Refresh, relay ports, lifetimes),
//! `permissions` (CreatePermission, ChannelBind, peer policy) and `relay` (the data path and
//! the per-allocation bitrate limit).
//!
//! It receives whole client frames (a datagram, or one framed message off a TCP/TLS stream)
//! through [`Shared::handle_client`], answers through the client's [`ClientSink`], and owns one
//! UDP relay socket plus one receive task per allocation. It never blocks: every send is a
//! `try_send`, dropped when the socket or the stream's queue is full, like a network would. It
//! opens no listener (`listeners` does) and reads no configuration file.

mod allocations;
mod auth;
#[cfg(feature = "testing")]
pub mod fuzz;
mod permissions;
mod relay;
mod sessions;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use turn_types::message::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, REFRESH, SEND};
use turn_types::stun::attribute::{ErrorCode, XorMappedAddress};
use turn_types::stun::message::{BINDING, Message, MessageClass, MessageWriteExt};
use turn_types::stun::prelude::MessageWrite;

use super::credentials::{self, NonceKey, TurnCredential, mint_credential};
use super::policy::PeerPolicy;
use super::settings::TurnConfig;
use allocations::Allocation;
use auth::Refusal;
#[cfg(test)]
pub(crate) use relay::channel_data;
use sessions::Sessions;

/// Where relays bind and what address they are announced as (the bind address, or an announced
/// media IP of its family when it is unspecified).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RelayAddrs {
    pub bind: IpAddr,
    pub public: IpAddr,
}

/// How a client reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Datagrams.
    Udp,
    /// STUN framing on TCP.
    Tcp,
    /// STUN framing on TLS over TCP.
    Tls,
}

/// Identifies an allocation: the client's transport address on one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct FiveTuple {
    pub transport: Transport,
    pub client: SocketAddr,
    pub server: SocketAddr,
}

/// Where replies and relayed data for one client go.
#[derive(Debug, Clone)]
pub(crate) enum ClientSink {
    Udp(Arc<UdpSocket>, SocketAddr),
    /// A stream's writer queue and the bytes queued in it (bounded by [`STREAM_QUEUE_BYTES`]).
    Stream(mpsc::Sender<Vec<u8>>, Arc<AtomicUsize>),
}

/// Bytes queued toward one TCP/TLS client before further frames are dropped: 256 KiB is about a
/// second of a 2 Mbit/s call, so a client that stops reading costs at most that, and
/// `turn.max_stream_connections` of them at most 256 KiB each.
pub(crate) const STREAM_QUEUE_BYTES: usize = 256 << 10;

impl ClientSink {
    fn send(&self, bytes: Vec<u8>) -> bool {
        match self {
            Self::Udp(s, to) => s.try_send_to(&bytes, *to).is_ok(),
            Self::Stream(tx, queued) => {
                let n = bytes.len();
                if queued.fetch_add(n, Ordering::AcqRel) + n > STREAM_QUEUE_BYTES {
                    queued.fetch_sub(n, Ordering::AcqRel);
                    return false;
                }
                if tx.try_send(bytes).is_err() {
                    queued.fetch_sub(n, Ordering::AcqRel);
                    return false;
                }
                true
            }
        }
    }
    fn is_stream(&self) -> bool {
        matches!(self, Self::Stream(..))
    }
}

/// Declares the counters once: the atomic [`Counters`] the engine bumps, the [`TurnStats`]
/// snapshot (each counter plus the live allocations) and the copy from one to the other.
macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// Counters of the embedded TURN server (monotonic since start).
        #[derive(Debug, Default)]
        pub(crate) struct Counters {
            $(pub $name: AtomicU64,)*
        }

        /// A snapshot of the embedded TURN server's counters.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct TurnStats {
            /// Allocations currently live.
            pub allocations: u64,
            $($(#[$doc])* pub $name: u64,)*
        }

        impl Counters {
            fn snapshot(&self, allocations: u64) -> TurnStats {
                TurnStats {
                    allocations,
                    $($name: self.$name.load(Ordering::Relaxed),)*
                }
            }
        }
    };
}

counters! {
    /// Allocations ever created.
    allocations_created,
    /// Requests refused with 401 (missing, wrong, expired or revoked credentials) or 438 (stale
    /// nonce).
    refused_unauthorized,
    /// Requests refused with 403 (denied peer address).
    refused_forbidden,
    /// Requests refused with 486 (allocation quota).
    refused_quota,
    /// Requests refused with 508 (no relay port, permission table full).
    refused_capacity,
    /// Requests refused with another error (400, 420, 437, 440, 441, 442, 443).
    refused_other,
    /// Frames that were neither STUN nor ChannelData, or did not parse.
    malformed,
    /// Payload bytes relayed from clients to peers.
    bytes_to_peers,
    /// Payload bytes relayed from peers to clients.
    bytes_to_clients,
    /// Packets dropped for lack of a permission or channel.
    dropped_no_permission,
    /// Packets dropped by the per-allocation bitrate limit.
    dropped_rate,
    /// STUN Binding requests answered.
    bindings_answered,
}

#[derive(Default)]
struct State {
    allocations: HashMap<FiveTuple, Arc<Allocation>>,
    per_identity: HashMap<String, u32>,
    ports: HashSet<u16>,
}

/// Everything the listeners and relay tasks share.
pub(crate) struct Shared {
    config: TurnConfig,
    secret: Vec<u8>,
    relay: RelayAddrs,
    policy: PeerPolicy,
    nonces: NonceKey,
    state: Mutex<State>,
    sessions: Mutex<Sessions>,
    pub(crate) counters: Counters,
    pub(crate) cancel: CancellationToken,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Shared {
    /// `config` is a validated `[turn]`; `secret` the resolved shared secret.
    pub(crate) fn new(
        config: TurnConfig,
        secret: Vec<u8>,
        relay: RelayAddrs,
        policy: PeerPolicy,
        nonce_seed: &[u8; 32],
    ) -> Self {
        Self {
            config,
            secret,
            relay,
            policy,
            nonces: NonceKey::new(nonce_seed, Duration::from_secs(3600)),
            state: Mutex::new(State::default()),
            sessions: Mutex::new(Sessions::default()),
            counters: Counters::default(),
            cancel: CancellationToken::new(),
        }
    }

    pub(crate) fn stats(&self) -> TurnStats {
        let live = lock(&self.state).allocations.len() as u64;
        self.counters.snapshot(live)
    }

    /// Handles one frame from a client; returns whether it was a request whose credentials
    /// checked out (what keeps a new stream connection open). Never panics on any input.
    pub(crate) fn handle_client(
        self: &Arc<Self>,
        five: FiveTuple,
        sink: &ClientSink,
        data: &[u8],
    ) -> bool {
        match data.first() {
            Some(0x40..=0x7f) => self.client_channel_data(five, data),
            Some(0x00..=0x3f) => match Message::from_bytes(data) {
                Ok(msg) => return self.client_message(five, sink, &msg),
                Err(_) => bump(&self.counters.malformed),
            },
            _ => bump(&self.counters.malformed),
        }
        false
    }

    fn allocation(&self, five: &FiveTuple) -> Option<Arc<Allocation>> {
        lock(&self.state).allocations.get(five).cloned()
    }

    /// One STUN message; returns whether it was an authenticated request.
    fn client_message(
        self: &Arc<Self>,
        five: FiveTuple,
        sink: &ClientSink,
        msg: &Message<'_>,
    ) -> bool {
        match msg.class() {
            MessageClass::Request => {}
            MessageClass::Indication => {
                if msg.has_method(SEND) {
                    self.send_indication(five, msg);
                }
                return false;
            }
            _ => return false,
        }
        let method = msg.method();
        let result = if method == BINDING {
            bump(&self.counters.bindings_answered);
            Ok(self.binding(five, msg))
        } else if method == ALLOCATE {
            self.allocate(five, sink, msg)
        } else if method == REFRESH {
            self.refresh(five, msg)
        } else if method == CREATE_PERMISSION {
            self.create_permission(five, msg)
        } else if method == CHANNEL_BIND {
            self.channel_bind(five, msg)
        } else {
            Err(Refusal::plain(ErrorCode::BAD_REQUEST))
        };
        // Only a request past the credential check is answered signed (RFC 8489 §9.2.4).
        let authenticated =
            method != BINDING && result.as_ref().map_or_else(|r| r.sign.is_some(), |_| true);
        let bytes = match result {
            Ok(b) => b,
            Err(r) => self.refuse(five, msg, r),
        };
        sink.send(bytes);
        authenticated
    }

    fn binding(&self, five: FiveTuple, msg: &Message<'_>) -> Vec<u8> {
        let mut b = Self::success(msg);
        let _ = b.add_attribute(&XorMappedAddress::new(five.client, msg.transaction_id()));
        let _ = b.add_fingerprint();
        b.finish()
    }

    /// Drops expired allocations, permissions and channels, and revocations whose credentials
    /// expired anyway. An allocation also ends when its credential has expired and its identity
    /// is not a live Session (only a live Session's allocation outlives its credential). Called
    /// about once a second.
    pub(crate) fn sweep(&self) {
        let now = Instant::now();
        let wall = std::time::SystemTime::now();
        let all: Vec<Arc<Allocation>> = lock(&self.state).allocations.values().cloned().collect();
        for a in all {
            let expired = {
                let mut inner = lock(&a.inner);
                inner.permissions.retain(|_, p| p.expires > now);
                inner.prune_channels(now);
                inner.expires <= now
            };
            let orphaned = credentials::seconds_left(&a.username, wall) == 0
                && !lock(&self.sessions).is_live(&a.identity);
            if expired || orphaned {
                self.remove(&a.five);
            }
        }
        lock(&self.sessions).forget_expired(wall);
    }

    /// Credentials for `identity` valid `turn.credential_ttl_secs` from `now`.
    pub(crate) fn mint(&self, identity: &str, now: std::time::SystemTime) -> TurnCredential {
        let ttl = Duration::from_secs(self.config.credential_ttl_secs);
        mint_credential(&self.secret, identity, ttl, now)
    }

    /// Removes every allocation (shutdown).
    pub(crate) fn clear(&self) {
        let keys: Vec<FiveTuple> = lock(&self.state).allocations.keys().copied().collect();
        for k in keys {
            self.remove(&k);
        }
    }
}

fn method_name(msg: &Message<'_>) -> &'static str {
    let m = msg.method();
    [
        (BINDING, "Binding"),
        (ALLOCATE, "Allocate"),
        (REFRESH, "Refresh"),
        (CREATE_PERMISSION, "CreatePermission"),
        (CHANNEL_BIND, "ChannelBind"),
    ]
    .into_iter()
    .find(|(k, _)| *k == m)
    .map_or("other", |(_, n)| n)
}
