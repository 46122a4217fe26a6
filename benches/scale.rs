//! Scale: the real `persona compile` and `ask --dry-run` on 1k to 1M creator turns, with HNSW
//! recall@10 against exact search and query latency, all in one run.
//!
//! `cargo bench --bench scale` (sizes from `PERSONA_BENCH_SIZES`, default `1000,10000,100000`;
//! add `1000000` for the million, about 25 minutes here). `PERSONA_BENCH_CONFIG=FILE` compiles
//! and answers with another configuration, e.g. `[index] m = 32` to compare HNSW parameters.
//!
//! Embedding a million texts takes over an hour on this machine class, so the vectors are
//! synthetic and everything else is real: each synthetic conversation is a fan message made of
//! two real fans' messages and a real creator reply, and its vector mixes the two real MiniLM
//! embeddings of those turns (0.75 / 0.25) plus a little noise, which keeps it in the region real
//! conversations occupy, unlike uniform random vectors. The vectors go into an embedding cache in
//! a private cache directory, keyed by exactly the text compile embeds, and then the real binary
//! compiles the dataset file (it finds every vector in the cache, so it embeds nothing) and
//! answers from the artifact; the bench measures both from outside (wall time, peak RSS) and
//! reads the artifact back to measure recall. They cluster around the training data's 586 turns,
//! which makes the HNSW's job easier than real data would: read the recall as an upper bound.
//! `PERSONA_BENCH_DATA=spread` builds a less repetitive set instead: random weights over three
//! real turns and more noise, so no cluster of near-copies forms.
//!
//! Each size is compiled with the parameters compile chooses for it (`HnswParams::for_examples`)
//! unless the configuration gives them; recall and query time are printed for every ef of the
//! sweep, and the similarity the misses cost at the artifact's own ef.
//!
//! Compile against raw embedding: compile finds every history vector in the cache, so what it
//! measures is everything but embedding the history (it still embeds the classifiers' corpora,
//! which the bench's fresh cache does not hold). The bench also embeds a sample of the very
//! texts compile would embed ([`EMBED_SAMPLE`], with compile's own thread and batch settings) and
//! prints the raw embedding rate and the share of a cold compile's time that embedding would
//! take: `embed / (embed + compile)`, the embedding time scaled from the sample.
//!
//! `PERSONA_BENCH_BASELINE=1` also builds each size's graph twice in this process with the
//! artifact's parameters over the same sketches, with hnsw_rs and with persona's own build, and
//! prints the build times, recall over the ef sweep and query time of each, with the ratio: the
//! same-run baseline for the build.
//!
//! `PERSONA_BENCH_KEEP=DIR` keeps each artifact as
//! `DIR/synthetic-<turns>-<data>-m<M>-efc<ef_construction>.bin`, so cold starts and queries can be
//! measured again later (e.g. on an idle machine) without rebuilding.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use persona::artifact;
use persona::artifact::Artifact;
use persona::commands::compile;
use persona::config::{Config, Overrides};
use persona::conversation::transcript;
use persona::embed::cache::{key, EmbedCache};
use persona::embed::{Embedder, FastEmbedder, Startup};
use persona::eval::metrics::Rng;
use persona::index::{self, brute_force, Hit, HnswParams, Index, Sketches};
use persona::paths::{self, Assets};

const QUERIES: usize = 200;
/// Texts of each size embedded for real to measure the raw embedding rate.
const EMBED_SAMPLE: usize = 1_000;
const EF_SWEEP: &[usize] = &[16, 32, 64, 128, 256, 512];

