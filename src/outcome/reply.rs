//! Local replies in the shape the MLflow client shows:
//! `{"error_code": ..., "message": ...}` becomes `RestException: CODE: message`.

use crate::types::Reply;
use crate::types::Window;
use serde::Serialize;

/// The header on every reply the filter makes itself (refusals and whoami),
/// naming why: a client can tell the filter's 403 from MLflow's.
pub const MARKER: &str = "x-hokusai-auth-reply";

/// The body the MLflow client reads as `RestException: CODE: message`.
#[derive(Serialize)]
struct MlflowError<'a> {
    error_code: &'a str,
    message: &'a str,
}

impl Reply {
    /// An MLflow error reply; `headers` come first, then the content type.
    pub fn mlflow_error(
        status: u32,
        code: &str,
        message: &str,
        mut headers: Vec<(&'static str, String)>,
    ) -> Reply {
        headers.push(("content-type", "application/json".into()));
        headers.push(("cache-control", "no-store".into()));
        let body = serde_json::to_string(&MlflowError {
            error_code: code,
            message,
        })
        .unwrap_or_default();
        Reply {
            status,
            headers,
            body,
        }
    }
}

/// The `X-RateLimit-*` headers of a key's window.
pub fn window_headers(w: &Window) -> Vec<(&'static str, String)> {
    vec![
        ("x-ratelimit-limit", w.limit.to_string()),
        ("x-ratelimit-remaining", w.remaining.to_string()),
        ("x-ratelimit-reset", w.reset_at.to_string()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_escaped() {
        let r = Reply::mlflow_error(403, "PERMISSION_DENIED", "quote \" and \n newline", vec![]);
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["message"], "quote \" and \n newline");
        assert_eq!(v["error_code"], "PERMISSION_DENIED");
    }
}
