//! The nearest-neighbour index over example vectors: an HNSW graph built over 8-bit sketches,
//! frozen into flat arrays, and searched in place.
//!
//! [`build`] builds the graph (in parallel, over the [`Sketches`]) into compressed adjacency
//! arrays ([`Graph`]) that the artifact stores as they are and maps back without parsing, and
//! [`Index::search`] walks them: greedy descent through the upper layers, then a beam of `ef`
//! candidates on layer 0, scored on the sketches when the artifact has them; the beam's candidates
//! are then rescored on the f32 vectors, so the `k` returned and their similarities are exact.
//! Every stored id is bounds-checked while searching, so even a damaged graph cannot crash a
//! reader; it can only search worse (the artifact's checksums catch damage first).

pub mod build;
pub mod calibrate;
pub mod sketch;

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::artifact::flat::{Damaged, Flat, Vectors};
use crate::embed::dot;
pub use sketch::Sketches;

/// HNSW parameters, recorded in the artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HnswParams {
    /// Links per node (`M`).
    pub m: usize,
    /// Candidate list size while building.
    pub ef_construction: usize,
    /// Candidate list size while searching (at least k).
    pub ef_search: usize,
}

impl Default for HnswParams {
    fn default() -> Self {
        HnswParams {
            m: 16,
            ef_construction: 200,
            ef_search: 64,
        }
    }
}

impl HnswParams {
    /// The parameters for an index of `examples` nodes.
    ///
    /// Chosen by the scale bench (README, Performance): M 16 with a beam of 64 finds the exact top
    /// 10 up to 100k examples; past that, links wear thin inside clusters of near-identical
    /// turns, so the beam doubles to 128 (recall@10 0.999 at 200k) and from 250k on the graph
    /// gets M 32 and a beam of 256 (0.999 at 1M, where M 16 at 64 found 0.82). The build's
    /// beam stays 200: 100 halved the 1M build but left recall@10 at 0.980. Those figures are
    /// for clustered turns; compile then measures the graph on its own vectors and widens the
    /// search beam where the data is less repetitive ([`calibrate`]).
    pub fn for_examples(examples: usize) -> Self {
        let (m, ef_search) = match examples {
            0..=100_000 => (16, 64),
            100_001..=250_000 => (16, 128),
            _ => (32, 256),
        };
        HnswParams {
            m,
            ef_construction: 200,
            ef_search,
        }
    }
}

/// `[index]` as configured: each parameter either given or left to be chosen from the number of
/// examples when compiling ([`HnswParams::for_examples`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IndexSettings {
    /// `m`, if given.
    pub m: Option<usize>,
    /// `ef_construction`, if given.
    pub ef_construction: Option<usize>,
    /// `ef_search`, if given.
    pub ef_search: Option<usize>,
}

impl IndexSettings {
    /// The parameters to build an index of `examples` nodes with.
    pub fn params(&self, examples: usize) -> HnswParams {
        let sized = HnswParams::for_examples(examples);
        HnswParams {
            m: self.m.unwrap_or(sized.m),
            ef_construction: self.ef_construction.unwrap_or(sized.ef_construction),
            ef_search: self.ef_search.unwrap_or(sized.ef_search),
        }
    }

    /// Checks the given parameters; the message names the setting and its range.
    pub fn check(&self) -> std::result::Result<(), String> {
        self.params(0).check()
    }
}

/// The largest `ef_construction` and `ef_search` accepted.
pub const MAX_EF: usize = 4096;

impl HnswParams {
    /// Checks every parameter is in range; the message names the setting and its range.
    pub fn check(&self) -> std::result::Result<(), String> {
        if self.m == 0 || self.m > 255 {
            return Err(format!("`index.m` must be between 1 and 255, got {}", self.m));
        }
        for (name, value) in [
            ("ef_construction", self.ef_construction),
            ("ef_search", self.ef_search),
        ] {
            if value == 0 || value > MAX_EF {
                return Err(format!(
                    "`index.{name}` must be between 1 and {MAX_EF}, got {value}"
                ));
            }
        }
        Ok(())
    }
}

const MAX_LAYER: usize = 16;
const NONE: u32 = u32::MAX;

