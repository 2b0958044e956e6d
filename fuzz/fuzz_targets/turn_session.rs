#![no_main]
//! `turn_session`: see `switchboard_gateway::fuzzing::turn_session`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    switchboard_gateway::fuzzing::turn_session(data);
});
