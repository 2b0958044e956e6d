//! Which peers the embedded TURN server may relay to: CIDR deny and allow lists plus the
//! gateway's own media addresses. Pure functions over addresses; no IO.
//!
//! Decision for a peer IP: allowed if an `allow_peers` range contains it; else, if it is one of
//! the gateway's own IPs (media announce and bind IPs, the relay IP, the TURN listener IPs),
//! reachable only at the Worker media ports; else denied if a `deny_peers` range contains it;
//! else allowed. So a default configuration relays to the SFU and to public addresses, never
//! into private networks, and never to another service on the gateway's own host (its TURN
//! listeners, relay ports, anything else bound there), even when that host's IP is public.
//! Unspecified addresses (`0.0.0.0`, `::`) are never own addresses: sending to them reaches
//! the local host. IPv4-mapped IPv6 addresses are judged as the IPv4 address they carry.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An address range, `ADDR/PREFIX` (a bare address is a single host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| "not an IP address".to_string())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("prefix must be 0 to {max}"))?,
            None => max,
        };
        Ok(Self { addr, prefix })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Written and read as its `ADDR/PREFIX` text, so a bad range in the configuration is refused
/// when it is read, naming the key.
impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|e| serde::de::Error::custom(format!("{s:?}: {e}")))
    }
}

/// The default `turn.deny_peers`: loopback, private, link-local, CGNAT, multicast, reserved and
/// NAT64 ranges of both families.
pub fn default_deny() -> Vec<Cidr> {
    [
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::/128",
        "::1/128",
        "64:ff9b::/96",
        "64:ff9b:1::/48",
        "fc00::/7",
        "fe80::/10",
        "ff00::/8",
    ]
    .iter()
    .filter_map(|c| c.parse().ok())
    .collect()
}

impl Cidr {
    /// Whether `ip` is inside this range (families never mix).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// What may be a peer: see the module docs.
#[derive(Debug, Clone, Default)]
pub struct PeerPolicy {
    deny: Vec<Cidr>,
    allow: Vec<Cidr>,
    own: HashSet<SocketAddr>,
    own_ips: HashSet<IpAddr>,
}

/// The verdict for a peer IP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerVerdict {
    /// Any port of this IP.
    Allowed,
    /// Only the gateway's own media ports on this IP.
    OwnMediaOnly,
    /// Nothing.
    Denied,
}

impl PeerPolicy {
    /// Takes the lists and records the gateway's media addresses and the other IPs of its host
    /// (`own_hosts`: relay and listener IPs), which are reachable only at the media ports.
    pub fn new(
        deny: &[Cidr],
        allow: &[Cidr],
        own_media: impl IntoIterator<Item = SocketAddr>,
        own_hosts: impl IntoIterator<Item = IpAddr>,
    ) -> Self {
        let own: HashSet<SocketAddr> = own_media
            .into_iter()
            .map(|a| SocketAddr::new(a.ip().to_canonical(), a.port()))
            .filter(|a| !a.ip().is_unspecified())
            .collect();
        let own_ips = own
            .iter()
            .map(|a| a.ip())
            .chain(own_hosts.into_iter().map(|ip| ip.to_canonical()))
            .filter(|ip| !ip.is_unspecified())
            .collect();
        Self {
            deny: deny.to_vec(),
            allow: allow.to_vec(),
            own_ips,
            own,
        }
    }

    /// The verdict for a peer IP (CreatePermission, ChannelBind).
    pub fn verdict(&self, ip: IpAddr) -> PeerVerdict {
        let ip = ip.to_canonical();
        if self.allow.iter().any(|c| c.contains(ip)) {
            PeerVerdict::Allowed
        } else if self.own_ips.contains(&ip) {
            PeerVerdict::OwnMediaOnly
        } else if self.deny.iter().any(|c| c.contains(ip)) {
            PeerVerdict::Denied
        } else {
            PeerVerdict::Allowed
        }
    }

