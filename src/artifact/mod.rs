//! The compiled artifact: one file holding everything `ask`, `serve` and `eval` need.
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! magic     8 bytes  "PRSNART\0"
//! version   u32      format version that wrote the file
//! oldest    u32      oldest reader version that can read it
//! count     u32      number of sections
//! reserved  u32      0
//! table     count x (tag u32, reserved u32, offset u64, length u64, xxh3-64 of the bytes u64)
//! checksum  u64      xxh3-64 of everything above
//! sections  each at a 64-byte-aligned offset; unknown tags are skipped
//! ```
//!
//! Verification. Opening checks the header and every small section's checksum. The sections
//! that grow with the data, the vectors and the conversations (1.8 GB of a 1M-turn artifact),
//! also carry block checksums (format 3): one xxh3-64 per 4 KiB block, in sections of their own
//! that are themselves verified on opening. Those are not read on opening; they reach the
//! rest of the program only as [`flat::Lazy`] arrays, which verify each block the first time any
//! of its bytes is read, so an answer uses only verified bytes while opening costs the small
//! sections alone. A damaged block is an error when it is read, naming the file; `persona
//! inspect --verify` checks every byte. Format 2 files (no block checksums) are verified whole
//! on opening, as before. Format 4 adds the vectors' 8-bit sketches (`index::Sketches`), verified
//! on use the same way, with their scale; format 2 and 3 files have none and search the vectors.
//!
//! Sections: manifest, settings (creator, signature, retrieval, filter) and the compiled filter
//! and style profile as JSON; conversations as one JSON document each plus their offsets; the
//! examples as (conversation, turn) u32 pairs; the vectors as f32 rows and their sketches as i8
//! rows; the HNSW graph as flat u8/u32 arrays (see `index::Graph`). The large sections are fixed-width arrays, aligned, so
//! reading maps the file and views them in place: opening costs a checksum pass, not a parse.
//!
//! This module is the only one that touches the artifact file. It writes to a temporary file in
//! the same directory and renames, so a mapped artifact is never rewritten under its reader, and
//! it verifies magic, versions and every section's checksum before anything is used.

pub mod conversation_table;
pub mod flat;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use memmap2::Mmap;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

use crate::answer::signature::Signature;
use crate::artifact::conversation_table::ConversationTable;
use crate::artifact::flat::{block_sums, Flat, Lazy, Vectors};
use crate::config::{ContextSettings, Privacy};
use crate::config::{Creator, Retrieval};
use crate::conversation::Example;
use crate::embed::ModelInfo;
use crate::eval::style::StyleProfile;
use crate::filter::train::LearnedFilter;
use crate::filter::{ExampleVectors, FilterSettings};
use crate::index::{Graph, HnswParams, Index, Sketches};
use crate::safety::SafetySettings;

#[cfg(target_endian = "big")]
compile_error!(
    "the artifact stores little-endian arrays and maps them in place; big-endian targets are not supported"
);

const MAGIC: &[u8; 8] = b"PRSNART\0";
/// The format version this build writes.
pub const FORMAT_VERSION: u32 = 4;
/// The oldest format version this build still reads.
pub const OLDEST_READABLE: u32 = 2;
const FIXED_HEADER: usize = 8 + 4 + 4 + 4 + 4;
const ENTRY: usize = 4 + 4 + 8 + 8 + 8;
const ALIGN: usize = 64;
const MAX_SECTIONS: usize = 1024;
/// The most embedding dimensions an artifact may declare: far above any sentence model's, and low
/// enough that every size computed from it (feature vectors, vector rows) fits a `usize`.
pub const MAX_DIMS: usize = 1 << 16;

const TAG_MANIFEST: u32 = 1;
const TAG_SETTINGS: u32 = 2;
const TAG_CONVERSATION_OFFSETS: u32 = 3;
const TAG_EXAMPLES: u32 = 4;
const TAG_VECTORS: u32 = 5;
const TAG_GRAPH_LEVELS: u32 = 6;
const TAG_GRAPH_UPPER: u32 = 7;
const TAG_FILTER: u32 = 8;
const TAG_STYLE: u32 = 9;
const TAG_CONVERSATIONS: u32 = 10;
const TAG_GRAPH_OFFSETS: u32 = 11;
const TAG_GRAPH_LINKS: u32 = 12;
const TAG_VECTOR_BLOCKS: u32 = 13;
const TAG_CONVERSATION_BLOCKS: u32 = 14;
const TAG_SKETCHES: u32 = 15;
const TAG_SKETCH_BLOCKS: u32 = 16;
const TAG_SKETCH_SCALE: u32 = 17;
/// The sections verified block by block on use, each with the section holding its block sums.
const LAZY: [(u32, u32); 3] = [
    (TAG_VECTORS, TAG_VECTOR_BLOCKS),
    (TAG_CONVERSATIONS, TAG_CONVERSATION_BLOCKS),
    (TAG_SKETCHES, TAG_SKETCH_BLOCKS),
];

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
    /// What is masked in demos (artifacts without the section mask, the safe default).
    #[serde(default)]
    pub privacy: Privacy,
    /// The safety categories (artifacts without the section get the defaults, lexical only).
    #[serde(default)]
    pub safety: SafetySettings,
    /// The context stage's optional facts.
    #[serde(default)]
    pub context: ContextSettings,
}

