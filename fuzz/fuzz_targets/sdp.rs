#![no_main]
//! `sdp`: see `switchboard_core::fuzzing::sdp`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    switchboard_core::fuzzing::sdp(std::time::Instant::now(), data);
});
