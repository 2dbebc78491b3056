//! MLflow endpoint classification: read, write, registry-write or admin.
//!
//! The policy is the table in `src/request/endpoints.txt` (format described in its header),
//! parsed once per VM. Classification runs per request: it neither allocates nor
//! panics, and it compares pre-split pattern segments against the path's segments,
//! looking only at the table lines that can match the path's first segments.
//!
//! Matching rules:
//! - a path's first segment `ajax-api` is matched as `api` (the MLflow UI's form of
//!   the REST API), so the table lists only `/api/...`;
//! - `{}` matches exactly one non-empty segment, a final `/**` one or more remaining
//!   segments whose first is non-empty, any other segment matches literally;
//! - the method matches exactly, `*` matches any; a `HEAD` request that matches no
//!   line is classified like `GET` (Flask serves HEAD with the GET view);
//! - the first matching line in file order wins; no match is [`Class::Write`].

use std::cell::RefCell;
use std::collections::HashSet;
use std::hash::Hasher;

/// What an MLflow endpoint does, for authorization.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Read,
    Write,
    RegistryWrite,
    Admin,
}

impl Class {
    /// The policy table's own spelling, also used in the audit line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::RegistryWrite => "registry-write",
            Self::Admin => "admin",
        }
    }
}

/// Number of leading path segments used to index the table.
const INDEX_DEPTH: usize = 4;

/// Most segments a pattern may have (not counting a final `/**`).
const MAX_SEGS: usize = 24;

#[derive(Debug)]
enum Seg {
    Lit(Box<str>),
    /// `{}`: one non-empty segment.
    Param,
}

#[derive(Debug)]
struct Entry {
    class: Class,
    /// Index into `EndpointTable::methods`; `None` for `*`.
    method: Option<usize>,
    segs: Box<[Seg]>,
    /// Pattern ends with `/**`.
    tail: bool,
    /// Source line, for error messages.
    line: usize,
}

/// The parsed table; built once per VM at configure time.
#[derive(Debug)]
pub struct EndpointTable {
    entries: Vec<Entry>,
    /// The distinct methods named in the table: a request's method is looked up here
    /// once, entries then compare indices.
    methods: Vec<Box<str>>,
    /// `(key, entry indices in file order)`, sorted by key. An entry is here when its
    /// first `INDEX_DEPTH` segments are literal, or when it is entirely literal and
    /// shorter than that (the key then also encodes its length).
    buckets: Vec<(u64, Vec<usize>)>,
    /// Entry indices (file order) of all other entries: checked for every path.
    unindexed: Vec<usize>,
}

/// The segments of a request path body (the text after the leading `/`), with a
/// first segment `ajax-api` reported as `api`.
fn segments(body: &str) -> impl Iterator<Item = &str> {
    body.split('/').enumerate().map(|(i, seg)| {
        if i == 0 && seg == "ajax-api" {
            "api"
        } else {
            seg
        }
    })
}

/// FNV-1a over the segments, with a separator byte that never occurs in UTF-8, and
/// the segment count.
fn index_key<'a>(segs: impl Iterator<Item = &'a str>) -> u64 {
    let mut hash = fnv::FnvHasher::default();
    let mut count: u64 = 0;
    for seg in segs {
        hash.write(seg.as_bytes());
        hash.write_u8(0xff);
        count += 1;
    }
    hash.finish() ^ count.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

fn parse_class(word: &str) -> Option<Class> {
    match word {
        "read" => Some(Class::Read),
        "write" => Some(Class::Write),
        "registry-write" => Some(Class::RegistryWrite),
        "admin" => Some(Class::Admin),
        _ => None,
    }
}

fn parse_method(word: &str) -> Result<Option<Box<str>>, String> {
    if word == "*" {
        return Ok(None);
    }
    if word.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(Some(word.into()))
    } else {
        Err(format!(
            "method `{word}` must be `*` or an upper-case HTTP method"
        ))
    }
}

