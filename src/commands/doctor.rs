//! `persona doctor`: what the installation has, and the command that fixes what it lacks.
//!
//! Each check is independent and reports a [`Finding`]; nothing is changed. Loading the model
//! here is the same code path `compile` and `ask` use, so a green doctor means they can start.

use std::path::Path;

use serde::Serialize;

use crate::config::{Config, Overrides};
use crate::embed::{self, Embedder};
use crate::paths::{self, Assets};

/// The result of one check.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// What was checked.
    pub check: String,
    /// Whether it passed.
    pub ok: bool,
    /// What was found.
    pub detail: String,
    /// Whether a failure stops `compile` / `ask` from working at all.
    pub required: bool,
    /// The command that fixes it, when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

fn finding(check: &str, result: Result<String, String>, fix: &str) -> Finding {
    match result {
        Ok(detail) => Finding {
            check: check.into(),
            ok: true,
            required: true,
            detail,
            fix: None,
        },
        Err(detail) => Finding {
            check: check.into(),
            ok: false,
            required: true,
            detail,
            fix: Some(fix.into()),
        },
    }
}

/// Runs every check.
pub fn run(overrides: &Overrides) -> Vec<Finding> {
    let cache = paths::cache_dir();
    let assets = Assets::under(&cache);
    let setup = paths::setup_command();
    let mut findings = vec![
        finding("cache directory", Ok(cache.display().to_string()), ""),
        finding("onnxruntime library", file_present(&assets.onnxruntime), &setup),
    ];
    for name in [
        "model.onnx",
        "tokenizer.json",
        "config.json",
        "special_tokens_map.json",
        "tokenizer_config.json",
    ] {
        findings.push(finding(
            &format!("model file {name}"),
            file_present(&assets.model_dir.join(name)),
            &setup,
        ));
    }
    let config = Config::resolve(overrides);
    findings.push(finding(
        "configuration",
        config
            .as_ref()
            .map(|c| match &c.source {
                Some(p) => format!("`{}` is valid", p.display()),
                None => "no persona.toml found; using defaults".into(),
            })
            .map_err(|e| format!("{e:#}")),
        "fix the file as the message says, or start from persona.toml in the repository",
    ));
    if findings.iter().all(|f| f.ok) {
        let threads = config.as_ref().map_or(1, |c| c.embedding.effective_threads());
        let loaded =
            embed::FastEmbedder::load(&assets, threads, 32, embed::Startup::Throughput).and_then(|mut e| {
                let v = e.embed(&["hello there"])?;
                let norm = v[0].iter().map(|x| x * x).sum::<f32>().sqrt();
                let hash = &e.info().model_sha256;
                let pinned = if hash == embed::PINNED_MODEL_SHA256 {
                    "the pinned model"
                } else {
                    "NOT the pinned model"
                };
                Ok(format!(
                    "{} loaded ({pinned}, sha256 {}); {} dims, unit norm {norm:.3}",
                    e.info().model_id,
                    &hash[..12],
                    e.dims()
                ))
            });
        findings.push(finding(
            "embedding model",
            loaded.map_err(|e| format!("{e:#}")),
            &setup,
        ));
    }
    if let Ok(config) = &config {
        let mut llm = finding(
            "llm server",
            crate::llm::probe(&config.llm.base_url),
            &format!(
                "{} (the local model), or set PERSONA_LLM_BASE_URL / [llm] in persona.toml",
                paths::script_command("llm.sh start")
            ),
        );
        llm.required = false;
        findings.push(llm);
    }
    findings
}

fn file_present(path: &Path) -> Result<String, String> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() && m.len() > 0 => Ok(format!("{} ({} bytes)", path.display(), m.len())),
        _ => Err(format!("missing: {}", path.display())),
    }
}
