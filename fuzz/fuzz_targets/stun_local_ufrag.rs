#![no_main]
//! `stun_local_ufrag`: see `switchboard_core::fuzzing::stun_local_ufrag`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    switchboard_core::fuzzing::stun_local_ufrag(data);
});
