//! Raw embedding throughput on fan-message-sized texts: batched (32 per model call, as the
//! serve embedding service batches at most) and one text per call, in one process; then the
//! two ways of loading the model ([`Startup`]) against each other in the same process: load
//! time, batched rate and how far their vectors differ.
//!
//! `cargo bench --bench embed` prints `batched_per_s` and `single_per_s` (the
//! [`Startup::Throughput`] model, which compile and the server use), then `quick_*` figures and
//! their ratios; `eval/bench/serve-load.sh` divides the batched rate by the texts a request
//! embeds to get the ceiling a server's requests/s is compared with.

use std::time::Instant;

use persona::embed::{Embedder, FastEmbedder, Startup};
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
    let assets = Assets::locate();
    let load = |startup| {
        let started = Instant::now();
        let model = FastEmbedder::load(&assets, threads, 32, startup)
            .expect("the embedding model loads (scripts/setup-assets.sh)");
        (model, started.elapsed().as_secs_f64() * 1000.0)
    };
    let (mut model, _) = load(Startup::Throughput);
    // Warm up, then measure.
    rate(&mut model, &texts(64), 32);
    let batched = rate(&mut model, &texts(2048), 32);
    let single = rate(&mut model, &texts(256), 1);
    println!("batched_per_s={batched:.1}");
    println!("single_per_s={single:.1}");
    println!("batched_over_single={:.2}", batched / single);

    // Load each way five times, alternating, and keep the median.
    let mut loads: [Vec<f64>; 2] = Default::default();
    for _ in 0..5 {
        for (i, startup) in [Startup::Throughput, Startup::Quick].into_iter().enumerate() {
            loads[i].push(load(startup).1);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (full_ms, quick_ms) = (median(&mut loads[0]), median(&mut loads[1]));
    let (mut quick, _) = load(Startup::Quick);
    rate(&mut quick, &texts(64), 32);
    let quick_batched = rate(&mut quick, &texts(2048), 32);
    let batched_again = rate(&mut model, &texts(2048), 32);
    let probe = texts(256);
    let refs: Vec<&str> = probe.iter().map(String::as_str).collect();
    let a = model.embed(&refs).expect("embedding works");
    let b = quick.embed(&refs).expect("embedding works");
    let lowest_cosine = a
        .iter()
        .zip(&b)
        .map(|(x, y)| persona::embed::dot(x, y))
        .fold(f32::INFINITY, f32::min);
    println!("throughput_load_ms={full_ms:.1}");
    println!("quick_load_ms={quick_ms:.1}");
    println!("quick_over_throughput_load={:.2}", quick_ms / full_ms);
    println!("quick_batched_per_s={quick_batched:.1}");
    println!(
        "quick_over_throughput_batched={:.2}",
        quick_batched / batched_again
    );
    println!("lowest_cosine_quick_vs_throughput={lowest_cosine:.7}");
}
