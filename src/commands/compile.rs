//! The `compile` pipeline: dataset -> examples -> embeddings -> HNSW -> artifact.
//!
//! A short orchestration of the stages in `dataset`, `transcript`, `embed_cache`, `index` and
//! `artifact`; it owns the order of those steps and the summary it reports, nothing else.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::answer::privacy;
use crate::artifact::conversation_table::ConversationTable;
use crate::artifact::{self, Artifact, CompiledFilter, DatasetInfo, Heldout, Manifest, Settings};
use crate::config::Config;
use crate::conversation::transcript;
use crate::conversation::{dataset, Conversation, Example};
use crate::embed::cache::{embed_with_cache, EmbedCache};
use crate::embed::{hex, Embedder};
use crate::eval::style::StyleProfile;
use crate::filter::train::{self, LabelledText, LearnedFilter};
use crate::filter::Filter;
use crate::index::{self, calibrate, Index, Sketches};
use crate::safety::{mood, Safety};

/// What a compile did, as printed by `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The artifact written.
    pub artifact: PathBuf,
    /// Conversations in the dataset.
    pub conversations: usize,
    /// Examples in the index.
    pub examples: usize,
    /// Vector dimensions.
    pub dims: usize,
    /// Texts embedded in this run.
    pub embedded: usize,
    /// Examples whose vector came from the cache (or from an identical text in this run).
    pub cached: usize,
    /// Duplicate examples dropped.
    pub duplicates_dropped: usize,
    /// Conversations held out for eval.
    pub heldout_conversations: usize,
    /// Creator replies kept out of the index because the filter blocks them.
    pub blocked_replies_excluded: usize,
    /// Creator replies that deflect a request the filter blocks (the fallback replies).
    pub deflections: usize,
    /// Wall time of the whole compile.
    pub seconds: f64,
    /// Where that time went, in order.
    pub phases: Vec<Phase>,
}

/// One step of a compile and its wall time.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    /// What was done.
    pub phase: &'static str,
    /// Seconds it took.
    pub seconds: f64,
}

/// Records phase times: each call closes the phase that ran since the previous one.
struct Clock {
    last: Instant,
    phases: Vec<Phase>,
}

impl Clock {
    fn lap(&mut self, phase: &'static str) {
        let now = Instant::now();
        self.phases.push(Phase {
            phase,
            seconds: (now - self.last).as_secs_f64(),
        });
        self.last = now;
    }
}

/// Compiles `dataset_path` into an artifact at `output`.
pub fn run(
    config: &Config,
    dataset_path: &Path,
    output: &Path,
    embedder: &mut dyn Embedder,
    cache: &mut EmbedCache,
) -> Result<Summary> {
    let started = Instant::now();
    let mut clock = Clock {
        last: started,
        phases: Vec::new(),
    };
    let bytes = std::fs::read(dataset_path)
        .with_context(|| format!("reading the dataset `{}`; check the path", dataset_path.display()))?;
    let conversations = dataset::parse(&bytes).map_err(|e| {
        anyhow::anyhow!(
            "the dataset `{}` is invalid at {}: {}; nothing was written",
            dataset_path.display(),
            e.place,
            e.problem
        )
    })?;
    check_output_dir(output)?;
    let info = DatasetInfo {
        path: dataset_path.display().to_string(),
        sha256: hex(&Sha256::digest(&bytes)),
        conversations: conversations.len(),
        messages: conversations.iter().map(|c| c.messages.len()).sum(),
    };
    drop(bytes);
    clock.lap("read and parse the dataset");
    let labelled = labelled_texts(config)?;
    let (compiled, counts) = build(
        config,
        conversations,
        &labelled,
        info,
        embedder,
        cache,
        &mut clock,
    )
    .with_context(|| format!("compiling the dataset `{}`", dataset_path.display()))?;
    artifact::write(output, &compiled)?;
    clock.lap("write the artifact");
    Ok(Summary {
        artifact: output.to_path_buf(),
        conversations: compiled.conversations.len(),
        examples: compiled.examples.len(),
        dims: compiled.manifest.embedding.dims,
        embedded: counts.embedded,
        cached: compiled.examples.len() - counts.embedded,
        duplicates_dropped: counts.duplicates,
        heldout_conversations: compiled.manifest.heldout.conversations.len(),
        deflections: compiled.filter.deflections.len(),
        blocked_replies_excluded: counts.blocked_replies,
        seconds: started.elapsed().as_secs_f64(),
        phases: clock.phases,
    })
}

