//! Fuzz body of the TURN engine (feature `testing`): arbitrary client frames into
//! [`Shared::handle_client`]. Only unauthenticated paths are reachable this way (random bytes do
//! not carry a valid MESSAGE-INTEGRITY): framing, STUN parsing, attribute walking, Binding,
//! ChannelData and Send indications without an allocation, and the refusals.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, OnceLock};

use tokio::sync::mpsc;
use turn_types::stun::message::Message;

use super::{ClientSink, FiveTuple, RelayAddrs, Shared, Transport};
use crate::turn::policy::PeerPolicy;
use crate::turn::settings::TurnConfig;

fn shared() -> Arc<Shared> {
    static S: OnceLock<Arc<Shared>> = OnceLock::new();
    S.get_or_init(|| {
        let config = TurnConfig::default();
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let policy = PeerPolicy::new(&config.deny_peers, &config.allow_peers, [], []);
        let relay = RelayAddrs {
            bind: lo,
            public: lo,
        };
        Arc::new(Shared::new(
            config,
            b"fuzz-secret".to_vec(),
            relay,
            policy,
            &[3; 32],
        ))
    })
    .clone()
}

/// The input's first byte picks the transport and whether the rest is sent raw or behind a
/// well-formed STUN header (type from the next two bytes, a consistent length, the magic cookie),
/// so the parser walks into the attributes. Property: no panic, and every reply is a STUN
/// message answering the request's transaction.
pub fn fuzz_turn_message(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let transport = match sel % 3 {
        0 => Transport::Udp,
        1 => Transport::Tcp,
        _ => Transport::Tls,
    };
    let frame = if sel & 0x80 != 0 && rest.len() >= 2 {
        let (ty, attrs) = rest.split_at(2);
        let n = attrs.len().min(1200) & !3;
        let mut m = vec![ty[0] & 0x3f, ty[1]];
        m.extend_from_slice(&(n as u16).to_be_bytes());
        m.extend_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
        m.extend_from_slice(&[sel; 12]);
        m.extend_from_slice(&attrs[..n]);
        m
    } else {
        rest.to_vec()
    };
    let five = FiveTuple {
        transport,
        client: SocketAddr::new(Ipv4Addr::new(192, 0, 2, 1).into(), 40000 + u16::from(sel)),
        server: SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 3478),
    };
    let (tx, mut rx) = mpsc::channel(16);
    let sink = ClientSink::Stream(tx, Arc::new(AtomicUsize::new(0)));
    shared().handle_client(five, &sink, &frame);
    while let Ok(reply) = rx.try_recv() {
        let m = Message::from_bytes(&reply).expect("every reply is a well-formed STUN message");
        let req = Message::from_bytes(&frame).expect("only a parsed request is answered");
        assert_eq!(m.transaction_id(), req.transaction_id());
    }
}
