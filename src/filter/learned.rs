//! Learned categories: a binary logistic-regression classifier per category over precomputed
//! feature vectors (sentence embeddings and hashed words, [`super::features`]), whose firing
//! threshold is chosen by stratified k-fold cross-validation on the training data alone. Which
//! examples are negatives (every other one, or benign ones only) is the caller's choice, made
//! through the example weights.
//!
//! Owns: training ([`train`]), the stored model ([`CategoryModel`], serde), the cross-validated
//! figures recorded with it ([`CvFigures`]) and the shape check a loaded model must pass
//! ([`CategoryModel::validate`]). Does not own: computing embeddings, reading or writing model
//! files, naming categories, or combining several category models into one filter decision.
//!
//! Everything here is pure and deterministic: no threads, clock, hashing or global state, so the
//! same inputs and options give a bit-identical model.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Fewest positive, and separately negative, examples [`train`] accepts (it also needs `folds`).
pub const MIN_EXAMPLES_PER_CLASS: usize = 8;

/// Options for [`train`]. Defaults were measured on synthetic 384-dim clustered embeddings: with
/// `l2 = 0.01` Adam at 0.05 converges within 100 epochs, and held-out AUC beat `l2 <= 0.001`.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainOptions {
    /// Full-batch Adam steps per fit (each of the `folds` fits and the final one).
    pub epochs: usize,
    /// Adam step size.
    pub learning_rate: f64,
    /// L2 penalty on the weights (not the bias), added to the class-balanced mean log-loss.
    pub l2: f64,
    /// Number of stratified cross-validation folds, at least 2.
    pub folds: usize,
    /// Out-of-fold recall to reach when the false-positive budget allows it, in `[0, 1]`.
    pub target_recall: f64,
    /// Largest out-of-fold false-positive rate on negatives, in `[0, 1]`.
    pub max_false_positive_rate: f64,
    /// Seed of the fold shuffle.
    pub seed: u64,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            epochs: 200,
            learning_rate: 0.05,
            l2: 1e-2,
            folds: 5,
            target_recall: 0.9,
            max_false_positive_rate: 0.05,
            seed: 0x5eed_1ea7,
        }
    }
}

/// Out-of-fold figures at the model's threshold, from cross-validation on the training data.
/// Rates are f32 because serde_json round-trips f32 exactly but not every f64.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CvFigures {
    /// Share of positives whose out-of-fold score reaches the threshold.
    pub recall: f32,
    /// Share of negatives whose out-of-fold score reaches the threshold.
    pub false_positive_rate: f32,
    /// Share of firing examples that are positive; 0 when none fire.
    pub precision: f32,
    /// Positive examples trained on (non-zero weight).
    pub positives: usize,
    /// Negative examples trained on (non-zero weight).
    pub negatives: usize,
    /// Number of cross-validation folds.
    pub folds: usize,
}

/// A trained category: `score = sigmoid(weights · v + bias)`, and it fires when `score >= threshold`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategoryModel {
    /// One weight per embedding dimension.
    pub weights: Vec<f32>,
    /// Intercept of the logit.
    pub bias: f32,
    /// Probability at or above which the category fires, in `[0, 1]`.
    pub threshold: f32,
    /// Cross-validated figures at `threshold`.
    pub cv: CvFigures,
}

impl CategoryModel {
    /// Sigmoid probability that `v` belongs to the category; 0 when `v` has the wrong length.
    pub fn score(&self, v: &[f32]) -> f32 {
        probability(&self.weights, self.bias, v)
    }

    /// Whether the category fires on `v` (`score >= threshold`; never on NaN or a wrong length).
    pub fn fires(&self, v: &[f32]) -> bool {
        v.len() == self.weights.len() && self.score(v) >= self.threshold
    }

    /// Embedding dimensions the model expects.
    pub fn dims(&self) -> usize {
        self.weights.len()
    }

