#![no_main]
//! `turn_message`: see `switchboard_gateway::fuzzing::turn_message`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    switchboard_gateway::fuzzing::turn_message(data);
});
