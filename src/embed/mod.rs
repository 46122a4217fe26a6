//! Sentence embeddings: the [`Embedder`] trait and its fastembed implementation.
//!
//! Owns loading ONNX Runtime and the all-MiniLM-L6-v2 model from the installed assets, with a
//! clear error (and the command that fixes it) when they are missing, and turning texts into
//! L2-normalized vectors. It does not cache: see `embed_cache`.

pub mod cache;
pub mod fake;
pub mod service;

use std::path::Path;

use anyhow::{bail, Context, Result};
use fastembed::{InitOptionsUserDefined, Pooling, TextEmbedding, TokenizerFiles, UserDefinedEmbeddingModel};
use sha2::{Digest, Sha256};

use crate::paths::{self, Assets};

/// Identity of an embedding model, recorded in artifacts and checked on load.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ModelInfo {
    /// Human-readable model id.
    pub model_id: String,
    /// Vector dimensions.
    pub dims: usize,
    /// sha256 of the model file, hex.
    pub model_sha256: String,
    /// Pooling over token vectors.
    pub pooling: String,
    /// Maximum input length in tokens.
    pub max_length: usize,
}

impl ModelInfo {
    /// The key under which this model's embeddings are cached: everything that changes a vector.
    pub fn cache_namespace(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.model_id.as_bytes());
        h.update(self.model_sha256.as_bytes());
        h.update(self.pooling.as_bytes());
        h.update(self.max_length.to_le_bytes());
        hex(&h.finalize()[..8])
    }
}

/// Turns texts into unit-length vectors.
pub trait Embedder {
    /// What model this is.
    fn info(&self) -> &ModelInfo;
    /// Embeds a batch of texts, one vector per text, in order.
    fn embed(&mut self, texts: &[&str]) -> Result<Vec<Vec<f32>>>;
    /// Vector dimensions.
    fn dims(&self) -> usize {
        self.info().dims
    }
}

/// The model id persona uses.
pub const MODEL_ID: &str = "sentence-transformers/all-MiniLM-L6-v2 (int8 onnx)";
/// Its dimensions.
pub const DIMS: usize = 384;
/// sha256 of the model file `scripts/setup-assets.sh` installs.
pub const PINNED_MODEL_SHA256: &str = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6";
/// Maximum input length in tokens.
pub const MAX_LENGTH: usize = 256;

/// How much work loading the model does before the first text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Startup {
    /// Every graph optimization ONNX Runtime has, for the fastest model calls: for compile,
    /// `serve`, `eval`, `check --labelled` and `--jsonl` and the benches, which embed many texts
    /// per load, and for `doctor`, which checks the model the way they load it.
    Throughput,
    /// Every optimization but constant folding, which is most of the session's creation (it
    /// turns the int8 weights into float constants ahead of time): for `ask` and `check` on a
    /// few texts, which embed a handful. The vectors agree with [`Startup::Throughput`]'s to
    /// float rounding; `cargo bench --bench embed` measures both.
    Quick,
}

/// The ONNX Runtime optimizer [`Startup::Quick`] skips.
const QUICK_SKIPS: &str = "ConstantFolding";

/// all-MiniLM-L6-v2 through fastembed and a dynamically loaded ONNX Runtime.
pub struct FastEmbedder {
    model: TextEmbedding,
    info: ModelInfo,
    batch_size: usize,
    load_timings: Vec<(&'static str, std::time::Duration)>,
}

impl FastEmbedder {
    /// Loads the model from the installed assets with `threads` intra-op threads, prepared as
    /// `startup` says.
    pub fn load(assets: &Assets, threads: usize, batch_size: usize, startup: Startup) -> Result<Self> {
        let mut clock = std::time::Instant::now();
        let mut load_timings = Vec::new();
        let mut lap = |phase: &'static str| {
            load_timings.push((phase, clock.elapsed()));
            clock = std::time::Instant::now();
        };
        init_onnxruntime(&assets.onnxruntime)?;
        lap("  onnx runtime library load");
        let dir = &assets.model_dir;
        let onnx = read_asset(&dir.join("model.onnx"))?;
        let tokenizer_files = TokenizerFiles {
            tokenizer_file: read_asset(&dir.join("tokenizer.json"))?,
            config_file: read_asset(&dir.join("config.json"))?,
            special_tokens_map_file: read_asset(&dir.join("special_tokens_map.json"))?,
            tokenizer_config_file: read_asset(&dir.join("tokenizer_config.json"))?,
        };
        lap("  model and tokenizer files read");
        let model_sha256 = hex(&Sha256::digest(&onnx));
        lap("  model sha256");
        let user_model = UserDefinedEmbeddingModel::new(onnx, tokenizer_files).with_pooling(Pooling::Mean);
        let mut options = InitOptionsUserDefined::new()
            .with_max_length(MAX_LENGTH)
            .with_intra_threads(threads.max(1));
        if startup == Startup::Quick {
            options = options.with_session_config("optimization.disable_specified_optimizers", QUICK_SKIPS);
        }

