//! Permissions and channel bindings (RFC 8656 §9, §12): CreatePermission, ChannelBind, their
//! lifetimes and the cap per allocation, and the peer policy check that guards both.
//!
//! Owns an allocation's permission and channel tables (inside its `AllocInner`). It must never
//! install a permission for a peer the [`PeerPolicy`] denies, nor let an own-media-only IP be
//! reached at any port but the Workers' (checked again per packet by [`has_permission`]).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use turn_types::attribute::{ChannelNumber, XorPeerAddress};
use turn_types::stun::attribute::ErrorCode;
use turn_types::stun::message::Message;
use turn_types::stun::prelude::{Attribute, AttributeStaticType};

use super::allocations::AllocInner;
use super::auth::{Authed, Refusal};
use super::{FiveTuple, Shared, lock};
use crate::turn::policy::{PeerPolicy, PeerVerdict};

/// Permission lifetime (RFC 8656 §9).
const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
/// Channel binding lifetime (RFC 8656 §12).
const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);

/// A permission for one peer IP.
pub(super) struct Permission {
    pub(super) expires: Instant,
    /// The IP is one of the gateway's own: only the Workers' media ports may be reached.
    own_media_only: bool,
}

impl AllocInner {
    /// Forgets expired channel bindings (both directions of the map).
    pub(super) fn prune_channels(&mut self, now: Instant) {
        let Self {
            channels,
            peer_channel,
            ..
        } = self;
        channels.retain(|_, (p, exp)| {
            let live = *exp > now;
            if !live {
                peer_channel.remove(p);
            }
            live
        });
    }
}

impl Shared {
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
            if peer.is_ipv6() != self.relay.public.is_ipv6() {
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
            if inner.permissions.len() >= self.config.max_permissions_per_allocation as usize {
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

    pub(super) fn create_permission(
        &self,
        five: FiveTuple,
        msg: &Message<'_>,
    ) -> Result<Vec<u8>, Refusal> {
        let (auth, alloc) = self.authenticate_on(five, msg, &[XorPeerAddress::TYPE])?;
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

    pub(super) fn channel_bind(
        &self,
        five: FiveTuple,
        msg: &Message<'_>,
    ) -> Result<Vec<u8>, Refusal> {
        let known = [XorPeerAddress::TYPE, ChannelNumber::TYPE];
        let (auth, alloc) = self.authenticate_on(five, msg, &known)?;
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
                inner.prune_channels(now);
                if inner.channels.len() >= self.config.max_permissions_per_allocation as usize {
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
}

/// Whether a packet may pass between the allocation and `peer` (a live permission for its IP,
/// and for an own-media-only IP, exactly a Worker's media address).
pub(super) fn has_permission(
    inner: &AllocInner,
    policy: &PeerPolicy,
    peer: SocketAddr,
    now: Instant,
) -> bool {
    match inner.permissions.get(&peer.ip()) {
        Some(p) if p.expires > now => !p.own_media_only || policy.permits_addr(peer),
        _ => false,
    }
}
