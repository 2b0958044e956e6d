//! Demultiplexing: which Session a datagram from the Worker's UDP socket, or a frame from one of its
//! TCP connections, belongs to.
//!
//! Owns the two indexes (transport and remote address, then local ICE ufrag), the rule choosing
//! which (at most 8) remote addresses a Session routes, and the tiny STUN
//! parser that reads the USERNAME attribute. The Worker's local address is the same for every
//! entry of a transport, so (transport, remote address) is the 5-tuple. It must never scan
//! Sessions and never panic on any input bytes.

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::keys::SessionKey;
use crate::model::Transport;

/// Remote-address and ufrag indexes. Both keys come from the network or from SDP the Peer chose,
/// so they use the default SipHash (resistant to hash flooding).
#[derive(Debug, Default)]
pub(crate) struct Demux {
    by_addr: HashMap<(Transport, SocketAddr), SessionKey>,
    by_ufrag: HashMap<String, SessionKey>,
}

impl Demux {
    pub(crate) fn insert_ufrag(&mut self, ufrag: String, key: SessionKey) {
        self.by_ufrag.insert(ufrag, key);
    }

    pub(crate) fn insert_addr(&mut self, addr: (Transport, SocketAddr), key: SessionKey) {
        self.by_addr.insert(addr, key);
    }

    /// Removes one remote address (a TCP connection that closed); returns its Session.
    pub(crate) fn remove_addr(&mut self, addr: (Transport, SocketAddr)) -> Option<SessionKey> {
        self.by_addr.remove(&addr)
    }

    /// Removes one remote address if it routes to `key` (an address a Session evicted).
    pub(crate) fn remove_addr_of(&mut self, addr: (Transport, SocketAddr), key: SessionKey) {
        if self.by_addr.get(&addr) == Some(&key) {
            self.by_addr.remove(&addr);
        }
    }

    /// Removes every entry of a Session.
    pub(crate) fn remove(
        &mut self,
        ufrag: &str,
        addrs: &[(Transport, SocketAddr)],
        key: SessionKey,
    ) {
        if self.by_ufrag.get(ufrag) == Some(&key) {
            self.by_ufrag.remove(ufrag);
        }
        for a in addrs {
            if self.by_addr.get(a) == Some(&key) {
                self.by_addr.remove(a);
            }
        }
    }

    /// Finds the Session for a datagram: by source address, else (for a STUN request) by the local
    /// ufrag in its USERNAME. The caller confirms with `Rtc::accepts`.
    pub(crate) fn route(
        &self,
        transport: Transport,
        source: SocketAddr,
        buf: &[u8],
    ) -> Option<(SessionKey, bool)> {
        if let Some(k) = self.by_addr.get(&(transport, source)) {
            return Some((*k, false));
        }
        let ufrag = stun_local_ufrag(buf)?;
        // USERNAME is valid UTF-8 only if the Peer behaves; a lossy key can never match ours.
        let ufrag = std::str::from_utf8(ufrag).ok()?;
        self.by_ufrag.get(ufrag).map(|k| (*k, true))
    }

    /// Every Session an index entry points at (for invariant checks).
    #[cfg(feature = "testing")]
    pub(crate) fn targets(&self) -> impl Iterator<Item = SessionKey> + '_ {
        self.by_addr.values().chain(self.by_ufrag.values()).copied()
    }

    pub(crate) fn len(&self) -> (usize, usize) {
        (self.by_addr.len(), self.by_ufrag.len())
    }
}

/// Most remote addresses routed to one Session (see [`admit_addr`]). A Peer checks a few pairs
/// at once (one per local interface and transport); older ones are evicted as it roams.
const MAX_ADDRS_PER_SESSION: usize = 8;

/// Adds `addr` as the most recently checked address of a Session. With `MAX_ADDRS_PER_SESSION`
/// already routed, the least recently checked one that is not `keep` (where the Session sends)
/// is evicted and returned; the caller removes it from the demux index.
pub(crate) fn admit_addr(
    addrs: &mut Vec<(Transport, SocketAddr)>,
    keep: Option<(Transport, SocketAddr)>,
    addr: (Transport, SocketAddr),
) -> Option<(Transport, SocketAddr)> {
    if touch_addr(addrs, addr) {
        return None;
    }
    let mut evicted = None;
    if addrs.len() >= MAX_ADDRS_PER_SESSION {
        let i = addrs.iter().position(|a| Some(*a) != keep).unwrap_or(0);
        evicted = Some(addrs.remove(i));
    }
    addrs.push(addr);
    evicted
}

/// Moves a routed address to the back (most recently checked). False if it is not routed.
pub(crate) fn touch_addr(
    addrs: &mut Vec<(Transport, SocketAddr)>,
    addr: (Transport, SocketAddr),
) -> bool {
    let Some(i) = addrs.iter().position(|a| *a == addr) else {
        return false;
    };
    if i + 1 != addrs.len() {
        let a = addrs.remove(i);
        addrs.push(a);
    }
    true
}

/// Whether the bytes look like a STUN message (RFC 7983: first byte 0–3, then the magic cookie).
pub(crate) fn is_stun(buf: &[u8]) -> bool {
    buf.len() >= 20 && buf[0] < 4 && buf[4..8] == [0x21, 0x12, 0xA4, 0x42]
}

const STUN_MAGIC: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
const STUN_ATTR_USERNAME: u16 = 0x0006;

