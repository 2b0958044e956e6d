//! The TURN protocol engine of the embedded server: authentication, allocations, permissions,
//! channel bindings, relaying, quotas and expiry (RFC 8656 for UDP relays, RFC 8489 STUN).
//!
//! It receives whole client frames (a datagram, or one framed message off a TCP/TLS stream)
//! through [`Shared::handle_client`], answers through the client's [`ClientSink`], and owns one
//! UDP relay socket plus one receive task per allocation. It never blocks: every send is a
//! `try_send`, dropped when the socket or the stream's queue is full, like a network would.
//! Listeners and connection handling live in `mod.rs`.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use turn_types::attribute::{
    ChannelNumber, Data as DataAttr, Lifetime, RequestedAddressFamily, RequestedTransport,
    ReservationToken, XorPeerAddress, XorRelayedAddress,
};
use turn_types::message::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, DATA, REFRESH, SEND};
use turn_types::stun::attribute::{
    AttributeType, ErrorCode, Fingerprint, MessageIntegrity, MessageIntegritySha256, Nonce, Realm,
    Software, Username, XorMappedAddress,
};
use turn_types::stun::message::{
    BINDING, IntegrityAlgorithm, LongTermKeyCredentials, Message, MessageClass,
    MessageIntegrityCredentials, MessageWriteExt, MessageWriteVec,
};
use turn_types::stun::prelude::{Attribute, AttributeStaticType, MessageWrite};
use turn_types::{AddressFamily, attribute::EvenPort};

use super::credentials::{self, NonceKey};
use super::policy::{PeerPolicy, PeerVerdict};

/// Default allocation lifetime (RFC 8656 §3.2).
const DEFAULT_LIFETIME: u32 = 600;
/// Permission lifetime (RFC 8656 §9).
const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
/// Channel binding lifetime (RFC 8656 §12).
const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
/// Largest datagram read from a relay socket.
const MAX_RELAY_DATAGRAM: usize = 65536;

/// Settings resolved from `[turn]` and `[media]` at start-up.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub realm: String,
    pub secret: crate::config::SecretBytes,
    pub relay_bind: IpAddr,
    pub relay_public: IpAddr,
    pub port_min: u16,
    pub port_max: u16,
    pub max_per_identity: u32,
    pub max_allocations: u32,
    /// Bytes per second per allocation; 0 = unlimited.
    pub rate_bytes: u64,
    pub max_lifetime: u32,
    pub max_permissions: usize,
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

/// Counters of the embedded TURN server (monotonic since start).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub allocations_created: AtomicU64,
    pub refused_unauthorized: AtomicU64,
    pub refused_forbidden: AtomicU64,
    pub refused_quota: AtomicU64,
    pub refused_capacity: AtomicU64,
    pub refused_other: AtomicU64,
    pub malformed: AtomicU64,
    pub bytes_to_peers: AtomicU64,
    pub bytes_to_clients: AtomicU64,
    pub dropped_no_permission: AtomicU64,
    pub dropped_rate: AtomicU64,
    pub bindings_answered: AtomicU64,
}

/// A snapshot of the embedded TURN server's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TurnStats {
    /// Allocations currently live.
    pub allocations: u64,
    /// Allocations ever created.
    pub allocations_created: u64,
    /// Requests refused with 401 (missing, wrong or expired credentials) or 438 (stale nonce).
    pub refused_unauthorized: u64,
    /// Requests refused with 403 (denied peer address).
    pub refused_forbidden: u64,
    /// Requests refused with 486 (allocation quota).
    pub refused_quota: u64,
    /// Requests refused with 508 (no relay port, permission table full).
    pub refused_capacity: u64,
    /// Requests refused with another error (400, 420, 437, 440, 441, 442, 443).
    pub refused_other: u64,
    /// Frames that were neither STUN nor ChannelData, or did not parse.
    pub malformed: u64,
    /// Payload bytes relayed from clients to peers.
    pub bytes_to_peers: u64,
    /// Payload bytes relayed from peers to clients.
    pub bytes_to_clients: u64,
    /// Packets dropped for lack of a permission or channel.
    pub dropped_no_permission: u64,
    /// Packets dropped by the per-allocation bitrate limit.
    pub dropped_rate: u64,
    /// STUN Binding requests answered.
    pub bindings_answered: u64,
}

