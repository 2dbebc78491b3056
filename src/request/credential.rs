//! Credentials in a request: finding the API key (every place the contract
//! allows, in its order of precedence, with ambiguity treated as an error
//! rather than a guess) and removing every credential and client-made
//! identity claim before the request goes anywhere.

use crate::config::{Config, Policy, Source};
use crate::host::Host;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;

/// The key a request carries and where it was found.
#[derive(Debug, PartialEq, Eq)]
pub struct Credential {
    pub key: String,
    pub source: Source,
}

/// Why a request gets a 401 before any callout. The texts are safe to send
/// to the client: they never contain key material.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialError {
    Missing,
    Conflicting,
    Empty,
    TooLong,
    Malformed,
    UnsupportedScheme,
}

impl CredentialError {
    pub fn message(self) -> &'static str {
        match self {
            Self::Missing => "API key required: set MLFLOW_TRACKING_TOKEN to your Hokusai API key",
            Self::Conflicting => "the request carries more than one different API key",
            Self::Empty => "the API key is empty",
            Self::TooLong => "the API key is too long",
            Self::Malformed => "the API key contains characters an API key cannot have",
            Self::UnsupportedScheme => {
                "unsupported Authorization scheme: use Bearer, ApiKey or Basic"
            }
        }
    }

    /// A short, stable name for logs and stats.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Conflicting => "conflicting",
            Self::Empty => "empty",
            Self::TooLong => "too_long",
            Self::Malformed => "malformed",
            Self::UnsupportedScheme => "unsupported_scheme",
        }
    }
}

/// Where credentials and identity claims sit in a request, as read from its
/// headers in place.
#[derive(Default, Debug)]
pub struct Presented<'a> {
    pub authorization: Vec<&'a [u8]>,
    pub x_api_key: Vec<&'a [u8]>,
    /// The raw query string, without the `?`.
    pub query: Option<&'a str>,
    /// Identity headers the client sent itself, and underscore spellings of
    /// any protected header: removed, never read.
    claims: Vec<&'a str>,
}

/// The query parameter that may carry a key.
pub const QUERY_PARAM: &str = "api_key";

impl<'a> Presented<'a> {
    /// Notes a request header that carries a credential or an identity claim.
    pub fn note(&mut self, name: &'a str, value: &'a [u8], cfg: &Config) {
        match name {
            "authorization" => self.authorization.push(value),
            "x-api-key" => self.x_api_key.push(value),
            n if is_identity_header(n, cfg) => self.claim(n),
            // Servers behind WSGI/ASGI adapters read `x_hokusai_user_id` as
            // `x-hokusai-user-id`: underscore spellings of protected headers go too.
            n if n.contains('_') && is_protected(n, cfg) => self.claim(n),
            _ => {}
        }
    }

    fn claim(&mut self, name: &'a str) {
        if !self.claims.contains(&name) {
            self.claims.push(name);
        }
    }

    /// Removes every credential header and identity claim noted. The query
    /// key goes with the path rewrite (`remove_query_key`).
    pub fn remove_from<H: Host>(&self, host: &H) {
        if !self.authorization.is_empty() {
            host.set_request_header("authorization", None);
        }
        if !self.x_api_key.is_empty() {
            host.set_request_header("x-api-key", None);
        }
        for name in &self.claims {
            host.set_request_header(name, None);
        }
    }
}

/// Whether `name` is one of the headers that tell the upstream who calls.
fn is_identity_header(name: &str, cfg: &Config) -> bool {
    let h = &cfg.identity_headers;
    name == h.user_id || name == h.key_id || name == h.assertion
}

/// Whether `name`, read with `_` as `-`, is a credential or identity header.
fn is_protected(name: &str, cfg: &Config) -> bool {
    let same = |protected: &str| {
        name.len() == protected.len()
            && name
                .bytes()
                .zip(protected.bytes())
                .all(|(a, b)| a == b || (a == b'_' && b == b'-'))
    };
    let h = &cfg.identity_headers;
    same(&h.user_id)
        || same(&h.key_id)
        || same(&h.assertion)
        || same("x-api-key")
        || same("authorization")
}

/// The query without any key parameter, the rest kept byte for byte; None
/// when there was none.
pub fn remove_query_key(query: &str) -> Option<String> {
    if !may_carry(query, QUERY_PARAM) {
        return None;
    }
    let mut removed = false;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let k = pair.split_once('=').map_or(*pair, |(k, _)| k);
            let drop = param_name_is(k, QUERY_PARAM);
            removed |= drop;
            !drop
        })
        .collect();
    removed.then(|| kept.join("&"))
}

