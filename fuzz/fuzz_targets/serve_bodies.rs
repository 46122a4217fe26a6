//! cargo-fuzz target `serve_bodies`: libFuzzer's bytes to `persona_fuzz::serve_bodies::run` (see its docs).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = persona_fuzz::serve_bodies::run(data);
});
