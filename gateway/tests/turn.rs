//! The embedded TURN server over real sockets on 127.0.0.1, driven by a TURN client written on
//! the `turn-types` codec (wire format as RFC 8656 / RFC 8489 define it). The same client also
//! allocates through a real coturn (`turnserver`, installed by scripts/test.sh) with credentials
//! minted by the gateway's function, which proves the shared-secret scheme interoperates and
//! that the client speaks the protocol as a reference server expects.

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

#[path = "turn/sessions.rs"]
mod sessions;
#[path = "turn/streams.rs"]
mod streams;

const SECRET: &str = "test-secret";
const REALM: &str = "test.local";
const WAIT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// A minimal TURN client.

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

enum Conn {
    Udp(UdpSocket),
    Stream(Box<dyn Stream>, Vec<u8>),
}

/// What arrived from a peer through the relay.
#[derive(Debug, PartialEq, Eq)]
enum Relayed {
    Data(SocketAddr, Vec<u8>),
    Channel(u16, Vec<u8>),
}

struct TurnClient {
    conn: Conn,
    /// Relayed data that arrived while waiting for a response.
    queue: VecDeque<Relayed>,
    realm: String,
    nonce: String,
    creds: Option<(String, String)>,
}

type Attrs<'a> = &'a dyn Fn(&mut MessageWriteVec, TransactionId);

impl TurnClient {
    async fn udp(server: SocketAddr) -> anyhow::Result<Self> {
        let s = UdpSocket::bind("127.0.0.1:0").await?;
        s.connect(server).await?;
        Ok(Self::new(Conn::Udp(s)))
    }

    async fn tcp(server: SocketAddr) -> anyhow::Result<Self> {
        let s = TcpStream::connect(server).await?;
        Ok(Self::new(Conn::Stream(Box::new(s), Vec::new())))
    }

