//! The plugin configuration's sections in their JSON form, with their
//! defaults, and the checks that turn each into its validated type. Every
//! error names the field in full (`routes[2].scopes.write: ...`).

use super::field_path::{absolute_path, FieldPath};
use super::model::{
    AuthService, CacheConfig, Challenge, FailureMode, GlobalLimit, IdentityAssertion,
    IdentityHeaders, KeyForm, LimitMode, RateLimitConfig, Scheme, ScopeConfig, Source,
    WORKSPACE_HEADER,
};
use crate::assertion::jws::{Signer, SigningKey};
use crate::limits::lease::LeaseRule;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

// --- the JSON form ---------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
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
pub struct RawCredentials {
    #[serde(default = "default_sources")]
    sources: Vec<Source>,
    #[serde(default = "default_max_key_length")]
    max_key_length: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    #[serde(default = "default_slots")]
    slots: u32,
    #[serde(default = "default_ttl")]
    ttl_seconds: u64,
    #[serde(default = "default_negative_ttl")]
    negative_ttl_seconds: u64,
    #[serde(default)]
    stale_if_error_seconds: u64,
    #[serde(default)]
    refresh_ahead_percent: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMlflow {
    #[serde(default = "default_mounts")]
    mount_prefixes: Vec<String>,
    #[serde(default)]
    ajax_api: bool,
    workspace: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIdentityHeaders {
    #[serde(default = "default_user_header")]
    user_id: String,
    #[serde(default = "default_key_header")]
    key_id: String,
    #[serde(default = "default_assertion_header")]
    assertion: String,
}

/// Off unless `signing_key_env` names the variable that holds the key.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAssertion {
    signing_key_env: Option<String>,
    kid: Option<String>,
    #[serde(default = "default_issuer")]
    issuer: String,
    #[serde(default = "default_audience")]
    audience: String,
    #[serde(default = "default_assertion_ttl")]
    ttl_seconds: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawScopes {
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
pub struct RawRateLimit {
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default = "default_rate_limit")]
    default_per_hour: u64,
    /// The counter table's size: one table serves every route.
    #[serde(default = "default_slots")]
    slots: u32,
    scope: Option<String>,
    #[serde(default = "default_limit_mode")]
    mode: LimitMode,
    /// `global`: the rate limit service's Envoy cluster.
    cluster: Option<String>,
    #[serde(default = "default_limit_domain")]
    domain: String,
    #[serde(default = "default_limit_timeout_ms")]
    timeout_ms: u64,
    #[serde(default = "default_failure_mode")]
    failure_mode: FailureMode,
    /// `global`: the Envoy processes that count the same keys.
    #[serde(default = "one")]
    replicas: u64,
    /// `global`: the most hits one call to the service leases.
    #[serde(default = "default_max_lease")]
    max_lease: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWhoami {
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default = "default_whoami_path")]
    path: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawChallenge {
    #[serde(default = "default_scheme")]
    scheme: Scheme,
    #[serde(default = "default_realm")]
    realm: String,
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
fn default_assertion_header() -> String {
    "x-hokusai-identity".into()
}
fn default_issuer() -> String {
    "hokusai-gateway".into()
}
fn default_audience() -> String {
    "mlflow".into()
}
fn default_assertion_ttl() -> u64 {
    60
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
fn default_scheme() -> Scheme {
    Scheme::Bearer
}
fn default_realm() -> String {
    "hokusai".into()
}
fn default_limit_mode() -> LimitMode {
    LimitMode::Local
}
fn default_limit_domain() -> String {
    "hokusai-mlflow".into()
}
fn default_limit_timeout_ms() -> u64 {
    20
}
fn one() -> u64 {
    1
}
fn default_max_lease() -> u64 {
    100
}
fn default_failure_mode() -> FailureMode {
    FailureMode::Local
}
fn default_whoami_path() -> String {
    "/_hokusai/whoami".into()
}

// --- checks ----------------------------------------------------------------

fn nonempty(at: FieldPath, field: &str, v: &str) -> Result<(), String> {
    if v.trim().is_empty() {
        return Err(at.err(field, "must not be empty"));
    }
    Ok(())
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn header_name(at: FieldPath, field: &str, v: &str) -> Result<String, String> {
    if v.is_empty() || !v.bytes().all(is_token_char) {
        return Err(at.err(field, "must be a valid HTTP header name"));
    }
    Ok(v.to_ascii_lowercase())
}

fn range(at: FieldPath, field: &str, v: u64, lo: u64, hi: u64) -> Result<(), String> {
    if v < lo || v > hi {
        return Err(at.err(field, &format!("must be between {lo} and {hi}")));
    }
    Ok(())
}

fn scope_list(at: FieldPath, field: &str, v: Vec<String>) -> Result<Vec<String>, String> {
    if v.iter().any(|s| s.trim().is_empty()) {
        return Err(at.err(field, "scopes must not be empty strings"));
    }
    Ok(v)
}

/// A name that goes into a claim or a header value: 1 to 256 visible
/// ASCII characters.
fn claim_text(at: FieldPath, field: &str, v: &str) -> Result<(), String> {
    if v.is_empty() || v.len() > 256 || !v.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(at.err(field, "must be 1 to 256 visible ASCII characters"));
    }
    Ok(())
}

fn no_controls(at: FieldPath, field: &str, v: &str) -> Result<(), String> {
    if v.bytes().any(|b| b < b' ' || b == 0x7f) {
        return Err(at.err(field, "must not contain control characters"));
    }
    Ok(())
}

// --- each section's validated form -------------------------------------------

pub fn auth_service(at: FieldPath, a: RawAuth) -> Result<AuthService, String> {
    nonempty(at, "auth.cluster", &a.cluster)?;
    nonempty(at, "auth.service_id", &a.service_id)?;
    no_controls(at, "auth.service_id", &a.service_id)?;
    absolute_path(at, "auth.path", &a.path)?;
    range(at, "auth.timeout_ms", a.timeout_ms, 10, 60_000)?;
    let authority = a.authority.unwrap_or_else(|| a.cluster.clone());
    if authority.is_empty()
        || authority
            .bytes()
            .any(|b| b <= b' ' || b >= 0x7f || b == b'/')
    {
        return Err(at.err("auth.authority", "must be a host[:port]"));
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

pub fn credentials(at: FieldPath, c: RawCredentials) -> Result<(Vec<Source>, usize), String> {
    if c.sources.is_empty() {
        return Err(at.err("credentials.sources", "must name at least one source"));
    }
    let mut sources = Vec::new();
    for s in c.sources {
        if sources.contains(&s) {
            return Err(at.err("credentials.sources", "lists a source twice"));
        }
        sources.push(s);
    }
    range(
        at,
        "credentials.max_key_length",
        c.max_key_length as u64,
        8,
        4096,
    )?;
    Ok((sources, c.max_key_length))
}

pub fn cache(at: FieldPath, k: RawCache) -> Result<CacheConfig, String> {
    range(at, "cache.slots", k.slots.into(), 16, 1 << 20)?;
    range(at, "cache.ttl_seconds", k.ttl_seconds, 1, 86_400)?;
    range(
        at,
        "cache.negative_ttl_seconds",
        k.negative_ttl_seconds,
        0,
        86_400,
    )?;
    range(
        at,
        "cache.stale_if_error_seconds",
        k.stale_if_error_seconds,
        0,
        86_400,
    )?;
    range(
        at,
        "cache.refresh_ahead_percent",
        k.refresh_ahead_percent,
        0,
        90,
    )?;
    Ok(CacheConfig {
        slots: k.slots,
        ttl_ms: k.ttl_seconds * 1000,
        negative_ttl_ms: k.negative_ttl_seconds * 1000,
        stale_if_error_ms: k.stale_if_error_seconds * 1000,
        refresh_ahead_ms: k.ttl_seconds * 1000 * k.refresh_ahead_percent / 100,
    })
}

/// The mount prefixes (longest first) and the ajax-api mapping.
pub fn mlflow(at: FieldPath, m: RawMlflow) -> Result<(Vec<String>, bool, Option<String>), String> {
    let mut mounts = Vec::new();
    for p in m.mount_prefixes {
        absolute_path(at, "mlflow.mount_prefixes", &p)?;
        let p = p.trim_end_matches('/').to_string();
        if p.is_empty() {
            return Err(at.err("mlflow.mount_prefixes", "\"/\" is not a mount prefix"));
        }
        mounts.push(p);
    }
    // Longest first, so that nested mounts strip the most specific one.
    mounts.sort_by_key(|p| std::cmp::Reverse(p.len()));
    if let Some(w) = &m.workspace {
        claim_text(at, "mlflow.workspace", w)?;
    }
    Ok((mounts, m.ajax_api, m.workspace))
}

pub fn public_paths(at: FieldPath, raw: Option<&Value>) -> Result<Vec<(String, String)>, String> {
    if raw.is_none() {
        return Ok(default_public_paths());
    }
    let map: BTreeMap<String, String> = at.read("public_paths", raw)?;
    let mut paths = Vec::new();
    for (from, to) in map {
        absolute_path(at, "public_paths", &from)?;
        absolute_path(at, "public_paths", &to)?;
        paths.push((from, to));
    }
    Ok(paths)
}

pub fn identity_headers(at: FieldPath, raw: RawIdentityHeaders) -> Result<IdentityHeaders, String> {
    let user_id = header_name(at, "identity_headers.user_id", &raw.user_id)?;
    let key_id = header_name(at, "identity_headers.key_id", &raw.key_id)?;
    let assertion = header_name(at, "identity_headers.assertion", &raw.assertion)?;
    if user_id == key_id || assertion == user_id || assertion == key_id {
        return Err(at.err(
            "identity_headers",
            "user_id, key_id and assertion must differ",
        ));
    }
    for reserved in ["authorization", "x-api-key", "host", WORKSPACE_HEADER] {
        if [&user_id, &key_id, &assertion].contains(&&reserved.to_string()) {
            return Err(at.err(
                "identity_headers",
                "must not name a credential header, host or x-mlflow-workspace",
            ));
        }
    }
    Ok(IdentityHeaders {
        user_id,
        key_id,
        assertion,
    })
}

/// The identity assertion, off when no signing key is named. The key is
/// read from the environment variable `signing_key_env` names (Envoy's Wasm
/// `vm_config.environment_variables`, Istio's `vmConfig.env`, the process
/// environment for the native build): never from the plugin JSON, which
/// shows in config dumps.
pub fn identity_assertion(
    at: FieldPath,
    raw: RawAssertion,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<IdentityAssertion>, String> {
    let Some(var) = raw.signing_key_env else {
        return Ok(None);
    };
    let field = "identity_assertion.signing_key_env";
    if var.is_empty() || !var.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(at.err(field, "must name an environment variable (A-Z, 0-9, _)"));
    }
    let pem = env(&var)
        .ok_or_else(|| at.err(field, &format!("the environment variable {var} is not set")))?;
    let key = SigningKey::parse(&pem).map_err(|e| at.err(field, &format!("{var}: {e}")))?;
    let kid = raw
        .kid
        .ok_or_else(|| at.err("identity_assertion.kid", "required with a signing key"))?;
    claim_text(at, "identity_assertion.kid", &kid)?;
    claim_text(at, "identity_assertion.issuer", &raw.issuer)?;
    claim_text(at, "identity_assertion.audience", &raw.audience)?;
    range(
        at,
        "identity_assertion.ttl_seconds",
        raw.ttl_seconds,
        10,
        3600,
    )?;
    let signer = Signer::new(key, &kid, &raw.issuer, &raw.audience)
        .map_err(|e| at.err("identity_assertion", &e))?;
    Ok(Some(IdentityAssertion {
        signer,
        ttl_s: raw.ttl_seconds,
    }))
}

pub fn scopes(at: FieldPath, s: RawScopes) -> Result<ScopeConfig, String> {
    Ok(ScopeConfig {
        read: scope_list(at, "scopes.read", s.read)?,
        write: scope_list(at, "scopes.write", s.write)?,
        admin: scope_list(at, "scopes.admin", s.admin)?,
        registry_writes_admin_only: s.registry_writes_admin_only,
    })
}

/// The counter table's size (the top level's `rate_limit.slots`).
pub fn rate_limit_slots(at: FieldPath, r: &RawRateLimit) -> Result<u32, String> {
    range(at, "rate_limit.slots", r.slots.into(), 16, 1 << 20)?;
    Ok(r.slots)
}

/// `default_scope` names whose keys' counts a route shares when it names no
/// scope of its own.
pub fn rate_limit(
    at: FieldPath,
    r: RawRateLimit,
    default_scope: &str,
) -> Result<Option<RateLimitConfig>, String> {
    if !r.enabled {
        return Ok(None);
    }
    range(
        at,
        "rate_limit.default_per_hour",
        r.default_per_hour,
        1,
        1 << 32,
    )?;
    let scope = r.scope.clone().unwrap_or_else(|| default_scope.to_string());
    nonempty(at, "rate_limit.scope", &scope)?;
    let default_per_hour = r.default_per_hour;
    let global = match r.mode {
        LimitMode::Local => None,
        LimitMode::Global => Some(global_limit(at, r)?),
    };
    Ok(Some(RateLimitConfig {
        default_per_hour,
        scope,
        global,
    }))
}

fn global_limit(at: FieldPath, r: RawRateLimit) -> Result<GlobalLimit, String> {
    let cluster = r.cluster.unwrap_or_default();
    nonempty(at, "rate_limit.cluster", &cluster)?;
    nonempty(at, "rate_limit.domain", &r.domain)?;
    no_controls(at, "rate_limit.domain", &r.domain)?;
    range(at, "rate_limit.timeout_ms", r.timeout_ms, 5, 5_000)?;
    range(at, "rate_limit.replicas", r.replicas, 1, 10_000)?;
    range(at, "rate_limit.max_lease", r.max_lease, 1, 10_000)?;
    let target = crate::limits::global::target(&cluster).ok_or_else(|| {
        at.err(
            "rate_limit.cluster",
            "must be ASCII and at most 100 characters",
        )
    })?;
    Ok(GlobalLimit {
        target,
        cluster,
        domain: r.domain,
        timeout: Duration::from_millis(r.timeout_ms),
        failure_mode: r.failure_mode,
        lease: LeaseRule {
            replicas: r.replicas,
            max_lease: r.max_lease,
            ask_ms: r.timeout_ms,
        },
    })
}

pub fn challenge(at: FieldPath, c: RawChallenge) -> Result<Challenge, String> {
    if c.realm.is_empty()
        || c.realm.len() > 128
        || c.realm
            .bytes()
            .any(|b| !(0x20..0x7f).contains(&b) || b == b'"' || b == b'\\')
    {
        return Err(at.err(
            "challenge.realm",
            "must be 1 to 128 printable characters without quotes or backslashes",
        ));
    }
    Ok(Challenge {
        scheme: c.scheme,
        realm: c.realm,
    })
}

/// The whoami path under each mount; None when switched off.
pub fn whoami(at: FieldPath, w: RawWhoami) -> Result<Option<String>, String> {
    absolute_path(at, "whoami.path", &w.path)?;
    if w.path.len() < 2 || w.path.ends_with('/') {
        return Err(at.err(
            "whoami.path",
            "must name a path below the mount, like /_hokusai/whoami",
        ));
    }
    Ok(w.enabled.then_some(w.path))
}
