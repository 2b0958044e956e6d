//! What the embedded server refuses and bounds: denied peers (403) and the gateway's own
//! addresses, lifetimes capped by the credential, the allocation quotas (486), a full relay port
//! range (508) and the per-allocation bitrate limit.

use super::*;

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
