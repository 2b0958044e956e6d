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
//! Layout: [`settings`] (the `[turn]` and `[[ice_servers]]` keys), [`credentials`] (minting and
//! checking `expiry:identity` usernames, stateless nonces), `ice_servers` (which servers and
//! credentials a new Session gets), [`policy`] (deny/allow CIDRs and the gateway's own media
//! addresses), `server/` (the protocol engine: auth, sessions, allocations, permissions, relay),
//! `listeners` (sockets, stream framing, connection slots), this file (start, TLS, shutdown).
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
//! Credentials and Sessions: credentials are checked on every request and live
//! `turn.credential_ttl_secs` (10 minutes by default). The credentials the gateway mints for a
//! Session (identity = Session id) are tied to it: while this gateway knows the Session is live,
//! they keep working past that expiry for every request (Allocate too, so an ICE restart over
//! TURN works in a long call; Refresh, CreatePermission, ChannelBind), each lifetime granted at
//! most `allocation_max_lifetime_secs`; when the Session closes (its `SessionClosed` event), its
//! allocations end at once and every request with its credentials is refused with 401 until
//! they would have expired. The expiry still bounds them whenever the gateway does not know the
//! Session as live: after a restart with the same `turn.secret`, on another gateway sharing it,
//! or after its event subscription lagged. Any other identity (minted with [`TurnServer::mint`])
//! gets no lifetime past its credential's expiry and nothing after it.

pub mod credentials;
mod ice_servers;
mod listeners;
pub mod policy;
mod server;
pub mod settings;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;

pub use credentials::{
    CredentialError, TurnCredential, check_username, mint_credential, password_for,
};
pub use ice_servers::IceServer;
pub(crate) use ice_servers::IceServers;
pub use policy::{Cidr, PeerPolicy, PeerVerdict};
#[cfg(feature = "testing")]
#[doc(hidden)]
pub use server::fuzz::{fuzz_turn_message, fuzz_turn_session};
pub use server::{Transport, TurnStats};
pub use settings::{IceServerConfig, TurnConfig};

use crate::events::EventSubscription;
use listeners::{Slots, serve_tcp, serve_udp, sweeper};
use server::{RelayAddrs, Shared};

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
#[derive(Clone)]
pub(crate) struct EmbeddedTurn {
    pub(crate) urls: Vec<String>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for EmbeddedTurn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedTurn")
            .field("urls", &self.urls)
            .finish_non_exhaustive()
    }
}

impl EmbeddedTurn {
    /// The embedded TURN server's counters (for the metrics).
    pub(crate) fn stats(&self) -> TurnStats {
        self.shared.stats()
    }

    /// Fresh credentials for the Session `identity`, which from now on counts as live (see the
    /// module docs) until its `SessionClosed`.
    pub(crate) fn mint_for_session(&self, identity: &str, now: SystemTime) -> TurnCredential {
        self.shared.session_started(identity);
        self.shared.mint(identity, now)
    }
}

/// A running embedded TURN server.
pub struct TurnServer {
    shared: Arc<Shared>,
    addrs: TurnAddrs,
    urls: Vec<String>,
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
        let relay = RelayAddrs {
            bind: relay_bind,
            public: relay_public,
        };
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed).map_err(|e| TurnError::Config(e.to_string()))?;
        let shared = Arc::new(Shared::new(t.clone(), secret, relay, policy, &seed));

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

        let slots = Arc::new(Slots::new(
            t.max_stream_connections as usize,
            t.max_stream_connections_per_ip as usize,
            Duration::from_secs(t.first_request_timeout_secs),
        ));
        let mut tasks = vec![
            tokio::spawn(serve_udp(shared.clone(), Arc::new(udp), udp_addr)),
            tokio::spawn(serve_tcp(
                shared.clone(),
                tcp,
                tcp_addr,
                None,
                slots.clone(),
            )),
            tokio::spawn(sweeper(shared.clone())),
        ];
        if let Some((l, a, acc)) = tls {
            tasks.push(tokio::spawn(serve_tcp(
                shared.clone(),
                l,
                a,
                Some(acc),
                slots,
            )));
        }
        tracing::info!(udp = %addrs.udp, tcp = %addrs.tcp, tls = ?addrs.tls, relay = %relay_public, urls = ?urls, "TURN server listening");
        Ok(Self {
            shared,
            addrs,
            urls,
            tasks,
        })
    }

    /// Revokes the identity of every Session that closes on `events` (the gateway's bus): see
    /// the module docs.
    pub(crate) fn revoke_closed_sessions(&mut self, events: EventSubscription) {
        let shared = self.shared.clone();
        self.tasks.push(tokio::spawn(shared.watch_sessions(events)));
    }

    /// Ends every allocation of `identity` and refuses its credentials (401) until they would
    /// have expired (`turn.credential_ttl_secs` from now). The gateway calls it for each Session
    /// that closes; an embedder may call it for identities it minted.
    pub fn revoke(&self, identity: &str) {
        self.shared.revoke(identity);
    }

    /// The bound listener addresses.
    pub fn addrs(&self) -> TurnAddrs {
        self.addrs
    }

    /// The URLs handed to Peers (`turn:HOST:PORT?transport=udp`, `…tcp`, `turns:…` with TLS).
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// Mints credentials this server accepts, for `identity`, valid for `turn.credential_ttl_secs`
    /// (not tied to a Session: no lifetime past their expiry).
    pub fn mint(&self, identity: &str) -> TurnCredential {
        self.shared.mint(identity, SystemTime::now())
    }

    /// The counters.
    pub fn stats(&self) -> TurnStats {
        self.shared.stats()
    }

    pub(crate) fn embedded(&self) -> EmbeddedTurn {
        EmbeddedTurn {
            urls: self.urls.clone(),
            shared: self.shared.clone(),
        }
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
