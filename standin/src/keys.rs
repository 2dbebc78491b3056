//! `keys`: the stand-in for Hokusai's key-validation service, with the
//! control endpoints tests use to count calls and inject faults.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Request, Response};
use serde_json::{json, Map, Value};

use crate::server::{self, detail, header_list, read_body, respond, Body, Reply, Service};

/// Largest validate (and `ext_authz`) request body; larger is 413.
const MAX_BODY: usize = 1024 * 1024;
/// Largest keys file posted to `/__admin/keys`.
const MAX_KEYS_FILE: usize = 16 * 1024 * 1024;
/// The `by_key_id` bucket for calls whose key is not in the keys file.
pub const UNKNOWN: &str = "<unknown>";
const INVALID_KEY: &str = "Invalid or expired API key";
/// Size of the `huge` mode's reply.
const HUGE_LEN: usize = 8 * 1024 * 1024;

/// One key of the keys file, with its answers prepared.
#[derive(Debug)]
struct KeyEntry {
    key_id: Option<String>,
    service_id: Option<String>,
    rate_limited: bool,
    /// For the `x-hokusai-user-id` header of `ext_authz`.
    user_id: Option<String>,
    /// The 200 body of a validate call.
    reply: Vec<u8>,
}

/// The keys file, indexed by key.
#[derive(Debug, Default)]
pub struct KeySet {
    by_key: HashMap<String, KeyEntry>,
}

impl KeySet {
    /// Parses a keys file. Errors name an entry by index, never by key.
    pub fn parse(bytes: &[u8]) -> Result<KeySet, String> {
        let doc: Value =
            serde_json::from_slice(bytes).map_err(|e| format!("keys file is not JSON: {e}"))?;
        let entries = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or("keys file must be an object with a \"keys\" array")?;
        let mut by_key = HashMap::new();
        for (i, entry) in entries.iter().enumerate() {
            let fields = entry
                .as_object()
                .ok_or_else(|| format!("keys[{i}] is not an object"))?;
            let (key, entry) = KeyEntry::parse(fields).map_err(|e| format!("keys[{i}]: {e}"))?;
            if by_key.insert(key, entry).is_some() {
                return Err(format!("keys[{i}]: the same key appears twice"));
            }
        }
        Ok(KeySet { by_key })
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    fn get(&self, key: &str) -> Option<&KeyEntry> {
        self.by_key.get(key)
    }
}

fn optional_string(fields: &Map<String, Value>, name: &str) -> Result<Option<String>, String> {
    match fields.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("\"{name}\" must be a string")),
    }
}

fn optional_bool(fields: &Map<String, Value>, name: &str) -> Result<bool, String> {
    match fields.get(name) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(format!("\"{name}\" must be true or false")),
    }
}

impl KeyEntry {
    fn parse(fields: &Map<String, Value>) -> Result<(String, KeyEntry), String> {
        let key = match fields.get("key") {
            Some(Value::String(k)) if !k.is_empty() => k.clone(),
            _ => return Err("\"key\" must be a non-empty string".into()),
        };
        let nested = optional_bool(fields, "nested")?;
        let rate_limited = optional_bool(fields, "auth_rate_limited")?;
        // Every other field is answered as written, so a test can also put
        // fields the stand-in does not know (`balance`, odd types) in a reply.
        let mut reply = fields.clone();
        for control in ["key", "nested", "auth_rate_limited"] {
            reply.remove(control);
        }
        if nested {
            let mut user = Map::new();
            for (flat, inner) in [
                ("user_id", "id"),
                ("email", "email"),
                ("roles", "roles"),
                ("is_admin", "is_admin"),
            ] {
                if let Some(v) = reply.remove(flat) {
                    user.insert(inner.to_string(), v);
                }
            }
            reply.insert("user".to_string(), Value::Object(user));
        }
        let user_id = match fields.get("user_id") {
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => Some(other.to_string()),
            None => None,
        };
        let entry = KeyEntry {
            key_id: optional_string(fields, "key_id")?,
            service_id: optional_string(fields, "service_id")?,
            rate_limited,
            user_id,
            reply: Value::Object(reply).to_string().into_bytes(),
        };
        Ok((key, entry))
    }
}

/// The first header of that name (names are case-insensitive).
fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The key of `Authorization: Bearer <key>`, if that is how it is sent.
fn bearer(headers: &[(String, String)]) -> Option<&str> {
    let value = header(headers, "authorization")?;
    let (scheme, key) = value.split_once(' ')?;
    let key = key.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !key.is_empty()).then_some(key)
}

