//! Every filter stage that runs without the embedding model, over arbitrary text.
//!
//! The normalizer's pieces, the topic filter's lexical stages (lexicon, detectors, patterns) alone
//! and in context with a fan message, the echo check, the sentence splitter, the prompt-leak
//! guard and the safety check's lexical stage. The filters are built once from the default
//! configuration, and once more for a creator on another platform (Fansly). The first line of the
//! input is the fan's message, the rest the reply; both are also checked on their own.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use jiff::Timestamp;
use persona::answer::leak::LeakGuard;
use persona::answer::prompt::{self, Demo};
use persona::config::Config;
use persona::filter::{echo, features, normalize, platform, respell, sentences, train, Filter};
use persona::safety::Safety;

struct Stages {
    filter: Filter,
    /// The same for a creator on another platform, whose home names are rewritten first.
    fansly: Filter,
    names: Vec<String>,
    safety: Safety,
    leak: LeakGuard,
}

static STAGES: LazyLock<Stages> = LazyLock::new(|| {
    let mut config = Config::defaults();
    platform::apply(&mut config.filter, &config.creator.platform);
    let filter = Filter::new(config.filter.clone()).expect("the default filter compiles");
    let mut fansly = config.filter.clone();
    platform::apply(&mut fansly, "Fansly");
    let fansly = Filter::new(fansly).expect("the default filter compiles for Fansly");
    let names = config.filter.categories.iter().map(|c| c.name.clone()).collect();
    let safety = Safety::new(&config.safety, None).expect("the default safety check compiles");
    let inputs = |history: &str| BTreeMap::from([("chat_history".to_string(), history.to_string())]);
    let demos = [Demo {
        inputs: inputs("THE FAN: cant sleep again"),
        reply: "mm come sit with me a while, petal".into(),
    }];
    let messages = prompt::render(
        &config.signature,
        &config.creator.name,
        &demos,
        &inputs("THE FAN: up late?"),
        false,
    );
    Stages {
        filter,
        fansly,
        names,
        safety,
        leak: LeakGuard::new(&messages),
    }
});

/// Runs every stage on the text in `data` (not UTF-8: refused).
pub fn run(data: &[u8]) -> Result<(), String> {
    let text = std::str::from_utf8(data).map_err(|e| e.to_string())?;
    let s = &*STAGES;
    let (fan, reply) = text.split_once('\n').unwrap_or(("", text));

    let _ = normalize::fold(text);
    let _ = normalize::unleet(text);
    let _ = normalize::join_spelled_out(text);
    let _ = normalize::digits_from_words(text);
    let normalized = normalize::normalize(text);
    assert!(normalized == normalized.trim_end(), "{normalized:?}");
    let _ = features::expand_chat_spelling(text);
    for spelling in [features::Spelling::Expanded, features::Spelling::Respelled] {
        let _ = features::texts_to_embed(reply, Some(fan), spelling);
    }
    // Respelling changes words only: every other character stays where it was.
    let lower = text.to_lowercase();
    let respelled = respell::respell(&lower);
    let others = |t: &str| t.chars().filter(|c| !c.is_alphanumeric()).collect::<String>();
    assert_eq!(others(&respelled), others(&lower), "{respelled:?}");
    let _ = sentences(text);
    let _ = s.filter.home().canonical(text);
    let _ = s.fansly.home().canonical(text);
    let _ = s.fansly.check_lexical(text);

    let alone = s.filter.check_lexical(text);
    assert_eq!(alone.blocked, alone.category.is_some());
    let semantic = s.filter.check(text, None).expect("no embedder, nothing to fail");
    assert_eq!(
        semantic, alone,
        "without an embedder `check` is the lexical stages"
    );
    let _ = s.filter.check_in_context(reply, Some(fan), None);
    let _ = train::lexical_index(&s.filter, &s.names, text);
    let _ = echo::specifics(fan);
    let _ = echo::repeated(reply, fan);
    let _ = s.leak.check(text);
    let now = Timestamp::UNIX_EPOCH;
    if let Some((handoff, answer)) = s
        .safety
        .check(text, None, now)
        .expect("no embedder, nothing to fail")
    {
        assert!(!answer.is_empty() && s.safety.category(&handoff.category).is_some());
    }
    Ok(())
}
