//! The LLM client: any OpenAI-compatible `/v1/chat/completions` endpoint, over reqwest + tokio.
//!
//! Owns the provider presets (local llama.cpp, Together, OpenAI, Ollama), the wire types, retries
//! with backoff on 429 / 5xx / timeouts / refused connections, and errors that say which URL failed
//! and what to configure. The API key is held here and never printed. This is the only module that
//! talks to the network.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A chat message on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl ChatMessage {
    /// A message with a role.
    pub fn new(role: &str, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// A provider preset: where it lives and how it names things.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preset {
    /// Preset name.
    pub name: &'static str,
    /// Base URL, ending in `/v1`.
    pub base_url: &'static str,
    /// Default model.
    pub model: &'static str,
    /// Environment variable holding the API key, if the provider needs one.
    pub key_env: Option<&'static str>,
    /// The request field for a repetition penalty, if the provider has one.
    pub penalty_field: Option<&'static str>,
    /// Whether the server continues a trailing assistant message (llama.cpp does), so the reply
    /// can be started with the output marker and stopped at the end of its line.
    pub prefill: bool,
}

/// The known presets.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "local",
        base_url: "http://127.0.0.1:8080/v1",
        model: "smollm2-135m",
        key_env: None,
        penalty_field: Some("repeat_penalty"),
        prefill: true,
    },
    Preset {
        name: "together",
        base_url: "https://api.together.xyz/v1",
        model: "meta-llama/Meta-Llama-3.1-405B-Instruct-Turbo",
        key_env: Some("TOGETHER_API_KEY"),
        penalty_field: Some("repetition_penalty"),
        prefill: false,
    },
    Preset {
        name: "openai",
        base_url: "https://api.openai.com/v1",
        model: "gpt-4o-mini",
        key_env: Some("OPENAI_API_KEY"),
        penalty_field: None,
        prefill: false,
    },
    Preset {
        name: "ollama",
        base_url: "http://127.0.0.1:11434/v1",
        model: "llama3.1",
        key_env: None,
        penalty_field: Some("repeat_penalty"),
        prefill: false,
    },
];

/// Looks a preset up by name.
pub fn preset(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name)
}

/// Resolved LLM settings.
#[derive(Clone, PartialEq)]
pub struct LlmSettings {
    /// The preset these settings started from.
    pub preset: &'static Preset,
    /// Base URL, ending in `/v1`.
    pub base_url: String,
    /// Model name.
    pub model: String,
    /// API key, if any. Never printed.
    pub api_key: Option<String>,
    /// Sampling temperature.
    pub temperature: f32,
    /// Nucleus sampling.
    pub top_p: Option<f32>,
    /// Repetition penalty, sent under the preset's field name.
    pub repeat_penalty: Option<f32>,
    /// Tokens to generate at most.
    pub max_tokens: u32,
    /// Stop sequences.
    pub stop: Vec<String>,
    /// Seed, for repeatable runs where the provider supports it.
    pub seed: Option<u64>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Retries after the first attempt.
    pub retries: u32,
    /// Start the reply with the output marker as a trailing assistant message.
    pub prefill: bool,
}

impl std::fmt::Debug for LlmSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmSettings")
            .field("preset", &self.preset.name)
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("temperature", &self.temperature)
            .field("max_tokens", &self.max_tokens)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl LlmSettings {
    /// The defaults of a preset.
    pub fn from_preset(preset: &'static Preset) -> Self {
        LlmSettings {
            preset,
            base_url: preset.base_url.into(),
            model: preset.model.into(),
            api_key: preset
                .key_env
                .and_then(|k| std::env::var(k).ok())
                .filter(|k| !k.is_empty()),
            temperature: 0.5,
            top_p: Some(0.7),
            repeat_penalty: preset.penalty_field.map(|_| 1.3),
            max_tokens: 120,
            // With a prefilled marker the reply is the rest of that line.
            stop: if preset.prefill {
                vec!["\n".into(), "[[ ## completed".into()]
            } else {
                vec!["[[ ## completed".into(), "\n\n".into(), "\nTHE FAN:".into()]
            },
            seed: None,
            timeout: Duration::from_secs(60),
            retries: 2,
            prefill: preset.prefill,
        }
    }

    fn endpoint(&self) -> String {
        format!("{}/chat/completions", self.base_url.trim_end_matches('/'))
    }
}

