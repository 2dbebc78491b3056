//! Signs the identity assertion (a compact JWS, RFC 7515/7519) that the
//! filter forwards upstream as `x-hokusai-identity`, so that MLflow learns
//! who calls from a token it can check with a public key alone. Ed25519
//! (`EdDSA`), not an HMAC: MLflow then holds no secret that could mint an
//! identity. The key is parsed from the PKCS#8 PEM operators hold.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ed25519_dalek::Signer as _;
use serde::Serialize;

const BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
const END: &str = "-----END PRIVATE KEY-----";

/// PKCS#8 v1 (RFC 8410): SEQUENCE { version 0, AlgorithmIdentifier
/// { id-Ed25519 }, OCTET STRING { OCTET STRING (32) } }, then the seed.
const PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
/// PKCS#8 v2 (RFC 5958): as v1 with version 1 and a longer outer SEQUENCE,
/// the seed followed by the public key as `[1] IMPLICIT BIT STRING`.
const PKCS8_V2_PREFIX: [u8; 16] = [
    0x30, 0x51, 0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
const PKCS8_V2_PUBLIC_KEY_TAG: [u8; 3] = [0x81, 0x21, 0x00];

/// Algorithm OIDs (DER contents) that operators may hand us by mistake.
const OTHER_ALGORITHMS: [(&[u8], &str); 5] = [
    (
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01],
        "an RSA key",
    ),
    (&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01], "an EC key"),
    (&[0x2b, 0x65, 0x71], "an Ed448 key"),
    (&[0x2b, 0x65, 0x6e], "an X25519 key"),
    (
        &[0x2b, 0x65, 0x70],
        "an Ed25519 key in an unsupported PKCS#8 layout",
    ),
];

/// An Ed25519 private key. Its `Debug` shows only the public half.
#[derive(Clone)]
pub struct SigningKey(ed25519_dalek::SigningKey);

impl SigningKey {
    /// Parses an unencrypted PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), as
    /// written by `openssl genpkey -algorithm ed25519` or Python
    /// `cryptography`. Errors never quote the text: it is a secret.
    pub fn parse(text: &str) -> Result<SigningKey, String> {
        let der = pem_der(text)?;
        let seed = ed25519_seed(&der)?;
        Ok(SigningKey(ed25519_dalek::SigningKey::from_bytes(&seed)))
    }

    /// The 32-byte public key, to publish for the verifier.
    pub fn public_key(&self) -> [u8; 32] {
        self.0.verifying_key().to_bytes()
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let public = URL_SAFE_NO_PAD.encode(self.public_key());
        write!(f, "SigningKey(Ed25519, public {public})")
    }
}

fn pem_der(text: &str) -> Result<Vec<u8>, String> {
    let text = text.trim();
    let body = text
        .strip_prefix(BEGIN)
        .ok_or_else(|| wrong_label(text))?
        .strip_suffix(END)
        .ok_or_else(|| format!("PEM does not end with {END}"))?;
    let compact: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    // The decoder's own error names the offending byte: never pass it on.
    STANDARD
        .decode(compact)
        .map_err(|_| "PEM body is not valid base64".to_string())
}

/// Names the kind of PEM we got instead, from a fixed list only, so that
/// nothing of the text itself reaches the message.
fn wrong_label(text: &str) -> String {
    let label = text
        .strip_prefix("-----BEGIN ")
        .and_then(|rest| rest.split_once("-----"))
        .map(|(label, _)| label);
    let found = match label {
        Some("ENCRYPTED PRIVATE KEY") => "an encrypted PKCS#8 key (give it unencrypted)",
        Some("RSA PRIVATE KEY") => "an RSA key",
        Some("EC PRIVATE KEY") => "an EC key",
        Some("OPENSSH PRIVATE KEY") => "an OpenSSH key",
        Some("PUBLIC KEY") => "a public key",
        Some(_) => "a PEM block of another kind",
        None => "not PEM",
    };
    format!("expected an Ed25519 private key in PKCS#8 PEM ({BEGIN}), got {found}")
}

