//! Choosing `ef_search` from the data: compile measures the graph's recall on its own vectors
//! and widens the beam until it finds the exact nearest neighbours.
//!
//! The size rule of [`super::HnswParams::for_examples`] was chosen on turns that come in
//! clusters of near-copies, as a creator's replies do. On a less repetitive set of the same size
//! the same graph and beam find far fewer of the true neighbours (the scale bench at 200k: recall@10 0.999
//! clustered, 0.878 spread, at the size rule's ef 128), so the beam the size suggests is only a
//! starting point. [`ef_search`] takes [`QUERIES`] indexed vectors, spread evenly over the ids,
//! finds each one's exact [`K`] nearest others by scanning every vector, and doubles `ef_search`
//! from the starting value until the graph finds [`TARGET_RECALL`] of them, or until what it
//! misses costs at most [`TOLERATED_LOSS`] of similarity per neighbour, up to
//! [`MAX_CALIBRATED_EF`]. A node searched for finds itself, so it is left out on both sides.
//!
//! The second stop is for data without clusters, where the 10th and the 30th nearest turn are
//! all but equally near: there recall keeps rising slowly with the beam (0.878 at 128, 0.925 at
//! 256, 0.947 at 512 on the spread 200k set) while the demos it would change are no nearer, and
//! each doubling doubles the query time. A graph that misses the target on such data needs
//! more links (`index.m`), which compile says.
//!
//! The cost is the scan: `QUERIES` exact searches split over the available cores. It took 2 to
//! 3 s at 200k (scale bench); at a million vectors, from the 122 ms one exact search took there,
//! it should be about 12 s of one core (an estimate, not measured).

use serde::{Deserialize, Serialize};

use super::{brute_force, Hit, Index};
use crate::artifact::flat::Damaged;

/// The recall@[`K`] the calibrated beam must reach on the sample.
pub const TARGET_RECALL: f32 = 0.98;
/// Neighbours per query whose recall is measured: the README's recall@10.
pub const K: usize = 10;
/// Indexed vectors searched for.
pub const QUERIES: usize = 100;
/// Similarity per neighbour, exact minus found rank by rank, below which a wider beam would
/// change demos by near-ties only.
pub const TOLERATED_LOSS: f32 = 0.001;
/// Widest beam calibration chooses: past it, queries would cost milliseconds, so a graph this
/// poor needs a larger `index.m` or `index.ef_construction` instead.
pub const MAX_CALIBRATED_EF: usize = 1024;

/// What calibration measured and chose.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// The `ef_search` chosen.
    pub ef_search: usize,
    /// Recall@[`K`] on the sample at that beam.
    pub recall: f32,
    /// Mean similarity lost per neighbour at that beam (exact minus found, rank by rank).
    pub lost: f32,
    /// Vectors searched for.
    pub queries: usize,
    /// Whether the recall reached [`TARGET_RECALL`] (false: the beam stopped at the cap).
    pub reached: bool,
}

/// Sets `index`'s `ef_search` to the smallest of `start`, `2 * start`, `4 * start`, ... (at
/// most [`MAX_CALIBRATED_EF`], never below `start`) at which the graph finds
/// [`TARGET_RECALL`] of the sample's exact nearest neighbours, and says what it measured.
pub fn ef_search(index: &mut Index, start: usize) -> Result<Calibration, Damaged> {
    let n = index.len();
    let start = start.max(1);
    let queries: Vec<usize> = (0..QUERIES.min(n)).map(|i| i * n / QUERIES.min(n)).collect();
    let exact = exact_neighbours(index, &queries)?;
    let mut ef = start;
    loop {
        index.params.ef_search = ef;
        let (recall, lost) = measure(index, &queries, &exact)?;
        let reached = recall >= TARGET_RECALL;
        if reached || lost <= TOLERATED_LOSS || ef >= MAX_CALIBRATED_EF.max(start) {
            return Ok(Calibration {
                ef_search: ef,
                recall,
                lost,
                queries: queries.len(),
                reached,
            });
        }
        ef = (ef * 2).min(MAX_CALIBRATED_EF);
    }
}

