//! `switchboard-loadgen`: a load generator for Switchboard (and, for comparison, str0m's chat
//! example). It is a real backend over the gRPC API with str0m Peers over real UDP: Rooms ×
//! publishers × subscribers, publishers sending synthetic 30 fps VP8 and Opus, subscribers that
//! decrypt everything they receive and send honest RTCP/TWCC feedback.
//!
//! - `peer.rs`: one Peer (publishes, receives, counts: loss, lateness, join time).
//! - `vp8.rs`: the synthetic VP8 payloads and their send stamps.
//! - `delay.rs`: fixed-size histograms of one-way delay (audio and video), for percentiles.
//! - `media.rs`: the single media thread driving every Peer's socket (mio/epoll).
//! - `backend.rs`: signaling (Switchboard's gRPC API, or chat's HTTPS endpoint).
//! - `run.rs`: a run (fixed or ramp) and its measurement windows.
//! - `report.rs`: figures, the table and the JSON, `/proc` readings.
//!
//! It measures; it never decides anything for the SFU and holds no SFU logic.

mod backend;
mod delay;
mod media;
mod peer;
mod report;
mod run;
mod vp8;

pub use backend::Target;
pub use delay::OVERFLOW_MS;
pub use peer::{LATE_AFTER, PeerOptions};
pub use report::{Report, Step};
pub use run::{Options, Ramp, run};

/// What can go wrong in a run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A gRPC call failed.
    #[error("{call} failed: {status}")]
    Grpc {
        /// The RPC.
        call: &'static str,
        /// Its status.
        status: tonic::Status,
    },
    /// The gRPC connection failed.
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// A Peer rejected an SDP.
    #[error("SDP: {0}")]
    Sdp(#[from] str0m::RtcError),
    /// A socket or process failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// Signaling failed otherwise.
    #[error("signaling: {0}")]
    Signaling(String),
    /// The options make no sense.
    #[error("options: {0}")]
    Options(String),
    /// The media thread is gone.
    #[error("the media thread stopped")]
    MediaGone,
}
