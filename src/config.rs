//! Configuration: defaults < `persona.toml` < environment < flags, resolved once into [`Config`].
//!
//! Owns the file format of `persona.toml` (unknown keys are errors, with line and column), the
//! environment variables persona reads, LLM presets and validation of every value. Everything
//! else takes a `&Config`. The command-line types live in `cli.rs`; this module only sees the
//! already-parsed values in [`Overrides`].

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::answer::signature::Signature;
use crate::filter::{FilterFile, FilterSettings};
use crate::index::IndexSettings;
use crate::llm::{self, LlmSettings, PRESETS};
use crate::safety::{SafetyFile, SafetySettings};

/// The file looked for in the working directory when no `--config` is given.
pub const DEFAULT_FILE: &str = "persona.toml";

/// The creator the persona speaks as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Creator {
    /// The creator's name, used in the instructions.
    pub name: String,
    /// IANA timezone of the creator, for the context stage.
    pub timezone: String,
    /// The platform the creator chats on: the one creator platform the filter allows and the
    /// instructions name; every other one is blocked.
    #[serde(default = "default_platform")]
    pub platform: String,
}

fn default_platform() -> String {
    crate::filter::platform::DEFAULT.to_string()
}

impl Default for Creator {
    fn default() -> Self {
        Creator {
            name: "the creator".into(),
            timezone: "UTC".into(),
            platform: default_platform(),
        }
    }
}

/// Retrieval settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retrieval {
    /// Number of demos per answer.
    pub k: usize,
    /// Messages of context embedded per example and per query.
    pub context_messages: usize,
}

impl Default for Retrieval {
    fn default() -> Self {
        Retrieval {
            k: 3,
            context_messages: 4,
        }
    }
}

/// How the embedding model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Embedding {
    /// Texts per model call.
    pub batch_size: usize,
    /// ONNX Runtime intra-op threads; 0 means one per core.
    pub threads: usize,
}

impl Default for Embedding {
    fn default() -> Self {
        Embedding {
            batch_size: 32,
            threads: 0,
        }
    }
}

impl Embedding {
    /// The thread count to use, with 0 resolved to the number of cores.
    pub fn effective_threads(&self) -> usize {
        if self.threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            self.threads
        }
    }
}

/// Settings of the compile step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Compile {
    /// Share of conversations held out for eval, in [0, 1).
    pub holdout: f64,
}

impl Default for Compile {
    fn default() -> Self {
        Compile { holdout: 0.2 }
    }
}

/// What the privacy stage masks in demos.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Privacy {
    /// Render demos without their fan's profile and with names, places, emails, phone numbers
    /// and handles masked (see `answer::privacy`).
    pub mask_demos: bool,
}

impl Default for Privacy {
    fn default() -> Self {
        Privacy { mask_demos: true }
    }
}

/// Where fan histories live when no `--history` is given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistorySettings {
    /// An SQLite file path or a `postgres://` URL.
    pub url: Option<String>,
    /// An environment variable holding the URL (for one with a password).
    pub url_env: Option<String>,
}

impl HistorySettings {
    /// The configured location: `url_env`'s value, else `url`; `None` for the default file.
    pub fn location(&self) -> Result<Option<String>> {
        match (&self.url_env, &self.url) {
            (Some(var), _) => Ok(Some(env(var).with_context(|| {
                format!("`[history] url_env` names `{var}`, but that environment variable is empty or unset")
            })?)),
            (None, url) => Ok(url.clone()),
        }
    }
}

/// What the context stage adds beyond time and conversation length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContextSettings {
    /// Read how the fan seems from their last messages (a classifier trained at compile) and
    /// add it as a note (see `safety::mood`).
    pub mood: bool,
}

impl Default for ContextSettings {
    fn default() -> Self {
        ContextSettings { mood: true }
    }
}

/// The resolved configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The creator.
    pub creator: Creator,
    /// The signature template.
    pub signature: Signature,
    /// Retrieval settings.
    pub retrieval: Retrieval,
    /// Embedding settings.
    pub embedding: Embedding,
    /// HNSW parameters as given; the rest are chosen from the data's size at compile.
    pub index: IndexSettings,
    /// Compile settings.
    pub compile: Compile,
    /// The LLM endpoint and sampling settings.
    pub llm: LlmSettings,
    /// The topic filter.
    pub filter: FilterSettings,
    /// What demos hide about the fans they come from.
    pub privacy: Privacy,
    /// The safety categories checked on fans' messages.
    pub safety: SafetySettings,
    /// The context stage's optional facts.
    pub context: ContextSettings,
    /// Where fan histories live.
    pub history: HistorySettings,
    /// The file the configuration came from, if any.
    pub source: Option<PathBuf>,
    /// The settings given explicitly (file, environment or flag) that override an artifact's.
    pub runtime: RuntimeSettings,
}

