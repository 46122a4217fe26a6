//! Nearest-neighbour search on real MiniLM embeddings: HNSW against exact search, the quick-start
//! model against the compile-time one, and `ask --dry-run` finding the training exchange a
//! question paraphrases.

mod common;

use common::{persona, shared_artifact};
use persona::conversation::transcript;
use persona::embed::{Embedder, FastEmbedder, Startup};
use persona::index::brute_force;
use persona::paths::Assets;

/// `ask` embeds its query with the quick-start model while the artifact's vectors come from the
/// fully optimized one: the two must agree, or the demos and the filter's scores would drift.
#[test]
fn the_quick_start_model_embeds_as_the_compile_time_model_does() {
    let artifact = persona::artifact::read(shared_artifact()).unwrap();
    let texts: Vec<String> = (0..artifact.conversations.len().min(64))
        .filter_map(|c| artifact.conversations.get(c).ok())
        .filter_map(|c| c.messages.last().map(|m| m.content.clone()))
        .collect();
    assert!(texts.len() >= 32, "{}", texts.len());
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let full = FastEmbedder::load(&Assets::locate(), 2, 32, Startup::Throughput)
        .unwrap()
        .embed(&refs)
        .unwrap();
    let quick = FastEmbedder::load(&Assets::locate(), 2, 32, Startup::Quick)
        .unwrap()
        .embed(&refs)
        .unwrap();
    for ((a, b), text) in full.iter().zip(&quick).zip(&texts) {
        let cosine = persona::embed::dot(a, b);
        assert!(cosine > 0.99999, "{cosine} for {text:?}");
    }
}

#[test]
fn hnsw_matches_exact_search_on_real_embeddings() {
    let artifact = persona::artifact::read(shared_artifact()).unwrap();
    let index = artifact.index(artifact.manifest.hnsw).unwrap();
    let mut embedder = FastEmbedder::load(&Assets::locate(), 2, 32, Startup::Throughput).unwrap();

    // Queries: the held-out conversations, rendered exactly as `ask` renders a query.
    let window = artifact.settings.retrieval.context_messages;
    let queries: Vec<String> = artifact
        .manifest
        .heldout
        .conversations
        .iter()
        .map(|&c| {
            let messages = artifact.conversations.get(c).unwrap().messages;
            transcript::embedding_text(&messages[..messages.len() - 1], window)
        })
        .collect();
    assert!(queries.len() >= 10);
    let refs: Vec<&str> = queries.iter().map(String::as_str).collect();
    let vectors = embedder.embed(&refs).unwrap();

    let k = 10;
    let mut found = 0;
    for q in &vectors {
        let exact: Vec<usize> = brute_force(&artifact.vectors, q, k)
            .unwrap()
            .iter()
            .map(|h| h.id)
            .collect();
        let approx = index.search(q, k).unwrap();
        assert_eq!(approx.len(), k);
        assert!(
            approx.windows(2).all(|w| w[0].score >= w[1].score),
            "nearest first"
        );
        found += approx.iter().filter(|h| exact.contains(&h.id)).count();
    }
    let recall = found as f64 / (k * vectors.len()) as f64;
    assert!(recall >= 0.95, "recall@{k} = {recall:.3}");

    // Every indexed vector finds itself first.
    for (i, v) in artifact.vectors.rows().unwrap().enumerate().step_by(7) {
        let top = index.search(v, 1).unwrap()[0];
        assert!(
            top.id == i || (top.score - 1.0).abs() < 1e-4,
            "example {i} found {top:?}"
        );
    }
}

#[test]
fn dry_run_retrieves_the_exchange_a_question_paraphrases() {
    // (paraphrase, id of the training conversation it paraphrases)
    let cases = [
        ("hold on, is gerald your cat or your plant?", "c027"),
        ("any song suggestions for a rainy evening?", "c055"),
    ];
    let artifact = shared_artifact().to_str().unwrap();
    for (question, conversation) in cases {
        let out = persona(&["ask", "--artifact", artifact, "--dry-run", "--json", question]).success();
        let out: serde_json::Value = serde_json::from_str(&out).unwrap();
        let demos = out["demos"].as_array().unwrap();
        let nearest = demos.last().unwrap();
        assert_eq!(nearest["conversation"], conversation, "{question}: {out}");
        assert!(nearest["score"].as_f64().unwrap() > 0.6, "{nearest}");
    }
}