struct Permission {
    expires: Instant,
    own_media_only: bool,
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

struct AllocInner {
    expires: Instant,
    permissions: HashMap<IpAddr, Permission>,
    channels: HashMap<u16, (SocketAddr, Instant)>,
    peer_channel: HashMap<SocketAddr, u16>,
    bucket: Bucket,
}

pub(crate) struct Allocation {
    five: FiveTuple,
    username: String,
    identity: String,
    txid: turn_types::stun::message::TransactionId,
    relay: Arc<UdpSocket>,
    relay_public: SocketAddr,
    port: u16,
    sink: ClientSink,
    inner: Mutex<AllocInner>,
    cancel: CancellationToken,
}

#[derive(Default)]
struct State {
    allocations: HashMap<FiveTuple, Arc<Allocation>>,
    per_identity: HashMap<String, u32>,
    ports: HashSet<u16>,
}

/// Everything the listeners and relay tasks share.
pub(crate) struct Shared {
    settings: Settings,
    policy: PeerPolicy,
    nonces: NonceKey,
    state: Mutex<State>,
    pub(crate) counters: Counters,
    pub(crate) cancel: CancellationToken,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// A request refused: the code, whether the response can be signed, and for 401/438 the
/// challenge attributes.
struct Refusal {
    code: u16,
    sign: Option<(MessageIntegrityCredentials, IntegrityAlgorithm)>,
    challenge: bool,
    unknown: Vec<AttributeType>,
}

impl Refusal {
    fn plain(code: u16) -> Self {
        Self {
            code,
            sign: None,
            challenge: false,
            unknown: Vec::new(),
        }
    }
    fn challenge(code: u16) -> Self {
        Self {
            challenge: true,
            ..Self::plain(code)
        }
    }
    fn signed(code: u16, auth: &Authed) -> Self {
        Self {
            sign: Some((auth.creds.clone(), auth.algo)),
            ..Self::plain(code)
        }
    }
}

struct Authed {
    username: String,
    identity: String,
    /// Whole seconds until the credential expires (at least 1).
    credential_left: u32,
    creds: MessageIntegrityCredentials,
    algo: IntegrityAlgorithm,
}

impl Shared {
    pub(crate) fn new(settings: Settings, policy: PeerPolicy, nonce_seed: &[u8; 32]) -> Self {
        Self {
            settings,
            policy,
            nonces: NonceKey::new(nonce_seed, Duration::from_secs(3600)),
            state: Mutex::new(State::default()),
            counters: Counters::default(),
            cancel: CancellationToken::new(),
        }
    }

    pub(crate) fn stats(&self) -> TurnStats {
        let c = &self.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TurnStats {
            allocations: lock(&self.state).allocations.len() as u64,
            allocations_created: g(&c.allocations_created),
            refused_unauthorized: g(&c.refused_unauthorized),
            refused_forbidden: g(&c.refused_forbidden),
            refused_quota: g(&c.refused_quota),
            refused_capacity: g(&c.refused_capacity),
            refused_other: g(&c.refused_other),
            malformed: g(&c.malformed),
            bytes_to_peers: g(&c.bytes_to_peers),
            bytes_to_clients: g(&c.bytes_to_clients),
            dropped_no_permission: g(&c.dropped_no_permission),
            dropped_rate: g(&c.dropped_rate),
            bindings_answered: g(&c.bindings_answered),
        }
    }

    /// Handles one frame from a client. Never panics on any input.
    pub(crate) fn handle_client(self: &Arc<Self>, five: FiveTuple, sink: &ClientSink, data: &[u8]) {
        match data.first() {
            Some(0x40..=0x7f) => self.client_channel_data(five, data),
            Some(0x00..=0x3f) => match Message::from_bytes(data) {
                Ok(msg) => self.client_message(five, sink, &msg),
                Err(_) => bump(&self.counters.malformed),
            },
            _ => bump(&self.counters.malformed),
        }
    }

    /// Whether `len` bytes may be relayed between the client and `peer` now (either way): a live
    /// permission for `peer` and room in the allocation's bitrate budget (taken). A refusal is
    /// counted.
    fn admit(&self, inner: &mut AllocInner, peer: SocketAddr, len: usize, now: Instant) -> bool {
        if !has_permission(inner, &self.policy, peer, now) {
            bump(&self.counters.dropped_no_permission);
            return false;
        }
        if !take(&mut inner.bucket, self.settings.rate_bytes, len, now) {
            bump(&self.counters.dropped_rate);
            return false;
        }
        true
    }