fn ed25519_seed(der: &[u8]) -> Result<[u8; 32], String> {
    if let Some(seed) = der.strip_prefix(PKCS8_V1_PREFIX.as_slice()) {
        return <[u8; 32]>::try_from(seed)
            .map_err(|_| "Ed25519 PKCS#8 key has the wrong length".to_string());
    }
    if let Some(rest) = der.strip_prefix(PKCS8_V2_PREFIX.as_slice()) {
        return seed_checked_against_public_key(rest);
    }
    Err(format!(
        "expected an Ed25519 private key in PKCS#8, got {}",
        algorithm_of(der)
    ))
}

/// A v2 key carries its public half: a mismatch means a corrupted key,
/// which would otherwise only show as MLflow rejecting every token.
fn seed_checked_against_public_key(rest: &[u8]) -> Result<[u8; 32], String> {
    let wrong = || "Ed25519 PKCS#8 v2 key has the wrong length or layout".to_string();
    let (seed, rest) = rest.split_first_chunk::<32>().ok_or_else(wrong)?;
    let public = rest
        .strip_prefix(PKCS8_V2_PUBLIC_KEY_TAG.as_slice())
        .and_then(|public| <[u8; 32]>::try_from(public).ok())
        .ok_or_else(wrong)?;
    let derived = ed25519_dalek::SigningKey::from_bytes(seed).verifying_key();
    if derived.to_bytes() != public {
        return Err("Ed25519 PKCS#8 v2 key: its public key does not match its private key".into());
    }
    Ok(*seed)
}

/// The algorithm identifier sits within the first bytes of any PKCS#8 key.
fn algorithm_of(der: &[u8]) -> &'static str {
    let head = der.get(..32).unwrap_or(der);
    OTHER_ALGORITHMS
        .iter()
        .find(|(oid, _)| head.windows(oid.len()).any(|w| w == *oid))
        .map_or("a key of unknown type", |(_, name)| name)
}

/// The per-verdict claims; `iss` and `aud` come from the [`Signer`].
#[derive(Debug, Clone, Copy)]
pub struct Claims<'a> {
    pub sub: &'a str,
    pub key_id: &'a str,
    pub scopes: &'a [String],
    pub is_admin: bool,
    pub service_id: &'a str,
    /// Seconds since the Unix epoch.
    pub iat: u64,
    pub exp: u64,
}

/// The claims set as serialized; field order is the JSON order.
#[derive(Serialize)]
struct Payload<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    key_id: &'a str,
    scopes: &'a [String],
    is_admin: bool,
    service_id: &'a str,
    iat: u64,
    exp: u64,
}

#[derive(Serialize)]
struct Header<'a> {
    alg: &'static str,
    typ: &'static str,
    kid: &'a str,
}

/// Signs assertions with one key; the header is fixed, so it is encoded once.
#[derive(Debug, Clone)]
pub struct Signer {
    key: SigningKey,
    header_b64: String,
    issuer: String,
    audience: String,
}

/// Two signers are the same when they sign alike: same key, header and
/// claims they set.
impl PartialEq for Signer {
    fn eq(&self, other: &Self) -> bool {
        self.key.public_key() == other.key.public_key()
            && self.header_b64 == other.header_b64
            && self.issuer == other.issuer
            && self.audience == other.audience
    }
}

impl Eq for Signer {}

impl Signer {
    pub fn new(key: SigningKey, kid: &str, issuer: &str, audience: &str) -> Result<Signer, String> {
        let header = Header {
            alg: "EdDSA",
            typ: "JWT",
            kid,
        };
        Ok(Signer {
            key,
            header_b64: json_b64(&header)?,
            issuer: issuer.to_string(),
            audience: audience.to_string(),
        })
    }