/// The outcome of one validate call under the contract.
#[derive(Debug)]
pub struct Validation {
    pub status: u16,
    pub body: Vec<u8>,
    /// The `by_key_id` bucket the call is counted in.
    pub counted_as: String,
}

fn detail_body(message: &str) -> Vec<u8> {
    json!({ "detail": message }).to_string().into_bytes()
}

/// Decides a validate call the way Hokusai's service does. Pure, so the
/// modes can count the call without answering it this way.
pub fn validate(keys: &KeySet, headers: &[(String, String)], body: &[u8]) -> Validation {
    let fields = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(fields)) => Some(fields),
        _ => None,
    };
    // The Bearer header wins; the body's `api_key` is the older form.
    let key = bearer(headers).or_else(|| {
        fields
            .as_ref()?
            .get("api_key")?
            .as_str()
            .filter(|k| !k.is_empty())
    });
    let entry = key.and_then(|k| keys.get(k));
    let counted_as = entry
        .and_then(|e| e.key_id.clone())
        .unwrap_or_else(|| UNKNOWN.to_string());
    let (status, body) = decide(fields.as_ref(), key.is_some(), entry);
    Validation {
        status,
        body,
        counted_as,
    }
}

fn decide(
    fields: Option<&Map<String, Value>>,
    has_key: bool,
    entry: Option<&KeyEntry>,
) -> (u16, Vec<u8>) {
    // FastAPI checks the body before the handler runs: 422 comes first.
    let Some(fields) = fields else {
        return (422, detail_body("request body must be a JSON object"));
    };
    let asked = match fields.get("service_id") {
        Some(Value::String(s)) => s,
        Some(_) => return (422, detail_body("service_id must be a string")),
        None => return (422, detail_body("field required: service_id")),
    };
    if !matches!(
        fields.get("client_ip"),
        None | Some(Value::Null | Value::String(_))
    ) {
        return (422, detail_body("client_ip must be a string"));
    }
    if !has_key {
        return (
            422,
            detail_body("no API key: send Authorization: Bearer <key> or api_key in the body"),
        );
    }
    let Some(entry) = entry else {
        return (401, detail_body(INVALID_KEY));
    };
    if let Some(own) = entry.service_id.as_deref().filter(|own| *own != asked) {
        let message =
            format!("API key is not valid for service '{asked}' (registered for '{own}')");
        return (401, detail_body(&message));
    }
    if entry.rate_limited {
        return (429, detail_body("Rate limit exceeded"));
    }
    (200, entry.reply.clone())
}

/// How the service answers validate and `ext_authz` calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Normal,
    Error,
    Garbage,
    Array,
    WrongTypes,
    Huge,
    Reset,
    Hang,
    Close,
}

impl Mode {
    const ALL: [(&'static str, Mode); 9] = [
        ("normal", Mode::Normal),
        ("error", Mode::Error),
        ("garbage", Mode::Garbage),
        ("array", Mode::Array),
        ("wrong_types", Mode::WrongTypes),
        ("huge", Mode::Huge),
        ("reset", Mode::Reset),
        ("hang", Mode::Hang),
        ("close", Mode::Close),
    ];

    fn parse(name: &str) -> Option<Mode> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, m)| *m)
    }

    fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, m)| *m == self)
            .map_or("normal", |(n, _)| n)
    }
}

/// A JSON object of exactly [`HUGE_LEN`] bytes, built once.
fn huge_body() -> &'static [u8] {
    static HUGE: OnceLock<Vec<u8>> = OnceLock::new();
    HUGE.get_or_init(|| {
        let mut body = br#"{"user_id":"u_huge","key_id":"k_huge","padding":""#.to_vec();
        let closing = br#""}"#;
        body.resize(HUGE_LEN - closing.len(), b'x');
        body.extend_from_slice(closing);
        body
    })
}

fn wrong_types() -> Value {
    json!({
        "user_id": 7, "key_id": 8, "service_id": 9,
        "scopes": "x", "rate_limit_per_hour": "many",
        "email": 10, "roles": "data-scientist", "is_admin": "no",
        "has_sufficient_balance": "yes", "balance": "lots",
        "user": "u_1",
    })
}

#[derive(Debug, Default)]
struct Stats {
    validate_calls: u64,
    ext_authz_calls: u64,
    by_key_id: BTreeMap<String, u64>,
    /// The newest validate request: headers as received, body as text.
    last: Option<(Vec<(String, String)>, String)>,
}

