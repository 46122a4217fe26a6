//! Choosing the few-shot demos from the nearest neighbours: KNNFewShot semantics, done better.
//!
//! Owns the selection rules: over-fetch candidates, drop near-duplicate replies, prefer demos from
//! different conversations among the close ones, then order them nearest last so the most similar
//! exchange sits right before the question. Pure: it works on hits and example texts.

use std::collections::HashSet;

use crate::index::Hit;

/// Candidates fetched per demo wanted, so duplicates and same-conversation hits can be skipped.
pub const OVERFETCH: usize = 4;

/// Hits within this much cosine of the best one count as "close" for the diversity rule.
pub const CLOSE_MARGIN: f32 = 0.10;

/// Replies whose word sets overlap at least this much (Jaccard) are near-duplicates.
pub const DUPLICATE_JACCARD: f32 = 0.8;

/// A neighbour that may become a demo: its hit, its conversation and its reply.
#[derive(Debug, Clone)]
pub struct Neighbour<'a> {
    /// The search hit.
    pub hit: Hit,
    /// The conversation it comes from.
    pub conversation: u32,
    /// The gold reply.
    pub reply: &'a str,
}

/// Picks `k` demos from candidates given nearest first, and returns them nearest last.
pub fn select(candidates: &[Neighbour<'_>], k: usize) -> Vec<Hit> {
    let Some(best) = candidates.first().map(|c| c.hit.score) else {
        return Vec::new();
    };
    let mut chosen: Vec<&Neighbour> = Vec::new();
    let mut words: Vec<HashSet<String>> = Vec::new();
    let mut conversations = HashSet::new();

    // First the close candidates, one per conversation.
    for c in candidates
        .iter()
        .take_while(|c| c.hit.score >= best - CLOSE_MARGIN)
    {
        if chosen.len() == k {
            break;
        }
        if !conversations.contains(&c.conversation) && admit(c, &chosen, &mut words) {
            conversations.insert(c.conversation);
            chosen.push(c);
        }
    }
    // Then fill by similarity alone.
    for c in candidates {
        if chosen.len() == k {
            break;
        }
        if admit(c, &chosen, &mut words) {
            chosen.push(c);
        }
    }
    let mut hits: Vec<Hit> = chosen.iter().map(|c| c.hit).collect();
    hits.sort_by(|a, b| a.score.total_cmp(&b.score).then(b.id.cmp(&a.id)));
    hits
}

/// Whether `c` adds something new; records its words when it does.
fn admit(c: &Neighbour<'_>, chosen: &[&Neighbour<'_>], words: &mut Vec<HashSet<String>>) -> bool {
    let w = word_set(c.reply);
    if chosen.iter().any(|d| d.hit.id == c.hit.id)
        || words.iter().any(|o| jaccard(o, &w) >= DUPLICATE_JACCARD)
    {
        return false;
    }
    words.push(w);
    true
}

fn word_set(text: &str) -> HashSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

fn jaccard(a: &HashSet<String>, b: &HashSet<String>) -> f32 {
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    a.intersection(b).count() as f32 / a.union(b).count() as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: usize, score: f32, conversation: u32, reply: &str) -> Neighbour<'_> {
        Neighbour {
            hit: Hit { id, score },
            conversation,
            reply,
        }
    }

    #[test]
    fn selection_table() {
        // (case, candidates nearest first, k, expected ids nearest last)
        let cases: Vec<(&str, Vec<Neighbour>, usize, Vec<usize>)> = vec![
            (
                "plain top k, nearest last",
                vec![c(1, 0.9, 1, "a"), c(2, 0.8, 2, "b"), c(3, 0.7, 3, "c")],
                2,
                vec![2, 1],
            ),
            (
                "near-duplicate reply skipped",
                vec![
                    c(1, 0.9, 1, "hey petal how are you"),
                    c(2, 0.89, 2, "Hey petal, how are you?"),
                    c(3, 0.85, 3, "tea time"),
                ],
                2,
                vec![3, 1],
            ),
            (
                "prefers another conversation among close hits",
                vec![c(1, 0.90, 7, "one"), c(2, 0.89, 7, "two"), c(3, 0.86, 8, "three")],
                2,
                vec![3, 1],
            ),
            (
                "same conversation when the others are far",
                vec![c(1, 0.90, 7, "one"), c(2, 0.89, 7, "two"), c(3, 0.40, 8, "three")],
                2,
                vec![2, 1],
            ),
            ("fewer candidates than k", vec![c(1, 0.9, 1, "a")], 3, vec![1]),
            ("no candidates", vec![], 3, vec![]),
        ];
        for (name, candidates, k, expected) in cases {
            let ids: Vec<usize> = select(&candidates, k).iter().map(|h| h.id).collect();
            assert_eq!(ids, expected, "{name}");
        }
    }
}
