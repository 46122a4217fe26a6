//! One embedding model shared by concurrent callers: their texts are batched into shared model
//! calls, and recent vectors are remembered.
//!
//! A worker thread owns the model. Each caller's texts become a job on a queue; the worker takes
//! every job waiting when it is free (up to a batch size) and embeds them in one call, so under
//! load the requests of a server share ONNX calls without any of them waiting for a timer. A
//! bounded memory of recent texts means a text embedded once (a fan's message, checked by the
//! safety, mood and input stages of one request, and again as context in the next) is not
//! embedded again. Counters say how many texts callers asked for, how many the model embedded
//! and in how many calls.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use anyhow::{anyhow, Result};
use serde::Serialize;

use super::{Embedder, ModelInfo};

/// Texts whose vectors are remembered.
const REMEMBERED: usize = 4096;

struct Job {
    texts: Vec<String>,
    reply: mpsc::Sender<Result<Vec<Vec<f32>>, String>>,
}

/// What the service has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct EmbedStats {
    /// Texts callers asked for.
    pub texts_requested: u64,
    /// Texts the model embedded (the rest were remembered).
    pub texts_embedded: u64,
    /// Model calls those took.
    pub model_calls: u64,
}

#[derive(Default)]
struct Counters {
    requested: AtomicU64,
    embedded: AtomicU64,
    calls: AtomicU64,
}

/// Recent vectors, the oldest forgotten first.
#[derive(Default)]
struct Recent {
    vectors: HashMap<String, Arc<Vec<f32>>>,
    order: VecDeque<String>,
}

impl Recent {
    fn insert(&mut self, text: String, vector: Arc<Vec<f32>>) {
        if self.vectors.insert(text.clone(), vector).is_none() {
            self.order.push_back(text);
            while self.order.len() > REMEMBERED {
                if let Some(old) = self.order.pop_front() {
                    self.vectors.remove(&old);
                }
            }
        }
    }
}

/// The shared model: cheap handles ([`EmbedService::handle`]) embed through it.
pub struct EmbedService {
    jobs: mpsc::Sender<Job>,
    info: ModelInfo,
    recent: Arc<Mutex<Recent>>,
    counters: Arc<Counters>,
}