    async fn tls(server: SocketAddr, ca_der: Vec<u8>) -> anyhow::Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(rustls_pki_types::CertificateDer::from(ca_der))?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = TcpStream::connect(server).await?;
        let name = rustls_pki_types::ServerName::try_from("localhost")?;
        let s = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(name, tcp)
            .await?;
        Ok(Self::new(Conn::Stream(Box::new(s), Vec::new())))
    }

    fn new(conn: Conn) -> Self {
        Self {
            conn,
            queue: VecDeque::new(),
            realm: String::new(),
            nonce: String::new(),
            creds: None,
        }
    }

    async fn send_raw(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        match &mut self.conn {
            Conn::Udp(s) => {
                s.send(bytes).await?;
            }
            Conn::Stream(s, _) => s.write_all(bytes).await?,
        }
        Ok(())
    }

    /// One frame (STUN message or ChannelData without padding).
    async fn recv_frame(&mut self) -> anyhow::Result<Vec<u8>> {
        match &mut self.conn {
            Conn::Udp(s) => {
                let mut buf = vec![0u8; 65536];
                let n = tokio::time::timeout(WAIT, s.recv(&mut buf))
                    .await
                    .context("no datagram from the server")??;
                buf.truncate(n);
                Ok(buf)
            }
            Conn::Stream(s, buf) => loop {
                if buf.len() >= 4 {
                    let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
                    let (total, used) = if buf[0] >> 6 == 1 {
                        (4 + len.div_ceil(4) * 4, 4 + len)
                    } else {
                        (20 + len, 20 + len)
                    };
                    if buf.len() >= total {
                        let f = buf[..used].to_vec();
                        buf.drain(..total);
                        return Ok(f);
                    }
                }
                let mut chunk = [0u8; 16384];
                let n = tokio::time::timeout(WAIT, s.read(&mut chunk))
                    .await
                    .context("nothing from the server")??;
                if n == 0 {
                    bail!("server closed the stream");
                }
                buf.extend_from_slice(&chunk[..n]);
            },
        }
    }

    /// Waits for the response to `tid`, queueing relayed data that arrives meanwhile.
    async fn response(&mut self, tid: TransactionId) -> anyhow::Result<Vec<u8>> {
        loop {
            let f = self.recv_frame().await?;
            if let Some(r) = parse_relayed(&f) {
                self.queue.push_back(r);
                continue;
            }
            let m = Message::from_bytes(&f).map_err(|e| anyhow::anyhow!("bad response: {e:?}"))?;
            if m.is_response() && m.transaction_id() == tid {
                return Ok(f);
            }
        }
    }

    fn long_term(&self) -> Option<MessageIntegrityCredentials> {
        self.creds.as_ref().map(|(u, p)| {
            LongTermKeyCredentials::new(u.clone(), p.clone(), self.realm.clone()).into()
        })
    }

    /// Sends a request (signed when credentials and a nonce are known) and returns the
    /// response, with its MESSAGE-INTEGRITY checked when it is signed.
    async fn transact(&mut self, method: Method, attrs: Attrs<'_>) -> anyhow::Result<Vec<u8>> {
        let mut b = Message::builder_request(method, MessageWriteVec::new());
        let tid = b.transaction_id();
        attrs(&mut b, tid);
        if let (Some((u, _)), Some(creds)) = (&self.creds, self.long_term())
            && !self.nonce.is_empty()
        {
            b.add_attribute(&Username::new(u)?)?;
            b.add_attribute(&Realm::new(&self.realm)?)?;
            b.add_attribute(&Nonce::new(&self.nonce)?)?;
            b.add_message_integrity(&creds, IntegrityAlgorithm::Sha1)?;
        }
        b.add_fingerprint()?;
        let bytes = b.finish();
        self.send_raw(&bytes).await?;
        let resp = self.response(tid).await?;
        let m = Message::from_bytes(&resp).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        if let Ok(r) = m.attribute::<Realm>() {
            self.realm = r.realm().to_string();
        }
        if let Ok(n) = m.attribute::<Nonce>() {
            self.nonce = n.nonce().to_string();
        }
        if m.class() == MessageClass::Success
            && method != BINDING
            && let Some(creds) = self.long_term()
        {
            m.validate_integrity(&creds)
                .map_err(|e| anyhow::anyhow!("response integrity: {e:?}"))?;
        }
        Ok(resp)
    }

    /// Sends `method` and returns Ok(response) on success or Err(error code); retries once on
    /// 401-with-nonce (the first challenge) and on 438.
    async fn request(&mut self, method: Method, attrs: Attrs<'_>) -> Result<Vec<u8>, u16> {
        for _ in 0..3 {
            let had_nonce = !self.nonce.is_empty();
            let resp = self.transact(method, attrs).await.map_err(|e| {
                eprintln!("transport error: {e:#}");
                0u16
            })?;
            let m = Message::from_bytes(&resp).map_err(|_| 1u16)?;
            match m.class() {
                MessageClass::Success => return Ok(resp),
                _ => {
                    let code = m.attribute::<ErrorCode>().map(|e| e.code()).unwrap_or(2);
                    let retry = (code == 401 && !had_nonce && self.creds.is_some()) || code == 438;
                    if !retry {
                        return Err(code);
                    }
                }
            }
        }
        Err(3)
    }

    async fn binding(&mut self) -> anyhow::Result<SocketAddr> {
        let resp = self.transact(BINDING, &|_, _| {}).await?;
        let m = Message::from_bytes(&resp).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        anyhow::ensure!(m.class() == MessageClass::Success, "binding failed");
        let x = m
            .attribute::<XorMappedAddress>()
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        Ok(x.addr(m.transaction_id()))
    }

    /// Allocate with `username`/`password`: Ok(relayed address) or Err(error code).
    async fn allocate(&mut self, username: &str, password: &str) -> Result<SocketAddr, u16> {
        self.creds = Some((username.to_string(), password.to_string()));
        let resp = self
            .request(ALLOCATE, &|b, _| {
                b.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
                    .unwrap();
            })
            .await?;
        let m = Message::from_bytes(&resp).unwrap();
        let r = m.attribute::<XorRelayedAddress>().map_err(|_| 4u16)?;
        Ok(r.addr(m.transaction_id()))
    }

    async fn create_permission(&mut self, peer: SocketAddr) -> Result<(), u16> {
        self.request(CREATE_PERMISSION, &|b, tid| {
            b.add_attribute(&XorPeerAddress::new(peer, tid)).unwrap();
        })
        .await
        .map(drop)
    }

    async fn channel_bind(&mut self, ch: u16, peer: SocketAddr) -> Result<(), u16> {
        self.request(CHANNEL_BIND, &|b, tid| {
            b.add_attribute(&ChannelNumber::new(ch)).unwrap();
            b.add_attribute(&XorPeerAddress::new(peer, tid)).unwrap();
        })
        .await
        .map(drop)
    }

    async fn refresh(&mut self, lifetime: u32) -> Result<(), u16> {
        self.request(REFRESH, &|b, _| {
            b.add_attribute(&Lifetime::new(lifetime)).unwrap();
        })
        .await
        .map(drop)
    }

    async fn send_indication(&mut self, peer: SocketAddr, data: &[u8]) -> anyhow::Result<()> {
        let mut b = Message::builder_indication(SEND, MessageWriteVec::new());
        let tid = b.transaction_id();
        b.add_attribute(&XorPeerAddress::new(peer, tid))?;
        b.add_attribute(&DataAttr::new(data))?;
        let bytes = b.finish();
        self.send_raw(&bytes).await
    }

    async fn send_channel(&mut self, ch: u16, data: &[u8]) -> anyhow::Result<()> {
        let mut out = ch.to_be_bytes().to_vec();
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(data);
        if matches!(self.conn, Conn::Stream(..)) {
            out.resize(out.len().div_ceil(4) * 4, 0);
        }
        self.send_raw(&out).await
    }

    async fn recv_relayed(&mut self) -> anyhow::Result<Relayed> {
        if let Some(r) = self.queue.pop_front() {
            return Ok(r);
        }
        loop {
            let f = self.recv_frame().await?;
            if let Some(r) = parse_relayed(&f) {
                return Ok(r);
            }
        }
    }
}