/// What compile derived for the filter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct CompiledFilter {
    /// Vectors of the categories' example phrases, for the semantic check.
    pub examples: ExampleVectors,
    /// Examples whose fan message asked for a forbidden topic and whose reply is clean: the
    /// creator's own deflections, used as the last-resort reply.
    pub deflections: Vec<u32>,
    /// The learned stage's classifiers (empty when `[filter] learned = false`).
    #[serde(default)]
    pub learned: LearnedFilter,
    /// The safety categories' classifiers (empty when `[safety] learned = false`).
    #[serde(default)]
    pub safety: LearnedFilter,
    /// The mood classifiers (empty when `[context] mood = false`).
    #[serde(default)]
    pub mood: LearnedFilter,
}

/// The whole artifact: small parts decoded, large parts viewed in place in the mapped file.
#[derive(Debug, Clone, PartialEq)]
pub struct Artifact {
    /// The manifest.
    pub manifest: Manifest,
    /// Compiled settings.
    pub settings: Settings,
    /// Every conversation of the dataset, held-out ones included.
    pub conversations: ConversationTable,
    /// The indexed examples; example `i` has vector `i` and graph node `i`.
    pub examples: Vec<Example>,
    /// Unit vectors of the examples.
    pub vectors: Vectors,
    /// The vectors' 8-bit sketches, which the graph was built and is searched over (none in
    /// artifacts before format 4, which search the vectors).
    pub sketches: Option<Sketches>,
    /// The HNSW graph over the vectors.
    pub graph: Graph,
    /// The compiled filter.
    pub filter: CompiledFilter,
    /// The creator's style profile (built at compile time).
    pub style: StyleProfile,
}

impl Artifact {
    /// The gold reply of example `id`.
    pub fn reply(&self, id: usize) -> Option<String> {
        let e = self.examples.get(id)?;
        let c = self.conversations.get(e.conversation as usize).ok()?;
        c.messages.into_iter().nth(e.turn as usize).map(|m| m.content)
    }

    /// The search index over the examples, searched with `params` (the manifest's, or the
    /// runtime's `ef_search` over them); the beam scores the sketches when the file has them.
    pub fn index(&self, params: HnswParams) -> Result<Index> {
        Index::new(self.graph.clone(), self.vectors.clone(), params)?.with_sketches(self.sketches.clone())
    }

    /// Verifies the blocks that opening leaves to be verified on use, all of them now: with the
    /// checks opening made, every byte of the file has then matched its checksum.
    pub fn verify_all(&self) -> Result<()> {
        self.vectors.flat().all()?;
        self.conversations.bodies().all()?;
        if let Some(s) = &self.sketches {
            s.flat().all()?;
        }
        Ok(())
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

    /// Writes the artifact's bytes (the whole file) to `out`.
    pub fn encode(&self, out: &mut impl Write) -> Result<()> {
        let manifest = json("manifest", &self.manifest)?;
        let settings = json("settings", &self.settings)?;
        let filter = json("compiled filter", &self.filter)?;
        let style = json("style profile", &self.style)?;
        let examples: Vec<u32> = self
            .examples
            .iter()
            .flat_map(|e| [e.conversation, e.turn])
            .collect();
        // A damaged array read from an artifact is refused here rather than resealed under new
        // checksums.
        let conversations: &[u8] = self.conversations.bodies().all()?;
        let vectors: &[u8] = bytemuck::cast_slice(self.vectors.flat().all()?);
        let conversation_blocks = block_sums(conversations);
        let vector_blocks = block_sums(vectors);
        let mut sections: Vec<(u32, &[u8])> = vec![
            (TAG_MANIFEST, &manifest),
            (TAG_SETTINGS, &settings),
            (TAG_CONVERSATION_OFFSETS, self.conversations.offsets().as_bytes()),
            (TAG_CONVERSATIONS, conversations),
            (
                TAG_CONVERSATION_BLOCKS,
                bytemuck::cast_slice(&conversation_blocks),
            ),
            (TAG_EXAMPLES, bytemuck::cast_slice(&examples)),
            (TAG_VECTORS, vectors),
            (TAG_VECTOR_BLOCKS, bytemuck::cast_slice(&vector_blocks)),
            (TAG_GRAPH_LEVELS, self.graph.levels.as_bytes()),
            (TAG_GRAPH_UPPER, self.graph.upper.as_bytes()),
            (TAG_GRAPH_OFFSETS, self.graph.offsets.as_bytes()),
            (TAG_GRAPH_LINKS, self.graph.links.as_bytes()),
            (TAG_FILTER, &filter),
        ];
        sections.push((TAG_STYLE, &style));
        let sketch_parts = match &self.sketches {
            Some(s) => {
                let bytes: &[u8] = bytemuck::cast_slice(s.flat().all()?);
                Some((bytes, block_sums(bytes), s.scale().to_le_bytes()))
            }
            None => None,
        };
        if let Some((bytes, blocks, scale)) = &sketch_parts {
            sections.push((TAG_SKETCHES, bytes));
            sections.push((TAG_SKETCH_BLOCKS, bytemuck::cast_slice(blocks)));
            sections.push((TAG_SKETCH_SCALE, scale));
        }
        write_sections(out, &sections)
    }
}

fn json<T: Serialize>(what: &str, value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).with_context(|| format!("encoding the {what}"))
}