    fn allocation(&self, five: &FiveTuple) -> Option<Arc<Allocation>> {
        lock(&self.state).allocations.get(five).cloned()
    }

    fn client_channel_data(&self, five: FiveTuple, data: &[u8]) {
        let Ok(cd) = turn_types::channel::ChannelData::parse(data) else {
            bump(&self.counters.malformed);
            return;
        };
        let Some(alloc) = self.allocation(&five) else {
            bump(&self.counters.dropped_no_permission);
            return;
        };
        let now = Instant::now();
        let peer = {
            let mut inner = lock(&alloc.inner);
            let Some((peer, exp)) = inner.channels.get(&cd.id()).copied() else {
                drop(inner);
                bump(&self.counters.dropped_no_permission);
                return;
            };
            if exp <= now {
                drop(inner);
                bump(&self.counters.dropped_no_permission);
                return;
            }
            if !self.admit(&mut inner, peer, cd.data().len(), now) {
                return;
            }
            peer
        };
        if alloc.relay.try_send_to(cd.data(), peer).is_ok() {
            self.counters
                .bytes_to_peers
                .fetch_add(cd.data().len() as u64, Ordering::Relaxed);
        }
    }

    fn client_message(self: &Arc<Self>, five: FiveTuple, sink: &ClientSink, msg: &Message<'_>) {
        match msg.class() {
            MessageClass::Request => {}
            MessageClass::Indication => {
                if msg.has_method(SEND) {
                    self.send_indication(five, msg);
                }
                return;
            }
            _ => return,
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
        let bytes = match result {
            Ok(b) => b,
            Err(r) => self.refuse(five, msg, r),
        };
        sink.send(bytes);
    }

    fn refuse(&self, five: FiveTuple, msg: &Message<'_>, r: Refusal) -> Vec<u8> {
        let c = &self.counters;
        match r.code {
            401 | 438 => bump(&c.refused_unauthorized),
            403 => bump(&c.refused_forbidden),
            486 => bump(&c.refused_quota),
            508 => bump(&c.refused_capacity),
            _ => bump(&c.refused_other),
        }
        tracing::debug!(client = %crate::telemetry::Redact(five.client), transport = ?five.transport, method = method_name(msg), code = r.code, "TURN request refused");
        let mut b = Message::builder_error(msg, MessageWriteVec::with_capacity(128));
        if r.code == ErrorCode::UNKNOWN_ATTRIBUTE {
            b = Message::unknown_attributes(msg, &r.unknown, MessageWriteVec::with_capacity(128));
        } else if let Ok(e) = ErrorCode::builder(r.code).build() {
            let _ = b.add_attribute(&e);
        }
        if r.challenge {
            if let Ok(realm) = Realm::new(&self.settings.realm) {
                let _ = b.add_attribute(&realm);
            }
            if let Ok(nonce) = Nonce::new(&self.nonces.issue(five.client, SystemTime::now())) {
                let _ = b.add_attribute(&nonce);
            }
        }
        if let Some((creds, algo)) = &r.sign {
            let _ = b.add_message_integrity(creds, *algo);
        }
        let _ = b.add_fingerprint();
        b.finish()
    }

    fn success(msg: &Message<'_>) -> MessageWriteVec {
        let mut b = Message::builder_success(msg, MessageWriteVec::with_capacity(128));
        if let Ok(s) = Software::new("switchboard") {
            let _ = b.add_attribute(&s);
        }
        b
    }

    fn finish_signed(mut b: MessageWriteVec, auth: &Authed) -> Vec<u8> {
        let _ = b.add_message_integrity(&auth.creds, auth.algo);
        let _ = b.add_fingerprint();
        b.finish()
    }

    fn binding(&self, five: FiveTuple, msg: &Message<'_>) -> Vec<u8> {
        let mut b = Self::success(msg);
        let _ = b.add_attribute(&XorMappedAddress::new(five.client, msg.transaction_id()));
        let _ = b.add_fingerprint();
        b.finish()
    }

    /// The long-term credential check (RFC 8489 §9.2.4) with the shared-secret passwords.
    fn authenticate(&self, five: FiveTuple, msg: &Message<'_>) -> Result<Authed, Refusal> {
        if !msg.has_attribute(MessageIntegrity::TYPE)
            && !msg.has_attribute(MessageIntegritySha256::TYPE)
        {
            return Err(Refusal::challenge(ErrorCode::UNAUTHORIZED));
        }
        let (Ok(user), Ok(realm), Ok(nonce)) = (
            msg.attribute::<Username>(),
            msg.attribute::<Realm>(),
            msg.attribute::<Nonce>(),
        ) else {
            return Err(Refusal::plain(ErrorCode::BAD_REQUEST));
        };
        let now = SystemTime::now();
        if !self.nonces.check(nonce.nonce(), five.client, now) {
            return Err(Refusal::challenge(ErrorCode::STALE_NONCE));
        }
        if realm.realm() != self.settings.realm {
            return Err(Refusal::challenge(ErrorCode::UNAUTHORIZED));
        }
        let username = user.username();
        let Ok(identity) = credentials::check_username(username, now) else {
            return Err(Refusal::challenge(ErrorCode::UNAUTHORIZED));
        };
        let password = credentials::password_for(&self.settings.secret, username);
        let creds: MessageIntegrityCredentials = LongTermKeyCredentials::new(
            username.to_string(),
            password,
            self.settings.realm.clone(),
        )
        .into();
        let Ok(algo) = msg.validate_integrity(&creds) else {
            return Err(Refusal::challenge(ErrorCode::UNAUTHORIZED));
        };
        let credential_left = credentials::seconds_left(username, now);
        Ok(Authed {
            username: username.to_string(),
            identity: identity.to_string(),
            credential_left,
            creds,
            algo,
        })
    }

    /// Authenticates a request on an existing allocation (437 without one, 441 for another
    /// username).
    fn authenticate_on(
        &self,
        five: FiveTuple,
        msg: &Message<'_>,
    ) -> Result<(Authed, Arc<Allocation>), Refusal> {
        let auth = self.authenticate(five, msg)?;
        let Some(alloc) = self.allocation(&five) else {
            return Err(Refusal::signed(ErrorCode::ALLOCATION_MISMATCH, &auth));
        };
        if alloc.username != auth.username {
            return Err(Refusal::signed(ErrorCode::WRONG_CREDENTIALS, &auth));
        }
        Ok((auth, alloc))
    }

    fn check_unknown(msg: &Message<'_>, known: &[AttributeType]) -> Result<(), Refusal> {
        let unknown: Vec<AttributeType> = msg
            .iter_attributes()
            .map(|(_, a)| a.get_type())
            .filter(|t| t.comprehension_required() && !known.contains(t) && !COMMON.contains(t))
            .collect();
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(Refusal {
                unknown,
                ..Refusal::plain(ErrorCode::UNKNOWN_ATTRIBUTE)
            })
        }
    }

