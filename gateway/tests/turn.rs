//! The embedded TURN server over real sockets on 127.0.0.1, driven by a TURN client written on
//! the `turn-types` codec (wire format as RFC 8656 / RFC 8489 define it; `turn/client.rs`).
//! This file: binding, authentication, relaying over UDP, TCP and TLS, malformed input, the
//! CreateSession credentials and start-up. Under `turn/`: `policy.rs` (denied peers, quotas,
//! lifetimes, bitrate), `sessions.rs` (credentials tied to Sessions, revocation), `streams.rs`
//! (stream connection slots and the first-request deadline), `interop.rs` (a real coturn accepts
//! the gateway's credentials).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use switchboard_gateway::turn::{mint_credential, password_for};
use switchboard_gateway::{Config, Gateway};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use turn_types::attribute::{
    ChannelNumber, Data as DataAttr, Lifetime, RequestedTransport, XorPeerAddress,
    XorRelayedAddress,
};
use turn_types::channel::ChannelData;
use turn_types::message::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, DATA, REFRESH, SEND};
use turn_types::stun::attribute::{ErrorCode, Nonce, Realm, Username, XorMappedAddress};
use turn_types::stun::message::{
    BINDING, IntegrityAlgorithm, LongTermKeyCredentials, Message, MessageClass,
    MessageIntegrityCredentials, MessageWriteExt, MessageWriteVec, Method, TransactionId,
};
use turn_types::stun::prelude::MessageWrite;

#[path = "turn/client.rs"]
mod client;
mod common;
#[path = "turn/interop.rs"]
mod interop;
#[path = "turn/policy.rs"]
mod policy;
#[path = "turn/sessions.rs"]
mod sessions;
#[path = "turn/streams.rs"]
mod streams;

const SECRET: &str = "test-secret";
const REALM: &str = "test.local";
const WAIT: Duration = Duration::from_secs(5);

use client::{Conn, Relayed, TurnClient};

// ---------------------------------------------------------------------------------------------
// Helpers.

/// A UDP peer on 127.0.0.1 that echoes every datagram back to its sender.
async fn echo_peer() -> SocketAddr {
    echo_peer_on("127.0.0.1").await
}

/// An echo peer on another loopback address (permissions are per IP address).
async fn echo_peer_on(ip: &str) -> SocketAddr {
    let s = UdpSocket::bind((ip, 0)).await.unwrap();
    let addr = s.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = s.recv_from(&mut buf).await {
            let _ = s.send_to(&buf[..n], from).await;
        }
    });
    addr
}

fn config() -> Config {
    let mut c = switchboard_integration_tests::test_config();
    c.media.workers = 1;
    c.turn.secret = SECRET.into();
    c.turn.realm = REALM.into();
    c.turn.allow_peers = vec!["127.0.0.0/8".parse().unwrap()];
    c.turn.relay_port_min = 42000;
    c.turn.relay_port_max = 42999;
    c
}

/// A gateway with [`config`] changed by `f`, and its TURN addresses.
async fn start_with(
    f: impl FnOnce(&mut Config),
) -> (Gateway, switchboard_gateway::turn::TurnAddrs) {
    let mut c = config();
    f(&mut c);
    let gw = Gateway::start(c).await.unwrap();
    let a = gw.turn_addrs().unwrap();
    (gw, a)
}

fn creds(identity: &str) -> (String, String) {
    let c = mint_credential(
        SECRET.as_bytes(),
        identity,
        Duration::from_secs(600),
        SystemTime::now(),
    );
    (c.username, c.password)
}

/// The full relay check: permission, Send -> peer -> Data, ChannelBind, ChannelData both ways.
async fn relay_both_ways(c: &mut TurnClient, relayed: SocketAddr, tag: &str) {
    let peer = echo_peer().await;
    c.create_permission(peer).await.expect("CreatePermission");
    let msg = format!("hello via send indication {tag}");
    c.send_indication(peer, msg.as_bytes()).await.unwrap();
    assert_eq!(
        c.recv_relayed().await.unwrap(),
        Relayed::Data(peer, msg.clone().into_bytes()),
        "the echo comes back as a Data indication from the peer"
    );
    c.channel_bind(0x4001, peer).await.expect("ChannelBind");
    for len in [1usize, 5, 1200] {
        let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        c.send_channel(0x4001, &payload).await.unwrap();
        assert_eq!(
            c.recv_relayed().await.unwrap(),
            Relayed::Channel(0x4001, payload),
            "ChannelData both ways ({len} bytes)"
        );
    }
    // The peer sees the relayed address as the source.
    let probe = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    c.create_permission(probe.local_addr().unwrap())
        .await
        .unwrap();
    c.send_indication(probe.local_addr().unwrap(), b"who am i")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = tokio::time::timeout(WAIT, probe.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"who am i");
    assert_eq!(
        from, relayed,
        "{tag}: packets leave from the relayed address"
    );
}