fn align(at: usize) -> usize {
    at.div_ceil(ALIGN) * ALIGN
}

fn header_len(count: usize) -> usize {
    FIXED_HEADER + count * ENTRY + 8
}

fn write_sections(out: &mut impl Write, sections: &[(u32, &[u8])]) -> Result<()> {
    let mut header = Vec::with_capacity(header_len(sections.len()));
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    header.extend_from_slice(&OLDEST_READABLE.to_le_bytes());
    header.extend_from_slice(&(sections.len() as u32).to_le_bytes());
    header.extend_from_slice(&0u32.to_le_bytes());
    let mut at = align(header_len(sections.len()));
    let mut starts = Vec::with_capacity(sections.len());
    for (tag, bytes) in sections {
        header.extend_from_slice(&tag.to_le_bytes());
        header.extend_from_slice(&0u32.to_le_bytes());
        header.extend_from_slice(&(at as u64).to_le_bytes());
        header.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        header.extend_from_slice(&xxh3_64(bytes).to_le_bytes());
        starts.push(at);
        at = align(at + bytes.len());
    }
    let checksum = xxh3_64(&header);
    header.extend_from_slice(&checksum.to_le_bytes());
    out.write_all(&header)?;
    let mut written = header.len();
    let zeros = [0u8; ALIGN];
    for ((_, bytes), start) in sections.iter().zip(starts) {
        out.write_all(&zeros[..start - written])?;
        out.write_all(bytes)?;
        written = start + bytes.len();
    }
    Ok(())
}

/// Reads and verifies an artifact file: maps it, checks magic, versions and every section's
/// checksum, decodes the small sections and views the large ones in place.
pub fn read(path: &Path) -> Result<Artifact> {
    let name = path.display().to_string();
    let file = File::open(path).with_context(|| {
        format!(
            "reading the artifact `{name}`; build one with `persona compile <conversations.json> -o {name}`"
        )
    })?;
    // SAFETY: the map is read-only, and persona never writes an artifact in place: `write`
    // renames a new file over the old one, which leaves this mapping's file untouched. Copying
    // over a mapped file (`cp new.bin live.bin`) would change it under its reader; the README
    // says to replace artifacts with a rename, and every read of the mapped arrays is
    // bounds-checked, so such a change can give wrong answers, or SIGBUS if the file shrinks.
    let map = unsafe { Mmap::map(&file) }.with_context(|| format!("mapping the artifact `{name}`"))?;
    decode(Arc::new(map), &name)
}

/// Rewrites every checksum of an artifact's bytes in place: the block sums of each section
/// verified on use (when their section has room for exactly that many), each section's whose
/// range lies inside the buffer, then the header's. Returns whether the buffer had a whole header
/// to reseal.
///
/// For fuzzing and tests only: it lets damaged *contents* reach the checks after the checksums,
/// which nearly every random change would otherwise stop at. It never fails and never panics;
/// bytes too short to hold the header and section table are left as they are.
#[doc(hidden)]
pub fn reseal_checksums(bytes: &mut [u8]) -> bool {
    if bytes.len() < FIXED_HEADER {
        return false;
    }
    let count = u32_at(bytes, 16) as usize;
    if count > MAX_SECTIONS || bytes.len() < header_len(count) {
        return false;
    }
    let range_of = |bytes: &[u8], i: usize| {
        let at = FIXED_HEADER + i * ENTRY;
        let (start, len) = (u64_at(bytes, at + 8), u64_at(bytes, at + 16));
        usize::try_from(start)
            .ok()
            .zip(usize::try_from(len).ok())
            .and_then(|(s, l)| Some(s..s.checked_add(l)?))
            .filter(|r| r.end <= bytes.len())
    };
    let tag_of = |bytes: &[u8], i: usize| u32_at(bytes, FIXED_HEADER + i * ENTRY);
    for (section, blocks) in LAZY {
        let find = |tag: u32| (0..count).find(|&i| tag_of(bytes, i) == tag);
        let ranges = find(section)
            .zip(find(blocks))
            .and_then(|(s, b)| range_of(bytes, s).zip(range_of(bytes, b)));
        if let Some((body, sums_at)) = ranges {
            let sums = block_sums(&bytes[body]);
            if sums_at.len() == sums.len() * 8 {
                bytes[sums_at].copy_from_slice(bytemuck::cast_slice(&sums));
            }
        }
    }
    for i in 0..count {
        let at = FIXED_HEADER + i * ENTRY;
        if let Some(sum) = range_of(bytes, i).map(|r| xxh3_64(&bytes[r])) {
            bytes[at + 24..at + 32].copy_from_slice(&sum.to_le_bytes());
        }
    }
    let table_end = header_len(count) - 8;
    let sum = xxh3_64(&bytes[..table_end]);
    bytes[table_end..table_end + 8].copy_from_slice(&sum.to_le_bytes());
    true
}

/// A section's place in the file.
struct Entry {
    tag: u32,
    start: usize,
    len: usize,
    sum: u64,
}