/// Finds the one key a request carries, or says why there is none to use.
pub fn extract(p: &Presented<'_>, cfg: &Policy) -> Result<Credential, CredentialError> {
    let mut found: Option<Credential> = None;
    let mut first_error: Option<CredentialError> = None;
    let mut offer = |source: Source, candidate: Result<String, CredentialError>| {
        if !cfg.accepts(source) {
            return;
        }
        match candidate.and_then(|k| check(k, cfg.max_key_length)) {
            Ok(key) => match &found {
                None => found = Some(Credential { key, source }),
                Some(f) if f.key == key => {}
                Some(_) => first_error = Some(CredentialError::Conflicting),
            },
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    };

    // Authorization values are sorted by scheme precedence so that the
    // reported source follows the contract whatever the header order.
    let mut auth: Vec<(Source, Result<String, CredentialError>)> = p
        .authorization
        .iter()
        .map(|v| parse_authorization(v))
        .collect();
    auth.sort_by_key(|(s, _)| precedence(*s));
    let unsupported = auth
        .iter()
        .any(|(_, r)| *r == Err(CredentialError::UnsupportedScheme));
    for (source, candidate) in auth {
        if candidate != Err(CredentialError::UnsupportedScheme) {
            offer(source, candidate);
        }
    }
    for v in &p.x_api_key {
        offer(Source::XApiKey, bytes_to_key(v));
    }
    if let Some(q) = p.query {
        for value in query_values(q, QUERY_PARAM) {
            offer(Source::Query, value);
        }
    }

    match (first_error, found) {
        (Some(e), _) => Err(e),
        (None, Some(c)) => Ok(c),
        (None, None) if unsupported => Err(CredentialError::UnsupportedScheme),
        (None, None) => Err(CredentialError::Missing),
    }
}

fn precedence(s: Source) -> u8 {
    match s {
        Source::Bearer => 0,
        Source::ApiKey => 1,
        Source::Basic => 2,
        Source::XApiKey => 3,
        Source::Query => 4,
    }
}

/// The characters of RFC 7235 token68, which covers every Hokusai key.
fn is_key_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'=')
}

fn check(key: String, max: usize) -> Result<String, CredentialError> {
    if key.is_empty() {
        Err(CredentialError::Empty)
    } else if key.len() > max {
        Err(CredentialError::TooLong)
    } else if !key.bytes().all(is_key_char) {
        Err(CredentialError::Malformed)
    } else {
        Ok(key)
    }
}

fn bytes_to_key(v: &[u8]) -> Result<String, CredentialError> {
    let t = trim(v);
    String::from_utf8(t.to_vec()).map_err(|_| CredentialError::Malformed)
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |i| i + 1);
    v.get(start..end).unwrap_or_default()
}

fn parse_authorization(v: &[u8]) -> (Source, Result<String, CredentialError>) {
    let v = trim(v);
    let (scheme, rest) = match v.iter().position(|b| *b == b' ' || *b == b'\t') {
        Some(i) => (
            v.get(..i).unwrap_or_default(),
            v.get(i..).unwrap_or_default(),
        ),
        None => (v, &b""[..]),
    };
    let rest = trim(rest);
    if scheme.eq_ignore_ascii_case(b"bearer") {
        (Source::Bearer, bytes_to_key(rest))
    } else if scheme.eq_ignore_ascii_case(b"apikey") {
        (Source::ApiKey, bytes_to_key(rest))
    } else if scheme.eq_ignore_ascii_case(b"basic") {
        (Source::Basic, basic_password(rest))
    } else {
        (Source::Bearer, Err(CredentialError::UnsupportedScheme))
    }
}

/// The MLflow client sends MLFLOW_TRACKING_USERNAME/PASSWORD as Basic; the
/// password is the key and the username is ignored.
fn basic_password(token: &[u8]) -> Result<String, CredentialError> {
    let decoded = base64_decode(token).ok_or(CredentialError::Malformed)?;
    let colon = decoded
        .iter()
        .position(|b| *b == b':')
        .ok_or(CredentialError::Malformed)?;
    let password = decoded.get(colon + 1..).unwrap_or_default();
    String::from_utf8(password.to_vec()).map_err(|_| CredentialError::Malformed)
}

/// Standard-alphabet base64 as clients send it in `Basic`: padding optional.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

fn base64_decode(input: &[u8]) -> Option<Vec<u8>> {
    BASE64.decode(input).ok()
}

/// Every decoded value of parameter `name` in a query string (form
/// decoding: `%XX` and `+`; a bad escape stays as it is and fails the key
/// check).
pub fn query_values<'q>(
    query: &'q str,
    name: &'q str,
) -> impl Iterator<Item = Result<String, CredentialError>> + 'q {
    may_carry(query, name)
        .then(|| form_urlencoded::parse(query.as_bytes()))
        .into_iter()
        .flatten()
        .filter(move |(k, _)| k == name)
        .map(|(_, v)| Ok(v.into_owned()))
}