    /// Checks a loaded model against the embedder's `dims`: shape, finiteness and ranges.
    pub fn validate(&self, dims: usize) -> Result<(), String> {
        let (n, t, cv) = (self.weights.len(), self.threshold, &self.cv);
        let rates = [cv.recall, cv.false_positive_rate, cv.precision];
        let unit = |x: f32| (0.0..=1.0).contains(&x);
        let problem = if dims == 0 || n != dims {
            format!("has {n} weights for {dims} embedding dims")
        } else if let Some(i) = self.weights.iter().position(|w| !w.is_finite()) {
            format!("weight {i} is not finite")
        } else if !self.bias.is_finite() || !unit(t) {
            format!("bias or threshold `{t}` is not finite or out of [0, 1]")
        } else if !rates.into_iter().all(unit) {
            "cross-validated rates are outside [0, 1]".to_string()
        } else {
            return Ok(());
        };
        Err(format!("category model {problem}: retrain it"))
    }
}

/// Why [`train`] refused its input; each message says what to change.
#[derive(Debug, Clone, PartialEq)]
pub enum TrainError {
    /// No vectors were given, or they have zero dims.
    Empty,
    /// `what` (`labels` or `weights`) has `found` entries for `expected` vectors.
    LengthMismatch {
        what: &'static str,
        expected: usize,
        found: usize,
    },
    /// Vector `index` has `found` dims where vector 0 has `expected`.
    InconsistentDims {
        index: usize,
        expected: usize,
        found: usize,
    },
    /// Vector `index` has a NaN or infinite component.
    NonFinite { index: usize },
    /// Sample weight `index` is negative, NaN or infinite.
    InvalidWeight { index: usize },
    /// No positive example has a non-zero weight.
    NoPositives,
    /// Fewer positive examples than cross-validation needs.
    TooFewPositives { found: usize, needed: usize },
    /// Fewer negative examples than cross-validation needs.
    TooFewNegatives { found: usize, needed: usize },
    /// A [`TrainOptions`] field is out of range; the text names it.
    InvalidOption(&'static str),
    /// Gradient descent produced a non-finite weight.
    Diverged,
}

impl fmt::Display for TrainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use TrainError::*;
        let min = MIN_EXAMPLES_PER_CLASS;
        match *self {
            Empty => f.write_str("no training vectors: add labelled, non-empty embeddings"),
            LengthMismatch {
                what,
                expected: e,
                found: n,
            } => {
                write!(f, "`{what}` has {n} entries for {e} vectors: pass one per vector")
            }
            InconsistentDims {
                index: i,
                expected: e,
                found: n,
            } => write!(
                f,
                "vector {i} has {n} dims but vector 0 has {e}: embed every example with the same model"
            ),
            NonFinite { index: i } => write!(
                f,
                "vector {i} has a NaN or infinite component: re-embed or drop that example"
            ),
            InvalidWeight { index: i } => {
                write!(
                    f,
                    "weight {i} is negative or not finite: use a finite weight >= 0"
                )
            }
            NoPositives => write!(f, "no positive examples: add at least {min} of the category"),
            TooFewPositives { found, needed } => {
                let more = needed.saturating_sub(found);
                write!(
                    f,
                    "only {found} positive examples: add {more} more of the category"
                )
            }
            TooFewNegatives { found, needed } => {
                let more = needed.saturating_sub(found);
                write!(
                    f,
                    "only {found} negative examples: add {more} more off-category ones"
                )
            }
            InvalidOption(what) => write!(f, "invalid training option: {what}"),
            Diverged => f.write_str("training diverged to non-finite weights: lower `learning_rate`"),
        }
    }
}

impl std::error::Error for TrainError {}

