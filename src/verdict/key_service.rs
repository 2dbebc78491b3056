//! The key-validation callout: the request the contract asks for and the
//! verdict its reply means. The status code decides; a body we cannot trust
//! makes the service count as unavailable, never as a yes.

use crate::config::{AuthService, KeyForm};
use crate::observability::metrics::Counter;
use serde::{Deserialize, Serialize};
use std::rc::Rc;

/// Replies larger than this are not read: a valid reply is a few hundred bytes.
pub const MAX_REPLY_BYTES: usize = 64 * 1024;
const MAX_ID_BYTES: usize = 256;
const MAX_SCOPES: usize = 64;
const MAX_SCOPE_BYTES: usize = 128;

/// Who a valid key belongs to and what it may do.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Identity {
    pub user_id: Option<String>,
    pub key_id: Option<String>,
    pub scopes: Vec<String>,
    /// None: the configured default applies.
    pub rate_limit_per_hour: Option<u64>,
    pub is_admin: bool,
}

/// Why the key service counts as unavailable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The callout could not be started (unknown cluster, circuit open…).
    Dispatch,
    /// Timeout, reset or connection failure: a reply without a status.
    NoReply,
    /// A status the contract gives no meaning to.
    Status(u16),
    TooLarge,
    NotJsonObject,
    BadFields,
}

impl Failure {
    /// The stat this failure counts in.
    pub fn counter(self) -> Counter {
        match self {
            Self::Dispatch => Counter::CalloutErrorDispatch,
            Self::NoReply => Counter::CalloutErrorNoReply,
            Self::Status(_) => Counter::CalloutErrorStatus,
            Self::TooLarge => Counter::CalloutErrorTooLarge,
            Self::NotJsonObject => Counter::CalloutErrorNotJsonObject,
            Self::BadFields => Counter::CalloutErrorBadFields,
        }
    }

    /// What the log says about it.
    pub fn describe(self) -> String {
        match self {
            Self::Status(s) => format!("{} (status {s})", self.kind()),
            _ => self.kind().to_string(),
        }
    }

    pub fn kind(self) -> &'static str {
        match self {
            Self::Dispatch => "dispatch",
            Self::NoReply => "no_reply",
            Self::Status(_) => "bad_status",
            Self::TooLarge => "too_large",
            Self::NotJsonObject => "not_json_object",
            Self::BadFields => "bad_fields",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allowed(Rc<Identity>),
    /// 401: invalid, expired, or not registered for this service.
    Invalid,
    /// 429 from the key service.
    RateLimited,
    Unavailable(Failure),
}

/// The validation request's JSON body.
#[derive(Serialize)]
struct RequestBody<'a> {
    /// Only in the older body form.
    #[serde(skip_serializing_if = "Option::is_none")]
    api_key: Option<&'a str>,
    service_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_ip: Option<&'a str>,
}

/// Headers and body of the validation request.
pub fn request(
    auth: &AuthService,
    key: &str,
    client_ip: Option<&str>,
) -> (Vec<(&'static str, String)>, Vec<u8>) {
    let body = RequestBody {
        api_key: (auth.key_form == KeyForm::Body).then_some(key),
        service_id: &auth.service_id,
        client_ip,
    };
    let mut headers = vec![
        (":method", "POST".to_string()),
        (":path", auth.path.clone()),
        (":authority", auth.authority.clone()),
        ("content-type", "application/json".to_string()),
        ("accept", "application/json".to_string()),
    ];
    if auth.key_form == KeyForm::Header {
        headers.push(("authorization", format!("Bearer {key}")));
    }
    (headers, serde_json::to_vec(&body).unwrap_or_default())
}

/// The client address to report: the first `X-Forwarded-For` entry, else
/// the downstream peer, and only if it really is an IP address.
pub fn client_ip(forwarded_for: Option<&[u8]>, peer: Option<&str>) -> Option<String> {
    let first = forwarded_for
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.split(',').next())
        .map(str::trim);
    first
        .and_then(parse_ip)
        .or_else(|| peer.and_then(parse_ip))
        .map(|ip| ip.to_string())
}

fn parse_ip(s: &str) -> Option<std::net::IpAddr> {
    if let Ok(ip) = s.parse() {
        return Some(ip);
    }
    // Envoy reports the peer as "ip:port" or "[v6]:port".
    s.parse::<std::net::SocketAddr>().ok().map(|a| a.ip())
}

