//! The checked configuration the filter runs with: what `parse` makes of
//! the plugin JSON. Nothing here can hold a bad value. The top level is the
//! default policy plus what every route shares (the verdict cache, the
//! identity headers, the rate-limit table, the audit line); each rule selects
//! requests (`routes.rs`) and carries its own policy.

use super::routes::Selector;
use crate::assertion::jws::Signer;
use crate::limits::lease::LeaseRule;
use serde::Deserialize;
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

/// The authentication scheme a 401 asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scheme {
    /// What the MLflow client answers with its token.
    Bearer,
    /// What makes a browser ask for a user name and password (the key).
    Basic,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: Scheme,
    pub realm: String,
}

impl Challenge {
    /// The `WWW-Authenticate` value.
    pub fn header_value(&self) -> String {
        let scheme = match self.scheme {
            Scheme::Bearer => "Bearer",
            Scheme::Basic => "Basic",
        };
        format!("{scheme} realm=\"{}\"", self.realm)
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
    /// A valid verdict used this close to its expiry is re-validated in
    /// the background (refresh-ahead); 0: off.
    pub refresh_ahead_ms: u64,
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
    /// Routes with the same scope share a key's count.
    pub scope: String,
    /// Counted by a rate limit service for the whole fleet; None: in this
    /// Envoy's shared data.
    pub global: Option<GlobalLimit>,
}

/// `rate_limit.mode: global`: where and how to ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalLimit {
    /// The Envoy cluster of the rate limit service (HTTP/2).
    pub cluster: String,
    /// The cluster as Envoy's gRPC call wants it: a serialized `GrpcService`.
    pub target: String,
    pub domain: String,
    pub timeout: Duration,
    pub failure_mode: FailureMode,
    /// How many hits one call leases, and the outage share.
    pub lease: LeaseRule,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitMode {
    Local,
    Global,
}

/// What a request gets when the rate limit service cannot answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureMode {
    /// Counted in this Envoy instead.
    Local,
    /// Let through uncounted.
    Allow,
    /// 503, retried by the client.
    Deny,
}

/// The header that names the MLflow workspace a request is for.
pub const WORKSPACE_HEADER: &str = "x-mlflow-workspace";

/// The signed identity the filter hands MLflow with each request it
/// forwards with a verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityAssertion {
    /// Its key, `kid`, issuer and audience.
    pub signer: Signer,
    /// A token's lifetime at most (never past its verdict's expiry and a
    /// small skew).
    pub ttl_s: u64,
}

/// The headers that tell the upstream who calls (lower-cased names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityHeaders {
    pub user_id: String,
    pub key_id: String,
    pub assertion: String,
}

/// What applies to a request: the top level's, or a rule's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// `default`, or the rule's name (`routes[i]` when it has none).
    pub name: String,
    /// False: no key asked for (credentials are still removed).
    pub enabled: bool,
    pub auth: AuthService,
    pub sources: Vec<Source>,
    pub max_key_length: usize,
    pub mount_prefixes: Vec<String>,
    pub ajax_api: bool,
    /// Exact request path → upstream path, for requests that need no key.
    pub public_paths: Vec<(String, String)>,
    pub scopes: ScopeConfig,
    pub rate_limit: Option<RateLimitConfig>,
    /// Reads without a key pass, without identity; writes still need one.
    pub anonymous_read: bool,
    pub challenge: Challenge,
    /// The path under each mount the filter answers itself; None: off.
    pub whoami: Option<String>,
    /// None: no assertion is signed on this route.
    pub assertion: Option<IdentityAssertion>,
    /// The MLflow workspace the route maps to (`X-MLFLOW-WORKSPACE`, set
    /// whatever the client sent); None: the client's own, if any.
    pub workspace: Option<String>,
}

impl Policy {
    pub fn accepts(&self, source: Source) -> bool {
        self.sources.contains(&source)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub selector: Selector,
    pub policy: Policy,
}

/// The validated configuration the filter runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// For requests no rule selects.
    pub policy: Policy,
    pub rules: Vec<Rule>,
    pub cache: CacheConfig,
    pub identity_headers: IdentityHeaders,
    /// Slots of the rate-limit counter table every route shares.
    pub rate_limit_slots: u32,
    pub audit_log: bool,
}

impl Config {
    /// The policy at `index`: 0 the default, i + 1 rule i.
    pub fn policy_at(&self, index: usize) -> &Policy {
        match index.checked_sub(1).and_then(|i| self.rules.get(i)) {
            Some(rule) => &rule.policy,
            None => &self.policy,
        }
    }

    /// Every policy, the default first, each at its `policy_at` index.
    pub fn policies(&self) -> impl Iterator<Item = &Policy> {
        std::iter::once(&self.policy).chain(self.rules.iter().map(|r| &r.policy))
    }
}