/// Why a completion failed.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// Nothing answered at the URL.
    #[error(
        "no LLM answered at `{url}` ({detail}); start one (`{}` runs the local model) \
         or point persona elsewhere with PERSONA_LLM_BASE_URL / `[llm] base_url` / `--llm-url`",
        crate::paths::script_command("llm.sh start")
    )]
    Unreachable {
        /// The endpoint.
        url: String,
        /// The transport error.
        detail: String,
    },
    /// The request took longer than the timeout.
    #[error("the LLM at `{url}` did not answer within {seconds} s; raise `[llm] timeout_secs` or check the server")]
    Timeout {
        /// The endpoint.
        url: String,
        /// The timeout.
        seconds: f64,
    },
    /// The server answered with an error status.
    #[error("the LLM at `{url}` answered HTTP {status}: {body}")]
    Status {
        /// The endpoint.
        url: String,
        /// HTTP status.
        status: u16,
        /// The start of the error body.
        body: String,
    },
    /// The server answered something that is not a chat completion.
    #[error("the LLM at `{url}` sent a response persona cannot read ({detail}); is it an OpenAI-compatible endpoint?")]
    BadResponse {
        /// The endpoint.
        url: String,
        /// What was wrong.
        detail: String,
    },
}

impl LlmError {
    fn retryable(&self) -> bool {
        match self {
            LlmError::Unreachable { .. } | LlmError::Timeout { .. } => true,
            LlmError::Status { status, .. } => *status == 429 || *status >= 500,
            LlmError::BadResponse { .. } => false,
        }
    }
}

#[derive(Serialize)]
struct Request<'a> {
    model: &'a str,
    messages: &'a [ChatMessage],
    temperature: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f32>,
    max_tokens: u32,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    n: Option<u32>,
    #[serde(flatten)]
    extra: serde_json::Map<String, serde_json::Value>,
}

#[derive(Deserialize)]
struct Response {
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice {
    message: ResponseMessage,
}

#[derive(Deserialize)]
struct ResponseMessage {
    #[serde(default)]
    content: Option<String>,
}

/// Tokens a model reported for one or more calls, as OpenAI's `usage` counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens of the prompts.
    #[serde(default)]
    pub prompt_tokens: u64,
    /// Tokens generated.
    #[serde(default)]
    pub completion_tokens: u64,
}

impl Usage {
    /// Both counts together.
    pub fn total(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, other: Usage) {
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
    }
}

/// The answer of a chat model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The generated texts, one per requested choice.
    pub texts: Vec<String>,
    /// HTTP attempts it took.
    pub attempts: u32,
    /// Tokens the server reported for the successful attempt (zeros when it reports none).
    pub usage: Usage,
}

/// Something that completes chats; the wire format stays behind it.
pub trait ChatModel {
    /// Completes `messages` with `n` choices.
    fn complete(
        &self,
        messages: &[ChatMessage],
        n: u32,
    ) -> impl std::future::Future<Output = Result<Completion, LlmError>> + Send;

    /// The same model sampling at `temperature` with `seed`, for best-of-N candidates.
    fn with_sampling(&self, temperature: f32, seed: u64) -> Self
    where
        Self: Sized;
}

/// An OpenAI-compatible HTTP client.
#[derive(Debug, Clone)]
pub struct LlmClient {
    http: reqwest::Client,
    settings: LlmSettings,
}