/// Parses a pattern into (segments, tail).
fn parse_pattern(pattern: &str) -> Result<(Box<[Seg]>, bool), String> {
    let body = pattern
        .strip_prefix('/')
        .ok_or_else(|| format!("pattern `{pattern}` must start with `/`"))?;
    if body == "ajax-api" || body.starts_with("ajax-api/") {
        return Err(format!(
            "pattern `{pattern}`: list the `/api/` form, `/ajax-api/` paths match it"
        ));
    }
    let raw: Vec<&str> = body.split('/').collect();
    let last = raw.len().saturating_sub(1);
    let mut segs = Vec::with_capacity(raw.len());
    let mut tail = false;
    for (i, seg) in raw.iter().enumerate() {
        let is_last = i == last;
        match *seg {
            "**" if is_last => tail = true,
            "**" => {
                return Err(format!(
                    "pattern `{pattern}`: `**` is only allowed as the last segment"
                ))
            }
            "{}" => segs.push(Seg::Param),
            // The only empty segments allowed: `/` itself and a trailing slash.
            "" if is_last => segs.push(Seg::Lit("".into())),
            "" => return Err(format!("pattern `{pattern}` has an empty segment")),
            lit if lit.contains(['{', '}', '*', '?', '#']) || lit.contains(char::is_whitespace) => {
                return Err(format!(
                    "pattern `{pattern}`: segment `{lit}` is neither literal, `{{}}` nor a final `**`"
                ))
            }
            lit => segs.push(Seg::Lit(lit.into())),
        }
    }
    if segs.len() > MAX_SEGS {
        return Err(format!(
            "pattern `{pattern}` has more than {MAX_SEGS} segments"
        ));
    }
    Ok((segs.into_boxed_slice(), tail))
}

/// One `CLASS METHOD PATTERN` line; `methods` collects the distinct methods.
fn parse_line(line: usize, content: &str, methods: &mut Vec<Box<str>>) -> Result<Entry, String> {
    let mut words = content.split_whitespace();
    let (Some(class), Some(method), Some(pattern)) = (words.next(), words.next(), words.next())
    else {
        return Err(format!("expected `CLASS METHOD PATTERN`, got `{content}`"));
    };
    if let Some(extra) = words.next() {
        if !extra.starts_with('#') {
            return Err(format!("unexpected `{extra}` after the pattern"));
        }
    }
    let class = parse_class(class)
        .ok_or_else(|| format!("unknown class `{class}` (read, write, registry-write, admin)"))?;
    let method =
        parse_method(method)?.map(|m| match methods.iter().position(|known| *known == m) {
            Some(idx) => idx,
            None => {
                methods.push(m);
                methods.len() - 1
            }
        });
    let (segs, tail) = parse_pattern(pattern)?;
    Ok(Entry {
        class,
        method,
        segs,
        tail,
        line,
    })
}

/// The entries by index key (sorted), and those that must be checked for every path.
type Index = (Vec<(u64, Vec<usize>)>, Vec<usize>);

fn index(entries: &[Entry]) -> Index {
    let mut buckets: Vec<(u64, Vec<usize>)> = Vec::new();
    let mut unindexed = Vec::new();
    for (idx, entry) in entries.iter().enumerate() {
        match entry.key() {
            None => unindexed.push(idx),
            Some(key) => match buckets.iter_mut().find(|(k, _)| *k == key) {
                Some((_, list)) => list.push(idx),
                None => buckets.push((key, vec![idx])),
            },
        }
    }
    buckets.sort_by_key(|(k, _)| *k);
    (buckets, unindexed)
}

impl Entry {
    /// The index key, or `None` when the entry must be checked for every path.
    fn key(&self) -> Option<u64> {
        fn literal(seg: &Seg) -> Option<&str> {
            match seg {
                Seg::Lit(s) => Some(s),
                Seg::Param => None,
            }
        }
        let leading = self.segs.iter().take(INDEX_DEPTH).map(literal);
        let all_literal = leading.clone().all(|s| s.is_some());
        if !all_literal {
            return None;
        }
        // A literal pattern shorter than INDEX_DEPTH without `/**` matches only paths of
        // exactly its length, whose key then covers all their segments too. With `/**`
        // it matches longer paths, whose keys depend on segments it does not fix.
        if self.segs.len() >= INDEX_DEPTH || !self.tail {
            Some(index_key(leading.flatten()))
        } else {
            None
        }
    }

