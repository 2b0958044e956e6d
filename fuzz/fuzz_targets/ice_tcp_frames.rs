#![no_main]
//! `ice_tcp_frames`: see `switchboard_gateway::fuzzing::ice_tcp_frames`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    switchboard_gateway::fuzzing::ice_tcp_frames(data);
});