/// Trains one category: `labels[i]` says whether `vectors[i]` belongs to it; an example of
/// weight 0 takes no part.
///
/// The model is L2-regularized logistic regression fitted by full-batch Adam in f64. Positives and
/// negatives each carry half the loss; within a class, examples are weighted by `weights` (default
/// 1), and zero-weight examples are dropped entirely, from the figures too.
///
/// The threshold comes from stratified `folds`-fold cross-validation: each class is shuffled with
/// `seed` (splitmix64) and dealt round-robin into folds, a model is fitted on all folds but one,
/// and the held-out fold is scored. On these out-of-fold scores, with "fires" meaning
/// `score >= threshold`, only cuts between consecutive distinct scores matter:
/// 1. Let `C` be the lowest cut whose false-positive rate (firing negatives / negatives) is
///    `<= max_false_positive_rate`.
/// 2. If recall at `C` is below `target_recall`, the cut is `C` (best recall within the budget).
///    Otherwise, let `F` be the false positives at the highest cut reaching `target_recall` (the
///    fewest possible at that recall); the cut is the lowest one, not below `C`, with only `F`
///    false positives: the target is met at the least cost, and positives that cost no further
///    false positive are kept.
/// 3. The threshold is the midpoint of the gap at that cut, between the lowest firing score and the
///    highest non-firing one (1 above the top score, 0 below the bottom), so the recorded
///    [`CvFigures`] are exactly the out-of-fold results at the threshold.
///
/// The final model is then fitted on all the data.
pub fn train(
    vectors: &[&[f32]],
    labels: &[bool],
    weights: Option<&[f32]>,
    opts: &TrainOptions,
) -> Result<CategoryModel, TrainError> {
    check_options(opts)?;
    let (dims, mut examples) = collect_examples(vectors, labels, weights)?;
    let positives = examples.iter().filter(|e| e.positive).count();
    let needed = MIN_EXAMPLES_PER_CLASS.max(opts.folds);
    match (positives, examples.len() - positives) {
        (0, _) => Err(TrainError::NoPositives),
        (found, _) if found < needed => Err(TrainError::TooFewPositives { found, needed }),
        (_, found) if found < needed => Err(TrainError::TooFewNegatives { found, needed }),
        _ => Ok(()),
    }?;
    assign_folds(&mut examples, opts.folds, opts.seed);
    let mut oof = Vec::with_capacity(examples.len());
    for fold in 0..opts.folds {
        let (held, rest): (Vec<&Example>, _) = examples.iter().partition(|e| e.fold == fold);
        let (w, b) = fit(&rest, dims, opts)?;
        oof.extend(held.iter().map(|e| (probability(&w, b, e.x), e.positive)));
    }
    let (threshold, cv) = choose_threshold(&mut oof, opts);
    let (weights, bias) = fit(&examples.iter().collect::<Vec<_>>(), dims, opts)?;
    Ok(CategoryModel {
        weights,
        bias,
        threshold,
        cv,
    })
}

fn check_options(o: &TrainOptions) -> Result<(), TrainError> {
    let unit = |x: f64| (0.0..=1.0).contains(&x);
    let (lr, max_fpr) = (o.learning_rate, o.max_false_positive_rate);
    let checks = [
        (o.epochs >= 1, "`epochs` must be at least 1"),
        (lr.is_finite() && lr > 0.0, "`learning_rate` must be > 0"),
        (o.l2.is_finite() && o.l2 >= 0.0, "`l2` must be >= 0"),
        (o.folds >= 2, "`folds` must be at least 2"),
        (unit(o.target_recall), "`target_recall` must be in [0, 1]"),
        (unit(max_fpr), "`max_false_positive_rate` must be in [0, 1]"),
    ];
    match checks.iter().find(|c| !c.0) {
        Some(&(_, what)) => Err(TrainError::InvalidOption(what)),
        None => Ok(()),
    }
}

/// One checked training example with a non-zero weight.
#[derive(Clone)]
struct Example<'a> {
    x: &'a [f32],
    /// The indices of `x`'s non-zero components: training visits only those, so wide and
    /// mostly empty features (hashed words) cost what they hold, not their width.
    nonzero: Vec<usize>,
    positive: bool,
    weight: f64,
    fold: usize,
}

