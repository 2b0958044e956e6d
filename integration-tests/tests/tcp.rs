//! ICE over TCP through the real gateway: str0m Peers whose only candidate is an active TCP one
//! reach a Worker's passive TCP listener (RFC 6544, RFC 4571 framing) and call UDP Peers; the
//! listener's limits (connections in total and per source, the first-check deadline, idle time,
//! framing) close only the offending connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use switchboard::v1 as pb;
use switchboard_gateway::Config;
use switchboard_integration_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

type Joined = (String, Arc<switchboard_testpeer::UdpPeer>);

/// A call in a new Room named `room`: Alice over ICE-TCP, Bob over UDP, media flowing both ways.
async fn tcp_call(
    gw: &switchboard_gateway::Gateway,
    room: &str,
) -> anyhow::Result<(Backend, Joined, Joined)> {
    let backend = Backend::new(Clients::connect(gw, None).await?, room).await?;
    let (sa, a) = backend.join_tcp("alice", av("chat")).await?;
    let (sb, b) = backend.join("bob", av("chat")).await?;
    media_both_ways(&backend, (&sa, &a), (&sb, &b), 10).await?;
    Ok((backend, (sa, a), (sb, b)))
}

/// One Worker (so every connection counts against the same limit), ICE-TCP on a free port.
fn tcp_config(max_connections: usize, idle_secs: u64) -> Config {
    let mut c = test_config();
    c.media.workers = 1;
    c.media.tcp_max_connections = max_connections;
    c.media.tcp_idle_timeout_secs = idle_secs;
    c
}

