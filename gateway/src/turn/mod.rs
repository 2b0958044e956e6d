//! The embedded TURN server (RFC 8656) and STUN Binding responder, plus the shared-secret
//! credentials the gateway hands to Peers for it and for external TURN servers (coturn).
//!
//! What it owns: the UDP, TCP and TLS listeners of `[turn]`, one UDP relay socket per
//! allocation (inside `relay_port_min..=relay_port_max`, bound on `relay_ip`), the allocation,
//! permission and channel tables, quotas, the per-allocation bitrate limit and the counters
//! ([`TurnStats`]). It is started by [`crate::Gateway::start`] when `turn.enabled` and stopped by
//! its shutdown. What it must not do: relay to any address the [`PeerPolicy`] denies (it is
//! never an open relay: only authenticated allocations relay, only to peers with a live
//! permission, RFC 8656 §9), block the runtime (every send is a `try_send`, dropped when full),
//! grow without bound (allocations, permissions, channels and stream connections are capped by
//! config), or panic on network input (every frame is parsed by the codec; a panic in a handler
//! is caught per frame and counted).
//!
//! Layout: [`credentials`] (minting and checking `expiry:identity` usernames, stateless nonces),
//! [`policy`] (deny/allow CIDRs and the gateway's own media addresses), `server` (the protocol
//! engine), this file (listeners, stream framing, TLS, start and shutdown).
//!
//! # Why not `turn-server-proto`
//! `turn-server-proto` 0.7 (MIT OR Apache-2.0, sans-IO) was evaluated first. It authenticates
//! only against a static user table (`add_user(username, password)`, no callback and no removal),
//! so time-limited shared-secret credentials would mean adding every minted username forever and
//! could not express expiry; it has no hook to refuse a CreatePermission or ChannelBind by peer
//! address (no deny list, so no 403), no per-user allocation quota (486), no permission cap and
//! fixed lifetimes; its relay sockets are requested through `AllocateSocket` polls without a
//! port range of its own. Wrapping it would have meant re-implementing the authentication and
//! policy checks in front of it anyway, so this module implements the server on the codec that
//! crate itself uses: `turn-types`/`stun-types` (same author, MIT OR Apache-2.0, parsing and
//! MESSAGE-INTEGRITY/FINGERPRINT tested upstream and fuzzable). `turn-rs` is GPL and not usable.
//! TLS is `tokio-rustls` with the aws-lc-rs provider that str0m already brings in.
//!
//! Transports: TURN over UDP (datagrams), over TCP and over TLS (both with the plain STUN
//! framing of RFC 8656 §12.5: a STUN message is self-delimiting, ChannelData is padded to 4
//! bytes; no RFC 4571 length prefix). Relayed transport is UDP only (REQUESTED-TRANSPORT 17),
//! in one address family: that of the relay address (`turn.relay_ip`, else `media.bind_ip`);
//! an Allocate for the other family gets 440, a peer of the other family 443.
//!
//! Credentials are checked on every request, so a credential past its expiry cannot Refresh an
//! allocation either, and no Allocate or Refresh grants a lifetime past the credential's expiry:
//! `turn.credential_ttl_secs` bounds how long one relayed connection lasts.

pub mod credentials;
mod ice_servers;
pub mod policy;
mod server;
pub mod settings;

use std::net::{IpAddr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;

pub use credentials::{
    CredentialError, TurnCredential, check_username, mint_credential, password_for,
};
pub use ice_servers::IceServer;
pub(crate) use ice_servers::IceServers;
pub use policy::{Cidr, PeerPolicy, PeerVerdict};
pub use server::{Transport, TurnStats};
pub use settings::{IceServerConfig, TurnConfig};

use server::{ClientSink, FiveTuple, Settings, Shared};

/// A stream connection with no allocation is closed after this long without a complete frame
/// (trickling bytes does not keep it open).
const STREAM_IDLE: Duration = Duration::from_secs(30);
/// Time a TLS client has to finish its handshake.
const TLS_HANDSHAKE: Duration = Duration::from_secs(10);
/// Frames queued toward one stream client before further ones are dropped (the bytes are
/// bounded too, by `server::STREAM_QUEUE_BYTES`).
const STREAM_QUEUE: usize = 256;

/// Why the TURN server could not start.
#[derive(Debug, thiserror::Error)]
pub enum TurnError {
    /// A listener could not be bound.
    #[error("cannot bind TURN {what} listener {addr}: {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// Where.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS certificate or key could not be used.
    #[error("TURN TLS: {0}")]
    Tls(String),
    /// Something else in the configuration cannot work.
    #[error("TURN: {0}")]
    Config(String),
}

/// Where the embedded TURN server listens (the real bound ports).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TurnAddrs {
    /// UDP listener.
    pub udp: SocketAddr,
    /// TCP listener.
    pub tcp: SocketAddr,
    /// TLS listener, when configured.
    pub tls: Option<SocketAddr>,
}

