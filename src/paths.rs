//! Where persona keeps things outside the repository.
//!
//! Owns the per-user cache directory (installed assets, the embedding cache) and data directory
//! (fan histories), and the fixed layout that `scripts/setup-assets.sh` installs into. It does not
//! create or check anything: `doctor` and the loaders do that.

use std::path::{Path, PathBuf};

/// The per-user cache directory: `$PERSONA_CACHE_DIR`, else `$XDG_CACHE_HOME/persona`,
/// else `~/.cache/persona`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = non_empty_env("PERSONA_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = non_empty_env("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("persona");
    }
    home().join(".cache").join("persona")
}

/// The per-user data directory for fan histories: `$PERSONA_DATA_DIR`, else
/// `$XDG_DATA_HOME/persona`, else `~/.local/share/persona`.
pub fn data_dir() -> PathBuf {
    if let Some(dir) = non_empty_env("PERSONA_DATA_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = non_empty_env("XDG_DATA_HOME") {
        return PathBuf::from(dir).join("persona");
    }
    home().join(".local").join("share").join("persona")
}

/// The installed assets, as laid out by `scripts/setup-assets.sh`.
#[derive(Debug, Clone)]
pub struct Assets {
    /// The ONNX Runtime shared library.
    pub onnxruntime: PathBuf,
    /// The directory holding `model.onnx` and the tokenizer files.
    pub model_dir: PathBuf,
}

impl Assets {
    /// The asset paths under a cache directory.
    pub fn under(cache: &Path) -> Self {
        let assets = cache.join("assets");
        Assets {
            onnxruntime: assets.join("onnxruntime").join("libonnxruntime.so"),
            model_dir: assets.join("all-MiniLM-L6-v2"),
        }
    }

    /// The asset paths under [`cache_dir`].
    pub fn locate() -> Self {
        Self::under(&cache_dir())
    }
}

/// The command that installs missing assets, with an absolute path so it works from anywhere.
pub fn setup_command() -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join("setup-assets.sh");
    if script.exists() {
        format!("bash {} --no-llm", script.display())
    } else {
        "bash scripts/setup-assets.sh --no-llm (from the persona repository)".into()
    }
}

/// `bash <repo>/scripts/<script> <args>` with an absolute path when the repository is at hand.
pub fn script_command(script_and_args: &str) -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts");
    if dir.is_dir() {
        format!("bash {}/{script_and_args}", dir.display())
    } else {
        format!("bash scripts/{script_and_args} (from the persona repository)")
    }
}

fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn home() -> PathBuf {
    non_empty_env("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}