/// Each query's exact [`K`] nearest other vectors, the scan split over the available cores.
fn exact_neighbours(index: &Index, queries: &[usize]) -> Result<Vec<Vec<Hit>>, Damaged> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = queries.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = queries
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(|&q| exact_for(index, q)).collect::<Vec<_>>()))
            .collect();
        let mut out = Vec::with_capacity(queries.len());
        for worker in workers {
            // A worker only panics on a bug: pass it on rather than misalign queries and answers.
            out.extend(
                worker
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            );
        }
        out.into_iter().collect()
    })
}

fn exact_for(index: &Index, query: usize) -> Result<Vec<Hit>, Damaged> {
    let Some(v) = index.vectors.get(query)? else {
        return Ok(Vec::new());
    };
    Ok(others(brute_force(&index.vectors, v, K + 1)?, query))
}

/// The first [`K`] hits that are not `query` itself.
fn others(hits: Vec<Hit>, query: usize) -> Vec<Hit> {
    hits.into_iter().filter(|h| h.id != query).take(K).collect()
}

/// The share of the exact neighbours the graph search finds, over all queries, and the mean
/// similarity lost per neighbour (exact minus found, rank by rank; a rank found short of `K`
/// hits counts as its whole exact similarity plus one).
fn measure(index: &Index, queries: &[usize], exact: &[Vec<Hit>]) -> Result<(f32, f32), Damaged> {
    let (mut found, mut wanted, mut lost) = (0usize, 0usize, 0f64);
    for (&q, truth) in queries.iter().zip(exact) {
        let Some(v) = index.vectors.get(q)? else { continue };
        let got = others(index.search(v, K + 1)?, q);
        found += truth.iter().filter(|t| got.iter().any(|g| g.id == t.id)).count();
        wanted += truth.len();
        for (rank, t) in truth.iter().enumerate() {
            let score = got.get(rank).map_or(-1.0, |g| g.score);
            lost += f64::from((t.score - score).max(0.0));
        }
    }
    if wanted == 0 {
        return Ok((1.0, 0.0));
    }
    Ok((found as f32 / wanted as f32, (lost / wanted as f64) as f32))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact::flat::Vectors;
    use crate::index::{build, HnswParams, Sketches};

    /// `n` pseudo-random unit vectors in `dims` dimensions: no clusters, the hard case.
    fn spread(n: usize, dims: usize) -> Vectors {
        Vectors::from_rows(&crate::index::testing::spread(n, dims, 7))
    }

    fn index(vectors: Vectors, m: usize, ef_construction: usize) -> Index {
        let params = HnswParams {
            m,
            ef_construction,
            ef_search: 1,
        };
        let sketches = Sketches::quantize(&vectors).unwrap();
        let graph = build(&sketches, params).unwrap();
        Index::new(graph, vectors, params)
            .unwrap()
            .with_sketches(Some(sketches))
            .unwrap()
    }

    #[test]
    fn a_thin_graph_gets_a_wider_beam_until_it_finds_the_neighbours() {
        let mut thin = index(spread(3000, 24), 4, 8);
        let c = ef_search(&mut thin, 10).unwrap();
        assert_eq!(c.queries, QUERIES);
        assert!(c.ef_search > 10, "{c:?}");
        assert_eq!(thin.params.ef_search, c.ef_search);
        assert!(c.reached == (c.recall >= TARGET_RECALL), "{c:?}");
        let stopped = c.reached || c.lost <= TOLERATED_LOSS || c.ef_search == MAX_CALIBRATED_EF;
        assert!(stopped, "{c:?}");
        // The measured recall is what the chosen beam finds; half the beam finds less.
        thin.params.ef_search = c.ef_search / 2;
        let queries: Vec<usize> = (0..QUERIES).map(|i| i * 3000 / QUERIES).collect();
        let exact = exact_neighbours(&thin, &queries).unwrap();
        let (recall, lost) = measure(&thin, &queries, &exact).unwrap();
        assert!(
            recall < c.recall && lost > TOLERATED_LOSS,
            "{recall} {lost} {c:?}"
        );
    }

    #[test]
    fn a_good_graph_keeps_its_starting_beam_and_a_tiny_one_needs_no_sample() {
        let mut good = index(spread(500, 8), 16, 200);
        let c = ef_search(&mut good, 64).unwrap();
        assert_eq!((c.ef_search, c.reached), (64, true), "{c:?}");
        let mut tiny = index(spread(3, 8), 16, 200);
        let c = ef_search(&mut tiny, 64).unwrap();
        assert_eq!((c.ef_search, c.recall, c.lost, c.queries), (64, 1.0, 0.0, 3));
    }
}
