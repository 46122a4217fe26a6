//! The fuzz harnesses: one module per target, each a `run(bytes)` over library entry points.
//!
//! The cargo-fuzz targets in `fuzz_targets/` only hand libFuzzer's bytes to these functions, and
//! `tests/fuzz_regressions.rs` (in persona's own test suite, on stable) includes this file to run
//! the same functions on every saved crash input. `run` panics on a bug (a panic in persona or a
//! broken promise the harness asserts); otherwise it returns `Ok` when persona accepted the input
//! and `Err` with persona's message when it refused it. It does not own any parsing or checking
//! itself: that belongs to persona.

pub mod artifact;
pub mod dataset;
pub mod filter;
pub mod reply_parser;
pub mod serve_bodies;
