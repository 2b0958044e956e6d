#![no_main]
//! `datagram`: see `switchboard_core::fuzzing::datagram`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    switchboard_core::fuzzing::datagram(std::time::Instant::now(), data);
});
