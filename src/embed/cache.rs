//! The embedding cache: vectors keyed by (model, text hash), so a recompile embeds only new text.
//!
//! One append-only file per model namespace under the cache directory. A record is the text's
//! sha256 followed by its vector; a torn last record (a crash mid-append) is ignored on load, so
//! the cache can never poison a compile. It does not embed anything itself.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use crate::artifact::flat::{Flat, Lazy, Vectors};
use crate::embed::{Embedder, ModelInfo};

const MAGIC: &[u8; 8] = b"PRSNEMB1";

/// Text hash used as the cache key.
pub type TextKey = [u8; 32];

/// The key of a text.
pub fn key(text: &str) -> TextKey {
    Sha256::digest(text.as_bytes()).into()
}

/// Cached vectors of one embedding model.
pub struct EmbedCache {
    path: PathBuf,
    dims: usize,
    vectors: HashMap<TextKey, Vec<f32>>,
    pending: Vec<(TextKey, Vec<f32>)>,
}

impl EmbedCache {
    /// Opens (or starts) the cache for `model` under `dir`. An unreadable cache is treated as empty.
    pub fn open(dir: &Path, model: &ModelInfo) -> Self {
        let path = dir.join(format!("{}.bin", model.cache_namespace()));
        let vectors = load(&path, model.dims).unwrap_or_default();
        EmbedCache {
            path,
            dims: model.dims,
            vectors,
            pending: Vec::new(),
        }
    }

    /// A cache that never persists, for runs that must not touch the user's cache.
    pub fn disabled(model: &ModelInfo) -> Self {
        EmbedCache {
            path: PathBuf::new(),
            dims: model.dims,
            vectors: HashMap::new(),
            pending: Vec::new(),
        }
    }

    /// The directory the cache lives in, or `None` for a disabled cache.
    pub fn dir(&self) -> Option<&Path> {
        self.path.parent().filter(|d| !d.as_os_str().is_empty())
    }

    /// The cached vector of a text, if any.
    pub fn get(&self, key: &TextKey) -> Option<&Vec<f32>> {
        self.vectors.get(key)
    }

    /// Records a new vector; it is written on [`EmbedCache::flush`].
    pub fn insert(&mut self, key: TextKey, vector: Vec<f32>) {
        if vector.len() == self.dims && !self.vectors.contains_key(&key) {
            self.vectors.insert(key, vector.clone());
            self.pending.push((key, vector));
        }
    }

    /// Forgets the vectors held in memory after writing the new ones; the file keeps them all.
    /// For callers done with the cache, so a large one is not held beside what was built from it.
    pub fn unload(&mut self) -> Result<()> {
        self.flush()?;
        self.vectors = HashMap::new();
        Ok(())
    }

    /// Appends the new vectors to the cache file.
    pub fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() || self.path.as_os_str().is_empty() {
            return Ok(());
        }
        if let Some(parent) = self.path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating the embedding cache directory `{}`", parent.display()))?;
        }
        let fresh = !self.path.exists();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .with_context(|| format!("opening the embedding cache `{}`", self.path.display()))?;
        let mut out = BufWriter::new(file);
        if fresh {
            out.write_all(MAGIC)?;
            out.write_all(&(self.dims as u32).to_le_bytes())?;
        }
        for (key, vector) in self.pending.drain(..) {
            out.write_all(&key)?;
            for x in vector {
                out.write_all(&x.to_le_bytes())?;
            }
        }
        out.flush()
            .with_context(|| format!("writing the embedding cache `{}`", self.path.display()))?;
        Ok(())
    }
}