impl LlmClient {
    /// A client for these settings.
    pub fn new(settings: LlmSettings) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(Duration::from_secs(5).min(settings.timeout))
            .build()?;
        Ok(LlmClient { http, settings })
    }

    /// The settings in use.
    pub fn settings(&self) -> &LlmSettings {
        &self.settings
    }

    async fn attempt(&self, url: &str, body: &Request<'_>) -> Result<(Vec<String>, Usage), LlmError> {
        let mut request = self.http.post(url).json(body);
        if let Some(key) = &self.settings.api_key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.map_err(|e| self.transport_error(url, &e))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| self.transport_error(url, &e))?;
        if !status.is_success() {
            return Err(LlmError::Status {
                url: url.into(),
                status: status.as_u16(),
                body: snippet(&text),
            });
        }
        let parsed: Response = serde_json::from_str(&text).map_err(|e| LlmError::BadResponse {
            url: url.into(),
            detail: format!("{e}; body starts `{}`", snippet(&text)),
        })?;
        if parsed.choices.is_empty() {
            return Err(LlmError::BadResponse {
                url: url.into(),
                detail: "no choices in the response".into(),
            });
        }
        let usage = parsed.usage.unwrap_or_default();
        Ok((
            parsed
                .choices
                .into_iter()
                .map(|c| c.message.content.unwrap_or_default())
                .collect(),
            usage,
        ))
    }

    fn transport_error(&self, url: &str, e: &reqwest::Error) -> LlmError {
        if e.is_timeout() {
            LlmError::Timeout {
                url: url.into(),
                seconds: self.settings.timeout.as_secs_f64(),
            }
        } else {
            let mut detail = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                detail = format!("{detail}: {s}");
                source = s.source();
            }
            LlmError::Unreachable {
                url: url.into(),
                detail,
            }
        }
    }
}

impl ChatModel for LlmClient {
    fn with_sampling(&self, temperature: f32, seed: u64) -> LlmClient {
        let mut settings = self.settings.clone();
        settings.temperature = temperature;
        settings.seed = Some(seed);
        LlmClient {
            http: self.http.clone(),
            settings,
        }
    }

    async fn complete(&self, messages: &[ChatMessage], n: u32) -> Result<Completion, LlmError> {
        let s = &self.settings;
        let mut extra = serde_json::Map::new();
        if let (Some(field), Some(penalty)) = (s.preset.penalty_field, s.repeat_penalty) {
            extra.insert(field.into(), serde_json::json!(penalty));
        }
        let body = Request {
            model: &s.model,
            messages,
            temperature: s.temperature,
            top_p: s.top_p,
            max_tokens: s.max_tokens,
            stop: &s.stop,
            seed: s.seed,
            n: (n > 1).then_some(n),
            extra,
        };
        let url = s.endpoint();
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.attempt(&url, &body).await {
                Ok((texts, usage)) => {
                    return Ok(Completion {
                        texts,
                        attempts,
                        usage,
                    })
                }
                Err(e) if e.retryable() && attempts <= s.retries => {
                    tokio::time::sleep(backoff(attempts)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Whether an OpenAI-compatible server answers `GET {base}/models` within two seconds; for
/// `doctor`, which runs outside any async runtime.
pub fn probe(base_url: &str) -> Result<String, String> {
    let url = format!("{}/models", base_url.trim_end_matches('/'));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| e.to_string())?;
        match client.get(&url).send().await {
            Ok(r) if r.status().is_success() => Ok(format!("{url} answers")),
            Ok(r) => Err(format!(
                "{url} answered HTTP {} (ask needs it; compile does not)",
                r.status().as_u16()
            )),
            Err(_) => Err(format!(
                "nothing answers at {url} (ask needs it; compile does not)"
            )),
        }
    })
}

/// Wait before retry number `attempt` (1-based): 250 ms, 500 ms, 1 s, ... capped at 4 s.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(250u64.saturating_mul(1 << attempt.saturating_sub(1).min(4)))
}

fn snippet(text: &str) -> String {
    let flat: String = text
        .chars()
        .take(200)
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    if text.chars().count() > 200 {
        format!("{flat}...")
    } else {
        flat
    }
}

#[cfg(test)]
mod tests {
    //! Fault tests against a stand-in HTTP server that the test controls: it answers each
    //! request with the next canned response, so 429s, 500s, garbage and stalls can be provoked.

    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    enum Canned {
        Status(u16, &'static str),
        Stall,
    }

    const OK: &str = r#"{"choices":[{"message":{"role":"assistant","content":"hi petal"}}]}"#;

    async fn stand_in(script: Vec<Canned>) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = Arc::new(AtomicUsize::new(0));
        let count = served.clone();
        tokio::spawn(async move {
            for canned in script {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let count = count.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    let _ = socket.read(&mut buf).await;
                    count.fetch_add(1, Ordering::SeqCst);
                    match canned {
                        Canned::Status(code, body) => {
                            let reply = format!(
                            "HTTP/1.1 {code} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        );
                            let _ = socket.write_all(reply.as_bytes()).await;
                        }
                        Canned::Stall => tokio::time::sleep(Duration::from_secs(5)).await,
                    }
                });
            }
        });
        (format!("http://{addr}/v1"), served)
    }

