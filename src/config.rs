//! Plugin configuration: the JSON Envoy hands to `on_configure`, checked
//! once so that the request path never meets a bad value.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// How the key travels to the key service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyForm {
    /// `Authorization: Bearer <key>` (the current contract).
    Header,
    /// `{"api_key": ...}` in the JSON body (the older form).
    Body,
}

impl KeyForm {
    /// The configuration's own spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Header => "header",
            Self::Body => "body",
        }
    }
}

/// Places a client may put its key. Which of them a request may use is
/// configured; which one wins when several carry the same key is fixed by
/// the contract (`credential::extract`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Bearer,
    ApiKey,
    XApiKey,
    Query,
    Basic,
}

impl Source {
    /// The configuration's own spelling, also used in the audit line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bearer => "bearer",
            Self::ApiKey => "api_key",
            Self::XApiKey => "x_api_key",
            Self::Query => "query",
            Self::Basic => "basic",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthService {
    pub cluster: String,
    pub authority: String,
    pub path: String,
    pub service_id: String,
    pub timeout: Duration,
    pub key_form: KeyForm,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    pub slots: u32,
    pub ttl_ms: u64,
    pub negative_ttl_ms: u64,
    pub stale_if_error_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeConfig {
    /// Empty means any valid key may read.
    pub read: Vec<String>,
    pub write: Vec<String>,
    pub admin: Vec<String>,
    pub registry_writes_admin_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitConfig {
    pub default_per_hour: u64,
    pub slots: u32,
}

/// The validated configuration the filter runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub auth: AuthService,
    pub sources: Vec<Source>,
    pub max_key_length: usize,
    pub cache: CacheConfig,
    pub mount_prefixes: Vec<String>,
    pub ajax_api: bool,
    /// Exact request path → upstream path, for requests that need no key.
    pub public_paths: Vec<(String, String)>,
    /// Lower-cased header names.
    pub user_id_header: String,
    pub key_id_header: String,
    pub scopes: ScopeConfig,
    pub rate_limit: Option<RateLimitConfig>,
    pub audit_log: bool,
}

// --- the JSON form -------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    auth: RawAuth,
    #[serde(default)]
    credentials: RawCredentials,
    #[serde(default)]
    cache: RawCache,
    #[serde(default)]
    mlflow: RawMlflow,
    public_paths: Option<BTreeMap<String, String>>,
    #[serde(default)]
    identity_headers: RawIdentityHeaders,
    #[serde(default)]
    scopes: RawScopes,
    #[serde(default)]
    rate_limit: RawRateLimit,
    #[serde(default = "yes")]
    audit_log: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    cluster: String,
    authority: Option<String>,
    #[serde(default = "default_validate_path")]
    path: String,
    service_id: String,
    #[serde(default = "default_timeout_ms")]
    timeout_ms: u64,
    #[serde(default = "default_key_form")]
    key_form: KeyForm,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCredentials {
    #[serde(default = "default_sources")]
    sources: Vec<Source>,
    #[serde(default = "default_max_key_length")]
    max_key_length: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCache {
    #[serde(default = "default_slots")]
    slots: u32,
    #[serde(default = "default_ttl")]
    ttl_seconds: u64,
    #[serde(default = "default_negative_ttl")]
    negative_ttl_seconds: u64,
    #[serde(default)]
    stale_if_error_seconds: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMlflow {
    #[serde(default = "default_mounts")]
    mount_prefixes: Vec<String>,
    #[serde(default)]
    ajax_api: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentityHeaders {
    #[serde(default = "default_user_header")]
    user_id: String,
    #[serde(default = "default_key_header")]
    key_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScopes {
    #[serde(default)]
    read: Vec<String>,
    #[serde(default = "default_write_scopes")]
    write: Vec<String>,
    #[serde(default = "default_admin_scopes")]
    admin: Vec<String>,
    #[serde(default)]
    registry_writes_admin_only: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default = "default_rate_limit")]
    default_per_hour: u64,
    #[serde(default = "default_slots")]
    slots: u32,
}

fn yes() -> bool {
    true
}
fn default_validate_path() -> String {
    "/api/v1/keys/validate".into()
}
fn default_timeout_ms() -> u64 {
    1000
}
fn default_key_form() -> KeyForm {
    KeyForm::Header
}
fn default_sources() -> Vec<Source> {
    vec![
        Source::Bearer,
        Source::ApiKey,
        Source::XApiKey,
        Source::Query,
        Source::Basic,
    ]
}
fn default_max_key_length() -> usize {
    256
}
fn default_slots() -> u32 {
    4096
}
fn default_ttl() -> u64 {
    60
}
fn default_negative_ttl() -> u64 {
    10
}
fn default_mounts() -> Vec<String> {
    vec!["/api/mlflow".into(), "/mlflow".into()]
}
fn default_user_header() -> String {
    "x-hokusai-user-id".into()
}
fn default_key_header() -> String {
    "x-hokusai-api-key-id".into()
}
fn default_write_scopes() -> Vec<String> {
    [
        "mlflow:write",
        "model:write",
        "mlflow:admin",
        "admin",
        "write",
        "full_access",
        "mlflow:access",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}
fn default_admin_scopes() -> Vec<String> {
    ["mlflow:admin", "admin"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}
fn default_rate_limit() -> u64 {
    1000
}
fn default_public_paths() -> Vec<(String, String)> {
    [
        ("/health", "/health"),
        ("/api/health/mlflow", "/health"),
        ("/api/mlflow/health/mlflow", "/health"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect()
}

impl Default for RawCredentials {
    fn default() -> Self {
        Self {
            sources: default_sources(),
            max_key_length: default_max_key_length(),
        }
    }
}
impl Default for RawCache {
    fn default() -> Self {
        Self {
            slots: default_slots(),
            ttl_seconds: default_ttl(),
            negative_ttl_seconds: default_negative_ttl(),
            stale_if_error_seconds: 0,
        }
    }
}
impl Default for RawMlflow {
    fn default() -> Self {
        Self {
            mount_prefixes: default_mounts(),
            ajax_api: false,
        }
    }
}
impl Default for RawIdentityHeaders {
    fn default() -> Self {
        Self {
            user_id: default_user_header(),
            key_id: default_key_header(),
        }
    }
}
impl Default for RawScopes {
    fn default() -> Self {
        Self {
            read: Vec::new(),
            write: default_write_scopes(),
            admin: default_admin_scopes(),
            registry_writes_admin_only: false,
        }
    }
}
impl Default for RawRateLimit {
    fn default() -> Self {
        Self {
            enabled: true,
            default_per_hour: default_rate_limit(),
            slots: default_slots(),
        }
    }
}

// --- checks ----------------------------------------------------------------

fn err(field: &str, why: &str) -> String {
    format!("{field}: {why}")
}

fn nonempty(field: &str, v: &str) -> Result<(), String> {
    if v.trim().is_empty() {
        return Err(err(field, "must not be empty"));
    }
    Ok(())
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn header_name(field: &str, v: &str) -> Result<String, String> {
    if v.is_empty() || !v.bytes().all(is_token_char) {
        return Err(err(field, "must be a valid HTTP header name"));
    }
    Ok(v.to_ascii_lowercase())
}

fn absolute_path(field: &str, v: &str) -> Result<(), String> {
    if !v.starts_with('/') || v.contains(['?', '#']) || v.bytes().any(|b| b <= b' ' || b >= 0x7f) {
        return Err(err(
            field,
            "must be an absolute path without query, spaces or control characters",
        ));
    }
    Ok(())
}

fn range(field: &str, v: u64, lo: u64, hi: u64) -> Result<(), String> {
    if v < lo || v > hi {
        return Err(err(field, &format!("must be between {lo} and {hi}")));
    }
    Ok(())
}

fn scope_list(field: &str, v: Vec<String>) -> Result<Vec<String>, String> {
    if v.iter().any(|s| s.trim().is_empty()) {
        return Err(err(field, "scopes must not be empty strings"));
    }
    Ok(v)
}

impl Config {
    /// Parses and checks the plugin configuration; the error names the field.
    pub fn parse(bytes: &[u8]) -> Result<Config, String> {
        let raw: RawConfig =
            serde_json::from_slice(bytes).map_err(|e| format!("invalid configuration: {e}"))?;
        // Checked in the order of the sections, so the first bad one is named.
        let auth = auth_service(raw.auth)?;
        let (sources, max_key_length) = credentials(raw.credentials)?;
        let cache = cache(raw.cache)?;
        let mount_prefixes = mount_prefixes(raw.mlflow.mount_prefixes)?;
        let public_paths = public_paths(raw.public_paths)?;
        let (user_id_header, key_id_header) = identity_headers(raw.identity_headers)?;
        Ok(Config {
            auth,
            sources,
            max_key_length,
            cache,
            mount_prefixes,
            ajax_api: raw.mlflow.ajax_api,
            public_paths,
            user_id_header,
            key_id_header,
            scopes: scopes(raw.scopes)?,
            rate_limit: rate_limit(raw.rate_limit)?,
            audit_log: raw.audit_log,
        })
    }

    pub fn accepts(&self, source: Source) -> bool {
        self.sources.contains(&source)
    }
}

fn auth_service(a: RawAuth) -> Result<AuthService, String> {
    nonempty("auth.cluster", &a.cluster)?;
    nonempty("auth.service_id", &a.service_id)?;
    if a.service_id.bytes().any(|b| b < b' ' || b == 0x7f) {
        return Err(err(
            "auth.service_id",
            "must not contain control characters",
        ));
    }
    absolute_path("auth.path", &a.path)?;
    range("auth.timeout_ms", a.timeout_ms, 10, 60_000)?;
    let authority = a.authority.unwrap_or_else(|| a.cluster.clone());
    if authority.is_empty()
        || authority
            .bytes()
            .any(|b| b <= b' ' || b >= 0x7f || b == b'/')
    {
        return Err(err("auth.authority", "must be a host[:port]"));
    }
    Ok(AuthService {
        cluster: a.cluster,
        authority,
        path: a.path,
        service_id: a.service_id,
        timeout: Duration::from_millis(a.timeout_ms),
        key_form: a.key_form,
    })
}

fn credentials(c: RawCredentials) -> Result<(Vec<Source>, usize), String> {
    if c.sources.is_empty() {
        return Err(err("credentials.sources", "must name at least one source"));
    }
    let mut sources = Vec::new();
    for s in c.sources {
        if sources.contains(&s) {
            return Err(err("credentials.sources", "lists a source twice"));
        }
        sources.push(s);
    }
    range(
        "credentials.max_key_length",
        c.max_key_length as u64,
        8,
        4096,
    )?;
    Ok((sources, c.max_key_length))
}

fn cache(k: RawCache) -> Result<CacheConfig, String> {
    range("cache.slots", k.slots.into(), 16, 1 << 20)?;
    range("cache.ttl_seconds", k.ttl_seconds, 1, 86_400)?;
    range(
        "cache.negative_ttl_seconds",
        k.negative_ttl_seconds,
        0,
        86_400,
    )?;
    range(
        "cache.stale_if_error_seconds",
        k.stale_if_error_seconds,
        0,
        86_400,
    )?;
    Ok(CacheConfig {
        slots: k.slots,
        ttl_ms: k.ttl_seconds * 1000,
        negative_ttl_ms: k.negative_ttl_seconds * 1000,
        stale_if_error_ms: k.stale_if_error_seconds * 1000,
    })
}

fn mount_prefixes(raw: Vec<String>) -> Result<Vec<String>, String> {
    let mut mounts = Vec::new();
    for p in raw {
        absolute_path("mlflow.mount_prefixes", &p)?;
        let p = p.trim_end_matches('/').to_string();
        if p.is_empty() {
            return Err(err("mlflow.mount_prefixes", "\"/\" is not a mount prefix"));
        }
        mounts.push(p);
    }
    // Longest first, so that nested mounts strip the most specific one.
    mounts.sort_by_key(|p| std::cmp::Reverse(p.len()));
    Ok(mounts)
}

fn public_paths(raw: Option<BTreeMap<String, String>>) -> Result<Vec<(String, String)>, String> {
    let Some(map) = raw else {
        return Ok(default_public_paths());
    };
    let mut paths = Vec::new();
    for (from, to) in map {
        absolute_path("public_paths", &from)?;
        absolute_path("public_paths", &to)?;
        paths.push((from, to));
    }
    Ok(paths)
}

fn identity_headers(raw: RawIdentityHeaders) -> Result<(String, String), String> {
    let user_id = header_name("identity_headers.user_id", &raw.user_id)?;
    let key_id = header_name("identity_headers.key_id", &raw.key_id)?;
    if user_id == key_id {
        return Err(err("identity_headers", "user_id and key_id must differ"));
    }
    for reserved in ["authorization", "x-api-key", "host"] {
        if user_id == reserved || key_id == reserved {
            return Err(err("identity_headers", "must not name a credential header"));
        }
    }
    Ok((user_id, key_id))
}

fn scopes(s: RawScopes) -> Result<ScopeConfig, String> {
    Ok(ScopeConfig {
        read: scope_list("scopes.read", s.read)?,
        write: scope_list("scopes.write", s.write)?,
        admin: scope_list("scopes.admin", s.admin)?,
        registry_writes_admin_only: s.registry_writes_admin_only,
    })
}

fn rate_limit(r: RawRateLimit) -> Result<Option<RateLimitConfig>, String> {
    if !r.enabled {
        return Ok(None);
    }
    range(
        "rate_limit.default_per_hour",
        r.default_per_hour,
        1,
        1 << 32,
    )?;
    range("rate_limit.slots", r.slots.into(), 16, 1 << 20)?;
    Ok(Some(RateLimitConfig {
        default_per_hour: r.default_per_hour,
        slots: r.slots,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = r#"{"auth": {"cluster": "hokusai_auth", "service_id": "platform"}}"#;

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let c = Config::parse(MIN.as_bytes()).unwrap();
        assert_eq!(c.auth.authority, "hokusai_auth");
        assert_eq!(c.auth.path, "/api/v1/keys/validate");
        assert_eq!(c.auth.timeout, Duration::from_millis(1000));
        assert_eq!(c.auth.key_form, KeyForm::Header);
        assert_eq!(c.sources.len(), 5);
        assert_eq!(c.max_key_length, 256);
        assert_eq!(c.cache.slots, 4096);
        assert_eq!(c.cache.ttl_ms, 60_000);
        assert_eq!(c.cache.negative_ttl_ms, 10_000);
        assert_eq!(c.cache.stale_if_error_ms, 0);
        assert_eq!(c.mount_prefixes, vec!["/api/mlflow", "/mlflow"]);
        assert!(!c.ajax_api);
        assert_eq!(c.public_paths.len(), 3);
        assert_eq!(c.user_id_header, "x-hokusai-user-id");
        assert_eq!(c.key_id_header, "x-hokusai-api-key-id");
        assert!(c.scopes.read.is_empty());
        assert!(c.scopes.write.contains(&"mlflow:access".to_string()));
        assert_eq!(c.scopes.admin, vec!["mlflow:admin", "admin"]);
        assert_eq!(
            c.rate_limit,
            Some(RateLimitConfig {
                default_per_hour: 1000,
                slots: 4096
            })
        );
        assert!(c.audit_log);
    }

    fn parse_err(json: &str) -> String {
        Config::parse(json.as_bytes()).unwrap_err()
    }

    #[test]
    fn missing_service_id_is_rejected_by_name() {
        let e = parse_err(r#"{"auth": {"cluster": "a"}}"#);
        assert!(e.contains("service_id"), "{e}");
    }

    #[test]
    fn unknown_fields_are_rejected_by_name() {
        let e = parse_err(r#"{"auth": {"cluster": "a", "service_id": "p"}, "cache": {"ttl": 5}}"#);
        assert!(e.contains("`ttl`"), "{e}");
        let e = parse_err(r#"{"auth": {"cluster": "a", "service_id": "p"}, "cach": {}}"#);
        assert!(e.contains("`cach`"), "{e}");
    }

    #[test]
    fn bad_values_name_their_field() {
        let cases = [
            (
                r#""auth": {"cluster": "", "service_id": "p"}"#,
                "auth.cluster",
            ),
            (
                r#""auth": {"cluster": "a", "service_id": " "}"#,
                "auth.service_id",
            ),
            (
                r#""auth": {"cluster": "a", "service_id": "p", "path": "x"}"#,
                "auth.path",
            ),
            (
                r#""auth": {"cluster": "a", "service_id": "p", "timeout_ms": 0}"#,
                "auth.timeout_ms",
            ),
            (
                r#""auth": {"cluster": "a", "service_id": "p", "authority": "a b"}"#,
                "auth.authority",
            ),
            (
                r#""auth": {"cluster": "a", "service_id": "p", "key_form": "cookie"}"#,
                "cookie",
            ),
        ];
        for (body, field) in cases {
            let e = parse_err(&format!("{{{body}}}"));
            assert!(e.contains(field), "{field}: {e}");
        }
        let with = |extra: &str| {
            parse_err(&format!(
                r#"{{"auth": {{"cluster": "a", "service_id": "p"}}, {extra}}}"#
            ))
        };
        for (extra, field) in [
            (r#""cache": {"slots": 1}"#, "cache.slots"),
            (r#""cache": {"ttl_seconds": 0}"#, "cache.ttl_seconds"),
            (r#""credentials": {"sources": []}"#, "credentials.sources"),
            (
                r#""credentials": {"sources": ["bearer", "bearer"]}"#,
                "credentials.sources",
            ),
            (r#""credentials": {"sources": ["cookie"]}"#, "cookie"),
            (
                r#""credentials": {"max_key_length": 1}"#,
                "credentials.max_key_length",
            ),
            (
                r#""mlflow": {"mount_prefixes": ["api"]}"#,
                "mlflow.mount_prefixes",
            ),
            (
                r#""mlflow": {"mount_prefixes": ["/"]}"#,
                "mlflow.mount_prefixes",
            ),
            (r#""public_paths": {"health": "/health"}"#, "public_paths"),
            (
                r#""identity_headers": {"user_id": "bad header"}"#,
                "identity_headers.user_id",
            ),
            (
                r#""identity_headers": {"key_id": "Authorization"}"#,
                "identity_headers",
            ),
            (r#""scopes": {"write": [""]}"#, "scopes.write"),
            (
                r#""rate_limit": {"default_per_hour": 0}"#,
                "rate_limit.default_per_hour",
            ),
        ] {
            let e = with(extra);
            assert!(e.contains(field), "{field}: {e}");
        }
    }

    #[test]
    fn everything_can_be_set() {
        let c = Config::parse(
            br#"{
            "auth": {"cluster": "auth", "authority": "auth.hokusai.ai", "path": "/v", "service_id": "ml-platform",
                     "timeout_ms": 250, "key_form": "body"},
            "credentials": {"sources": ["bearer", "basic"], "max_key_length": 100},
            "cache": {"slots": 64, "ttl_seconds": 5, "negative_ttl_seconds": 0, "stale_if_error_seconds": 300},
            "mlflow": {"mount_prefixes": ["/mlflow/", "/api/mlflow"], "ajax_api": true},
            "public_paths": {"/healthz": "/health"},
            "identity_headers": {"user_id": "X-User", "key_id": "X-Key"},
            "scopes": {"read": ["mlflow:read"], "write": ["w"], "admin": ["a"], "registry_writes_admin_only": true},
            "rate_limit": {"enabled": false},
            "audit_log": false
        }"#,
        )
        .unwrap();
        assert_eq!(c.auth.key_form, KeyForm::Body);
        assert_eq!(c.auth.timeout, Duration::from_millis(250));
        assert_eq!(c.sources, vec![Source::Bearer, Source::Basic]);
        assert!(c.accepts(Source::Basic) && !c.accepts(Source::Query));
        assert_eq!(c.cache.stale_if_error_ms, 300_000);
        assert_eq!(c.mount_prefixes, vec!["/api/mlflow", "/mlflow"]);
        assert!(c.ajax_api);
        assert_eq!(c.public_paths, vec![("/healthz".into(), "/health".into())]);
        assert_eq!(c.user_id_header, "x-user");
        assert!(c.scopes.registry_writes_admin_only);
        assert_eq!(c.rate_limit, None);
        assert!(!c.audit_log);
    }

    #[test]
    fn not_json_is_rejected() {
        assert!(parse_err("not json").contains("invalid configuration"));
        assert!(parse_err("").contains("invalid configuration"));
    }
}
