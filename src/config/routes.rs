//! Which rule of the plugin configuration a request falls under. A rule
//! selects by Envoy's route name, the request's host and its path prefix
//! (any combination, all given must match); the first rule that matches
//! wins and a request no rule matches gets the default. Envoy cannot hand a
//! wasm filter per-route configuration, so the filter selects it itself.

use super::field_path::{absolute_path, FieldPath};
use crate::tables::memo::Memo;
use serde::Deserialize;
use std::rc::Rc;

/// A rule's `match` in its JSON form.
#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    route_name: Option<String>,
    host: Option<String>,
    path_prefix: Option<Prefixes>,
}

/// One path prefix, or a list of them (any may match).
#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum Prefixes {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    /// `*.example.com`, kept as `.example.com`: any name below it.
    Suffix(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    route_name: Option<String>,
    host: Option<HostPattern>,
    /// Each without a trailing `/`, sorted: a path matches when it is one of
    /// them or lies below one. Empty: any path.
    path_prefixes: Vec<String>,
}

impl Selector {
    pub fn parse(at: FieldPath, raw: RawMatch) -> Result<Selector, String> {
        if raw.route_name.is_none() && raw.host.is_none() && raw.path_prefix.is_none() {
            return Err(at.err(
                "match",
                "needs at least one of route_name, host, path_prefix",
            ));
        }
        if let Some(name) = &raw.route_name {
            if name.is_empty() || name.bytes().any(|b| b < b' ' || b == 0x7f) {
                return Err(at.err("match.route_name", "must be an Envoy route name"));
            }
        }
        let host = raw.host.map(|h| host_pattern(at, &h)).transpose()?;
        Ok(Selector {
            route_name: raw.route_name,
            host,
            path_prefixes: path_prefixes(at, raw.path_prefix)?,
        })
    }

    fn matches_route_and_host(&self, route_name: Option<&str>, host: Option<&str>) -> bool {
        let route_ok = match &self.route_name {
            None => true,
            Some(want) => route_name == Some(want.as_str()),
        };
        let host_ok = match (&self.host, host) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(HostPattern::Exact(want)), Some(h)) => h == want,
            (Some(HostPattern::Suffix(suffix)), Some(h)) => {
                h.len() > suffix.len() && h.ends_with(suffix.as_str())
            }
        };
        route_ok && host_ok
    }

    /// Whole segments only: `/mlflow` matches `/mlflow` and `/mlflow/x`,
    /// never `/mlflowx`.
    fn matches_path(&self, path: &str) -> bool {
        let below = |prefix: &String| match path.strip_prefix(prefix.as_str()) {
            Some(rest) => rest.is_empty() || rest.starts_with('/'),
            None => false,
        };
        self.path_prefixes.is_empty() || self.path_prefixes.iter().any(below)
    }
}

fn path_prefixes(at: FieldPath, raw: Option<Prefixes>) -> Result<Vec<String>, String> {
    let listed = match raw {
        None => return Ok(Vec::new()),
        Some(Prefixes::One(p)) => vec![p],
        Some(Prefixes::Many(list)) => list,
    };
    if listed.is_empty() {
        return Err(at.err("match.path_prefix", "must name at least one prefix"));
    }
    let mut prefixes = Vec::new();
    for p in listed {
        absolute_path(at, "match.path_prefix", &p)?;
        prefixes.push(p.trim_end_matches('/').to_string());
    }
    // Sorted, so that two rules listing the same prefixes are seen as one.
    prefixes.sort();
    prefixes.dedup();
    Ok(prefixes)
}

fn host_pattern(at: FieldPath, raw: &str) -> Result<HostPattern, String> {
    let lower = raw.to_ascii_lowercase();
    let (pattern, name) = match lower.strip_prefix("*.") {
        Some(rest) => (HostPattern::Suffix(format!(".{rest}")), rest.to_string()),
        None => (HostPattern::Exact(lower.clone()), lower.clone()),
    };
    let valid = !name.is_empty()
        && name.len() <= 253
        && name
            .split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    if !valid {
        return Err(at.err(
            "match.host",
            "must be a host name (the port is ignored, leave it out) or *.domain",
        ));
    }
    Ok(pattern)
}

