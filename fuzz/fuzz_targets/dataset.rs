//! cargo-fuzz target `dataset`: libFuzzer's bytes to `persona_fuzz::dataset::run` (see its docs).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = persona_fuzz::dataset::run(data);
});
