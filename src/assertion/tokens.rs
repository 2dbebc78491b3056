//! Each worker's signed assertions, one per key, policy and verdict: a
//! signature costs far more than the rest of a cache hit, so a token is
//! signed when a verdict is new and then reused until it is close to its
//! own expiry. A token never outlives its verdict by more than `SKEW_S`;
//! an identity served stale (stale-if-error) gets tokens of `SKEW_S`.

use super::jws::{Claims, Signer};
use crate::tables::memo::DirectMap;
use crate::types::Digest;
use crate::verdict::key_service::Identity;
use std::rc::Rc;

/// How long past its verdict's expiry a token may stay valid, and the
/// lifetime of a stale identity's token.
const SKEW_S: u64 = 10;
/// A token with less left than this is signed again: it must still be
/// valid when MLflow reads it.
const MIN_LEFT_S: u64 = 5;

/// What a token was signed for: the key, the policy, its verdict's expiry
/// (0: served stale) and the token's own expiry.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Signed {
    digest: Digest,
    policy: usize,
    verdict_expires_ms: u64,
    exp_s: u64,
}

/// One assertion to sign or find.
pub struct Request<'a> {
    pub signer: &'a Signer,
    pub ttl_s: u64,
    pub service_id: &'a str,
    pub digest: Digest,
    pub policy: usize,
    /// None: the identity is served stale, its verdict expired.
    pub verdict_expires_ms: Option<u64>,
    pub now_ms: u64,
}

pub struct Tokens {
    table: DirectMap<Signed, Option<Rc<str>>>,
}

impl Tokens {
    pub fn new(size: usize) -> Self {
        Tokens {
            table: DirectMap::new(size),
        }
    }

    /// The token for `id`, signed now only if the one kept is for another
    /// verdict or about to expire. None for an identity without a user.
    pub fn token(&self, r: &Request<'_>, id: &Identity) -> Option<Rc<str>> {
        let sub = id.user_id.as_deref()?;
        let now_s = r.now_ms / 1000;
        let verdict_expires_ms = r.verdict_expires_ms.unwrap_or(0);
        let exp_s = match r.verdict_expires_ms {
            Some(ms) => (now_s + r.ttl_s).min(ms / 1000 + SKEW_S),
            None => now_s + SKEW_S,
        };
        let wanted = Signed {
            digest: r.digest,
            policy: r.policy,
            verdict_expires_ms,
            exp_s,
        };
        let fresh = |kept: &Signed| {
            kept.digest == wanted.digest
                && kept.policy == wanted.policy
                && kept.verdict_expires_ms == wanted.verdict_expires_ms
                && kept.exp_s >= now_s + MIN_LEFT_S
        };
        let claims = Claims {
            sub,
            key_id: id.key_id.as_deref().unwrap_or(""),
            scopes: &id.scopes,
            is_admin: id.is_admin,
            service_id: r.service_id,
            iat: now_s,
            exp: exp_s,
        };
        let sign = || match r.signer.sign(&claims) {
            Ok(token) => Some(Rc::from(token)),
            Err(e) => {
                log::error!("hokusai-auth: cannot sign the identity assertion: {e}");
                None
            }
        };
        self.table
            .get_or(slot_hash(&r.digest, r.policy), fresh, || wanted, sign)
    }
}

/// The digest is a SHA-256: its first bytes are as good a hash as any.
fn slot_hash(digest: &Digest, policy: usize) -> u64 {
    let first = digest.first_chunk::<8>().copied().unwrap_or_default();
    u64::from_le_bytes(first) ^ policy as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assertion::jws::SigningKey;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;

    const PEM: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g
-----END PRIVATE KEY-----";

    fn signer() -> Signer {
        Signer::new(SigningKey::parse(PEM).unwrap(), "k1", "iss", "mlflow").unwrap()
    }

    fn id(user: Option<&str>) -> Identity {
        Identity {
            user_id: user.map(str::to_string),
            key_id: Some("k_1".into()),
            scopes: vec!["mlflow:read".into()],
            is_admin: true,
            ..Identity::default()
        }
    }

    fn request(signer: &Signer, verdict_expires_ms: Option<u64>, now_ms: u64) -> Request<'_> {
        Request {
            signer,
            ttl_s: 60,
            service_id: "platform",
            digest: [7; 32],
            policy: 0,
            verdict_expires_ms,
            now_ms,
        }
    }

    fn claims(token: &str) -> serde_json::Value {
        let payload = token.split('.').nth(1).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
    }

    #[test]
    fn one_signature_per_verdict_until_close_to_expiry() {
        let (s, tokens) = (signer(), Tokens::new(16));
        let first = tokens.token(&request(&s, Some(100_000), 50_000), &id(Some("u_1")));
        let again = tokens.token(&request(&s, Some(100_000), 51_000), &id(Some("u_1")));
        assert!(Rc::ptr_eq(first.as_ref().unwrap(), again.as_ref().unwrap()));
        let c = claims(first.as_deref().unwrap());
        assert_eq!(
            (c["sub"].as_str(), c["iat"].as_u64()),
            (Some("u_1"), Some(50))
        );
        assert_eq!(c["exp"], 100 + SKEW_S, "capped by the verdict's expiry");
        assert_eq!(
            (c["is_admin"].as_bool(), c["service_id"].as_str()),
            (Some(true), Some("platform"))
        );
        let late = tokens.token(&request(&s, Some(100_000), 106_000), &id(Some("u_1")));
        assert_ne!(late, first, "too close to its own expiry");
        let newer = tokens.token(&request(&s, Some(160_000), 107_000), &id(Some("u_1")));
        assert_ne!(newer, late, "a new verdict, a new token");
        assert_eq!(
            claims(newer.as_deref().unwrap())["exp"],
            107 + 60,
            "capped by the ttl"
        );
    }

    #[test]
    fn a_stale_identity_gets_short_tokens_and_no_user_gets_none() {
        let (s, tokens) = (signer(), Tokens::new(16));
        let stale = tokens
            .token(&request(&s, None, 500_000), &id(Some("u_1")))
            .unwrap();
        assert_eq!(claims(&stale)["exp"], 500 + SKEW_S);
        assert_eq!(
            tokens.token(&request(&s, Some(900_000), 500_000), &id(None)),
            None
        );
    }
}
