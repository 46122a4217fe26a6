//! The chatters' console (`serve --console`): one page, built into the binary, served at `/`.
//!
//! Owns the three static files (`console/index.html`, `console.js`, `console.css`, plain HTML,
//! CSS and JavaScript with no build step), the headers they are served with (a strict
//! Content-Security-Policy: scripts, styles and requests only from this origin, no inline code,
//! no framing; `nosniff`; no referrer) and `GET /v1/console`, which tells the page whether review
//! mode is on and which creators are served. The page holds no secret: a person types the
//! bearer token, the page keeps it in `sessionStorage` and sends it in the `Authorization` header,
//! which a cross-site form or image cannot send, so state-changing calls are not open to
//! cross-site requests (and no CORS header lets another origin read or send them).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::errors::ApiError;
use super::limits::authorize;
use super::AppState;

const PAGE: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/console.js");
const STYLE: &str = include_str!("console/console.css");

/// The page's Content-Security-Policy.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                       img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The console's routes: the page and its two files.
pub(super) fn routes<M: Send + Sync + 'static>() -> Router<Arc<AppState<M>>> {
    Router::new()
        .route("/", get(|| async { file(PAGE, "text/html; charset=utf-8") }))
        .route(
            "/console.js",
            get(|| async { file(SCRIPT, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/console.css",
            get(|| async { file(STYLE, "text/css; charset=utf-8") }),
        )
}

/// A static file with the console's security headers.
fn file(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// `GET /v1/console`: whether review mode is on and the creators served (the page's login check).
pub(super) async fn settings<M: Send + Sync + 'static>(
    State(state): State<Arc<AppState<M>>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(state.options.token.as_deref(), &headers)?;
    let all = state.creators.all();
    let creators: Vec<&str> = all.iter().map(|p| p.creator()).collect();
    Ok(Json(
        json!({"review": state.options.review, "creators": creators}),
    ))
}
