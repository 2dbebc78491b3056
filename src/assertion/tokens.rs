//! Signed assertions, one per key, policy and verdict: a signature costs
//! far more than the rest of a cache hit, so a token is signed when a
//! verdict is new and then reused until it is close to its own expiry. Each
//! worker keeps the tokens it used; a worker that has none for a verdict
//! looks in Envoy's shared data first (one table for the whole process, so
//! the native build's workers, and the .wasm's VMs, sign once between them)
//! and signs only if no other worker has. A token never outlives its
//! verdict by more than `SKEW_S`; an identity served stale
//! (stale-if-error) gets tokens of `SKEW_S`.

use super::jws::{Claims, Signer};
use crate::host::Host;
use crate::tables::memo::DirectMap;
use crate::tables::slots::SlotTable;
use crate::types::Digest;
use crate::verdict::key_service::Identity;
use std::cell::Cell;
use std::rc::Rc;

/// How long past its verdict's expiry a token may stay valid, and the
/// lifetime of a stale identity's token.
const SKEW_S: u64 = 10;
/// A token with less left than this is signed again: it must still be
/// valid when MLflow reads it.
const MIN_LEFT_S: u64 = 5;
const SLOT_PREFIX: &str = "hokusai_auth.v1.assertion.";
/// The shared entry's fixed part: digest, policy, verdict expiry, exp.
const HEAD: usize = 32 + 4 + 8 + 8;

/// What a token was signed for: the key, the policy, its verdict's expiry
/// (0: served stale) and the token's own expiry.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Signed {
    digest: Digest,
    policy: usize,
    verdict_expires_ms: u64,
    exp_s: u64,
}

impl Signed {
    /// Whether a token signed for `self` serves `wanted` at `now_s`.
    fn serves(&self, wanted: &Signed, now_s: u64) -> bool {
        self.digest == wanted.digest
            && self.policy == wanted.policy
            && self.verdict_expires_ms == wanted.verdict_expires_ms
            && self.exp_s >= now_s + MIN_LEFT_S
    }
}

/// The two host calls the shared tier needs (every `Host` has them).
pub trait SharedData {
    fn read(&self, key: &str) -> Option<Vec<u8>>;
    fn write(&self, key: &str, value: &[u8]);
}

impl<H: Host> SharedData for H {
    fn read(&self, key: &str) -> Option<Vec<u8>> {
        self.shared_get(key).0
    }

    /// Unconditional: two workers signing at once both write valid tokens.
    fn write(&self, key: &str, value: &[u8]) {
        self.shared_set(key, value, None);
    }
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
    slots: SlotTable,
}

impl Tokens {
    pub fn new(size: u32) -> Self {
        Tokens {
            table: DirectMap::new(size as usize),
            slots: SlotTable::new(SLOT_PREFIX, size),
        }
    }

    /// The token for `id`: this worker's, else another worker's from shared
    /// data, else signed now. None for an identity without a user.
    pub fn token<S: SharedData>(
        &self,
        shared: &S,
        r: &Request<'_>,
        id: &Identity,
    ) -> Option<Rc<str>> {
        let sub = id.user_id.as_deref()?;
        let now_s = r.now_ms / 1000;
        let wanted = Signed {
            digest: r.digest,
            policy: r.policy,
            verdict_expires_ms: r.verdict_expires_ms.unwrap_or(0),
            exp_s: match r.verdict_expires_ms {
                Some(ms) => (now_s + r.ttl_s).min(ms / 1000 + SKEW_S),
                None => now_s + SKEW_S,
            },
        };
        let hash = slot_hash(&r.digest, r.policy);
        // What the token found or made was signed for (its own exp).
        let got = Cell::new(wanted);
        let find_or_sign = || {
            let slot = self.slots.key(hash);
            if let Some((signed, token)) = read_shared(shared.read(&slot), &wanted, now_s) {
                got.set(signed);
                return Some(token);
            }
            let token = sign(r, id, sub, now_s, wanted.exp_s)?;
            shared.write(&slot, &encode(&wanted, &token));
            Some(token)
        };
        self.table.get_or(
            hash,
            |kept| kept.serves(&wanted, now_s),
            || got.get(),
            find_or_sign,
        )
    }
}

fn sign(r: &Request<'_>, id: &Identity, sub: &str, now_s: u64, exp_s: u64) -> Option<Rc<str>> {
    let claims = Claims {
        sub,
        key_id: id.key_id.as_deref().unwrap_or(""),
        scopes: &id.scopes,
        is_admin: id.is_admin,
        service_id: r.service_id,
        iat: now_s,
        exp: exp_s,
    };
    match r.signer.sign(&claims) {
        Ok(token) => Some(Rc::from(token)),
        Err(e) => {
            log::error!("hokusai-auth: cannot sign the identity assertion: {e}");
            None
        }
    }
}

