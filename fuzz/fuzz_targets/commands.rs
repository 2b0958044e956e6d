#![no_main]
//! `commands`: see `switchboard_core::fuzzing::commands`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    switchboard_core::fuzzing::commands(std::time::Instant::now(), data);
});