/// What the runtime may change in a compiled artifact, each `Some` only when given explicitly in
/// `persona.toml`, the environment or a flag.
///
/// Everything else is fixed by the artifact, because the compiled data depends on it: the
/// embedding model and `retrieval.context_messages` (the embedded text of every example), the
/// index's `m` and `ef_construction` (the graph), the creator's name and the signature (the
/// instructions the demos were chosen for), the whole `[filter]` (its example vectors and
/// deflections are compiled) and the style profile. `ask`, `serve` and `eval` read those from
/// the artifact whatever `persona.toml` says now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeSettings {
    /// `[retrieval] k` or `--k`: demos per answer.
    pub k: Option<usize>,
    /// `[index] ef_search`: the search beam.
    pub ef_search: Option<usize>,
    /// `[creator] timezone` or `PERSONA_TIMEZONE`: the creator's clock for the context stage.
    pub timezone: Option<String>,
}

/// The layout of `persona.toml`; every section optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    creator: Option<Creator>,
    signature: Option<Signature>,
    #[serde(default)]
    retrieval: Option<RetrievalFile>,
    #[serde(default)]
    embedding: Embedding,
    #[serde(default)]
    index: Option<IndexFile>,
    #[serde(default)]
    compile: Compile,
    #[serde(default)]
    llm: Option<LlmFile>,
    #[serde(default)]
    filter: Option<FilterFile>,
    #[serde(default)]
    privacy: Privacy,
    #[serde(default)]
    safety: Option<SafetyFile>,
    #[serde(default)]
    context: ContextSettings,
    #[serde(default)]
    history: HistorySettings,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LlmFile {
    preset: Option<String>,
    base_url: Option<String>,
    model: Option<String>,
    api_key_env: Option<String>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    repeat_penalty: Option<f32>,
    max_tokens: Option<u32>,
    stop: Option<Vec<String>>,
    seed: Option<u64>,
    timeout_secs: Option<f64>,
    retries: Option<u32>,
    prefill: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetrievalFile {
    k: Option<usize>,
    context_messages: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IndexFile {
    m: Option<usize>,
    ef_construction: Option<usize>,
    ef_search: Option<usize>,
}

/// Values given on the command line, which win over everything else.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--config`.
    pub config: Option<PathBuf>,
    /// `--k`.
    pub k: Option<usize>,
    /// `--holdout`.
    pub holdout: Option<f64>,
    /// `--threads`.
    pub threads: Option<usize>,
    /// `--llm-preset`.
    pub llm_preset: Option<String>,
    /// `--llm-url`.
    pub llm_url: Option<String>,
    /// `--llm-model`.
    pub llm_model: Option<String>,
    /// `--temperature`.
    pub temperature: Option<f32>,
    /// `--max-tokens`.
    pub max_tokens: Option<u32>,
    /// `--timeout`, in seconds.
    pub timeout_secs: Option<f64>,
    /// `--seed`.
    pub seed: Option<u64>,
}

impl Config {
    /// The built-in defaults alone: no file, no environment, no flags. For tests and for tools
    /// that build a persona in memory.
    pub fn defaults() -> Config {
        let mut config = Config::from_file(FileConfig::default(), None);
        config.filter = crate::filter::FilterSettings::default();
        config
    }

    /// Resolves defaults < file < environment < flags and validates the result.
    pub fn resolve(overrides: &Overrides) -> Result<Config> {
        let path = overrides
            .config
            .clone()
            .or_else(|| env("PERSONA_CONFIG").map(PathBuf::from))
            .or_else(|| {
                Path::new(DEFAULT_FILE)
                    .exists()
                    .then(|| PathBuf::from(DEFAULT_FILE))
            });
        let (mut file, source) = match path {
            Some(path) => {
                let path: PathBuf = path;
                let text = std::fs::read_to_string(&path).with_context(|| {
                    format!(
                        "reading the configuration `{}`; check the path given to --config or PERSONA_CONFIG",
                        path.display()
                    )
                })?;
                (
                    parse_file(&text)
                        .with_context(|| format!("in the configuration `{}`", path.display()))?,
                    Some(path),
                )
            }
            None => (FileConfig::default(), None),
        };
        let llm_file = file.llm.take().unwrap_or_default();
        let located = |e: anyhow::Error| match &source {
            Some(p) => e.context(format!("in the configuration `{}`", p.display())),
            None => e,
        };
        let filter = file
            .filter
            .take()
            .unwrap_or_default()
            .resolve()
            .map_err(located)?;
        let safety = file
            .safety
            .take()
            .unwrap_or_default()
            .resolve()
            .map_err(located)?;
        let mut config = Config::from_file(file, source);
        config.llm = resolve_llm(llm_file, overrides)?;
        config.filter = filter;
        crate::filter::platform::apply(&mut config.filter, &config.creator.platform);
        config.safety = safety;
        if let Some(tz) = env("PERSONA_TIMEZONE") {
            config.creator.timezone = tz.clone();
            config.runtime.timezone = Some(tz);
        }
        if let Some(threads) = env("PERSONA_EMBED_THREADS") {
            config.embedding.threads = threads
                .parse()
                .with_context(|| format!("PERSONA_EMBED_THREADS must be a whole number, got `{threads}`"))?;
        }
        if let Some(k) = overrides.k {
            if !(1..=32).contains(&k) {
                bail!("--k must be between 1 and 32, got {k}");
            }
            config.retrieval.k = k;
            config.runtime.k = Some(k);
        }
        if let Some(holdout) = overrides.holdout {
            config.compile.holdout = holdout;
        }
        if let Some(threads) = overrides.threads {
            config.embedding.threads = threads;
        }
        config.validate()?;
        Ok(config)
    }

    fn from_file(file: FileConfig, source: Option<PathBuf>) -> Config {
        let retrieval_defaults = Retrieval::default();
        let retrieval_file = file.retrieval.unwrap_or_default();
        let runtime = RuntimeSettings {
            k: retrieval_file.k,
            ef_search: file.index.as_ref().and_then(|i| i.ef_search),
            timezone: file.creator.as_ref().map(|c| c.timezone.clone()),
        };
        let index = file.index.map_or_else(IndexSettings::default, |i| IndexSettings {
            m: i.m,
            ef_construction: i.ef_construction,
            ef_search: i.ef_search,
        });
        Config {
            creator: file.creator.unwrap_or_default(),
            signature: file.signature.unwrap_or_default(),
            retrieval: Retrieval {
                k: retrieval_file.k.unwrap_or(retrieval_defaults.k),
                context_messages: retrieval_file
                    .context_messages
                    .unwrap_or(retrieval_defaults.context_messages),
            },
            embedding: file.embedding,
            index,
            compile: file.compile,
            llm: LlmSettings::from_preset(&PRESETS[0]),
            filter: FilterSettings::default(),
            privacy: file.privacy,
            safety: SafetySettings::default(),
            context: file.context,
            history: file.history,
            source,
            runtime,
        }
    }

    fn validate(&self) -> Result<()> {
        let place = self
            .source
            .as_ref()
            .map_or("the defaults".to_string(), |p| format!("`{}`", p.display()));
        if jiff::tz::TimeZone::get(&self.creator.timezone).is_err() {
            bail!(
                "unknown timezone `{}` in `creator.timezone` ({place}); use an IANA name such as \
                 `America/New_York` or `Europe/Berlin`",
                self.creator.timezone
            );
        }
        if !(0.0..1.0).contains(&self.compile.holdout) {
            bail!(
                "`compile.holdout` must be at least 0 and below 1, got {} ({place})",
                self.compile.holdout
            );
        }
        if self.retrieval.k == 0 || self.retrieval.k > 32 {
            bail!(
                "`retrieval.k` must be between 1 and 32, got {} ({place})",
                self.retrieval.k
            );
        }
        if self.retrieval.context_messages == 0 {
            bail!("`retrieval.context_messages` must be at least 1 ({place})");
        }
        if self.embedding.batch_size == 0 {
            bail!("`embedding.batch_size` must be at least 1 ({place})");
        }
        self.index.check().map_err(|e| anyhow::anyhow!("{e} ({place})"))?;
        self.signature
            .validate()
            .map_err(|e| anyhow::anyhow!("{e} ({place})"))?;
        Ok(())
    }
}

fn resolve_llm(file: LlmFile, o: &Overrides) -> Result<LlmSettings> {
    let name = o
        .llm_preset
        .clone()
        .or_else(|| env("PERSONA_LLM_PRESET"))
        .or(file.preset)
        .unwrap_or_else(|| "local".into());
    let preset = llm::preset(&name).with_context(|| {
        let names: Vec<&str> = PRESETS.iter().map(|p| p.name).collect();
        format!(
            "unknown LLM preset `{name}` (`[llm] preset`, PERSONA_LLM_PRESET or --llm-preset); use one of {}",
            names.join(", ")
        )
    })?;
    let mut s = LlmSettings::from_preset(preset);
    if let Some(key_env) = &file.api_key_env {
        s.api_key = env(key_env);
    }
    s.base_url = o
        .llm_url
        .clone()
        .or_else(|| env("PERSONA_LLM_BASE_URL"))
        .or(file.base_url)
        .unwrap_or(s.base_url);
    s.model = o
        .llm_model
        .clone()
        .or_else(|| env("PERSONA_LLM_MODEL"))
        .or(file.model)
        .unwrap_or(s.model);
    s.api_key = env("PERSONA_LLM_API_KEY").or(s.api_key);
    s.temperature = o.temperature.or(file.temperature).unwrap_or(s.temperature);
    s.top_p = file.top_p.or(s.top_p);
    s.repeat_penalty = file.repeat_penalty.or(s.repeat_penalty);
    s.max_tokens = o.max_tokens.or(file.max_tokens).unwrap_or(s.max_tokens);
    s.stop = file.stop.unwrap_or(s.stop);
    s.seed = o.seed.or(file.seed).or(s.seed);
    s.retries = file.retries.unwrap_or(s.retries);
    s.prefill = file.prefill.unwrap_or(s.prefill);
    let timeout = o
        .timeout_secs
        .or(file.timeout_secs)
        .unwrap_or(s.timeout.as_secs_f64());
    if !(timeout > 0.0 && timeout <= 3600.0) {
        bail!("the LLM timeout must be between 0 and 3600 seconds, got {timeout} (`[llm] timeout_secs` or --timeout)");
    }
    s.timeout = std::time::Duration::from_secs_f64(timeout);
    if !(0.0..=2.0).contains(&s.temperature) {
        bail!(
            "the LLM temperature must be between 0 and 2, got {} (`[llm] temperature` or --temperature)",
            s.temperature
        );
    }
    if s.max_tokens == 0 {
        bail!("`[llm] max_tokens` must be at least 1");
    }
    if !(s.base_url.starts_with("http://") || s.base_url.starts_with("https://")) {
        bail!(
            "the LLM base URL `{}` must start with http:// or https:// (`[llm] base_url`, PERSONA_LLM_BASE_URL or --llm-url), e.g. http://127.0.0.1:8080/v1",
            s.base_url
        );
    }
    Ok(s)
}

fn parse_file(text: &str) -> Result<FileConfig> {
    // toml's error text carries the line, the column and the offending key.
    toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))
}