/// Checks the magic bytes, the format versions and the header's checksum, then reads the section
/// table and verifies every section's bounds and checksum.
fn section_table(bytes: &[u8], name: &str, rebuild: &str) -> Result<Vec<Entry>> {
    if bytes.len() < 8 || &bytes[..8] != MAGIC {
        bail!("`{name}` is not a persona artifact (wrong magic bytes); {rebuild}");
    }
    if bytes.len() < FIXED_HEADER {
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
        bail!(
            "`{name}` uses artifact format {version}, older than the oldest this persona reads ({OLDEST_READABLE}); \
             {rebuild}"
        );
    }
    let count = u32_at(bytes, 16) as usize;
    if count > MAX_SECTIONS || bytes.len() < header_len(count) {
        bail!("`{name}` is truncated or damaged (its section table does not fit the file); {rebuild}");
    }
    let table_end = header_len(count) - 8;
    if xxh3_64(&bytes[..table_end]) != u64_at(bytes, table_end) {
        bail!("`{name}` is corrupted (the header's checksum does not match); {rebuild}");
    }
    let mut entries = Vec::with_capacity(count);
    for i in 0..count {
        let at = FIXED_HEADER + i * ENTRY;
        let tag = u32_at(bytes, at);
        let (start, len) = (u64_at(bytes, at + 8), u64_at(bytes, at + 16));
        let range = usize::try_from(start)
            .ok()
            .zip(usize::try_from(len).ok())
            .and_then(|(s, l)| Some((s, s.checked_add(l)?)))
            .filter(|&(_, end)| end <= bytes.len());
        let Some((start, end)) = range else {
            bail!("`{name}` is truncated: section {tag} runs past the end of the file; {rebuild}");
        };
        entries.push(Entry {
            tag,
            start,
            len: end - start,
            sum: u64_at(bytes, at + 24),
        });
    }
    let has = |tag: u32| entries.iter().any(|e| e.tag == tag);
    for e in &entries {
        let lazy = LAZY
            .iter()
            .any(|&(section, blocks)| e.tag == section && has(blocks));
        if !lazy && !e.verify(bytes) {
            bail!(
                "`{name}` is corrupted ({} section checksum mismatch); {rebuild}",
                section_name(e.tag)
            );
        }
    }
    Ok(entries)
}

impl Entry {
    /// Whether the section's bytes match its whole-section checksum.
    fn verify(&self, bytes: &[u8]) -> bool {
        xxh3_64(&bytes[self.start..self.start + self.len]) == self.sum
    }
}

