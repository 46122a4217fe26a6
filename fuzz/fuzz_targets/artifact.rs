//! cargo-fuzz target `artifact`: libFuzzer's bytes to `persona_fuzz::artifact::run` (see its docs).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = persona_fuzz::artifact::run(data);
});