    /// The compact serialization `header.claims.signature`.
    pub fn sign(&self, claims: &Claims<'_>) -> Result<String, String> {
        let payload_b64 = json_b64(&self.payload(claims))?;
        let mut token = String::with_capacity(self.header_b64.len() + payload_b64.len() + 88);
        token.push_str(&self.header_b64);
        token.push('.');
        token.push_str(&payload_b64);
        let signature = self.key.0.sign(token.as_bytes());
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.to_bytes(), &mut token);
        Ok(token)
    }

    fn payload<'a>(&'a self, c: &Claims<'a>) -> Payload<'a> {
        Payload {
            iss: &self.issuer,
            aud: &self.audience,
            sub: c.sub,
            key_id: c.key_id,
            scopes: c.scopes,
            is_admin: c.is_admin,
            service_id: c.service_id,
            iat: c.iat,
            exp: c.exp,
        }
    }
}

/// serde_json fails only for non-string map keys or failing `Serialize`
/// impls, neither of which these structs have; the error is kept anyway.
fn json_b64<T: Serialize>(value: &T) -> Result<String, String> {
    let json = serde_json::to_vec(value).map_err(|e| format!("cannot encode JSON: {e}"))?;
    Ok(URL_SAFE_NO_PAD.encode(json))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::Verifier as _;

    /// RFC 8032 section 7.1 test 1 seed, as Python `cryptography` writes it.
    const RFC8032_PEM: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g
-----END PRIVATE KEY-----
";
    const RFC8032_PUBLIC: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

    /// The same key as PKCS#8 v2 with its public key attached.
    const RFC8032_PEM_V2: &str = "-----BEGIN PRIVATE KEY-----
MFECAQEwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g
gSEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=
-----END PRIVATE KEY-----
";

    /// Checked with PyJWT: jwt.decode(TOKEN, <RFC8032 public key>,
    /// algorithms=["EdDSA"], audience="mlflow", issuer="hokusai-auth-filter",
    /// options={"verify_exp": False}).
    const EXPECTED_TOKEN: &str = "eyJhbGciOiJFZERTQSIsInR5cCI6IkpXVCIsImtpZCI6Imhva3VzYWktMjAyNi0wMSJ9.eyJpc3MiOiJob2t1c2FpLWF1dGgtZmlsdGVyIiwiYXVkIjoibWxmbG93Iiwic3ViIjoidXNlci00MiIsImtleV9pZCI6ImtleS03Iiwic2NvcGVzIjpbIm1sZmxvdzpyZWFkIiwibWxmbG93OmFjY2VzcyJdLCJpc19hZG1pbiI6ZmFsc2UsInNlcnZpY2VfaWQiOiJtbC1wbGF0Zm9ybSIsImlhdCI6MTc2NzIyNTYwMCwiZXhwIjoxNzY3MjI1OTAwfQ.3-A08A_AF2plm5l-_ExJ8CSB4Y1zBT0HvQM0f3q_SOkBeFjgGTyHiq2-rF1FEfIV5y9oEykPaLBiSwD52rQdBw";

    fn signer() -> Signer {
        let key = SigningKey::parse(RFC8032_PEM).unwrap();
        Signer::new(key, "hokusai-2026-01", "hokusai-auth-filter", "mlflow").unwrap()
    }

    fn with_claims<T>(f: impl FnOnce(&Claims<'_>) -> T) -> T {
        let scopes = vec!["mlflow:read".to_string(), "mlflow:access".to_string()];
        f(&Claims {
            sub: "user-42",
            key_id: "key-7",
            scopes: &scopes,
            is_admin: false,
            service_id: "ml-platform",
            iat: 1_767_225_600,
            exp: 1_767_225_900,
        })
    }

    fn b64url_json(part: &str) -> serde_json::Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    #[test]
    fn parses_pkcs8_v1_to_the_rfc8032_public_key() {
        let key = SigningKey::parse(RFC8032_PEM).unwrap();
        assert_eq!(hex::encode(key.public_key()), RFC8032_PUBLIC);
    }

    #[test]
    fn parses_pkcs8_v2_and_crlf_and_surrounding_blank_lines() {
        let v2 = SigningKey::parse(RFC8032_PEM_V2).unwrap();
        assert_eq!(hex::encode(v2.public_key()), RFC8032_PUBLIC);
        let crlf = format!("\r\n  {}\r\n\r\n", RFC8032_PEM.replace('\n', "\r\n"));
        let v1 = SigningKey::parse(&crlf).unwrap();
        assert_eq!(hex::encode(v1.public_key()), RFC8032_PUBLIC);
    }

    #[test]
    fn token_verifies_with_the_public_key() {
        let token = with_claims(|c| signer().sign(c)).unwrap();
        let (input, signature) = token.rsplit_once('.').unwrap();
        let signature: [u8; 64] = URL_SAFE_NO_PAD
            .decode(signature)
            .unwrap()
            .try_into()
            .unwrap();
        let public = SigningKey::parse(RFC8032_PEM).unwrap().public_key();
        let verifying = ed25519_dalek::VerifyingKey::from_bytes(&public).unwrap();
        let signature = ed25519_dalek::Signature::from_bytes(&signature);
        assert!(verifying.verify(input.as_bytes(), &signature).is_ok());
        let mut tampered = input.to_string();
        tampered.push(' ');
        assert!(verifying.verify(tampered.as_bytes(), &signature).is_err());
    }

    #[test]
    fn header_and_claims_are_as_mlflow_expects() {
        let token = with_claims(|c| signer().sign(c)).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert!(!token.contains('=') && !token.contains('+') && !token.contains('/'));
        assert_eq!(
            b64url_json(parts[0]),
            serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": "hokusai-2026-01"})
        );
        assert_eq!(
            b64url_json(parts[1]),
            serde_json::json!({
                "iss": "hokusai-auth-filter", "aud": "mlflow", "sub": "user-42",
                "key_id": "key-7", "scopes": ["mlflow:read", "mlflow:access"],
                "is_admin": false, "service_id": "ml-platform",
                "iat": 1_767_225_600, "exp": 1_767_225_900,
            })
        );
    }

    #[test]
    fn fixed_key_and_claims_give_the_pyjwt_checked_token() {
        assert_eq!(with_claims(|c| signer().sign(c)).unwrap(), EXPECTED_TOKEN);
    }

    #[test]
    fn kid_and_claims_are_json_escaped() {
        let key = SigningKey::parse(RFC8032_PEM).unwrap();
        let s = Signer::new(key, "a\"b", "i", "a").unwrap();
        let token = with_claims(|c| {
            s.sign(&Claims {
                sub: "x\"}\n",
                ..*c
            })
        })
        .unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(b64url_json(parts[0])["kid"], "a\"b");
        assert_eq!(b64url_json(parts[1])["sub"], "x\"}\n");
    }

    #[test]
    fn debug_shows_only_the_public_key() {
        let debug = format!("{:?}", signer());
        assert!(debug.contains(&URL_SAFE_NO_PAD.encode(hex::decode(RFC8032_PUBLIC).unwrap())));
        assert_leaks_nothing(&debug, RFC8032_PEM);
    }

    const RSA_PKCS8: &str = "-----BEGIN PRIVATE KEY-----
MIICdwIBADANBgkqhkiG9w0BAQEFAASCAmEwggJdAgEAAoGBAM/tU1vGXGuNVw61
3DYZCLnB5tonKQm0N1spBQ2k5gSVFNHJHB/pU3Q3GCYWdWLsOCaIJaMXXi0Ok9I2
WaETQyGa4L0v0IEZur0qroigI1IECbSa/NwUWIi3OsUWxk5bGfGPeoetKXlRa+Ay
8p8MIvuGv9Mumu3Fr0XpHNP2+bnJAgMBAAECgYAO5up3hGLxTmLz6fLLacXnUk9S
SUY2rNTe0rTLAot9vpWMZ4Z9fwJ9LMmtSSTGnzlzAYT5CF62ifnsMfsAgVnpOIOk
BYam4BeiaYhr2mFsSp6wFSlAK8pFRDVNjGS3FfOIkMV9FxmygZK7JCOlTbrHXMOj
XugA48sN0e/G8xjygQJBAPb4mVaK9f8EM2NrfqSvoJ5N++q7pxipiHDsw21HHcdA
QxLPXnEL0ecdwxde+o14nRwGMzlAUBukxYLKqwhMx9kCQQDXh1BQYNPTO2OCG1cB
bqReblf0QZIEbzrI3NE5wGdRDPDM5NUox2W5fCEz15VghVs54/dZ8iUdbTozVATp
qrtxAkEA2uZtwu9YKrimc7CLh5zDWIz2hI/fA1UAwlaYwPsPwdOLn9h9dOVtHtSa
XtSob0xAtN4p+MywNFBPYCYSgkDLwQJASVIQIXf/N9HxVTalz6frJPDW3RJdcULB
tclhKAtrWmhTlvCWD2xeD87JoNBLUe2sDjKeWCwHMk6RSRrhHPjnEQJBAIu4zMdv
A9B7blEur4u5oJ+GrgxcuuXrfymLPmwsnNnVY0epDGnyJpQFV2hI69nT6TTpHExM
DAnq1Mcp0mEdP8k=
-----END PRIVATE KEY-----
";
    const EC_PKCS8: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgg7B9w0VAcH2pO5Aw
ZejhkTSbyQkyamsAMp9iVDum4G+hRANCAAQNhv4JQrnEHFx2OdPma7m0n/+NjvGq
RHdsbxVdRV7Vetwhjd/P1puqtL98NV4tuQiP4PktWb6F7DhmscHi1kzU
-----END PRIVATE KEY-----
";
    const EC_SEC1: &str = "-----BEGIN EC PRIVATE KEY-----
MHcCAQEEIIOwfcNFQHB9qTuQMGXo4ZE0m8kJMmprADKfYlQ7puBvoAoGCCqGSM49
AwEHoUQDQgAEDYb+CUK5xBxcdjnT5mu5tJ//jY7xqkR3bG8VXUVe1XrcIY3fz9ab
qrS/fDVeLbkIj+D5LVm+hew4ZrHB4tZM1A==
-----END EC PRIVATE KEY-----
";
    const ED448_PKCS8: &str = "-----BEGIN PRIVATE KEY-----
MEcCAQAwBQYDK2VxBDsEObdAZXcT/I76LjVU/n0l5lolgqJ27tIXhn1i51XrMl6i
0qh2JNB/5EGDd8WTyi5OJHsWdL9RnGm85A==
-----END PRIVATE KEY-----
";
    const X25519_PKCS8: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VuBCIEIAi0Oe1qoX8ko3NM0O5RdAoFgjHVI07metWlAxPvFB1O
-----END PRIVATE KEY-----
";
    /// RFC 8410 section 10.3: v2 with attributes, which we do not parse.
    const ED25519_WITH_ATTRIBUTES: &str = "-----BEGIN PRIVATE KEY-----
MHICAQEwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC
oB8wHQYKKoZIhvcNAQkJFDEPDA1DdXJkbGUgQ2hhaXJzgSEAGb9ECWmEzf6FQbrB
Z9w7lshQhqowtrbLDFw4rXAxZuE=
-----END PRIVATE KEY-----
";

    /// No six-character run of the PEM body, and no hex of its bytes, may
    /// appear in the message.
    fn assert_leaks_nothing(message: &str, pem: &str) {
        let body: String = pem
            .lines()
            .filter(|l| !l.contains("-----"))
            .collect::<String>()
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        let chars: Vec<char> = body.chars().collect();
        for window in chars.windows(6) {
            let run: String = window.iter().collect();
            assert!(!message.contains(&run), "{message:?} contains {run:?}");
        }
        if let Ok(der) = STANDARD.decode(&body) {
            for window in der.windows(4) {
                assert!(
                    !message.to_lowercase().contains(&hex::encode(window)),
                    "{message:?}"
                );
            }
        }
    }

    fn parse_err(pem: &str) -> String {
        let e = SigningKey::parse(pem).unwrap_err();
        assert_leaks_nothing(&e, pem);
        e
    }

    #[test]
    fn other_key_types_are_named_without_quoting_the_key() {
        for (pem, named) in [
            (RSA_PKCS8, "got an RSA key"),
            (EC_PKCS8, "got an EC key"),
            (EC_SEC1, "got an EC key"),
            (ED448_PKCS8, "got an Ed448 key"),
            (X25519_PKCS8, "got an X25519 key"),
            (ED25519_WITH_ATTRIBUTES, "unsupported PKCS#8 layout"),
            (
                &RSA_PKCS8.replace("PRIVATE KEY", "RSA PRIVATE KEY"),
                "got an RSA key",
            ),
            (
                &RSA_PKCS8.replace("PRIVATE KEY", "ENCRYPTED PRIVATE KEY"),
                "encrypted",
            ),
            (
                &RSA_PKCS8.replace("PRIVATE KEY", "OPENSSH PRIVATE KEY"),
                "OpenSSH",
            ),
            (
                &RSA_PKCS8.replace("PRIVATE KEY", "PUBLIC KEY"),
                "a public key",
            ),
            (
                &RSA_PKCS8.replace("PRIVATE KEY", "CERTIFICATE"),
                "another kind",
            ),
        ] {
            let e = parse_err(pem);
            assert!(e.contains(named), "{e}");
        }
    }

    #[test]
    fn malformed_pems_are_rejected_without_quoting_the_key() {
        let body = "MC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g";
        let pem = |b: &str| format!("{BEGIN}\n{b}\n{END}\n");
        // One seed byte short, one too many (still valid base64).
        let short = STANDARD.encode(&STANDARD.decode(body).unwrap()[..47]);
        let mut long_der = STANDARD.decode(body).unwrap();
        long_der.push(0);
        let long = STANDARD.encode(&long_der);
        for (text, says) in [
            (pem(&short), "wrong length"),
            (pem(&long), "wrong length"),
            (pem(&body.replace('/', "!")), "not valid base64"),
            (pem(&body[..body.len() - 1]), "not valid base64"),
            (pem(""), "unknown type"),
            (pem("AAAA"), "unknown type"),
            (body.to_string(), "got not PEM"),
            (String::new(), "got not PEM"),
            (format!("{BEGIN}\n{body}\n"), "does not end with"),
            (format!("junk {BEGIN}\n{body}\n{END}"), "got not PEM"),
        ] {
            let e = parse_err(&text);
            assert!(e.contains(says), "{e} for {text:?}");
        }
    }

    #[test]
    fn v2_with_a_mismatched_or_truncated_public_key_is_rejected() {
        let mut der = STANDARD
            .decode(
                RFC8032_PEM_V2
                    .lines()
                    .filter(|l| !l.starts_with("---"))
                    .collect::<String>(),
            )
            .unwrap();
        let last = der.len() - 1;
        der[last] ^= 1;
        let pem = format!("{BEGIN}\n{}\n{END}", STANDARD.encode(&der));
        assert!(parse_err(&pem).contains("does not match"));
        let truncated = format!("{BEGIN}\n{}\n{END}", STANDARD.encode(&der[..last]));
        assert!(parse_err(&truncated).contains("wrong length or layout"));
    }

    #[test]
    fn parse_never_panics_on_arbitrary_der() {
        for len in 0..100 {
            for fill in [0x00u8, 0x30, 0xff] {
                let mut der = PKCS8_V2_PREFIX.to_vec();
                der.resize(len, fill);
                let _ = SigningKey::parse(&format!("{BEGIN}\n{}\n{END}", STANDARD.encode(&der)));
            }
        }
    }
}