// ---------------------------------------------------------------------------------------------
// Tests.

#[tokio::test]
async fn binding_is_answered_on_udp_and_tcp() {
    let gw = Gateway::start(config()).await.unwrap();
    let a = gw.turn_addrs().expect("TURN enabled");
    let mut u = TurnClient::udp(a.udp).await.unwrap();
    let local = match &u.conn {
        Conn::Udp(s) => s.local_addr().unwrap(),
        _ => unreachable!(),
    };
    assert_eq!(u.binding().await.unwrap(), local);
    let mut t = TurnClient::tcp(a.tcp).await.unwrap();
    assert!(t.binding().await.unwrap().ip().is_loopback());
    assert!(gw.turn().unwrap().stats().bindings_answered >= 2);
    gw.shutdown().await;
}

#[tokio::test]
async fn allocation_without_or_with_bad_credentials_is_refused() {
    let (gw, a) = start_with(|_| {}).await;

    // No credentials: 401 with REALM and NONCE (the long-term challenge).
    let mut c = TurnClient::udp(a.udp).await.unwrap();
    let resp = c.transact_allocate_udp().await.unwrap();
    let m = Message::from_bytes(&resp).unwrap();
    assert_eq!(m.class(), MessageClass::Error);
    assert_eq!(m.attribute::<ErrorCode>().unwrap().code(), 401);
    assert_eq!(m.attribute::<Realm>().unwrap().realm(), REALM);
    assert!(!m.attribute::<Nonce>().unwrap().nonce().is_empty());

    // Wrong password.
    let (user, _) = creds("ss_wrong");
    let mut c = TurnClient::udp(a.udp).await.unwrap();
    assert_eq!(
        c.allocate(&user, "bm90IHRoZSBwYXNzd29yZA==").await,
        Err(401)
    );

    // Right HMAC, wrong secret.
    let other = mint_credential(b"other", "ss_x", Duration::from_secs(60), SystemTime::now());
    let mut c = TurnClient::udp(a.udp).await.unwrap();
    assert_eq!(c.allocate(&other.username, &other.password).await, Err(401));

    // Expired: a credential minted an hour ago for ten minutes.
    let old = mint_credential(
        SECRET.as_bytes(),
        "ss_old",
        Duration::from_secs(600),
        SystemTime::now() - Duration::from_secs(3600),
    );
    assert_eq!(old.password, password_for(SECRET.as_bytes(), &old.username));
    let mut c = TurnClient::udp(a.udp).await.unwrap();
    assert_eq!(c.allocate(&old.username, &old.password).await, Err(401));

    // Not the expiry:identity format.
    let mut c = TurnClient::udp(a.udp).await.unwrap();
    let p = password_for(SECRET.as_bytes(), "alice");
    assert_eq!(c.allocate("alice", &p).await, Err(401));

    // A nonce the server never issued: 438 Stale Nonce with a fresh one (then the client
    // succeeds with it).
    let (u, p) = creds("ss_nonce");
    let mut c = TurnClient::udp(a.udp).await.unwrap();
    c.creds = Some((u.clone(), p.clone()));
    c.realm = REALM.into();
    c.nonce = "00000000ffffffff0123456789abcdef01234567".into();
    let resp = c.transact_allocate_udp().await.unwrap();
    let m = Message::from_bytes(&resp).unwrap();
    assert_eq!(m.attribute::<ErrorCode>().unwrap().code(), 438);
    assert_ne!(c.nonce, "00000000ffffffff0123456789abcdef01234567");
    c.allocate(&u, &p)
        .await
        .expect("allocation with the new nonce");

    // Another (valid) username on an existing allocation: 441 Wrong Credentials.
    let (u2, p2) = creds("ss_intruder");
    c.creds = Some((u2, p2));
    assert_eq!(c.refresh(600).await, Err(441));

    let s = gw.turn().unwrap().stats();
    assert!(s.refused_unauthorized >= 6, "{s:?}");
    assert_eq!(s.allocations, 1);
    gw.shutdown().await;
}

