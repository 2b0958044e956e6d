//! Fuzz bodies of the TURN engine (feature `testing`), both feeding client frames into
//! [`Shared::handle_client`]:
//! - [`fuzz_turn_message`]: one arbitrary frame. Only unauthenticated paths are reachable this
//!   way (random bytes do not carry a valid MESSAGE-INTEGRITY): framing, STUN parsing, attribute
//!   walking, Binding, ChannelData and Send indications without an allocation, and the refusals.
//! - [`fuzz_turn_session`]: a client's sequence of requests *signed with a valid credential*
//!   (and some with broken ones), so Allocate, Refresh, CreatePermission, ChannelBind, Send and
//!   ChannelData run on live allocations with fuzzed attributes. Its relay sockets bind
//!   127.0.0.1, which cannot send off the host.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use turn_types::attribute::{
    ChannelNumber, Data as DataAttr, EvenPort, Lifetime, RequestedTransport, XorPeerAddress,
};
use turn_types::message::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, REFRESH, SEND};
use turn_types::stun::attribute::{
    AttributeType, Fingerprint, MessageIntegrity, MessageIntegritySha256, Nonce, RawAttribute,
    Realm, Username,
};
use turn_types::stun::message::{
    BINDING, IntegrityAlgorithm, LongTermKeyCredentials, Message, MessageClass,
    MessageIntegrityCredentials, MessageType, MessageWriteExt, MessageWriteVec, Method,
    TransactionId,
};
use turn_types::stun::prelude::{AttributeStaticType, MessageWrite};

use super::auth::DONT_FRAGMENT;
use super::{ClientSink, FiveTuple, RelayAddrs, Shared, Transport, lock};
use crate::turn::credentials;
use crate::turn::policy::PeerPolicy;
use crate::turn::settings::TurnConfig;

/// A TURN engine with the default configuration, relaying from 127.0.0.1.
fn engine(secret: &[u8], nonce_seed: u8) -> Arc<Shared> {
    let config = TurnConfig::default();
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let policy = PeerPolicy::new(&config.deny_peers, &config.allow_peers, [], []);
    let relay = RelayAddrs {
        bind: lo,
        public: lo,
    };
    Arc::new(Shared::new(
        config,
        secret.to_vec(),
        relay,
        policy,
        &[nonce_seed; 32],
    ))
}

fn shared() -> Arc<Shared> {
    static S: OnceLock<Arc<Shared>> = OnceLock::new();
    S.get_or_init(|| engine(b"fuzz-secret", 3)).clone()
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

/// The engine the session body drives, with a running runtime for its relay tasks (a task
/// cancelled when its allocation goes must run to its end to free its socket; one worker thread
/// is enough).
fn session_engine() -> (Arc<Shared>, &'static tokio::runtime::Runtime) {
    static S: OnceLock<(Arc<Shared>, tokio::runtime::Runtime)> = OnceLock::new();
    let (shared, rt) = S.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("fuzz runtime");
        (engine(SESSION_SECRET, 5), rt)
    });
    (shared.clone(), rt)
}

const SESSION_SECRET: &[u8] = b"fuzz-session-secret";

/// How one request of [`fuzz_turn_session`] is signed.
#[derive(Clone, Copy, PartialEq)]
enum Signing {
    /// The client's credential, MESSAGE-INTEGRITY (SHA-1).
    Valid,
    /// The client's credential, MESSAGE-INTEGRITY-SHA256, plus FINGERPRINT.
    ValidSha256,
    /// A second identity's valid credential (on another's allocation: 441).
    OtherIdentity,
    /// No MESSAGE-INTEGRITY (401 challenge).
    Unsigned,
    /// The right username with a wrong password.
    WrongPassword,
    /// A nonce the server never issued (438).
    BadNonce,
    /// Another realm.
    WrongRealm,
    /// A credential that expired an hour ago.
    Expired,
}

impl Signing {
    fn from_byte(b: u8) -> Self {
        match b % 16 {
            0..=7 => Self::Valid,
            8 | 9 => Self::ValidSha256,
            10 => Self::OtherIdentity,
            11 => Self::Unsigned,
            12 => Self::WrongPassword,
            13 => Self::BadNonce,
            14 => Self::WrongRealm,
            _ => Self::Expired,
        }
    }
}