fn decode(map: Arc<Mmap>, name: &str) -> Result<Artifact> {
    let rebuild = "rebuild it with `persona compile <conversations.json> -o <artifact>`";
    let bytes: &[u8] = &map;
    let entries = section_table(bytes, name, rebuild)?;
    let find = |tag: u32| entries.iter().find(|e| e.tag == tag);
    let missing = |tag: u32| format!("`{name}` has no {} section; {rebuild}", section_name(tag));
    let json_of = |tag: u32| find(tag).map(|e| &bytes[e.start..e.start + e.len]);
    fn parse<T: serde::de::DeserializeOwned>(
        body: &[u8],
        what: &str,
        name: &str,
        rebuild: &str,
    ) -> Result<T> {
        serde_json::from_slice(body)
            .with_context(|| format!("`{name}`: reading the {what} section; {rebuild}"))
    }
    let required = |tag: u32| json_of(tag).with_context(|| missing(tag));
    let manifest: Manifest = parse(required(TAG_MANIFEST)?, "manifest", name, rebuild)?;
    let settings: Settings = parse(required(TAG_SETTINGS)?, "settings", name, rebuild)?;
    let filter: CompiledFilter = match json_of(TAG_FILTER) {
        Some(body) => parse(body, "filter", name, rebuild)?,
        None => CompiledFilter::default(),
    };
    let style: StyleProfile = parse(required(TAG_STYLE)?, "style profile", name, rebuild)?;
    fn view<T: bytemuck::Pod>(
        map: &Arc<Mmap>,
        e: Option<&Entry>,
        what: &str,
        name: &str,
        rebuild: &str,
    ) -> Result<Flat<T>> {
        let e = e.with_context(|| format!("`{name}` has no {what} section; {rebuild}"))?;
        Flat::mapped(map, e.start, e.len).with_context(|| {
            format!("`{name}` has a malformed {what} section (size or alignment); {rebuild}")
        })
    }
    // A section with block sums (format 3) is verified on use; one without was verified whole by
    // `section_table`.
    let lazy_view = |tag: u32, blocks: u32, what: &str| -> Result<Lazy<u8>> {
        let Some(sums) = find(blocks) else {
            return Ok(Lazy::verified(view(&map, find(tag), what, name, rebuild)?));
        };
        let sums: Flat<u64> = view(&map, Some(sums), &format!("{what} block sums"), name, rebuild)?;
        let e = find(tag).with_context(|| missing(tag))?;
        Lazy::mapped(&map, e.start, e.len, sums, &format!("`{name}`'s {what}")).with_context(|| {
            format!(
                "`{name}` has malformed {what} block sums (their number does not fit the section); {rebuild}"
            )
        })
    };
    let inconsistent = |what: String| anyhow::anyhow!("`{name}` is inconsistent: {what}; {rebuild}");
    manifest.hnsw.check().map_err(inconsistent)?;
    let dims = manifest.embedding.dims;
    if !(1..=MAX_DIMS).contains(&dims) {
        return Err(inconsistent(format!(
            "the manifest's `embedding.dims` is {dims}, outside 1 to {MAX_DIMS}"
        )));
    }
    settings.filter.check().map_err(inconsistent)?;
    if !(1..=32).contains(&settings.retrieval.k) {
        return Err(inconsistent(format!(
            "`retrieval.k` is {}, outside 1 to 32",
            settings.retrieval.k
        )));
    }

    let conversations = ConversationTable::from_parts(
        view(
            &map,
            find(TAG_CONVERSATION_OFFSETS),
            "conversation offsets",
            name,
            rebuild,
        )?,
        lazy_view(TAG_CONVERSATIONS, TAG_CONVERSATION_BLOCKS, "conversations")?,
    )
    .map_err(|e| inconsistent(e.to_string()))?;
    if let Some(&bad) = manifest
        .heldout
        .conversations
        .iter()
        .find(|&&c| c >= conversations.len())
    {
        return Err(inconsistent(format!(
            "held-out conversation {bad} does not exist"
        )));
    }
    let pairs: Flat<u32> = view(&map, find(TAG_EXAMPLES), "examples", name, rebuild)?;
    if !pairs.len().is_multiple_of(2) {
        return Err(inconsistent("the examples section holds half an example".into()));
    }
    let examples: Vec<Example> = pairs
        .chunks_exact(2)
        .map(|p| Example {
            conversation: p[0],
            turn: p[1],
        })
        .collect();
    let flat: Lazy<f32> = lazy_view(TAG_VECTORS, TAG_VECTOR_BLOCKS, "vectors")?
        .cast()
        .with_context(|| {
            format!("`{name}` has a malformed vectors section (size or alignment); {rebuild}")
        })?;
    let floats = flat.len();
    let vectors = Vectors::from_flat(flat, dims)
        .filter(|v| v.len() == examples.len())
        .ok_or_else(|| {
            inconsistent(format!(
                "{floats} vector values for {} examples of {dims} dims",
                examples.len()
            ))
        })?;
    let sketches = match find(TAG_SKETCHES) {
        None => None,
        Some(_) => {
            let scale: Flat<u8> = view(&map, find(TAG_SKETCH_SCALE), "sketch scale", name, rebuild)?;
            let scale = <[u8; 4]>::try_from(&scale[..])
                .map(f32::from_le_bytes)
                .map_err(|_| inconsistent(format!("the sketch scale is {} bytes, not 4", scale.len())))?;
            let data: Lazy<i8> = lazy_view(TAG_SKETCHES, TAG_SKETCH_BLOCKS, "sketches")?
                .cast()
                .with_context(|| format!("`{name}` has a malformed sketches section; {rebuild}"))?;
            Some(
                Sketches::from_flat(data, dims, scale, examples.len())
                    .map_err(|e| inconsistent(e.to_string()))?,
            )
        }
    };
    let graph = Graph {
        levels: view(&map, find(TAG_GRAPH_LEVELS), "graph levels", name, rebuild)?,
        upper: view(&map, find(TAG_GRAPH_UPPER), "graph layers", name, rebuild)?,
        offsets: view(&map, find(TAG_GRAPH_OFFSETS), "graph offsets", name, rebuild)?,
        links: view(&map, find(TAG_GRAPH_LINKS), "graph links", name, rebuild)?,
    };
    if graph.len() != examples.len() || graph.upper.len() != examples.len() {
        return Err(inconsistent(format!(
            "the graph has {} nodes for {} examples",
            graph.len(),
            examples.len()
        )));
    }
    let artifact = Artifact {
        manifest,
        settings,
        conversations,
        examples,
        vectors,
        sketches,
        graph,
        filter,
        style,
    };
    check_contents(&artifact).map_err(inconsistent)?;
    Ok(artifact)
}

/// The checks on decoded sections that need more than one of them: every reference points inside
/// the artifact and every compiled number has the shape the runtime relies on.
fn check_contents(a: &Artifact) -> Result<(), String> {
    let dims = a.manifest.embedding.dims;
    if let Some((i, _)) = a
        .examples
        .iter()
        .enumerate()
        .find(|(_, e)| e.conversation as usize >= a.conversations.len() || e.turn == 0)
    {
        return Err(format!("example {i} points outside its conversation"));
    }
    if let Some(bad) = a
        .filter
        .deflections
        .iter()
        .find(|&&d| d as usize >= a.examples.len())
    {
        return Err(format!("deflection {bad} is not an example"));
    }
    a.style.validate()?;
    a.settings.signature.validate().map_err(|e| e.to_string())?;
    if !a.filter.learned.categories.is_empty() {
        let names: Vec<String> = a
            .settings
            .filter
            .categories
            .iter()
            .map(|c| c.name.clone())
            .collect();
        a.filter.learned.validate(&names, dims)?;
    }
    if let Some((category, example, _)) = a.filter.examples.vectors.iter().find(|(_, _, v)| v.len() != dims) {
        return Err(format!(
            "filter example {example} of category {category} is not {dims}-dimensional"
        ));
    }
    Ok(())
}

