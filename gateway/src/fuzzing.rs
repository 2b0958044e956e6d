//! Fuzz bodies of the gateway crate (feature `testing`), called by the `fuzz/` targets and
//! replayed on stable by `tests/fuzz.rs`: the ICE-TCP RFC 4571 splitter and the embedded TURN
//! server's message handling (one frame, and a client's signed session). The core's bodies are in `switchboard_core::fuzzing`.

pub use crate::driver::framing::fuzz_ice_tcp_frames as ice_tcp_frames;
pub use crate::turn::fuzz_turn_message as turn_message;
pub use crate::turn::fuzz_turn_session as turn_session;