/// Reads a fuzz payload front to back; past its end every read is zero.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else {
            return 0;
        };
        self.0 = rest;
        b
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn take(&mut self, n: usize) -> &[u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }
    /// A peer address: IPv4 or (now and then) IPv6, any port.
    fn peer(&mut self) -> SocketAddr {
        let sel = self.u8();
        let ip: IpAddr = if sel.is_multiple_of(5) {
            let mut o = [0u8; 16];
            o.iter_mut().for_each(|b| *b = self.u8());
            std::net::Ipv6Addr::from(o).into()
        } else {
            Ipv4Addr::from(self.u32()).into()
        };
        SocketAddr::new(ip, self.u16())
    }
}

/// Appends the rest of `p` as raw attributes (type, length, value), skipping the three
/// attributes the builder only writes itself (it refuses them in `add_attribute`).
fn raw_attributes(b: &mut MessageWriteVec, p: &mut Bytes<'_>) {
    for _ in 0..4 {
        if p.0.len() < 2 {
            return;
        }
        let ty = AttributeType::new(p.u16());
        if [
            MessageIntegrity::TYPE,
            MessageIntegritySha256::TYPE,
            Fingerprint::TYPE,
        ]
        .contains(&ty)
        {
            continue;
        }
        let n = usize::from(p.u8()) % 24;
        let _ = b.add_attribute(&RawAttribute::new(ty, p.take(n)));
    }
}