/// For a STUN message, returns the part of USERNAME before `:` (the receiver's ufrag, i.e. ours).
/// Returns `None` for anything else. Pure, bounds-checked, never panics.
pub fn stun_local_ufrag(buf: &[u8]) -> Option<&[u8]> {
    if buf.len() < 20 || buf[0] & 0xC0 != 0 || buf[4..8] != STUN_MAGIC {
        return None;
    }
    let body_len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
    let body = buf.get(20..20 + body_len)?;
    let mut at = 0usize;
    while at + 4 <= body.len() {
        let typ = u16::from_be_bytes([body[at], body[at + 1]]);
        let len = u16::from_be_bytes([body[at + 2], body[at + 3]]) as usize;
        let value = body.get(at + 4..at + 4 + len)?;
        if typ == STUN_ATTR_USERNAME {
            let end = value.iter().position(|b| *b == b':').unwrap_or(value.len());
            return Some(&value[..end]);
        }
        // Attributes are padded to a multiple of four bytes.
        at += 4 + len.div_ceil(4) * 4;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stun_with_username(user: &[u8]) -> Vec<u8> {
        let mut attr = vec![0x00, 0x06];
        attr.extend_from_slice(&(user.len() as u16).to_be_bytes());
        attr.extend_from_slice(user);
        while attr.len() % 4 != 0 {
            attr.push(0);
        }
        let mut m = vec![0x00, 0x01];
        m.extend_from_slice(&(attr.len() as u16).to_be_bytes());
        m.extend_from_slice(&STUN_MAGIC);
        m.extend_from_slice(&[7; 12]);
        m.extend_from_slice(&attr);
        m
    }

    #[test]
    fn reads_the_local_ufrag() {
        let m = stun_with_username(b"ours:theirs");
        assert_eq!(stun_local_ufrag(&m), Some(&b"ours"[..]));
    }

    #[test]
    fn never_panics_on_truncations_or_noise() {
        let m = stun_with_username(b"abcdefgh:ijkl");
        for n in 0..m.len() {
            let _ = stun_local_ufrag(&m[..n]);
        }
        // A deterministic pseudo-random sweep (xorshift) over lengths and bytes.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 96) as usize;
            let mut buf: Vec<u8> = (0..len).map(|i| (x >> (i % 8 * 8)) as u8).collect();
            if len >= 8 {
                buf[0] &= 0x3F;
                buf[4..8].copy_from_slice(&STUN_MAGIC);
            }
            let _ = stun_local_ufrag(&buf);
        }
    }

    #[test]
    fn routes_by_address_first_then_ufrag_and_forgets_on_remove() {
        let mut d = Demux::default();
        let a: SocketAddr = "192.0.2.1:1000".parse().unwrap();
        let udp = (Transport::Udp, a);
        d.insert_ufrag("ours".into(), SessionKey::test(1));
        let m = stun_with_username(b"ours:theirs");
        assert_eq!(
            d.route(Transport::Udp, a, &m),
            Some((SessionKey::test(1), true))
        );
        d.insert_addr(udp, SessionKey::test(1));
        assert_eq!(
            d.route(Transport::Udp, a, b"rtp"),
            Some((SessionKey::test(1), false))
        );
        d.remove("ours", &[udp], SessionKey::test(1));
        assert_eq!(d.route(Transport::Udp, a, &m), None);
        assert_eq!(d.len(), (0, 0));
    }

    #[test]
    fn a_new_address_evicts_the_least_recently_checked_but_never_the_one_in_use() {
        let a = |i: u16| (Transport::Udp, SocketAddr::from(([192, 0, 2, 1], i)));
        let mut addrs = Vec::new();
        for i in 0..MAX_ADDRS_PER_SESSION as u16 {
            assert_eq!(admit_addr(&mut addrs, None, a(i)), None);
        }
        // 0 is the oldest, but the Session sends to it: 1 goes instead.
        assert_eq!(admit_addr(&mut addrs, Some(a(0)), a(100)), Some(a(1)));
        // A check on 2 makes it the most recent: 3 is the next to go.
        assert!(touch_addr(&mut addrs, a(2)));
        assert_eq!(admit_addr(&mut addrs, Some(a(0)), a(101)), Some(a(3)));
        // Known addresses are only touched.
        assert_eq!(admit_addr(&mut addrs, Some(a(0)), a(100)), None);
        assert_eq!(addrs.len(), MAX_ADDRS_PER_SESSION);
        assert!(!touch_addr(&mut addrs, a(1)));
    }

    #[test]
    fn the_transport_is_part_of_the_address_key() {
        let mut d = Demux::default();
        let a: SocketAddr = "192.0.2.1:1000".parse().unwrap();
        d.insert_addr((Transport::Udp, a), SessionKey::test(1));
        d.insert_addr((Transport::Tcp, a), SessionKey::test(2));
        assert_eq!(
            d.route(Transport::Udp, a, b"rtp"),
            Some((SessionKey::test(1), false))
        );
        assert_eq!(
            d.route(Transport::Tcp, a, b"rtp"),
            Some((SessionKey::test(2), false))
        );
        assert_eq!(
            d.remove_addr((Transport::Tcp, a)),
            Some(SessionKey::test(2))
        );
        assert_eq!(d.route(Transport::Tcp, a, b"rtp"), None);
        assert_eq!(
            d.route(Transport::Udp, a, b"rtp"),
            Some((SessionKey::test(1), false))
        );
    }
}