    fn allocate(
        self: &Arc<Self>,
        five: FiveTuple,
        sink: &ClientSink,
        msg: &Message<'_>,
    ) -> Result<Vec<u8>, Refusal> {
        let auth = self.authenticate(five, msg)?;
        if let Some(a) = self.allocation(&five) {
            if a.txid == msg.transaction_id() && a.username == auth.username {
                // A retransmitted Allocate: answer it again.
                let left = lock(&a.inner)
                    .expires
                    .saturating_duration_since(Instant::now());
                return Ok(self.allocate_success(msg, &a, left.as_secs() as u32, &auth));
            }
            return Err(Refusal::signed(ErrorCode::ALLOCATION_MISMATCH, &auth));
        }
        Self::check_unknown(
            msg,
            &[
                RequestedTransport::TYPE,
                Lifetime::TYPE,
                DONT_FRAGMENT,
                EvenPort::TYPE,
                ReservationToken::TYPE,
                RequestedAddressFamily::TYPE,
            ],
        )
        .map_err(|mut r| {
            r.sign = Some((auth.creds.clone(), auth.algo));
            r
        })?;
        let Ok(rt) = msg.attribute::<RequestedTransport>() else {
            return Err(Refusal::signed(ErrorCode::BAD_REQUEST, &auth));
        };
        if rt.protocol() != RequestedTransport::UDP {
            return Err(Refusal::signed(
                ErrorCode::UNSUPPORTED_TRANSPORT_PROTOCOL,
                &auth,
            ));
        }
        if msg.has_attribute(ReservationToken::TYPE) {
            // Reservations are not offered (no EVEN-PORT R bit either).
            return Err(Refusal::signed(ErrorCode::INSUFFICIENT_CAPACITY, &auth));
        }
        let want_v6 = match msg.attribute::<RequestedAddressFamily>() {
            Ok(f) => f.family() == AddressFamily::IPV6,
            Err(_) => false,
        };
        if want_v6 != self.settings.relay_public.is_ipv6() {
            return Err(Refusal::signed(
                ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED,
                &auth,
            ));
        }
        let even = msg.has_attribute(EvenPort::TYPE);
        let requested = msg.attribute::<Lifetime>().map(|l| l.seconds()).ok();
        let lifetime = requested
            .unwrap_or(DEFAULT_LIFETIME)
            .max(DEFAULT_LIFETIME)
            .min(self.settings.max_lifetime)
            .min(auth.credential_left);

        // Quotas and a port, under the state lock.
        let (relay, port) = {
            let mut st = lock(&self.state);
            // Reserved ports count allocations still being set up by another listener task.
            if st.ports.len() >= self.settings.max_allocations as usize
                || st.per_identity.get(&auth.identity).copied().unwrap_or(0)
                    >= self.settings.max_per_identity
            {
                return Err(Refusal::signed(ErrorCode::ALLOCATION_QUOTA_REACHED, &auth));
            }
            let Some((sock, port)) = self.bind_relay(&st.ports, even) else {
                return Err(Refusal::signed(ErrorCode::INSUFFICIENT_CAPACITY, &auth));
            };
            st.ports.insert(port);
            *st.per_identity.entry(auth.identity.clone()).or_insert(0) += 1;
            (sock, port)
        };
        let relay = match UdpSocket::from_std(relay) {
            Ok(s) => Arc::new(s),
            Err(e) => {
                tracing::warn!(error = %e, "TURN relay socket could not be registered");
                self.release(port, &auth.identity);
                return Err(Refusal::signed(ErrorCode::INSUFFICIENT_CAPACITY, &auth));
            }
        };
        let now = Instant::now();
        let alloc = Arc::new(Allocation {
            five,
            username: auth.username.clone(),
            identity: auth.identity.clone(),
            txid: msg.transaction_id(),
            relay: relay.clone(),
            relay_public: SocketAddr::new(self.settings.relay_public, port),
            port,
            sink: sink.clone(),
            inner: Mutex::new(AllocInner {
                expires: now + Duration::from_secs(u64::from(lifetime)),
                permissions: HashMap::new(),
                channels: HashMap::new(),
                peer_channel: HashMap::new(),
                bucket: Bucket {
                    tokens: burst(self.settings.rate_bytes),
                    last: now,
                },
            }),
            cancel: self.cancel.child_token(),
        });
        lock(&self.state).allocations.insert(five, alloc.clone());
        bump(&self.counters.allocations_created);
        tracing::debug!(client = %crate::telemetry::Redact(five.client), transport = ?five.transport, relay = %alloc.relay_public, identity = %alloc.identity, "TURN allocation created");
        let this = self.clone();
        let a = alloc.clone();
        tokio::spawn(async move { this.relay_loop(a).await });
        Ok(self.allocate_success(msg, &alloc, lifetime, &auth))
    }