fn section_name(tag: u32) -> String {
    match tag {
        TAG_MANIFEST => "manifest".into(),
        TAG_SETTINGS => "settings".into(),
        TAG_CONVERSATION_OFFSETS => "conversation offsets".into(),
        TAG_CONVERSATIONS => "conversations".into(),
        TAG_EXAMPLES => "examples".into(),
        TAG_VECTORS => "vectors".into(),
        TAG_GRAPH_LEVELS | TAG_GRAPH_UPPER | TAG_GRAPH_OFFSETS | TAG_GRAPH_LINKS => format!("graph ({tag})"),
        TAG_FILTER => "filter".into(),
        TAG_STYLE => "style profile".into(),
        TAG_SKETCHES => "sketches".into(),
        TAG_VECTOR_BLOCKS => "vector block sums".into(),
        TAG_CONVERSATION_BLOCKS => "conversation block sums".into(),
        TAG_SKETCH_BLOCKS => "sketch block sums".into(),
        TAG_SKETCH_SCALE => "sketch scale".into(),
        other => format!("#{other}"),
    }
}

/// Writes an artifact atomically: a temporary file in the same directory, synced, then renamed.
pub fn write(path: &Path, artifact: &Artifact) -> Result<()> {
    write_atomic_with(path, |out| artifact.encode(out))
}

/// Writes bytes to `path` through a temporary sibling and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |out| Ok(out.write_all(bytes)?))
}