/// A non-empty environment variable.
pub fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_values_override_defaults_and_unknown_keys_are_errors() {
        let file = parse_file(
            "[creator]\nname = \"Wren\"\ntimezone = \"America/New_York\"\n[retrieval]\nk = 5\n[index]\nm = 24\n",
        )
        .unwrap();
        let config = Config::from_file(file, None);
        assert_eq!(config.creator.name, "Wren");
        assert_eq!(config.retrieval.k, 5);
        assert_eq!(
            config.retrieval.context_messages,
            Retrieval::default().context_messages
        );
        assert_eq!(config.index.m, Some(24));
        assert_eq!(config.index.ef_search, None, "chosen from the data's size");
        assert_eq!(config.index.params(1_000_000).m, 24, "a given value wins");
        config.validate().unwrap();

        let err = parse_file("[retrieval]\nkk = 5\n").unwrap_err().to_string();
        assert!(err.contains("kk") && err.contains("line 2"), "{err}");
    }

    #[test]
    fn bad_values_are_rejected_with_the_key() {
        let cases = [
            (
                "[creator]\nname = \"x\"\ntimezone = \"Mars/Olympus\"\n",
                "creator.timezone",
            ),
            ("[compile]\nholdout = 1.5\n", "compile.holdout"),
            ("[retrieval]\nk = 0\n", "retrieval.k"),
        ];
        for (text, key) in cases {
            let config = Config::from_file(parse_file(text).unwrap(), None);
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
    }
}
