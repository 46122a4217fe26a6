//! `persona eval --retrieval`: how good the chosen demos are, with no LLM.
//!
//! For every held-out turn, each retriever picks k training examples and is scored by how close
//! their gold replies are to the creator's real reply (cosine of sentence embeddings): the best
//! of the k and their mean. Retrievers: `knn` (the real pipeline's choice), `random_k` (k at
//! random), `bm25` (lexical, over the same rendered context the embeddings see) and `oracle`
//! (the k training replies closest to the real reply: the upper bound). Also the share of demos
//! that come from the same kind of exchange, by the mood classifier's reading of the fan's last
//! messages (when the artifact has one). Means carry bootstrap intervals, and the paired
//! differences say whether `knn` beats the baselines on the same turns. The scoring here is pure;
//! [`run`] gathers the inputs from a loaded persona.

use std::collections::{BTreeMap, HashMap};

use anyhow::Result;
use serde::Serialize;

use super::metrics::{self, Interval};
use super::{Item, BOOTSTRAP};
use crate::answer::{DemoMode, Persona};
use crate::conversation::transcript;
use crate::conversation::Message;
use crate::embed::dot;

/// The retrievers, in report order.
pub const RETRIEVERS: [&str; 4] = ["knn", "random_k", "bm25", "oracle"];

/// One retriever's scores over the held-out turns.
#[derive(Debug, Clone, Serialize)]
pub struct Scores {
    /// Mean over turns of the best demo's similarity to the real reply.
    pub best: Interval,
    /// Mean over turns of the demos' mean similarity to the real reply.
    pub mean: Interval,
    /// Share of demos from the same kind of exchange (same mood reading), when known.
    pub same_kind: Option<f64>,
}

/// The retrieval report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Held-out turns scored.
    pub turns: usize,
    /// Demos per turn.
    pub k: usize,
    /// Scores per retriever (`knn`, `random_k`, `bm25`, `oracle`).
    pub retrieval: BTreeMap<String, Scores>,
    /// Paired differences on `best`, e.g. `knn - random_k`.
    pub differences: BTreeMap<String, Interval>,
}

/// The per-turn similarities of one retriever: (best, mean).
fn similarities(real: &[f32], demos: &[&[f32]]) -> (f64, f64) {
    if demos.is_empty() {
        return (0.0, 0.0);
    }
    let sims: Vec<f64> = demos.iter().map(|d| f64::from(dot(real, d))).collect();
    let best = sims.iter().copied().fold(f64::MIN, f64::max);
    (best, sims.iter().sum::<f64>() / sims.len() as f64)
}

/// Okapi BM25 over word tokens (k1 1.2, b 0.75).
pub struct Bm25 {
    docs: Vec<HashMap<String, f64>>,
    lengths: Vec<f64>,
    average: f64,
    df: HashMap<String, f64>,
}

fn tokens(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric() && c != '\'')
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

impl Bm25 {
    const K1: f64 = 1.2;
    const B: f64 = 0.75;

    /// The index of `docs`.
    pub fn new(docs: &[String]) -> Self {
        let mut df: HashMap<String, f64> = HashMap::new();
        let mut bags = Vec::with_capacity(docs.len());
        let mut lengths = Vec::with_capacity(docs.len());
        for d in docs {
            let words = tokens(d);
            lengths.push(words.len() as f64);
            let mut bag: HashMap<String, f64> = HashMap::new();
            for w in words {
                *bag.entry(w).or_default() += 1.0;
            }
            for w in bag.keys() {
                *df.entry(w.clone()).or_default() += 1.0;
            }
            bags.push(bag);
        }
        let average = lengths.iter().sum::<f64>() / lengths.len().max(1) as f64;
        Bm25 {
            docs: bags,
            lengths,
            average: average.max(1.0),
            df,
        }
    }

    /// The score of document `i` for `query`.
    pub fn score(&self, query: &str, i: usize) -> f64 {
        let n = self.docs.len() as f64;
        let mut query_words = tokens(query);
        query_words.sort();
        query_words.dedup();
        query_words
            .iter()
            .filter_map(|w| {
                let tf = *self.docs[i].get(w)?;
                let df = self.df.get(w).copied().unwrap_or(0.0);
                let idf = ((n - df + 0.5) / (df + 0.5) + 1.0).ln();
                let norm = Self::K1 * (1.0 - Self::B + Self::B * self.lengths[i] / self.average);
                Some(idf * tf * (Self::K1 + 1.0) / (tf + norm))
            })
            .sum()
    }

    /// The `k` best documents for `query`, best first (ties: the lower index).
    pub fn top(&self, query: &str, k: usize) -> Vec<usize> {
        let mut scored: Vec<(f64, usize)> = (0..self.docs.len()).map(|i| (self.score(query, i), i)).collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        scored.into_iter().take(k).map(|(_, i)| i).collect()
    }
}

/// The `k` rows of `vectors` closest to `query`, best first.
fn nearest(vectors: &[Vec<f32>], query: &[f32], k: usize) -> Vec<usize> {
    let mut scored: Vec<(f32, usize)> = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| (dot(v, query), i))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.into_iter().take(k).map(|(_, i)| i).collect()
}