/// What a reply means. `status` is None when the host reported no headers
/// (timeout, reset, connection failure); `body_len` is the full body size.
pub fn verdict(status: Option<u16>, body_len: usize, body: &[u8]) -> Verdict {
    match status {
        None => Verdict::Unavailable(Failure::NoReply),
        Some(200) if body_len > MAX_REPLY_BYTES => Verdict::Unavailable(Failure::TooLarge),
        Some(200) => match serde_json::from_slice::<ValidReply>(body) {
            Ok(reply) => Verdict::Allowed(Rc::new(reply.identity())),
            // A JSON object with a field of the wrong type or size.
            Err(e) if e.is_data() && body.trim_ascii_start().starts_with(b"{") => {
                Verdict::Unavailable(Failure::BadFields)
            }
            Err(_) => Verdict::Unavailable(Failure::NotJsonObject),
        },
        Some(401) => Verdict::Invalid,
        Some(429) => Verdict::RateLimited,
        Some(s) => Verdict::Unavailable(Failure::Status(s)),
    }
}

/// A 200 reply as the contract describes it. Every field may be missing or
/// null (the contract's defaults then apply); unknown fields are ignored; a
/// known field of the wrong type or size makes the reply untrustworthy.
#[derive(Deserialize)]
struct ValidReply {
    user_id: Option<Id>,
    key_id: Option<Id>,
    scopes: Option<Scopes>,
    rate_limit_per_hour: Option<u64>,
    is_admin: Option<bool>,
    /// Not used, but a wrong type says the reply cannot be trusted.
    #[serde(rename = "has_sufficient_balance")]
    _has_sufficient_balance: Option<bool>,
    /// The newer nested identity; the flat fields win where both appear.
    user: Option<NestedUser>,
}

#[derive(Deserialize)]
struct NestedUser {
    id: Option<Id>,
    is_admin: Option<bool>,
}

impl ValidReply {
    fn identity(self) -> Identity {
        let (nested_id, nested_admin) = self.user.map_or((None, None), |u| (u.id, u.is_admin));
        Identity {
            user_id: self.user_id.or(nested_id).map(|id| id.0),
            key_id: self.key_id.map(|id| id.0),
            scopes: self.scopes.map_or_else(Vec::new, |s| s.0),
            rate_limit_per_hour: self.rate_limit_per_hour,
            is_admin: self.is_admin.or(nested_admin).unwrap_or(false),
        }
    }
}

/// An identifier: it ends up in upstream headers and logs, so visible ASCII
/// only, and bounded.
#[derive(Deserialize)]
#[serde(try_from = "String")]
struct Id(String);

impl TryFrom<String> for Id {
    type Error = &'static str;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        if !s.is_empty() && s.len() <= MAX_ID_BYTES && s.bytes().all(|b| b.is_ascii_graphic()) {
            Ok(Id(s))
        } else {
            Err("an identifier must be 1 to 256 visible ASCII characters")
        }
    }
}

/// The key's scopes: a bounded list of printable ASCII strings.
#[derive(Deserialize)]
#[serde(try_from = "Vec<String>")]
struct Scopes(Vec<String>);

impl TryFrom<Vec<String>> for Scopes {
    type Error = &'static str;
    fn try_from(v: Vec<String>) -> Result<Self, Self::Error> {
        let printable =
            |s: &String| s.len() <= MAX_SCOPE_BYTES && s.bytes().all(|b| (0x20..0x7f).contains(&b));
        if v.len() <= MAX_SCOPES && v.iter().all(printable) {
            Ok(Scopes(v))
        } else {
            Err("at most 64 scopes of at most 128 printable characters")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::time::Duration;

    fn auth(form: KeyForm) -> AuthService {
        AuthService {
            cluster: "hokusai_auth".into(),
            authority: "auth.hokusai.test".into(),
            path: "/api/v1/keys/validate".into(),
            service_id: "platform".into(),
            timeout: Duration::from_secs(1),
            key_form: form,
        }
    }

    #[test]
    fn request_follows_the_contract() {
        let (h, body) = request(&auth(KeyForm::Header), "hk_test_x", Some("203.0.113.7"));
        let get = |n: &str| h.iter().find(|(k, _)| *k == n).map(|(_, v)| v.as_str());
        assert_eq!(get(":method"), Some("POST"));
        assert_eq!(get(":path"), Some("/api/v1/keys/validate"));
        assert_eq!(get(":authority"), Some("auth.hokusai.test"));
        assert_eq!(get("content-type"), Some("application/json"));
        assert_eq!(get("authorization"), Some("Bearer hk_test_x"));
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"service_id": "platform", "client_ip": "203.0.113.7"})
        );