/// A client's session with the TURN server, driven by `data`: the first byte picks the
/// transport, then each operation is `kind, length, payload` (at most 12). Requests are signed
/// as [`Signing`] picks (valid credentials most of the time). Properties: no panic; a request
/// gets at most one reply, a STUN message of its transaction, and a success reply verifies with
/// the credential that signed the request; an indication or ChannelData frame gets none; when
/// the client's allocation is removed, no allocation, relay port or per-identity tally remains.
pub fn fuzz_turn_session(data: &[u8]) {
    let Some((&sel, ops)) = data.split_first() else {
        return;
    };
    let (shared, rt) = session_engine();
    let _enter = rt.enter();
    let transport = match sel % 3 {
        0 => Transport::Udp,
        1 => Transport::Tcp,
        _ => Transport::Tls,
    };
    // From the input, so a failing input replays alike (its allocation is removed at the end).
    let port = 40_000 + u16::from(sel);
    let five = FiveTuple {
        transport,
        client: SocketAddr::new(Ipv4Addr::new(192, 0, 2, 7).into(), port),
        server: SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 3478),
    };
    let (tx, mut rx) = mpsc::channel(64);
    let sink = ClientSink::Stream(tx, Arc::new(AtomicUsize::new(0)));
    let now = SystemTime::now();
    let ttl = Duration::from_secs(600);
    let mine = credentials::mint_credential(SESSION_SECRET, "fuzz-a", ttl, now);
    let other = credentials::mint_credential(SESSION_SECRET, "fuzz-b", ttl, now);
    let expired = credentials::mint_credential(
        SESSION_SECRET,
        "fuzz-a",
        Duration::ZERO,
        now - Duration::from_secs(3600),
    );
    let realm = shared.config.realm.clone();
    let nonce = shared.nonces.issue(five.client, now);

    let mut ops = Bytes(ops);
    for op in 0..12u128 {
        if ops.0.len() < 2 {
            break;
        }
        let kind = ops.u8();
        let n = usize::from(ops.u8()) % 96;
        let mut p = Bytes(ops.take(n));
        let tid = TransactionId::from((u128::from(sel) << 64) | (u128::from(port) << 8) | op);
        let signing = Signing::from_byte(p.u8());
        let request = |method: Method, fill: &mut dyn FnMut(&mut MessageWriteVec)| {
            let ty = MessageType::from_class_method(MessageClass::Request, method);
            let mut b = Message::builder(ty, tid, MessageWriteVec::with_capacity(256));
            fill(&mut b);
            let (user, password) = match signing {
                Signing::OtherIdentity => (&other.username, other.password.clone()),
                Signing::Expired => (&expired.username, expired.password.clone()),
                Signing::WrongPassword => (&mine.username, "not-the-password".to_string()),
                _ => (&mine.username, mine.password.clone()),
            };
            let realm = if signing == Signing::WrongRealm {
                "elsewhere"
            } else {
                realm.as_str()
            };
            let nonce = if signing == Signing::BadNonce {
                "bm90LWlzc3VlZA"
            } else {
                nonce.as_str()
            };
            if let Ok(a) = Username::new(user) {
                let _ = b.add_attribute(&a);
            }
            if let Ok(a) = Realm::new(realm) {
                let _ = b.add_attribute(&a);
            }
            if let Ok(a) = Nonce::new(nonce) {
                let _ = b.add_attribute(&a);
            }
            let creds: MessageIntegrityCredentials =
                LongTermKeyCredentials::new(user.clone(), password.clone(), realm.to_string())
                    .into();
            match signing {
                Signing::Unsigned => {}
                Signing::ValidSha256 => {
                    let _ = b.add_message_integrity(&creds, IntegrityAlgorithm::Sha256);
                    let _ = b.add_fingerprint();
                }
                _ => {
                    let _ = b.add_message_integrity(&creds, IntegrityAlgorithm::Sha1);
                }
            }
            (b.finish(), Some(creds))
        };
        let (frame, creds) = match kind % 8 {
            0 => request(ALLOCATE, &mut |b| {
                let proto = if p.u8() % 8 == 0 { p.u8() } else { 17 };
                let _ = b.add_attribute(&RequestedTransport::new(proto));
                let flags = p.u8();
                if flags & 1 != 0 {
                    let _ = b.add_attribute(&Lifetime::new(p.u32()));
                }
                if flags & 2 != 0 {
                    let _ = b.add_attribute(&EvenPort::new(flags & 4 != 0));
                }
                if flags & 8 != 0 {
                    let _ = b.add_attribute(&RawAttribute::new(DONT_FRAGMENT, &[]));
                }
                raw_attributes(b, &mut p);
            }),
            1 => request(REFRESH, &mut |b| {
                let lifetime = match p.u8() % 4 {
                    0 => 0,
                    _ => p.u32(),
                };
                let _ = b.add_attribute(&Lifetime::new(lifetime));
                raw_attributes(b, &mut p);
            }),
            2 => request(CREATE_PERMISSION, &mut |b| {
                for _ in 0..1 + p.u8() % 3 {
                    let _ = b.add_attribute(&XorPeerAddress::new(p.peer(), tid));
                }
                raw_attributes(b, &mut p);
            }),
            3 => request(CHANNEL_BIND, &mut |b| {
                let channel = match p.u8() % 4 {
                    0 => p.u16(),
                    _ => 0x4000 + p.u16() % 0x1000,
                };
                let _ = b.add_attribute(&ChannelNumber::new(channel));
                let _ = b.add_attribute(&XorPeerAddress::new(p.peer(), tid));
                raw_attributes(b, &mut p);
            }),
            4 => {
                let ty = MessageType::from_class_method(MessageClass::Indication, SEND);
                let mut b = Message::builder(ty, tid, MessageWriteVec::with_capacity(256));
                let _ = b.add_attribute(&XorPeerAddress::new(p.peer(), tid));
                let len = usize::from(p.u8());
                let _ = b.add_attribute(&DataAttr::new(p.take(len)));
                raw_attributes(&mut b, &mut p);
                (b.finish(), None)
            }
            5 => {
                // ChannelData: a channel (mostly a bindable one) and a length that may lie.
                let channel = 0x4000 + p.u16() % 0x4000;
                let len = p.u16() % 2048;
                let mut f = Vec::with_capacity(4 + p.0.len());
                f.extend_from_slice(&channel.to_be_bytes());
                f.extend_from_slice(&len.to_be_bytes());
                f.extend_from_slice(p.take(usize::MAX));
                (f, None)
            }
            6 => {
                // Any method, signed, with raw attributes only.
                let method = Method::new(p.u16() % 0x1000);
                request(method, &mut |b| raw_attributes(b, &mut p))
            }
            _ => request(BINDING, &mut |b| raw_attributes(b, &mut p)),
        };
        let is_request = frame.first().is_some_and(|b| *b < 0x40)
            && Message::from_bytes(&frame).is_ok_and(|m| m.has_class(MessageClass::Request));
        shared.handle_client(five, &sink, &frame);
        let mut replies = 0;
        while let Ok(reply) = rx.try_recv() {
            replies += 1;
            assert!(is_request, "no reply to an indication or ChannelData");
            let m = Message::from_bytes(&reply).expect("every reply is a well-formed STUN message");
            assert_eq!(m.transaction_id(), tid, "a reply answers its request");
            if m.has_class(MessageClass::Success) && m.method() != BINDING {
                let creds = creds.as_ref().expect("a request has credentials");
                assert!(
                    m.validate_integrity(creds).is_ok(),
                    "a success reply is signed with the request's credential"
                );
            }
        }
        assert!(replies <= 1, "one reply per request, got {replies}");
    }
    shared.remove(&five);
    let st = lock(&shared.state);
    assert!(
        st.allocations.is_empty() && st.ports.is_empty() && st.per_identity.is_empty(),
        "an allocation, relay port or identity tally outlived its client"
    );
}