/// Every turn's picks per retriever, as training example ids, with the inputs scoring needs.
pub struct Picks {
    /// `picks[retriever][turn]`: the example ids chosen.
    pub picks: BTreeMap<&'static str, Vec<Vec<usize>>>,
    /// The real replies' vectors, per turn.
    pub real: Vec<Vec<f32>>,
    /// The training replies' vectors, per example id.
    pub replies: Vec<Vec<f32>>,
    /// The kind of each turn's exchange and of each example's, when known.
    pub kinds: Option<(Vec<String>, Vec<String>)>,
}

/// Scores the picks: intervals per retriever and the paired differences against `knn`.
pub fn score(p: &Picks, k: usize, seed: u64) -> Report {
    let mut retrieval = BTreeMap::new();
    let mut bests: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for (name, turns) in &p.picks {
        let (mut best, mut mean, mut same, mut total) = (Vec::new(), Vec::new(), 0usize, 0usize);
        for (t, ids) in turns.iter().enumerate() {
            let demos: Vec<&[f32]> = ids
                .iter()
                .filter_map(|&i| p.replies.get(i).map(Vec::as_slice))
                .collect();
            let (b, m) = similarities(&p.real[t], &demos);
            best.push(b);
            mean.push(m);
            if let Some((turn_kinds, example_kinds)) = &p.kinds {
                same += ids
                    .iter()
                    .filter(|&&i| example_kinds.get(i) == turn_kinds.get(t))
                    .count();
                total += ids.len();
            }
        }
        retrieval.insert(
            name.to_string(),
            Scores {
                best: metrics::bootstrap(&best, BOOTSTRAP, seed),
                mean: metrics::bootstrap(&mean, BOOTSTRAP, seed),
                same_kind: p.kinds.as_ref().map(|_| same as f64 / total.max(1) as f64),
            },
        );
        bests.insert(name, best);
    }
    let mut differences = BTreeMap::new();
    if let Some(knn) = bests.get("knn") {
        for (a, b) in [("knn", "random_k"), ("knn", "bm25"), ("oracle", "knn")] {
            let (x, y) = if a == "knn" {
                (Some(knn), bests.get(b))
            } else {
                (bests.get(a), Some(knn))
            };
            if let (Some(x), Some(y)) = (x, y) {
                let diffs: Vec<f64> = x.iter().zip(y).map(|(x, y)| x - y).collect();
                differences.insert(format!("{a} - {b}"), metrics::bootstrap(&diffs, BOOTSTRAP, seed));
            }
        }
    }
    Report {
        turns: p.real.len(),
        k,
        retrieval,
        differences,
    }
}

/// Gathers every retriever's picks for `items` from the persona, then scores them.
pub fn run(persona: &Persona, items: &[Item], seed: u64) -> Result<Report> {
    let a = &persona.artifact;
    let k = persona.k();
    let window = a.settings.retrieval.context_messages;
    // The training examples: their rendered context (what their vectors embed), their gold
    // reply, and the conversation before it.
    let mut contexts = Vec::with_capacity(a.examples.len());
    let mut replies = Vec::with_capacity(a.examples.len());
    let mut befores: Vec<Vec<Message>> = Vec::with_capacity(a.examples.len());
    for (before, reply) in super::training_turns(persona)? {
        contexts.push(transcript::embedding_text(&before, window));
        replies.push(reply.content);
        befores.push(before);
    }
    let reply_refs: Vec<&str> = replies.iter().map(String::as_str).collect();
    let reply_vectors = persona.embed(&reply_refs)?;
    let real_refs: Vec<&str> = items.iter().map(|i| i.real.as_str()).collect();
    let real = persona.embed(&real_refs)?;
    let bm25 = Bm25::new(&contexts);
    let mut picks: BTreeMap<&'static str, Vec<Vec<usize>>> = BTreeMap::new();
    for (t, item) in items.iter().enumerate() {
        let knn = persona.choose_demos(&item.history, DemoMode::Nearest)?;
        let random = persona.choose_demos(&item.history, DemoMode::Random(seed.wrapping_add(t as u64)))?;
        picks
            .entry("knn")
            .or_default()
            .push(knn.iter().map(|d| d.id).collect());
        picks
            .entry("random_k")
            .or_default()
            .push(random.iter().map(|d| d.id).collect());
        let query = transcript::embedding_text(&item.history, window);
        picks.entry("bm25").or_default().push(bm25.top(&query, k));
        picks
            .entry("oracle")
            .or_default()
            .push(nearest(&reply_vectors, &real[t], k));
    }
    let kinds = if persona.has_mood() {
        let mood = |h: &[Message]| {
            persona
                .read_mood(h)
                .map(|m| m.unwrap_or_else(|| "neutral".into()))
        };
        let turn_kinds = items
            .iter()
            .map(|i| mood(&i.history))
            .collect::<Result<Vec<_>>>()?;
        let example_kinds = befores.iter().map(|b| mood(b)).collect::<Result<Vec<_>>>()?;
        Some((turn_kinds, example_kinds))
    } else {
        None
    };
    Ok(score(
        &Picks {
            picks,
            real,
            replies: reply_vectors,
            kinds,
        },
        k,
        seed,
    ))
}

