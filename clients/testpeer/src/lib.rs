//! A str0m-based WebRTC Peer for Switchboard's tests and load generators.
//!
//! [`PeerCore`] is sans-IO (time and datagrams in, datagrams out), so the core's in-process tests
//! drive it over a simulated network; [`UdpPeer`] drives one over a real UDP socket on a tokio task,
//! or, TCP-only ([`UdpPeer::tcp_only`]), over ICE-TCP connections with RFC 4571 framing.
//! A Peer is a full-ICE offerer like a browser: it can publish one audio and one video track (fake
//! Opus frames, with RED when asked; fake VP8, VP9, H264 or AV1 frames, simulcast layers
//! optional: key frames on request), open data channels, move and restart ICE, answer the
//! gateway's renegotiation offers, and it counts what it receives per Track id.

mod core;
pub mod fuzz;
mod stun;
mod tcp;
mod udp;

pub use crate::core::{
    Codecs, PeerCore, PeerStats, Publish, Received, SIMULCAST_FRAME_BYTES, TrackStats, av,
};
pub use crate::stun::stun_binding_request;
pub use crate::udp::{TcpStats, UdpPeer};
pub use str0m::channel::{ChannelConfig, Reliability};
pub use str0m::format::Codec;
pub use str0m::net::Protocol;

/// The base instant of a simulated run: the one clock read a sans-IO test needs (an `Instant`
/// cannot be made otherwise), taken here so that the code under test never reads the clock;
/// everything after it is the test's own time.
pub fn base_instant() -> std::time::Instant {
    std::time::Instant::now()
}
