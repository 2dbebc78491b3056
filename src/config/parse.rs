//! Parsing the plugin configuration: the JSON Envoy hands over, checked
//! once so that the request path never meets a bad value. A rule's section
//! is the top level's with the rule's fields laid over it; each section's
//! raw form and checks are in `raw.rs`.

use super::field_path::FieldPath;
use super::model::{Config, Policy, Rule};
use super::raw;
use super::routes::{RawMatch, Selector};
use serde_json::{Map, Value};

/// The sections a rule may override, in the order they are checked.
const POLICY_SECTIONS: [&str; 11] = [
    "enabled",
    "auth",
    "credentials",
    "mlflow",
    "public_paths",
    "scopes",
    "rate_limit",
    "anonymous_read",
    "challenge",
    "whoami",
    "identity_assertion",
];
/// What a rule may set of `identity_assertion`: one key signs for every route.
const RULE_ASSERTION_FIELDS: [&str; 1] = ["audience"];
/// What only the top level sets.
const GLOBAL_SECTIONS: [&str; 4] = ["cache", "identity_headers", "audit_log", "routes"];
/// What only a rule sets.
const RULE_FIELDS: [&str; 2] = ["name", "match"];

type Sections = Map<String, Value>;

/// Reads an environment variable (the identity assertion's signing key).
type Env<'e> = &'e dyn Fn(&str) -> Option<String>;

impl Config {
    /// Parses and checks the plugin configuration; the error names the field.
    /// The identity assertion's key comes from the process environment.
    pub fn parse(bytes: &[u8]) -> Result<Config, String> {
        Config::parse_with_env(bytes, &|name| std::env::var(name).ok())
    }

    /// `parse`, with the environment given.
    pub fn parse_with_env(bytes: &[u8], env: Env<'_>) -> Result<Config, String> {
        let top: Sections =
            serde_json::from_slice(bytes).map_err(|e| format!("invalid configuration: {e}"))?;
        known_fields(&top, &[&POLICY_SECTIONS, &GLOBAL_SECTIONS], |f| {
            format!("invalid configuration: unknown field `{f}`")
        })?;
        let at = FieldPath("");
        let policy = policy(at, "default", &top, env)?;
        let cache = raw::cache(at, at.read("cache", top.get("cache"))?)?;
        let identity_headers = raw::identity_headers(
            at,
            at.read("identity_headers", top.get("identity_headers"))?,
        )?;
        let rate = at.read("rate_limit", top.get("rate_limit"))?;
        Ok(Config {
            rules: rules(&top, env)?,
            policy,
            cache,
            identity_headers,
            rate_limit_slots: raw::rate_limit_slots(at, &rate)?,
            audit_log: flag(at, &top, "audit_log", true)?,
        })
    }
}

fn known_fields(
    map: &Sections,
    known: &[&[&str]],
    unknown: impl Fn(&str) -> String,
) -> Result<(), String> {
    let is_known = |k: &str| known.iter().any(|list| list.contains(&k));
    match map.keys().find(|k| !is_known(k)) {
        Some(k) => Err(unknown(k)),
        None => Ok(()),
    }
}

fn flag(at: FieldPath, sections: &Sections, name: &str, default: bool) -> Result<bool, String> {
    match sections.get(name) {
        None => Ok(default),
        Some(v) => v
            .as_bool()
            .ok_or_else(|| at.err(name, "must be true or false")),
    }
}

/// One policy from its sections (the top level's, or a rule's laid over them).
fn policy(at: FieldPath, name: &str, s: &Sections, env: Env<'_>) -> Result<Policy, String> {
    let enabled = flag(at, s, "enabled", true)?;
    let auth = raw::auth_service(at, at.read("auth", s.get("auth"))?)?;
    let (sources, max_key_length) =
        raw::credentials(at, at.read("credentials", s.get("credentials"))?)?;
    let (mount_prefixes, ajax_api, workspace) =
        raw::mlflow(at, at.read("mlflow", s.get("mlflow"))?)?;
    let public_paths = raw::public_paths(at, s.get("public_paths"))?;
    let scopes = raw::scopes(at, at.read("scopes", s.get("scopes"))?)?;
    let default_scope = format!("{}@{}", auth.service_id, auth.cluster);
    let rate = at.read("rate_limit", s.get("rate_limit"))?;
    Ok(Policy {
        name: name.to_string(),
        enabled,
        auth,
        sources,
        max_key_length,
        mount_prefixes,
        ajax_api,
        public_paths,
        scopes,
        rate_limit: raw::rate_limit(at, rate, &default_scope)?,
        anonymous_read: flag(at, s, "anonymous_read", false)?,
        challenge: raw::challenge(at, at.read("challenge", s.get("challenge"))?)?,
        whoami: raw::whoami(at, at.read("whoami", s.get("whoami"))?)?,
        assertion: raw::identity_assertion(
            at,
            at.read("identity_assertion", s.get("identity_assertion"))?,
            env,
        )?,
        workspace,
    })
}

