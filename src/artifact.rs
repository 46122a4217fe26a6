//! The compiled artifact: one file holding everything `ask`, `serve` and `eval` need.
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! magic     8 bytes  "PRSNART\0"
//! version   u32      format version that wrote the file
//! oldest    u32      oldest reader version that can read it
//! length    u64      payload length in bytes
//! checksum  32 bytes sha256 of the payload
//! payload   sections: tag u32, length u64, bytes; unknown tags are skipped
//! ```
//!
//! Sections: manifest (JSON), settings (JSON: creator, signature, retrieval), conversations (JSON),
//! examples (JSON), vectors (f32, examples x dims), HNSW graph and HNSW data (hnsw_rs dump files),
//! the compiled filter (JSON: example-phrase vectors and the training data's deflections) and the
//! creator's style profile (JSON).
//! This module is the only one that touches the artifact file. It writes to a temporary file in
//! the same directory and renames, and it verifies magic, version and checksum before any byte
//! reaches hnsw_rs.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{Creator, Retrieval};
use crate::dataset::{Conversation, Example};
use crate::embed::ModelInfo;
use crate::filter::{ExampleVectors, FilterSettings};
use crate::index::{HnswParams, IndexBytes};
use crate::signature::Signature;
use crate::style::StyleProfile;

const MAGIC: &[u8; 8] = b"PRSNART\0";
/// The format version this build writes.
pub const FORMAT_VERSION: u32 = 1;
/// The oldest format version this build still reads.
pub const OLDEST_READABLE: u32 = 1;
const HEADER_LEN: usize = 8 + 4 + 4 + 8 + 32;

const TAG_MANIFEST: u32 = 1;
const TAG_SETTINGS: u32 = 2;
const TAG_CONVERSATIONS: u32 = 3;
const TAG_EXAMPLES: u32 = 4;
const TAG_VECTORS: u32 = 5;
const TAG_HNSW_GRAPH: u32 = 6;
const TAG_HNSW_DATA: u32 = 7;
const TAG_FILTER: u32 = 8;
const TAG_STYLE: u32 = 9;

/// What the artifact is, readable without the rest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Version of persona that compiled it.
    pub persona_version: String,
    /// Format version of the file.
    pub format_version: u32,
    /// When it was compiled (RFC 3339).
    pub created_at: String,
    /// The embedding model.
    pub embedding: ModelInfo,
    /// The dataset it was compiled from.
    pub dataset: DatasetInfo,
    /// Number of indexed examples.
    pub examples: usize,
    /// Duplicate examples dropped.
    pub duplicates_dropped: usize,
    /// HNSW parameters.
    pub hnsw: HnswParams,
    /// The held-out conversations.
    pub heldout: Heldout,
}

/// Where the examples came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetInfo {
    /// Path as given to `compile`.
    pub path: String,
    /// sha256 of the file's bytes, hex.
    pub sha256: String,
    /// Conversations in the file.
    pub conversations: usize,
    /// Messages in the file, replies included.
    pub messages: usize,
}

/// The conversations kept out of the index for eval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heldout {
    /// The requested fraction.
    pub fraction: f64,
    /// Indices of held-out conversations in the dataset.
    pub conversations: Vec<usize>,
}

/// Settings compiled into the artifact so every runtime uses the same ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// The creator.
    pub creator: Creator,
    /// The signature template.
    pub signature: Signature,
    /// Retrieval settings.
    pub retrieval: Retrieval,
    /// The topic filter's configuration at compile time.
    #[serde(default)]
    pub filter: FilterSettings,
}

/// What compile derived for the filter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct CompiledFilter {
    /// Vectors of the categories' example phrases, for the semantic check.
    pub examples: ExampleVectors,
    /// Examples whose fan message asked for a forbidden topic and whose reply is clean: the
    /// creator's own deflections, used as the last-resort reply.
    pub deflections: Vec<u32>,
}

/// The whole artifact in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Artifact {
    /// The manifest.
    pub manifest: Manifest,
    /// Compiled settings.
    pub settings: Settings,
    /// Every conversation of the dataset, held-out ones included.
    pub conversations: Vec<Conversation>,
    /// The indexed examples; example `i` has vector `i` and HNSW id `i`.
    pub examples: Vec<Example>,
    /// Unit vectors of the examples.
    pub vectors: Vec<Vec<f32>>,
    /// The HNSW graph.
    pub index: IndexBytes,
    /// The compiled filter.
    pub filter: CompiledFilter,
    /// The creator's style profile (built at compile time; `None` in files that predate it).
    pub style: Option<StyleProfile>,
}

