//! The data path of allocations: ChannelData and Send indications from clients to peers, the
//! relay socket's receive task toward the client (ChannelData when a channel is bound, else a
//! Data indication), and the per-allocation bitrate limit (`max_relay_bitrate_kbps`, a token
//! bucket over both directions).
//!
//! It never blocks and never relays without a live permission: every packet passes
//! [`Shared::admit`]; a full socket or client queue drops the packet.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use turn_types::attribute::{Data as DataAttr, XorPeerAddress};
use turn_types::message::DATA;
use turn_types::stun::message::{Message, MessageWriteExt, MessageWriteVec};
use turn_types::stun::prelude::MessageWrite;

use super::allocations::{AllocInner, Allocation};
use super::permissions::has_permission;
use super::{FiveTuple, Shared, bump, lock};

/// Largest datagram read from a relay socket.
const MAX_RELAY_DATAGRAM: usize = 65536;

/// An allocation's bitrate budget: bytes it may still relay, refilled at the configured rate.
pub(super) struct Bucket {
    pub(super) tokens: f64,
    pub(super) last: Instant,
}

impl Shared {
    /// Bytes per second an allocation may relay; 0 = unlimited.
    pub(super) fn rate_bytes(&self) -> u64 {
        u64::from(self.config.max_relay_bitrate_kbps) * 125
    }

    /// Whether `len` bytes may be relayed between the client and `peer` now (either way): a live
    /// permission for `peer` and room in the allocation's bitrate budget (taken). A refusal is
    /// counted.
    fn admit(&self, inner: &mut AllocInner, peer: SocketAddr, len: usize, now: Instant) -> bool {
        if !has_permission(inner, &self.policy, peer, now) {
            bump(&self.counters.dropped_no_permission);
            return false;
        }
        if !take(&mut inner.bucket, self.rate_bytes(), len, now) {
            bump(&self.counters.dropped_rate);
            return false;
        }
        true
    }

    /// ChannelData from a client: to the channel's peer.
    pub(super) fn client_channel_data(&self, five: FiveTuple, data: &[u8]) {
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

    /// A Send indication from a client: to its XOR-PEER-ADDRESS.
    pub(super) fn send_indication(&self, five: FiveTuple, msg: &Message<'_>) {
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
    pub(super) async fn relay_loop(self: Arc<Self>, a: Arc<Allocation>) {
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
}

/// The bucket's depth: half a second of traffic, at least one full-size datagram.
pub(super) fn burst(rate: u64) -> f64 {
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