    fn allocate_success(
        &self,
        msg: &Message<'_>,
        a: &Allocation,
        lifetime: u32,
        auth: &Authed,
    ) -> Vec<u8> {
        let tid = msg.transaction_id();
        let mut b = Self::success(msg);
        let _ = b.add_attribute(&XorRelayedAddress::new(a.relay_public, tid));
        let _ = b.add_attribute(&Lifetime::new(lifetime));
        let _ = b.add_attribute(&XorMappedAddress::new(a.five.client, tid));
        Self::finish_signed(b, auth)
    }

    /// Binds a relay socket on a free port of the range (an even one if asked), starting at a
    /// random offset so ports are not predictable.
    fn bind_relay(&self, used: &HashSet<u16>, even: bool) -> Option<(std::net::UdpSocket, u16)> {
        let (lo, hi) = (
            u32::from(self.settings.port_min),
            u32::from(self.settings.port_max),
        );
        let n = hi - lo + 1;
        let mut r = [0u8; 4];
        let _ = getrandom::getrandom(&mut r);
        let start = u32::from_le_bytes(r) % n;
        for i in 0..n {
            let port = (lo + (start + i) % n) as u16;
            if used.contains(&port) || (even && port % 2 == 1) {
                continue;
            }
            let addr = SocketAddr::new(self.settings.relay_bind, port);
            if let Ok(s) = std::net::UdpSocket::bind(addr)
                && s.set_nonblocking(true).is_ok()
            {
                return Some((s, port));
            }
        }
        None
    }

