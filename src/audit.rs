//! The audit line: one JSON log line per decision. It names the key only by
//! its `key_id` and 8 hex digits of its digest. Its facts are gathered only
//! when the line is on (`audit_log`), so that the hot path pays nothing for
//! it otherwise.

use crate::config::Source;
use crate::endpoints::Class;
use crate::verdict_cache::{short_hash, Digest};
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
    fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Shared => "shared",
            Self::Stale => "stale",
        }
    }
}

/// What the audit line says about one request.
#[derive(Debug, Default)]
pub struct Audit {
    pub method: String,
    /// The MLflow path (mount stripped), or `<refused>` for an ambiguous one.
    pub path: String,
    /// `allowed`, `public` or the denial's verdict; None: not decided.
    pub verdict: Option<&'static str>,
    pub cache: CacheState,
    pub source: Option<Source>,
    pub key_id: Option<String>,
    pub user_id: Option<String>,
}

impl Audit {
    /// The line, once the request was decided.
    /// `route` names the policy that applied.
    pub fn line(&self, route: &str, digest: Option<&Digest>, class: Class) -> Option<String> {
        let line = Line {
            event: "hokusai_auth",
            verdict: self.verdict?,
            route,
            cache: self.cache.as_str(),
            key: digest.map(short_hash),
            source: self.source.map(Source::as_str),
            key_id: self.key_id.as_deref(),
            user_id: self.user_id.as_deref(),
            method: &self.method,
            path: &self.path,
            class: class.as_str(),
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

    #[test]
    fn an_undecided_request_has_no_line() {
        assert_eq!(Audit::default().line("default", None, Class::Read), None);
    }

    #[test]
    fn the_line_names_the_key_by_id_and_short_hash() {
        let a = Audit {
            method: "POST".into(),
            path: "/api/2.0/mlflow/runs/create".into(),
            verdict: Some("allowed"),
            cache: CacheState::Shared,
            source: Some(Source::Basic),
            key_id: Some("k_1".into()),
            user_id: None,
        };
        let line = a
            .line("ui", Some(&[0xab; 32]), Class::RegistryWrite)
            .unwrap();
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
