//! cargo-fuzz target `filter`: libFuzzer's bytes to `persona_fuzz::filter::run` (see its docs).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = persona_fuzz::filter::run(data);
});