#[tokio::test]
async fn udp_allocation_relays_both_ways_inside_the_port_range() {
    let (gw, a) = start_with(|_| {}).await;
    let (u, p) = creds("ss_udp");
    let mut c = TurnClient::udp(a.udp).await.unwrap();
    let relayed = c.allocate(&u, &p).await.expect("allocation");
    assert!((42000..=42999).contains(&relayed.port()), "{relayed}");
    assert_eq!(
        relayed.ip(),
        "127.0.0.1".parse::<std::net::IpAddr>().unwrap()
    );
    relay_both_ways(&mut c, relayed, "udp").await;

    // Without a permission for its IP nothing is relayed: the Send is dropped and counted. The
    // Refresh after it is answered by the same listener task, so the Send has been handled.
    let before = gw.turn().unwrap().stats().dropped_no_permission;
    let stranger = echo_peer_on("127.0.0.2").await;
    c.send_indication(stranger, b"no permission").await.unwrap();
    c.refresh(600).await.unwrap();
    assert_eq!(gw.turn().unwrap().stats().dropped_no_permission, before + 1);

    // A second Allocate on the same 5-tuple is an allocation mismatch.
    assert_eq!(c.allocate(&u, &p).await, Err(437));
    // Refresh with lifetime 0 deletes it.
    c.refresh(0).await.unwrap();
    assert_eq!(c.create_permission(stranger).await, Err(437));
    let s = gw.turn().unwrap().stats();
    assert!(s.bytes_to_peers > 0 && s.bytes_to_clients > 0, "{s:?}");
    assert_eq!(s.allocations, 0);
    gw.shutdown().await;
}

#[tokio::test]
async fn tcp_allocation_relays_both_ways() {
    let (gw, a) = start_with(|_| {}).await;
    let (u, p) = creds("ss_tcp");
    let mut bad = TurnClient::tcp(a.tcp).await.unwrap();
    assert_eq!(
        bad.allocate(&u, "d3Jvbmc=").await,
        Err(401),
        "wrong password over TCP"
    );
    let mut c = TurnClient::tcp(a.tcp).await.unwrap();
    let relayed = c.allocate(&u, &p).await.expect("allocation over TCP");
    assert!((42000..=42999).contains(&relayed.port()));
    relay_both_ways(&mut c, relayed, "tcp").await;
    // Closing the connection ends the allocation.
    drop(c);
    crate_wait(|| gw.turn().unwrap().stats().allocations == 0).await;
    gw.shutdown().await;
}

async fn crate_wait(mut f: impl FnMut() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached");
}