/// Checks lengths, dims and values, and returns the dims and the examples with non-zero weight.
fn collect_examples<'a>(
    x: &[&'a [f32]],
    y: &[bool],
    w: Option<&[f32]>,
) -> Result<(usize, Vec<Example<'a>>), TrainError> {
    use TrainError::*;
    let (expected, dims) = (x.len(), x.first().map_or(0, |v| v.len()));
    if dims == 0 {
        return Err(Empty);
    }
    for (what, found) in [("labels", y.len()), ("weights", w.map_or(expected, <[f32]>::len))] {
        if found != expected {
            return Err(LengthMismatch {
                what,
                expected,
                found,
            });
        }
    }
    let mut examples = Vec::with_capacity(expected);
    for (index, (&v, &positive)) in x.iter().zip(y).enumerate() {
        let weight = w.map_or(1.0, |w| w[index]);
        if !(weight.is_finite() && weight >= 0.0) {
            return Err(InvalidWeight { index });
        }
        if v.len() != dims {
            return Err(InconsistentDims {
                index,
                expected: dims,
                found: v.len(),
            });
        }
        if v.iter().any(|c| !c.is_finite()) {
            return Err(NonFinite { index });
        }
        if weight > 0.0 {
            examples.push(Example {
                x: v,
                nonzero: (0..dims).filter(|&j| v[j] != 0.0).collect(),
                positive,
                weight: f64::from(weight),
                fold: 0,
            });
        }
    }
    Ok((dims, examples))
}

/// Stratified folds: each class is shuffled, then positives and negatives are dealt round-robin
/// in turn, so every fold gets its share of both.
fn assign_folds(examples: &mut [Example], folds: usize, seed: u64) {
    let mut state = seed;
    let mut dealt = 0;
    for class in [true, false] {
        let mut members: Vec<usize> = (0..examples.len()).collect();
        members.retain(|&k| examples[k].positive == class);
        for j in (1..members.len()).rev() {
            // Modulo bias is negligible for shuffling training examples.
            members.swap(j, (splitmix64(&mut state) % (j as u64 + 1)) as usize);
        }
        for k in members {
            examples[k].fold = dealt % folds;
            dealt += 1;
        }
    }
}

/// Fits weights and bias by full-batch Adam on the class-balanced, L2-penalized log-loss.
fn fit(set: &[&Example], d: usize, opts: &TrainOptions) -> Result<(Vec<f32>, f32), TrainError> {
    // Each class carries half the loss whatever its size, so rare categories are not ignored.
    let mut class_total = [0.0f64; 2];
    for e in set {
        class_total[usize::from(e.positive)] += e.weight;
    }
    let coef = |e: &Example| 0.5 * e.weight / class_total[usize::from(e.positive)];
    // theta[d] is the bias; m and s are Adam's first and second moment estimates.
    let [mut theta, mut m, mut s, mut grad] = [0; 4].map(|_| vec![0.0f64; d + 1]);
    let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8);
    let (mut b1t, mut b2t) = (1.0f64, 1.0f64);
    for _ in 0..opts.epochs {
        grad.iter_mut().for_each(|g| *g = 0.0);
        for e in set {
            // The dense sums in index order, without their zero terms: the same values.
            let z: f64 = e.nonzero.iter().map(|&j| theta[j] * f64::from(e.x[j])).sum();
            let p = sigmoid(theta[d] + z);
            let r = coef(e) * (p - f64::from(u8::from(e.positive)));
            for &j in &e.nonzero {
                grad[j] += r * f64::from(e.x[j]);
            }
            grad[d] += r;
        }
        for (g, t) in grad[..d].iter_mut().zip(&theta) {
            *g += opts.l2 * t;
        }
        (b1t, b2t) = (b1t * b1, b2t * b2);
        for (j, t) in theta.iter_mut().enumerate() {
            m[j] = b1 * m[j] + (1.0 - b1) * grad[j];
            s[j] = b2 * s[j] + (1.0 - b2) * grad[j] * grad[j];
            *t -= opts.learning_rate * (m[j] / (1.0 - b1t)) / ((s[j] / (1.0 - b2t)).sqrt() + eps);
        }
    }
    let weights: Vec<f32> = theta[..d].iter().map(|&t| t as f32).collect();
    let bias = theta[d] as f32;
    if !bias.is_finite() || weights.iter().any(|w| !w.is_finite()) {
        return Err(TrainError::Diverged);
    }
    Ok((weights, bias))
}

