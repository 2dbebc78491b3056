//! Verdict cache entries for proxy-wasm shared data.
//!
//! Envoy never frees a shared-data key, so the cache is a fixed table of
//! slots: a key's SHA-256 digest picks its slot, and a newer entry simply
//! replaces whatever the slot held. The raw key is never stored: entries
//! carry the full digest and are only trusted when it matches.

use crate::validation::Identity;
use sha2::{Digest as _, Sha256};

pub type Digest = [u8; 32];

const VERSION: u8 = 1;
const ALLOWED: u8 = 1;
const INVALID: u8 = 2;
const NONE16: u16 = u16::MAX;

/// A digest of the key, bound to the configuration it was validated under
/// (so routes with different `service_id`s never share verdicts). Only 8
/// bytes of the namespace go in, so that a 40-byte key still hashes in a
/// single SHA-256 block.
pub fn digest(namespace: &Digest, key: &str) -> Digest {
    let mut h = Sha256::new();
    h.update(namespace.get(..8).unwrap_or(namespace));
    h.update(key.as_bytes());
    h.finalize().into()
}

/// The namespace of a configuration: everything that changes what a
/// verdict means.
pub fn namespace(parts: &[&str]) -> Digest {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    h.finalize().into()
}

pub fn slot_of(d: &Digest, slots: u32) -> u32 {
    let mut first = [0u8; 8];
    first.copy_from_slice(d.get(..8).unwrap_or(&[0; 8]));
    (u64::from_le_bytes(first) % u64::from(slots.max(1))) as u32
}

/// A short, non-reversible tag for logs: 8 hex digits of the digest.
pub fn short_hash(d: &Digest) -> String {
    let hex = |n: u8| char::from(if n < 10 { b'0' + n } else { b'a' + n - 10 });
    let mut s = String::with_capacity(8);
    for b in d.iter().take(4) {
        s.push(hex(b >> 4));
        s.push(hex(b & 15));
    }
    s
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cached {
    Allowed(Identity),
    Invalid,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub digest: Digest,
    pub verdict: Cached,
    pub expires_at_ms: u64,
}

/// What a slot says about a key at a given time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// A verdict and when it expires.
    Fresh(Cached, u64),
    /// Expired positive verdict still inside the stale-if-error grace:
    /// usable only if the key service turns out to be unavailable.
    Stale(Identity),
    Miss,
}

pub fn lookup(slot: Option<&[u8]>, digest: &Digest, now_ms: u64, grace_ms: u64) -> Lookup {
    let Some(e) = slot.and_then(Entry::decode) else {
        return Lookup::Miss;
    };
    if &e.digest != digest {
        return Lookup::Miss;
    }
    if now_ms < e.expires_at_ms {
        return Lookup::Fresh(e.verdict, e.expires_at_ms);
    }
    match e.verdict {
        Cached::Allowed(id) if now_ms < e.expires_at_ms.saturating_add(grace_ms) => {
            Lookup::Stale(id)
        }
        _ => Lookup::Miss,
    }
}

fn put_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) if s.len() < NONE16 as usize => {
            out.extend_from_slice(&(s.len() as u16).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        _ => out.extend_from_slice(&NONE16.to_le_bytes()),
    }
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.b.len() < n {
            return None;
        }
        let (head, tail) = self.b.split_at(n);
        self.b = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1)?.first().copied()
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn string(&mut self, len: usize) -> Option<String> {
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }
    fn opt_str(&mut self) -> Option<Option<String>> {
        match self.u16()? {
            NONE16 => Some(None),
            n => Some(Some(self.string(n.into())?)),
        }
    }
}