/// What `build` counted on the way, for the summary.
struct Counts {
    embedded: usize,
    duplicates: usize,
    blocked_replies: usize,
}

/// Builds the artifact in memory from parsed conversations: the hold-out split, the examples,
/// their embeddings, the HNSW graph, the filter's compiled parts and the style profile. No file
/// is touched but the embedding cache's.
fn build(
    config: &Config,
    conversations: Vec<Conversation>,
    labelled: &[LabelledText],
    dataset: DatasetInfo,
    embedder: &mut dyn Embedder,
    cache: &mut EmbedCache,
    clock: &mut Clock,
) -> Result<(Artifact, Counts)> {
    if !config.privacy.mask_demos && conversations.iter().any(|c| c.fan.is_some()) {
        eprintln!(
            "warning: `[privacy] mask_demos = false` while conversations carry fan profiles: every answer's prompt \
             will show other fans' names and places to the LLM provider; set it to true unless you are sure"
        );
    }
    let heldout: Vec<usize> = (0..conversations.len())
        .filter(|&i| dataset::is_held_out(&conversations[i], config.compile.holdout))
        .collect();
    let mut filter = Filter::new(config.filter.clone())?;
    let (examples, duplicates, blocked_replies) = select_examples(config, &conversations, &heldout, &filter);
    clock.lap("examples, hold-out and lexical filter");

    let window = config.retrieval.context_messages;
    let texts: Vec<String> = examples
        .iter()
        .map(|e| {
            let c = &conversations[e.conversation as usize];
            transcript::embedding_text(&c.messages[..e.turn as usize], window)
        })
        .collect();
    let bar = progress_bar(texts.len() as u64, "embedding");
    let (vectors, embedded) = embed_with_cache(
        embedder,
        cache,
        &texts,
        config.embedding.batch_size,
        &mut |done| bar.set_position(done as u64),
    )?;
    bar.finish_and_clear();
    drop(texts);
    clock.lap("embed (through the cache)");
    let learned = if config.filter.enabled && config.filter.learned {
        let creator = creator_replies(&conversations, &examples);
        train::train(
            &filter,
            labelled,
            &creator,
            &train::recipe(),
            embedder,
            cache,
            config.embedding.batch_size,
        )?
    } else {
        LearnedFilter::default()
    };
    let safety = if config.safety.enabled && config.safety.learned {
        let negatives = fan_messages(&conversations, &heldout);
        let checker = Safety::new(&config.safety, None)?;
        train::train(
            checker.filter(),
            &safety_labelled_texts(config)?,
            &negatives,
            &crate::safety::recipe(),
            embedder,
            cache,
            config.embedding.batch_size,
        )
        .context("training the safety classifier")?
    } else {
        LearnedFilter::default()
    };
    let mood = if config.context.mood {
        let (name, content) = mood::SHIPPED_CORPUS;
        let reader = Filter::new(mood::filter_settings())?;
        train::train(
            &reader,
            &mood::parse(name, content)?,
            &[],
            &mood::recipe(),
            embedder,
            cache,
            config.embedding.batch_size,
        )
        .context("training the mood classifier")?
    } else {
        LearnedFilter::default()
    };
    cache.unload()?;
    clock.lap("learned filter, safety and mood: embed the labelled texts, train");

    let sized = config.index.params(vectors.len());
    let sketches = Sketches::quantize(&vectors)?;
    let graph = index::build(&sketches, sized)?;
    clock.lap("hnsw build");
    // The beam is measured on the data unless `index.ef_search` is given.
    let mut searcher = Index::new(graph, vectors, sized)?.with_sketches(Some(sketches))?;
    let calibration = match config.index.ef_search {
        Some(_) => None,
        None => Some(calibrate::ef_search(&mut searcher, sized.ef_search)?),
    };
    if let Some(c) = calibration {
        let measured = format!(
            "ef_search {} finds {:.3} of the exact {} nearest neighbours of {} sampled examples, {:.4} similarity lost per neighbour",
            c.ef_search,
            c.recall,
            calibrate::K,
            c.queries,
            c.lost
        );
        if c.reached || c.lost <= calibrate::TOLERATED_LOSS {
            eprintln!("index: {measured} (the size rule's start: {})", sized.ef_search);
        } else {
            eprintln!(
                "warning: index: {measured}, under the {} aimed for; raise `[index] m` or `ef_construction` \
                 for better demos",
                calibrate::TARGET_RECALL
            );
        }
    }
    let (graph, vectors, sketches, hnsw) = searcher.into_parts();
    clock.lap("ef_search calibration");
    filter.embed_examples(embedder)?;
    check_handoff_replies(config, &filter, &learned, embedder)?;
    let deflections = deflections(&filter, &conversations, &examples);
    let style = style_profile(&conversations, &examples, &heldout);
    let manifest = Manifest {
        persona_version: env!("CARGO_PKG_VERSION").into(),
        format_version: artifact::FORMAT_VERSION,
        created_at: jiff::Timestamp::now().to_string(),
        embedding: embedder.info().clone(),
        dataset,
        examples: examples.len(),
        duplicates_dropped: duplicates,
        hnsw,
        heldout: Heldout {
            fraction: config.compile.holdout,
            conversations: heldout,
        },
    };
    let compiled = Artifact {
        manifest,
        settings: Settings {
            creator: config.creator.clone(),
            signature: config.signature.clone(),
            retrieval: config.retrieval,
            filter: config.filter.clone(),
            privacy: config.privacy,
            safety: config.safety.clone(),
            context: config.context,
        },
        conversations: ConversationTable::build(&conversations)?,
        examples,
        vectors,
        sketches,
        graph,
        filter: CompiledFilter {
            examples: filter.examples().clone(),
            deflections,
            learned,
            safety,
            mood,
        },
        style,
    };
    clock.lap("filter examples, deflections, style profile");
    let counts = Counts {
        embedded,
        duplicates,
        blocked_replies,
    };
    Ok((compiled, counts))
}

