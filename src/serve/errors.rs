//! The service's error responses: a status and an OpenAI-style JSON body.
//!
//! Owns the mapping of every failure to a status code and a message that names the problem
//! without internals (no URLs, no paths, no stack of causes): LLM trouble to 502/503/504, a
//! request the pipeline refuses to 400/413, anything else to a 500 that is logged on stderr.

use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::answer::RequestError;
use crate::llm::LlmError;

/// An error response: a status and a JSON body `{"error": {"message", "type"}}`.
#[derive(Debug)]
pub struct ApiError {
    pub(super) status: StatusCode,
    pub(super) kind: &'static str,
    pub(super) message: String,
    pub(super) retry_after: Option<u64>,
    /// OpenAI's machine-readable `code`, when there is one (`model_not_found`).
    pub(super) code: Option<&'static str>,
    /// One more field of the error object, e.g. the `verdict` that blocked an edited reply.
    pub(super) detail: Option<Box<(&'static str, serde_json::Value)>>,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            message: message.into(),
            retry_after: None,
            code: None,
            detail: None,
        }
    }

    pub(super) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    /// Maps a pipeline failure: LLM trouble to 503/504/502, anything else to a 500 without internals.
    pub(super) fn from_pipeline(err: anyhow::Error) -> Self {
        match err.chain().find_map(|c| c.downcast_ref::<LlmError>()) {
            Some(LlmError::Unreachable { .. }) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "llm_unavailable",
                "the language model is not reachable; try again later",
            ),
            Some(LlmError::Timeout { .. }) => Self::new(
                StatusCode::GATEWAY_TIMEOUT,
                "llm_timeout",
                "the language model did not answer in time",
            ),
            Some(LlmError::Status { status, .. }) => Self::new(
                StatusCode::BAD_GATEWAY,
                "llm_error",
                format!("the language model answered with HTTP {status}"),
            ),
            Some(LlmError::BadResponse { .. }) => Self::new(
                StatusCode::BAD_GATEWAY,
                "llm_error",
                "the language model sent an unreadable answer",
            ),
            None => {
                eprintln!("serve: request failed: {err:#}");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    "the reply could not be produced",
                )
            }
        }
    }
}

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> Self {
        match e {
            RequestError::MessageTooLong(_) => {
                Self::new(StatusCode::PAYLOAD_TOO_LARGE, "request_too_large", e.to_string())
            }
            RequestError::EmptyMessage | RequestError::Candidates(_) => Self::bad_request(e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({"message": self.message, "type": self.kind, "code": self.code});
        if let Some((name, value)) = self.detail.map(|d| *d) {
            error[name] = value;
        }
        let mut response = (self.status, Json(json!({ "error": error }))).into_response();
        if let Some(seconds) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&seconds.to_string()) {
                response.headers_mut().insert("retry-after", v);
            }
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert("www-authenticate", HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// The body of a JSON request, or the error that says what is wrong with it.
pub(super) fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(v)| v).map_err(|r| {
        // Well-formed JSON of the wrong shape is a bad request too.
        let status = if r.status() == StatusCode::UNPROCESSABLE_ENTITY {
            StatusCode::BAD_REQUEST
        } else {
            r.status()
        };
        let kind = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "request_too_large"
        } else {
            "invalid_request_error"
        };
        ApiError::new(status, kind, r.body_text())
    })
}