    fn client(url: &str, retries: u32, timeout_ms: u64) -> LlmClient {
        let mut s = LlmSettings::from_preset(preset("local").unwrap());
        s.base_url = url.into();
        s.retries = retries;
        s.timeout = Duration::from_millis(timeout_ms);
        LlmClient::new(s).unwrap()
    }

    #[tokio::test]
    async fn retries_429_then_succeeds() {
        let (url, served) = stand_in(vec![Canned::Status(429, "{}"), Canned::Status(200, OK)]).await;
        let c = client(&url, 2, 2000)
            .complete(&[ChatMessage::new("user", "hi")], 1)
            .await
            .unwrap();
        assert_eq!((c.texts, c.attempts), (vec!["hi petal".to_string()], 2));
        assert_eq!(served.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn gives_up_after_repeated_500s_with_the_status() {
        let (url, served) = stand_in(vec![
            Canned::Status(500, "boom"),
            Canned::Status(500, "boom"),
            Canned::Status(500, "boom"),
        ])
        .await;
        let err = client(&url, 2, 2000)
            .complete(&[ChatMessage::new("user", "hi")], 1)
            .await
            .unwrap_err();
        assert!(matches!(err, LlmError::Status { status: 500, .. }), "{err}");
        assert_eq!(served.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn garbage_is_a_bad_response_and_not_retried() {
        let (url, served) = stand_in(vec![
            Canned::Status(200, "<html>nope</html>"),
            Canned::Status(200, OK),
        ])
        .await;
        let err = client(&url, 2, 2000)
            .complete(&[ChatMessage::new("user", "hi")], 1)
            .await
            .unwrap_err();
        assert!(matches!(err, LlmError::BadResponse { .. }), "{err}");
        assert!(err.to_string().contains("<html>"), "{err}");
        assert_eq!(served.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_stall_times_out_then_the_retry_succeeds() {
        let (url, _) = stand_in(vec![Canned::Stall, Canned::Status(200, OK)]).await;
        let c = client(&url, 1, 300)
            .complete(&[ChatMessage::new("user", "hi")], 1)
            .await
            .unwrap();
        assert_eq!(c.attempts, 2);
        let (url, _) = stand_in(vec![Canned::Stall]).await;
        let err = client(&url, 0, 300)
            .complete(&[ChatMessage::new("user", "hi")], 1)
            .await
            .unwrap_err();
        assert!(matches!(err, LlmError::Timeout { .. }), "{err}");
    }

    #[tokio::test]
    async fn nothing_listening_names_the_url_and_the_fix() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1", listener.local_addr().unwrap());
        drop(listener);
        let err = client(&url, 0, 1000)
            .complete(&[ChatMessage::new("user", "hi")], 1)
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&url) && text.contains("PERSONA_LLM_BASE_URL"),
            "{text}"
        );
    }

    #[test]
    fn the_api_key_never_shows_in_debug_output() {
        let mut s = LlmSettings::from_preset(preset("together").unwrap());
        s.api_key = Some("sk-secret-123".into());
        assert!(!format!("{s:?}").contains("sk-secret-123"));
    }
}
