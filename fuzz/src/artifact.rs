//! Opening an artifact and answering from it, over arbitrary bytes.
//!
//! Checksums would turn away nearly every mutated input, so the bytes are resealed first
//! (`artifact::reseal_checksums`): what is explored is an artifact with valid checksums and bad
//! contents. The bytes go through a file, as `artifact::read` maps one. When the artifact opens,
//! a nearest-neighbour search runs with a fixed query of its dimensions and each hit's reply is
//! decoded; then a persona is loaded from it with a stand-in embedder (the artifact's own model
//! identity, fixed unit vectors) and a stand-in model that always proposes a forbidden reply, and
//! one fan turn is prepared and answered: safety, filter, context, retrieval, demos, prompt, the
//! retries and the fallback to the creator's deflections.
//!
//! A panic anywhere is a bug: a damaged artifact must be refused on open with a message, or be
//! served without crashing.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use anyhow::Result;
use jiff::Timestamp;
use persona::answer::persona::Persona;
use persona::answer::{DemoMode, Sampling, Turn};
use persona::artifact;
use persona::config::RuntimeSettings;
use persona::conversation::Message;
use persona::embed::{Embedder, ModelInfo};
use persona::llm::{ChatMessage, ChatModel, Completion, LlmError, Usage};

/// Where the temporary artifact files go: in memory when `/dev/shm` is there.
static DIR: LazyLock<PathBuf> = LazyLock::new(|| {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
});

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a tokio runtime")
});

/// The query every search uses: the first axis.
fn query(dims: usize) -> Vec<f32> {
    let mut q = vec![0.0; dims];
    q[0] = 1.0;
    q
}

/// Claims to be whatever model the artifact was built with; every text embeds to the first axis.
struct StandIn(ModelInfo);

impl Embedder for StandIn {
    fn info(&self) -> &ModelInfo {
        &self.0
    }

    fn embed(&mut self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        Ok(texts.iter().map(|_| query(self.0.dims)).collect())
    }
}

/// A model that always proposes to move the chat elsewhere, so every draft is blocked.
struct Forbidden;

impl ChatModel for Forbidden {
    async fn complete(&self, _messages: &[ChatMessage], n: u32) -> Result<Completion, LlmError> {
        Ok(Completion {
            texts: vec![
                "[[ ## output ## ]]\nadd me on snapchat @wren.real, let's meet up friday".into();
                n as usize
            ],
            attempts: 1,
            usage: Usage::default(),
        })
    }

    fn with_sampling(&self, _temperature: f32, _seed: u64) -> Self {
        Forbidden
    }
}

/// Reseals `data`, opens it as an artifact and, when it opens, answers one turn from it.
pub fn run(data: &[u8]) -> Result<(), String> {
    let mut bytes = data.to_vec();
    artifact::reseal_checksums(&mut bytes);
    let mut file = tempfile::NamedTempFile::new_in(&*DIR).expect("a temporary artifact file");
    file.write_all(&bytes).expect("writing the temporary artifact");
    let artifact = artifact::read(file.path()).map_err(|e| format!("{e:#}"))?;
    // `read` refuses dimensions outside 1 to `artifact::MAX_DIMS`, so the query fits in memory.
    let dims = artifact.manifest.embedding.dims;
    assert!((1..=artifact::MAX_DIMS).contains(&dims), "{dims} dims");

    let index = artifact
        .index(artifact.manifest.hnsw)
        .expect("`read` checked the graph against the vectors");
    let k = artifact.settings.retrieval.k;
    // A damaged vector block is an error, not a wrong answer.
    for hit in index.search(&query(dims), k * 4).map_err(|e| e.to_string())? {
        assert!(hit.id < artifact.examples.len());
        let _ = artifact.reply(hit.id);
    }

    let embedder = StandIn(artifact.manifest.embedding.clone());
    let persona = Persona::from_parts(artifact, Box::new(embedder), &RuntimeSettings::default())
        .map_err(|e| format!("{e:#}"))?;
    let now = Timestamp::from_second(1_800_000_000).expect("a valid time");
    let history = [
        Message {
            from_creator: false,
            content: "hey you".into(),
            sent_at: None,
        },
        Message {
            from_creator: true,
            content: "hi lovebug".into(),
            sent_at: None,
        },
        Message {
            from_creator: false,
            content: "what's your snap? we should meet".into(),
            sent_at: Some(now),
        },
    ];
    let _ = persona.choose_demos(&history, DemoMode::Random(7));
    let _ = persona.profile().score("mm tea and rain tonight 🌧️");
    let turn = Turn {
        history: &history,
        fan: None,
        now,
        prefill: false,
        demos: DemoMode::Nearest,
        handoff: None,
    };
    let prepared = persona.prepare(&turn).map_err(|e| format!("{e:#}"))?;
    RUNTIME
        .block_on(persona.answer(&Forbidden, &prepared, Sampling::ONE))
        .map_err(|e| format!("{e:#}"))?;
    Ok(())
}