fn rules(top: &Sections, env: Env<'_>) -> Result<Vec<Rule>, String> {
    let Some(list) = top.get("routes") else {
        return Ok(Vec::new());
    };
    let list = list
        .as_array()
        .ok_or_else(|| "routes: must be a list of rules".to_string())?;
    let mut rules: Vec<Rule> = Vec::new();
    for (i, raw) in list.iter().enumerate() {
        let prefix = format!("routes[{i}].");
        let rule = rule(FieldPath(&prefix), i, raw, top, env)?;
        if let Some(dup) = rules.iter().position(|r| r.selector == rule.selector) {
            return Err(format!(
                "routes[{i}].match: the same as routes[{dup}].match, so it could never apply"
            ));
        }
        rules.push(rule);
    }
    Ok(rules)
}

fn rule(
    at: FieldPath,
    i: usize,
    raw: &Value,
    top: &Sections,
    env: Env<'_>,
) -> Result<Rule, String> {
    let raw = raw
        .as_object()
        .ok_or_else(|| format!("routes[{i}]: must be an object"))?;
    known_fields(raw, &[&RULE_FIELDS, &POLICY_SECTIONS], |f| {
        at.err(f, "not a field of a rule (the cache, identity headers and audit log are set at the top level only)")
    })?;
    let selector = Selector::parse(at, at.read::<RawMatch>("match", raw.get("match"))?)?;
    let sets_slots = raw
        .get("rate_limit")
        .and_then(Value::as_object)
        .is_some_and(|r| r.contains_key("slots"));
    if sets_slots {
        return Err(at.err(
            "rate_limit.slots",
            "set it at the top level: one counter table serves every route",
        ));
    }
    only_rule_fields_of_assertion(at, raw)?;
    let name = rule_name(at, i, raw.get("name"))?;
    let policy = policy(at, &name, &over(top, raw), env)?;
    Ok(Rule { selector, policy })
}

fn only_rule_fields_of_assertion(at: FieldPath, raw: &Sections) -> Result<(), String> {
    let set = raw
        .get("identity_assertion")
        .and_then(Value::as_object)
        .and_then(|a| {
            a.keys()
                .find(|k| !RULE_ASSERTION_FIELDS.contains(&k.as_str()))
        });
    match set {
        Some(k) => Err(at.err(
            &format!("identity_assertion.{k}"),
            "set it at the top level: one signing key serves every route (a rule may set `audience`)",
        )),
        None => Ok(()),
    }
}

fn rule_name(at: FieldPath, i: usize, raw: Option<&Value>) -> Result<String, String> {
    let Some(v) = raw else {
        return Ok(format!("routes[{i}]"));
    };
    let valid = |n: &&str| {
        !n.is_empty() && n.len() <= 64 && n.bytes().all(|b| b.is_ascii_graphic()) && *n != "default"
    };
    match v.as_str().filter(valid) {
        Some(n) => Ok(n.to_string()),
        None => Err(at.err(
            "name",
            "must be 1 to 64 visible ASCII characters, and not `default`",
        )),
    }
}