impl Artifact {
    /// The gold reply of example `id`.
    pub fn reply(&self, id: usize) -> Option<&str> {
        let e = self.examples.get(id)?;
        Some(
            self.conversations
                .get(e.conversation as usize)?
                .messages
                .get(e.turn as usize)?
                .content
                .as_str(),
        )
    }

    /// Refuses an artifact whose embedding model differs from the one loaded now.
    pub fn check_model(&self, model: &ModelInfo) -> Result<()> {
        let built = &self.manifest.embedding;
        if built != model {
            bail!(
                "the artifact was built with embedding model `{}` ({} dims, sha256 {}, {} pooling, max length {}) \
                 but this persona uses `{}` ({} dims, sha256 {}, {} pooling, max length {}); rebuild it with \
                 `persona compile`",
                built.model_id, built.dims, short(&built.model_sha256), built.pooling, built.max_length,
                model.model_id, model.dims, short(&model.model_sha256), model.pooling, model.max_length
            );
        }
        Ok(())
    }

    /// Serializes the artifact.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut payload = Vec::new();
        section(&mut payload, TAG_MANIFEST, &serde_json::to_vec(&self.manifest)?);
        section(&mut payload, TAG_SETTINGS, &serde_json::to_vec(&self.settings)?);
        section(
            &mut payload,
            TAG_CONVERSATIONS,
            &serde_json::to_vec(&self.conversations)?,
        );
        section(&mut payload, TAG_EXAMPLES, &serde_json::to_vec(&self.examples)?);
        let mut flat = Vec::with_capacity(self.vectors.len() * self.manifest.embedding.dims * 4);
        for v in &self.vectors {
            for x in v {
                flat.extend_from_slice(&x.to_le_bytes());
            }
        }
        section(&mut payload, TAG_VECTORS, &flat);
        section(&mut payload, TAG_HNSW_GRAPH, &self.index.graph);
        section(&mut payload, TAG_HNSW_DATA, &self.index.data);
        section(&mut payload, TAG_FILTER, &serde_json::to_vec(&self.filter)?);
        if let Some(style) = &self.style {
            section(&mut payload, TAG_STYLE, &serde_json::to_vec(style)?);
        }

