//! Every refusal the filter makes, as one type, and the one place that turns
//! a refusal into the client's reply, the stat it counts in and the verdict
//! the audit line shows.

use crate::config::Policy;
use crate::host::Host;
use crate::observability::metrics::Counter;
use crate::outcome::reply::{window_headers, MARKER};
use crate::request::credential::CredentialError;
use crate::types::Reply;
use crate::types::Window;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// A path that different servers could read differently.
    AmbiguousPath,
    /// No usable key in the request: nothing was asked of the key service.
    /// `challenge` is the route's `WWW-Authenticate` value.
    Credential {
        error: CredentialError,
        challenge: String,
    },
    /// The key service's 401: invalid, expired or registered elsewhere.
    InvalidKey {
        service_id: String,
        challenge: String,
    },
    /// The key service's 429.
    AuthRateLimited,
    /// The key service could not give a verdict.
    Unavailable,
    /// The plugin configuration never loaded.
    NotConfigured,
    /// A valid key without the scope the endpoint needs; the message says which.
    Forbidden(String),
    /// This filter's own per-key limit.
    RateLimited { window: Window, now_s: u64 },
    /// The rate limit service could not count the request, and the route
    /// says to refuse it then (`failure_mode: deny`).
    LimitUnavailable,
}

impl Denial {
    pub fn credential(error: CredentialError, policy: &Policy) -> Denial {
        Denial::Credential {
            error,
            challenge: policy.challenge.header_value(),
        }
    }

    pub fn invalid_key(policy: &Policy) -> Denial {
        Denial::InvalidKey {
            service_id: policy.auth.service_id.clone(),
            challenge: policy.challenge.header_value(),
        }
    }

    /// Sends the reply and counts the refusal.
    pub fn send<H: Host>(&self, host: &H) {
        host.count(self.counter());
        host.send_reply(&self.reply());
    }

    pub fn counter(&self) -> Counter {
        match self {
            Self::AmbiguousPath => Counter::DeniedBadRequest,
            Self::Credential { .. } => Counter::DeniedUnauthenticated,
            Self::InvalidKey { .. } => Counter::DeniedInvalidKey,
            Self::AuthRateLimited => Counter::DeniedAuthRateLimited,
            Self::Unavailable | Self::NotConfigured | Self::LimitUnavailable => {
                Counter::Unavailable
            }
            Self::Forbidden(_) => Counter::DeniedForbidden,
            Self::RateLimited { .. } => Counter::DeniedRateLimited,
        }
    }