/// The report as Markdown.
pub fn markdown(r: &Report) -> String {
    let mut out = format!(
        "## Retrieval: the demos' gold replies against the real reply ({} held-out turns, k = {})\n\n\
         | retriever | best of k | mean of k | same kind of exchange |\n|---|---|---|---|\n",
        r.turns, r.k
    );
    let show = |i: &Interval| format!("{:.3} [{:.3}, {:.3}]", i.mean, i.low, i.high);
    for name in RETRIEVERS {
        if let Some(s) = r.retrieval.get(name) {
            let kind = s.same_kind.map_or_else(|| "-".to_string(), |v| format!("{v:.2}"));
            out.push_str(&format!(
                "| {name} | {} | {} | {kind} |\n",
                show(&s.best),
                show(&s.mean)
            ));
        }
    }
    out.push_str("\n| paired difference (best of k) | mean [95% interval] |\n|---|---|\n");
    for (name, d) in &r.differences {
        out.push_str(&format!("| {name} | {} |\n", show(d)));
    }
    out
}

/// What `--gate` requires: `knn` beats `random_k` on the best demo, with the paired interval
/// above zero.
pub fn gate_failures(r: &Report) -> Vec<String> {
    match r.differences.get("knn - random_k") {
        Some(d) if d.low > 0.0 => Vec::new(),
        Some(d) => vec![format!(
            "retrieval: knn does not beat random_k on the best demo's similarity (difference {:.3}, interval [{:.3}, {:.3}])",
            d.mean, d.low, d.high
        )],
        None => vec!["retrieval: no knn/random_k comparison".into()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bm25_prefers_rare_shared_words_and_shorter_documents() {
        let docs = vec![
            "the cat sat on the mat".to_string(),
            "the dog ate the bone".to_string(),
            "the cat and the dog and the bird and the fish all sat".to_string(),
        ];
        let bm25 = Bm25::new(&docs);
        assert_eq!(
            bm25.top("cat", 3)[..2],
            [0, 2],
            "the shorter doc with `cat` first"
        );
        assert_eq!(bm25.top("bone", 1), [1]);
        assert_eq!(bm25.score("zebra", 0), 0.0);
        // Hand-computed: N = 3, df(bone) = 1: idf = ln((3 - 1 + 0.5) / 1.5 + 1) = ln(2.667);
        // doc 1 has 5 words, the average is (6 + 5 + 13) / 3 = 8, tf = 1.
        let idf = (2.5f64 / 1.5 + 1.0).ln();
        let norm = 1.2 * (1.0 - 0.75 + 0.75 * 5.0 / 8.0);
        let want = idf * 2.2 / (1.0 + norm);
        assert!(
            (bm25.score("bone", 1) - want).abs() < 1e-12,
            "{} vs {want}",
            bm25.score("bone", 1)
        );
    }

    #[test]
    fn scores_take_the_best_and_mean_similarity_and_pair_the_differences() {
        // Unit vectors in 2-D: the real reply is (1, 0); replies 0..3 have cosines 1, 0.6, 0, -0.6.
        let replies = vec![vec![1.0, 0.0], vec![0.6, 0.8], vec![0.0, 1.0], vec![-0.6, 0.8]];
        let mut picks = BTreeMap::new();
        picks.insert("knn", vec![vec![0, 2], vec![1, 2]]);
        picks.insert("random_k", vec![vec![2, 3], vec![2, 3]]);
        let p = Picks {
            picks,
            real: vec![vec![1.0, 0.0], vec![1.0, 0.0]],
            replies,
            kinds: Some((
                vec!["sad".into(), "neutral".into()],
                vec!["sad".into(), "neutral".into(), "neutral".into(), "sad".into()],
            )),
        };
        let r = score(&p, 2, 7);
        let knn = &r.retrieval["knn"];
        assert!(
            (knn.best.mean - 0.8).abs() < 1e-6,
            "best of (1, 0) and (0.6, 0): {knn:?}"
        );
        assert!((knn.mean.mean - 0.4).abs() < 1e-6, "means 0.5 and 0.3: {knn:?}");
        // knn: turn 0 picks sad, neutral for a sad turn (1 of 2); turn 1 picks neutral, neutral
        // for a neutral turn (2 of 2): 3 of 4.
        assert_eq!(knn.same_kind, Some(0.75));
        let random = &r.retrieval["random_k"];
        assert!((random.best.mean - 0.0).abs() < 1e-6, "{random:?}");
        let d = r.differences["knn - random_k"];
        assert!((d.mean - 0.8).abs() < 1e-6, "{d:?}");
        assert!(gate_failures(&r).is_empty());
        let mut swapped = p;
        let knn_picks = swapped.picks["knn"].clone();
        swapped.picks.insert("knn", swapped.picks["random_k"].clone());
        swapped.picks.insert("random_k", knn_picks);
        assert_eq!(gate_failures(&score(&swapped, 2, 7)).len(), 1);
    }
}