    fn release(&self, port: u16, identity: &str) {
        let mut st = lock(&self.state);
        st.ports.remove(&port);
        if let Some(n) = st.per_identity.get_mut(identity) {
            *n -= 1;
            if *n == 0 {
                st.per_identity.remove(identity);
            }
        }
    }

    /// Removes the allocation of `five`, if any, and stops its relay.
    pub(crate) fn remove(&self, five: &FiveTuple) {
        let a = lock(&self.state).allocations.remove(five);
        if let Some(a) = a {
            a.cancel.cancel();
            self.release(a.port, &a.identity);
            tracing::debug!(client = %crate::telemetry::Redact(five.client), relay = %a.relay_public, "TURN allocation removed");
        }
    }

    /// Whether `five` has an allocation (stream connections without one time out).
    pub(crate) fn has_allocation(&self, five: &FiveTuple) -> bool {
        lock(&self.state).allocations.contains_key(five)
    }

    fn refresh(&self, five: FiveTuple, msg: &Message<'_>) -> Result<Vec<u8>, Refusal> {
        let (auth, alloc) = self.authenticate_on(five, msg)?;
        Self::check_unknown(msg, &[Lifetime::TYPE, RequestedAddressFamily::TYPE]).map_err(
            |mut r| {
                r.sign = Some((auth.creds.clone(), auth.algo));
                r
            },
        )?;
        let requested = msg.attribute::<Lifetime>().map(|l| l.seconds()).ok();
        let lifetime = match requested {
            Some(0) => 0,
            // Never past the credential's expiry: an expired credential cannot Refresh, so the
            // allocation would only linger unusable.
            r => r
                .unwrap_or(DEFAULT_LIFETIME)
                .max(DEFAULT_LIFETIME)
                .min(self.settings.max_lifetime)
                .min(auth.credential_left),
        };
        if lifetime == 0 {
            self.remove(&five);
        } else {
            lock(&alloc.inner).expires = Instant::now() + Duration::from_secs(u64::from(lifetime));
        }
        let mut b = Self::success(msg);
        let _ = b.add_attribute(&Lifetime::new(lifetime));
        Ok(Self::finish_signed(b, &auth))
    }

    /// The peers named in XOR-PEER-ADDRESS attributes, checked against the family and policy.
    fn peers(&self, msg: &Message<'_>, auth: &Authed) -> Result<Vec<(SocketAddr, bool)>, Refusal> {
        let tid = msg.transaction_id();
        let mut out = Vec::new();
        for (_, raw) in msg.iter_attributes() {
            if raw.get_type() != XorPeerAddress::TYPE {
                continue;
            }
            let Ok(p) = XorPeerAddress::try_from(&raw) else {
                return Err(Refusal::signed(ErrorCode::BAD_REQUEST, auth));
            };
            let peer = p.addr(tid);
            let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
            if peer.is_ipv6() != self.settings.relay_public.is_ipv6() {
                return Err(Refusal::signed(
                    ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH,
                    auth,
                ));
            }
            match self.policy.verdict(peer.ip()) {
                PeerVerdict::Denied => {
                    return Err(Refusal::signed(ErrorCode::FORBIDDEN, auth));
                }
                v => out.push((peer, v == PeerVerdict::OwnMediaOnly)),
            }
        }
        if out.is_empty() {
            return Err(Refusal::signed(ErrorCode::BAD_REQUEST, auth));
        }
        Ok(out)
    }