/// Builds an artifact in memory from conversations, with no file and no embedding cache: for
/// tests of the answer pipeline with a fake embedder, and for tools that hold data in memory.
pub fn build_in_memory(
    config: &Config,
    conversations: Vec<Conversation>,
    labelled: &[LabelledText],
    embedder: &mut dyn Embedder,
) -> Result<Artifact> {
    let dataset = DatasetInfo {
        path: "(in memory)".into(),
        sha256: String::new(),
        conversations: conversations.len(),
        messages: conversations.iter().map(|c| c.messages.len()).sum(),
    };
    let mut cache = EmbedCache::disabled(embedder.info());
    let mut clock = Clock {
        last: Instant::now(),
        phases: Vec::new(),
    };
    Ok(build(
        config,
        conversations,
        labelled,
        dataset,
        embedder,
        &mut cache,
        &mut clock,
    )?
    .0)
}

/// The examples to index: every creator turn of the conversations not held out, duplicates
/// dropped among those only (so a held-out twin never removes an indexed example), and replies
/// the lexical filter blocks left out unless configured otherwise. Returns the examples, the
/// duplicates dropped and the blocked replies left out, and warns about both on stderr.
fn select_examples(
    config: &Config,
    conversations: &[Conversation],
    heldout: &[usize],
    filter: &Filter,
) -> (Vec<Example>, usize, usize) {
    let (indexed, duplicates) = dataset::examples(conversations, config.retrieval.context_messages, |c| {
        heldout.binary_search(&c).is_err()
    });
    let mut blocked_replies = 0;
    let examples: Vec<Example> = indexed
        .into_iter()
        .filter(|e| {
            let reply = &conversations[e.conversation as usize].messages[e.turn as usize].content;
            let keep = !(config.filter.exclude_blocked_demos && filter.check_lexical(reply).blocked);
            blocked_replies += usize::from(!keep);
            keep
        })
        .collect();
    if blocked_replies > 0 {
        eprintln!(
            "warning: kept {blocked_replies} creator repl{} out of the index because the topic filter blocks them \
             (set `[filter] exclude_blocked_demos = false` to keep them)",
            if blocked_replies == 1 { "y" } else { "ies" }
        );
    }
    if duplicates > 0 {
        eprintln!(
            "warning: dropped {duplicates} duplicate example(s) (same preceding messages and same reply)"
        );
    }
    (examples, duplicates, blocked_replies)
}