/// The host of an `:authority`, lower-cased and without its port; None when
/// it is malformed (matched as no host) or an IP literal in brackets.
pub fn host_of(authority: &str) -> Option<String> {
    let host = match authority.rsplit_once(':') {
        Some((h, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => h,
        Some(_) => return None,
        None => authority,
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    let valid = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    valid.then(|| host.to_ascii_lowercase())
}

/// The rules' selectors, and per worker which rules a (route name, authority)
/// pair leaves to be told apart by path.
pub struct RouteTable {
    selectors: Vec<Selector>,
    uses_route_name: bool,
    candidates: Memo<Rc<[usize]>>,
}

impl RouteTable {
    pub fn new(selectors: Vec<Selector>) -> Self {
        let uses_route_name = selectors.iter().any(|s| s.route_name.is_some());
        Self {
            selectors,
            uses_route_name,
            candidates: Memo::new(64),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.selectors.is_empty()
    }

    /// Whether selecting needs Envoy's route name (a hostcall).
    pub fn uses_route_name(&self) -> bool {
        self.uses_route_name
    }

    /// The rule that applies, by its position; None: the default.
    pub fn select(&self, route_name: Option<&str>, authority: &str, path: &str) -> Option<usize> {
        if self.selectors.is_empty() {
            return None;
        }
        let key = [route_name.unwrap_or("\0none"), authority];
        let candidates = self.candidates.get_or(&key, || {
            let host = host_of(authority);
            self.selectors
                .iter()
                .enumerate()
                .filter(|(_, s)| s.matches_route_and_host(route_name, host.as_deref()))
                .map(|(i, _)| i)
                .collect()
        });
        candidates
            .iter()
            .copied()
            .find(|&i| self.selectors.get(i).is_some_and(|s| s.matches_path(path)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selector(json: &str) -> Result<Selector, String> {
        let raw: RawMatch = serde_json::from_str(json).unwrap();
        Selector::parse(FieldPath("routes[0]."), raw)
    }

    #[test]
    fn a_selector_needs_something_to_match_and_valid_parts() {
        let e = selector("{}").unwrap_err();
        assert!(e.starts_with("routes[0].match: "), "{e}");
        for (json, field) in [
            (r#"{"host": "a b"}"#, "routes[0].match.host"),
            (r#"{"host": "example.com:8080"}"#, "routes[0].match.host"),
            (r#"{"host": "*."}"#, "routes[0].match.host"),
            (
                r#"{"path_prefix": "mlflow"}"#,
                "routes[0].match.path_prefix",
            ),
            (r#"{"route_name": ""}"#, "routes[0].match.route_name"),
        ] {
            let e = selector(json).unwrap_err();
            assert!(e.starts_with(field), "{json}: {e}");
        }
    }

    #[test]
    fn hosts_match_exactly_or_below_a_wildcard_port_and_case_ignored() {
        assert_eq!(host_of("Example.COM:8080").as_deref(), Some("example.com"));
        assert_eq!(host_of("example.com.").as_deref(), Some("example.com"));
        assert_eq!(host_of("[::1]:80"), None);
        assert_eq!(host_of(""), None);
        assert_eq!(host_of("a b"), None);
        assert_eq!(host_of("host:"), None);
        assert_eq!(host_of("a:b:c"), None);
        let exact = selector(r#"{"host": "Registry.Example.com"}"#).unwrap();
        let wild = selector(r#"{"host": "*.example.com"}"#).unwrap();
        assert!(exact.matches_route_and_host(None, Some("registry.example.com")));
        assert!(!exact.matches_route_and_host(None, Some("x.registry.example.com")));
        assert!(wild.matches_route_and_host(None, Some("staging.example.com")));
        assert!(wild.matches_route_and_host(None, Some("a.b.example.com")));
        assert!(!wild.matches_route_and_host(None, Some("example.com")));
        assert!(!wild.matches_route_and_host(None, Some("badexample.com")));
        assert!(
            !wild.matches_route_and_host(None, None),
            "a malformed host matches no host rule"
        );
    }

    #[test]
    fn a_list_of_prefixes_matches_any_of_them() {
        let s = selector(r#"{"path_prefix": ["/mlflow/api", "/api/mlflow/api/"]}"#).unwrap();
        assert!(s.matches_path("/mlflow/api/2.0/x"));
        assert!(s.matches_path("/api/mlflow/api/2.0/x"));
        assert!(!s.matches_path("/api/mlflow/static-files/x"));
        let same = selector(r#"{"path_prefix": ["/api/mlflow/api", "/mlflow/api"]}"#).unwrap();
        assert_eq!(s, same, "the same prefixes in another order");
        assert!(selector(r#"{"path_prefix": []}"#).is_err());
    }

    #[test]
    fn prefixes_match_whole_segments() {
        let s = selector(r#"{"path_prefix": "/api/mlflow/"}"#).unwrap();
        assert!(s.matches_path("/api/mlflow"));
        assert!(s.matches_path("/api/mlflow/"));
        assert!(s.matches_path("/api/mlflow/static-files/x.js"));
        assert!(!s.matches_path("/api/mlflowx"));
        assert!(!s.matches_path("/api"));
    }

    #[test]
    fn the_first_matching_rule_wins_and_no_match_is_the_default() {
        let t = RouteTable::new(vec![
            selector(r#"{"path_prefix": "/api/mlflow/api"}"#).unwrap(),
            selector(r#"{"path_prefix": "/api/mlflow"}"#).unwrap(),
            selector(r#"{"host": "staging.example.com"}"#).unwrap(),
            selector(r#"{"route_name": "ui", "host": "*.example.com"}"#).unwrap(),
        ]);
        for _ in 0..2 {
            assert_eq!(
                t.select(None, "gw", "/api/mlflow/api/2.0/mlflow/runs/search"),
                Some(0)
            );
            assert_eq!(
                t.select(None, "gw", "/api/mlflow/static-files/a.js"),
                Some(1)
            );
            assert_eq!(
                t.select(None, "staging.example.com:443", "/mlflow/x"),
                Some(2)
            );
            assert_eq!(t.select(Some("ui"), "a.example.com", "/x"), Some(3));
            assert_eq!(t.select(Some("other"), "a.example.com", "/x"), None);
            assert_eq!(t.select(None, "bad host", "/x"), None);
        }
        assert!(t.uses_route_name());
        assert!(RouteTable::new(vec![]).select(None, "h", "/").is_none());
    }
}