pub struct Keys {
    keys: Mutex<Arc<KeySet>>,
    mode: Mutex<(Mode, u64)>,
    stats: Mutex<Stats>,
}

/// Locks, going on after a panic elsewhere: the data stays consistent
/// because every critical section is a plain assignment or increment.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Keys {
    pub fn new(keys: KeySet) -> Self {
        Keys {
            keys: Mutex::new(Arc::new(keys)),
            mode: Mutex::new((Mode::Normal, 0)),
            stats: Mutex::new(Stats::default()),
        }
    }

    fn key_set(&self) -> Arc<KeySet> {
        Arc::clone(&lock(&self.keys))
    }

    /// Answers a validate or `ext_authz` call in the current mode, after the
    /// current delay; `normal` is the contract's answer.
    async fn answer(&self, normal: impl FnOnce() -> Response<Body>) -> Reply {
        let (mode, delay_ms) = *lock(&self.mode);
        if delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        }
        match mode {
            Mode::Normal => Reply::Send(normal()),
            Mode::Error => Reply::Send(detail(500, "Internal Server Error")),
            Mode::Garbage => Reply::Send(respond(200, "text/plain", &b"not json"[..])),
            Mode::Array => Reply::Send(server::json(200, &json!([1, 2, 3]))),
            Mode::WrongTypes => Reply::Send(server::json(200, &wrong_types())),
            Mode::Huge => Reply::Send(respond(200, "application/json", huge_body())),
            Mode::Reset => Reply::Broken,
            Mode::Hang => Reply::Hang,
            Mode::Close => Reply::Close,
        }
    }

    async fn validate_call(&self, headers: Vec<(String, String)>, body: &[u8]) -> Reply {
        let v = validate(&self.key_set(), &headers, body);
        {
            let mut stats = lock(&self.stats);
            stats.validate_calls += 1;
            *stats.by_key_id.entry(v.counted_as).or_insert(0) += 1;
            stats.last = Some((headers, String::from_utf8_lossy(body).into_owned()));
        }
        self.answer(|| respond(v.status, "application/json", v.body))
            .await
    }

    async fn ext_authz_call(&self, headers: &[(String, String)]) -> Reply {
        let keys = self.key_set();
        let key =
            bearer(headers).or_else(|| header(headers, "x-api-key").filter(|k| !k.is_empty()));
        lock(&self.stats).ext_authz_calls += 1;
        self.answer(|| match key.and_then(|k| keys.get(k)) {
            Some(entry) => ext_authz_ok(entry),
            None => detail(401, INVALID_KEY),
        })
        .await
    }

    fn stats(&self) -> Value {
        let stats = lock(&self.stats);
        let last = stats.last.as_ref().map(|(headers, body)| {
            let headers: Vec<[&str; 2]> = headers
                .iter()
                .map(|(n, v)| [n.as_str(), v.as_str()])
                .collect();
            json!({ "headers": headers, "body": body })
        });
        json!({
            "validate_calls": stats.validate_calls,
            "ext_authz_calls": stats.ext_authz_calls,
            "by_key_id": stats.by_key_id,
            "last": last,
        })
    }

    fn set_mode(&self, body: &[u8]) -> Response<Body> {
        let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(body) else {
            return detail(400, "body must be a JSON object");
        };
        let Some(mode) = fields
            .get("mode")
            .and_then(Value::as_str)
            .and_then(Mode::parse)
        else {
            let names: Vec<&str> = Mode::ALL.iter().map(|(n, _)| *n).collect();
            return detail(
                400,
                &format!("\"mode\" must be one of {}", names.join(", ")),
            );
        };
        let delay_ms = match fields.get("delay_ms") {
            None | Some(Value::Null) => 0,
            Some(v) => match v.as_u64() {
                Some(d) => d,
                None => return detail(400, "\"delay_ms\" must be a whole number of milliseconds"),
            },
        };
        *lock(&self.mode) = (mode, delay_ms);
        server::json(200, &json!({ "mode": mode.name(), "delay_ms": delay_ms }))
    }

    fn set_keys(&self, body: &[u8]) -> Response<Body> {
        match KeySet::parse(body) {
            Ok(keys) => {
                let count = keys.len();
                *lock(&self.keys) = Arc::new(keys);
                server::json(200, &json!({ "keys": count }))
            }
            Err(e) => detail(400, &e),
        }
    }

    fn admin(&self, method: &str, path: &str, body: &[u8]) -> Response<Body> {
        match (method, path) {
            ("GET", "/__admin/stats") => server::json(200, &self.stats()),
            ("POST", "/__admin/reset") => {
                *lock(&self.stats) = Stats::default();
                server::json(200, &json!({ "ok": true }))
            }
            ("POST", "/__admin/keys") => self.set_keys(body),
            ("POST", "/__admin/mode") => self.set_mode(body),
            (_, "/__admin/stats" | "/__admin/reset" | "/__admin/keys" | "/__admin/mode") => {
                detail(405, "Method Not Allowed")
            }
            _ => detail(404, "Not Found"),
        }
    }
}