/// Waits until the gateway closes `s` (end of stream or reset), reading whatever it sends.
async fn closed_by_gateway(s: &mut TcpStream, within: Duration) -> anyhow::Result<()> {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(within, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .map_err(|_| anyhow::anyhow!("the gateway kept the connection open for {within:?}"))
}

/// Asserts `s` is still open after `for_`: no end of stream, no reset.
async fn still_open(s: &mut TcpStream, for_: Duration) {
    let mut buf = [0u8; 16];
    let r = tokio::time::timeout(for_, s.read(&mut buf)).await;
    assert!(r.is_err(), "expected an open, silent connection, got {r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_only_peer_calls_a_udp_peer_over_ice_tcp() -> anyhow::Result<()> {
    let gw = start(tcp_config(16, 30)).await?;
    assert_eq!(gw.tcp_addrs().len(), 1);
    let backend = Backend::new(Clients::connect(&gw, None).await?, "tcp-call").await?;
    let (sa, a) = backend.join_tcp("alice", av("chat")).await?;
    let (sb, b) = backend.join("bob", av("chat")).await?;
    media_both_ways(&backend, (&sa, &a), (&sb, &b), 20).await?;
    data_both_ways(&a, &b, b"over tcp", b"over udp").await?;
    // Alice has no UDP socket at all; her only candidate is active TCP (port 9, RFC 6544), and
    // everything she received came as RFC 4571 frames on one connection to the Worker.
    assert_eq!(a.addr.port(), 9);
    assert_eq!(a.with(|p| p.proto), switchboard_testpeer::Protocol::Tcp);
    let tcp = a.tcp_stats().expect("a TCP-only peer");
    assert_eq!(tcp.connections, 1, "{tcp:?}");
    // Each media frame Alice counted arrived as at least one RTP packet, i.e. one TCP frame.
    let media_frames: u64 = a.with(|p| p.stats.tracks.values().map(|t| t.frames).sum());
    assert!(media_frames >= 40, "{media_frames}");
    assert!(
        tcp.frames_received >= media_frames,
        "{tcp:?} < {media_frames}"
    );
    assert!(tcp.frames_sent >= 40, "{tcp:?}");
    assert!(b.tcp_stats().is_none());
    gw.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tcp_only_peers_call_each_other() -> anyhow::Result<()> {
    let gw = start(tcp_config(16, 30)).await?;
    let backend = Backend::new(Clients::connect(&gw, None).await?, "tcp-tcp").await?;
    let (sa, a) = backend.join_tcp("alice", av("chat")).await?;
    let (sb, b) = backend.join_tcp("bob", av("chat")).await?;
    media_both_ways(&backend, (&sa, &a), (&sb, &b), 20).await?;
    gw.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_are_closed_and_the_others_keep_working() -> anyhow::Result<()>
{
    // Two connections allowed; the idle timeout is long, so any close seen here is the limit.
    let gw = start(tcp_config(2, 60)).await?;
    let tcp_addr: SocketAddr = gw.tcp_addrs()[0];
    let backend = Backend::new(Clients::connect(&gw, None).await?, "tcp-limit").await?;
    let (sa, a) = backend.join_tcp("alice", av("chat")).await?;
    let (sb, b) = backend.join_tcp("bob", av("chat")).await?;
    media_both_ways(&backend, (&sa, &a), (&sb, &b), 10).await?;

    let mut third = TcpStream::connect(tcp_addr).await?;
    closed_by_gateway(&mut third, Duration::from_secs(10)).await?;

    media_keeps_flowing(&backend, (&sa, &a), (&sb, &b), "after the refusal").await?;
    assert_eq!(a.tcp_stats().unwrap().connections, 1);
    assert_eq!(b.tcp_stats().unwrap().connections, 1);
    gw.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_sends_a_check_is_closed_after_the_idle_timeout()
-> anyhow::Result<()> {
    let gw = start(tcp_config(16, 2)).await?;
    let tcp_addr: SocketAddr = gw.tcp_addrs()[0];
    let (backend, (sa, a), (sb, b)) = tcp_call(&gw, "tcp-idle").await?;

    let mut silent = TcpStream::connect(tcp_addr).await?;
    // Framed, well-formed STUN for nobody's ufrag: routed nowhere, so it does not count as life.
    let mut stray = TcpStream::connect(tcp_addr).await?;
    stray
        .write_all(&framed(&stun_binding_request(b"nobody:x")))
        .await?;
    // Not closed before the timeout (half of it is well before; a coarse bound, not a speed test).
    still_open(&mut silent, Duration::from_millis(800)).await;
    closed_by_gateway(&mut silent, Duration::from_secs(15)).await?;
    closed_by_gateway(&mut stray, Duration::from_secs(15)).await?;

    // The real Peer's connection carries checks and media, so it outlives the idle timeout.
    let (ta, tb) = (backend.tracks_of(&sa), backend.tracks_of(&sb));
    let fb = min_frames(&a, &tb);
    let fa = min_frames(&b, &ta);
    wait_until(Duration::from_secs(10), || {
        let (na, nb) = (min_frames(&b, &ta), min_frames(&a, &tb));
        if na >= fa + 20 && nb >= fb + 20 {
            Ok(())
        } else {
            Err(format!(
                "frames after the idle close: {} and {}",
                na - fa,
                nb - fb
            ))
        }
    })
    .await?;
    assert_eq!(a.tcp_stats().unwrap().connections, 1);
    gw.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_framing_closes_only_that_connection() -> anyhow::Result<()> {
    let gw = start(tcp_config(16, 60)).await?;
    let tcp_addr: SocketAddr = gw.tcp_addrs()[0];
    let (backend, (sa, a), (sb, b)) = tcp_call(&gw, "tcp-garbage").await?;

    // A length far above tcp_max_frame_bytes (what an HTTP request looks like as RFC 4571).
    let mut oversize = TcpStream::connect(tcp_addr).await?;
    oversize
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await?;
    // A zero length.
    let mut empty = TcpStream::connect(tcp_addr).await?;
    empty.write_all(&[0, 0, 0, 0]).await?;
    // A well-framed first message that is not STUN (RTP-looking).
    let mut not_stun = TcpStream::connect(tcp_addr).await?;
    let mut rtp = vec![0x80u8, 0x60, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1];
    rtp.extend_from_slice(&[0x55; 100]);
    not_stun.write_all(&framed(&rtp)).await?;
    // Random bytes.
    let mut noise = TcpStream::connect(tcp_addr).await?;
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let bytes: Vec<u8> = (0..4000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    noise.write_all(&bytes).await?;
    for (name, s) in [
        ("oversize", &mut oversize),
        ("empty", &mut empty),
        ("not stun", &mut not_stun),
        ("noise", &mut noise),
    ] {
        closed_by_gateway(s, Duration::from_secs(10))
            .await
            .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    }

    // The call in the same Room carries on, on the same connection.
    media_keeps_flowing(&backend, (&sa, &a), (&sb, &b), "after the garbage").await?;
    assert_eq!(a.tcp_stats().unwrap().connections, 1);
    gw.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_peer_that_hangs_up_is_disconnected_then_closed_after_the_grace_period()
-> anyhow::Result<()> {
    let mut c = tcp_config(16, 60);
    c.sessions.disconnect_grace_secs = 1;
    let gw = start(c).await?;
    let (backend, (sa, a), (sb, _)) = tcp_call(&gw, "tcp-gone").await?;
    a.stop();
    disconnected_then_closed(&backend, &sa, Duration::from_secs(20)).await?;
    // Bob is unaffected.
    assert!(
        !backend
            .events_of(&sb)
            .iter()
            .any(|k| matches!(k, pb::event::Kind::SessionDisconnected(_)))
    );
    gw.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_shutdown_a_tcp_peer_is_told_before_its_connection_closes() -> anyhow::Result<()> {
    let gw = start(tcp_config(16, 60)).await?;
    let backend = Backend::new(Clients::connect(&gw, None).await?, "tcp-shutdown").await?;
    let (sa, a) = backend.join_tcp("alice", av("chat")).await?;
    let (sb, b) = backend.join("bob", av("chat")).await?;
    media_both_ways(&backend, (&sa, &a), (&sb, &b), 5).await?;
    gw.shutdown().await;
    // The DTLS close_notify went out on the connection before the Worker closed it.
    wait_until(Duration::from_secs(5), || {
        if a.with(|p| p.stats.closed) {
            Ok(())
        } else {
            Err("the TCP peer was not told".into())
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tcp_disabled_there_is_no_listener() -> anyhow::Result<()> {
    let mut c = tcp_config(16, 30);
    c.media.tcp_enabled = false;
    let gw = start(c).await?;
    assert!(gw.tcp_addrs().is_empty());
    gw.shutdown().await;
    Ok(())
}

/// A TCP connection to `to` from the loopback address `from` (another host, as far as the
/// gateway can tell).
async fn connect_from(from: &str, to: SocketAddr) -> anyhow::Result<TcpStream> {
    let s = tokio::net::TcpSocket::new_v4()?;
    s.bind(SocketAddr::new(from.parse()?, 0))?;
    Ok(s.connect(to).await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_source_filling_its_quota_does_not_lock_out_another() -> anyhow::Result<()> {
    // Eight slots, four per source; neither the idle timeout nor the first-check deadline frees
    // a slot during the test, so only the per-source limit can let Alice in.
    let mut c = tcp_config(8, 60);
    c.media.tcp_max_connections_per_ip = 4;
    c.media.tcp_first_check_timeout_secs = 60;
    let gw = start(c).await?;
    let tcp_addr: SocketAddr = gw.tcp_addrs()[0];
    // One host opens as many connections as the Worker takes in total.
    let mut hogs = Vec::new();
    for _ in 0..8 {
        hogs.push(connect_from("127.0.0.2", tcp_addr).await?);
    }
    for h in &mut hogs[4..] {
        closed_by_gateway(h, Duration::from_secs(10)).await?;
    }
    still_open(&mut hogs[0], Duration::from_millis(300)).await;

    // A Peer on another address still connects, its checks for its live Session are answered,
    // and the call works.
    let (_, (_, a), _) = tcp_call(&gw, "tcp-per-source").await?;
    assert_eq!(a.tcp_stats().unwrap().connections, 1);
    gw.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_without_a_valid_check_is_closed_at_the_first_check_deadline()
-> anyhow::Result<()> {
    // The idle timeout is a minute: any close seen here is the one-second first-check deadline.
    let mut c = tcp_config(16, 60);
    c.media.tcp_first_check_timeout_secs = 1;
    let gw = start(c).await?;
    let tcp_addr: SocketAddr = gw.tcp_addrs()[0];
    let (backend, (sa, a), (sb, b)) = tcp_call(&gw, "tcp-first-check").await?;

    let mut silent = TcpStream::connect(tcp_addr).await?;
    // Well-formed STUN for nobody's ufrag: no Session accepts it, so it is no valid check.
    let mut stray = TcpStream::connect(tcp_addr).await?;
    stray
        .write_all(&framed(&stun_binding_request(b"nobody:x")))
        .await?;
    closed_by_gateway(&mut silent, Duration::from_secs(10)).await?;
    closed_by_gateway(&mut stray, Duration::from_secs(10)).await?;

    // Alice's connection passed its first check long ago: it stays, and media flows on it.
    media_keeps_flowing(&backend, (&sa, &a), (&sb, &b), "after the deadline").await?;
    assert_eq!(a.tcp_stats().unwrap().connections, 1);
    gw.shutdown().await;
    Ok(())
}

/// One RFC 4571 frame.
fn framed(msg: &[u8]) -> Vec<u8> {
    let mut f = (msg.len() as u16).to_be_bytes().to_vec();
    f.extend_from_slice(msg);
    f
}