    fn install_permission(
        &self,
        inner: &mut AllocInner,
        ip: IpAddr,
        own_media_only: bool,
        now: Instant,
    ) -> bool {
        if !inner.permissions.contains_key(&ip) {
            inner.permissions.retain(|_, p| p.expires > now);
            if inner.permissions.len() >= self.settings.max_permissions {
                return false;
            }
        }
        inner.permissions.insert(
            ip,
            Permission {
                expires: now + PERMISSION_LIFETIME,
                own_media_only,
            },
        );
        true
    }

    fn create_permission(&self, five: FiveTuple, msg: &Message<'_>) -> Result<Vec<u8>, Refusal> {
        let (auth, alloc) = self.authenticate_on(five, msg)?;
        Self::check_unknown(msg, &[XorPeerAddress::TYPE]).map_err(|mut r| {
            r.sign = Some((auth.creds.clone(), auth.algo));
            r
        })?;
        let peers = self.peers(msg, &auth)?;
        let now = Instant::now();
        {
            let mut inner = lock(&alloc.inner);
            for (peer, own) in peers {
                if !self.install_permission(&mut inner, peer.ip(), own, now) {
                    return Err(Refusal::signed(ErrorCode::INSUFFICIENT_CAPACITY, &auth));
                }
            }
        }
        Ok(Self::finish_signed(Self::success(msg), &auth))
    }

    fn channel_bind(&self, five: FiveTuple, msg: &Message<'_>) -> Result<Vec<u8>, Refusal> {
        let (auth, alloc) = self.authenticate_on(five, msg)?;
        Self::check_unknown(msg, &[XorPeerAddress::TYPE, ChannelNumber::TYPE]).map_err(
            |mut r| {
                r.sign = Some((auth.creds.clone(), auth.algo));
                r
            },
        )?;
        let Ok(ch) = msg.attribute::<ChannelNumber>() else {
            return Err(Refusal::signed(ErrorCode::BAD_REQUEST, &auth));
        };
        let ch = ch.channel();
        if !(0x4000..=0x4fff).contains(&ch) {
            return Err(Refusal::signed(ErrorCode::BAD_REQUEST, &auth));
        }
        let peers = self.peers(msg, &auth)?;
        let [(peer, own)] = peers[..] else {
            return Err(Refusal::signed(ErrorCode::BAD_REQUEST, &auth));
        };
        let now = Instant::now();
        let mut inner = lock(&alloc.inner);
        match (inner.channels.get(&ch), inner.peer_channel.get(&peer)) {
            (Some((p, _)), _) if *p != peer => {
                return Err(Refusal::signed(ErrorCode::BAD_REQUEST, &auth));
            }
            (_, Some(c)) if *c != ch => {
                return Err(Refusal::signed(ErrorCode::BAD_REQUEST, &auth));
            }
            (None, _) => {
                let AllocInner {
                    channels,
                    peer_channel,
                    ..
                } = &mut *inner;
                channels.retain(|c, (p, exp)| {
                    let live = *exp > now;
                    if !live {
                        peer_channel.remove(p);
                    }
                    let _ = c;
                    live
                });
                if inner.channels.len() >= self.settings.max_permissions {
                    return Err(Refusal::signed(ErrorCode::INSUFFICIENT_CAPACITY, &auth));
                }
            }
            _ => {}
        }
        if !self.install_permission(&mut inner, peer.ip(), own, now) {
            return Err(Refusal::signed(ErrorCode::INSUFFICIENT_CAPACITY, &auth));
        }
        inner.channels.insert(ch, (peer, now + CHANNEL_LIFETIME));
        inner.peer_channel.insert(peer, ch);
        drop(inner);
        Ok(Self::finish_signed(Self::success(msg), &auth))
    }

    fn send_indication(&self, five: FiveTuple, msg: &Message<'_>) {
        let (Ok(p), Ok(d)) = (
            msg.attribute::<XorPeerAddress>(),
            msg.attribute::<DataAttr>(),
        ) else {
            bump(&self.counters.malformed);
            return;
        };
        let peer = p.addr(msg.transaction_id());
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        let Some(alloc) = self.allocation(&five) else {
            bump(&self.counters.dropped_no_permission);
            return;
        };
        let now = Instant::now();
        {
            let mut inner = lock(&alloc.inner);
            if !self.admit(&mut inner, peer, d.data().len(), now) {
                return;
            }
        }
        if alloc.relay.try_send_to(d.data(), peer).is_ok() {
            self.counters
                .bytes_to_peers
                .fetch_add(d.data().len() as u64, Ordering::Relaxed);
        }
    }