        let (h, body) = request(&auth(KeyForm::Body), "hk_test_x", None);
        assert!(!h.iter().any(|(k, _)| *k == "authorization"));
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"api_key": "hk_test_x", "service_id": "platform"})
        );
    }

    #[test]
    fn client_ip_prefers_the_first_forwarded_address() {
        assert_eq!(
            client_ip(Some(b"203.0.113.7, 10.0.0.1"), Some("127.0.0.1:5")).as_deref(),
            Some("203.0.113.7")
        );
        assert_eq!(
            client_ip(Some(b"garbage"), Some("127.0.0.1:5")).as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(client_ip(None, Some("[::1]:80")).as_deref(), Some("::1"));
        assert_eq!(client_ip(None, Some("not an ip")), None);
        assert_eq!(client_ip(Some(b"\xff"), None), None);
    }

    fn allowed(json: &str) -> Identity {
        match verdict(Some(200), json.len(), json.as_bytes()) {
            Verdict::Allowed(i) => Rc::unwrap_or_clone(i),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_full_flat_reply_is_read() {
        let id = allowed(
            r#"{"user_id": "u_123", "key_id": "k_456", "service_id": "platform",
                "scopes": ["mlflow:read", "mlflow:write"], "rate_limit_per_hour": 1000,
                "email": "a@example.com", "roles": ["data-scientist"], "is_admin": false,
                "has_sufficient_balance": true, "balance": 12.5}"#,
        );
        assert_eq!(id.user_id.as_deref(), Some("u_123"));
        assert_eq!(id.key_id.as_deref(), Some("k_456"));
        assert_eq!(id.scopes, vec!["mlflow:read", "mlflow:write"]);
        assert_eq!(id.rate_limit_per_hour, Some(1000));
        assert!(!id.is_admin);
    }

    #[test]
    fn missing_fields_take_the_contract_defaults() {
        assert_eq!(allowed("{}"), Identity::default());
        assert_eq!(
            allowed(r#"{"scopes": null, "user_id": null}"#).scopes,
            Vec::<String>::new()
        );
    }

    #[test]
    fn nested_identity_is_read_and_flat_fields_win() {
        let id = allowed(
            r#"{"user": {"id": "u_n", "email": "e", "roles": [], "is_admin": true}, "key_id": "k"}"#,
        );
        assert_eq!(id.user_id.as_deref(), Some("u_n"));
        assert!(id.is_admin);
        let id = allowed(
            r#"{"user_id": "u_flat", "is_admin": false, "user": {"id": "u_n", "is_admin": true}}"#,
        );
        assert_eq!(id.user_id.as_deref(), Some("u_flat"));
        assert!(!id.is_admin);
    }

    #[test]
    fn statuses_map_to_verdicts() {
        assert_eq!(
            verdict(Some(401), 0, b"{\"detail\": \"x\"}"),
            Verdict::Invalid
        );
        assert_eq!(verdict(Some(429), 0, b""), Verdict::RateLimited);
        assert_eq!(
            verdict(None, 0, b""),
            Verdict::Unavailable(Failure::NoReply)
        );
        for s in [403, 404, 500, 502, 503, 201, 302] {
            assert_eq!(
                verdict(Some(s), 2, b"{}"),
                Verdict::Unavailable(Failure::Status(s))
            );
        }
    }

    #[test]
    fn untrustworthy_bodies_mean_unavailable() {
        for body in [
            "not json",
            "[1, 2, 3]",
            "\"x\"",
            "null",
            "",
            "{\"user_id\": \"u\"",
        ] {
            assert_eq!(
                verdict(Some(200), body.len(), body.as_bytes()),
                Verdict::Unavailable(Failure::NotJsonObject),
                "{body}"
            );
        }
        assert_eq!(
            verdict(Some(200), MAX_REPLY_BYTES + 1, b"{}"),
            Verdict::Unavailable(Failure::TooLarge)
        );
        let long = format!(r#"{{"user_id": "{}"}}"#, "u".repeat(300));
        for body in [
            r#"{"user_id": 7}"#,
            r#"{"key_id": ["k"]}"#,
            r#"{"scopes": "mlflow:write"}"#,
            r#"{"scopes": [1]}"#,
            r#"{"rate_limit_per_hour": "many"}"#,
            r#"{"rate_limit_per_hour": -1}"#,
            r#"{"rate_limit_per_hour": 1.5}"#,
            r#"{"is_admin": "yes"}"#,
            r#"{"has_sufficient_balance": 1}"#,
            r#"{"user": "u"}"#,
            r#"{"user": {"id": 5}}"#,
            r#"{"user_id": "u\nX-Injected: 1"}"#,
            r#"{"user_id": ""}"#,
            long.as_str(),
        ] {
            assert_eq!(
                verdict(Some(200), body.len(), body.as_bytes()),
                Verdict::Unavailable(Failure::BadFields),
                "{body}"
            );
        }
    }
}
