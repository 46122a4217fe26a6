//! The creator's home platform: the one creator platform the filter allows.
//!
//! A creator lives on one platform (OnlyFans by default, `[creator] platform`), and every other
//! creator platform is a place to move fans to, so it is blocked. [`apply`] rewrites the default
//! `social_platform` category for the home platform (its names allowed, its description naming
//! it); the `platform` detector blocks the names of every other known platform on its own, even
//! where the learned stage decides; and [`Home::canonical`] shows the learned stage, trained on a
//! corpus written for OnlyFans creators, the home platform under the name it learned as home.

use super::normalize::normalize;
use super::FilterSettings;

/// The default home platform.
pub const DEFAULT: &str = "OnlyFans";

/// Known creator platforms and the names they go by (normalized: lowercase, spaced words).
pub const PLATFORMS: &[(&str, &[&str])] = &[
    ("OnlyFans", &["onlyfans", "only fans", "of page"]),
    ("Fansly", &["fansly"]),
    ("Fanvue", &["fanvue"]),
    ("Patreon", &["patreon"]),
    ("ManyVids", &["manyvids", "many vids"]),
    ("LoyalFans", &["loyalfans", "loyal fans"]),
    ("JustForFans", &["justforfans", "just for fans"]),
    ("FanCentro", &["fancentro"]),
    ("Chaturbate", &["chaturbate"]),
];

/// The home platform and the names of the others.
#[derive(Debug, Clone, PartialEq)]
pub struct Home {
    aliases: Vec<String>,
    others: Vec<String>,
}

impl Home {
    /// The home platform `name` (a known platform, any case, or any other name).
    pub fn new(name: &str) -> Self {
        let key = normalize(name).replace(' ', "");
        let known = PLATFORMS.iter().find(|(n, aliases)| {
            n.to_lowercase() == key || aliases.iter().any(|a| a.replace(' ', "") == key)
        });
        let aliases: Vec<String> = match known {
            Some((_, aliases)) => aliases.iter().map(|a| a.to_string()).collect(),
            None => vec![normalize(name)]
                .into_iter()
                .filter(|a| !a.is_empty())
                .collect(),
        };
        let others = PLATFORMS
            .iter()
            .flat_map(|(_, a)| a.iter())
            .map(|a| a.to_string())
            .filter(|a| !aliases.contains(a))
            .collect();
        Home { aliases, others }
    }

    /// The names of the home platform.
    pub fn aliases(&self) -> &[String] {
        &self.aliases
    }

    /// The names of every other known platform.
    pub fn others(&self) -> &[String] {
        &self.others
    }

    /// Whether the home platform is OnlyFans, the home the shipped corpus was written for.
    pub fn is_default(&self) -> bool {
        self.aliases.iter().any(|a| a == "onlyfans")
    }

    /// A text with the home platform's names written as `onlyfans`, the name the learned stage
    /// was trained to read as home. Unchanged for an OnlyFans creator.
    pub fn canonical(&self, text: &str) -> String {
        if self.is_default() {
            return text.to_string();
        }
        let mut out = text.to_string();
        for a in &self.aliases {
            let words: Vec<String> = a.split(' ').map(regex::escape).collect();
            if let Ok(re) = regex::Regex::new(&format!(r"(?i)\b{}\b", words.join(r"\s*"))) {
                out = re.replace_all(&out, "onlyfans").into_owned();
            }
        }
        out
    }

    /// The domain word of the home platform's own links (`onlyfans.com/wren` is not a move).
    pub fn domain_word(&self) -> String {
        self.aliases
            .first()
            .map(|a| a.replace(' ', ""))
            .unwrap_or_default()
    }
}

/// Rewrites the `social_platform` category for `platform`: its names move from `block` to
/// `allow`, OnlyFans's names leave `allow` when it is not home, and the description names the
/// home platform. Other categories are left as they are.
pub fn apply(settings: &mut FilterSettings, platform: &str) {
    settings.platform = platform.to_string();
    let home = Home::new(platform);
    let onlyfans = Home::new(DEFAULT);
    for c in settings
        .categories
        .iter_mut()
        .filter(|c| c.name == "social_platform")
    {
        c.description = c.description.replace(DEFAULT, platform);
        c.block.retain(|t| !home.aliases.contains(&normalize(t)));
        if !home.is_default() {
            c.allow.retain(|t| !onlyfans.aliases.contains(&normalize(t)));
        }
        for a in &home.aliases {
            if !c.allow.contains(a) {
                c.allow.push(a.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_and_unknown_homes_and_their_rivals() {
        let fansly = Home::new("fansly");
        assert_eq!(fansly.aliases(), ["fansly"]);
        assert!(fansly.others().iter().any(|o| o == "onlyfans"));
        assert!(!fansly.is_default());
        assert_eq!(
            fansly.canonical("come see me on Fansly tonight"),
            "come see me on onlyfans tonight"
        );
        assert!(Home::new("Only Fans").is_default());
        let mine = Home::new("Velvet Room");
        assert_eq!(mine.aliases(), ["velvet room"]);
        assert_eq!(
            mine.others().len(),
            PLATFORMS.iter().map(|p| p.1.len()).sum::<usize>()
        );
    }

    #[test]
    fn the_home_platform_is_allowed_and_every_other_one_blocked() {
        use crate::filter::{Filter, FilterSettings};
        let filter_for = |platform: &str| {
            let mut s = FilterSettings::default();
            apply(&mut s, platform);
            Filter::new(s).unwrap()
        };
        let table = [
            ("OnlyFans", "new set going up on my onlyfans tonight", false),
            ("OnlyFans", "i'm on fansly too, cheaper there", true),
            ("OnlyFans", "check my patreon", true),
            ("Fansly", "new set going up on my fansly tonight", false),
            ("Fansly", "come find me on onlyfans instead", true),
            ("Fansly", "my only fans is cheaper", true),
            ("Fansly", "link: fansly.com/wren", false),
            ("Fansly", "link: onlyfans.com/wren", true),
        ];
        for (home, text, blocked) in table {
            let v = filter_for(home).check_lexical(text);
            assert_eq!(v.blocked, blocked, "{home}: {text}: {v:?}");
        }
        let mut s = FilterSettings::default();
        apply(&mut s, "Fansly");
        let social = s.categories.iter().find(|c| c.name == "social_platform").unwrap();
        assert!(
            social.description.contains("other than Fansly"),
            "{}",
            social.description
        );
    }
}