        let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&OLDEST_READABLE.to_le_bytes());
        out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        out.extend_from_slice(&Sha256::digest(&payload));
        out.extend_from_slice(&payload);
        Ok(out)
    }

    /// Parses and verifies an artifact; `name` is used in messages.
    pub fn from_bytes(bytes: &[u8], name: &str) -> Result<Artifact> {
        let rebuild = "rebuild it with `persona compile <conversations.json> -o <artifact>`";
        if bytes.len() < 8 || &bytes[..8] != MAGIC {
            bail!("`{name}` is not a persona artifact (wrong magic bytes); {rebuild}");
        }
        if bytes.len() < HEADER_LEN {
            bail!(
                "`{name}` is truncated ({} bytes, shorter than the header); {rebuild}",
                bytes.len()
            );
        }
        let version = u32_at(bytes, 8);
        let oldest = u32_at(bytes, 12);
        if oldest > FORMAT_VERSION {
            bail!(
                "`{name}` uses artifact format {version}, which needs persona able to read format {oldest}; \
                 this persona {} reads formats {OLDEST_READABLE} to {FORMAT_VERSION}: upgrade persona or {rebuild}",
                env!("CARGO_PKG_VERSION")
            );
        }
        if version < OLDEST_READABLE {
            bail!("`{name}` uses artifact format {version}, older than the oldest readable ({OLDEST_READABLE}); {rebuild}");
        }
        let length = u64_at(bytes, 16);
        let payload = &bytes[HEADER_LEN..];
        if payload.len() as u64 != length {
            bail!(
                "`{name}` is truncated or padded: the header says {length} payload bytes, the file has {}; {rebuild}",
                payload.len()
            );
        }
        if Sha256::digest(payload).as_slice() != &bytes[24..56] {
            bail!("`{name}` is corrupted (checksum mismatch); {rebuild}");
        }

        let mut manifest = None;
        let mut settings = None;
        let mut conversations = None;
        let mut examples = None;
        let mut vectors = None;
        let mut graph = None;
        let mut data = None;
        let mut filter = CompiledFilter::default();
        let mut style = None;
        let mut at = 0usize;
        while at < payload.len() {
            if payload.len() - at < 12 {
                bail!(
                    "`{name}` has a malformed section header at byte {}; {rebuild}",
                    HEADER_LEN + at
                );
            }
            let tag = u32_at(payload, at);
            let len = u64_at(payload, at + 4) as usize;
            let start = at + 12;
            let end = start
                .checked_add(len)
                .filter(|&e| e <= payload.len())
                .with_context(|| {
                    format!(
                        "`{name}` has a section running past the end at byte {}; {rebuild}",
                        HEADER_LEN + at
                    )
                })?;
            let body = &payload[start..end];
            let json = |what: &str| format!("`{name}`: reading the {what} section; {rebuild}");
            match tag {
                TAG_MANIFEST => {
                    manifest =
                        Some(serde_json::from_slice::<Manifest>(body).with_context(|| json("manifest"))?)
                }
                TAG_SETTINGS => {
                    settings =
                        Some(serde_json::from_slice::<Settings>(body).with_context(|| json("settings"))?)
                }
                TAG_CONVERSATIONS => {
                    conversations = Some(
                        serde_json::from_slice::<Vec<Conversation>>(body)
                            .with_context(|| json("conversations"))?,
                    )
                }
                TAG_EXAMPLES => {
                    examples =
                        Some(serde_json::from_slice::<Vec<Example>>(body).with_context(|| json("examples"))?)
                }
                TAG_VECTORS => vectors = Some(body),
                TAG_HNSW_GRAPH => graph = Some(body.to_vec()),
                TAG_HNSW_DATA => data = Some(body.to_vec()),
                TAG_FILTER => filter = serde_json::from_slice(body).with_context(|| json("filter"))?,
                TAG_STYLE => {
                    style = Some(serde_json::from_slice(body).with_context(|| json("style profile"))?)
                }
                _ => {} // a section from a newer compatible format
            }
            at = end;
        }
        let missing = |what: &str| format!("`{name}` has no {what} section; {rebuild}");
        let manifest = manifest.with_context(|| missing("manifest"))?;
        let settings = settings.with_context(|| missing("settings"))?;
        let conversations = conversations.with_context(|| missing("conversations"))?;
        let examples = examples.with_context(|| missing("examples"))?;
        let vectors = vectors.with_context(|| missing("vectors"))?;
        let index = IndexBytes {
            graph: graph.with_context(|| missing("HNSW graph"))?,
            data: data.with_context(|| missing("HNSW data"))?,
        };
        let dims = manifest.embedding.dims;
        if dims == 0 || vectors.len() != examples.len() * dims * 4 {
            bail!(
                "`{name}` is inconsistent: {} vector bytes for {} examples of {dims} dims; {rebuild}",
                vectors.len(),
                examples.len()
            );
        }
        let vectors = vectors
            .chunks_exact(dims * 4)
            .map(|v| {
                v.chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect()
            })
            .collect();
        for (i, e) in examples.iter().enumerate() {
            let ok = conversations
                .get(e.conversation as usize)
                .is_some_and(|c| (e.turn as usize) < c.messages.len() && e.turn > 0);
            if !ok {
                bail!("`{name}` is inconsistent: example {i} points outside its conversation; {rebuild}");
            }
        }
        if let Some(bad) = filter.deflections.iter().find(|&&d| d as usize >= examples.len()) {
            bail!("`{name}` is inconsistent: deflection {bad} is not an example; {rebuild}");
        }
        Ok(Artifact {
            manifest,
            settings,
            conversations,
            examples,
            vectors,
            index,
            filter,
            style,
        })
    }
}

/// Reads and verifies an artifact file.
pub fn read(path: &Path) -> Result<Artifact> {
    let bytes = std::fs::read(path).with_context(|| {
        format!(
            "reading the artifact `{}`; build one with `persona compile <conversations.json> -o {}`",
            path.display(),
            path.display()
        )
    })?;
    Artifact::from_bytes(&bytes, &path.display().to_string())
}

/// Writes an artifact atomically: a temporary file in the same directory, synced, then renamed.
pub fn write(path: &Path, artifact: &Artifact) -> Result<()> {
    let bytes = artifact.to_bytes()?;
    write_atomic(path, &bytes)
}

