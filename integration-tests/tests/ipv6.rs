//! IPv6: a gateway that binds and announces `::1` carries a call between Peers on `::1`.

use switchboard_integration_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_over_ipv6_loopback() -> anyhow::Result<()> {
    let mut config = test_config();
    config.media.bind_ip = "::1".parse()?;
    let gw = start(config).await?;
    let mut backend = Backend::new(Clients::connect(&gw, None).await?, "v6").await?;
    backend.peer_ip = "::1".parse()?;
    let (sa, a) = backend.join("alice", av("chat")).await?;
    let (sb, b) = backend.join("bob", av("chat")).await?;
    media_both_ways(&backend, (&sa, &a), (&sb, &b), 20).await?;
    assert!(
        a.addr.is_ipv6() && b.addr.is_ipv6(),
        "the Peers really are on IPv6"
    );
    Ok(())
}

/// One dual-stack socket per Worker (`::`), both families announced: a Peer on IPv4 and a Peer on
/// IPv6 call each other through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dual_stack_gateway_joins_an_ipv4_and_an_ipv6_peer() -> anyhow::Result<()> {
    let mut config = test_config();
    config.media.bind_ip = "::".parse()?;
    config.media.announce_ips = vec!["127.0.0.1".parse()?, "::1".parse()?];
    let gw = start(config).await?;
    let mut backend = Backend::new(Clients::connect(&gw, None).await?, "dual").await?;
    let (sa, a) = backend.join("alice", av("chat")).await?;
    backend.peer_ip = "::1".parse()?;
    let (sb, b) = backend.join("bob", av("chat")).await?;
    media_both_ways(&backend, (&sa, &a), (&sb, &b), 20).await?;
    assert!(a.addr.is_ipv4() && b.addr.is_ipv6());
    Ok(())
}
