//! The request path: refusing ambiguous spellings, stripping the MLflow mount
//! prefix and the optional `api/` → `ajax-api/` mapping. (The key parameter
//! leaves the query in `credential`.)

/// Splits a `:path` into path and query (without the `?`).
pub fn split(raw: &str) -> (&str, Option<&str>) {
    match raw.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (raw, None),
    }
}

/// Refuses paths that different servers could read differently, so that the
/// path the filter authorises is the path the upstream serves: dot segments,
/// doubled slashes, `;` parameters, backslashes, fragments, control or
/// non-ASCII bytes, and percent-encoded slashes, backslashes, controls or
/// unreserved characters (which no honest client encodes).
pub fn is_unambiguous(path: &str) -> bool {
    let b = path.as_bytes();
    if b.first() != Some(&b'/') {
        return false;
    }
    // One pass: every request's path goes through here.
    let mut segment = 1;
    let mut i = 1;
    loop {
        let c = b.get(i).copied();
        if matches!(c, None | Some(b'/')) {
            let empty_inside = c.is_some() && segment == i;
            if empty_inside || matches!(b.get(segment..i), Some(b".") | Some(b"..")) {
                return false;
            }
            match c {
                None => return true,
                Some(_) => segment = i + 1,
            }
            i += 1;
            continue;
        }
        match c.unwrap_or(0) {
            b'%' if !is_harmless_escape(b.get(i + 1), b.get(i + 2)) => return false,
            b'%' => i += 3,
            b';' | b'\\' | b'#' => return false,
            c if c <= b' ' || c >= 0x7f => return false,
            _ => i += 1,
        }
    }
}

/// A percent escape that no server reads as a separator or a dot: not an
/// unreserved character, slash, backslash or control.
fn is_harmless_escape(hi: Option<&u8>, lo: Option<&u8>) -> bool {
    let hex = |h: Option<&u8>| h.and_then(|h| (*h as char).to_digit(16));
    let (Some(hi), Some(lo)) = (hex(hi), hex(lo)) else {
        return false;
    };
    let d = (hi * 16 + lo) as u8;
    let unreserved = d.is_ascii_alphanumeric() || matches!(d, b'-' | b'.' | b'_' | b'~');
    !(unreserved || d == b'/' || d == b'\\' || !(0x20..0x7f).contains(&d))
}

/// The MLflow path with the longest matching mount prefix removed
/// (`/api/mlflow/api/2.0/x` → `/api/2.0/x`, `/api/mlflow` → `/`).
pub fn strip_mount<'p>(path: &'p str, mounts: &[String]) -> &'p str {
    for m in mounts {
        if let Some(rest) = path.strip_prefix(m.as_str()) {
            if rest.is_empty() {
                return "/";
            }
            if rest.starts_with('/') {
                return rest;
            }
        }
    }
    path
}

/// Maps the REST API to the UI's ajax-api for servers that only expose that.
pub fn ajax_map(path: &str) -> Option<String> {
    path.strip_prefix("/api/")
        .filter(|rest| rest.starts_with("2.0/") || rest.starts_with("3.0/"))
        .map(|rest| format!("/ajax-api/{rest}"))
}