#[tokio::test]
async fn tls_allocation_with_a_self_signed_certificate() {
    let (cert, cp, kp) = common::self_signed_files(
        &["localhost", "127.0.0.1"],
        "sb-turn-tls",
        "cert.pem",
        "key.pem",
    );
    let dir = cp.parent().unwrap().to_path_buf();

    let mut cfg = config();
    cfg.turn.listen_tls = Some("127.0.0.1:0".parse().unwrap());
    cfg.turn.tls_cert = Some(cp);
    cfg.turn.tls_key = Some(kp);
    let gw = Gateway::start(cfg).await.unwrap();
    let tls = gw.turn_addrs().unwrap().tls.expect("TLS listener");
    assert!(
        gw.turn()
            .unwrap()
            .urls()
            .contains(&format!("turns:127.0.0.1:{}?transport=tcp", tls.port())),
        "{:?}",
        gw.turn().unwrap().urls()
    );
    let (u, p) = creds("ss_tls");
    let mut c = TurnClient::tls(tls, cert.der().to_vec()).await.unwrap();
    assert!(c.binding().await.unwrap().ip().is_loopback());
    let relayed = c.allocate(&u, &p).await.expect("allocation over TLS");
    relay_both_ways(&mut c, relayed, "tls").await;
    gw.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn malformed_bytes_never_break_the_server() {
    let (gw, a) = start_with(|_| {}).await;
    let (u, p) = creds("ss_fuzz");
    let mut rng = ChaCha8Rng::seed_from_u64(6);

    // A valid signed Allocate to mutate.
    let mut c = TurnClient::udp(a.udp).await.unwrap();
    let relayed = c.allocate(&u, &p).await.unwrap();
    let valid = {
        let mut b = Message::builder_request(CREATE_PERMISSION, MessageWriteVec::new());
        let tid = b.transaction_id();
        b.add_attribute(&XorPeerAddress::new("127.0.0.1:9".parse().unwrap(), tid))
            .unwrap();
        b.add_attribute(&Username::new(&u).unwrap()).unwrap();
        b.add_attribute(&Realm::new(REALM).unwrap()).unwrap();
        b.add_attribute(&Nonce::new(&c.nonce).unwrap()).unwrap();
        b.finish()
    };

    let fuzz = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for i in 0..3000 {
        let mut pkt = match i % 4 {
            // Truncations of a valid message.
            0 => valid[..(rng.next_u32() as usize % valid.len())].to_vec(),
            // Bit flips in a valid message.
            1 => {
                let mut v = valid.clone();
                for _ in 0..1 + rng.next_u32() % 4 {
                    let at = rng.next_u32() as usize % v.len();
                    v[at] ^= 1 << (rng.next_u32() % 8);
                }
                v
            }
            // Random bytes that look like STUN or ChannelData.
            2 => {
                let mut v = vec![0u8; 20 + rng.next_u32() as usize % 200];
                rng.fill_bytes(&mut v);
                v[0] &= 0x7f;
                if rng.next_u32() % 2 == 0 {
                    // The magic cookie, and a length that matches the datagram.
                    v[4..8].copy_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
                    let len = ((v.len() - 20) & !3) as u16;
                    v[2..4].copy_from_slice(&len.to_be_bytes());
                    v.truncate(20 + usize::from(len));
                }
                v
            }
            _ => {
                let mut v = vec![0u8; rng.next_u32() as usize % 600];
                rng.fill_bytes(&mut v);
                v
            }
        };
        if i % 97 == 0 {
            pkt.clear();
        }
        fuzz.send_to(&pkt, a.udp).await.unwrap();
        // Through the allocated client too, so allocation-bound paths see garbage.
        if i % 3 == 0 {
            c.send_raw(&pkt).await.unwrap();
        }
    }
    // Garbage over TCP closes that connection only.
    for _ in 0..20 {
        let mut s = TcpStream::connect(a.tcp).await.unwrap();
        let mut v = vec![0u8; 1 + rng.next_u32() as usize % 300];
        rng.fill_bytes(&mut v);
        let _ = s.write_all(&v).await;
        let _ = s.shutdown().await;
    }

    // Still serving: Binding, a new allocation, and the old one relays.
    let mut fresh = TurnClient::udp(a.udp).await.unwrap();
    assert!(fresh.binding().await.is_ok());
    let (u2, p2) = creds("ss_after_fuzz");
    fresh
        .allocate(&u2, &p2)
        .await
        .expect("allocation after fuzzing");
    let fresh_relayed = relayed_of(&mut fresh).await;
    relay_both_ways(&mut fresh, fresh_relayed, "after fuzz").await;
    // The allocation that received garbage still relays.
    c.queue.clear();
    let peer = echo_peer().await;
    c.create_permission(peer)
        .await
        .expect("old allocation still works");
    c.send_indication(peer, b"still here").await.unwrap();
    assert_eq!(
        c.recv_relayed().await.unwrap(),
        Relayed::Data(peer, b"still here".to_vec())
    );
    let mut t = TurnClient::tcp(a.tcp).await.unwrap();
    assert!(t.binding().await.is_ok());
    assert!(gw.turn().unwrap().stats().malformed > 0);
    assert!(relayed.ip().is_loopback());
    gw.shutdown().await;
}

/// The relayed address of a client's allocation, by asking a probe peer what it sees.
async fn relayed_of(c: &mut TurnClient) -> SocketAddr {
    let probe = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let at = probe.local_addr().unwrap();
    c.create_permission(at).await.unwrap();
    c.send_indication(at, b"x").await.unwrap();
    let mut buf = [0u8; 8];
    tokio::time::timeout(WAIT, probe.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap()
        .1
}

#[tokio::test]
async fn create_session_returns_turn_urls_with_working_credentials() {
    let mut cfg = config();
    cfg.ice_servers
        .push(switchboard_gateway::config::IceServerConfig {
            urls: vec!["turn:turn.example.com:3478?transport=udp".into()],
            shared_secret: "coturn-secret".into(),
            credential_ttl_secs: 120,
            ..Default::default()
        });
    cfg.ice_servers
        .push(switchboard_gateway::config::IceServerConfig {
            urls: vec!["stun:stun.example.com:3478".into()],
            ..Default::default()
        });
    let gw = Gateway::start(cfg).await.unwrap();
    let a = gw.turn_addrs().unwrap();
    let (sid, ice) = create_session(&gw).await;
    assert_eq!(ice.len(), 3, "{ice:?}");
    let turn = &ice[0];
    assert_eq!(
        turn.urls,
        [
            format!("turn:127.0.0.1:{}?transport=udp", a.udp.port()),
            format!("turn:127.0.0.1:{}?transport=tcp", a.tcp.port()),
        ]
    );
    let (exp, identity) = turn.username.split_once(':').unwrap();
    assert_eq!(identity, sid);
    let exp: u64 = exp.parse().unwrap();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(exp > now && exp <= now + 600 + 5, "ten minutes by default");

    // The minted credentials allocate on UDP and on TCP.
    let mut c = TurnClient::udp(a.udp).await.unwrap();
    c.allocate(&turn.username, &turn.credential)
        .await
        .expect("UDP allocation with CreateSession credentials");
    let mut t = TurnClient::tcp(a.tcp).await.unwrap();
    t.allocate(&turn.username, &turn.credential)
        .await
        .expect("TCP allocation with CreateSession credentials");

    // The external server's credentials are minted with its own secret and TTL.
    let ext = &ice[1];
    assert_eq!(ext.urls, ["turn:turn.example.com:3478?transport=udp"]);
    assert_eq!(
        ext.credential,
        password_for(b"coturn-secret", &ext.username)
    );
    let (exp, identity) = ext.username.split_once(':').unwrap();
    assert_eq!(identity, sid);
    assert!(exp.parse::<u64>().unwrap() <= now + 125);
    // Static entries pass through.
    assert_eq!(ice[2].urls, ["stun:stun.example.com:3478"]);
    assert!(ice[2].username.is_empty());
    gw.shutdown().await;
}

#[tokio::test]
async fn disabled_turn_adds_no_servers_and_binds_nothing() {
    let mut cfg = config();
    cfg.turn.enabled = false;
    // Would fail to bind if it were used.
    cfg.turn.listen_udp = "192.0.2.1:1".parse().unwrap();
    let gw = Gateway::start(cfg).await.unwrap();
    assert!(gw.turn_addrs().is_none());
    let (_, ice) = create_session(&gw).await;
    assert!(ice.is_empty(), "{ice:?}");
    gw.shutdown().await;
}

async fn create_session(gw: &Gateway) -> (String, Vec<switchboard::v1::IceServer>) {
    use switchboard::v1 as pb;
    let url = format!("http://{}", gw.grpc_addr());
    let mut rooms = pb::room_service_client::RoomServiceClient::connect(url.clone())
        .await
        .unwrap();
    let mut sessions = pb::session_service_client::SessionServiceClient::connect(url)
        .await
        .unwrap();
    rooms
        .create_room(pb::CreateRoomRequest {
            room_id: "turnroom".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let r = sessions
        .create_session(pb::CreateSessionRequest {
            room_id: "turnroom".into(),
            participant_id: "alice".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    (r.session.unwrap().session_id, r.ice_servers)
}

#[tokio::test]
async fn start_up_errors_name_the_turn_setting() {
    let mut cfg = config();
    cfg.turn.listen_tls = Some("127.0.0.1:0".parse().unwrap());
    cfg.turn.tls_cert = Some("/nonexistent/turn.crt".into());
    cfg.turn.tls_key = Some("/nonexistent/turn.key".into());
    let e = Gateway::start(cfg).await.err().expect("missing TLS files");
    assert!(e.to_string().contains("turn.tls_cert"), "{e}");

    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut cfg = config();
    cfg.turn.listen_udp = taken.local_addr().unwrap();
    let e = Gateway::start(cfg).await.err().expect("port in use");
    assert!(e.to_string().contains("TURN UDP listener"), "{e}");
}

#[tokio::test]
async fn wildcard_binds_announce_the_public_address_and_host() {
    // Media and relays bound on 0.0.0.0, announced as 127.0.0.1 (the 1:1 NAT / container case).
    let mut cfg = config();
    cfg.media.bind_ip = "0.0.0.0".parse().unwrap();
    cfg.media.announce_ips = vec!["127.0.0.1".parse().unwrap()];
    cfg.turn.public_host = "turn.example.test".into();
    let gw = Gateway::start(cfg).await.unwrap();
    let a = gw.turn_addrs().unwrap();
    assert_eq!(
        gw.turn().unwrap().urls()[0],
        format!("turn:turn.example.test:{}?transport=udp", a.udp.port())
    );
    let (u, p) = creds("ss_nat");
    let mut c = TurnClient::udp(a.udp).await.unwrap();
    let relayed = c.allocate(&u, &p).await.unwrap();
    assert_eq!(
        relayed.ip().to_string(),
        "127.0.0.1",
        "the announced address"
    );
    relay_both_ways(&mut c, relayed, "wildcard").await;
    gw.shutdown().await;
}
