//! A small builder for running the real `persona` binary in tests, and shared fixtures.
//!
//! Every test gets its own data directory; the asset cache is the user's (installed by
//! `scripts/setup-assets.sh`), so tests exercise the same files a user has.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The shipped training data.
pub fn dataset() -> PathBuf {
    root().join("training_data").join("conversations.json")
}

/// One run of the binary.
pub struct Run {
    cmd: Command,
    stdin: Option<Vec<u8>>,
}

/// Starts a command line for the binary, run from a fresh temporary working directory's view:
/// the repository's `persona.toml` is named explicitly so the working directory does not matter.
pub fn persona(args: &[&str]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_persona"));
    cmd.args(args);
    cmd.env_remove("PERSONA_CONFIG");
    cmd.env("PERSONA_CONFIG", root().join("persona.toml"));
    Run { cmd, stdin: None }
}

impl Run {
    /// Sets an environment variable.
    pub fn env(mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> Self {
        self.cmd.env(key, value);
        self
    }

    /// Removes an environment variable.
    pub fn env_remove(mut self, key: &str) -> Self {
        self.cmd.env_remove(key);
        self
    }

    /// Runs in this directory.
    pub fn dir(mut self, dir: &Path) -> Self {
        self.cmd.current_dir(dir);
        self
    }

    /// Feeds this to stdin.
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(bytes.into());
        self
    }

    /// Runs to completion.
    pub fn output(mut self) -> Output {
        use std::io::Write;
        self.cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        self.cmd.stdin(if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let mut child = self.cmd.spawn().expect("the persona binary starts");
        if let Some(bytes) = self.stdin.take() {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(&bytes)
                .expect("write stdin");
        }
        child.wait_with_output().expect("the persona binary runs")
    }

    /// Runs and expects success; returns stdout.
    pub fn success(self) -> String {
        let out = self.output();
        assert!(
            out.status.success(),
            "persona failed ({}):\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 stdout")
    }

    /// Runs and expects failure; returns stderr.
    pub fn failure(self) -> String {
        let out = self.output();
        assert!(
            !out.status.success(),
            "persona should have failed:\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let stderr = String::from_utf8(out.stderr).expect("utf-8 stderr");
        assert!(!stderr.contains("panicked"), "persona panicked:\n{stderr}");
        stderr
    }
}

/// An artifact compiled once per test binary from the shipped training data.
pub fn shared_artifact() -> &'static Path {
    static ARTIFACT: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, path) = ARTIFACT.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("persona.bin");
        let dataset = dataset();
        persona(&[
            "compile",
            dataset.to_str().unwrap(),
            "-o",
            path.to_str().unwrap(),
            "--json",
        ])
        .success();
        (dir, path)
    });
    path
}

/// The base URL of the local LLM the tests talk to.
pub fn llm_url() -> String {
    std::env::var("PERSONA_LLM_BASE_URL").unwrap_or_else(|_| "http://127.0.0.1:8080/v1".into())
}

/// The throwaway PostgreSQL server of the test run (`scripts/test.sh` starts it).
pub fn postgres_url() -> String {
    std::env::var("PERSONA_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!("PERSONA_TEST_POSTGRES_URL is unset: run the tests with scripts/test.sh, which starts a throwaway PostgreSQL (scripts/pg.sh)")
    })
}

/// Parses JSON output, failing the test with the text when it is not JSON.
pub fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// A stand-in LLM on a loopback port: an OpenAI-compatible `/v1/chat/completions` whose answer
/// to each request body (parsed JSON) is `answer(body)`. For the tests that must provoke a worst
/// case (a model that agrees to everything, one that echoes its prompt, a judge); returns the
/// base URL.
pub fn standin_llm(answer: impl Fn(&serde_json::Value) -> String + Send + 'static) -> String {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let url = format!("http://{}/v1", listener.local_addr().expect("the bound address"));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let mut reader = BufReader::new(stream);
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let request: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let content = answer(&request);
            let reply =
                serde_json::json!({"choices": [{"message": {"role": "assistant", "content": content}}]})
                    .to_string();
            let mut stream = reader.into_inner();
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
                reply.len()
            );
        }
    });
    url
}

/// The whole prompt of a chat-completions request body, messages joined by spaces.
pub fn prompt_of(request: &serde_json::Value) -> String {
    request["messages"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|m| m["content"].as_str())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// A configuration like the repository's with the compile-time classifiers off (the learned
/// filter, safety and mood stages), for tests of compile itself that do not need them: a fresh
/// embedding cache then embeds only the examples. Written into `dir`; returns its path.
/// `filter` holds more `[filter]` lines.
pub fn config_without_classifiers(dir: &Path, filter: &str) -> PathBuf {
    let base = std::fs::read_to_string(root().join("persona.toml")).expect("the repository's persona.toml");
    let path = dir.join("persona-no-classifiers.toml");
    std::fs::write(
        &path,
        format!("{base}\n[filter]\nlearned = false\n{filter}\n\n[safety]\nlearned = false\n\n[context]\nmood = false\n"),
    )
    .expect("write the test configuration");
    path
}