/// Whether a query may have parameter `name` (which has no `+`): the name
/// spelled out, or an escape that could spell it. Most queries have
/// neither and are not parsed (every request's query is looked at twice).
fn may_carry(query: &str, name: &str) -> bool {
    query.contains(name) || query.contains('%')
}

/// Whether a raw (possibly percent-encoded) parameter name decodes to
/// `name`, so that `api%5Fkey` is recognised as the key parameter too.
pub fn param_name_is(raw: &str, name: &str) -> bool {
    raw == name
        || (raw.contains('%')
            && form_urlencoded::parse(raw.as_bytes())
                .next()
                .is_some_and(|(k, _)| k == name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        Config::parse(br#"{"auth": {"cluster": "a", "service_id": "platform"}}"#).unwrap()
    }

    fn run(
        auth: &[&str],
        xkey: &[&str],
        query: Option<&str>,
    ) -> Result<Credential, CredentialError> {
        let p = Presented {
            authorization: auth.iter().map(|s| s.as_bytes()).collect(),
            x_api_key: xkey.iter().map(|s| s.as_bytes()).collect(),
            query,
            ..Presented::default()
        };
        extract(&p, &cfg().policy)
    }

    fn ok(key: &str, source: Source) -> Result<Credential, CredentialError> {
        Ok(Credential {
            key: key.into(),
            source,
        })
    }

    #[test]
    fn every_location_is_found() {
        assert_eq!(
            run(&["Bearer hk_test_a"], &[], None),
            ok("hk_test_a", Source::Bearer)
        );
        assert_eq!(
            run(&["bEaReR   hk_test_a  "], &[], None),
            ok("hk_test_a", Source::Bearer)
        );
        assert_eq!(
            run(&["ApiKey hk_test_a"], &[], None),
            ok("hk_test_a", Source::ApiKey)
        );
        assert_eq!(
            run(&["APIKEY hk_test_a"], &[], None),
            ok("hk_test_a", Source::ApiKey)
        );
        assert_eq!(
            run(&[], &["hk_test_a"], None),
            ok("hk_test_a", Source::XApiKey)
        );
        assert_eq!(
            run(&[], &[], Some("a=1&api_key=hk_test_a&b=2")),
            ok("hk_test_a", Source::Query)
        );
        assert_eq!(
            run(&[], &[], Some("api%5Fkey=hk_test_a")),
            ok("hk_test_a", Source::Query)
        );
        // base64("mlflow-user:hk_test_a")
        assert_eq!(
            run(&["Basic bWxmbG93LXVzZXI6aGtfdGVzdF9h"], &[], None),
            ok("hk_test_a", Source::Basic)
        );
    }

    #[test]
    fn same_key_in_several_places_is_fine_and_precedence_names_the_source() {
        assert_eq!(
            run(&["Bearer hk_1"], &["hk_1"], Some("api_key=hk_1")),
            ok("hk_1", Source::Bearer)
        );
        assert_eq!(
            run(&["ApiKey hk_a", "Bearer hk_a"], &[], None),
            ok("hk_a", Source::Bearer)
        );
        assert_eq!(
            run(&[], &["hk_a"], Some("api_key=hk_a")),
            ok("hk_a", Source::XApiKey)
        );
    }

    #[test]
    fn two_different_keys_are_refused() {
        for (a, x, q) in [
            (&["Bearer hk_a"][..], &[][..], Some("api_key=hk_b")),
            (&["Bearer hk_a"], &["hk_b"], None),
            (&["Bearer hk_a", "Bearer hk_b"], &[], None),
            (&[], &["hk_a", "hk_b"], None),
            (&[], &[], Some("api_key=hk_a&api_key=hk_b")),
            (&["Basic dTpoa19i"], &["hk_a"], None), // u:hk_b
        ] {
            assert_eq!(
                run(a, x, q),
                Err(CredentialError::Conflicting),
                "{a:?} {x:?} {q:?}"
            );
        }
    }

    #[test]
    fn bad_keys_are_refused_without_guessing() {
        assert_eq!(run(&[], &[], None), Err(CredentialError::Missing));
        assert_eq!(run(&[], &[], Some("x=1")), Err(CredentialError::Missing));
        assert_eq!(run(&["Bearer"], &[], None), Err(CredentialError::Empty));
        assert_eq!(run(&["Bearer   "], &[], None), Err(CredentialError::Empty));
        assert_eq!(run(&[], &[""], None), Err(CredentialError::Empty));
        assert_eq!(run(&[], &[], Some("api_key=")), Err(CredentialError::Empty));
        assert_eq!(
            run(&["Bearer a\u{1}b"], &[], None),
            Err(CredentialError::Malformed)
        );
        assert_eq!(
            run(&["Bearer a b"], &[], None),
            Err(CredentialError::Malformed)
        );
        assert_eq!(
            run(&["Bearer a,Bearer b"], &[], None),
            Err(CredentialError::Malformed)
        );
        assert_eq!(
            run(&["Bearer ключ"], &[], None),
            Err(CredentialError::Malformed)
        );
        assert_eq!(
            run(&[], &[], Some("api_key=%ZZ")),
            Err(CredentialError::Malformed)
        );
        assert_eq!(
            run(&[], &[], Some("api_key=a+b")),
            Err(CredentialError::Malformed)
        );
        let long = format!("Bearer {}", "k".repeat(257));
        assert_eq!(run(&[&long], &[], None), Err(CredentialError::TooLong));
        assert_eq!(
            run(&["Digest abc"], &[], None),
            Err(CredentialError::UnsupportedScheme)
        );
        assert_eq!(
            run(&["Bearer hk_a", "Token x"], &[], None),
            ok("hk_a", Source::Bearer)
        );
        // A bad value anywhere spoils the request even beside a good key.
        assert_eq!(
            run(&["Bearer hk_a"], &["bad key"], None),
            Err(CredentialError::Malformed)
        );
    }

    #[test]
    fn basic_uses_only_the_password() {
        // base64("hk_test_a:") — the key in the username is not a credential.
        assert_eq!(
            run(&["Basic aGtfdGVzdF9hOg=="], &[], None),
            Err(CredentialError::Empty)
        );
        // no colon
        assert_eq!(
            run(&["Basic aGtfdGVzdF9h"], &[], None),
            Err(CredentialError::Malformed)
        );
        assert_eq!(
            run(&["Basic !!!!"], &[], None),
            Err(CredentialError::Malformed)
        );
        assert_eq!(
            run(&["Basic Zg="], &[], None),
            Err(CredentialError::Malformed)
        );
    }

    #[test]
    fn disabled_sources_are_ignored() {
        let cfg = Config::parse(
            br#"{"auth": {"cluster": "a", "service_id": "p"}, "credentials": {"sources": ["bearer"]}}"#,
        )
        .unwrap();
        let p = Presented {
            x_api_key: vec![b"hk_a"],
            query: Some("api_key=hk_b"),
            ..Presented::default()
        };
        assert_eq!(extract(&p, &cfg.policy), Err(CredentialError::Missing));
    }

    #[test]
    fn key_parameter_is_removed_and_the_rest_kept_byte_for_byte() {
        assert_eq!(remove_query_key("api_key=k").as_deref(), Some(""));
        assert_eq!(
            remove_query_key("a=1&api_key=k&b=%20x&c").as_deref(),
            Some("a=1&b=%20x&c")
        );
        assert_eq!(
            remove_query_key("api%5Fkey=k&api_key=k&z=1").as_deref(),
            Some("z=1")
        );
        assert_eq!(remove_query_key("api_key").as_deref(), Some(""));
        assert_eq!(remove_query_key("x_api_key=k&a=1"), None);
        assert_eq!(remove_query_key(""), None);
    }

    #[test]
    fn protected_headers_are_noted_in_every_spelling() {
        let cfg = cfg();
        let mut p = Presented::default();
        for name in [
            "authorization",
            "x-api-key",
            "x-hokusai-user-id",
            "x_hokusai_user_id",
            "x_hokusai_api_key_id",
            "x_api_key",
            "x-hokusai-user-id",
            "x_other",
        ] {
            p.note(name, b"v", &cfg);
        }
        assert_eq!(p.authorization.len(), 1);
        assert_eq!(p.x_api_key.len(), 1);
        assert_eq!(
            p.claims,
            vec![
                "x-hokusai-user-id",
                "x_hokusai_user_id",
                "x_hokusai_api_key_id",
                "x_api_key"
            ]
        );
    }

    #[test]
    fn base64_round_trips() {
        assert_eq!(base64_decode(b"").unwrap(), b"");
        assert_eq!(base64_decode(b"Zg==").unwrap(), b"f");
        assert_eq!(base64_decode(b"Zm8=").unwrap(), b"fo");
        assert_eq!(base64_decode(b"Zm9v").unwrap(), b"foo");
        assert_eq!(base64_decode(b"Zm9vYg").unwrap(), b"foob");
        assert_eq!(base64_decode(b"Zm9vYmE=").unwrap(), b"fooba");
        assert!(base64_decode(b"Z").is_none());
        assert!(base64_decode(b"Zg=a").is_none());
        assert!(base64_decode(b"Zg===").is_none());
    }

    #[test]
    fn messages_never_need_the_key() {
        for e in [
            CredentialError::Missing,
            CredentialError::Conflicting,
            CredentialError::Empty,
            CredentialError::TooLong,
            CredentialError::Malformed,
            CredentialError::UnsupportedScheme,
        ] {
            assert!(!e.message().is_empty() && !e.reason().is_empty());
        }
    }
}