/// A rule's sections: the top level's with the rule's fields laid over them
/// (`public_paths` and the flags are replaced whole).
fn over(top: &Sections, rule: &Sections) -> Sections {
    let mut out = Map::new();
    for key in POLICY_SECTIONS {
        let merged = match (top.get(key), rule.get(key)) {
            (Some(Value::Object(t)), Some(Value::Object(r))) if key != "public_paths" => {
                let mut m = t.clone();
                m.extend(r.iter().map(|(k, v)| (k.clone(), v.clone())));
                Value::Object(m)
            }
            (_, Some(r)) => r.clone(),
            (Some(t), None) => t.clone(),
            (None, None) => continue,
        };
        out.insert(key.to_string(), merged);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::{FailureMode, KeyForm, RateLimitConfig, Source};
    use std::time::Duration;

    const MIN: &str = r#"{"auth": {"cluster": "hokusai_auth", "service_id": "platform"}}"#;

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let c = Config::parse(MIN.as_bytes()).unwrap();
        assert_eq!(c.policy.auth.authority, "hokusai_auth");
        assert_eq!(c.policy.auth.path, "/api/v1/keys/validate");
        assert_eq!(c.policy.auth.timeout, Duration::from_millis(1000));
        assert_eq!(c.policy.auth.key_form, KeyForm::Header);
        assert_eq!(c.policy.sources.len(), 5);
        assert_eq!(c.policy.max_key_length, 256);
        assert_eq!(c.cache.slots, 4096);
        assert_eq!(c.cache.ttl_ms, 60_000);
        assert_eq!(c.cache.negative_ttl_ms, 10_000);
        assert_eq!(c.cache.stale_if_error_ms, 0);
        assert_eq!(c.policy.mount_prefixes, vec!["/api/mlflow", "/mlflow"]);
        assert!(!c.policy.ajax_api);
        assert_eq!(c.policy.public_paths.len(), 3);
        assert_eq!(c.identity_headers.user_id, "x-hokusai-user-id");
        assert_eq!(c.identity_headers.key_id, "x-hokusai-api-key-id");
        assert_eq!(c.identity_headers.assertion, "x-hokusai-identity");
        assert_eq!((&c.policy.assertion, &c.policy.workspace), (&None, &None));
        assert!(c.policy.scopes.read.is_empty());
        assert!(c.policy.scopes.write.contains(&"mlflow:access".to_string()));
        assert_eq!(c.policy.scopes.admin, vec!["mlflow:admin", "admin"]);
        assert_eq!(
            c.policy.rate_limit,
            Some(RateLimitConfig {
                default_per_hour: 1000,
                scope: "platform@hokusai_auth".into(),
                global: None,
            })
        );
        assert_eq!(c.rate_limit_slots, 4096);
        assert!(c.policy.enabled && !c.policy.anonymous_read);
        assert_eq!(
            c.policy.challenge.header_value(),
            "Bearer realm=\"hokusai\""
        );
        assert!(c.rules.is_empty());
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
        assert_eq!(c.policy.auth.key_form, KeyForm::Body);
        assert_eq!(c.policy.auth.timeout, Duration::from_millis(250));
        assert_eq!(c.policy.sources, vec![Source::Bearer, Source::Basic]);
        assert!(c.policy.accepts(Source::Basic) && !c.policy.accepts(Source::Query));
        assert_eq!(c.cache.stale_if_error_ms, 300_000);
        assert_eq!(c.policy.mount_prefixes, vec!["/api/mlflow", "/mlflow"]);
        assert!(c.policy.ajax_api);
        assert_eq!(
            c.policy.public_paths,
            vec![("/healthz".into(), "/health".into())]
        );
        assert_eq!(c.identity_headers.user_id, "x-user");
        assert!(c.policy.scopes.registry_writes_admin_only);
        assert_eq!(c.policy.rate_limit, None);
        assert!(!c.audit_log);
    }

    #[test]
    fn not_json_is_rejected() {
        assert!(parse_err("not json").contains("invalid configuration"));
        assert!(parse_err("").contains("invalid configuration"));
    }

    const TWO_SERVICES: &str = r#"{
        "auth": {"cluster": "hokusai_auth", "service_id": "platform", "timeout_ms": 500},
        "scopes": {"read": ["mlflow:read"]},
        "routes": [
            {"name": "api", "match": {"path_prefix": "/api/mlflow/api"}},
            {"name": "ui", "match": {"path_prefix": "/api/mlflow"},
             "challenge": {"scheme": "basic", "realm": "Hokusai MLflow"}, "anonymous_read": true},
            {"match": {"host": "*.staging.example.com", "route_name": "staging"},
             "auth": {"service_id": "ml-platform"}, "scopes": {"write": ["w"]},
             "rate_limit": {"default_per_hour": 10}},
            {"match": {"path_prefix": "/static"}, "enabled": false}
        ]
    }"#;

    #[test]
    fn rules_override_parts_of_the_default_and_inherit_the_rest() {
        let c = Config::parse(TWO_SERVICES.as_bytes()).unwrap();
        assert_eq!(c.rules.len(), 4);
        assert_eq!(c.policy_at(0).name, "default");
        let api = c.policy_at(1);
        assert_eq!(api.name, "api");
        assert_eq!(
            api.auth, c.policy.auth,
            "a rule without overrides is the default"
        );
        let ui = c.policy_at(2);
        assert_eq!(
            ui.challenge.header_value(),
            "Basic realm=\"Hokusai MLflow\""
        );
        assert!(ui.anonymous_read && !c.policy.anonymous_read);
        let staging = c.policy_at(3);
        assert_eq!(staging.name, "routes[2]");
        assert_eq!(staging.auth.service_id, "ml-platform");
        assert_eq!(
            staging.auth.cluster, "hokusai_auth",
            "fields not overridden are inherited"
        );
        assert_eq!(staging.auth.timeout, Duration::from_millis(500));
        assert_eq!(staging.scopes.write, vec!["w"]);
        assert_eq!(
            staging.scopes.read,
            vec!["mlflow:read"],
            "field by field within a section"
        );
        let limit = staging.rate_limit.as_ref().unwrap();
        assert_eq!(limit.default_per_hour, 10);
        assert_eq!(limit.scope, "ml-platform@hokusai_auth");
        assert!(!c.policy_at(4).enabled);
        assert_eq!(c.policies().count(), 5);
        assert_eq!(c.policy_at(99).name, "default");
    }

    #[test]
    fn bad_rules_are_rejected_naming_the_field() {
        let with = |routes: &str| {
            parse_err(&format!(
                r#"{{"auth": {{"cluster": "a", "service_id": "p"}}, "routes": {routes}}}"#
            ))
        };
        for (routes, field) in [
            (r#"{}"#, "routes: "),
            (r#"[{"match": {}}]"#, "routes[0].match: "),
            (r#"[{"enabled": false}]"#, "routes[0].match: "),
            (
                r#"[{"match": {"host": "a"}}, {"match": {"host": "b"}, "scopes": {"write": [""]}}]"#,
                "routes[1].scopes.write: ",
            ),
            (
                r#"[{"match": {"host": "a"}, "auth": {"timeout_ms": 1}}]"#,
                "routes[0].auth.timeout_ms: ",
            ),
            (
                r#"[{"match": {"host": "a"}, "auth": {"service": "x"}}]"#,
                "routes[0].auth: unknown field `service`",
            ),
            (
                r#"[{"match": {"host": "a"}, "cache": {}}]"#,
                "routes[0].cache: ",
            ),
            (
                r#"[{"match": {"host": "a"}, "rate_limit": {"slots": 64}}]"#,
                "routes[0].rate_limit.slots: ",
            ),
            (
                r#"[{"match": {"host": "a"}, "challenge": {"scheme": "digest"}}]"#,
                "routes[0].challenge: ",
            ),
            (
                r#"[{"match": {"host": "a"}, "challenge": {"realm": "a\"b"}}]"#,
                "routes[0].challenge.realm: ",
            ),
            (
                r#"[{"match": {"host": "a"}, "anonymous_read": "yes"}]"#,
                "routes[0].anonymous_read: ",
            ),
            (
                r#"[{"match": {"host": "a"}, "name": "default"}]"#,
                "routes[0].name: ",
            ),
            (
                r#"[{"match": {"host": "a", "path_prefix": "/x/"}}, {"match": {"path_prefix": "/x", "host": "A"}}]"#,
                "routes[1].match: the same as routes[0].match",
            ),
            (r#"[7]"#, "routes[0]: "),
        ] {
            let e = with(routes);
            assert!(e.starts_with(field), "{routes}: {e}");
        }
    }

    #[test]
    fn the_fleet_counts_in_a_rate_limit_service_when_asked() {
        let c = Config::parse(
            br#"{"auth": {"cluster": "a", "service_id": "p"},
                 "rate_limit": {"mode": "global", "cluster": "hokusai_ratelimit"},
                 "routes": [{"match": {"host": "x"}, "rate_limit": {"failure_mode": "deny", "timeout_ms": 100}},
                            {"match": {"host": "y"}, "rate_limit": {"mode": "local"}}]}"#,
        )
        .unwrap();
        let global = |p: &Policy| p.rate_limit.as_ref().unwrap().global.clone().unwrap();
        let g = global(&c.policy);
        assert_eq!(g.cluster, "hokusai_ratelimit");
        assert_eq!(g.domain, "hokusai-mlflow");
        assert_eq!(g.timeout, Duration::from_millis(20));
        assert_eq!(g.failure_mode, FailureMode::Local);
        let x = global(c.policy_at(1));
        assert_eq!(
            (x.failure_mode, x.timeout),
            (FailureMode::Deny, Duration::from_millis(100))
        );
        assert!(c.policy_at(2).rate_limit.as_ref().unwrap().global.is_none());
        let with = |rl: &str| {
            parse_err(&format!(
                r#"{{"auth": {{"cluster": "a", "service_id": "p"}}, "rate_limit": {rl}}}"#
            ))
        };
        for (rl, field) in [
            (r#"{"mode": "global"}"#, "rate_limit.cluster"),
            (
                r#"{"mode": "global", "cluster": "r", "timeout_ms": 0}"#,
                "rate_limit.timeout_ms",
            ),
            (
                r#"{"mode": "global", "cluster": "r", "domain": ""}"#,
                "rate_limit.domain",
            ),
            (r#"{"mode": "fleet"}"#, "fleet"),
            (r#"{"failure_mode": "maybe"}"#, "maybe"),
        ] {
            let e = with(rl);
            assert!(e.contains(field), "{rl}: {e}");
        }
    }
}
