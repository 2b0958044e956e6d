//! Allocations (RFC 8656 §7): Allocate and Refresh, the relay port range, the quotas
//! (`max_allocations`, `max_allocations_per_identity`) and the lifetime an allocation may get.
//!
//! Owns each [`Allocation`]'s record and its relay socket's place in the port range; its
//! permissions and channels are `permissions`' business, its data path `relay`'s. A granted
//! lifetime never exceeds `allocation_max_lifetime_secs`, nor the credential's expiry unless the
//! identity is a live Session (see `auth` and `sessions`).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use turn_types::AddressFamily;
use turn_types::attribute::{
    EvenPort, Lifetime, RequestedAddressFamily, RequestedTransport, ReservationToken,
    XorRelayedAddress,
};
use turn_types::stun::attribute::{ErrorCode, XorMappedAddress};
use turn_types::stun::message::{Message, MessageWriteExt, TransactionId};
use turn_types::stun::prelude::AttributeStaticType;

use super::auth::{Authed, DONT_FRAGMENT, Refusal};
use super::permissions::Permission;
use super::relay::{Bucket, burst};
use super::{ClientSink, FiveTuple, Shared, bump, lock};

/// Default allocation lifetime (RFC 8656 §3.2).
const DEFAULT_LIFETIME: u32 = 600;

/// The mutable part of an allocation, under its own lock.
pub(super) struct AllocInner {
    pub(super) expires: Instant,
    pub(super) permissions: HashMap<IpAddr, Permission>,
    /// Channel number → (peer, expiry), and its inverse.
    pub(super) channels: HashMap<u16, (SocketAddr, Instant)>,
    pub(super) peer_channel: HashMap<SocketAddr, u16>,
    pub(super) bucket: Bucket,
}

/// One allocation: a client's 5-tuple, the credential it was made with, its relay socket.
pub(crate) struct Allocation {
    pub(super) five: FiveTuple,
    pub(super) username: String,
    pub(super) identity: String,
    txid: TransactionId,
    pub(super) relay: Arc<UdpSocket>,
    /// The relayed transport address (its port is the relay socket's port in the range).
    pub(super) relay_public: SocketAddr,
    pub(super) sink: ClientSink,
    pub(super) inner: Mutex<AllocInner>,
    pub(super) cancel: CancellationToken,
}

impl Shared {
    pub(super) fn allocate(
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
            &auth,
        )?;
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
        if want_v6 != self.relay.public.is_ipv6() {
            return Err(Refusal::signed(
                ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED,
                &auth,
            ));
        }
        let even = msg.has_attribute(EvenPort::TYPE);
        let lifetime = self.granted_lifetime(msg, &auth);

        // Quotas and a port, under the state lock.
        let (relay, port) = {
            let mut st = lock(&self.state);
            // Reserved ports count allocations still being set up by another listener task.
            if st.ports.len() >= self.config.max_allocations as usize
                || st.per_identity.get(&auth.identity).copied().unwrap_or(0)
                    >= self.config.max_allocations_per_identity
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
            relay_public: SocketAddr::new(self.relay.public, port),
            sink: sink.clone(),
            inner: Mutex::new(AllocInner {
                expires: now + Duration::from_secs(u64::from(lifetime)),
                permissions: HashMap::new(),
                channels: HashMap::new(),
                peer_channel: HashMap::new(),
                bucket: Bucket {
                    tokens: burst(self.rate_bytes()),
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
            u32::from(self.config.relay_port_min),
            u32::from(self.config.relay_port_max),
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
            let addr = SocketAddr::new(self.relay.bind, port);
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
            self.release(a.relay_public.port(), &a.identity);
            tracing::debug!(client = %crate::telemetry::Redact(five.client), relay = %a.relay_public, "TURN allocation removed");
        }
    }

    /// Whether `five` has an allocation (stream connections without one time out).
    pub(crate) fn has_allocation(&self, five: &FiveTuple) -> bool {
        lock(&self.state).allocations.contains_key(five)
    }

    pub(super) fn refresh(&self, five: FiveTuple, msg: &Message<'_>) -> Result<Vec<u8>, Refusal> {
        let known = [Lifetime::TYPE, RequestedAddressFamily::TYPE];
        let (auth, alloc) = self.authenticate_on(five, msg, &known)?;
        let lifetime = match msg.attribute::<Lifetime>().map(|l| l.seconds()) {
            Ok(0) => 0,
            _ => self.granted_lifetime(msg, &auth),
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

    /// The lifetime an Allocate or Refresh gets: the one asked for (default 600 s, never less),
    /// at most `allocation_max_lifetime_secs`, and never past the credential's expiry unless the
    /// identity is a live Session (an expired credential of anyone else cannot Refresh, so the
    /// allocation would only linger unusable).
    fn granted_lifetime(&self, msg: &Message<'_>, auth: &Authed) -> u32 {
        msg.attribute::<Lifetime>()
            .map_or(DEFAULT_LIFETIME, |l| l.seconds())
            .max(DEFAULT_LIFETIME)
            .min(self.config.allocation_max_lifetime_secs)
            .min(auth.credential_left)
    }
}
