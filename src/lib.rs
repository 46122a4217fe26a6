//! persona: compile a creator's chat history into a KNN few-shot artifact and answer fans in the
//! creator's voice from it.
//!
//! The binary in `main.rs` is a thin shell over [`run::run`]; each pipeline (`compile`, ...) is a
//! short orchestration of the stage modules below.

pub mod artifact;
pub mod ask;
pub mod check;
pub mod cli;
pub mod compile;
pub mod config;
pub mod context;
pub mod conversation_table;
pub mod dataset;
pub mod doctor;
pub mod embed;
pub mod embed_cache;
pub mod eval;
pub mod filter;
pub mod filter_eval;
pub mod flat;
pub mod history;
pub mod index;
pub mod inspect;
pub mod llm;
pub mod metrics;
pub mod normalize;
pub mod paths;
pub mod prompt;
pub mod refine;
pub mod report;
pub mod retrieve;
pub mod run;
pub mod runtime;
pub mod serve;
pub mod signature;
pub mod style;
pub mod transcript;