/// Writes whatever `fill` writes to `path` through a temporary sibling and a rename.
fn write_atomic_with(path: &Path, fill: impl FnOnce(&mut BufWriter<&File>) -> Result<()>) -> Result<()> {
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
    let tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a temporary file in `{}`", dir.display()))?;
    {
        let mut out = BufWriter::with_capacity(1 << 20, tmp.as_file());
        fill(&mut out).with_context(|| format!("writing `{}`", path.display()))?;
        out.flush()
            .with_context(|| format!("writing `{}`", path.display()))?;
    }
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
    use crate::conversation::{Conversation, Message};
    use crate::index;

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
        let vectors = Vectors::from_rows(&[vec![1.0, 0.0, 0.0], vec![0.0, 1.0, 0.0]]);
        let sketches = Sketches::quantize(&vectors).unwrap();
        let graph = index::build(&sketches, HnswParams::default()).unwrap();
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
                privacy: Privacy::default(),
                safety: SafetySettings::default(),
                context: ContextSettings::default(),
            },
            conversations: ConversationTable::build(&conversations).unwrap(),
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
            sketches: Some(sketches),
            graph,
            filter: CompiledFilter {
                examples: ExampleVectors::default(),
                deflections: vec![1],
                learned: LearnedFilter::default(),
                safety: LearnedFilter::default(),
                mood: LearnedFilter::default(),
            },
            style: StyleProfile::build(&["hey you", "tea time"], &["hi"]),
        }
    }

    fn bytes_of(artifact: &Artifact) -> Vec<u8> {
        let mut out = Vec::new();
        artifact.encode(&mut out).unwrap();
        out
    }

    fn read_bytes(bytes: &[u8]) -> Result<Artifact> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.bin");
        std::fs::write(&path, bytes).unwrap();
        read(&path)
    }

    /// Where section `tag` lies in an artifact's bytes.
    fn section_range(bytes: &[u8], tag: u32) -> std::ops::Range<usize> {
        let count = u32_at(bytes, 16) as usize;
        let at = (0..count)
            .map(|i| FIXED_HEADER + i * ENTRY)
            .find(|&at| u32_at(bytes, at) == tag)
            .unwrap();
        let start = u64_at(bytes, at + 8) as usize;
        start..start + u64_at(bytes, at + 16) as usize
    }

    #[test]
    fn damaged_vectors_or_conversations_open_but_are_refused_where_they_are_read() {
        let good = bytes_of(&sample());
        let mut bad_vector = good.clone();
        let vectors = section_range(&good, TAG_VECTORS);
        bad_vector[vectors.start + 13] ^= 0x01; // vector 1 of 3-dim vectors
        let a = read_bytes(&bad_vector).expect("opening reads neither section");
        let query = [1.0f32, 0.0, 0.0];
        let index = a.index(a.manifest.hnsw).unwrap();
        let err = index.search(&query, 2).unwrap_err().to_string();
        assert!(
            err.contains("`") && err.contains("x.bin`'s vectors are corrupted"),
            "{err}"
        );
        assert!(a.verify_all().is_err());
        assert!(
            a.encode(&mut Vec::new()).is_err(),
            "never resealed under new checksums"
        );

        let mut bad_conversation = good.clone();
        let conversations = section_range(&good, TAG_CONVERSATIONS);
        bad_conversation[conversations.start + 3] ^= 0x01;
        let a = read_bytes(&bad_conversation).unwrap();
        let err = format!("{:#}", a.conversations.get(0).unwrap_err());
        assert!(err.contains("conversations are corrupted"), "{err}");
        assert_eq!(a.reply(1), None);
        assert!(a.verify_all().is_err());

        let mut bad_sketch = good.clone();
        bad_sketch[section_range(&good, TAG_SKETCHES).start + 4] ^= 0x01;
        let a = read_bytes(&bad_sketch).expect("opening does not read the sketches");
        let index = a.index(a.manifest.hnsw).unwrap();
        let err = index.search(&query, 2).unwrap_err().to_string();
        assert!(err.contains("x.bin`'s sketches are corrupted"), "{err}");
        assert!(a.verify_all().is_err());

        // The block sums themselves are verified on opening.
        for tag in [TAG_VECTOR_BLOCKS, TAG_SKETCH_BLOCKS, TAG_SKETCH_SCALE] {
            let mut bad_sums = good.clone();
            bad_sums[section_range(&good, tag).start] ^= 0x01;
            let err = read_bytes(&bad_sums).unwrap_err().to_string();
            assert!(err.contains("checksum mismatch"), "{tag}: {err}");
        }
    }

    /// Hides sections of an artifact under an unknown tag, as a format that did not write them.
    fn hide(bytes: &mut [u8], tags: &[u32]) {
        for &tag in tags {
            let count = u32_at(bytes, 16) as usize;
            let at = (0..count)
                .map(|i| FIXED_HEADER + i * ENTRY)
                .find(|&at| u32_at(bytes, at) == tag)
                .unwrap();
            bytes[at..at + 4].copy_from_slice(&(900 + tag).to_le_bytes());
        }
        assert!(reseal_checksums(bytes));
    }

    #[test]
    fn an_artifact_without_sketches_searches_its_vectors() {
        // Format 3 had no sketches.
        let mut old = bytes_of(&sample());
        hide(&mut old, &[TAG_SKETCHES, TAG_SKETCH_BLOCKS, TAG_SKETCH_SCALE]);
        let a = read_bytes(&old).unwrap();
        assert_eq!(a.sketches, None);
        let index = a.index(a.manifest.hnsw).unwrap();
        let hits = index.search(&[0.0, 1.0, 0.0], 1).unwrap();
        assert_eq!((hits[0].id, hits[0].score), (1, 1.0));
    }

    #[test]
    fn sketches_that_do_not_fit_the_examples_are_refused_on_opening() {
        let mut wrong = sample();
        let three = Vectors::from_rows(&vec![vec![1.0, 0.0, 0.0]; 3]);
        wrong.sketches = Some(Sketches::quantize(&three).unwrap());
        let err = read_bytes(&bytes_of(&wrong)).unwrap_err().to_string();
        assert!(
            err.contains("inconsistent") && err.contains("sketch values"),
            "{err}"
        );
        let mut scaleless = bytes_of(&sample());
        let scale = section_range(&scaleless, TAG_SKETCH_SCALE);
        scaleless[scale].copy_from_slice(&f32::NAN.to_le_bytes());
        assert!(reseal_checksums(&mut scaleless));
        let err = read_bytes(&scaleless).unwrap_err().to_string();
        assert!(err.contains("sketch scale is NaN"), "{err}");
    }

    #[test]
    fn an_artifact_without_block_sums_is_verified_whole_on_opening() {
        // Format 2 had no block sums (nor sketches, which are left to the test above).
        let mut old = bytes_of(&sample());
        hide(
            &mut old,
            &[TAG_VECTOR_BLOCKS, TAG_CONVERSATION_BLOCKS, TAG_SKETCH_BLOCKS],
        );
        let a = read_bytes(&old).unwrap();
        assert_eq!(format!("{:?}", a.vectors.flat()), "Lazy(6 items)");
        assert_eq!(a, sample());
        let vectors = section_range(&old, TAG_VECTORS);
        old[vectors.start + 13] ^= 0x01;
        let err = read_bytes(&old).unwrap_err().to_string();
        assert!(err.contains("vectors section checksum mismatch"), "{err}");
    }

    #[test]
    fn round_trips_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.bin");
        let artifact = sample();
        write(&path, &artifact).unwrap();
        let back = read(&path).unwrap();
        assert_eq!(back, artifact);
        assert_eq!(back.reply(1).as_deref(), Some("tea time"));
        assert_eq!(
            format!("{:?}", back.vectors.flat()),
            "Lazy(6 items, verified on use)"
        );
        back.verify_all().unwrap();
        // No temporary file is left beside it.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn large_sections_start_aligned() {
        let bytes = bytes_of(&sample());
        let count = u32_at(&bytes, 16) as usize;
        for i in 0..count {
            let start = u64_at(&bytes, FIXED_HEADER + i * ENTRY + 8);
            assert_eq!(start % ALIGN as u64, 0, "section {i}");
        }
    }

    #[test]
    fn every_corruption_is_refused_with_a_reason() {
        let good = bytes_of(&sample());
        let mut flipped = good.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x40;
        let mut header_flip = good.clone();
        header_flip[FIXED_HEADER + 9] ^= 0x01;
        let mut newer = good.clone();
        newer[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
        newer[12..16].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
        let mut older = good.clone();
        older[8..12].copy_from_slice(&1u32.to_le_bytes());
        older[12..16].copy_from_slice(&1u32.to_le_bytes());
        let mut newer_compatible = good.clone();
        newer_compatible[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
        assert!(reseal_checksums(&mut newer_compatible));
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("empty", vec![], "not a persona artifact"),
            (
                "foreign",
                b"PK\x03\x04 a zip file, not ours".to_vec(),
                "not a persona artifact",
            ),
            ("header only", good[..20].to_vec(), "truncated"),
            ("table cut", good[..40].to_vec(), "truncated"),
            ("truncated payload", good[..good.len() - 10].to_vec(), "truncated"),
            ("bit flip in a section", flipped, "checksum"),
            ("bit flip in the table", header_flip, "checksum"),
            ("newer format", newer, "upgrade persona"),
            ("format 1", older, "older than the oldest"),
        ];
        for (name, bytes, expected) in cases {
            let err = read_bytes(&bytes).unwrap_err().to_string();
            assert!(err.contains(expected) && err.contains("x.bin"), "{name}: {err}");
        }
        assert!(
            read_bytes(&newer_compatible).is_ok(),
            "a newer but compatible format is read"
        );
    }

    #[test]
    fn resealing_lets_damaged_contents_past_the_checksums_and_never_panics() {
        let good = bytes_of(&sample());
        let mut resealed = good.clone();
        assert!(reseal_checksums(&mut resealed));
        assert_eq!(resealed, good, "a sound artifact is left as it is");
        // A damaged style profile (its JSON's last byte): the checksum no longer catches it, the
        // decoder does.
        let mut damaged = good.clone();
        let last = section_range(&good, TAG_STYLE).end - 1;
        damaged[last] = b'!';
        assert!(read_bytes(&damaged).unwrap_err().to_string().contains("checksum"));
        assert!(reseal_checksums(&mut damaged));
        let err = format!("{:#}", read_bytes(&damaged).unwrap_err());
        assert!(
            err.contains("style profile") && !err.contains("checksum"),
            "{err}"
        );
        // Too short for a header, or a table that does not fit: left alone.
        for len in [0, 8, FIXED_HEADER, FIXED_HEADER + 8] {
            let mut short = good[..len].to_vec();
            assert!(!reseal_checksums(&mut short), "{len} bytes");
            assert_eq!(short, good[..len]);
        }
        // A section whose range runs past the end keeps its checksum; the header is resealed.
        let mut past_end = good.clone();
        past_end[FIXED_HEADER + 16..FIXED_HEADER + 24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(reseal_checksums(&mut past_end));
        assert!(read_bytes(&past_end)
            .unwrap_err()
            .to_string()
            .contains("runs past the end"));
    }

    #[test]
    fn settings_a_reader_cannot_use_are_refused() {
        let mut huge_ef = sample();
        huge_ef.manifest.hnsw.ef_search = 1 << 40;
        let mut no_k = sample();
        no_k.settings.retrieval.k = 0;
        let mut ghost = sample();
        ghost.manifest.heldout.conversations = vec![usize::MAX];
        // Such dims overflowed the feature-vector size of a learned filter (see
        // tests/fuzz_regressions/artifact).
        let mut huge_dims = sample();
        huge_dims.manifest.embedding.dims = 1 << 62;
        let mut no_dims = sample();
        no_dims.manifest.embedding.dims = 0;
        // Every attempt is a model call per fan message: u32::MAX of them never finish.
        let mut endless = sample();
        endless.settings.filter.attempts = u32::MAX;
        let mut no_attempts = sample();
        no_attempts.settings.filter.attempts = 0;
        for (name, artifact, expected) in [
            ("ef_search", huge_ef, "index.ef_search"),
            ("k", no_k, "retrieval.k"),
            ("held-out", ghost, "held-out conversation"),
            ("huge dims", huge_dims, "embedding.dims"),
            ("zero dims", no_dims, "embedding.dims"),
            ("endless attempts", endless, "filter.attempts"),
            ("no attempts", no_attempts, "filter.attempts"),
        ] {
            let err = read_bytes(&bytes_of(&artifact)).unwrap_err().to_string();
            assert!(
                err.contains(expected) && err.contains("persona compile"),
                "{name}: {err}"
            );
        }
    }

    /// Sections with valid checksums whose contents have the wrong shape: each is refused on open
    /// with the rebuild advice, and none can reach a scoring function that would panic or divide
    /// by zero.
    #[test]
    fn well_checksummed_but_malformed_sections_are_refused() {
        let mut zero_spread = sample();
        zero_spread.style.surface_std[0] = 0.0;
        let mut nan_mean = sample();
        nan_mean.style.surface_mean[3] = f64::NAN;
        let mut negative_spread = sample();
        negative_spread.style.surface_std[8] = -1.0;
        let mut short_example = sample();
        short_example.filter.examples.vectors.push((0, 0, vec![0.5; 2]));
        let mut no_output = sample();
        no_output.settings.signature.output.name = String::new();
        for (name, artifact, expected) in [
            ("zero spread", zero_spread, "surface statistics"),
            // NaN is written as JSON null, which does not decode as a number.
            ("nan mean", nan_mean, "style profile"),
            ("negative spread", negative_spread, "surface statistics"),
            ("short filter example", short_example, "dimensional"),
            ("empty output field", no_output, "inconsistent"),
        ] {
            let err = read_bytes(&bytes_of(&artifact)).unwrap_err().to_string();
            assert!(
                err.contains(expected) && err.contains("persona compile"),
                "{name}: {err}"
            );
        }
    }

    #[test]
    fn a_missing_file_names_the_path_and_the_fix() {
        let err = read(Path::new("/nonexistent/p.bin")).unwrap_err().to_string();
        assert!(
            err.contains("/nonexistent/p.bin") && err.contains("persona compile"),
            "{err}"
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
