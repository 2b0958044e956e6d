//! Interoperability with a reference server: a real coturn (`turnserver`, installed by
//! scripts/test.sh) accepts credentials minted by the gateway's function, driven by the same
//! client, which proves the shared-secret scheme and the client's protocol.

use super::*;
use crate::common::coturn_command;

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
        coturn_command(
            &bin,
            port,
            secret,
            &["--min-port=43000", "--max-port=43999"],
        )
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
