//! Scoring the topic filter on a labelled set: precision and recall per category, the false
//! positive rate on benign texts, and the semantic-threshold sweep used to calibrate it.
//!
//! Pure functions over labels and predictions; `check` reads the file and runs the filter.

use serde::Serialize;

/// Figures for one category.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CategoryScore {
    /// Category name.
    pub category: String,
    /// Texts labelled with it.
    pub support: usize,
    /// Of those, blocked (under any category).
    pub caught: usize,
    /// Texts the filter put in this category.
    pub predicted: usize,
    /// Of those, labelled with it.
    pub correct: usize,
    /// caught / support.
    pub recall: f64,
    /// correct / predicted.
    pub precision: f64,
}

/// The filter's figures on one labelled set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Figures {
    /// Per category.
    pub categories: Vec<CategoryScore>,
    /// Benign texts.
    pub benign: usize,
    /// Benign texts blocked.
    pub false_positives: usize,
    /// false_positives / benign.
    pub false_positive_rate: f64,
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        1.0
    } else {
        a as f64 / b as f64
    }
}

/// Scores predictions (the blocking category or `None`) against labels.
///
/// Recall counts a violation as caught when it is blocked at all, since any block keeps it from
/// the fan; precision asks for the right category.
pub fn score(labels: &[Option<String>], predictions: &[Option<String>]) -> Figures {
    let mut names: Vec<String> = labels.iter().chain(predictions).flatten().cloned().collect();
    names.sort();
    names.dedup();
    let categories = names
        .into_iter()
        .map(|name| {
            let pairs = labels.iter().zip(predictions);
            let support = labels.iter().filter(|l| l.as_deref() == Some(&name)).count();
            let caught = pairs
                .clone()
                .filter(|(l, p)| l.as_deref() == Some(&name) && p.is_some())
                .count();
            let predicted = predictions.iter().filter(|p| p.as_deref() == Some(&name)).count();
            let correct = pairs
                .filter(|(l, p)| l.as_deref() == Some(&name) && p.as_deref() == Some(&name))
                .count();
            CategoryScore {
                recall: ratio(caught, support),
                precision: ratio(correct, predicted),
                category: name,
                support,
                caught,
                predicted,
                correct,
            }
        })
        .collect();
    let benign = labels.iter().filter(|l| l.is_none()).count();
    let false_positives = labels
        .iter()
        .zip(predictions)
        .filter(|(l, p)| l.is_none() && p.is_some())
        .count();
    let false_positive_rate = if benign == 0 {
        0.0
    } else {
        false_positives as f64 / benign as f64
    };
    Figures {
        categories,
        benign,
        false_positives,
        false_positive_rate,
    }
}

/// The report as a Markdown table.
pub fn to_markdown(report: &Figures) -> String {
    let mut out =
        String::from("| category | texts | caught | recall | precision |\n|---|---:|---:|---:|---:|\n");
    for c in &report.categories {
        out.push_str(&format!(
            "| {} | {} | {} | {:.3} | {:.3} |\n",
            c.category, c.support, c.caught, c.recall, c.precision
        ));
    }
    out.push_str(&format!(
        "| benign (false positives) | {} | {} | | rate {:.3} |\n",
        report.benign, report.false_positives, report.false_positive_rate
    ));
    out
}

/// One row of the threshold sweep.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SweepRow {
    /// The semantic threshold.
    pub threshold: f32,
    /// Lowest recall over the categories.
    pub min_recall: f64,
    /// False positive rate on benign texts.
    pub false_positive_rate: f64,
}

/// Sweeps the semantic threshold: a text is blocked when the lexical stages block it or its
/// semantic score reaches the threshold.
pub fn sweep(labels: &[Option<String>], lexical_blocked: &[bool], semantic: &[f32]) -> Vec<SweepRow> {
    (50..=95)
        .map(|t| {
            let threshold = t as f32 / 100.0;
            let predictions: Vec<Option<String>> = lexical_blocked
                .iter()
                .zip(semantic)
                .map(|(&b, &s)| (b || s >= threshold).then(|| "blocked".to_string()))
                .collect();
            let report = score(labels, &predictions);
            let min_recall = labels
                .iter()
                .flatten()
                .map(|name| {
                    let support = labels.iter().filter(|l| l.as_ref() == Some(name)).count();
                    let caught = labels
                        .iter()
                        .zip(&predictions)
                        .filter(|(l, p)| l.as_ref() == Some(name) && p.is_some())
                        .count();
                    ratio(caught, support)
                })
                .fold(1.0, f64::min);
            SweepRow {
                threshold,
                min_recall,
                false_positive_rate: report.false_positive_rate,
            }
        })
        .collect()
}

/// The lowest threshold whose false positive rate stays within `max_fp`, which maximizes recall.
pub fn best_threshold(rows: &[SweepRow], max_fp: f64) -> Option<&SweepRow> {
    rows.iter().find(|r| r.false_positive_rate <= max_fp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> Option<String> {
        Some(x.to_string())
    }

    #[test]
    fn scores_recall_precision_and_false_positives() {
        let labels = vec![s("a"), s("a"), s("b"), None, None];
        let predictions = vec![s("a"), s("b"), None, s("a"), None];
        let r = score(&labels, &predictions);
        let a = &r.categories[0];
        assert_eq!((a.support, a.caught, a.predicted, a.correct), (2, 2, 2, 1));
        assert_eq!((a.recall, a.precision), (1.0, 0.5));
        let b = &r.categories[1];
        assert_eq!((b.recall, b.precision), (0.0, 0.0));
        assert_eq!((r.benign, r.false_positives, r.false_positive_rate), (2, 1, 0.5));
    }

    #[test]
    fn the_sweep_trades_recall_for_false_positives() {
        let labels = vec![s("a"), s("a"), None, None];
        let rows = sweep(&labels, &[false, false, false, false], &[0.9, 0.6, 0.7, 0.3]);
        let at = |t: f32| {
            rows.iter()
                .find(|r| (r.threshold - t).abs() < 1e-6)
                .unwrap()
                .clone()
        };
        assert_eq!((at(0.6).min_recall, at(0.6).false_positive_rate), (1.0, 0.5));
        assert_eq!((at(0.75).min_recall, at(0.75).false_positive_rate), (0.5, 0.0));
        assert_eq!(best_threshold(&rows, 0.0).unwrap().threshold, 0.71);
    }
}