/// The HNSW graph as flat arrays.
///
/// Adjacency lists are numbered: list `v` is node `v`'s layer-0 neighbours; a node with level
/// `L >= 1` also owns lists `upper[v]`, `upper[v] + 1`, ..., one for each layer 1..=L. List `s`
/// is `links[offsets[s]..offsets[s + 1]]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Graph {
    /// Each node's top layer.
    pub levels: Flat<u8>,
    /// Each node's first upper list, or `u32::MAX` for nodes only on layer 0.
    pub upper: Flat<u32>,
    /// Start of every list in `links`, plus the end.
    pub offsets: Flat<u32>,
    /// Neighbour ids.
    pub links: Flat<u32>,
}

impl Graph {
    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.levels.len()
    }

    /// Whether the graph has no nodes.
    pub fn is_empty(&self) -> bool {
        self.levels.is_empty()
    }

    /// The entry point: the first node on the highest layer.
    fn entry(&self) -> Option<(u32, u8)> {
        let top = *self.levels.iter().max()?;
        let at = self.levels.iter().position(|&l| l == top)?;
        Some((at as u32, top))
    }

    /// Node `v`'s neighbours on `layer`; empty if the graph does not have them.
    fn neighbours(&self, v: u32, layer: u8) -> &[u32] {
        let slot = if layer == 0 {
            Some(v as usize)
        } else {
            match self.upper.get(v as usize) {
                Some(&first) if first != NONE && self.levels.get(v as usize).is_some_and(|&l| layer <= l) => {
                    Some(first as usize + layer as usize - 1)
                }
                _ => None,
            }
        };
        slot.and_then(|s| {
            let (&a, &b) = (self.offsets.get(s)?, self.offsets.get(s + 1)?);
            self.links.get(a as usize..b as usize)
        })
        .unwrap_or(&[])
    }
}

/// A searchable index: the graph and the vectors it links.
pub struct Index {
    graph: Graph,
    vectors: Vectors,
    sketches: Option<Sketches>,
    entry: Option<(u32, u8)>,
    params: HnswParams,
}

/// A search hit: example id and cosine similarity.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    /// The example's id (its position in the artifact).
    pub id: usize,
    /// Cosine similarity to the query, in [-1, 1].
    pub score: f32,
}

/// Builds the HNSW graph over the examples' sketches ([`build::graph`]); example `i` becomes
/// node `i`.
pub fn build(sketches: &Sketches, params: HnswParams) -> Result<Graph> {
    build::graph(sketches, params)
}

/// The nodes a search has seen: one bit per node, so a 1M-node search allocates 125 KB once and
/// checks a node with a shift and a mask instead of hashing it.
struct Visited(Vec<u64>);

impl Visited {
    fn new(nodes: usize) -> Self {
        Visited(vec![0; nodes.div_ceil(64)])
    }

    /// Marks `v` seen; whether it was new. Ids past the end (a damaged graph) count as seen.
    fn insert(&mut self, v: u32) -> bool {
        let (word, bit) = (v as usize / 64, 1u64 << (v % 64));
        match self.0.get_mut(word) {
            Some(w) if *w & bit == 0 => {
                *w |= bit;
                true
            }
            _ => false,
        }
    }
}

/// A candidate during search, ordered by score.
#[derive(Clone, Copy, PartialEq)]
struct Scored(f32, u32);

impl Eq for Scored {}

impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0).then(other.1.cmp(&self.1))
    }
}

impl Index {
    /// An index over a graph and the vectors it was built from.
    pub fn new(graph: Graph, vectors: Vectors, params: HnswParams) -> Result<Self> {
        if graph.len() != vectors.len() {
            bail!(
                "the index holds {} nodes but there are {} vectors",
                graph.len(),
                vectors.len()
            );
        }
        let entry = graph.entry();
        Ok(Index {
            graph,
            vectors,
            sketches: None,
            entry,
            params,
        })
    }