/// Writes bytes to `path` through a temporary sibling and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        bail!(
            "the output directory `{}` does not exist; create it or choose another path with -o",
            dir.display()
        );
    }
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a temporary file in `{}`", dir.display()))?;
    tmp.write_all(bytes)
        .with_context(|| format!("writing `{}`", path.display()))?;
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("syncing `{}`", path.display()))?;
    // Temporary files are created private; the result is an ordinary readable file.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644));
    }
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("renaming the new file into `{}`", path.display()))?;
    Ok(())
}

fn section(out: &mut Vec<u8>, tag: u32, body: &[u8]) {
    out.extend_from_slice(&tag.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(body);
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::Message;
    use crate::index::Index;

    pub(crate) fn sample() -> Artifact {
        let m = |from_creator, content: &str| Message {
            from_creator,
            content: content.into(),
            sent_at: None,
        };
        let conversations = vec![Conversation {
            id: Some("c1".into()),
            fan: None,
            messages: vec![
                m(false, "hi"),
                m(true, "hey you"),
                m(false, "sup"),
                m(true, "tea time"),
            ],
        }];
        let vectors = vec![vec![1.0, 0.0, 0.0], vec![0.0, 1.0, 0.0]];
        let index = Index::build(&vectors, HnswParams::default())
            .unwrap()
            .to_bytes()
            .unwrap();
        Artifact {
            manifest: Manifest {
                persona_version: "0.0.0".into(),
                format_version: FORMAT_VERSION,
                created_at: "2026-01-01T00:00:00Z".into(),
                embedding: ModelInfo {
                    model_id: "m".into(),
                    dims: 3,
                    model_sha256: "ab".into(),
                    pooling: "mean".into(),
                    max_length: 256,
                },
                dataset: DatasetInfo {
                    path: "d.json".into(),
                    sha256: "cd".into(),
                    conversations: 1,
                    messages: 4,
                },
                examples: 2,
                duplicates_dropped: 0,
                hnsw: HnswParams::default(),
                heldout: Heldout {
                    fraction: 0.0,
                    conversations: vec![],
                },
            },
            settings: Settings {
                creator: Creator::default(),
                signature: Signature::default(),
                retrieval: Retrieval::default(),
                filter: FilterSettings::default(),
            },
            conversations,
            examples: vec![
                Example {
                    conversation: 0,
                    turn: 1,
                },
                Example {
                    conversation: 0,
                    turn: 3,
                },
            ],
            vectors,
            index,
            filter: CompiledFilter {
                examples: ExampleVectors::default(),
                deflections: vec![1],
            },
            style: Some(StyleProfile::build(&["hey you", "tea time"], &["hi"])),
        }
    }

    #[test]
    fn round_trips_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.bin");
        let artifact = sample();
        write(&path, &artifact).unwrap();
        assert_eq!(read(&path).unwrap(), artifact);
        // No temporary file is left beside it.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn every_corruption_is_refused_with_a_reason() {
        let good = sample().to_bytes().unwrap();
        let mut flipped = good.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x40;
        let mut newer = good.clone();
        newer[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
        newer[12..16].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
        let mut newer_compatible = good.clone();
        newer_compatible[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("empty", vec![], "not a persona artifact"),
            (
                "foreign",
                b"PK\x03\x04 a zip file, not ours".to_vec(),
                "not a persona artifact",
            ),
            ("header only", good[..20].to_vec(), "truncated"),
            ("truncated payload", good[..good.len() - 10].to_vec(), "truncated"),
            ("bit flip", flipped, "checksum"),
            ("newer format", newer, "upgrade persona"),
        ];
        for (name, bytes, expected) in cases {
            let err = Artifact::from_bytes(&bytes, "x.bin").unwrap_err().to_string();
            assert!(err.contains(expected) && err.contains("x.bin"), "{name}: {err}");
        }
        assert!(
            Artifact::from_bytes(&newer_compatible, "x.bin").is_ok(),
            "a newer but compatible format is read"
        );
    }

    #[test]
    fn another_embedding_model_is_refused() {
        let artifact = sample();
        let mut other = artifact.manifest.embedding.clone();
        assert!(artifact.check_model(&other).is_ok());
        other.model_sha256 = "ff".into();
        let err = artifact.check_model(&other).unwrap_err().to_string();
        assert!(err.contains("persona compile"), "{err}");
    }

    #[test]
    fn a_missing_output_directory_is_an_error_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let err = write(&dir.path().join("nope/a.bin"), &sample())
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not exist"), "{err}");
    }
}