/// The labelled texts the learned filter trains on: the built-in corpus and the files named in
/// `[filter] labelled`. Empty when the learned stage is off.
fn labelled_texts(config: &Config) -> Result<Vec<LabelledText>> {
    if !config.filter.learned || !config.filter.enabled {
        return Ok(Vec::new());
    }
    let names: Vec<String> = config.filter.categories.iter().map(|c| c.name.clone()).collect();
    read_labelled(
        train::SHIPPED_CORPUS,
        &train::default_categories(),
        &names,
        &config.filter.labelled,
        "filter",
    )
}

/// The labelled texts the safety classifier trains on: the built-in corpus and the files named
/// in `[safety] labelled`.
fn safety_labelled_texts(config: &Config) -> Result<Vec<LabelledText>> {
    let names = config.safety.names();
    read_labelled(
        crate::safety::SHIPPED_CORPUS,
        &crate::safety::default_categories(),
        &names,
        &config.safety.labelled,
        "safety",
    )
}

/// A built-in corpus (labelling `shipped_names`; its lines of categories not in `names` left
/// out, since the user removed them) and the user's files of `[section] labelled`.
fn read_labelled(
    (name, content): (&str, &str),
    shipped_names: &[String],
    names: &[String],
    files: &[PathBuf],
    section: &str,
) -> Result<Vec<LabelledText>> {
    let mut texts: Vec<LabelledText> = train::parse_labelled(name, content, shipped_names)?
        .into_iter()
        .filter(|t| t.category.as_ref().is_none_or(|c| names.contains(c)))
        .collect();
    for path in files {
        let content = std::fs::read_to_string(path).with_context(|| {
            format!(
                "reading the labelled file `{}` named in `[{section}] labelled`; check the path",
                path.display()
            )
        })?;
        texts.extend(train::parse_labelled(
            &path.display().to_string(),
            &content,
            names,
        )?);
    }
    Ok(texts)
}

/// Every distinct fan message of the conversations compile indexes (held-out ones are left for
/// measurement): everyday messages, the safety classifier's negatives.
fn fan_messages(conversations: &[Conversation], heldout: &[usize]) -> Vec<(String, Option<String>)> {
    let mut seen = std::collections::HashSet::new();
    let all = conversations
        .iter()
        .enumerate()
        .filter(|(i, _)| heldout.binary_search(i).is_err())
        .flat_map(|(_, c)| c.messages.iter().filter(|m| !m.from_creator))
        .filter(|m| seen.insert(m.content.clone()))
        .map(|m| (m.content.clone(), None))
        .collect();
    sample_negatives(all)
}

/// The most texts of the training data a classifier takes as negatives. Each costs a few
/// embeddings (the text, its sentences, the pair with its fan message), so taking all of a
/// million-turn history would embed it again, several times over, for a classifier that a few
/// thousand negatives already fix.
const MAX_NEGATIVES: usize = 4000;

/// At most [`MAX_NEGATIVES`] of `texts`, chosen by a hash of their content: the same data always
/// gives the same sample, in the data's order, and adding conversations moves few of the chosen.
fn sample_negatives(texts: Vec<(String, Option<String>)>) -> Vec<(String, Option<String>)> {
    if texts.len() <= MAX_NEGATIVES {
        return texts;
    }
    let rank = |t: &(String, Option<String>)| xxhash_rust::xxh3::xxh3_64(t.0.as_bytes());
    let mut ranks: Vec<u64> = texts.iter().map(rank).collect();
    ranks.sort_unstable();
    let cut = ranks[MAX_NEGATIVES - 1];
    let mut kept: Vec<_> = texts.into_iter().filter(|t| rank(t) <= cut).collect();
    kept.truncate(MAX_NEGATIVES);
    kept
}

/// Refuses a safety category whose fixed reply the topic filter would block: that reply goes
/// to a fan like any other.
fn check_handoff_replies(
    config: &Config,
    filter: &Filter,
    learned: &LearnedFilter,
    embedder: &mut dyn Embedder,
) -> Result<()> {
    if !config.safety.enabled {
        return Ok(());
    }
    let mut checker = Filter::new(config.filter.clone())?.with_examples(filter.examples().clone())?;
    if !learned.categories.is_empty() {
        checker = checker.with_learned(learned.clone(), embedder.info().dims)?;
    }
    for c in &config.safety.categories {
        let verdict = checker.check(&c.reply, Some(&mut *embedder))?;
        if verdict.blocked {
            bail!(
                "the `reply` of safety category `{}` is blocked by the topic filter ({}: {}); every reply a fan \
                 sees must pass it, so rewrite that reply in `[safety]` of persona.toml",
                c.name,
                verdict.category.as_deref().unwrap_or("blocked"),
                verdict.reason
            );
        }
    }
    Ok(())
}

