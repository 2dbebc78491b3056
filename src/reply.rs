//! Local replies in the shape the MLflow client shows:
//! `{"error_code": ..., "message": ...}` becomes `RestException: CODE: message`.

use crate::ratelimit::Window;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u32,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

fn reply(
    status: u32,
    code: &str,
    message: &str,
    mut headers: Vec<(&'static str, String)>,
) -> Reply {
    headers.push(("content-type", "application/json".into()));
    headers.push(("cache-control", "no-store".into()));
    let body = serde_json::json!({"error_code": code, "message": message}).to_string();
    Reply {
        status,
        headers,
        body,
    }
}

pub fn bad_request(message: &str) -> Reply {
    reply(400, "INVALID_PARAMETER_VALUE", message, Vec::new())
}

pub fn unauthenticated(message: &str) -> Reply {
    let challenge = ("www-authenticate", "Bearer realm=\"hokusai\"".to_string());
    reply(401, "UNAUTHENTICATED", message, vec![challenge])
}

pub fn forbidden(message: &str) -> Reply {
    reply(403, "PERMISSION_DENIED", message, Vec::new())
}

/// The key service itself refused this key for now (its 429).
pub fn auth_rate_limited() -> Reply {
    reply(
        429,
        "RESOURCE_EXHAUSTED",
        "the key service is rate-limiting this API key; retry later",
        vec![("retry-after", "60".into())],
    )
}

/// This filter's own per-key limit.
pub fn rate_limited(w: &Window, now_s: u64) -> Reply {
    let mut headers = window_headers(w);
    headers.push(("retry-after", w.retry_after(now_s).to_string()));
    reply(
        429,
        "RESOURCE_EXHAUSTED",
        &format!(
            "rate limit of {} requests per hour exceeded for this API key",
            w.limit
        ),
        headers,
    )
}

pub fn window_headers(w: &Window) -> Vec<(&'static str, String)> {
    vec![
        ("x-ratelimit-limit", w.limit.to_string()),
        ("x-ratelimit-remaining", w.remaining.to_string()),
        ("x-ratelimit-reset", w.reset_at.to_string()),
    ]
}

pub fn unavailable(message: &str) -> Reply {
    reply(
        503,
        "TEMPORARILY_UNAVAILABLE",
        message,
        vec![("retry-after", "1".into())],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'r>(r: &'r Reply, n: &str) -> Option<&'r str> {
        r.headers
            .iter()
            .find(|(k, _)| *k == n)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn bodies_are_mlflow_errors() {
        for (r, status, code) in [
            (bad_request("b"), 400, "INVALID_PARAMETER_VALUE"),
            (unauthenticated("u"), 401, "UNAUTHENTICATED"),
            (forbidden("f"), 403, "PERMISSION_DENIED"),
            (auth_rate_limited(), 429, "RESOURCE_EXHAUSTED"),
            (unavailable("x"), 503, "TEMPORARILY_UNAVAILABLE"),
        ] {
            assert_eq!(r.status, status);
            assert_eq!(header(&r, "content-type"), Some("application/json"));
            let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
            assert_eq!(v["error_code"], code);
            assert!(v["message"].is_string());
        }
    }

    #[test]
    fn headers_tell_the_client_what_to_do() {
        assert_eq!(
            header(&unauthenticated("u"), "www-authenticate"),
            Some("Bearer realm=\"hokusai\"")
        );
        assert_eq!(header(&auth_rate_limited(), "retry-after"), Some("60"));
        assert_eq!(header(&unavailable("x"), "retry-after"), Some("1"));
        let w = Window {
            limit: 10,
            remaining: 0,
            reset_at: 7200,
            allowed: false,
        };
        let r = rate_limited(&w, 7000);
        assert_eq!(header(&r, "retry-after"), Some("200"));
        assert_eq!(header(&r, "x-ratelimit-limit"), Some("10"));
        assert_eq!(header(&r, "x-ratelimit-remaining"), Some("0"));
        assert_eq!(header(&r, "x-ratelimit-reset"), Some("7200"));
    }

    #[test]
    fn messages_are_escaped() {
        let r = forbidden("quote \" and \n newline");
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["message"], "quote \" and \n newline");
    }
}