impl Entry {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(96);
        out.push(VERSION);
        out.extend_from_slice(&self.digest);
        match &self.verdict {
            Cached::Invalid => {
                out.push(INVALID);
                out.extend_from_slice(&self.expires_at_ms.to_le_bytes());
            }
            Cached::Allowed(id) => {
                out.push(ALLOWED);
                out.extend_from_slice(&self.expires_at_ms.to_le_bytes());
                let flags = u8::from(id.is_admin)
                    | u8::from(id.has_sufficient_balance) << 1
                    | u8::from(id.rate_limit_per_hour.is_some()) << 2;
                out.push(flags);
                out.extend_from_slice(&id.rate_limit_per_hour.unwrap_or(0).to_le_bytes());
                put_str(&mut out, id.user_id.as_deref());
                put_str(&mut out, id.key_id.as_deref());
                // validation bounds scopes well below these limits
                let scopes: Vec<&String> = id
                    .scopes
                    .iter()
                    .filter(|s| s.len() <= 255)
                    .take(255)
                    .collect();
                out.push(scopes.len() as u8);
                for s in scopes {
                    out.push(s.len() as u8);
                    out.extend_from_slice(s.as_bytes());
                }
            }
        }
        out
    }

    /// Any damage, truncation or unknown version decodes to None (a miss).
    pub fn decode(b: &[u8]) -> Option<Entry> {
        let mut r = Reader { b };
        if r.u8()? != VERSION {
            return None;
        }
        let digest: Digest = r.take(32)?.try_into().ok()?;
        let kind = r.u8()?;
        let expires_at_ms = r.u64()?;
        let verdict = match kind {
            INVALID => Cached::Invalid,
            ALLOWED => {
                let flags = r.u8()?;
                let rate = r.u64()?;
                let user_id = r.opt_str()?;
                let key_id = r.opt_str()?;
                let n = r.u8()?;
                let mut scopes = Vec::with_capacity(n.into());
                for _ in 0..n {
                    let len = r.u8()?;
                    scopes.push(r.string(len.into())?);
                }
                Cached::Allowed(Identity {
                    user_id,
                    key_id,
                    scopes,
                    rate_limit_per_hour: (flags & 4 != 0).then_some(rate),
                    is_admin: flags & 1 != 0,
                    has_sufficient_balance: flags & 2 != 0,
                })
            }
            _ => return None,
        };
        if !r.b.is_empty() {
            return None;
        }
        Some(Entry {
            digest,
            verdict,
            expires_at_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> Identity {
        Identity {
            user_id: Some("u_1".into()),
            key_id: Some("k_1".into()),
            scopes: vec!["mlflow:read".into(), "mlflow:write".into()],
            rate_limit_per_hour: Some(500),
            is_admin: true,
            has_sufficient_balance: false,
        }
    }

    fn ns() -> Digest {
        namespace(&["hokusai_auth", "platform"])
    }

    #[test]
    fn entries_round_trip() {
        let d = digest(&ns(), "hk_test_abc");
        for verdict in [
            Cached::Invalid,
            Cached::Allowed(id()),
            Cached::Allowed(Identity::default()),
        ] {
            let e = Entry {
                digest: d,
                verdict,
                expires_at_ms: 123_456,
            };
            assert_eq!(Entry::decode(&e.encode()), Some(e));
        }
    }

    #[test]
    fn the_key_is_not_in_the_entry() {
        let key = "hk_test_distinctive_0123456789"; // fixture, not a real key
        let e = Entry {
            digest: digest(&ns(), key),
            verdict: Cached::Allowed(id()),
            expires_at_ms: 1,
        };
        let bytes = e.encode();
        assert!(!bytes
            .windows(8)
            .any(|w| key.as_bytes().windows(8).any(|k| k == w)));
    }

    #[test]
    fn damaged_entries_are_misses() {
        let e = Entry {
            digest: [7; 32],
            verdict: Cached::Allowed(id()),
            expires_at_ms: 9,
        }
        .encode();
        for n in 0..e.len() {
            assert_eq!(Entry::decode(&e[..n]), None, "truncated at {n}");
        }
        let mut longer = e.clone();
        longer.push(0);
        assert_eq!(Entry::decode(&longer), None);
        let mut v2 = e.clone();
        v2[0] = 2;
        assert_eq!(Entry::decode(&v2), None);
        let mut kind = e;
        kind[33] = 9;
        assert_eq!(Entry::decode(&kind), None);
    }

    #[test]
    fn lookup_honours_digest_expiry_and_grace() {
        let d = digest(&ns(), "hk_a");
        let other = digest(&ns(), "hk_b");
        let allowed = Entry {
            digest: d,
            verdict: Cached::Allowed(id()),
            expires_at_ms: 1000,
        }
        .encode();
        let invalid = Entry {
            digest: d,
            verdict: Cached::Invalid,
            expires_at_ms: 1000,
        }
        .encode();
        assert_eq!(
            lookup(Some(&allowed), &d, 999, 0),
            Lookup::Fresh(Cached::Allowed(id()), 1000)
        );
        assert_eq!(lookup(Some(&allowed), &d, 1000, 0), Lookup::Miss);
        assert_eq!(lookup(Some(&allowed), &d, 1500, 600), Lookup::Stale(id()));
        assert_eq!(lookup(Some(&allowed), &d, 1600, 600), Lookup::Miss);
        assert_eq!(
            lookup(Some(&invalid), &d, 999, 0),
            Lookup::Fresh(Cached::Invalid, 1000)
        );
        assert_eq!(
            lookup(Some(&invalid), &d, 1500, 600),
            Lookup::Miss,
            "401s are never stale-served"
        );
        assert_eq!(lookup(Some(&allowed), &other, 0, 0), Lookup::Miss);
        assert_eq!(lookup(None, &d, 0, 0), Lookup::Miss);
        assert_eq!(lookup(Some(b"junk"), &d, 0, 0), Lookup::Miss);
    }

    #[test]
    fn namespaces_separate_configurations() {
        let a = namespace(&["c", "platform"]);
        let b = namespace(&["c", "ml-platform"]);
        let c = namespace(&["cp", "latform"]);
        assert_ne!(digest(&a, "k"), digest(&b, "k"));
        assert_ne!(a, c);
    }

    #[test]
    fn slots_stay_in_range() {
        for i in 0..1000 {
            let d = digest(&ns(), &format!("k{i}"));
            assert!(slot_of(&d, 16) < 16);
        }
        assert_eq!(short_hash(&[0xab; 32]), "abababab");
        let mut d = [0u8; 32];
        d[..4].copy_from_slice(&[0x01, 0x23, 0xef, 0x90]);
        assert_eq!(short_hash(&d), "0123ef90");
    }
}
