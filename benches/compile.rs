//! Compile throughput against raw fastembed throughput on the same texts, in one process.
//!
//! `cargo bench --bench compile` builds a fixed synthetic dataset (default 5,000 creator turns;
//! `PERSONA_BENCH_TURNS` changes it), embeds exactly the texts `compile` embeds with the bare
//! embedder (same model, threads and batch size), then runs the whole `compile` pipeline as a
//! first compile runs (empty embedding cache), and prints both rates, their ratio and where the
//! compile's time went. Everything but embedding (parsing, indexing, writing) should hide behind
//! it, so the ratio should be close to 1. Then it grows the dataset by 1% and compiles again with
//! the cache the first compile filled: only the new turns are embedded, so the embedding time
//! should be about 1% of the first.

use std::time::Instant;

use persona::commands::compile;
use persona::config::{Config, Overrides};
use persona::conversation::dataset;
use persona::conversation::transcript;
use persona::embed::cache::EmbedCache;
use persona::embed::{Embedder, FastEmbedder, Startup};
use persona::paths::Assets;

const OPENERS: &[&str] = &[
    "hey",
    "good morning",
    "can't sleep again",
    "how was your day",
    "i saw your new set",
    "quick question",
    "missed you",
    "guess what happened",
    "what are you drinking",
    "rainy here too",
];
const TOPICS: &[&str] = &[
    "my cat knocked over a plant",
    "work was brutal",
    "i started film photography",
    "found an old key at a flea market",
    "made soup from scratch",
    "my sister's wedding is next week",
    "the tomatoes finally came in",
    "listening to old vinyl",
    "got lost on a hike",
    "my car broke down",
    "reading a mystery novel",
    "learning to knit",
    "the power went out",
    "first snow of the year",
    "my dog learned a trick",
];
const REPLIES: &[&str] = &[
    "mm that sounds like a whole day, petal",
    "tell me everything~",
    "oh honey... come sit with me a while",
    "hehe that's the good stuff",
    "tiny joys, right? 🌿",
    "slow down with me for a second 🍵",
];

fn synthetic(turns: usize) -> String {
    let conversations: Vec<serde_json::Value> = (0..turns / 2)
        .map(|i| {
            let opener = OPENERS[i % OPENERS.len()];
            let topic = TOPICS[(i / OPENERS.len()) % TOPICS.len()];
            let n = i / (OPENERS.len() * TOPICS.len());
            serde_json::json!({
                "id": format!("s{i}"),
                "chat_history": {"messages": [
                    {"from_creator": false, "content": format!("{opener}! {topic} (day {n})")},
                    {"from_creator": true, "content": format!("{} #{i}", REPLIES[i % REPLIES.len()])},
                    {"from_creator": false, "content": format!("yeah, {topic} and then it got weirder, part {n}")},
                ]},
                "output": format!("{} ~{i}", REPLIES[(i + 3) % REPLIES.len()]),
            })
        })
        .collect();
    serde_json::to_string(&conversations).unwrap_or_default()
}

fn main() -> anyhow::Result<()> {
    let turns: usize = std::env::var("PERSONA_BENCH_TURNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    let dir = tempfile::tempdir()?;
    let data_path = dir.path().join("synthetic.json");
    std::fs::write(&data_path, synthetic(turns))?;

    let mut config = Config::resolve(&Overrides {
        holdout: Some(0.0),
        ..Overrides::default()
    })?;
    config.compile.holdout = 0.0;
    let threads = config.embedding.effective_threads();
    let batch = config.embedding.batch_size;
    let mut embedder = FastEmbedder::load(&Assets::locate(), threads, batch, Startup::Throughput)?;

    // The texts compile embeds, computed the way compile computes them.
    let conversations = dataset::parse(&std::fs::read(&data_path)?).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (examples, _) = dataset::examples(&conversations, config.retrieval.context_messages, |_| true);
    let texts: Vec<String> = examples
        .iter()
        .map(|e| {
            let c = &conversations[e.conversation as usize];
            transcript::embedding_text(&c.messages[..e.turn as usize], config.retrieval.context_messages)
        })
        .collect();
    println!(
        "dataset: {} conversations, {} creator turns; {threads} threads, batch {batch}",
        conversations.len(),
        texts.len()
    );

    embedder.embed(&texts.iter().take(64).map(String::as_str).collect::<Vec<_>>())?; // warm-up

    let started = Instant::now();
    for chunk in texts.chunks(batch) {
        embedder.embed(&chunk.iter().map(String::as_str).collect::<Vec<_>>())?;
    }
    let raw = started.elapsed().as_secs_f64();

    // The whole compile, as a user runs it the first time: an empty embedding cache.
    let cache_dir = dir.path().join("embeddings");
    let mut cache = EmbedCache::open(&cache_dir, embedder.info());
    let out = dir.path().join("bench.bin");
    let started = Instant::now();
    let summary = compile::run(&config, &data_path, &out, &mut embedder, &mut cache)?;
    let full = started.elapsed().as_secs_f64();
    drop(cache);

    let raw_tps = texts.len() as f64 / raw;
    let full_tps = summary.examples as f64 / full;
    println!("raw fastembed     {:>8.1} turns/s  ({raw:.2} s)", raw_tps);
    println!(
        "persona compile   {:>8.1} turns/s  ({full:.2} s: parse + embed + HNSW + write)",
        full_tps
    );
    println!("ratio compile/raw {:>8.3}", full_tps / raw_tps);
    for p in &summary.phases {
        println!("  {:<45} {:>8.2} s", p.phase, p.seconds);
    }

    // Incremental: the same dataset plus 1% more conversations, compiled again with the cache the
    // first compile filled. Only the new turns should be embedded.
    let grown = dir.path().join("grown.json");
    std::fs::write(&grown, synthetic(turns + turns / 100))?;
    let started = Instant::now();
    let mut cache = EmbedCache::open(&cache_dir, embedder.info());
    let again = compile::run(&config, &grown, &out, &mut embedder, &mut cache)?;
    let incremental = started.elapsed().as_secs_f64();
    let embed_phase = |s: &compile::Summary| {
        s.phases
            .iter()
            .find(|p| p.phase.starts_with("embed"))
            .map_or(f64::NAN, |p| p.seconds)
    };
    println!(
        "incremental +1%   {} of {} turns embedded; embedding {:.2} s vs {:.2} s full ({:.3} of it); whole compile {incremental:.2} s vs {full:.2} s ({:.3})",
        again.embedded,
        again.examples,
        embed_phase(&again),
        embed_phase(&summary),
        embed_phase(&again) / embed_phase(&summary),
        incremental / full
    );
    Ok(())
}