/// The creator's indexed replies, each with the fan message it answered.
fn creator_replies(conversations: &[Conversation], examples: &[Example]) -> Vec<(String, Option<String>)> {
    let mut seen = std::collections::HashSet::new();
    let all = examples
        .iter()
        .filter_map(|e| {
            let messages = conversations
                .get(e.conversation as usize)?
                .messages
                .get(..=e.turn as usize)?;
            let (reply, before) = messages.split_last()?;
            let fan = before
                .iter()
                .rev()
                .find(|m| !m.from_creator)
                .map(|m| m.content.clone());
            seen.insert(reply.content.clone())
                .then(|| (reply.content.clone(), fan))
        })
        .collect();
    sample_negatives(all)
}

/// The examples where the fan asked for something the filter blocks and the creator's reply is
/// clean: the creator's own deflections. Lexical checks only, so this costs no embedding.
fn deflections(filter: &Filter, conversations: &[Conversation], examples: &[Example]) -> Vec<u32> {
    examples
        .iter()
        .enumerate()
        .filter(|(_, e)| {
            let messages = &conversations[e.conversation as usize].messages[..=e.turn as usize];
            let Some((reply, before)) = messages.split_last() else {
                return false;
            };
            let asked = before.iter().rev().find(|m| !m.from_creator);
            // A deflection is sent as it is to any fan, so one that names its own fan (or holds
            // any detail masking would hide) is never used.
            let values = privacy::identifying_values(conversations[e.conversation as usize].fan.as_ref());
            asked.is_some_and(|m| filter.check_lexical(&m.content).blocked)
                && !filter.check_lexical(&reply.content).blocked
                && privacy::mask_text(&reply.content, &values) == reply.content
        })
        .map(|(i, _)| i as u32)
        .collect()
}

/// The creator's style profile: the indexed replies, contrasted with the fans' messages in the
/// conversations the index was built from (held-out ones excluded).
fn style_profile(conversations: &[Conversation], examples: &[Example], heldout: &[usize]) -> StyleProfile {
    let replies: Vec<&str> = examples
        .iter()
        .filter_map(|e| {
            let c = conversations.get(e.conversation as usize)?;
            Some(c.messages.get(e.turn as usize)?.content.as_str())
        })
        .collect();
    let heldout: std::collections::HashSet<usize> = heldout.iter().copied().collect();
    let fans: Vec<&str> = conversations
        .iter()
        .enumerate()
        .filter(|(i, _)| !heldout.contains(i))
        .flat_map(|(_, c)| {
            c.messages
                .iter()
                .filter(|m| !m.from_creator)
                .map(|m| m.content.as_str())
        })
        .collect();
    StyleProfile::build(&replies, &fans)
}

fn check_output_dir(output: &Path) -> Result<()> {
    match output.parent() {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.is_dir() => anyhow::bail!(
            "the output directory `{}` does not exist; create it (mkdir -p {}) or choose another path with -o",
            dir.display(),
            dir.display()
        ),
        _ => Ok(()),
    }
}

/// A progress bar on stderr that hides itself when stderr is not a terminal.
pub fn progress_bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{msg:>10} [{bar:30}] {pos}/{len} ({per_sec}, eta {eta})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_string());
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(range: std::ops::Range<usize>) -> Vec<(String, Option<String>)> {
        range.map(|i| (format!("reply {i}"), None)).collect()
    }

    #[test]
    fn negatives_are_capped_by_a_content_hash_sample_that_stays_put_as_data_grows() {
        assert_eq!(
            sample_negatives(texts(0..10)),
            texts(0..10),
            "few texts are all kept"
        );
        let sample = sample_negatives(texts(0..10_000));
        assert_eq!(sample.len(), MAX_NEGATIVES);
        assert_eq!(sample, sample_negatives(texts(0..10_000)), "deterministic");
        assert!(sample.windows(2).all(|w| w[0].0 != w[1].0));
        let first: std::collections::HashSet<_> = sample.into_iter().collect();
        let grown = sample_negatives(texts(0..11_000));
        let kept = grown.iter().filter(|t| first.contains(*t)).count();
        assert!(
            kept > MAX_NEGATIVES * 8 / 10,
            "adding 10% more texts kept {kept} of the sample"
        );
    }
}
