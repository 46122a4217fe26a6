//! Raw embedding throughput on fan-message-sized texts: batched (32 per model call, as the
//! serve embedding service batches at most) and one text per call, in one process.
//!
//! `cargo bench --bench embed` prints `batched_per_s` and `single_per_s`;
//! `eval/bench/serve-load.sh` divides the batched rate by the texts a request embeds to get the
//! ceiling a server's requests/s is compared with.

use std::time::Instant;

use persona::embed::{Embedder, FastEmbedder};
use persona::paths::Assets;

fn texts(n: usize) -> Vec<String> {
    let openers = [
        "hey wren",
        "good morning",
        "can't sleep",
        "guess what",
        "missed you",
    ];
    let topics = [
        "how was your day?",
        "my cat knocked over a plant",
        "work was brutal today",
        "what are you drinking tonight?",
    ];
    (0..n)
        .map(|i| {
            format!(
                "{}, {} {i}",
                openers[i % openers.len()],
                topics[(i / 5) % topics.len()]
            )
        })
        .collect()
}

fn rate(model: &mut FastEmbedder, texts: &[String], per_call: usize) -> f64 {
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let started = Instant::now();
    for chunk in refs.chunks(per_call) {
        model.embed(chunk).expect("embedding works");
    }
    texts.len() as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let threads = std::env::var("PERSONA_BENCH_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let mut model = FastEmbedder::load(&Assets::locate(), threads, 32)
        .expect("the embedding model loads (scripts/setup-assets.sh)");
    // Warm up, then measure.
    rate(&mut model, &texts(64), 32);
    let batched = rate(&mut model, &texts(2048), 32);
    let single = rate(&mut model, &texts(256), 1);
    println!("batched_per_s={batched:.1}");
    println!("single_per_s={single:.1}");
    println!("batched_over_single={:.2}", batched / single);
}