    /// The same index, its beam scored on `sketches` (artifacts of format 4 on); without them it
    /// scores the f32 vectors all the way.
    pub fn with_sketches(mut self, sketches: Option<Sketches>) -> Result<Self> {
        if let Some(s) = &sketches {
            if s.len() != self.vectors.len() {
                bail!(
                    "the index holds {} vectors but {} sketches",
                    self.vectors.len(),
                    s.len()
                );
            }
        }
        self.sketches = sketches;
        Ok(self)
    }

    /// The `k` nearest examples, nearest first, with exact similarities; an error only when a
    /// vector or sketch it reads is damaged (see [`crate::artifact::flat::Lazy`]).
    pub fn search(&self, query: &[f32], k: usize) -> Result<Vec<Hit>, Damaged> {
        if k == 0 {
            return Ok(Vec::new());
        }
        let exact = |v: u32| -> Result<Option<f32>, Damaged> {
            Ok(self.vectors.get(v as usize)?.map(|x| dot(x, query)))
        };
        let kept = match &self.sketches {
            Some(sketches) => {
                let q = sketches.query(query);
                let sketched = |v: u32| -> Result<Option<f32>, Damaged> {
                    Ok(sketches.get(v as usize)?.map(|x| sketch::dot(x, &q) as f32))
                };
                let beam = self.beam(sketched, |v| sketches.prefetch(v as usize), k)?;
                // The beam's order is approximate; its candidates are rescored exactly, each
                // vector's load started a few candidates ahead.
                const AHEAD: usize = 4;
                for Scored(_, v) in beam.iter().take(AHEAD) {
                    self.vectors.prefetch(*v as usize);
                }
                let mut rescored = Vec::with_capacity(beam.len());
                for (i, Scored(_, v)) in beam.iter().enumerate() {
                    if let Some(Scored(_, next)) = beam.get(i + AHEAD) {
                        self.vectors.prefetch(*next as usize);
                    }
                    if let Some(s) = exact(*v)? {
                        rescored.push(Scored(s, *v));
                    }
                }
                rescored
            }
            None => self.beam(exact, |v| self.vectors.prefetch(v as usize), k)?,
        };
        let mut hits: Vec<Hit> = kept
            .into_iter()
            .map(|Scored(score, id)| Hit {
                id: id as usize,
                score,
            })
            .collect();
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
        hits.truncate(k);
        Ok(hits)
    }

    /// The HNSW walk under `score`: greedy descent through the upper layers, then a beam of
    /// `max(ef, k)` on layer 0; returns the beam, in no order. `prefetch` starts loading what
    /// `score` will read for a node: the walk asks for all of a node's unseen neighbours before
    /// scoring the first, so their loads from memory overlap instead of queueing.
    fn beam(
        &self,
        score: impl Fn(u32) -> Result<Option<f32>, Damaged>,
        prefetch: impl Fn(u32),
        k: usize,
    ) -> Result<Vec<Scored>, Damaged> {
        let Some((mut at, top)) = self.entry else {
            return Ok(Vec::new());
        };
        let Some(mut best) = score(at)? else {
            return Ok(Vec::new());
        };
        // Greedy descent: on each upper layer move to the best neighbour until none is better.
        for layer in (1..=top).rev() {
            loop {
                let mut moved = false;
                for &nb in self.graph.neighbours(at, layer) {
                    if let Some(s) = score(nb)? {
                        if s > best {
                            (best, at, moved) = (s, nb, true);
                        }
                    }
                }
                if !moved {
                    break;
                }
            }
        }
        // Beam search on layer 0 with `ef` candidates.
        let ef = self.params.ef_search.max(k);
        let mut visited = Visited::new(self.vectors.len());
        visited.insert(at);
        let mut frontier = BinaryHeap::from([Scored(best, at)]);
        let mut kept = BinaryHeap::from([Reverse(Scored(best, at))]);
        let mut unseen = Vec::new();
        while let Some(Scored(s, v)) = frontier.pop() {
            let worst = kept.peek().map_or(f32::NEG_INFINITY, |r| r.0 .0);
            if kept.len() >= ef && s < worst {
                break;
            }
            unseen.clear();
            for &nb in self.graph.neighbours(v, 0) {
                if visited.insert(nb) {
                    prefetch(nb);
                    unseen.push(nb);
                }
            }
            for &nb in &unseen {
                let Some(s) = score(nb)? else { continue };
                let worst = kept.peek().map_or(f32::NEG_INFINITY, |r| r.0 .0);
                if kept.len() < ef || s > worst {
                    frontier.push(Scored(s, nb));
                    kept.push(Reverse(Scored(s, nb)));
                    if kept.len() > ef {
                        kept.pop();
                    }
                }
            }
        }
        Ok(kept.into_iter().map(|Reverse(s)| s).collect())
    }

