//! persona: compile a creator's chat history into a KNN few-shot artifact and answer fans in the
//! creator's voice from it.
//!
//! The layers, from the outside in:
//! - [`commands`]: one module per subcommand, a short orchestration each; `main.rs` only parses
//!   the command line and prints one error.
//! - [`serve`]: the HTTP service over the same answer pipeline.
//! - [`answer`]: the answer pipeline: context, retrieval, signature, prompt, generate-check-retry
//!   and best-of-N, behind one [`answer::Responder`].
//! - [`filter`]: the topic filter and its figures on labelled sets; [`safety`]: the fan-message
//!   categories (minor, crisis) that hand a fan to a human, on the same machinery.
//! - [`eval`]: voice-fidelity metrics, the style profile and the report.
//! - [`artifact`] and [`index`]: the compiled file and the HNSW index inside it.
//! - [`conversation`]: messages, the training-data format and transcripts.
//! - Backends: [`embed`] (sentence embeddings and their cache), [`llm`] (the chat model client),
//!   [`history`] (the fan history store).
//! - [`config`], [`cli`] and [`paths`]: settings, the command-line types and locations;
//!   [`jsonl`]: reading the JSON-lines files every labelled set is written in.

pub mod answer;
pub mod artifact;
pub mod cli;
pub mod commands;
pub mod config;
pub mod conversation;
pub mod embed;
pub mod eval;
pub mod filter;
pub mod history;
pub mod index;
pub mod jsonl;
pub mod llm;
pub mod paths;
pub mod safety;
pub mod serve;
