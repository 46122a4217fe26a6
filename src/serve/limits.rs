//! Who may call and how often: the bearer token and the per-fan rate limit.
//!
//! Pure checks over the request headers and a rate table; the handlers call them first.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};

use super::errors::ApiError;

/// Compares secrets in time independent of where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

/// Checks the bearer token, when the server has one.
pub(super) fn authorize(token: Option<&str>, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = token else {
        return Ok(());
    };
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                "missing bearer token",
            )
        })?;
    if constant_time_eq(given.trim().as_bytes(), token.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "wrong bearer token",
        ))
    }
}

/// Counts one request of `fan` against `per_minute`, refusing it with 429 and `Retry-After` when
/// the fan is over.
pub(super) fn rate_limit(
    rates: &Mutex<HashMap<String, VecDeque<Instant>>>,
    per_minute: usize,
    fan: &str,
) -> Result<(), ApiError> {
    let now = Instant::now();
    let window = Duration::from_secs(60);
    let mut rates = rates
        .lock()
        .map_err(|_| ApiError::from_pipeline(anyhow::anyhow!("rate table poisoned")))?;
    let times = rates.entry(fan.to_string()).or_default();
    while times.front().is_some_and(|t| now.duration_since(*t) > window) {
        times.pop_front();
    }
    if times.len() >= per_minute {
        let wait = times.front().map_or(60, |t| {
            60u64.saturating_sub(now.duration_since(*t).as_secs()).max(1)
        });
        let mut err = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            format!("fan `{fan}` sent more than {} messages in a minute", per_minute),
        );
        err.retry_after = Some(wait);
        return Err(err);
    }
    times.push_back(now);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_comparison_is_still_a_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }

    #[test]
    fn the_rate_limit_counts_per_fan() {
        let rates = Mutex::new(HashMap::new());
        assert!(rate_limit(&rates, 2, "ana").is_ok());
        assert!(rate_limit(&rates, 2, "ana").is_ok());
        let refused = rate_limit(&rates, 2, "ana").unwrap_err();
        assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(refused.retry_after.is_some());
        assert!(
            rate_limit(&rates, 2, "ben").is_ok(),
            "another fan has their own budget"
        );
    }
}