fn gaussian(rng: &mut Rng) -> f32 {
    // Box-Muller from two uniforms in (0, 1].
    let u = |r: &mut Rng| ((r.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
    let (a, b) = (u(rng), u(rng));
    ((-2.0 * a.ln()).sqrt() * (2.0 * std::f64::consts::PI * b).cos()) as f32
}

/// A synthetic vector near real turn `a`: 0.75 of it, 0.25 of turn `b`, a little noise. At 1M
/// turns each real turn has about 1,700 such near-copies around it.
fn mix(real: &[Vec<f32>], rng: &mut Rng) -> (usize, usize, Vec<f32>) {
    let (a, b) = (rng.below(real.len()), rng.below(real.len()));
    let v: Vec<f32> = real[a]
        .iter()
        .zip(&real[b])
        .map(|(x, y)| 0.75 * x + 0.25 * y + 0.03 * gaussian(rng))
        .collect();
    (a, b, unit(v))
}

/// The less repetitive set (`PERSONA_BENCH_DATA=spread`): random weights over three real turns
/// and more noise, so no two synthetic turns are near-copies of one real one.
fn spread(real: &[Vec<f32>], rng: &mut Rng) -> (usize, usize, Vec<f32>) {
    let ids = [
        rng.below(real.len()),
        rng.below(real.len()),
        rng.below(real.len()),
    ];
    let w: Vec<f32> = ids
        .iter()
        .map(|_| 0.1 + (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32)
        .collect();
    let v: Vec<f32> = (0..real[0].len())
        .map(|d| ids.iter().zip(&w).map(|(&i, w)| w * real[i][d]).sum::<f32>() + 0.08 * gaussian(rng))
        .collect();
    let (a, b) = if w[0] >= w[1] {
        (ids[0], ids[1])
    } else {
        (ids[1], ids[0])
    };
    (a, b, unit(v))
}

fn unit(mut v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
    v
}

/// Runs the persona binary under `/usr/bin/time`, returning its output and peak RSS in MB.
fn timed(args: &[&str], cache_dir: &Path, config: &Path) -> Result<(Output, f64, f64)> {
    let started = Instant::now();
    let out = Command::new("/usr/bin/time")
        .args(["-f", "rss %M"])
        .arg(env!("CARGO_BIN_EXE_persona"))
        .args(args)
        .env("PERSONA_TIMINGS", "1")
        .env("PERSONA_CACHE_DIR", cache_dir)
        .env("PERSONA_CONFIG", config)
        .output()
        .context("running /usr/bin/time (Debian package `time`)")?;
    let wall = started.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "persona {args:?} failed: {stderr}");
    let rss = stderr
        .lines()
        .find_map(|l| l.strip_prefix("rss "))
        .and_then(|k| k.trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0;
    Ok((out, wall, rss))
}

fn main() -> Result<()> {
    let sizes: Vec<usize> = std::env::var("PERSONA_BENCH_SIZES")
        .unwrap_or_else(|_| "1000,10000,100000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let dir = tempfile::tempdir()?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // The configuration compile runs with, so the sample is embedded with its settings.
    let config_path = std::env::var_os("PERSONA_BENCH_CONFIG")
        .map_or_else(|| root.join("persona.toml"), std::path::PathBuf::from);
    let config = Config::resolve(&Overrides {
        config: Some(config_path.clone()),
        holdout: Some(0.0),
        ..Overrides::default()
    })?;
    let window = config.retrieval.context_messages;
    let mut embedder = FastEmbedder::load(
        &Assets::locate(),
        config.embedding.effective_threads(),
        config.embedding.batch_size,
        Startup::Throughput,
    )?;
    let mut cache = EmbedCache::open(&paths::cache_dir().join("embeddings"), embedder.info());
    let real_path = dir.path().join("real.bin");
    compile::run(
        &config,
        &root.join("training_data/conversations.json"),
        &real_path,
        &mut embedder,
        &mut cache,
    )?;
    drop(cache);
    let real = artifact::read(&real_path)?;
    let turn_texts = |id: usize| -> Result<(String, String)> {
        let e = real.examples[id];
        let c = real.conversations.get(e.conversation as usize)?;
        let reply = c.messages[e.turn as usize].content.clone();
        let fan = c.messages[..e.turn as usize]
            .iter()
            .rev()
            .find(|m| !m.from_creator)
            .map_or_else(String::new, |m| m.content.clone());
        Ok((fan, reply))
    };
    let sources: Vec<(String, String)> = (0..real.examples.len()).map(turn_texts).collect::<Result<_>>()?;
    let real_rows: Vec<Vec<f32>> = real.vectors.rows()?.map(<[f32]>::to_vec).collect();
    let spread_data = std::env::var("PERSONA_BENCH_DATA").is_ok_and(|d| d == "spread");
    let synthetic = if spread_data { spread } else { mix };
    let keep = std::env::var_os("PERSONA_BENCH_KEEP").map(std::path::PathBuf::from);
    if let Some(dir) = &keep {
        std::fs::create_dir_all(dir).with_context(|| format!("creating `{}`", dir.display()))?;
    }
    let baseline = std::env::var("PERSONA_BENCH_BASELINE").is_ok_and(|b| b == "1");
    let mut baselines = Vec::new();
    println!(
        "data: {}",
        if spread_data {
            "spread (three real turns, random weights, noise 0.08)"
        } else {
            "clustered (0.75 / 0.25 of two real turns, noise 0.03)"
        }
    );

    // A private cache directory: the real assets, and an embedding cache the bench fills.
    let cache_dir = dir.path().join("cache");
    std::fs::create_dir_all(&cache_dir)?;
    std::os::unix::fs::symlink(paths::cache_dir().join("assets"), cache_dir.join("assets"))?;

    println!(
        "{} real vectors; cores: {}",
        real.vectors.len(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let sweep: Vec<String> = EF_SWEEP.iter().map(|ef| format!("ef {ef}")).collect();
    println!(
        "| turns | M / default ef | compile s | of which hnsw build s | compile peak RSS MB | artifact MB | raw embedding turns/s | embedding share of a cold compile | recall@10 {} | query ms, same efs | similarity lost per hit (default ef) | exact ms | cold start ms (median of 3) | of which model / artifact / index / query embed / search | ask peak RSS MB |",
        sweep.join(" / ")
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---|---|---:|---:|---:|---|---:|");
    for &n in &sizes {
        let mut rng = Rng::new(42);
        let mut conversations = Vec::with_capacity(n);
        let mut cache = EmbedCache::open(&cache_dir.join("embeddings"), embedder.info());
        let every = n.div_ceil(EMBED_SAMPLE).max(1);
        let mut sample = Vec::with_capacity(EMBED_SAMPLE);
        for i in 0..n {
            let (a, b, v) = synthetic(&real_rows, &mut rng);
            // The conversation number keeps every fan message distinct, so none is dropped as a
            // duplicate.
            let fan = format!("{} {} ({i})", sources[a].0, sources[b].0);
            let history = [persona::conversation::Message {
                from_creator: false,
                content: fan.clone(),
                sent_at: None,
            }];
            let text = transcript::embedding_text(&history, window);
            if i % every == 0 {
                sample.push(text.clone());
            }
            cache.insert(key(&text), v);
            conversations.push(serde_json::json!({
                "id": format!("s{i}"),
                "chat_history": {"messages": [{"from_creator": false, "content": fan}]},
                "output": sources[a].1,
            }));
        }
        cache.flush()?;
        drop(cache);
        let texts: Vec<&str> = sample.iter().map(String::as_str).collect();
        // One untimed batch first, so the rate does not include the runtime's first-call setup.
        embedder.embed(&texts[..texts.len().min(config.embedding.batch_size.max(1))])?;
        let started = Instant::now();
        for batch in texts.chunks(config.embedding.batch_size.max(1)) {
            embedder.embed(batch)?;
        }
        let embed_rate = texts.len() as f64 / started.elapsed().as_secs_f64();
        drop(sample);
        let data_path = dir.path().join(format!("synthetic-{n}.json"));
        std::fs::write(&data_path, serde_json::to_vec(&conversations)?)?;
        drop(conversations);

        let path = dir.path().join(format!("synthetic-{n}.bin"));
        let (out, compile_s, compile_rss) = timed(
            &[
                "compile",
                data_path.to_str().unwrap_or_default(),
                "-o",
                path.to_str().unwrap_or_default(),
                "--holdout",
                "0",
                "--json",
            ],
            &cache_dir,
            &config_path,
        )?;
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        ensure!(
            summary["embedded"] == 0 && summary["examples"] == n,
            "the compile should find all {n} vectors in the cache: {summary}"
        );
        let phases: Vec<String> = summary["phases"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                format!(
                    "{} {:.1} s",
                    p["phase"].as_str().unwrap_or("?"),
                    p["seconds"].as_f64().unwrap_or(f64::NAN)
                )
            })
            .collect();
        eprintln!("compile of {n} turns, by phase: {}", phases.join("; "));
        let hnsw_s = summary["phases"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["phase"] == "hnsw build"))
            .and_then(|p| p["seconds"].as_f64())
            .unwrap_or(f64::NAN);
        let mb = std::fs::metadata(&path)?.len() as f64 / 1e6;
        let embed_s = n as f64 / embed_rate;
        let embed_share = embed_s / (embed_s + compile_s);

        let compiled = artifact::read(&path)?;
        compiled.verify_all()?;
        let queries: Vec<Vec<f32>> = (0..QUERIES).map(|_| synthetic(&real_rows, &mut rng).2).collect();
        let started = Instant::now();
        let exact_hits: Vec<Vec<Hit>> = queries
            .iter()
            .map(|q| brute_force(&compiled.vectors, q, 10))
            .collect::<Result<_, _>>()?;
        let exact: Vec<Vec<usize>> = exact_hits
            .iter()
            .map(|hits| hits.iter().map(|h| h.id).collect())
            .collect();
        let exact_ms = started.elapsed().as_secs_f64() * 1000.0 / QUERIES as f64;
        let mut recalls = Vec::new();
        let mut query_ms = Vec::new();
        let mut gap = f64::NAN;
        let default = compiled.manifest.hnsw;
        for &ef in EF_SWEEP {
            let params = HnswParams {
                ef_search: ef,
                ..compiled.manifest.hnsw
            };
            let index = compiled.index(params)?;
            let (approx_hits, ms) = search_all(&index, &queries)?;
            query_ms.push(format!("{ms:.2}"));
            if ef == default.ef_search {
                // How much similarity the misses cost: exact minus found, rank by rank.
                let lost: f64 = exact_hits
                    .iter()
                    .zip(&approx_hits)
                    .flat_map(|(e, a)| e.iter().zip(a).map(|(e, a)| (e.score - a.score) as f64))
                    .sum();
                gap = lost / (10 * QUERIES) as f64;
            }
            recalls.push(format!("{:.3}", recall(&exact, &approx_hits)));
        }
        if baseline {
            baselines.push(compare_builds(n, &compiled, &queries, &exact)?);
        }
        drop(compiled);

        let mut runs = Vec::new();
        for _ in 0..3 {
            let (out, wall, rss) = timed(
                &[
                    "ask",
                    "--artifact",
                    path.to_str().unwrap_or_default(),
                    "--dry-run",
                    // An everyday message: one the safety stage hands off never reaches the search.
                    "what did you have for lunch today?",
                ],
                &cache_dir,
                &config_path,
            )?;
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            ensure!(
                stderr.contains("hnsw search"),
                "`ask --dry-run` answered without searching the index: {}{stderr}",
                String::from_utf8_lossy(&out.stdout)
            );
            runs.push((wall * 1000.0, stderr, rss));
        }
        runs.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (wall, stderr, rss) = &runs[1];
        let phase = |name: &str| {
            stderr
                .lines()
                .find(|l| l.contains(name))
                .and_then(|l| l.split_whitespace().rev().nth(1))
                .unwrap_or("?")
                .to_string()
        };
        println!(
            "| {n} | {} / {} | {compile_s:.1} | {hnsw_s:.1} | {compile_rss:.0} | {mb:.0} | {embed_rate:.1} | {embed_share:.3} | {} | {} | {gap:.4} | {exact_ms:.2} | {wall:.0} | {} / {} / {} / {} / {} | {rss:.0} |",
            default.m,
            default.ef_search,
            recalls.join(" / "),
            query_ms.join(" / "),
            phase("embedding model load"),
            phase("artifact read"),
            phase("hnsw index load"),
            phase("query embedding"),
            phase("hnsw search"),
        );
        match &keep {
            Some(dir) => {
                let kept = dir.join(format!(
                    "synthetic-{n}-{}-m{}-efc{}.bin",
                    if spread_data { "spread" } else { "clustered" },
                    default.m,
                    default.ef_construction
                ));
                if std::fs::rename(&path, &kept).is_err() {
                    std::fs::copy(&path, &kept)
                        .with_context(|| format!("keeping the artifact as `{}`", kept.display()))?;
                    std::fs::remove_file(&path)?;
                }
                eprintln!("kept {}", kept.display());
            }
            None => std::fs::remove_file(&path)?,
        }
        std::fs::remove_file(&data_path)?;
        std::fs::remove_dir_all(cache_dir.join("embeddings"))?;
    }
    if !baselines.is_empty() {
        println!();
        println!("persona's build against hnsw_rs's, same sketches, same parameters, in this process (`PERSONA_BENCH_BASELINE=1`):");
        println!("| turns | M / ef_construction / ef_search | build s: hnsw_rs / persona | build speed-up | recall@10 at ef {}: hnsw_rs <br> persona | query ms at the artifact's ef: hnsw_rs / persona |", EF_SWEEP.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(" / "));
        println!("|---:|---|---|---:|---|---|");
        for row in baselines {
            println!("{row}");
        }
    }
    let _ = embedder.info();
    Ok(())
}

/// Searches every query for its 10 nearest; the hits and the mean milliseconds per query.
fn search_all(index: &Index, queries: &[Vec<f32>]) -> Result<(Vec<Vec<Hit>>, f64)> {
    let started = Instant::now();
    let hits = queries
        .iter()
        .map(|q| index.search(q, 10))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((
        hits,
        started.elapsed().as_secs_f64() * 1000.0 / queries.len() as f64,
    ))
}

/// The share of the exact top 10s that the hits found.
fn recall(exact: &[Vec<usize>], hits: &[Vec<Hit>]) -> f64 {
    let found: usize = exact
        .iter()
        .zip(hits)
        .map(|(e, a)| a.iter().filter(|h| e.contains(&h.id)).count())
        .sum();
    found as f64 / (10 * exact.len()) as f64
}

/// Builds the graph over the sketches twice with the artifact's parameters, with hnsw_rs and
/// with persona's own build ([`index::build`]), and searches each the way `ask` does: the row of
/// the baseline table.
fn compare_builds(
    n: usize,
    compiled: &Artifact,
    queries: &[Vec<f32>],
    exact: &[Vec<usize>],
) -> Result<String> {
    let params = compiled.manifest.hnsw;
    let sketches = Sketches::quantize(&compiled.vectors)?;
    let started = Instant::now();
    let theirs = hnsw_rs_baseline::build(&sketches, params)?;
    let theirs_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let ours = index::build(&sketches, params)?;
    let ours_s = started.elapsed().as_secs_f64();
    let (mut cells, mut times) = (Vec::new(), Vec::new());
    for graph in [theirs, ours] {
        let mut recalls = Vec::new();
        for &ef in EF_SWEEP {
            let index = Index::new(
                graph.clone(),
                compiled.vectors.clone(),
                HnswParams {
                    ef_search: ef,
                    ..params
                },
            )?
            .with_sketches(Some(sketches.clone()))?;
            // One untimed pass, so each index is timed with its pages in memory.
            search_all(&index, queries)?;
            let (hits, ms) = search_all(&index, queries)?;
            recalls.push(format!("{:.3}", recall(exact, &hits)));
            if ef == params.ef_search {
                times.push(ms);
            }
        }
        cells.push(recalls.join(" / "));
    }
    Ok(format!(
        "| {n} | {} / {} / {} | {theirs_s:.1} / {ours_s:.1} | **{:.2}x** | {} | {} |",
        params.m,
        params.ef_construction,
        params.ef_search,
        theirs_s / ours_s,
        cells.join(" <br> "),
        times
            .iter()
            .map(|t| format!("{t:.3}"))
            .collect::<Vec<_>>()
            .join(" / "),
    ))
}

/// hnsw_rs's build over the same sketches, the baseline persona's own build is measured
/// against (persona built its graphs with it before, and no longer depends on it).
mod hnsw_rs_baseline {
    use anyhow::{bail, Result};
    use hnsw_rs::prelude::{Distance, Hnsw};
    use persona::artifact::flat::Flat;
    use persona::index::{sketch, Graph, HnswParams, Sketches};

    /// `C - dot`, where `C` is the largest dot two sketches can have: never negative, and in
    /// the order of the similarities persona's build compares.
    struct SketchDistance;

    impl Distance<i8> for SketchDistance {
        fn eval(&self, a: &[i8], b: &[i8]) -> f32 {
            (127.0 * 127.0 * a.len() as f32) - sketch::dot(a, b) as f32
        }
    }

    /// The graph hnsw_rs builds over `sketches` (in parallel), copied into persona's arrays.
    pub fn build(sketches: &Sketches, params: HnswParams) -> Result<Graph> {
        let n = sketches.len();
        let mut data = Vec::with_capacity(n);
        for i in 0..n {
            let Some(row) = sketches.get(i)? else {
                bail!("sketch {i} is missing")
            };
            data.push((row, i));
        }
        let hnsw = Hnsw::<i8, SketchDistance>::new(params.m, n, 16, params.ef_construction, SketchDistance);
        hnsw.parallel_insert_slice(&data);
        let mut levels = vec![0u8; n];
        let mut lists: Vec<Vec<Vec<u32>>> = vec![Vec::new(); n];
        for point in hnsw.get_point_indexation() {
            let (id, level) = (point.get_origin_id(), point.get_point_id().0);
            let mut layers: Vec<Vec<u32>> = point
                .get_neighborhood_id()
                .into_iter()
                .map(|l| l.into_iter().map(|nb| nb.d_id as u32).collect())
                .collect();
            layers.truncate(level as usize + 1);
            levels[id] = level;
            lists[id] = layers;
        }
        let (mut offsets, mut links, mut upper) = (vec![0u32], Vec::new(), vec![u32::MAX; n]);
        for node in &lists {
            links.extend_from_slice(node.first().map_or(&[][..], |l| &l[..]));
            offsets.push(links.len() as u32);
        }
        for (id, node) in lists.iter().enumerate() {
            if node.len() > 1 {
                upper[id] = (offsets.len() - 1) as u32;
                for list in &node[1..] {
                    links.extend_from_slice(list);
                    offsets.push(links.len() as u32);
                }
            }
        }
        Ok(Graph {
            levels: Flat::owned(levels),
            upper: Flat::owned(upper),
            offsets: Flat::owned(offsets),
            links: Flat::owned(links),
        })
    }
}