/// What the control API needs to hand out the embedded server to Peers.
#[derive(Debug, Clone)]
pub(crate) struct EmbeddedTurn {
    pub urls: Vec<String>,
    pub secret: Vec<u8>,
    pub ttl: Duration,
}

impl EmbeddedTurn {
    /// Fresh credentials for `identity` (the Session id).
    pub(crate) fn mint(&self, identity: &str, now: SystemTime) -> TurnCredential {
        mint_credential(&self.secret, identity, self.ttl, now)
    }
}

/// A running embedded TURN server.
pub struct TurnServer {
    shared: Arc<Shared>,
    addrs: TurnAddrs,
    embedded: EmbeddedTurn,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for TurnServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnServer")
            .field("addrs", &self.addrs)
            .finish_non_exhaustive()
    }
}

fn bracket(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// The gateway's media addresses, as the TURN server needs them: to bind relays next to them, to
/// name itself in URLs, and to keep its own host unreachable except at the Workers' ports.
#[derive(Debug, Clone)]
pub struct MediaAddrs {
    /// `media.bind_ip`.
    pub bind_ip: IpAddr,
    /// The announced media IPs (`media.announce_ips`, else `bind_ip`); never empty.
    pub announce_ips: Vec<IpAddr>,
    /// The Workers' bound UDP sockets (always reachable as peers).
    pub sockets: Vec<SocketAddr>,
}

impl TurnServer {
    /// Binds the listeners of `t` (a validated `[turn]`) and starts serving.
    pub async fn start(t: &TurnConfig, media: &MediaAddrs) -> Result<Self, TurnError> {
        let announce = &media.announce_ips;
        if announce.is_empty() {
            return Err(TurnError::Config("no media announce IP".into()));
        }
        let relay_bind = t.relay_ip.unwrap_or(media.bind_ip);
        let relay_public = if relay_bind.is_unspecified() {
            announce
                .iter()
                .copied()
                .find(|ip| ip.is_ipv4() == relay_bind.is_ipv4())
                .ok_or_else(|| {
                    TurnError::Config(
                        "turn.relay_ip is unspecified and no media announce IP has its family"
                            .into(),
                    )
                })?
        } else {
            relay_bind
        };
        let secret = if t.secret.is_empty() {
            let mut s = [0u8; 32];
            getrandom::getrandom(&mut s).map_err(|e| TurnError::Config(e.to_string()))?;
            s.to_vec()
        } else {
            t.secret.as_bytes().to_vec()
        };
        let mut own: Vec<SocketAddr> = media.sockets.clone();
        for a in &media.sockets {
            for ip in announce {
                own.push(SocketAddr::new(*ip, a.port()));
            }
        }
        // Every other IP of this host we know of: reachable only at the media ports.
        let hosts = [relay_bind, relay_public, media.bind_ip]
            .into_iter()
            .chain(announce.iter().copied())
            .chain([t.listen_udp.ip(), t.listen_tcp.ip()])
            .chain(t.listen_tls.map(|a| a.ip()));
        let policy = PeerPolicy::new(&t.deny_peers, &t.allow_peers, own, hosts);
        let settings = Settings {
            realm: t.realm.clone(),
            secret: secret.clone(),
            relay_bind,
            relay_public,
            port_min: t.relay_port_min,
            port_max: t.relay_port_max,
            max_per_identity: t.max_allocations_per_identity,
            max_allocations: t.max_allocations,
            rate_bytes: u64::from(t.max_relay_bitrate_kbps) * 125,
            max_lifetime: t.allocation_max_lifetime_secs,
            max_permissions: t.max_permissions_per_allocation as usize,
        };
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed).map_err(|e| TurnError::Config(e.to_string()))?;
        let shared = Arc::new(Shared::new(settings, policy, &seed));

        let bind_err = |what, addr| move |source| TurnError::Bind { what, addr, source };
        let udp = UdpSocket::bind(t.listen_udp)
            .await
            .map_err(bind_err("UDP", t.listen_udp))?;
        let udp_addr = udp.local_addr().map_err(bind_err("UDP", t.listen_udp))?;
        let tcp = TcpListener::bind(t.listen_tcp)
            .await
            .map_err(bind_err("TCP", t.listen_tcp))?;
        let tcp_addr = tcp.local_addr().map_err(bind_err("TCP", t.listen_tcp))?;
        let tls = match (t.listen_tls, &t.tls_cert, &t.tls_key) {
            (Some(addr), Some(cert), Some(key)) => {
                let acceptor = tls_acceptor(cert, key)?;
                let l = TcpListener::bind(addr)
                    .await
                    .map_err(bind_err("TLS", addr))?;
                let a = l.local_addr().map_err(bind_err("TLS", addr))?;
                Some((l, a, acceptor))
            }
            _ => None,
        };
        let addrs = TurnAddrs {
            udp: udp_addr,
            tcp: tcp_addr,
            tls: tls.as_ref().map(|(_, a, _)| *a),
        };

        let host = if t.public_host.is_empty() {
            bracket(announce[0])
        } else {
            t.public_host.clone()
        };
        let mut urls = vec![
            format!("turn:{host}:{}?transport=udp", udp_addr.port()),
            format!("turn:{host}:{}?transport=tcp", tcp_addr.port()),
        ];
        if let Some(a) = addrs.tls {
            urls.push(format!("turns:{host}:{}?transport=tcp", a.port()));
        }

        let conns = Arc::new(Semaphore::new(t.max_stream_connections as usize));
        let mut tasks = vec![
            tokio::spawn(serve_udp(shared.clone(), Arc::new(udp), udp_addr)),
            tokio::spawn(serve_tcp(
                shared.clone(),
                tcp,
                tcp_addr,
                None,
                conns.clone(),
            )),
            tokio::spawn(sweeper(shared.clone())),
        ];
        if let Some((l, a, acc)) = tls {
            tasks.push(tokio::spawn(serve_tcp(
                shared.clone(),
                l,
                a,
                Some(acc),
                conns,
            )));
        }
        tracing::info!(udp = %addrs.udp, tcp = %addrs.tcp, tls = ?addrs.tls, relay = %relay_public, urls = ?urls, "TURN server listening");
        Ok(Self {
            shared,
            addrs,
            embedded: EmbeddedTurn {
                urls,
                secret,
                ttl: Duration::from_secs(t.credential_ttl_secs),
            },
            tasks,
        })
    }

    /// The bound listener addresses.
    pub fn addrs(&self) -> TurnAddrs {
        self.addrs
    }

    /// The URLs handed to Peers (`turn:HOST:PORT?transport=udp`, `…tcp`, `turns:…` with TLS).
    pub fn urls(&self) -> &[String] {
        &self.embedded.urls
    }

    /// Mints credentials this server accepts, for `identity`, valid for `turn.credential_ttl_secs`.
    pub fn mint(&self, identity: &str) -> TurnCredential {
        self.embedded.mint(identity, SystemTime::now())
    }

    /// The counters.
    pub fn stats(&self) -> TurnStats {
        self.shared.stats()
    }

    pub(crate) fn embedded(&self) -> EmbeddedTurn {
        self.embedded.clone()
    }

    /// Stops the listeners and drops every allocation.
    pub async fn shutdown(self) {
        self.shared.cancel.cancel();
        self.shared.clear();
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(1), t).await;
        }
        let s = self.shared.stats();
        tracing::info!(?s, "TURN server stopped");
    }
}

fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<tokio_rustls::TlsAcceptor, TurnError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TurnError::Tls(format!("turn.tls_cert {}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(TurnError::Tls(format!(
            "turn.tls_cert {}: no certificate",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| TurnError::Tls(format!("turn.tls_key {}: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TurnError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TurnError::Tls(e.to_string()))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

/// Runs one frame through the engine; a panic is contained and counted, never propagated.
fn guarded(shared: &Arc<Shared>, five: FiveTuple, sink: &ClientSink, frame: &[u8]) {
    let r = std::panic::catch_unwind(AssertUnwindSafe(|| shared.handle_client(five, sink, frame)));
    if r.is_err() {
        shared
            .counters
            .malformed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::error!(client = %five.client, "TURN frame handler panicked; frame dropped");
    }
}

async fn serve_udp(shared: Arc<Shared>, sock: Arc<UdpSocket>, local: SocketAddr) {
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, from) = tokio::select! {
            _ = shared.cancel.cancelled() => return,
            r = sock.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(_) => continue,
            },
        };
        let five = FiveTuple {
            transport: Transport::Udp,
            client: from,
            server: local,
        };
        let sink = ClientSink::Udp(sock.clone(), from);
        guarded(&shared, five, &sink, &buf[..n]);
    }
}

async fn serve_tcp(
    shared: Arc<Shared>,
    listener: TcpListener,
    local: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    conns: Arc<Semaphore>,
) {
    loop {
        let (stream, from) = tokio::select! {
            _ = shared.cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(_) => {
                    // Out of descriptors or similar: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = conns.clone().try_acquire_owned() else {
            tracing::debug!(client = %from, "TURN stream connection refused: too many");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let five = FiveTuple {
                transport: if tls.is_some() {
                    Transport::Tls
                } else {
                    Transport::Tcp
                },
                client: from,
                server: local,
            };
            match tls {
                None => serve_stream(shared, stream, five).await,
                Some(acc) => match tokio::time::timeout(TLS_HANDSHAKE, acc.accept(stream)).await {
                    Ok(Ok(s)) => serve_stream(shared, s, five).await,
                    _ => tracing::debug!(client = %from, "TURN TLS handshake failed"),
                },
            }
        });
    }
}

/// Length of the first complete frame in `buf` (STUN message or padded ChannelData), `Ok(None)`
/// when more bytes are needed, `Err` when the stream is not TURN.
fn frame_len(buf: &[u8]) -> Result<Option<(usize, usize)>, ()> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    let (total, used) = match buf[0] >> 6 {
        0 => {
            if len % 4 != 0 {
                return Err(());
            }
            (20 + len, 20 + len)
        }
        1 => (4 + len.div_ceil(4) * 4, 4 + len),
        _ => return Err(()),
    };
    Ok((buf.len() >= total).then_some((total, used)))
}

