//! Helpers shared by the crate's own unit tests (compiled only for `cargo test`): a gateway
//! config on loopback with free ports. It owns no runtime state and is never part of a build.

use crate::Config;

/// A gateway config for a unit test: gRPC on a free loopback port, free media ports, one Worker,
/// no TURN.
pub(crate) fn loopback_config() -> Config {
    let mut c = Config::default();
    c.grpc.listen = "127.0.0.1:0".parse().unwrap();
    c.media.port_base = 0;
    c.media.tcp_port_base = 0;
    c.media.workers = 1;
    c.turn.enabled = false;
    c
}