/// `ext_authz`'s yes: 200 with the identity headers Envoy copies upstream.
fn ext_authz_ok(entry: &KeyEntry) -> Response<Body> {
    let mut resp = respond(200, "application/json", "");
    for (name, value) in [
        ("x-hokusai-user-id", &entry.user_id),
        ("x-hokusai-api-key-id", &entry.key_id),
    ] {
        if let Some(v) = value.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
            resp.headers_mut().insert(name, v);
        }
    }
    resp
}

impl Service for Keys {
    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Reply {
        let path = req.uri().path().to_string();
        let method = req.method().to_string();
        let headers = header_list(&req);
        let limit = if path == "/__admin/keys" {
            MAX_KEYS_FILE
        } else {
            MAX_BODY
        };
        let body = match read_body(req, limit).await {
            Ok(body) => body,
            Err(reply) => return reply,
        };
        match (method.as_str(), path.as_str()) {
            ("POST", "/api/v1/keys/validate") => self.validate_call(headers, &body).await,
            // Envoy's ext_authz passes the client's method on, whatever it is.
            (_, p) if p == "/ext_authz" || p.starts_with("/ext_authz/") => {
                self.ext_authz_call(&headers).await
            }
            (_, "/api/v1/keys/validate") => Reply::Send(detail(405, "Method Not Allowed")),
            (m, p) => Reply::Send(self.admin(m, p, &body)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: &str = r#"{"keys": [
      {"key": "hk_test_rw", "user_id": "u_1", "key_id": "k_1",
       "service_id": "platform", "scopes": ["mlflow:read", "mlflow:write"],
       "rate_limit_per_hour": 1000, "email": "rw@example.com",
       "roles": ["data-scientist"], "is_admin": false,
       "has_sufficient_balance": true, "nested": false, "auth_rate_limited": false},
      {"key": "hk_test_nested", "user_id": "u_2", "key_id": "k_2", "service_id": "platform",
       "email": "n@example.com", "roles": ["viewer"], "is_admin": true, "nested": true},
      {"key": "hk_test_limited", "key_id": "k_3", "service_id": "platform",
       "auth_rate_limited": true},
      {"key": "hk_test_bare"}
    ]}"#;

    fn keys() -> KeySet {
        KeySet::parse(KEYS.as_bytes()).unwrap()
    }

    fn bearer_headers(key: &str) -> Vec<(String, String)> {
        vec![
            ("Authorization".into(), format!("Bearer {key}")),
            ("Content-Type".into(), "application/json".into()),
        ]
    }

    fn body_json(v: &Validation) -> Value {
        serde_json::from_slice(&v.body).unwrap()
    }

    const PLATFORM: &[u8] = br#"{"service_id": "platform", "client_ip": "203.0.113.7"}"#;

    #[test]
    fn valid_bearer_key_answers_its_fields_but_not_the_key() {
        let v = validate(&keys(), &bearer_headers("hk_test_rw"), PLATFORM);
        assert_eq!(v.status, 200);
        assert_eq!(v.counted_as, "k_1");
        assert_eq!(
            body_json(&v),
            json!({"user_id": "u_1", "key_id": "k_1", "service_id": "platform",
                   "scopes": ["mlflow:read", "mlflow:write"], "rate_limit_per_hour": 1000,
                   "email": "rw@example.com", "roles": ["data-scientist"], "is_admin": false,
                   "has_sufficient_balance": true})
        );
    }

    #[test]
    fn missing_fields_are_left_out() {
        let v = validate(&keys(), &bearer_headers("hk_test_bare"), PLATFORM);
        assert_eq!((v.status, body_json(&v)), (200, json!({})));
        assert_eq!(
            v.counted_as, UNKNOWN,
            "a key without key_id has no bucket of its own"
        );
    }

    #[test]
    fn unknown_key_is_401() {
        let v = validate(&keys(), &bearer_headers("hk_test_nope"), PLATFORM);
        assert_eq!(v.status, 401);
        assert_eq!(
            body_json(&v),
            json!({"detail": "Invalid or expired API key"})
        );
        assert_eq!(v.counted_as, UNKNOWN);
    }

    #[test]
    fn key_of_another_service_is_401_naming_both() {
        let v = validate(
            &keys(),
            &bearer_headers("hk_test_rw"),
            br#"{"service_id": "website"}"#,
        );
        assert_eq!(v.status, 401);
        assert_eq!(
            body_json(&v),
            json!({"detail": "API key is not valid for service 'website' (registered for 'platform')"})
        );
        assert_eq!(v.counted_as, "k_1");
    }

    #[test]
    fn key_in_the_body_is_the_older_form() {
        let body = br#"{"api_key": "hk_test_rw", "service_id": "platform"}"#;
        let v = validate(&keys(), &[], body);
        assert_eq!((v.status, v.counted_as.as_str()), (200, "k_1"));
        // The header wins over the body.
        let v = validate(&keys(), &bearer_headers("hk_test_nope"), body);
        assert_eq!(v.status, 401);
    }

    #[test]
    fn nested_key_answers_the_newer_shape() {
        let v = validate(&keys(), &bearer_headers("hk_test_nested"), PLATFORM);
        assert_eq!(v.status, 200);
        assert_eq!(
            body_json(&v),
            json!({"key_id": "k_2", "service_id": "platform",
                   "user": {"id": "u_2", "email": "n@example.com", "roles": ["viewer"], "is_admin": true}})
        );
    }

    #[test]
    fn rate_limited_key_is_429() {
        let v = validate(&keys(), &bearer_headers("hk_test_limited"), PLATFORM);
        assert_eq!(v.status, 429);
        assert_eq!(body_json(&v), json!({"detail": "Rate limit exceeded"}));
        assert_eq!(v.counted_as, "k_3");
    }

    #[test]
    fn bad_bodies_and_missing_keys_are_422() {
        let k = keys();
        let h = bearer_headers("hk_test_rw");
        for body in [
            &br#"{"client_ip": "203.0.113.7"}"#[..],
            br#"{"service_id": 7}"#,
            br#"{"service_id": "platform", "client_ip": 7}"#,
            b"",
            b"not json",
            br#"["platform"]"#,
        ] {
            let v = validate(&k, &h, body);
            assert_eq!(v.status, 422, "{}", String::from_utf8_lossy(body));
            assert!(body_json(&v)["detail"].is_string());
        }
        // No key anywhere, or not a Bearer one.
        let v = validate(&k, &[], PLATFORM);
        assert_eq!(v.status, 422);
        let basic = vec![("authorization".to_string(), "Basic dTpw".to_string())];
        assert_eq!(validate(&k, &basic, PLATFORM).status, 422);
        // A null client_ip is what "not known" looks like in some clients.
        let body = br#"{"service_id": "platform", "client_ip": null}"#;
        assert_eq!(validate(&k, &h, body).status, 200);
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        let h = vec![(
            "authorization".to_string(),
            "bearer  hk_test_rw ".to_string(),
        )];
        assert_eq!(validate(&keys(), &h, PLATFORM).status, 200);
    }

    #[test]
    fn bad_keys_files_are_refused_without_naming_keys() {
        for (file, why) in [
            ("[]", "keys file must be"),
            (r#"{"keys": [{"key": ""}]}"#, "keys[0]"),
            (r#"{"keys": [{"key": "hk_secret", "key_id": 1}]}"#, "key_id"),
            (
                r#"{"keys": [{"key": "hk_secret", "nested": "yes"}]}"#,
                "nested",
            ),
            (
                r#"{"keys": [{"key": "hk_secret"}, {"key": "hk_secret"}]}"#,
                "twice",
            ),
        ] {
            let e = KeySet::parse(file.as_bytes()).unwrap_err();
            assert!(e.contains(why), "{e}");
            assert!(!e.contains("hk_secret"), "{e}");
        }
    }

    #[test]
    fn huge_body_is_a_json_object_of_8_mib() {
        let body = huge_body();
        assert_eq!(body.len(), 8 * 1024 * 1024);
        assert!(serde_json::from_slice::<Value>(body).unwrap().is_object());
    }

    #[test]
    fn mode_names_round_trip() {
        for (name, mode) in Mode::ALL {
            assert_eq!(Mode::parse(name), Some(mode));
            assert_eq!(mode.name(), name);
        }
        assert_eq!(Mode::parse("sideways"), None);
    }
}