async fn serve_stream<S>(shared: Arc<Shared>, stream: S, five: FiveTuple)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(STREAM_QUEUE);
    let queued = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sink = ClientSink::Stream(tx, queued.clone());
    let writer = async move {
        while let Some(b) = rx.recv().await {
            let ok = wr.write_all(&b).await.is_ok();
            queued.fetch_sub(b.len(), std::sync::atomic::Ordering::AcqRel);
            if !ok {
                break;
            }
        }
        let _ = wr.shutdown().await;
    };
    let reader = async {
        let mut buf: Vec<u8> = Vec::with_capacity(4096);
        let mut chunk = vec![0u8; 16384];
        let mut idle_at = tokio::time::Instant::now() + STREAM_IDLE;
        loop {
            loop {
                match frame_len(&buf) {
                    Ok(Some((total, used))) => {
                        guarded(&shared, five, &sink, &buf[..used]);
                        buf.drain(..total);
                        idle_at = tokio::time::Instant::now() + STREAM_IDLE;
                    }
                    Ok(None) => break,
                    Err(()) => {
                        shared
                            .counters
                            .malformed
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        return;
                    }
                }
            }
            match tokio::time::timeout_at(idle_at, rd.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return,
                Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
                Err(_) => {
                    if !shared.has_allocation(&five) {
                        return;
                    }
                    idle_at = tokio::time::Instant::now() + STREAM_IDLE;
                }
            }
        }
    };
    tokio::select! {
        _ = writer => {}
        _ = reader => {}
        _ = shared.cancel.cancelled() => {}
    }
    shared.remove(&five);
}

/// Expires state every second and logs the counters once a minute when they changed.
async fn sweeper(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    let mut logged = TurnStats::default();
    loop {
        tokio::select! {
            _ = shared.cancel.cancelled() => return,
            _ = tick.tick() => shared.sweep(),
        }
        n += 1;
        if n.is_multiple_of(60) {
            let s = shared.stats();
            if s != logged {
                tracing::info!(stats = ?s, "TURN counters");
                logged = s;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_framing() {
        assert_eq!(frame_len(&[0, 1, 0]), Ok(None));
        // STUN header with 4 bytes of attributes.
        let mut m = vec![0u8, 1, 0, 4];
        m.extend([0; 20]);
        assert_eq!(frame_len(&m), Ok(Some((24, 24))));
        assert_eq!(frame_len(&m[..23]), Ok(None));
        // ChannelData of 5 bytes, padded to 8.
        let cd = server::channel_data(0x4000, &[1, 2, 3, 4, 5], true);
        assert_eq!(cd.len(), 12);
        assert_eq!(frame_len(&cd), Ok(Some((12, 9))));
        assert_eq!(frame_len(&[0x80, 0, 0, 0]), Err(()));
        assert_eq!(frame_len(&[0, 1, 0, 3]), Err(()));
    }
}