fn parse_relayed(f: &[u8]) -> Option<Relayed> {
    if f.first().is_some_and(|b| b >> 6 == 1) {
        let cd = ChannelData::parse(f).ok()?;
        return Some(Relayed::Channel(cd.id(), cd.data().to_vec()));
    }
    let m = Message::from_bytes(f).ok()?;
    if m.class() == MessageClass::Indication && m.method() == DATA {
        let p = m.attribute::<XorPeerAddress>().ok()?;
        let d = m.attribute::<DataAttr>().ok()?;
        return Some(Relayed::Data(p.addr(m.transaction_id()), d.data().to_vec()));
    }
    None
}

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
    let mut c = Config::default();
    c.grpc.listen = "127.0.0.1:0".parse().unwrap();
    c.media.port_base = 0;
    c.media.tcp_port_base = 0;
    c.media.workers = 1;
    c.turn.listen_udp = "127.0.0.1:0".parse().unwrap();
    c.turn.listen_tcp = "127.0.0.1:0".parse().unwrap();
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
    let gw = Gateway::start(config()).await.unwrap();
    let a = gw.turn_addrs().unwrap();

    // No credentials: 401 with REALM and NONCE (the long-term challenge).
    let mut c = TurnClient::udp(a.udp).await.unwrap();
    let resp = c
        .transact(ALLOCATE, &|b, _| {
            b.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
                .unwrap();
        })
        .await
        .unwrap();
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
    let resp = c
        .transact(ALLOCATE, &|b, _| {
            b.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
                .unwrap();
        })
        .await
        .unwrap();
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
async fn relay_bitrate_over_the_limit_is_dropped() {
    let mut cfg = config();
    // 8 kbit/s = 1000 bytes/s; the bucket holds 64 KiB.
    cfg.turn.max_relay_bitrate_kbps = 8;
    let gw = Gateway::start(cfg).await.unwrap();
    let a = gw.turn_addrs().unwrap();
    let (u, p) = creds("ss_rate");
    let mut c = TurnClient::udp(a.udp).await.unwrap();
    c.allocate(&u, &p).await.unwrap();
    let sink = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let peer = sink.local_addr().unwrap();
    c.channel_bind(0x4002, peer).await.unwrap();
    let payload = vec![7u8; 1000];
    let start = std::time::Instant::now();
    for _ in 0..20 {
        for _ in 0..10 {
            c.send_channel(0x4002, &payload).await.unwrap();
        }
        // A round trip per batch, so the listener has handled the batch (no kernel drops).
        c.refresh(600).await.unwrap();
    }
    let elapsed = start.elapsed().as_secs();
    let s = gw.turn().unwrap().stats();
    // 200 kB offered against a 64 KiB bucket refilling at 1 kB/s: every datagram is either
    // relayed or dropped by the limit, and no more than the bucket plus the refill got through.
    assert_eq!(s.bytes_to_peers / 1000 + s.dropped_rate, 200, "{s:?}");
    assert!(s.bytes_to_peers >= 65_000, "{s:?}");
    assert!(
        s.bytes_to_peers <= 65_536 + 1000 * (elapsed + 1),
        "{s:?} after {elapsed} s"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn udp_allocation_relays_both_ways_inside_the_port_range() {
    let gw = Gateway::start(config()).await.unwrap();
    let a = gw.turn_addrs().unwrap();
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
    let gw = Gateway::start(config()).await.unwrap();
    let a = gw.turn_addrs().unwrap();
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
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let cert = params.self_signed(&key).unwrap();
    let dir = std::env::temp_dir().join(format!("sb-turn-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cp, kp) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cp, cert.pem()).unwrap();
    std::fs::write(&kp, key.serialize_pem()).unwrap();

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
async fn denied_peers_are_forbidden_but_the_gateway_itself_is_reachable() {
    // The default deny list (no allow list): loopback and private ranges are refused.
    let mut cfg = config();
    cfg.turn.allow_peers.clear();
    let gw = Gateway::start(cfg).await.unwrap();
    let a = gw.turn_addrs().unwrap();
    let (u, p) = creds("ss_deny");
    let mut c = TurnClient::udp(a.udp).await.unwrap();
    c.allocate(&u, &p).await.expect("allocation");
    let echo = echo_peer_on("127.0.0.2").await;
    for peer in [
        echo,
        "127.0.0.3:9".parse().unwrap(),
        "10.1.2.3:9".parse().unwrap(),
        "192.168.1.1:9".parse().unwrap(),
        "169.254.1.1:9".parse().unwrap(),
        "100.64.0.1:9".parse().unwrap(),
    ] {
        assert_eq!(c.create_permission(peer).await, Err(403), "{peer}");
    }
    assert_eq!(c.channel_bind(0x4000, echo).await, Err(403));
    // IPv6 peers on an IPv4 relay: 443.
    assert_eq!(
        c.create_permission("[2001:db8::1]:9".parse().unwrap())
            .await,
        Err(443)
    );
    // The SFU's own media socket is always a permitted peer.
    let media = gw.udp_addrs()[0];
    c.create_permission(media).await.expect("own media address");
    c.channel_bind(0x4000, media)
        .await
        .expect("bind to own media");
    assert!(gw.turn().unwrap().stats().refused_forbidden >= 7);
    // A permission for the gateway's IP reaches only its media ports: another socket on that
    // IP gets nothing (the packet is dropped and counted).
    let other = echo_peer_on(&media.ip().to_string()).await;
    let before = gw.turn().unwrap().stats().dropped_no_permission;
    c.send_indication(other, b"not the SFU").await.unwrap();
    c.refresh(600).await.unwrap();
    assert_eq!(gw.turn().unwrap().stats().dropped_no_permission, before + 1);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_public_gateway_ip_is_reachable_only_at_its_media_ports() {
    // Loopback plays a public IP here: not in deny_peers, not in allow_peers. The gateway's own
    // IP may then be a peer only at the media ports: never its TURN listener (a relay loop) nor
    // any other service bound on the host.
    let mut cfg = config();
    cfg.turn.allow_peers.clear();
    cfg.turn.deny_peers = vec!["10.0.0.0/8".parse().unwrap()];
    let gw = Gateway::start(cfg).await.unwrap();
    let a = gw.turn_addrs().unwrap();
    let (u, p) = creds("ss_own_host");
    let mut c = TurnClient::udp(a.udp).await.unwrap();
    c.allocate(&u, &p).await.expect("allocation");
    let media = gw.udp_addrs()[0];
    let other_service = echo_peer_on(&media.ip().to_string()).await;
    c.create_permission(other_service)
        .await
        .expect("a permission for the gateway's IP (media only)");
    let before = gw.turn().unwrap().stats().dropped_no_permission;
    c.send_indication(other_service, b"not the SFU")
        .await
        .unwrap();
    c.send_indication(a.udp, b"to the TURN listener itself")
        .await
        .unwrap();
    // A request after the indications: the server handled them by the time it answers.
    c.refresh(600).await.unwrap();
    assert_eq!(
        gw.turn().unwrap().stats().dropped_no_permission,
        before + 2,
        "neither the other service nor the TURN listener is reachable"
    );
    // A channel to the TURN listener relays nothing either.
    c.channel_bind(0x4002, a.udp).await.unwrap();
    c.send_channel(0x4002, b"loop").await.unwrap();
    c.refresh(600).await.unwrap();
    assert_eq!(gw.turn().unwrap().stats().dropped_no_permission, before + 3);
    // Another "public" IP is still a normal peer.
    let public_peer = echo_peer_on("127.0.0.2").await;
    c.create_permission(public_peer).await.unwrap();
    c.send_indication(public_peer, b"hello").await.unwrap();
    assert_eq!(
        c.recv_relayed().await.unwrap(),
        Relayed::Data(public_peer, b"hello".to_vec())
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn lifetimes_never_outlast_the_credential() {
    let gw = Gateway::start(config()).await.unwrap();
    let a = gw.turn_addrs().unwrap();
    let c = mint_credential(
        SECRET.as_bytes(),
        "ss_short",
        Duration::from_secs(120),
        SystemTime::now(),
    );
    let mut t = TurnClient::udp(a.udp).await.unwrap();
    t.creds = Some((c.username, c.password));
    let lifetime_of = |resp: &[u8]| {
        let m = Message::from_bytes(resp).unwrap();
        m.attribute::<Lifetime>().unwrap().seconds()
    };
    let resp = t
        .request(ALLOCATE, &|b, _| {
            b.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
                .unwrap();
            b.add_attribute(&Lifetime::new(3600)).unwrap();
        })
        .await
        .expect("allocation");
    let l = lifetime_of(&resp);
    assert!((1..=120).contains(&l), "Allocate lifetime {l}");
    let resp = t
        .request(REFRESH, &|b, _| {
            b.add_attribute(&Lifetime::new(3600)).unwrap();
        })
        .await
        .expect("refresh");
    let l = lifetime_of(&resp);
    assert!((1..=120).contains(&l), "Refresh lifetime {l}");
    gw.shutdown().await;
}

#[tokio::test]
async fn quotas_are_enforced() {
    let mut cfg = config();
    cfg.turn.max_allocations_per_identity = 2;
    cfg.turn.max_permissions_per_allocation = 2;
    let gw = Gateway::start(cfg).await.unwrap();
    let a = gw.turn_addrs().unwrap();
    let (u, p) = creds("ss_quota");
    let mut keep = Vec::new();
    for _ in 0..2 {
        let mut c = TurnClient::udp(a.udp).await.unwrap();
        c.allocate(&u, &p).await.expect("within quota");
        keep.push(c);
    }
    let mut c = TurnClient::udp(a.udp).await.unwrap();
    assert_eq!(
        c.allocate(&u, &p).await,
        Err(486),
        "over the per-identity quota"
    );
    // Another identity is not affected.
    let (u2, p2) = creds("ss_other");
    let mut c2 = TurnClient::udp(a.udp).await.unwrap();
    c2.allocate(&u2, &p2).await.expect("other identity");
    // Permissions per allocation are capped (508).
    for port in [1, 2] {
        c2.create_permission(SocketAddr::new([127, 0, 0, port].into(), 9))
            .await
            .unwrap();
    }
    assert_eq!(
        c2.create_permission("127.0.0.3:9".parse().unwrap()).await,
        Err(508)
    );
    // Freeing one allocation makes room again.
    keep[0].refresh(0).await.unwrap();
    c.allocate(&u, &p).await.expect("room again after a delete");
    assert!(gw.turn().unwrap().stats().refused_quota >= 1);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_full_relay_port_range_is_insufficient_capacity() {
    // A range of exactly one free port.
    let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = probe.local_addr().unwrap().port();
    drop(probe);
    let mut cfg = config();
    cfg.turn.relay_port_min = port;
    cfg.turn.relay_port_max = port;
    let gw = Gateway::start(cfg).await.unwrap();
    let a = gw.turn_addrs().unwrap();
    let (u, p) = creds("ss_range");
    let mut c1 = TurnClient::udp(a.udp).await.unwrap();
    assert_eq!(c1.allocate(&u, &p).await.unwrap().port(), port);
    let mut c2 = TurnClient::udp(a.udp).await.unwrap();
    assert_eq!(c2.allocate(&u, &p).await, Err(508));
    gw.shutdown().await;
}

#[tokio::test]
async fn malformed_bytes_never_break_the_server() {
    let gw = Gateway::start(config()).await.unwrap();
    let a = gw.turn_addrs().unwrap();
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

/// Kills the child process when dropped.
struct Child(std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A real coturn accepts credentials minted by the gateway's function for its secret, and the
/// client used above allocates and relays through it (the client speaks real TURN).
#[tokio::test]
async fn coturn_accepts_credentials_minted_by_the_gateway() {
    let bin = which("turnserver").expect(
        "coturn's `turnserver` is required (scripts/test.sh installs the Debian package `coturn`)",
    );
    let port = {
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        u.local_addr().unwrap().port()
    };
    let secret = "coturn-interop-secret";
    let _child = Child(
        std::process::Command::new(bin)
            .args([
                "-n",
                "--listening-ip=127.0.0.1",
                &format!("--listening-port={port}"),
                "--relay-ip=127.0.0.1",
                "--min-port=43000",
                "--max-port=43999",
                "--use-auth-secret",
                &format!("--static-auth-secret={secret}"),
                "--realm=test.local",
                "--allow-loopback-peers",
                "--no-cli",
                "--no-tls",
                "--no-dtls",
                "--log-file=stdout",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start turnserver"),
    );
    let server: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();

    // Wait until it answers Binding.
    let mut up = false;
    for _ in 0..100 {
        let mut b = TurnClient::udp(server).await.unwrap();
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(200), b.binding()).await {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "coturn did not come up on {server}");

    let c = mint_credential(
        secret.as_bytes(),
        "ss_coturn",
        Duration::from_secs(600),
        SystemTime::now(),
    );
    let mut client = TurnClient::udp(server).await.unwrap();
    let relayed = client
        .allocate(&c.username, &c.password)
        .await
        .expect("coturn accepts the minted credential");
    relay_both_ways(&mut client, relayed, "coturn").await;

    // And refuses a wrong one and an expired one.
    let mut bad = TurnClient::udp(server).await.unwrap();
    assert_eq!(bad.allocate(&c.username, "d3Jvbmc=").await, Err(401));
    let old = mint_credential(
        secret.as_bytes(),
        "ss_coturn",
        Duration::from_secs(60),
        SystemTime::now() - Duration::from_secs(3600),
    );
    let mut expired = TurnClient::udp(server).await.unwrap();
    assert_eq!(
        expired.allocate(&old.username, &old.password).await,
        Err(401)
    );
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| std::path::Path::new(d).join(name))
        .find(|p| p.is_file())
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