    /// Receives on one allocation's relay socket until it is removed.
    async fn relay_loop(self: Arc<Self>, a: Arc<Allocation>) {
        let mut buf = vec![0u8; MAX_RELAY_DATAGRAM];
        loop {
            let (n, peer) = tokio::select! {
                _ = a.cancel.cancelled() => return,
                r = a.relay.recv_from(&mut buf) => match r {
                    Ok(x) => x,
                    Err(_) => continue,
                },
            };
            let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
            let now = Instant::now();
            let channel = {
                let mut inner = lock(&a.inner);
                if !self.admit(&mut inner, peer, n, now) {
                    continue;
                }
                inner
                    .peer_channel
                    .get(&peer)
                    .copied()
                    .filter(|c| inner.channels.get(c).is_some_and(|(_, e)| *e > now))
            };
            let payload = &buf[..n];
            let out = match channel {
                Some(ch) => channel_data(ch, payload, a.sink.is_stream()),
                None => {
                    let mut b =
                        Message::builder_indication(DATA, MessageWriteVec::with_capacity(n + 36));
                    let tid = b.transaction_id();
                    let _ = b.add_attribute(&XorPeerAddress::new(peer, tid));
                    let _ = b.add_attribute(&DataAttr::new(payload));
                    b.finish()
                }
            };
            if a.sink.send(out) {
                self.counters
                    .bytes_to_clients
                    .fetch_add(n as u64, Ordering::Relaxed);
            }
        }
    }

    /// Drops expired allocations, permissions and channels. Called about once a second.
    pub(crate) fn sweep(&self) {
        let now = Instant::now();
        let all: Vec<Arc<Allocation>> = lock(&self.state).allocations.values().cloned().collect();
        for a in all {
            let expired = {
                let mut inner = lock(&a.inner);
                inner.permissions.retain(|_, p| p.expires > now);
                let AllocInner {
                    channels,
                    peer_channel,
                    ..
                } = &mut *inner;
                channels.retain(|_, (p, exp)| {
                    let live = *exp > now;
                    if !live {
                        peer_channel.remove(p);
                    }
                    live
                });
                inner.expires <= now
            };
            if expired {
                self.remove(&a.five);
            }
        }
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

/// DONT-FRAGMENT (RFC 8656 §18.8): accepted and ignored.
const DONT_FRAGMENT: AttributeType = AttributeType::new(0x001A);

/// Attributes every authenticated request may carry.
const COMMON: [AttributeType; 6] = [
    Username::TYPE,
    Realm::TYPE,
    Nonce::TYPE,
    MessageIntegrity::TYPE,
    MessageIntegritySha256::TYPE,
    Fingerprint::TYPE,
];

fn has_permission(inner: &AllocInner, policy: &PeerPolicy, peer: SocketAddr, now: Instant) -> bool {
    match inner.permissions.get(&peer.ip()) {
        Some(p) if p.expires > now => !p.own_media_only || policy.permits_addr(peer),
        _ => false,
    }
}

fn burst(rate: u64) -> f64 {
    // Half a second of traffic, at least one full-size datagram.
    (rate as f64 / 2.0).max(65536.0)
}

/// Takes `n` bytes from the allocation's bucket; false when over the bitrate limit.
fn take(b: &mut Bucket, rate: u64, n: usize, now: Instant) -> bool {
    if rate == 0 {
        return true;
    }
    let dt = now.saturating_duration_since(b.last).as_secs_f64();
    b.last = now;
    b.tokens = (b.tokens + dt * rate as f64).min(burst(rate));
    if b.tokens >= n as f64 {
        b.tokens -= n as f64;
        true
    } else {
        false
    }
}

/// A ChannelData message; padded to 4 bytes on streams (RFC 8656 §12.5).
pub(crate) fn channel_data(ch: u16, payload: &[u8], pad: bool) -> Vec<u8> {
    let len = payload.len().min(usize::from(u16::MAX));
    let padded = if pad { len.div_ceil(4) * 4 } else { len };
    let mut out = Vec::with_capacity(4 + padded);
    out.extend_from_slice(&ch.to_be_bytes());
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(&payload[..len]);
    out.resize(4 + padded, 0);
    out
}