/// Picks the threshold from `(out-of-fold score, label)` pairs by the rule documented on [`train`].
fn choose_threshold(oof: &mut [(f32, bool)], opts: &TrainOptions) -> (f32, CvFigures) {
    oof.sort_by(|a, b| b.0.total_cmp(&a.0));
    let positives = oof.iter().filter(|p| p.1).count();
    let negatives = oof.len() - positives;
    // cuts[k] = (lowest firing score, true positives, false positives) when the k highest
    // distinct scores fire; cuts[0] fires nothing.
    type Cut = (f32, usize, usize);
    let mut cuts: Vec<Cut> = vec![(1.0, 0, 0)];
    for &(score, pos) in oof.iter() {
        let (n, (last, tp, fp)) = (cuts.len(), cuts[cuts.len() - 1]);
        let next = (score, tp + usize::from(pos), fp + usize::from(!pos));
        if n > 1 && last == score {
            cuts[n - 1] = next;
        } else {
            cuts.push(next);
        }
    }
    let rate = |n: usize, of: usize| if of == 0 { 0.0 } else { n as f64 / of as f64 };
    // Both counts only grow with k, so each rule is a partition point; cuts[0] always passes.
    let last_passing = |ok: &dyn Fn(&Cut) -> bool| cuts.partition_point(ok).saturating_sub(1);
    let lowest = last_passing(&|c| rate(c.2, negatives) <= opts.max_false_positive_rate);
    let first_hit = cuts.partition_point(|c| rate(c.1, positives) < opts.target_recall);
    let k = match cuts.get(first_hit) {
        Some(&(_, _, fewest_fp)) if first_hit <= lowest => last_passing(&|c| c.2 <= fewest_fp),
        _ => lowest,
    };
    let (upper, tp, fp) = cuts[k];
    let lower = cuts.get(k + 1).map_or(0.0, |c| c.0);
    let mid = ((f64::from(upper) + f64::from(lower)) / 2.0) as f32;
    // An f32 midpoint of adjacent floats may round down onto `lower`; `upper` still splits them.
    let at_bottom = k + 1 == cuts.len();
    let threshold = if mid > lower || at_bottom { mid } else { upper };
    let cv = CvFigures {
        recall: rate(tp, positives) as f32,
        false_positive_rate: rate(fp, negatives) as f32,
        precision: rate(tp, tp + fp) as f32,
        positives,
        negatives,
        folds: opts.folds,
    };
    (threshold, cv)
}

/// `sigmoid(weights · v + bias)` accumulated in f64; 0 when `v` has the wrong length.
fn probability(weights: &[f32], bias: f32, v: &[f32]) -> f32 {
    if v.len() != weights.len() {
        return 0.0;
    }
    sigmoid(f64::from(bias) + dot(weights, v)) as f32
}

/// Dot product over the common prefix, accumulated in f64 in index order.
fn dot<W: Copy + Into<f64>>(w: &[W], x: &[f32]) -> f64 {
    w.iter().zip(x).map(|(&w, &x)| w.into() * f64::from(x)).sum()
}

/// Logistic function, written so neither branch overflows.
fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        z.exp() / (1.0 + z.exp())
    }
}