/// Joins a path and an optional (possibly empty) query into a `:path`.
pub fn join(path: &str, query: Option<&str>) -> String {
    match query {
        Some(q) if !q.is_empty() => {
            let mut joined = String::with_capacity(path.len() + 1 + q.len());
            joined.push_str(path);
            joined.push('?');
            joined.push_str(q);
            joined
        }
        _ => path.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `is_unambiguous` as first written (three passes), the reference
    /// for the one-pass version.
    fn reference(path: &str) -> bool {
        let b = path.as_bytes();
        if b.first() != Some(&b'/') || path.contains("//") {
            return false;
        }
        if path.split('/').any(|seg| seg == "." || seg == "..") {
            return false;
        }
        let mut i = 0;
        while let Some(&c) = b.get(i) {
            match c {
                b'%' if !is_harmless_escape(b.get(i + 1), b.get(i + 2)) => return false,
                b'%' => i += 3,
                b';' | b'\\' | b'#' => return false,
                c if c <= b' ' || c >= 0x7f => return false,
                _ => i += 1,
            }
        }
        true
    }

    #[test]
    fn the_one_pass_check_agrees_with_the_reference_on_every_short_path() {
        let alphabet = ['/', '.', '%', '2', 'e', 'F', 'a', ';', ' '];
        let mut paths = vec![String::new()];
        for _ in 0..6 {
            let longer: Vec<String> = paths
                .iter()
                .flat_map(|p| alphabet.iter().map(move |c| format!("{p}{c}")))
                .collect();
            for p in paths.iter().chain(&longer) {
                assert_eq!(is_unambiguous(p), reference(p), "{p:?}");
            }
            paths = longer;
        }
    }

    fn mounts() -> Vec<String> {
        vec!["/api/mlflow".into(), "/mlflow".into()]
    }

    #[test]
    fn split_keeps_everything_after_the_first_question_mark() {
        assert_eq!(split("/a?b=1?c"), ("/a", Some("b=1?c")));
        assert_eq!(split("/a"), ("/a", None));
        assert_eq!(split("/a?"), ("/a", Some("")));
    }

    #[test]
    fn ordinary_paths_are_unambiguous() {
        for p in [
            "/",
            "/api/mlflow/api/2.0/mlflow/runs/search",
            "/api/2.0/mlflow-artifacts/artifacts/1/abc/artifacts/my%20model/MLmodel",
            "/api/2.0/mlflow/x%3Ay",
            "/a.b/c..d/.e",
        ] {
            assert!(is_unambiguous(p), "{p}");
        }
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        for p in [
            "",
            "api/mlflow",
            "http://h/api/mlflow",
            "//api/mlflow",
            "/api//mlflow",
            "/api/mlflow/../x",
            "/api/mlflow/./x",
            "/api/mlflow/..",
            "/api/mlflow/%2e%2e/x",
            "/api/mlflow%2Fapi",
            "/api/mlflow%2fapi",
            "/api/mlflow%5capi",
            "/api/mlflow\\api",
            "/api/mlflow;x=1/api",
            "/api/%6Dlflow/api",
            "/api/mlflow/%00",
            "/api/mlflow/%",
            "/api/mlflow/%4",
            "/api/mlflow/%zz",
            "/api/mlflow/a b",
            "/api/mlflow/ünï",
            "/api/mlflow#frag",
        ] {
            assert!(!is_unambiguous(p), "{p}");
        }
    }

    #[test]
    fn mounts_strip_only_whole_segments() {
        let m = mounts();
        assert_eq!(
            strip_mount("/api/mlflow/api/2.0/mlflow/runs/get", &m),
            "/api/2.0/mlflow/runs/get"
        );
        assert_eq!(strip_mount("/mlflow/api/2.0/x", &m), "/api/2.0/x");
        assert_eq!(strip_mount("/api/mlflow", &m), "/");
        assert_eq!(strip_mount("/api/mlflowx/y", &m), "/api/mlflowx/y");
        assert_eq!(strip_mount("/api/2.0/x", &m), "/api/2.0/x");
        assert_eq!(
            strip_mount("/API/MLFLOW/api/2.0/x", &m),
            "/API/MLFLOW/api/2.0/x"
        );
    }

    #[test]
    fn ajax_mapping_touches_only_versioned_rest_paths() {
        assert_eq!(
            ajax_map("/api/2.0/mlflow/runs/get").as_deref(),
            Some("/ajax-api/2.0/mlflow/runs/get")
        );
        assert_eq!(
            ajax_map("/api/3.0/mlflow/traces").as_deref(),
            Some("/ajax-api/3.0/mlflow/traces")
        );
        assert_eq!(ajax_map("/health"), None);
        assert_eq!(ajax_map("/api/health"), None);
    }

    #[test]
    fn join_drops_an_empty_query() {
        assert_eq!(join("/a", Some("b=1")), "/a?b=1");
        assert_eq!(join("/a", Some("")), "/a");
        assert_eq!(join("/a", None), "/a");
    }
}