impl EmbedService {
    /// Starts the worker that owns `model`; it embeds up to `max_batch` texts per call.
    pub fn start(mut model: Box<dyn Embedder + Send>, max_batch: usize) -> Result<Self> {
        let info = model.info().clone();
        let counters = Arc::new(Counters::default());
        let (jobs, queue) = mpsc::channel::<Job>();
        let worker_counters = counters.clone();
        std::thread::Builder::new()
            .name("persona-embed".into())
            .spawn(move || {
                while let Ok(first) = queue.recv() {
                    let mut size = first.texts.len();
                    let mut batch = vec![first];
                    while size < max_batch.max(1) {
                        match queue.try_recv() {
                            Ok(job) => {
                                size += job.texts.len();
                                batch.push(job);
                            }
                            Err(_) => break,
                        }
                    }
                    let texts: Vec<&str> = batch
                        .iter()
                        .flat_map(|j| j.texts.iter().map(String::as_str))
                        .collect();
                    worker_counters.calls.fetch_add(1, Ordering::Relaxed);
                    worker_counters
                        .embedded
                        .fetch_add(texts.len() as u64, Ordering::Relaxed);
                    // A panic in the model fails this batch, not the worker.
                    let result =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| model.embed(&texts)))
                            .unwrap_or_else(|_| Err(anyhow!("the embedding model panicked")))
                            .and_then(|v| {
                                if v.len() == texts.len() {
                                    Ok(v)
                                } else {
                                    Err(anyhow!(
                                        "the model returned {} vectors for {} texts",
                                        v.len(),
                                        texts.len()
                                    ))
                                }
                            });
                    match result {
                        Ok(mut vectors) => {
                            for job in batch.into_iter().rev() {
                                let mine = vectors.split_off(vectors.len().saturating_sub(job.texts.len()));
                                let _ = job.reply.send(Ok(mine));
                            }
                        }
                        Err(e) => {
                            for job in batch {
                                let _ = job.reply.send(Err(format!("{e:#}")));
                            }
                        }
                    }
                }
            })
            .map_err(|e| anyhow!("starting the embedding worker: {e}"))?;
        Ok(EmbedService {
            jobs,
            info,
            recent: Arc::new(Mutex::new(Recent::default())),
            counters,
        })
    }

    /// A handle that embeds through this service.
    pub fn handle(&self) -> EmbedHandle<'_> {
        EmbedHandle { service: self }
    }

    /// What the service has done so far.
    pub fn stats(&self) -> EmbedStats {
        EmbedStats {
            texts_requested: self.counters.requested.load(Ordering::Relaxed),
            texts_embedded: self.counters.embedded.load(Ordering::Relaxed),
            model_calls: self.counters.calls.load(Ordering::Relaxed),
        }
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        self.counters
            .requested
            .fetch_add(texts.len() as u64, Ordering::Relaxed);
        let mut found: Vec<Option<Arc<Vec<f32>>>> = {
            let recent = self
                .recent
                .lock()
                .map_err(|_| anyhow!("the embedding memory is poisoned"))?;
            texts.iter().map(|t| recent.vectors.get(*t).cloned()).collect()
        };
        let mut missing: Vec<String> = Vec::new();
        for (t, f) in texts.iter().zip(&found) {
            if f.is_none() && !missing.iter().any(|m| m == t) {
                missing.push((*t).to_string());
            }
        }
        if !missing.is_empty() {
            let (reply, answer) = mpsc::channel();
            self.jobs
                .send(Job {
                    texts: missing.clone(),
                    reply,
                })
                .map_err(|_| anyhow!("the embedding worker has stopped"))?;
            let vectors = answer
                .recv()
                .map_err(|_| anyhow!("the embedding worker has stopped"))?
                .map_err(|e| anyhow!("embedding failed: {e}"))?;
            if vectors.len() != missing.len() {
                anyhow::bail!(
                    "the embedding worker returned {} vectors for {} texts",
                    vectors.len(),
                    missing.len()
                );
            }
            let vectors: Vec<Arc<Vec<f32>>> = vectors.into_iter().map(Arc::new).collect();
            let mut recent = self
                .recent
                .lock()
                .map_err(|_| anyhow!("the embedding memory is poisoned"))?;
            for (text, vector) in missing.iter().zip(&vectors) {
                recent.insert(text.clone(), vector.clone());
            }
            for (t, f) in texts.iter().zip(found.iter_mut()) {
                if f.is_none() {
                    *f = missing.iter().position(|m| m == t).map(|i| vectors[i].clone());
                }
            }
        }
        found
            .into_iter()
            .map(|v| {
                v.map(|v| v.as_ref().clone())
                    .ok_or_else(|| anyhow!("a text was not embedded"))
            })
            .collect()
    }
}

/// An [`Embedder`] that embeds through an [`EmbedService`].
pub struct EmbedHandle<'a> {
    service: &'a EmbedService,
}

impl Embedder for EmbedHandle<'_> {
    fn info(&self) -> &ModelInfo {
        &self.service.info
    }

    fn embed(&mut self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        self.service.embed(texts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::fake::HashingEmbedder;

    #[test]
    fn vectors_match_the_model_and_a_repeated_text_is_not_embedded_again() {
        let service = EmbedService::start(Box::new(HashingEmbedder::new()), 32).unwrap();
        let mut direct = HashingEmbedder::new();
        let texts = ["hey you", "rainy here too", "hey you"];
        let got = service.handle().embed(&texts).unwrap();
        assert_eq!(got, direct.embed(&texts).unwrap());
        let again = service.handle().embed(&["rainy here too"]).unwrap();
        assert_eq!(again[0], got[1]);
        assert_eq!(
            service.stats(),
            EmbedStats {
                texts_requested: 4,
                texts_embedded: 2,
                model_calls: 1
            }
        );
    }

    #[test]
    fn concurrent_callers_share_model_calls_and_each_gets_its_own_vectors() {
        let service = Arc::new(EmbedService::start(Box::new(HashingEmbedder::new()), 64).unwrap());
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let service = service.clone();
                std::thread::spawn(move || {
                    let texts: Vec<String> = (0..20).map(|j| format!("caller {i} text {j}")).collect();
                    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                    let got = service.handle().embed(&refs).unwrap();
                    let want = HashingEmbedder::new().embed(&refs).unwrap();
                    assert_eq!(got, want, "caller {i}");
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let stats = service.stats();
        assert_eq!(stats.texts_embedded, 160);
        assert!(stats.model_calls <= 8, "{stats:?}");
    }
}
