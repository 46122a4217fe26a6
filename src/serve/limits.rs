//! Who may call and how often: the bearer token and the rate limits.
//!
//! Pure checks over the request headers and a rate table: per fan on the answering routes, per
//! client address on every `/v1/*` route.

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

/// Requests per key in the last minute, for the rate limits. Keys idle for a minute are
/// forgotten as the table grows, so a server that met a million fans does not keep them all.
#[derive(Default)]
pub(super) struct RateTable {
    inner: Mutex<Rates>,
}

#[derive(Default)]
struct Rates {
    times: HashMap<String, VecDeque<Instant>>,
    /// The table's size after the last sweep, and when it was: the next sweep comes when the
    /// table has doubled or a window has passed.
    swept_at: usize,
    swept: Option<Instant>,
}

const WINDOW: Duration = Duration::from_secs(60);

impl RateTable {
    /// Counts one request of `key` against `per_minute`, refusing it with 429 and `Retry-After`
    /// when the key is over; `what` names the key in the message.
    pub(super) fn check(&self, key: &str, per_minute: usize, what: &str) -> Result<(), ApiError> {
        self.check_at(key, per_minute, what, Instant::now())
    }

    fn check_at(&self, key: &str, per_minute: usize, what: &str, now: Instant) -> Result<(), ApiError> {
        let mut rates = self
            .inner
            .lock()
            .map_err(|_| ApiError::from_pipeline(anyhow::anyhow!("rate table poisoned")))?;
        let grown = rates.times.len() >= 2 * rates.swept_at;
        let stale = rates.swept.is_none_or(|t| now.duration_since(t) > WINDOW);
        if rates.times.len() >= 1024 && (grown || stale) {
            rates
                .times
                .retain(|_, t| t.back().is_some_and(|last| now.duration_since(*last) <= WINDOW));
            rates.swept_at = rates.times.len();
            rates.swept = Some(now);
        }
        let times = rates.times.entry(key.to_string()).or_default();
        while times.front().is_some_and(|t| now.duration_since(*t) > WINDOW) {
            times.pop_front();
        }
        if times.len() >= per_minute {
            let wait = times.front().map_or(60, |t| {
                60u64.saturating_sub(now.duration_since(*t).as_secs()).max(1)
            });
            let mut err = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                format!("{what} sent more than {per_minute} requests in a minute"),
            );
            err.retry_after = Some(wait);
            return Err(err);
        }
        times.push_back(now);
        Ok(())
    }

    /// Keys remembered now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().map(|r| r.times.len()).unwrap_or(0)
    }
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
    fn the_rate_limit_counts_per_key() {
        let rates = RateTable::default();
        assert!(rates.check("ana", 2, "fan `ana`").is_ok());
        assert!(rates.check("ana", 2, "fan `ana`").is_ok());
        let refused = rates.check("ana", 2, "fan `ana`").unwrap_err();
        assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(refused.retry_after.is_some());
        assert!(
            rates.check("ben", 2, "fan `ben`").is_ok(),
            "another fan has their own budget"
        );
    }

    #[test]
    fn idle_keys_are_forgotten_as_the_table_grows() {
        let rates = RateTable::default();
        let start = Instant::now();
        for i in 0..3000 {
            rates.check_at(&format!("fan{i}"), 5, "a fan", start).unwrap();
        }
        assert!(rates.len() > 2000, "nobody is idle yet: {}", rates.len());
        let later = start + Duration::from_secs(61);
        for i in 0..10 {
            rates.check_at(&format!("new{i}"), 5, "a fan", later).unwrap();
        }
        assert!(
            rates.len() < 2000,
            "fans idle for a minute are swept: {} remembered",
            rates.len()
        );
        rates
            .check_at("fan1", 1, "a fan", later)
            .expect("a forgotten fan starts afresh");
    }
}