    /// The graph, vectors and sketches back, with the parameters searched with (`ef_search` as
    /// [`calibrate::ef_search`] left it).
    pub fn into_parts(self) -> (Graph, Vectors, Option<Sketches>, HnswParams) {
        (self.graph, self.vectors, self.sketches, self.params)
    }

    /// Number of indexed examples.
    pub fn len(&self) -> usize {
        self.vectors.len()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.vectors.is_empty()
    }
}

/// Exact search by scanning every vector, nearest first: the reference for recall.
pub fn brute_force(vectors: &Vectors, query: &[f32], k: usize) -> Result<Vec<Hit>, Damaged> {
    let mut hits: Vec<Hit> = vectors
        .rows()?
        .enumerate()
        .map(|(id, v)| Hit {
            id,
            score: dot(v, query),
        })
        .collect();
    let order = |a: &Hit, b: &Hit| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id));
    if k < hits.len() {
        hits.select_nth_unstable_by(k, order);
        hits.truncate(k);
    }
    hits.sort_by(order);
    Ok(hits)
}

/// Test data shared by the index's modules.
#[cfg(test)]
pub(crate) mod testing {
    /// `v` scaled to length 1.
    pub fn unit(v: Vec<f32>) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / n).collect()
    }

    /// `n` pseudo-random unit vectors in `dims` dimensions, the same for the same `seed`: no
    /// clusters, the hard case for a graph.
    pub fn spread(n: usize, dims: usize, seed: u64) -> Vec<Vec<f32>> {
        let mut state = seed;
        let mut next = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        (0..n)
            .map(|_| unit((0..dims).map(|_| next()).collect()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vectors(n: usize) -> Vectors {
        Vectors::from_rows(&testing::spread(n, 8, 12345))
    }

    fn graph(vs: &Vectors) -> Graph {
        build(&Sketches::quantize(vs).unwrap(), HnswParams::default()).unwrap()
    }

    fn sketched(vs: &Vectors) -> Index {
        Index::new(graph(vs), vs.clone(), HnswParams::default())
            .and_then(|i| i.with_sketches(Some(Sketches::quantize(vs).unwrap())))
            .unwrap()
    }

    #[test]
    fn search_agrees_with_exact_search_with_and_without_sketches() {
        let vs = vectors(2000);
        let exact_only = Index::new(graph(&vs), vs.clone(), HnswParams::default()).unwrap();
        for (name, index) in [("f32", exact_only), ("sketched", sketched(&vs))] {
            let (mut found, mut total) = (0, 0);
            for q in vs.rows().unwrap().step_by(37) {
                let approx = index.search(q, 10).unwrap();
                let exact = brute_force(&vs, q, 10).unwrap();
                assert_eq!(approx.len(), 10);
                assert!(
                    approx.windows(2).all(|w| w[0].score >= w[1].score),
                    "{name}: nearest first"
                );
                assert_eq!(approx[0].id, exact[0].id, "{name}: a stored vector finds itself");
                for hit in &approx {
                    let v = vs.get(hit.id).unwrap().unwrap();
                    assert_eq!(hit.score, dot(v, q), "{name}: similarities are exact");
                }
                found += approx
                    .iter()
                    .filter(|h| exact.iter().any(|e| e.id == h.id))
                    .count();
                total += 10;
            }
            let recall = found as f64 / total as f64;
            assert!(recall >= 0.95, "{name}: recall@10 {recall:.3}");
        }
    }

    #[test]
    fn sketches_that_do_not_match_the_vectors_are_refused() {
        let vs = vectors(50);
        let index = Index::new(graph(&vs), vs.clone(), HnswParams::default()).unwrap();
        let other = Sketches::quantize(&vectors(49)).unwrap();
        assert!(index.with_sketches(Some(other)).is_err());
    }

    #[test]
    fn every_node_is_reachable_and_links_stay_in_range() {
        let vs = vectors(500);
        let graph = graph(&vs);
        assert_eq!(graph.len(), 500);
        assert!(graph.links.iter().all(|&l| (l as usize) < 500));
        assert!(graph.levels.iter().any(|&l| l > 0), "a multi-layer graph");
        let index = Index::new(graph, vs.clone(), HnswParams::default()).unwrap();
        for (i, v) in vs.rows().unwrap().enumerate() {
            assert_eq!(index.search(v, 1).unwrap()[0].id, i, "node {i}");
        }
    }

    #[test]
    fn a_damaged_graph_searches_without_panicking() {
        let vs = vectors(300);
        let mut graph = graph(&vs);
        let mut links = graph.links.to_vec();
        links.iter_mut().step_by(3).for_each(|l| *l = u32::MAX - 7);
        graph.links = Flat::owned(links);
        let mut offsets = graph.offsets.to_vec();
        offsets[10] = u32::MAX;
        graph.offsets = Flat::owned(offsets);
        let exact_only = Index::new(graph.clone(), vs.clone(), HnswParams::default()).unwrap();
        let sketched = Index::new(graph, vs.clone(), HnswParams::default())
            .and_then(|i| i.with_sketches(Some(Sketches::quantize(&vs).unwrap())))
            .unwrap();
        for index in [exact_only, sketched] {
            for q in vs.rows().unwrap().step_by(11) {
                assert!(index.search(q, 5).unwrap().iter().all(|h| h.id < 300));
            }
        }
    }

    #[test]
    fn parameters_out_of_range_are_refused_by_name() {
        let ok = HnswParams::default();
        assert!(ok.check().is_ok());
        for (name, params, expected) in [
            ("m 0", HnswParams { m: 0, ..ok }, "index.m"),
            ("m 256", HnswParams { m: 256, ..ok }, "index.m"),
            (
                "ef_construction 0",
                HnswParams {
                    ef_construction: 0,
                    ..ok
                },
                "index.ef_construction",
            ),
            (
                "huge ef_search",
                HnswParams {
                    ef_search: 1 << 40,
                    ..ok
                },
                "index.ef_search",
            ),
        ] {
            let err = params.check().unwrap_err();
            assert!(err.contains(expected), "{name}: {err}");
        }
    }

    #[test]
    fn parameters_grow_with_the_data_and_given_ones_win() {
        assert_eq!(HnswParams::for_examples(586), HnswParams::default());
        assert_eq!(HnswParams::for_examples(200_000).ef_search, 128);
        let million = HnswParams::for_examples(1_000_000);
        assert_eq!(
            (million.m, million.ef_construction, million.ef_search),
            (32, 200, 256)
        );
        let given = IndexSettings {
            ef_search: Some(40),
            ..IndexSettings::default()
        };
        assert_eq!(given.params(1_000_000).ef_search, 40);
        assert_eq!(given.params(1_000_000).m, 32);
        assert!(IndexSettings {
            m: Some(0),
            ..IndexSettings::default()
        }
        .check()
        .is_err());
    }

    #[test]
    fn visited_marks_each_node_once_and_treats_ids_past_the_end_as_seen() {
        let mut seen = Visited::new(128);
        assert!(seen.insert(0) && seen.insert(64) && seen.insert(127));
        assert!(!seen.insert(64), "a second visit is not new");
        assert!(!seen.insert(128) && !seen.insert(u32::MAX), "no such node");
        assert!(seen.insert(63));
    }

    #[test]
    fn an_empty_index_is_an_error() {
        let none = Vectors::from_rows(&[]);
        assert!(build(&Sketches::quantize(&none).unwrap(), HnswParams::default()).is_err());
    }

    #[test]
    fn a_graph_and_vectors_of_different_sizes_are_refused() {
        let graph = graph(&vectors(50));
        assert!(Index::new(graph, vectors(49), HnswParams::default()).is_err());
    }
}
