//! A deterministic stand-in embedder for tests: no model files, no ONNX Runtime.
//!
//! Each lowercase word is hashed (FNV-1a) to one of [`HashingEmbedder::DIMS`] dimensions with a
//! sign, and the sum is L2-normalized, so texts sharing words are close and the same text always
//! gives the same vector. It is not a sentence model: it exists so the answer pipeline, the
//! server and compile run in unit tests with no I/O. Its model id can never match a real
//! artifact's, so a persona built with it refuses real artifacts.

use anyhow::Result;

use super::{Embedder, ModelInfo};

/// Bag-of-hashed-words vectors.
pub struct HashingEmbedder {
    info: ModelInfo,
}

impl HashingEmbedder {
    /// Vector dimensions.
    pub const DIMS: usize = 64;

    /// The embedder.
    pub fn new() -> Self {
        HashingEmbedder {
            info: ModelInfo {
                model_id: "test/hashing-words".into(),
                dims: Self::DIMS,
                model_sha256: "0".repeat(64),
                pooling: "sum".into(),
                max_length: usize::MAX,
            },
        }
    }

    /// The vector of one text.
    pub fn vector(text: &str) -> Vec<f32> {
        let mut v = vec![0f32; Self::DIMS];
        for word in text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
        {
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for b in word.to_lowercase().bytes() {
                h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
            }
            let sign = if h >> 63 == 0 { 1.0 } else { -1.0 };
            v[(h % Self::DIMS as u64) as usize] += sign;
        }
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm == 0.0 {
            v[0] = 1.0;
        } else {
            v.iter_mut().for_each(|x| *x /= norm);
        }
        v
    }
}

impl Default for HashingEmbedder {
    fn default() -> Self {
        Self::new()
    }
}

impl Embedder for HashingEmbedder {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn embed(&mut self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        Ok(texts.iter().map(|t| Self::vector(t)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::dot;

    #[test]
    fn shared_words_are_closer_than_unrelated_ones() {
        let a = HashingEmbedder::vector("i made pancakes this morning");
        let b = HashingEmbedder::vector("pancakes this morning were great");
        let c = HashingEmbedder::vector("the ocean at night");
        assert!(dot(&a, &b) > dot(&a, &c) + 0.2);
        assert!((dot(&a, &a) - 1.0).abs() < 1e-5);
        assert_eq!(a, HashingEmbedder::vector("I made PANCAKES this morning"));
    }
}