/// splitmix64: a tiny, seedable, platform-independent generator for the fold shuffle.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n_pos` positives around one random centre and `n_neg` negatives around another, each
    /// component jittered by up to `noise`, then L2-normalized.
    fn clusters(dims: usize, n_pos: usize, n_neg: usize, noise: f64) -> (Vec<Vec<f32>>, Vec<bool>) {
        let mut state = 42;
        let mut uniform = move || (splitmix64(&mut state) >> 11) as f64 / (1u64 << 52) as f64 - 1.0;
        let centres: [Vec<f64>; 2] = [0, 1].map(|_| (0..dims).map(|_| uniform()).collect());
        let labels: Vec<bool> = (0..n_pos + n_neg).map(|i| i < n_pos).collect();
        let vectors = labels.iter().map(|&pos| {
            let v: Vec<f64> = centres[usize::from(!pos)]
                .iter()
                .map(|c| c + noise * uniform())
                .collect();
            let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            v.iter().map(|x| (x / norm) as f32).collect()
        });
        (vectors.collect(), labels)
    }

    fn refs(vectors: &[Vec<f32>]) -> Vec<&[f32]> {
        vectors.iter().map(Vec::as_slice).collect()
    }

    fn opts(max_fpr: f64, target_recall: f64) -> TrainOptions {
        let mut o = TrainOptions::default();
        (o.max_false_positive_rate, o.target_recall, o.epochs) = (max_fpr, target_recall, 100);
        o
    }

    #[test]
    fn training_twice_gives_bit_identical_models() {
        let (x, y) = clusters(8, 12, 20, 1.0);
        let bits = |m: CategoryModel| {
            let w: Vec<u32> = m.weights.iter().map(|w| w.to_bits()).collect();
            (w, m.bias.to_bits(), m.threshold.to_bits())
        };
        let run = || train(&refs(&x), &y, None, &opts(0.05, 0.9)).map(bits);
        assert_eq!(run().unwrap(), run().unwrap());
    }

    #[test]
    fn separable_clusters_are_classified_perfectly() {
        let (x, y) = clusters(16, 20, 40, 0.1);
        let m = train(&refs(&x), &y, None, &TrainOptions::default()).unwrap();
        let cv = &m.cv;
        let figures = (cv.recall, cv.false_positive_rate, cv.precision, cv.positives);
        assert_eq!(figures, (1.0, 0.0, 1.0, 20));
        assert_eq!((cv.negatives, cv.folds, m.dims()), (40, 5, 16));
        assert!(x.iter().zip(&y).all(|(v, &label)| m.fires(v) == label));
        let mut strong = opts(0.05, 0.9);
        strong.l2 = 1.0;
        let shrunk = train(&refs(&x), &y, None, &strong).unwrap();
        assert!(dot(&shrunk.weights, &shrunk.weights) < dot(&m.weights, &m.weights) / 4.0);
    }

    #[test]
    fn noisy_overlap_follows_the_threshold_rule() {
        let (x, mut y) = clusters(16, 40, 80, 2.0);
        y.iter_mut().step_by(9).for_each(|l| *l = !*l); // label noise
        let fit = |max_fpr| train(&refs(&x), &y, None, &opts(max_fpr, 0.8)).unwrap();
        let (loose, strict) = (fit(0.5), fit(0.05));
        // The loose budget reaches the target recall; the strict one cannot, so it takes the
        // lowest cut its budget allows.
        let (l, s) = (&loose.cv, &strict.cv);
        assert!(l.false_positive_rate <= 0.5 && l.recall >= 0.8, "{l:?}");
        assert!(s.false_positive_rate <= 0.05 && s.recall < 0.8, "{s:?}");
        assert!(strict.threshold >= loose.threshold && 0.0 < s.recall && s.recall <= l.recall);
        assert_eq!((&strict.weights, strict.bias), (&loose.weights, loose.bias));
    }

    #[test]
    fn cross_validation_is_out_of_sample() {
        // Pure noise in more dims than examples: the fit memorizes it, the folds must not.
        let (x, _) = clusters(64, 40, 0, 100.0);
        let y: Vec<bool> = (0..40).map(|i| i % 2 == 0).collect();
        let m = train(&refs(&x), &y, None, &opts(0.05, 0.9)).unwrap();
        let (pos, neg): (Vec<_>, Vec<_>) = x.iter().zip(&y).partition(|p| *p.1);
        let top_neg = neg.iter().map(|p| m.score(p.0)).fold(0.0, f32::max);
        let above = pos.iter().filter(|p| m.score(p.0) > top_neg).count();
        assert!(above == 20 && m.cv.recall <= 0.5, "{above} {:?}", m.cv);
    }

    #[test]
    fn classes_weigh_half_each_and_folds_are_stratified() {
        let x = vec![vec![0.6f32, 0.8]; 48];
        let y: Vec<bool> = (0..48).map(|i| i % 6 == 0).collect();
        let m = train(&refs(&x), &y, None, &TrainOptions::default()).unwrap();
        assert!((m.score(&x[0]) - 0.5).abs() < 1e-3, "{}", m.score(&x[0]));
        let (_, mut examples) = collect_examples(&refs(&x), &y, None).unwrap();
        let folds_of = |ex: &[Example]| ex.iter().map(|e| e.fold).collect::<Vec<_>>();
        assign_folds(&mut examples, 4, 1);
        let first = folds_of(&examples);
        assign_folds(&mut examples, 4, 2);
        assert_ne!(folds_of(&examples), first, "the seed must matter");
        let mut counts = [[0; 2]; 4];
        for e in &examples {
            counts[e.fold][usize::from(e.positive)] += 1;
        }
        assert_eq!(counts, [[10, 2]; 4]);
    }

    #[test]
    fn threshold_rule_on_hand_made_scores() {
        // Descending: .9+ .8+ .7+ .6- .3+ .2- .1- .05-: four positives, four negatives.
        let oof = [0.9, 0.8, 0.7, -0.6, 0.3, -0.2, -0.1, -0.05].map(|s: f32| (s.abs(), s > 0.0));
        // [max fpr, target recall] -> [threshold, recall, fpr]
        #[rustfmt::skip]
        let table = [
            ("target met with no false positive",  [0.25, 0.75], [0.65, 0.75, 0.0]),
            ("free positives above target kept",   [0.5, 0.5],   [0.65, 0.75, 0.0]),
            ("full recall costs a false positive", [0.25, 1.0],  [0.25, 1.0, 0.25]),
            ("target out of budget: lowest cut",   [0.0, 1.0],   [0.65, 0.75, 0.0]),
            ("target needs the last positive",     [0.5, 0.9],   [0.25, 1.0, 0.25]),
            ("everything may fire",                [1.0, 1.0],   [0.25, 1.0, 0.25]),
        ];
        for (case, [max_fpr, target], [threshold, recall, fpr]) in table {
            let opts = opts(max_fpr, target);
            let (t, cv) = choose_threshold(&mut oof.clone(), &opts);
            assert!((t - threshold).abs() < 1e-6, "{case}: {t}");
            assert_eq!([cv.recall, cv.false_positive_rate], [recall, fpr], "{case}");
        }
        let mut top_negative = [(0.9, false), (0.5, true), (0.1, false)];
        let (t, cv) = choose_threshold(&mut top_negative, &opts(0.0, 0.9));
        assert_eq!((t, cv.recall, cv.precision), (0.95, 0.0, 0.0));
    }

    #[test]
    fn bad_inputs_return_the_matching_error() {
        use TrainError::*;
        let (x, y) = clusters(4, 10, 10, 0.5);
        let run = |x: &[Vec<f32>], y: &[bool], w| train(&refs(x), y, w, &opts(0.1, 0.9)).err();
        let (mut ragged, mut nan, mut few) = (x.clone(), x.clone(), y.clone());
        let mut zeroed = [1.0; 20];
        ragged[7].pop();
        nan[3][1] = f32::NAN;
        few[..5].fill(false);
        zeroed[..3].fill(0.0);
        let positives = |found| TooFewPositives { found, needed: 8 };
        #[rustfmt::skip]
        let cases = [
            ("empty",              run(&[], &[], None),            Empty),
            ("no positives",       run(&x, &[false; 20], None),    NoPositives),
            ("too few positives",  run(&x, &few, None),            positives(5)),
            ("zero weights drop",  run(&x, &y, Some(&zeroed)),     positives(7)),
            ("no negatives",       run(&x, &[true; 20], None),     TooFewNegatives { found: 0, needed: 8 }),
            ("labels too short",   run(&x, &y[1..], None),         LengthMismatch { what: "labels", expected: 20, found: 19 }),
            ("weights too long",   run(&x, &y, Some(&[1.0; 21])),  LengthMismatch { what: "weights", expected: 20, found: 21 }),
            ("negative weight",    run(&x, &y, Some(&[-1.0; 20])), InvalidWeight { index: 0 }),
            ("ragged dims",        run(&ragged, &y, None),         InconsistentDims { index: 7, expected: 4, found: 3 }),
            ("nan component",      run(&nan, &y, None),            NonFinite { index: 3 }),
        ];
        for (case, got, want) in cases {
            assert_eq!(got, Some(want), "{case}");
        }
        let text = positives(5).to_string();
        assert_eq!(text, "only 5 positive examples: add 3 more of the category");
        let mut one_fold = opts(0.1, 0.9);
        one_fold.folds = 1;
        let err = train(&refs(&x), &y, None, &one_fold).err();
        assert!(matches!(err, Some(InvalidOption(what)) if what.contains("folds")));
    }

    #[test]
    fn validate_rejects_broken_models_and_json_round_trips() {
        let (x, y) = clusters(16, 20, 40, 0.5);
        let m = train(&refs(&x), &y, None, &TrainOptions::default()).unwrap();
        assert_eq!(m.validate(16), Ok(()));
        let mut m = m;
        (m.cv.recall, m.cv.precision) = ((1.0f64 / 3.0) as f32, 0.1);
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<CategoryModel>(&json).unwrap(), m);
        let (mut nan, mut high) = (m.clone(), m.clone());
        nan.weights[3] = f32::NAN;
        high.threshold = 1.5;
        for (bad, dims) in [(&m, 15), (&nan, 16), (&high, 16)] {
            assert!(bad.validate(dims).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn score_is_the_hand_computed_sigmoid() {
        let cv = CvFigures::default();
        let m = CategoryModel {
            weights: vec![0.5, -1.0],
            bias: 0.25,
            threshold: 0.4,
            cv,
        };
        // z = 0.5 * 0.6 - 1.0 * 0.8 + 0.25 = -0.25, and 1 / (1 + e^0.25) = 0.437823499...
        assert!((m.score(&[0.6, 0.8]) - 0.437_823_5).abs() < 1e-6);
        let mut stricter = m.clone();
        stricter.threshold = 0.44;
        assert!(m.fires(&[0.6, 0.8]) && !stricter.fires(&[0.6, 0.8]));
        // Wrong lengths score 0 and never fire, even at threshold 0; NaN never fires.
        stricter.threshold = 0.0;
        let long = [0.6, 0.8, 0.0];
        assert_eq!((m.score(&[1.0]), m.score(&long)), (0.0, 0.0));
        assert!(!stricter.fires(&[1.0]) && !stricter.fires(&long));
        assert!(!m.fires(&[f32::NAN, 0.0]) && stricter.fires(&[0.6, 0.8]));
    }
}