    /// Whether a packet may go to exactly `addr` (checked per packet for `OwnMediaOnly` IPs).
    pub fn permits_addr(&self, addr: SocketAddr) -> bool {
        match self.verdict(addr.ip()) {
            PeerVerdict::Allowed => true,
            PeerVerdict::OwnMediaOnly => self
                .own
                .contains(&SocketAddr::new(addr.ip().to_canonical(), addr.port())),
            PeerVerdict::Denied => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_policy(own: &[&str]) -> PeerPolicy {
        PeerPolicy::new(
            &default_deny(),
            &[],
            own.iter().map(|a| a.parse().unwrap()),
            [],
        )
    }

    #[test]
    fn defaults_deny_private_and_allow_public() {
        let p = default_policy(&["127.0.0.1:40000"]);
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.0.1",
            "100.64.0.1",
            "100.127.255.255",
            "0.1.2.3",
            "224.0.0.251",
            "::1",
            "fd00::2",
            "fe80::1",
            "ff02::1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.2",
            "64:ff9b::a00:1",
            "64:ff9b:1::7f00:1",
            "240.0.0.1",
            "198.18.0.1",
        ] {
            assert_ne!(
                p.verdict(ip.parse().unwrap()),
                PeerVerdict::Allowed,
                "{ip} must be denied"
            );
        }
        for ip in ["8.8.8.8", "172.32.0.1", "100.128.0.1", "2001:db8::1"] {
            assert_eq!(p.verdict(ip.parse().unwrap()), PeerVerdict::Allowed, "{ip}");
        }
        assert_eq!(
            p.verdict("127.0.0.1".parse().unwrap()),
            PeerVerdict::OwnMediaOnly
        );
        assert!(p.permits_addr("127.0.0.1:40000".parse().unwrap()));
        assert!(p.permits_addr("[::ffff:127.0.0.1]:40000".parse().unwrap()));
        assert!(!p.permits_addr("127.0.0.1:40001".parse().unwrap()));
        assert!(!p.permits_addr("127.0.0.2:40000".parse().unwrap()));
    }

    #[test]
    fn allow_overrides_deny() {
        let p = PeerPolicy::new(&default_deny(), &["127.0.0.0/8".parse().unwrap()], [], []);
        assert!(p.permits_addr("127.0.0.1:9".parse().unwrap()));
        assert!(!p.permits_addr("10.0.0.1:9".parse().unwrap()));
    }

    #[test]
    fn own_public_ips_reach_only_the_media_ports() {
        // A gateway on a public IP: its other services (TURN listener, relay ports, anything
        // bound on the host) must not be reachable through the relay.
        let p = PeerPolicy::new(
            &default_deny(),
            &[],
            ["203.0.113.5:40000".parse().unwrap()],
            ["203.0.113.6".parse().unwrap()],
        );
        assert!(p.permits_addr("203.0.113.5:40000".parse().unwrap()));
        assert!(p.permits_addr("[::ffff:203.0.113.5]:40000".parse().unwrap()));
        for a in [
            "203.0.113.5:3478",
            "203.0.113.5:53",
            "[::ffff:203.0.113.5]:3478",
            "203.0.113.6:40000",
            "203.0.113.6:50000",
        ] {
            assert!(!p.permits_addr(a.parse().unwrap()), "{a}");
        }
        assert_eq!(
            p.verdict("203.0.113.6".parse().unwrap()),
            PeerVerdict::OwnMediaOnly
        );
        assert!(p.permits_addr("203.0.113.7:3478".parse().unwrap()));
    }

    #[test]
    fn unspecified_bind_addresses_are_not_own_addresses() {
        // Media bound on 0.0.0.0: sending to 0.0.0.0 would reach the local host.
        let p = PeerPolicy::new(
            &default_deny(),
            &[],
            [
                "0.0.0.0:40000".parse().unwrap(),
                "[::]:40000".parse().unwrap(),
            ],
            ["0.0.0.0".parse().unwrap()],
        );
        for a in ["0.0.0.0:40000", "[::]:40000", "[::ffff:0.0.0.0]:40000"] {
            assert!(!p.permits_addr(a.parse().unwrap()), "{a}");
            assert_eq!(
                p.verdict(a.parse::<SocketAddr>().unwrap().ip()),
                PeerVerdict::Denied
            );
        }
    }

    #[test]
    fn the_default_deny_list_parses_whole() {
        assert_eq!(default_deny().len(), 18);
        assert_eq!(default_deny()[1].to_string(), "10.0.0.0/8");
        assert_eq!("1.2.3.4".parse::<Cidr>().unwrap().to_string(), "1.2.3.4/32");
    }

    #[test]
    fn cidr_parsing() {
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nope/8".parse::<Cidr>().is_err());
        assert!(
            "::/0"
                .parse::<Cidr>()
                .unwrap()
                .contains("2001::1".parse().unwrap())
        );
        assert!(
            "0.0.0.0/0"
                .parse::<Cidr>()
                .unwrap()
                .contains("1.2.3.4".parse().unwrap())
        );
        assert!(
            !"0.0.0.0/0"
                .parse::<Cidr>()
                .unwrap()
                .contains("::1".parse().unwrap())
        );
        assert!(
            "1.2.3.4"
                .parse::<Cidr>()
                .unwrap()
                .contains("1.2.3.4".parse().unwrap())
        );
    }
}
