//! The audit line: one JSON log line per decision. It names the key only by
//! its `key_id` and 8 hex digits of its digest. The facts only the line needs
//! are gathered only when it is on (`audit_log`), so that the hot path pays
//! nothing for it otherwise.

use crate::config::Source;
use crate::request::endpoints::Class;
use crate::types::Digest;
use crate::verdict::cache::short_hash;
use serde::Serialize;

/// How the verdict was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheState {
    /// No verdict was needed (public path, refused before the key was read).
    #[default]
    None,
    Hit,
    Miss,
    /// Waited for another request's callout for the same key.
    Shared,
    /// An expired verdict served while the key service was unavailable.
    Stale,
}

impl CacheState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Shared => "shared",
            Self::Stale => "stale",
        }
    }
}

/// The facts only the audit line needs.
#[derive(Debug, Default)]
pub struct Audit {
    pub method: String,
    /// The MLflow path (mount stripped), or `<refused>` for an ambiguous one.
    pub path: String,
    /// `allowed`, `public` or the denial's verdict; None: not decided.
    pub verdict: Option<&'static str>,
    pub key_id: Option<String>,
    pub user_id: Option<String>,
}

/// What the request's own state says about the decision.
pub struct Decision<'a> {
    /// The name of the policy that applied.
    pub route: &'a str,
    pub digest: Option<&'a Digest>,
    pub class: Class,
    pub cache: CacheState,
    pub source: Option<Source>,
}

impl Audit {
    /// The line, once the request was decided.
    pub fn line(&self, d: &Decision<'_>) -> Option<String> {
        let line = Line {
            event: "hokusai_auth",
            verdict: self.verdict?,
            route: d.route,
            cache: d.cache.as_str(),
            key: d.digest.map(short_hash),
            source: d.source.map(Source::as_str),
            key_id: self.key_id.as_deref(),
            user_id: self.user_id.as_deref(),
            method: &self.method,
            path: &self.path,
            class: d.class.as_str(),
        };
        serde_json::to_string(&line).ok()
    }
}

/// The line as written: one JSON object.
#[derive(Serialize)]
struct Line<'a> {
    event: &'static str,
    verdict: &'static str,
    route: &'a str,
    cache: &'static str,
    key: Option<String>,
    source: Option<&'static str>,
    key_id: Option<&'a str>,
    user_id: Option<&'a str>,
    method: &'a str,
    path: &'a str,
    class: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision<'a>(route: &'a str, digest: Option<&'a Digest>) -> Decision<'a> {
        Decision {
            route,
            digest,
            class: Class::RegistryWrite,
            cache: CacheState::Shared,
            source: Some(Source::Basic),
        }
    }

    #[test]
    fn an_undecided_request_has_no_line() {
        assert_eq!(Audit::default().line(&decision("default", None)), None);
    }

    #[test]
    fn the_line_names_the_key_by_id_and_short_hash() {
        let a = Audit {
            method: "POST".into(),
            path: "/api/2.0/mlflow/runs/create".into(),
            verdict: Some("allowed"),
            key_id: Some("k_1".into()),
            user_id: None,
        };
        let line = a.line(&decision("ui", Some(&[0xab; 32]))).unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["event"], "hokusai_auth");
        assert_eq!(v["route"], "ui");
        assert_eq!(v["key"], "abababab");
        assert_eq!(v["cache"], "shared");
        assert_eq!(v["source"], "basic");
        assert_eq!(v["class"], "registry-write");
        assert!(v["user_id"].is_null());
    }
}
