//! Stream connection slots of the TURN TCP listener (issue 16, defect 4): one source cannot
//! hold them all, and a connection that does not authenticate in time is closed.

use std::net::IpAddr;

use super::*;

/// A TCP connection to `to` from the loopback address `from`.
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind(SocketAddr::new(from.parse::<IpAddr>().unwrap(), 0))
        .unwrap();
    s.connect(to).await.unwrap()
}

/// Whether the server closes `s` (end of stream or reset) within `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    tokio::time::timeout(within, s.read_to_end(&mut Vec::new()))
        .await
        .is_ok()
}

#[tokio::test]
async fn one_source_cannot_take_every_stream_slot() {
    let (gw, a) = start_with(|c| {
        c.turn.max_stream_connections = 4;
        c.turn.max_stream_connections_per_ip = 2;
        // Long enough that no slot frees itself during the test.
        c.turn.first_request_timeout_secs = 60;
    })
    .await;
    let mut hogs = Vec::new();
    for _ in 0..4 {
        hogs.push(connect_from("127.0.0.2", a.tcp).await);
    }
    // Beyond its two, the source's connections are closed at once; its first two stay.
    assert!(closed_within(&mut hogs[2], WAIT).await);
    assert!(closed_within(&mut hogs[3], WAIT).await);
    assert!(!closed_within(&mut hogs[0], Duration::from_millis(300)).await);
    // Another source still gets a slot, and allocates.
    let (u, p) = creds("other-source");
    let mut c = TurnClient::tcp(a.tcp).await.unwrap();
    c.allocate(&u, &p)
        .await
        .expect("another source allocates while the first holds its quota");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_stream_connection_that_does_not_authenticate_in_time_is_closed() {
    let (gw, a) = start_with(|c| c.turn.first_request_timeout_secs = 1).await;
    // Sends nothing.
    let mut silent = TcpStream::connect(a.tcp).await.unwrap();
    // Sends only unauthenticated requests: Binding is answered, but it is no TURN use.
    let mut binder = TurnClient::tcp(a.tcp).await.unwrap();
    binder.binding().await.expect("Binding is answered");
    // Authenticates: stays.
    let (u, p) = creds("prompt");
    let mut ok = TurnClient::tcp(a.tcp).await.unwrap();
    ok.allocate(&u, &p).await.expect("allocation");

    // Closed after the deadline, long before the 30 s stream idle time.
    assert!(closed_within(&mut silent, Duration::from_secs(10)).await);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        binder.binding().await.is_err(),
        "the Binding-only connection was closed"
    );
    ok.refresh(600)
        .await
        .expect("the authenticated connection is still open");
    gw.shutdown().await;
}
