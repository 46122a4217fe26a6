//! The nearest-neighbour index over example vectors (HNSW from hnsw_rs, dot distance).
//!
//! Owns building the graph, turning it into bytes for the artifact and back, and `search`, which
//! returns example ids nearest first with cosine scores. hnsw_rs only dumps to and loads from
//! files, so this module round-trips through a private temporary directory; it must only ever be
//! given bytes whose checksum the artifact has already verified, because hnsw_rs aborts the
//! process on some malformed input.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use hnsw_rs::api::AnnT;
use hnsw_rs::hnswio::HnswIo;
use hnsw_rs::prelude::{DistDot, Hnsw};
use serde::{Deserialize, Serialize};

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

const MAX_LAYER: usize = 16;
const BASENAME: &str = "index";

/// The graph as stored in the artifact: hnsw_rs's two dump files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexBytes {
    /// The `.hnsw.graph` file.
    pub graph: Vec<u8>,
    /// The `.hnsw.data` file.
    pub data: Vec<u8>,
}

/// A searchable index.
pub struct Index {
    hnsw: Hnsw<'static, f32, DistDot>,
    params: HnswParams,
    len: usize,
}

/// A search hit: example id and cosine similarity.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    /// The example's id (its position in the artifact).
    pub id: usize,
    /// Cosine similarity to the query, in [-1, 1].
    pub score: f32,
}

impl Index {
    /// Builds an index over unit vectors; vector `i` gets id `i`.
    pub fn build(vectors: &[Vec<f32>], params: HnswParams) -> Result<Self> {
        if vectors.is_empty() {
            bail!(
                "there are no examples to index; the dataset needs creator replies outside the held-out set"
            );
        }
        if params.m == 0 || params.m > 255 {
            bail!("`index.m` must be between 1 and 255, got {}", params.m);
        }
        let hnsw = Hnsw::<f32, DistDot>::new(
            params.m,
            vectors.len(),
            MAX_LAYER,
            params.ef_construction.max(1),
            DistDot {},
        );
        let data: Vec<(&Vec<f32>, usize)> = vectors.iter().enumerate().map(|(i, v)| (v, i)).collect();
        hnsw.parallel_insert(&data);
        Ok(Index {
            hnsw,
            params,
            len: vectors.len(),
        })
    }

    /// The two dump files of the graph.
    pub fn to_bytes(&self) -> Result<IndexBytes> {
        let dir = tempfile::tempdir().context("creating a temporary directory for the index")?;
        let name = self
            .hnsw
            .file_dump(dir.path(), BASENAME)
            .map_err(|e| anyhow!("dumping the HNSW index: {e}"))?;
        let read = |ext: &str| -> Result<Vec<u8>> {
            let path = dir.path().join(format!("{name}.hnsw.{ext}"));
            std::fs::read(&path).with_context(|| format!("reading the index dump `{}`", path.display()))
        };
        Ok(IndexBytes {
            graph: read("graph")?,
            data: read("data")?,
        })
    }

    /// Loads an index from verified bytes.
    pub fn from_bytes(bytes: &IndexBytes, params: HnswParams, len: usize) -> Result<Self> {
        let dir = tempfile::tempdir().context("creating a temporary directory for the index")?;
        write(dir.path(), "graph", &bytes.graph)?;
        write(dir.path(), "data", &bytes.data)?;
        // The loaded graph borrows its loader; the loader is small and lives as long as the
        // process, which is how long an index is used.
        let io: &'static mut HnswIo = Box::leak(Box::new(HnswIo::new(dir.path(), BASENAME)));
        let mut hnsw: Hnsw<'static, f32, DistDot> = io
            .load_hnsw()
            .map_err(|e| anyhow!("loading the HNSW index: {e}"))?;
        hnsw.set_searching_mode(true);
        if hnsw.get_nb_point() != len {
            bail!(
                "the index holds {} points but the artifact has {len} examples",
                hnsw.get_nb_point()
            );
        }
        Ok(Index { hnsw, params, len })
    }

    /// The `k` nearest examples, nearest first.
    pub fn search(&self, query: &[f32], k: usize) -> Vec<Hit> {
        if k == 0 || self.len == 0 {
            return Vec::new();
        }
        let ef = self.params.ef_search.max(k);
        let mut hits: Vec<Hit> = self
            .hnsw
            .search(query, k.min(self.len), ef)
            .into_iter()
            .map(|n| Hit {
                id: n.d_id,
                score: 1.0 - n.distance,
            })
            .collect();
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
        hits
    }

    /// Number of indexed examples.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Exact search by scanning every vector, nearest first: the reference for recall.
pub fn brute_force(vectors: &[Vec<f32>], query: &[f32], k: usize) -> Vec<Hit> {
    let mut hits: Vec<Hit> = vectors
        .iter()
        .enumerate()
        .map(|(id, v)| Hit {
            id,
            score: crate::embed::dot(v, query),
        })
        .collect();
    hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
    hits.truncate(k);
    hits
}

fn write(dir: &Path, ext: &str, bytes: &[u8]) -> Result<()> {
    let path = dir.join(format!("{BASENAME}.hnsw.{ext}"));
    std::fs::write(&path, bytes).with_context(|| format!("writing the index to `{}`", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: Vec<f32>) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / n).collect()
    }

    fn vectors(n: usize) -> Vec<Vec<f32>> {
        // A deterministic pseudo-random spread of directions in 8 dimensions.
        let mut state = 12345u64;
        let mut next = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        (0..n).map(|_| unit((0..8).map(|_| next()).collect())).collect()
    }

    #[test]
    fn bytes_round_trip_gives_the_same_answers() {
        let vs = vectors(200);
        let index = Index::build(&vs, HnswParams::default()).unwrap();
        let bytes = index.to_bytes().unwrap();
        let loaded = Index::from_bytes(&bytes, HnswParams::default(), vs.len()).unwrap();
        for q in vs.iter().step_by(17) {
            assert_eq!(index.search(q, 5), loaded.search(q, 5));
            assert_eq!(loaded.search(q, 1)[0].id, brute_force(&vs, q, 1)[0].id);
        }
    }

    #[test]
    fn an_empty_index_is_an_error() {
        assert!(Index::build(&[], HnswParams::default()).is_err());
    }
}
