//! A minimal TURN client on the `turn-types` codec, over UDP, TCP or TLS (RFC 8656 framing on
//! streams), for the embedded server's tests and the coturn interop test.

use super::*;

pub(super) trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

pub(super) enum Conn {
    Udp(UdpSocket),
    Stream(Box<dyn Stream>, Vec<u8>),
}

/// What arrived from a peer through the relay.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Relayed {
    Data(SocketAddr, Vec<u8>),
    Channel(u16, Vec<u8>),
}

pub(super) struct TurnClient {
    pub(super) conn: Conn,
    /// Relayed data that arrived while waiting for a response.
    pub(super) queue: VecDeque<Relayed>,
    pub(super) realm: String,
    pub(super) nonce: String,
    pub(super) creds: Option<(String, String)>,
}

pub(super) type Attrs<'a> = &'a dyn Fn(&mut MessageWriteVec, TransactionId);

impl TurnClient {
    pub(super) async fn udp(server: SocketAddr) -> anyhow::Result<Self> {
        let s = UdpSocket::bind("127.0.0.1:0").await?;
        s.connect(server).await?;
        Ok(Self::new(Conn::Udp(s)))
    }

    pub(super) async fn tcp(server: SocketAddr) -> anyhow::Result<Self> {
        let s = TcpStream::connect(server).await?;
        Ok(Self::new(Conn::Stream(Box::new(s), Vec::new())))
    }

    pub(super) async fn tls(server: SocketAddr, ca_der: Vec<u8>) -> anyhow::Result<Self> {
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

    pub(super) fn new(conn: Conn) -> Self {
        Self {
            conn,
            queue: VecDeque::new(),
            realm: String::new(),
            nonce: String::new(),
            creds: None,
        }
    }

    pub(super) async fn send_raw(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        match &mut self.conn {
            Conn::Udp(s) => {
                s.send(bytes).await?;
            }
            Conn::Stream(s, _) => s.write_all(bytes).await?,
        }
        Ok(())
    }

    /// One frame (STUN message or ChannelData without padding).
    pub(super) async fn recv_frame(&mut self) -> anyhow::Result<Vec<u8>> {
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
    pub(super) async fn response(&mut self, tid: TransactionId) -> anyhow::Result<Vec<u8>> {
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

    pub(super) fn long_term(&self) -> Option<MessageIntegrityCredentials> {
        self.creds.as_ref().map(|(u, p)| {
            LongTermKeyCredentials::new(u.clone(), p.clone(), self.realm.clone()).into()
        })
    }

    /// Sends a request (signed when credentials and a nonce are known) and returns the
    /// response, with its MESSAGE-INTEGRITY checked when it is signed.
    pub(super) async fn transact(
        &mut self,
        method: Method,
        attrs: Attrs<'_>,
    ) -> anyhow::Result<Vec<u8>> {
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
    pub(super) async fn request(
        &mut self,
        method: Method,
        attrs: Attrs<'_>,
    ) -> Result<Vec<u8>, u16> {
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

    pub(super) async fn binding(&mut self) -> anyhow::Result<SocketAddr> {
        let resp = self.transact(BINDING, &|_, _| {}).await?;
        let m = Message::from_bytes(&resp).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        anyhow::ensure!(m.class() == MessageClass::Success, "binding failed");
        let x = m
            .attribute::<XorMappedAddress>()
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        Ok(x.addr(m.transaction_id()))
    }

    /// One UDP Allocate sent as it is ([`Self::transact`]: signed only when credentials and a
    /// nonce are known, no retry on a 401 or 438); its raw response.
    pub(super) async fn transact_allocate_udp(&mut self) -> anyhow::Result<Vec<u8>> {
        self.transact(ALLOCATE, &|b, _| {
            b.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
                .unwrap();
        })
        .await
    }

    /// Allocate with `username`/`password`: Ok(relayed address) or Err(error code).
    pub(super) async fn allocate(
        &mut self,
        username: &str,
        password: &str,
    ) -> Result<SocketAddr, u16> {
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

    pub(super) async fn create_permission(&mut self, peer: SocketAddr) -> Result<(), u16> {
        self.request(CREATE_PERMISSION, &|b, tid| {
            b.add_attribute(&XorPeerAddress::new(peer, tid)).unwrap();
        })
        .await
        .map(drop)
    }

    pub(super) async fn channel_bind(&mut self, ch: u16, peer: SocketAddr) -> Result<(), u16> {
        self.request(CHANNEL_BIND, &|b, tid| {
            b.add_attribute(&ChannelNumber::new(ch)).unwrap();
            b.add_attribute(&XorPeerAddress::new(peer, tid)).unwrap();
        })
        .await
        .map(drop)
    }

    pub(super) async fn refresh(&mut self, lifetime: u32) -> Result<(), u16> {
        self.request(REFRESH, &|b, _| {
            b.add_attribute(&Lifetime::new(lifetime)).unwrap();
        })
        .await
        .map(drop)
    }

    pub(super) async fn send_indication(
        &mut self,
        peer: SocketAddr,
        data: &[u8],
    ) -> anyhow::Result<()> {
        let mut b = Message::builder_indication(SEND, MessageWriteVec::new());
        let tid = b.transaction_id();
        b.add_attribute(&XorPeerAddress::new(peer, tid))?;
        b.add_attribute(&DataAttr::new(data))?;
        let bytes = b.finish();
        self.send_raw(&bytes).await
    }

    pub(super) async fn send_channel(&mut self, ch: u16, data: &[u8]) -> anyhow::Result<()> {
        let mut out = ch.to_be_bytes().to_vec();
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(data);
        if matches!(self.conn, Conn::Stream(..)) {
            out.resize(out.len().div_ceil(4) * 4, 0);
        }
        self.send_raw(&out).await
    }

    pub(super) async fn recv_relayed(&mut self) -> anyhow::Result<Relayed> {
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

pub(super) fn parse_relayed(f: &[u8]) -> Option<Relayed> {
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
