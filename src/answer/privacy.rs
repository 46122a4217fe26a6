//! Demos carry no other fan's personal data: masking a demo conversation before it is rendered.
//!
//! A demo steers the voice with its messages; who the fan was does not help and must never reach
//! the LLM provider or, through a confused reply, another fan. So a demo's fan profile is never
//! rendered, and in its messages (the creator's reply included) the values of that profile
//! (name, username, handle, location and its parts, email, phone) and any email address, phone
//! number, @handle or self-introduction ("my name is Noah", "noah here") become neutral
//! placeholders: `[name]`, `[city]`, `[email]`, `[phone]`, `[handle]`. Pure: conversations in,
//! masked messages out. The current fan's own profile and history are not touched here.

use std::sync::LazyLock;

use regex::Regex;

use crate::conversation::{FanProfile, Message};

/// Profile keys whose values name the fan.
const NAME_KEYS: &[&str] = &[
    "name",
    "first_name",
    "last_name",
    "username",
    "handle",
    "nickname",
];
/// Profile keys whose values place the fan.
const PLACE_KEYS: &[&str] = &[
    "location",
    "city",
    "town",
    "state",
    "country",
    "address",
    "hometown",
    "neighborhood",
];

/// Built-in patterns: a failure to compile is a build defect, caught by the tests below.
static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b[a-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]{2,}\b").expect("the email pattern compiles")
});
static PHONE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\+?\d[\d\s().-]{6,}\d").expect("the phone pattern compiles"));
static HANDLE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)@[a-z0-9_][a-z0-9_.]{1,}").expect("the handle pattern compiles"));
static INTRODUCTION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(my name is|my name's|name's|call me|i'm called|this is) ([a-z][a-z'-]{1,})|^([a-z][a-z'-]{1,}) here\b")
        .expect("the introduction pattern compiles")
});

/// A demo conversation's messages with its fan's identifying details masked.
pub fn mask_messages(messages: &[Message], profile: Option<&FanProfile>) -> Vec<Message> {
    let values = identifying_values(profile);
    messages
        .iter()
        .map(|m| Message {
            content: mask_text(&m.content, &values),
            ..m.clone()
        })
        .collect()
}

/// Masks one text: contact details first (an email holds a name), then the profile's values,
/// then self-introductions.
pub fn mask_text(text: &str, values: &[(String, &'static str)]) -> String {
    let mut out = EMAIL.replace_all(text, "[email]").into_owned();
    out = PHONE.replace_all(&out, "[phone]").into_owned();
    out = HANDLE.replace_all(&out, "[handle]").into_owned();
    for (value, placeholder) in values {
        if let Ok(re) = Regex::new(&format!(r"(?i)\b{}\b", regex::escape(value))) {
            out = re.replace_all(&out, *placeholder).into_owned();
        }
    }
    INTRODUCTION
        .replace_all(&out, |c: &regex::Captures| match c.get(1) {
            Some(lead) => format!("{} [name]", lead.as_str()),
            None => "[name] here".to_string(),
        })
        .into_owned()
}

/// The profile's identifying values with their placeholders, longest first so "Seattle, WA" is
/// masked before "Seattle".
pub fn identifying_values(profile: Option<&FanProfile>) -> Vec<(String, &'static str)> {
    let Some(profile) = profile else {
        return Vec::new();
    };
    let mut out: Vec<(String, &'static str)> = Vec::new();
    for (key, value) in profile {
        let key = key.to_lowercase();
        let placeholder = if NAME_KEYS.contains(&key.as_str()) {
            "[name]"
        } else if PLACE_KEYS.contains(&key.as_str()) {
            "[city]"
        } else if key.contains("email") {
            "[email]"
        } else if key.contains("phone") {
            "[phone]"
        } else {
            continue;
        };
        let Some(text) = value.as_str().map(str::trim).filter(|t| !t.is_empty()) else {
            continue;
        };
        out.push((text.to_string(), placeholder));
        // "Seattle, WA" also hides "Seattle"; "Noah Reed" also hides "Noah".
        for part in text
            .split([',', ' '])
            .map(str::trim)
            .filter(|p| p.chars().count() >= 3)
        {
            out.push((part.to_string(), placeholder));
        }
    }
    out.sort_by_key(|v| std::cmp::Reverse(v.0.len()));
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile() -> FanProfile {
        let mut p = FanProfile::new();
        p.insert("name".into(), "Noah".into());
        p.insert("location".into(), "Seattle, WA".into());
        p.insert("age".into(), 26.into());
        p.insert("notes".into(), "just moved to a new city".into());
        p
    }

    #[test]
    fn identifying_details_become_placeholders() {
        let values = identifying_values(Some(&profile()));
        let cases = [
            (
                "profile name",
                "hey noah, how's the rain?",
                "hey [name], how's the rain?",
            ),
            (
                "profile city",
                "moved to Seattle last week",
                "moved to [city] last week",
            ),
            (
                "city with state",
                "i live in seattle, wa now",
                "i live in [city] now",
            ),
            (
                "email",
                "write me at noah.r@example.com ok",
                "write me at [email] ok",
            ),
            ("phone", "call 206-555-0143 later", "call [phone] later"),
            ("handle", "i'm @noah_r on there", "i'm [handle] on there"),
            ("introduction", "my name is Liam btw", "my name is [name] btw"),
            ("x here", "mike here from ohio", "[name] here from ohio"),
            (
                "a word inside another stays",
                "noahs ark and seattleite",
                "noahs ark and seattleite",
            ),
            ("nothing to mask", "i made pancakes", "i made pancakes"),
        ];
        for (name, input, want) in cases {
            assert_eq!(mask_text(input, &values), want, "{name}");
        }
    }

    #[test]
    fn the_creators_reply_keeps_its_words_with_the_fans_name_masked() {
        let messages = vec![
            Message {
                from_creator: false,
                content: "hi it's Noah from Seattle".into(),
                sent_at: None,
            },
            Message {
                from_creator: true,
                content: "hey noah, seattle rain suits you 🌧️".into(),
                sent_at: None,
            },
        ];
        let masked = mask_messages(&messages, Some(&profile()));
        assert_eq!(masked[0].content, "hi it's [name] from [city]");
        assert_eq!(masked[1].content, "hey [name], [city] rain suits you 🌧️");
        assert!(masked[1].from_creator);
        assert_eq!(
            mask_messages(&messages, None)[1].content,
            messages[1].content,
            "no profile, no names known"
        );
    }
}
