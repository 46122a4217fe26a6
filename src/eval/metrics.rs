//! The eval metrics and their statistics: semantic similarity, voice fidelity, bootstrap
//! intervals and pairwise accuracy.
//!
//! Pure functions; the style part lives in `style`, the runs that produce replies in `eval`.

use serde::Serialize;

/// Weight of `style` in `voice_fidelity` (the rest is `semantic`).
pub const STYLE_WEIGHT: f64 = 0.75;

/// `semantic`: cosine of the reply's and the real reply's embeddings, clipped at 0.
pub fn semantic(reply: &[f32], real: &[f32]) -> f64 {
    f64::from(crate::embed::dot(reply, real)).max(0.0)
}

/// `voice_fidelity` in [0, 1]: 0.75 style + 0.25 semantic, and 0 for a reply the filter blocks.
/// A near-verbatim copy of a training reply ([`super::copying`]) gets no style credit: its style
/// is the creator's own, not the system's.
pub fn voice_fidelity(style: f64, semantic: f64, violates: bool, copied: bool) -> f64 {
    if violates {
        0.0
    } else {
        let style = if copied { 0.0 } else { style };
        (STYLE_WEIGHT * style + (1.0 - STYLE_WEIGHT) * semantic).clamp(0.0, 1.0)
    }
}

/// A mean with its bootstrap 95% interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Interval {
    /// The mean.
    pub mean: f64,
    /// 2.5th percentile of the bootstrap means.
    pub low: f64,
    /// 97.5th percentile of the bootstrap means.
    pub high: f64,
}

/// A small deterministic generator (splitmix64), so intervals repeat run to run.
pub struct Rng(u64);

impl Rng {
    /// Seeds the generator.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// Mean and percentile bootstrap 95% interval over `iterations` resamples.
pub fn bootstrap(values: &[f64], iterations: usize, seed: u64) -> Interval {
    let mean = mean(values);
    if values.len() < 2 {
        return Interval {
            mean,
            low: mean,
            high: mean,
        };
    }
    let mut rng = Rng::new(seed);
    let mut means: Vec<f64> = (0..iterations)
        .map(|_| {
            (0..values.len())
                .map(|_| values[rng.below(values.len())])
                .sum::<f64>()
                / values.len() as f64
        })
        .collect();
    means.sort_by(f64::total_cmp);
    let at = |q: f64| means[((q * (means.len() - 1) as f64).round() as usize).min(means.len() - 1)];
    Interval {
        mean,
        low: at(0.025),
        high: at(0.975),
    }
}

/// The mean of some values (0 for none).
pub fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        0.0
    } else {
        values.iter().sum::<f64>() / values.len() as f64
    }
}

/// Share of pairs where the first score is higher (ties count half).
pub fn pairwise_accuracy(pairs: &[(f64, f64)]) -> f64 {
    if pairs.is_empty() {
        return 0.0;
    }
    pairs
        .iter()
        .map(|(a, b)| {
            if a > b {
                1.0
            } else if a == b {
                0.5
            } else {
                0.0
            }
        })
        .sum::<f64>()
        / pairs.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn semantic_and_voice_fidelity_by_hand() {
        assert_eq!(semantic(&[1.0, 0.0], &[0.0, 1.0]), 0.0);
        assert!((semantic(&[0.6, 0.8], &[1.0, 0.0]) - 0.6).abs() < 1e-6);
        assert_eq!(
            semantic(&[-1.0, 0.0], &[1.0, 0.0]),
            0.0,
            "negative cosine clips to 0"
        );
        assert!((voice_fidelity(0.5, 1.0, false, false) - 0.625).abs() < 1e-12);
        assert_eq!(voice_fidelity(0.9, 0.9, true, false), 0.0);
        assert!(
            (voice_fidelity(0.9, 0.4, false, true) - 0.1).abs() < 1e-12,
            "a copy keeps only its semantic part"
        );
    }

    #[test]
    fn bootstrap_brackets_the_mean_and_repeats() {
        let values: Vec<f64> = (0..50).map(|i| f64::from(i % 10)).collect();
        let a = bootstrap(&values, 500, 7);
        assert!((a.mean - 4.5).abs() < 1e-12);
        assert!(a.low < a.mean && a.mean < a.high);
        assert!(a.high - a.low < 3.0);
        assert_eq!(a, bootstrap(&values, 500, 7));
        let one = bootstrap(&[3.0], 500, 7);
        assert_eq!((one.low, one.high), (3.0, 3.0));
    }

    #[test]
    fn pairwise_accuracy_by_hand() {
        assert_eq!(
            pairwise_accuracy(&[(2.0, 1.0), (1.0, 2.0), (1.0, 1.0), (3.0, 0.0)]),
            0.625
        );
        assert_eq!(pairwise_accuracy(&[]), 0.0);
    }
}
