//! The demo never exposes Room creation beyond loopback without its own access token, and with a
//! token it lets only requests that carry it reach the page and the WebSocket.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends one HTTP/1.1 request with `headers` and returns the response head.
async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    text.split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_string()
}

fn status(head: &str) -> u16 {
    head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap()
}

async fn start(token: Option<&str>) -> SocketAddr {
    let (listener, addr) = switchboard_demo::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let token = token.map(str::to_string);
    tokio::spawn(async move {
        // The gateway address is never dialled: these requests stop before any gRPC call.
        switchboard_demo::serve(
            listener,
            "http://127.0.0.1:9".into(),
            None,
            token,
            std::future::pending(),
        )
        .await
        .unwrap();
    });
    addr
}

#[tokio::test]
async fn a_non_loopback_demo_without_a_token_is_refused() {
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let serve = switchboard_demo::serve(
        listener,
        "http://127.0.0.1:9".into(),
        None,
        None,
        std::future::pending(),
    );
    let err = tokio::time::timeout(std::time::Duration::from_secs(5), serve)
        .await
        .expect("refused at once, not served")
        .unwrap_err();
    assert!(err.to_string().contains("access token"), "{err}");
}

#[tokio::test]
async fn with_a_token_the_page_and_the_websocket_need_it() {
    let addr = start(Some("demo-token-0123456789")).await;
    // Without the token: refused before anything else.
    assert_eq!(status(&get(addr, "/", &[]).await), 401);
    assert_eq!(status(&get(addr, "/?token=wrong", &[]).await), 401);
    assert_eq!(status(&get(addr, "/ws?room=r&name=n", &[]).await), 401);
    assert_eq!(
        status(
            &get(
                addr,
                "/ws?room=r&name=n",
                &[("Cookie", "switchboard_demo_token=wrong")]
            )
            .await
        ),
        401
    );
    // Static scripts hold nothing secret.
    assert_eq!(status(&get(addr, "/switchboard.js", &[]).await), 200);
    // The right token opens the page and sets the cookie the WebSocket then carries.
    let head = get(addr, "/?token=demo-token-0123456789", &[]).await;
    assert_eq!(status(&head), 200, "{head}");
    assert!(
        head.to_ascii_lowercase().contains(
            "set-cookie: switchboard_demo_token=demo-token-0123456789; httponly; samesite=strict"
        ),
        "{head}"
    );
    // With the cookie the request reaches the WebSocket handler (which wants an upgrade).
    let ws = get(
        addr,
        "/ws?room=r&name=n",
        &[(
            "Cookie",
            "a=b; switchboard_demo_token=demo-token-0123456789",
        )],
    )
    .await;
    assert_ne!(status(&ws), 401, "{ws}");
    assert_ne!(status(&ws), 403, "{ws}");
    // A page of another origin cannot use the visitor's cookie.
    let cross = get(
        addr,
        "/ws?room=r&name=n",
        &[
            ("Cookie", "switchboard_demo_token=demo-token-0123456789"),
            ("Origin", "http://evil.example"),
        ],
    )
    .await;
    assert_eq!(status(&cross), 403, "{cross}");
}

#[tokio::test]
async fn on_loopback_without_a_token_the_demo_is_open() {
    let addr = start(None).await;
    assert_eq!(status(&get(addr, "/", &[]).await), 200);
    let same = get(addr, "/", &[("Origin", &format!("http://{addr}"))]).await;
    assert_eq!(status(&same), 200, "{same}");
}