/// Embeds `texts` through the cache: cached vectors are reused, the rest embedded in batches.
///
/// Returns one vector per text, row after row, and how many were embedded now; `progress` is told
/// how many texts are done after every batch.
pub fn embed_with_cache(
    embedder: &mut dyn Embedder,
    cache: &mut EmbedCache,
    texts: &[String],
    batch_size: usize,
    progress: &mut dyn FnMut(usize),
) -> Result<(Vectors, usize)> {
    let keys: Vec<TextKey> = texts.iter().map(|t| key(t)).collect();
    let mut missing: Vec<usize> = Vec::new();
    let mut queued = std::collections::HashSet::new();
    for (i, k) in keys.iter().enumerate() {
        if cache.get(k).is_none() && queued.insert(*k) {
            missing.push(i);
        }
    }
    let mut done = texts.len() - missing.len();
    progress(done);
    for batch in missing.chunks(batch_size.max(1)) {
        let batch_texts: Vec<&str> = batch.iter().map(|&i| texts[i].as_str()).collect();
        let vectors = embedder.embed(&batch_texts)?;
        for (&i, vector) in batch.iter().zip(vectors) {
            cache.insert(keys[i], vector);
        }
        done += batch.len();
        progress(done);
    }
    let mut flat = Vec::with_capacity(keys.len() * cache.dims);
    for k in &keys {
        flat.extend_from_slice(cache.get(k).context("an embedding went missing from the cache")?);
    }
    let vectors = Vectors::from_flat(Lazy::verified(Flat::owned(flat)), cache.dims)
        .context("the embedding model has 0 dimensions")?;
    Ok((vectors, missing.len()))
}

fn load(path: &Path, dims: usize) -> Option<HashMap<TextKey, Vec<f32>>> {
    // Record by record, so a large cache is never held twice (file bytes and map).
    let file = File::open(path).ok()?;
    let records = file.metadata().ok()?.len().saturating_sub(12) / (32 + 4 * dims as u64);
    let mut input = BufReader::with_capacity(1 << 20, file);
    let mut head = [0u8; 12];
    input.read_exact(&mut head).ok()?;
    if &head[..8] != MAGIC || u32::from_le_bytes([head[8], head[9], head[10], head[11]]) as usize != dims {
        return None;
    }
    // A sparse or damaged file may claim more records than it holds: reserve at most 4M up front.
    let mut map = HashMap::with_capacity(records.min(1 << 22) as usize);
    let mut record = vec![0u8; 32 + 4 * dims];
    // A torn last record fails read_exact and is dropped.
    while input.read_exact(&mut record).is_ok() {
        let mut key = [0u8; 32];
        key.copy_from_slice(&record[..32]);
        let vector = record[32..]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        map.insert(key, vector);
    }
    Some(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> ModelInfo {
        ModelInfo {
            model_id: "test".into(),
            dims: 2,
            model_sha256: "00".into(),
            pooling: "mean".into(),
            max_length: 8,
        }
    }

    #[test]
    fn round_trips_and_ignores_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = EmbedCache::open(dir.path(), &model());
        cache.insert(key("a"), vec![1.0, 0.0]);
        cache.insert(key("b"), vec![0.0, 1.0]);
        cache.flush().unwrap();
        let file = dir.path().join(format!("{}.bin", model().cache_namespace()));
        let mut bytes = std::fs::read(&file).unwrap();
        bytes.extend_from_slice(&[7u8; 10]);
        std::fs::write(&file, bytes).unwrap();

        let cache = EmbedCache::open(dir.path(), &model());
        assert_eq!(cache.get(&key("a")), Some(&vec![1.0, 0.0]));
        assert_eq!(cache.get(&key("b")), Some(&vec![0.0, 1.0]));
        assert_eq!(cache.get(&key("c")), None);
    }

    #[test]
    fn unload_writes_pending_vectors_and_frees_the_map() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = EmbedCache::open(dir.path(), &model());
        cache.insert(key("a"), vec![1.0, 0.0]);
        cache.unload().unwrap();
        assert_eq!(cache.get(&key("a")), None);
        let reopened = EmbedCache::open(dir.path(), &model());
        assert_eq!(reopened.get(&key("a")), Some(&vec![1.0, 0.0]));
    }

    #[test]
    fn another_model_does_not_see_the_vectors() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = EmbedCache::open(dir.path(), &model());
        cache.insert(key("a"), vec![1.0, 0.0]);
        cache.flush().unwrap();
        let mut other = model();
        other.model_sha256 = "11".into();
        assert!(EmbedCache::open(dir.path(), &other).get(&key("a")).is_none());
    }
}