        let model = TextEmbedding::try_new_from_user_defined(user_model, options).with_context(|| {
            format!(
                "loading the embedding model from `{}`; reinstall it with `{}`",
                dir.display(),
                paths::setup_command()
            )
        })?;
        lap("  onnx session and tokenizer");
        let info = ModelInfo {
            model_id: MODEL_ID.into(),
            dims: DIMS,
            model_sha256,
            pooling: "mean".into(),
            max_length: MAX_LENGTH,
        };
        Ok(FastEmbedder {
            model,
            info,
            batch_size: batch_size.max(1),
            load_timings,
        })
    }
}

impl FastEmbedder {
    /// Where loading the model spent its time, phase by phase.
    pub fn load_timings(&self) -> &[(&'static str, std::time::Duration)] {
        &self.load_timings
    }
}

impl Embedder for FastEmbedder {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn embed(&mut self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let vectors = self
            .model
            .embed(texts, Some(self.batch_size))
            .context("running the embedding model")?;
        if let Some(v) = vectors.iter().find(|v| v.len() != self.info.dims) {
            bail!(
                "the embedding model returned {} dimensions, expected {}; reinstall it with `{}`",
                v.len(),
                self.info.dims,
                paths::setup_command()
            );
        }
        Ok(vectors)
    }
}

/// Loads ONNX Runtime from `path` once per process, with an error that says how to install it.
///
/// fastembed panics when the library is missing or too old, so this runs first.
pub fn init_onnxruntime(path: &Path) -> Result<()> {
    if !path.exists() {
        bail!(
            "ONNX Runtime is not installed at `{}`; install it with `{}` (or set PERSONA_CACHE_DIR \
             to where it was installed)",
            path.display(),
            paths::setup_command()
        );
    }
    let builder = ort::init_from(path).map_err(|e| {
        anyhow::anyhow!(
            "loading ONNX Runtime from `{}` failed: {e}; reinstall version 1.24 or newer with `{}`",
            path.display(),
            paths::setup_command()
        )
    })?;
    // The library is now loaded for the whole process; sessions use the default environment.
    drop(builder);
    Ok(())
}

fn read_asset(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| {
        format!(
            "reading the embedding model file `{}`; install it with `{}`",
            path.display(),
            paths::setup_command()
        )
    })
}

/// Lowercase hex of some bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Cosine similarity of two unit vectors (the dot product over their common length).
///
/// Eight independent partial sums, so the compiler can keep them in SIMD lanes: a single running
/// sum is a chain of dependent additions it may not reorder, so it stays scalar, and an HNSW
/// search spends most of its time here.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 8;
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut sums = [0.0f32; LANES];
    let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a_chunks.zip(b_chunks) {
        for i in 0..LANES {
            sums[i] += x[i] * y[i];
        }
    }
    sums.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::dot;

    #[test]
    fn dot_matches_a_plain_sum_at_every_length_and_ignores_the_longer_tail() {
        for n in [0usize, 1, 7, 8, 9, 383, 384, 385] {
            let a: Vec<f32> = (0..n).map(|i| ((i * 37 % 11) as f32 - 5.0) / 7.0).collect();
            let b: Vec<f32> = (0..n).map(|i| ((i * 53 % 13) as f32 - 6.0) / 5.0).collect();
            let plain: f64 = a.iter().zip(&b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
            assert!((f64::from(dot(&a, &b)) - plain).abs() < 1e-4, "length {n}");
        }
        assert_eq!(dot(&[1.0, 2.0, 3.0], &[4.0, 5.0]), 14.0);
    }
}