fn encode(s: &Signed, token: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEAD + token.len());
    out.extend_from_slice(&s.digest);
    out.extend_from_slice(&u32::try_from(s.policy).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&s.verdict_expires_ms.to_le_bytes());
    out.extend_from_slice(&s.exp_s.to_le_bytes());
    out.extend_from_slice(token.as_bytes());
    out
}

/// Another worker's token from the shared slot, if it serves `wanted`.
/// Anything else in the slot (another key's, a torn or foreign value) is
/// not used.
fn read_shared(slot: Option<Vec<u8>>, wanted: &Signed, now_s: u64) -> Option<(Signed, Rc<str>)> {
    let bytes = slot?;
    let (head, token) = bytes.split_at_checked(HEAD)?;
    let word = |at: usize| -> Option<u64> {
        Some(u64::from_le_bytes(head.get(at..at + 8)?.try_into().ok()?))
    };
    let signed = Signed {
        digest: head.get(..32)?.try_into().ok()?,
        policy: u32::from_le_bytes(head.get(32..36)?.try_into().ok()?) as usize,
        verdict_expires_ms: word(36)?,
        exp_s: word(44)?,
    };
    let token = std::str::from_utf8(token)
        .ok()
        .filter(|t| t.split('.').count() == 3)?;
    signed
        .serves(wanted, now_s)
        .then(|| (signed, Rc::from(token)))
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
    use std::cell::RefCell;
    use std::collections::HashMap;

    /// Envoy's shared data, as every worker sees it.
    #[derive(Default)]
    struct Shared(RefCell<HashMap<String, Vec<u8>>>);

    impl SharedData for Shared {
        fn read(&self, key: &str) -> Option<Vec<u8>> {
            self.0.borrow().get(key).cloned()
        }
        fn write(&self, key: &str, value: &[u8]) {
            self.0.borrow_mut().insert(key.to_string(), value.to_vec());
        }
    }

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
        let (s, tokens, shared) = (signer(), Tokens::new(16), Shared::default());
        let first = tokens.token(
            &shared,
            &request(&s, Some(100_000), 50_000),
            &id(Some("u_1")),
        );
        let again = tokens.token(
            &shared,
            &request(&s, Some(100_000), 51_000),
            &id(Some("u_1")),
        );
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
        let late = tokens.token(
            &shared,
            &request(&s, Some(100_000), 106_000),
            &id(Some("u_1")),
        );
        assert_ne!(late, first, "too close to its own expiry");
        let newer = tokens.token(
            &shared,
            &request(&s, Some(160_000), 107_000),
            &id(Some("u_1")),
        );
        assert_ne!(newer, late, "a new verdict, a new token");
        assert_eq!(
            claims(newer.as_deref().unwrap())["exp"],
            107 + 60,
            "capped by the ttl"
        );
    }

    #[test]
    fn a_stale_identity_gets_short_tokens_and_no_user_gets_none() {
        let (s, tokens, shared) = (signer(), Tokens::new(16), Shared::default());
        let stale = tokens
            .token(&shared, &request(&s, None, 500_000), &id(Some("u_1")))
            .unwrap();
        assert_eq!(claims(&stale)["exp"], 500 + SKEW_S);
        assert_eq!(
            tokens.token(&shared, &request(&s, Some(900_000), 500_000), &id(None)),
            None
        );
    }

    #[test]
    fn a_worker_uses_the_token_another_signed_and_ignores_other_slots() {
        let (s, shared) = (signer(), Shared::default());
        let (one, two) = (Tokens::new(16), Tokens::new(16));
        let first = one.token(
            &shared,
            &request(&s, Some(100_000), 50_000),
            &id(Some("u_1")),
        );
        let other = two.token(
            &shared,
            &request(&s, Some(100_000), 52_000),
            &id(Some("u_1")),
        );
        assert_eq!(first, other, "found in shared data, not signed again");
        assert_eq!(claims(other.as_deref().unwrap())["iat"], 50);
        let newer = two.token(
            &shared,
            &request(&s, Some(200_000), 53_000),
            &id(Some("u_1")),
        );
        assert_ne!(newer, other, "another verdict: signed anew");
        for junk in [vec![], vec![7; 10], vec![7; HEAD + 3]] {
            let slot = one.slots.key(slot_hash(&[7; 32], 0));
            shared.write(&slot, &junk);
            let fresh = Tokens::new(16).token(
                &shared,
                &request(&s, Some(300_000), 54_000),
                &id(Some("u_1")),
            );
            assert_eq!(
                claims(fresh.as_deref().unwrap())["iat"],
                54,
                "a bad slot is not used"
            );
        }
    }
}
