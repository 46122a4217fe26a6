//! cargo-fuzz target `reply_parser`: libFuzzer's bytes to `persona_fuzz::reply_parser::run` (see its docs).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = persona_fuzz::reply_parser::run(data);
});
