//! Scale: HNSW build, recall@10 against exact search, query latency, artifact size and `ask
//! --dry-run` cold start (process start to rendered prompt, LLM excluded) at growing sizes.
//!
//! `cargo bench --bench scale` (sizes from `PERSONA_BENCH_SIZES`, default `1000,10000,100000`).
//! Embedding a million texts takes over an hour here, so the large artifacts are synthetic: each
//! vector mixes two real MiniLM embeddings of the training data (0.75 / 0.25) plus a little noise,
//! which keeps them in the region real conversations occupy, unlike uniform random vectors; the
//! texts are the two source turns' texts. The real training data is compiled first (from the
//! embedding cache when warm) to supply the real vectors.

use std::process::Command;
use std::time::Instant;

use persona::artifact::{self, Artifact, CompiledFilter, Heldout};
use persona::compile;
use persona::config::{Config, Overrides};
use persona::dataset::{Conversation, Example, Message};
use persona::embed::{Embedder, FastEmbedder};
use persona::embed_cache::EmbedCache;
use persona::index::{brute_force, Index};
use persona::metrics::Rng;
use persona::paths::{self, Assets};

fn gaussian(rng: &mut Rng) -> f32 {
    // Box-Muller from two uniforms in (0, 1].
    let u = |r: &mut Rng| ((r.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
    let (a, b) = (u(rng), u(rng));
    ((-2.0 * a.ln()).sqrt() * (2.0 * std::f64::consts::PI * b).cos()) as f32
}

fn mix(real: &[Vec<f32>], rng: &mut Rng) -> (usize, usize, Vec<f32>) {
    let (a, b) = (rng.below(real.len()), rng.below(real.len()));
    let mut v: Vec<f32> = real[a]
        .iter()
        .zip(&real[b])
        .map(|(x, y)| 0.75 * x + 0.25 * y + 0.03 * gaussian(rng))
        .collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
    (a, b, v)
}

fn main() -> anyhow::Result<()> {
    let sizes: Vec<usize> = std::env::var("PERSONA_BENCH_SIZES")
        .unwrap_or_else(|_| "1000,10000,100000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let dir = tempfile::tempdir()?;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = Config::resolve(&Overrides {
        config: Some(root.join("persona.toml")),
        holdout: Some(0.0),
        ..Overrides::default()
    })?;
    let mut embedder = FastEmbedder::load(&Assets::locate(), config.embedding.effective_threads(), 32)?;
    let mut cache = EmbedCache::open(&paths::cache_dir().join("embeddings"), embedder.info());
    let real_path = dir.path().join("real.bin");
    compile::run(
        &config,
        &root.join("training_data/conversations.json"),
        &real_path,
        &mut embedder,
        &mut cache,
    )?;
    let real = artifact::read(&real_path)?;
    let reply_of = |e: &Example| {
        real.conversations[e.conversation as usize].messages[e.turn as usize]
            .content
            .clone()
    };
    let fan_of = |e: &Example| {
        real.conversations[e.conversation as usize].messages[..e.turn as usize]
            .iter()
            .rev()
            .find(|m| !m.from_creator)
            .map_or_else(String::new, |m| m.content.clone())
    };
    println!(
        "{} real vectors; cores: {}",
        real.vectors.len(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "| turns | hnsw build s | recall@10 (ef 64) | query ms | exact ms | artifact MB | cold start ms (median of 3) | of which model / artifact / index | peak RSS MB |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---|---:|");
    for &n in &sizes {
        let mut rng = Rng::new(42);
        let mut conversations = Vec::with_capacity(n);
        let mut vectors = Vec::with_capacity(n);
        for i in 0..n {
            let (a, b, v) = mix(&real.vectors, &mut rng);
            let (ea, eb) = (real.examples[a], real.examples[b]);
            conversations.push(Conversation {
                id: Some(format!("s{i}")),
                fan: None,
                messages: vec![
                    Message {
                        from_creator: false,
                        content: format!("{} {}", fan_of(&ea), fan_of(&eb)),
                        sent_at: None,
                    },
                    Message {
                        from_creator: true,
                        content: reply_of(&ea),
                        sent_at: None,
                    },
                ],
            });
            vectors.push(v);
        }
        let examples: Vec<Example> = (0..n as u32)
            .map(|c| Example {
                conversation: c,
                turn: 1,
            })
            .collect();
        let started = Instant::now();
        let index = Index::build(&vectors, config.index)?;
        let build = started.elapsed().as_secs_f64();

        let queries: Vec<Vec<f32>> = (0..200).map(|_| mix(&real.vectors, &mut rng).2).collect();
        let started = Instant::now();
        let exact: Vec<Vec<usize>> = queries
            .iter()
            .map(|q| brute_force(&vectors, q, 10).iter().map(|h| h.id).collect())
            .collect();
        let exact_ms = started.elapsed().as_secs_f64() * 1000.0 / queries.len() as f64;
        let started = Instant::now();
        let approx: Vec<Vec<usize>> = queries
            .iter()
            .map(|q| index.search(q, 10).iter().map(|h| h.id).collect())
            .collect();
        let query_ms = started.elapsed().as_secs_f64() * 1000.0 / queries.len() as f64;
        let found: usize = exact
            .iter()
            .zip(&approx)
            .map(|(e, a)| a.iter().filter(|id| e.contains(id)).count())
            .sum();
        let recall = found as f64 / (10 * queries.len()) as f64;

        let mut manifest = real.manifest.clone();
        manifest.examples = n;
        manifest.heldout = Heldout {
            fraction: 0.0,
            conversations: Vec::new(),
        };
        let synthetic = Artifact {
            manifest,
            settings: real.settings.clone(),
            conversations,
            examples,
            vectors,
            index: index.to_bytes()?,
            filter: CompiledFilter {
                examples: real.filter.examples.clone(),
                deflections: Vec::new(),
            },
            style: None,
        };
        let mut synthetic = synthetic;
        synthetic.style = Some(persona::runtime::style_profile(&synthetic));
        let path = dir.path().join(format!("synthetic-{n}.bin"));
        artifact::write(&path, &synthetic)?;
        drop(synthetic);
        let mb = std::fs::metadata(&path)?.len() as f64 / 1e6;

        let mut runs = Vec::new();
        for _ in 0..3 {
            let started = Instant::now();
            let out = Command::new("/usr/bin/time")
                .args(["-f", "rss %M"])
                .arg(env!("CARGO_BIN_EXE_persona"))
                .args([
                    "ask",
                    "--artifact",
                    path.to_str().unwrap_or_default(),
                    "--dry-run",
                    "can't sleep",
                ])
                .env("PERSONA_TIMINGS", "1")
                .env("PERSONA_CONFIG", root.join("persona.toml"))
                .output()?;
            let wall = started.elapsed().as_secs_f64() * 1000.0;
            anyhow::ensure!(
                out.status.success(),
                "ask failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            runs.push((wall, String::from_utf8_lossy(&out.stderr).into_owned()));
        }
        runs.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (wall, stderr) = &runs[1];
        let phase = |name: &str| {
            stderr
                .lines()
                .find(|l| l.contains(name))
                .and_then(|l| l.split_whitespace().rev().nth(1))
                .unwrap_or("?")
                .to_string()
        };
        let rss = stderr
            .lines()
            .find_map(|l| l.strip_prefix("rss "))
            .and_then(|k| k.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0;
        println!(
            "| {n} | {build:.1} | {recall:.3} | {query_ms:.3} | {exact_ms:.3} | {mb:.0} | {wall:.0} | {} / {} / {} | {rss:.0} |",
            phase("embedding model load"),
            phase("artifact read"),
            phase("hnsw index load"),
        );
        std::fs::remove_file(&path)?;
    }
    let _ = embedder.info();
    Ok(())
}
