//! `persona inspect`: the manifest of an artifact, for people and for scripts.
//!
//! Reading and verifying the file is `artifact`'s job; this module only words the result.

use std::fmt::Write as _;

use crate::artifact::Artifact;

/// The manifest and settings as one JSON value.
pub fn to_json(artifact: &Artifact) -> serde_json::Value {
    serde_json::json!({
        "manifest": artifact.manifest,
        "creator": artifact.settings.creator,
        "retrieval": artifact.settings.retrieval,
        "signature": artifact.settings.signature,
    })
}

/// A human-readable summary of the manifest.
pub fn to_text(artifact: &Artifact) -> String {
    let m = &artifact.manifest;
    let s = &artifact.settings;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "persona artifact, format {} (persona {})",
        m.format_version, m.persona_version
    );
    let _ = writeln!(out, "created      {}", m.created_at);
    let _ = writeln!(out, "creator      {} ({})", s.creator.name, s.creator.timezone);
    let _ = writeln!(
        out,
        "dataset      {} ({} conversations, {} messages, sha256 {})",
        m.dataset.path,
        m.dataset.conversations,
        m.dataset.messages,
        &m.dataset.sha256[..m.dataset.sha256.len().min(16)]
    );
    let _ = writeln!(
        out,
        "examples     {} indexed, {} duplicates dropped",
        m.examples, m.duplicates_dropped
    );
    let _ = writeln!(
        out,
        "held out     {} conversations (fraction {})",
        m.heldout.conversations.len(),
        m.heldout.fraction
    );
    let _ = writeln!(
        out,
        "embedding    {}, {} dims, {} pooling, max length {}, model sha256 {}",
        m.embedding.model_id,
        m.embedding.dims,
        m.embedding.pooling,
        m.embedding.max_length,
        &m.embedding.model_sha256[..m.embedding.model_sha256.len().min(16)]
    );
    let beam = match &artifact.sketches {
        Some(s) => format!(
            "beam on 8-bit sketches (scale {:.1}), hits rescored in f32",
            s.scale()
        ),
        None => "beam on f32 vectors".into(),
    };
    let _ = writeln!(
        out,
        "hnsw         M={} ef_construction={} ef_search={}, dot distance, {beam}",
        m.hnsw.m, m.hnsw.ef_construction, m.hnsw.ef_search
    );
    let _ = writeln!(
        out,
        "retrieval    k={} over the last {} messages",
        s.retrieval.k, s.retrieval.context_messages
    );
    let fields: Vec<&str> = s.signature.inputs.iter().map(|f| f.name.as_str()).collect();
    let _ = writeln!(
        out,
        "signature    {} -> {}",
        fields.join(", "),
        s.signature.output.name
    );
    out
}
