//! The echo check: a reply that repeats the specifics of a fan's proposal to meet (or to move off
//! the platform) takes it up, however innocently it is worded.
//!
//! Answering "coffee shop on main street, saturday at 3?" with a story that mentions "this very
//! coffee shop on saturday" reads as a yes to the fan, though no sentence of it is an agreement.
//! When the fan's message is itself blocked, the specifics it proposes are the places it names
//! (a word before a venue noun: "coffee shop", "main street", "rooftop bar"), its day and time
//! words ("saturday", "tonight") and its clock times ("at 3", "8pm"); a reply sharing any of them
//! is blocked as the fan's category. Other words the fan used may come back: a refusal that says
//! "deep dish sounds like an adventure, but i'll enjoy it from here" takes nothing up. Pure
//! functions over normalized text.

use std::collections::HashSet;

/// Words that carry no specifics.
const STOPWORDS: &[&str] = &[
    "a", "an", "the", "and", "or", "but", "if", "so", "to", "of", "in", "on", "at", "for", "with", "by",
    "from", "up", "out", "about", "into", "over", "after", "before", "i", "im", "me", "my", "you", "your",
    "youre", "we", "us", "our", "he", "she", "it", "its", "they", "them", "this", "that", "these", "those",
    "is", "am", "are", "was", "were", "be", "been", "do", "does", "did", "have", "has", "had", "will",
    "would", "can", "could", "should", "shall", "may", "might", "must", "just", "really", "very", "too",
    "also", "not", "no", "yes", "yeah", "ok", "okay", "there", "here", "then", "than", "what", "when",
    "where", "who", "how", "why", "some", "any", "all", "one", "get", "go", "come", "say", "said", "see",
    "let", "lets", "want", "wanna", "gonna", "like", "love", "finally", "maybe", "please", "pls", "hey",
    "hi", "oh", "mm", "haha", "hehe", "lol", "babe", "baby", "honey", "ill", "id", "ive", "dont", "cant",
    "wont", "thats", "whats", "meet", "meeting", "together", "time", "day", "sometime",
];

/// Nouns that name a venue or a street: the head of a place.
const VENUES: &[&str] = &[
    "shop",
    "cafe",
    "coffeeshop",
    "bar",
    "pub",
    "club",
    "restaurant",
    "diner",
    "bistro",
    "bakery",
    "street",
    "st",
    "avenue",
    "ave",
    "road",
    "rd",
    "boulevard",
    "blvd",
    "lane",
    "square",
    "plaza",
    "park",
    "beach",
    "pier",
    "hotel",
    "motel",
    "inn",
    "station",
    "airport",
    "terminal",
    "mall",
    "market",
    "gym",
    "library",
    "museum",
    "gallery",
    "theater",
    "theatre",
    "cinema",
    "arena",
    "stadium",
    "lounge",
    "rooftop",
    "garden",
    "zoo",
    "aquarium",
    "center",
    "centre",
    "hall",
    "campus",
];

/// Words that name a day or a time of day.
const WHEN: &[&str] = &[
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
    "weekend",
    "tonight",
    "tomorrow",
    "noon",
    "midnight",
];

fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

fn content(word: &str) -> bool {
    word.len() >= 3 && !STOPWORDS.contains(&word) && !word.chars().all(|c| c.is_ascii_digit())
}

/// The specifics a proposal names: places (a content word before a venue noun), day and time
/// words, and clock times (a number after "at", or a number with am/pm).
pub fn specifics(proposal: &str) -> HashSet<String> {
    let w = words(proposal);
    let mut out = HashSet::new();
    for pair in w.windows(2) {
        if content(&pair[0]) && VENUES.contains(&pair[1].as_str()) {
            out.insert(format!("{} {}", pair[0], pair[1]));
        }
    }
    for (i, word) in w.iter().enumerate() {
        if WHEN.contains(&word.as_str()) {
            out.insert(word.clone());
        }
        let clock = word.trim_end_matches("am").trim_end_matches("pm");
        let is_number = !clock.is_empty() && clock.chars().all(|c| c.is_ascii_digit()) && clock.len() <= 4;
        let after_at = i > 0 && w[i - 1] == "at";
        let with_meridiem = word.len() > clock.len() || w.get(i + 1).is_some_and(|n| n == "am" || n == "pm");
        if is_number && (after_at || with_meridiem) {
            out.insert(format!("@{clock}"));
        }
    }
    out
}

/// The first specific of `proposal` that `reply` repeats, if any.
pub fn repeated(reply: &str, proposal: &str) -> Option<String> {
    let wanted = specifics(proposal);
    if wanted.is_empty() {
        return None;
    }
    let said = specifics_in_reply(reply);
    let mut hits: Vec<&String> = wanted.iter().filter(|s| said.contains(*s)).collect();
    hits.sort();
    hits.first().map(|s| s.trim_start_matches('@').to_string())
}

/// What a reply says, in the same terms: every bigram (stopwords included, so "this very coffee
/// shop" still holds "coffee shop"), every day and time word and every clock time.
fn specifics_in_reply(reply: &str) -> HashSet<String> {
    let w = words(reply);
    let mut out = specifics(reply);
    for pair in w.windows(2) {
        out.insert(format!("{} {}", pair[0], pair[1]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_that_names_the_proposed_place_or_time_echoes_it() {
        let fan = "there's a coffee shop on main street, saturday at 3? say yes and i'll see you there";
        let s = specifics(fan);
        for want in ["coffee shop", "main street", "saturday", "@3"] {
            assert!(s.contains(want), "{want} in {s:?}");
        }
        assert!(!s.contains("say yes"), "stopwords make no specifics: {s:?}");
        let chicago = "come visit me in chicago! ill show you the best deep dish";
        let refusal = "mm deep dish sounds like a whole adventure... but i'll enjoy it from here";
        assert_eq!(repeated(refusal, chicago), None, "a dish is not a place");
        let story =
            "he he i'm in town today... 5 years ago we met at this very coffee shop on saturday night";
        assert_eq!(repeated(story, fan).as_deref(), Some("coffee shop"));
        assert_eq!(repeated("ok see you at 3 then", fan).as_deref(), Some("3"));
        assert_eq!(
            repeated("mm i'd rather stay cozy here with you and my tea 🍵", fan),
            None
        );
        assert_eq!(
            repeated("3 cats and a nap", fan),
            None,
            "a bare number is not the fan's time"
        );
        assert_eq!(
            repeated("anything", "we should finally meet up"),
            None,
            "no specifics, no echo"
        );
    }

    #[test]
    fn clock_times_are_read_with_at_or_a_meridiem() {
        let s = specifics("drinks at 8 or maybe 9pm, not 10 people");
        assert!(s.contains("@8") && s.contains("@9"), "{s:?}");
        assert!(!s.contains("@10"), "a bare number is not a time: {s:?}");
    }
}