    /// `method` is the request method's index in `EndpointTable::methods`, `None`
    /// when the table does not name it (then only `*` lines match).
    fn matches(&self, method: Option<usize>, path: &PathSegs<'_>) -> bool {
        if self.method.is_some() && self.method != method {
            return false;
        }
        let n = self.segs.len();
        if self.tail {
            // One or more remaining segments, the first non-empty.
            if path.len <= n || path.get(n).is_empty() {
                return false;
            }
        } else if path.len != n {
            return false;
        }
        // Backwards: routes sharing a prefix differ in their last segments.
        self.segs
            .iter()
            .enumerate()
            .rev()
            .all(|(i, seg)| match seg {
                Seg::Lit(lit) => **lit == *path.get(i),
                Seg::Param => !path.get(i).is_empty(),
            })
    }
}

/// A path split into segments once, on the stack. Holds at most `MAX_SEGS + 1`
/// segments: patterns have at most `MAX_SEGS`, so a longer path only needs to be
/// known as longer.
struct PathSegs<'a> {
    segs: [&'a str; MAX_SEGS + 1],
    /// Number of segments held; `MAX_SEGS + 1` means "at least that many".
    len: usize,
}

impl<'a> PathSegs<'a> {
    fn new(body: &'a str) -> Self {
        let mut segs = [""; MAX_SEGS + 1];
        let mut len = 0;
        for (out, seg) in segs.iter_mut().zip(segments(body)) {
            *out = seg;
            len += 1;
        }
        Self { segs, len }
    }

    /// Segment `i`, or "" past the end (callers check `len` first).
    fn get(&self, i: usize) -> &'a str {
        self.segs.get(i).copied().unwrap_or("")
    }
}

impl EndpointTable {
    /// Parses `endpoints.txt` beside this file (embedded with include_str!).
    pub fn builtin() -> Result<Self, String> {
        Self::parse(include_str!("endpoints.txt"))
    }

    /// Parses a table text; errors name the line number.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut entries: Vec<Entry> = Vec::new();
        let mut methods: Vec<Box<str>> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let content = raw.trim();
            if content.is_empty() || content.starts_with('#') {
                continue;
            }
            let entry = parse_line(line, content, &mut methods)
                .map_err(|e| format!("endpoints table line {line}: {e}"))?;
            if let Some(dup) = entries.iter().find(|e| e.same_rule(&entry)) {
                return Err(format!(
                    "endpoints table line {line}: duplicates line {} (only the first can match)",
                    dup.line
                ));
            }
            entries.push(entry);
        }
        let (buckets, unindexed) = index(&entries);
        Ok(Self {
            entries,
            methods,
            buckets,
            unindexed,
        })
    }

    /// `path` is the MLflow path after the mount prefix was stripped, without query,
    /// already normalized (no `//`, no dot segments), e.g. "/api/2.0/mlflow/runs/search"
    /// or "/ajax-api/2.0/mlflow/runs/search". None: no line matches (the filter
    /// treats the endpoint as a write). Must not allocate; must not panic on any input.
    pub fn find(&self, method: &str, path: &str) -> Option<Class> {
        self.lookup(method, path).or_else(|| {
            if method == "HEAD" {
                self.lookup("GET", path)
            } else {
                None
            }
        })
    }

    /// `find`, an unknown endpoint a write.
    #[cfg(test)]
    pub fn classify(&self, method: &str, path: &str) -> Class {
        self.find(method, path).unwrap_or(Class::Write)
    }

    /// The class of the first matching line, `None` when no line matches.
    fn lookup(&self, method: &str, path: &str) -> Option<Class> {
        self.lookup_entry(method, path)
            .and_then(|idx| self.entries.get(idx))
            .map(|e| e.class)
    }

    /// Index of the first matching line.
    fn lookup_entry(&self, method: &str, path: &str) -> Option<usize> {
        // Defensive: the caller strips the query, but a stray one must not matter.
        let path = path.split('?').next().unwrap_or(path);
        let body = path.strip_prefix('/')?;
        let segs = PathSegs::new(body);
        let method = self.methods.iter().position(|m| **m == *method);
        let key = index_key(segs.segs.iter().take(segs.len.min(INDEX_DEPTH)).copied());
        let bucket: &[usize] = match self.buckets.binary_search_by_key(&key, |(k, _)| *k) {
            Ok(pos) => self
                .buckets
                .get(pos)
                .map_or(&[], |(_, list)| list.as_slice()),
            Err(_) => &[],
        };
        // Merge the two ascending index lists so that file order decides.
        let mut a = bucket.iter().copied().peekable();
        let mut b = self.unindexed.iter().copied().peekable();
        loop {
            let idx = match (a.peek(), b.peek()) {
                (Some(&x), Some(&y)) if x < y => a.next(),
                (Some(_), Some(_)) | (None, Some(_)) => b.next(),
                (Some(_), None) => a.next(),
                (None, None) => None,
            }?;
            if self
                .entries
                .get(idx)
                .is_some_and(|e| e.matches(method, &segs))
            {
                return Some(idx);
            }
        }
    }
}