    /// The audit line's verdict.
    pub fn verdict(&self) -> &'static str {
        match self {
            Self::AmbiguousPath => "bad_path",
            Self::Credential { error, .. } => error.reason(),
            Self::InvalidKey { .. } => "invalid_key",
            Self::AuthRateLimited => "auth_rate_limited",
            Self::Unavailable | Self::NotConfigured => "unavailable",
            Self::Forbidden(_) => "forbidden",
            Self::RateLimited { .. } => "rate_limited",
            Self::LimitUnavailable => "rate_limit_unavailable",
        }
    }

    /// The local reply, as the MLflow client shows it, marked as the filter's.
    pub fn reply(&self) -> Reply {
        let (status, code) = self.status();
        let mut headers = self.headers();
        headers.push((MARKER, self.verdict().into()));
        Reply::mlflow_error(status, code, &self.message(), headers)
    }

    fn status(&self) -> (u32, &'static str) {
        match self {
            Self::AmbiguousPath => (400, "INVALID_PARAMETER_VALUE"),
            Self::Credential { .. } | Self::InvalidKey { .. } => (401, "UNAUTHENTICATED"),
            Self::Forbidden(_) => (403, "PERMISSION_DENIED"),
            Self::AuthRateLimited | Self::RateLimited { .. } => (429, "RESOURCE_EXHAUSTED"),
            Self::Unavailable | Self::NotConfigured | Self::LimitUnavailable => {
                (503, "TEMPORARILY_UNAVAILABLE")
            }
        }
    }

    fn message(&self) -> String {
        match self {
            Self::AmbiguousPath => "the request path is ambiguous (dot segments, doubled or encoded slashes, ';' or encoded unreserved characters)".into(),
            Self::Credential { error, .. } => error.message().into(),
            Self::InvalidKey { service_id, .. } => format!(
                "the API key is invalid, expired, or not registered for service '{service_id}'"
            ),
            Self::AuthRateLimited => {
                "the key service is rate-limiting this API key; retry later".into()
            }
            Self::Unavailable => "the Hokusai key service is unavailable; retry shortly".into(),
            Self::NotConfigured => "the authentication filter is not configured".into(),
            Self::LimitUnavailable => {
                "the rate limit service is unavailable; retry shortly".into()
            }
            Self::Forbidden(why) => why.clone(),
            Self::RateLimited { window, .. } => format!(
                "rate limit of {} requests per hour exceeded for this API key",
                window.limit
            ),
        }
    }

    /// What the client should do next: authenticate, or retry when.
    fn headers(&self) -> Vec<(&'static str, String)> {
        match self {
            Self::Credential { challenge, .. } | Self::InvalidKey { challenge, .. } => {
                vec![("www-authenticate", challenge.clone())]
            }
            Self::AuthRateLimited => vec![("retry-after", "60".into())],
            Self::Unavailable | Self::NotConfigured | Self::LimitUnavailable => {
                vec![("retry-after", "1".into())]
            }
            Self::RateLimited { window, now_s } => {
                let mut h = window_headers(window);
                h.push(("retry-after", window.retry_after(*now_s).to_string()));
                h
            }
            Self::AmbiguousPath | Self::Forbidden(_) => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        let json = br#"{"auth": {"cluster": "c", "service_id": "platform"}}"#;
        crate::config::Config::parse(json).unwrap().policy
    }

    fn header<'r>(r: &'r Reply, n: &str) -> Option<&'r str> {
        r.headers
            .iter()
            .find(|(k, _)| *k == n)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn bodies_are_mlflow_errors() {
        for (d, status, code) in [
            (Denial::AmbiguousPath, 400, "INVALID_PARAMETER_VALUE"),
            (
                Denial::credential(CredentialError::Missing, &policy()),
                401,
                "UNAUTHENTICATED",
            ),
            (Denial::invalid_key(&policy()), 401, "UNAUTHENTICATED"),
            (Denial::Forbidden("f".into()), 403, "PERMISSION_DENIED"),
            (Denial::AuthRateLimited, 429, "RESOURCE_EXHAUSTED"),
            (Denial::Unavailable, 503, "TEMPORARILY_UNAVAILABLE"),
            (Denial::NotConfigured, 503, "TEMPORARILY_UNAVAILABLE"),
            (Denial::LimitUnavailable, 503, "TEMPORARILY_UNAVAILABLE"),
        ] {
            let r = d.reply();
            assert_eq!(r.status, status);
            assert_eq!(header(&r, "content-type"), Some("application/json"));
            let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
            assert_eq!(v["error_code"], code);
            assert!(v["message"].is_string());
            assert!(!d.verdict().is_empty() && !d.counter().name().is_empty());
            assert_eq!(
                header(&r, MARKER),
                Some(d.verdict()),
                "marked as the filter's"
            );
        }
    }

    #[test]
    fn headers_tell_the_client_what_to_do() {
        let missing = Denial::credential(CredentialError::Missing, &policy()).reply();
        assert_eq!(
            header(&missing, "www-authenticate"),
            Some("Bearer realm=\"hokusai\"")
        );
        assert_eq!(
            header(&Denial::AuthRateLimited.reply(), "retry-after"),
            Some("60")
        );
        assert_eq!(
            header(&Denial::Unavailable.reply(), "retry-after"),
            Some("1")
        );
        let window = Window {
            limit: 10,
            remaining: 0,
            reset_at: 7200,
            allowed: false,
        };
        let r = Denial::RateLimited {
            window,
            now_s: 7000,
        }
        .reply();
        assert_eq!(header(&r, "retry-after"), Some("200"));
        assert_eq!(header(&r, "x-ratelimit-limit"), Some("10"));
        assert_eq!(header(&r, "x-ratelimit-remaining"), Some("0"));
        assert_eq!(header(&r, "x-ratelimit-reset"), Some("7200"));
    }

    #[test]
    fn an_invalid_key_is_named_by_the_configured_service_only() {
        let r = Denial::invalid_key(&policy()).reply();
        assert!(r.body.contains("not registered for service 'platform'"));
    }
}