/// The unknown endpoints a worker has logged: each once (a newer MLflow
/// shows in the log before users meet its 403s), at most `MAX_LOGGED`.
#[derive(Default)]
pub struct UnknownEndpoints {
    logged: RefCell<HashSet<u64>>,
}

const MAX_LOGGED: usize = 256;

impl UnknownEndpoints {
    /// Logs `method path` unless it was logged already or the list is full.
    pub fn note(&self, method: &str, path: &str) {
        let mut h = fnv::FnvHasher::default();
        h.write(method.as_bytes());
        h.write_u8(0);
        h.write(path.as_bytes());
        let Ok(mut logged) = self.logged.try_borrow_mut() else {
            return;
        };
        if logged.len() < MAX_LOGGED && logged.insert(h.finish()) {
            let shown: String = path.chars().take(200).collect();
            log::warn!(
                "hokusai-auth: unknown MLflow endpoint {method} {shown}: treated as a write \
                 (a newer MLflow? src/request/endpoints.txt classes the known ones)"
            );
        }
    }
}

impl Entry {
    fn same_rule(&self, other: &Entry) -> bool {
        self.method == other.method
            && self.tail == other.tail
            && self.segs.len() == other.segs.len()
            && self
                .segs
                .iter()
                .zip(other.segs.iter())
                .all(|(x, y)| match (x, y) {
                    (Seg::Lit(a), Seg::Lit(b)) => a == b,
                    (Seg::Param, Seg::Param) => true,
                    _ => false,
                })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// The route lists of the supported MLflow versions, `(version, text)` sorted by
    /// file name: every `tests/data/mlflow-endpoints-<version>.txt`, as
    /// scripts/mlflow-matrix.sh writes them with scripts/list-mlflow-endpoints.py.
    /// Read when the test runs, so a new version's list is checked as soon as it is
    /// there.
    fn mlflow_route_lists() -> Vec<(String, String)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
        let mut lists = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if !name.starts_with("mlflow-endpoints") {
                continue;
            }
            let version = name
                .strip_prefix("mlflow-endpoints-")
                .and_then(|n| n.strip_suffix(".txt"))
                .unwrap_or_else(|| {
                    panic!("{name}: a route list is mlflow-endpoints-<version>.txt")
                });
            let text = std::fs::read_to_string(&path).unwrap();
            assert_eq!(
                text.lines().next(),
                Some(format!("# mlflow {version}").as_str()),
                "{name}: the first line must name the MLflow version it lists"
            );
            lists.push((version.to_owned(), text));
        }
        lists.sort();
        lists
    }

    fn table() -> EndpointTable {
        EndpointTable::builtin().unwrap()
    }

    #[test]
    fn builtin_table_parses() {
        let t = table();
        assert!(t.entries.len() > 200, "{} entries", t.entries.len());
    }

    #[test]
    fn representative_endpoints() {
        let t = table();
        // `CLASS METHOD PATH`, like the table.
        let cases = "\
            # tracking reads, including POST reads
            read POST /api/2.0/mlflow/experiments/search
            read GET /api/2.0/mlflow/experiments/search
            read GET /api/2.0/mlflow/experiments/get-by-name
            read POST /api/2.0/mlflow/runs/search
            read GET /api/2.0/mlflow/runs/get
            read GET /api/2.0/mlflow/metrics/get-history
            read GET /api/2.0/mlflow/artifacts/list
            read POST /api/2.0/mlflow/logged-models/search
            read GET /api/2.0/mlflow/logged-models/m-123
            read POST /api/3.0/mlflow/traces/search
            read GET /api/3.0/mlflow/traces/tr-1
            read GET /api/3.0/mlflow/traces/get
            read GET /api/2.0/mlflow/traces
            # tracking writes
            write POST /api/2.0/mlflow/runs/create
            write POST /api/2.0/mlflow/runs/log-batch
            write POST /api/2.0/mlflow/experiments/create
            write POST /api/2.0/mlflow/logged-models
            write PATCH /api/2.0/mlflow/logged-models/m-123
            write DELETE /api/2.0/mlflow/logged-models/m-1/tags/k
            write POST /api/3.0/mlflow/traces
            write PATCH /api/3.0/mlflow/traces/tr-1/tags
            write POST /api/3.0/mlflow/traces/tr-1/assessments
            write POST /v1/traces
            write POST /api/2.0/mlflow/artifacts/presigned-upload-url
            # model registry
            registry-write POST /api/2.0/mlflow/registered-models/create
            read GET /api/2.0/mlflow/registered-models/search
            read POST /api/2.0/mlflow/registered-models/get-latest-versions
            read GET /api/2.0/mlflow/model-versions/get
            registry-write POST /api/2.0/mlflow/model-versions/create
            registry-write POST /api/2.0/mlflow/model-versions/transition-stage
            registry-write POST /api/2.0/mlflow/registered-models/alias
            registry-write DELETE /api/2.0/mlflow/registered-models/alias
            read GET /api/2.0/mlflow/registered-models/alias
            registry-write POST /api/2.0/mlflow/webhooks
            read GET /api/2.0/mlflow/webhooks/wh-1
            read GET /api/3.0/mlflow/mcp-servers/io.github.o/s/versions/1
            registry-write POST /api/3.0/mlflow/mcp-servers/io.github.o/s/aliases
            # mlflow-artifacts
            read GET /api/2.0/mlflow-artifacts/artifacts/1/abc/artifacts/model.pkl
            read GET /api/2.0/mlflow-artifacts/artifacts
            write PUT /api/2.0/mlflow-artifacts/artifacts/1/abc/artifacts/model.pkl
            write DELETE /api/2.0/mlflow-artifacts/artifacts/1/x
            write POST /api/2.0/mlflow-artifacts/mpu/create/1/x
            write POST /api/2.0/mlflow-artifacts/mpu/complete/1/x
            write POST /api/2.0/mlflow-artifacts/mpu/abort/1/x
            # admin
            admin POST /api/2.0/mlflow/users/create
            admin PATCH /api/2.0/mlflow/users/update-admin
            admin POST /api/3.0/mlflow/roles/create
            # the auth app decides: a creator shares what it owns
            write POST /api/3.0/mlflow/users/permissions/grant
            write POST /api/3.0/mlflow/users/permissions/revoke
            read GET /api/3.0/mlflow/users/permissions/list
            read GET /api/3.0/mlflow/roles/list
            admin POST /api/3.0/mlflow/gateway/secrets/create
            read GET /api/3.0/mlflow/gateway/secrets/list
            admin POST /api/3.0/mlflow/workspaces
            read GET /api/2.0/mlflow/users/current
            # root paths
            read GET /get-artifact
            read GET /model-versions/get-artifact
            read POST /graphql
            read GET /api/3.0/mlflow/server-info
            read GET /version
            read GET /health
            read GET /
            write POST /gateway/my-endpoint/mlflow/invocations
            write POST /gateway/gemini/v1beta/models/e:generateContent
            # MLflow 3.18.0: the skill registry
            read GET /api/3.0/mlflow/skills
            read GET /api/3.0/mlflow/skills/@org/s/versions/3
            registry-write POST /api/3.0/mlflow/skills/bulk-register
            registry-write DELETE /api/3.0/mlflow/skills/s/tags/a/b
            write POST /api/3.0/mlflow/issues/schedule/state
            # MLflow 3.10.1: per-resource and workspace permissions
            write POST /api/3.0/mlflow/gateway/secrets/permissions/create
            read GET /api/3.0/mlflow/scorers/permissions/get
            read GET /api/3.0/mlflow/workspaces/w/permissions
            write DELETE /api/3.0/mlflow/workspaces/w/permissions
            admin GET /api/3.0/mlflow/workspace-permissions
            # MLflow 2.x only
            read GET /api/2.0/mlflow/traces/tr-1
            write POST /api/2.0/mlflow/traces/tr-1/assessments
            write PATCH /api/2.0/mlflow/traces/tr-1/assessments/a-1
            write POST /api/2.0/mlflow/experiments/permissions/create
            read GET /api/2.0/mlflow/experiments/permissions/get
            write DELETE /api/2.0/mlflow/registered-models/permissions/delete
            read GET /api/2.0/mlflow/registered-models/permissions/get
            # HEAD falls back to GET
            read HEAD /api/2.0/mlflow/runs/get
            read HEAD /api/2.0/mlflow-artifacts/artifacts/1/x
            write HEAD /api/2.0/mlflow/runs/create
        ";
        for case in cases.lines().map(str::trim) {
            if case.is_empty() || case.starts_with('#') {
                continue;
            }
            let mut words = case.split_whitespace();
            let (want, method, path) = (
                parse_class(words.next().unwrap()).unwrap(),
                words.next().unwrap(),
                words.next().unwrap(),
            );
            assert_eq!(t.classify(method, path), want, "{case}");
        }
    }

    #[test]
    fn ajax_api_is_the_api_form() {
        let t = table();
        for (method, path) in [
            ("POST", "/api/2.0/mlflow/experiments/search"),
            ("POST", "/api/2.0/mlflow/runs/create"),
            ("POST", "/api/2.0/mlflow/registered-models/create"),
            ("GET", "/api/2.0/mlflow-artifacts/artifacts/a/b"),
            ("PUT", "/api/2.0/mlflow-artifacts/artifacts/a/b"),
            ("POST", "/api/3.0/mlflow/traces/search"),
            ("POST", "/api/3.0/mlflow/gateway/secrets/create"),
        ] {
            let ajax = path.replacen("/api/", "/ajax-api/", 1);
            assert!(ajax.starts_with("/ajax-api/"), "{ajax}");
            assert_eq!(
                t.classify(method, path),
                t.classify(method, &ajax),
                "{ajax}"
            );
            assert!(t.lookup(method, &ajax).is_some(), "{method} {ajax}");
        }
        // ajax-only UI routes are matched by their `/api/` table line
        assert_eq!(
            t.classify("GET", "/ajax-api/2.0/mlflow/metrics/get-history-bulk"),
            Class::Read
        );
        assert_eq!(
            t.classify("POST", "/ajax-api/2.0/mlflow/upload-artifact"),
            Class::Write
        );
        // only the first segment is mapped
        assert_eq!(t.lookup("GET", "/api/ajax-api/2.0/mlflow/runs/get"), None);
    }

    #[test]
    fn unknown_and_method_mismatch_are_write() {
        let t = table();
        assert_eq!(t.lookup("POST", "/api/2.0/mlflow/no-such/endpoint"), None);
        assert_eq!(
            t.classify("POST", "/api/2.0/mlflow/no-such/endpoint"),
            Class::Write
        );
        assert_eq!(t.classify("GET", "/api/2.0/mlflow/unknown"), Class::Write);
        assert_eq!(t.classify("GET", "/api/9.9/mlflow/runs/get"), Class::Write);
        // method mismatch: experiments/search is listed for GET and POST only
        assert_eq!(
            t.lookup("DELETE", "/api/2.0/mlflow/experiments/search"),
            None
        );
        assert_eq!(
            t.classify("DELETE", "/api/2.0/mlflow/experiments/search"),
            Class::Write
        );
        assert_eq!(t.lookup("GET", "/api/2.0/mlflow/runs/search"), None);
        assert_eq!(
            t.classify("GET", "/api/2.0/mlflow/runs/search"),
            Class::Write
        );
        assert_eq!(t.classify("get", "/api/2.0/mlflow/runs/get"), Class::Write);
        // trailing slash, extra segments, missing `**` remainder
        assert_eq!(t.lookup("GET", "/api/2.0/mlflow/runs/get/"), None);
        assert_eq!(t.lookup("GET", "/api/2.0/mlflow/runs/get/x"), None);
        assert_eq!(t.lookup("PUT", "/api/2.0/mlflow-artifacts/artifacts"), None);
        assert_eq!(
            t.lookup("PUT", "/api/2.0/mlflow-artifacts/artifacts/"),
            None
        );
        // `{}` needs a non-empty segment
        assert_eq!(t.lookup("GET", "/api/2.0/mlflow/logged-models/"), None);
    }

    #[test]
    fn wildcard_and_first_match() {
        let t = EndpointTable::parse(
            "# header\n\
             \n\
             read GET /api/2.0/x/special\n\
             admin * /api/2.0/x/{}\n\
             write PUT /a/**\n\
             read * /a/b/**   # trailing comment\n\
             read GET /a/b/c/d/e\n\
             write GET /{}/b/c/d/e\n",
        )
        .unwrap();
        assert_eq!(t.classify("GET", "/api/2.0/x/special"), Class::Read);
        assert_eq!(t.classify("POST", "/api/2.0/x/special"), Class::Admin);
        assert_eq!(t.classify("PATCH", "/ajax-api/2.0/x/other"), Class::Admin);
        assert_eq!(t.classify("PUT", "/a/b/c"), Class::Write);
        assert_eq!(t.classify("GET", "/a/b/c"), Class::Read);
        assert_eq!(t.classify("GET", "/a/b"), Class::Write);
        // the unindexed `/a/b/**` (line 6) wins over the indexed line 7
        assert_eq!(t.lookup_entry("GET", "/a/b/c/d/e"), Some(3));
        assert_eq!(t.lookup_entry("GET", "/z/b/c/d/e"), Some(5));
    }

    #[test]
    fn parse_errors_name_the_line() {
        let cases: &[(&str, &str)] = &[
            ("read GET /ok\nbogus GET /x\n", "line 2"),
            ("\n\n# c\nread GET\n", "line 4"),
            ("read get /x\n", "line 1"),
            ("read GET x/y\n", "line 1"),
            ("read GET /ok\nread GET /a/**/b\n", "line 2"),
            ("read GET /a//b\n", "line 1"),
            ("read GET /a/{id}\n", "line 1"),
            ("read GET /ajax-api/2.0/mlflow/x\n", "line 1"),
            ("read GET /a extra\n", "line 1"),
            ("read GET /a\nwrite GET /a\n", "line 2"),
        ];
        for &(text, want) in cases {
            let err = EndpointTable::parse(text).unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
        }
        let deep = format!("read GET /x\nread GET {}\n", "/a".repeat(MAX_SEGS + 1));
        assert!(EndpointTable::parse(&deep).unwrap_err().contains("line 2"));
        let deepest = format!("read GET {}/**\n", "/a".repeat(MAX_SEGS));
        let t = EndpointTable::parse(&deepest).unwrap();
        assert_eq!(
            t.lookup("GET", &"/a".repeat(MAX_SEGS + 1)),
            Some(Class::Read)
        );
        assert_eq!(
            t.lookup("GET", &"/a".repeat(MAX_SEGS + 40)),
            Some(Class::Read)
        );
        assert_eq!(t.lookup("GET", &"/a".repeat(MAX_SEGS)), None);
        assert!(EndpointTable::parse("").unwrap().entries.is_empty());
    }

    #[test]
    fn odd_paths_do_not_panic() {
        let t = table();
        let long = "/a".repeat(10_000);
        let long_api = format!("/api/2.0/mlflow-artifacts/artifacts{}", "/x".repeat(5_000));
        for path in [
            "",
            "/",
            "//",
            "///",
            "?",
            "/?x=1",
            "api/2.0/mlflow/runs/get",
            "/ajax-api",
            "/ajax-api/",
            "/api/2.0/mlflow/runs/get?x=/y",
            "/api/2.0/mlflow/ré/∑",
            "/api/2.0/mlflow/\u{0}/\u{ffff}",
            "/日本語/パス",
            long.as_str(),
            long_api.as_str(),
        ] {
            for method in ["GET", "POST", "", "é", "*"] {
                let _ = t.classify(method, path);
            }
        }
        assert_eq!(t.classify("GET", ""), Class::Write);
        assert_eq!(t.classify("GET", "//"), Class::Write);
        assert_eq!(t.classify("GET", &long), Class::Write);
        assert_eq!(t.classify("GET", &long_api), Class::Read);
        assert_eq!(t.classify("PUT", &long_api), Class::Write);
        assert_eq!(
            t.classify("GET", "/api/2.0/mlflow/runs/get?x=/y"),
            Class::Read
        );
    }

    /// Turns a route from the list into a concrete path: `<path:x>` → `a/b`, `<x>` → `x`.
    fn sample_path(route: &str) -> String {
        let mut out = String::new();
        let mut rest = route;
        while let Some(start) = rest.find('<') {
            out.push_str(&rest[..start]);
            let end = rest[start..].find('>').map(|e| start + e).unwrap();
            let param = &rest[start + 1..end];
            out.push_str(if param.starts_with("path:") {
                "a/b"
            } else {
                "x"
            });
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        out
    }

    /// Drift check: every route of every supported MLflow version must be classified
    /// by an explicit table line, and every table line must be the first match of some
    /// route of some supported version. For a new MLflow version, write its list with
    /// scripts/mlflow-matrix.sh (or scripts/list-mlflow-endpoints.py) and classify
    /// what this test reports; scripts/mlflow-matrix.sh reads the
    /// `mlflow <version>: <n> routes without a line` lines.
    #[test]
    fn every_mlflow_route_is_in_the_table() {
        let t = table();
        let lists = mlflow_route_lists();
        let mut used = vec![false; t.entries.len()];
        let mut report = Vec::new();
        for (version, text) in &lists {
            let mut missing = Vec::new();
            let mut routes = 0;
            for line in text.lines() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let (method, route) = line.split_once(' ').unwrap();
                let path = sample_path(route.trim());
                routes += 1;
                match t.lookup_entry(method, &path) {
                    Some(idx) => used[idx] = true,
                    None => missing.push(format!("  {method} {route}")),
                }
            }
            assert!(
                routes > 100,
                "mlflow {version}: route list too short: {routes}"
            );
            if !missing.is_empty() {
                report.push(format!(
                    "mlflow {version}: {} routes without a line in src/request/endpoints.txt \
                     (they would be `write`):\n{}",
                    missing.len(),
                    missing.join("\n")
                ));
            }
        }
        assert!(report.is_empty(), "\n{}", report.join("\n"));
        let unused: Vec<String> = t
            .entries
            .iter()
            .zip(&used)
            .filter(|(_, u)| !**u)
            .map(|(e, _)| format!("line {}", e.line))
            .collect();
        assert!(
            unused.is_empty(),
            "src/request/endpoints.txt lines that are the first match of no route of any \
             supported MLflow version (tests/data/mlflow-endpoints-*.txt; stale or shadowed): {}",
            unused.join(", ")
        );
    }

    /// The supported versions: the pinned MLflow (tests/requirements.txt), whose
    /// list the pin change must bring along, and at least one 2.x.
    #[test]
    fn the_supported_mlflow_versions_have_route_lists() {
        let versions: Vec<String> = mlflow_route_lists().into_iter().map(|(v, _)| v).collect();
        let requirements = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/requirements.txt"),
        )
        .unwrap();
        let pinned = requirements
            .lines()
            .find_map(|l| l.trim().strip_prefix("mlflow[auth]=="))
            .expect("tests/requirements.txt pins mlflow[auth]");
        assert!(
            versions.iter().any(|v| v == pinned),
            "no tests/data/mlflow-endpoints-{pinned}.txt for the pinned MLflow {pinned}: {versions:?}"
        );
        assert!(
            versions.iter().any(|v| v.starts_with("2.")),
            "no MLflow 2.x route list: {versions:?}"
        );
    }

    #[test]
    fn sample_paths() {
        assert_eq!(sample_path("/a/<x>/b"), "/a/x/b");
        assert_eq!(sample_path("/a/<path:p>"), "/a/a/b");
        assert_eq!(sample_path("/m/<e>:gen"), "/m/x:gen");
    }
}
