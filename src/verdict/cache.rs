//! The verdict cache: what the key service said about a key, reused until it
//! expires. Two tiers: a fixed table of shared-data slots, which every
//! worker of the Envoy process reads, and each worker's own copy of the
//! verdicts it has read or stored there (reading shared data is the dearest
//! hostcall on the hit path: Envoy takes a lock, copies the entry and calls
//! back into the VM to allocate it).
//!
//! No key is ever stored. Entries are found by a SHA-256 digest of the key
//! bound to the namespace of the key service that judged it, so verdicts
//! for one `service_id` or key service are never used for another, and a
//! slot's entry is only trusted when its full digest matches.

use crate::config::{AuthService, CacheConfig};
use crate::host::Host;
use crate::tables::slots::SlotTable;
use crate::types::Digest;
use crate::verdict::key_service::{Identity, Verdict};
use sha2::{Digest as _, Sha256};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

const SLOT_PREFIX: &str = "hokusai_auth.v1.cache.";

/// What a verdict means: the key service that gave it, asked what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Namespace([u8; 8]);

impl Namespace {
    /// Everything that changes what a verdict means, each part
    /// length-prefixed so that no two configurations run together.
    pub fn of(auth: &AuthService) -> Namespace {
        let mut h = Sha256::new();
        for part in [
            auth.cluster.as_str(),
            auth.authority.as_str(),
            auth.path.as_str(),
            auth.service_id.as_str(),
            auth.key_form.as_str(),
        ] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        let full: Digest = h.finalize().into();
        let mut short = [0u8; 8];
        short.copy_from_slice(full.get(..8).unwrap_or(&[0; 8]));
        Namespace(short)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The key's digest in this namespace. Only 8 bytes of namespace go in,
    /// so that a 40-byte key still hashes in a single SHA-256 block.
    pub fn digest(&self, key: &str) -> Digest {
        let mut h = Sha256::new();
        h.update(self.0);
        h.update(key.as_bytes());
        h.finalize().into()
    }
}

/// A short, non-reversible name for a key in logs: 8 hex digits of its digest.
pub fn short_hash(d: &Digest) -> String {
    hex::encode(d.get(..4).unwrap_or_default())
}

/// A verdict worth keeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cached {
    Allowed(Rc<Identity>),
    Invalid,
}

/// What the cache knows of a key now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// A verdict and when it expires.
    Fresh(Cached, u64),
    /// An expired positive verdict still inside the stale-if-error grace:
    /// usable only if the key service turns out to be unavailable.
    Stale(Rc<Identity>),
    Miss,
}

pub struct VerdictCache {
    slots: SlotTable,
    local: RefCell<HashMap<Digest, (Cached, u64)>>,
    local_capacity: usize,
    ttl_ms: u64,
    negative_ttl_ms: u64,
    stale_if_error_ms: u64,
}

impl VerdictCache {
    pub fn new(cfg: &CacheConfig) -> Self {
        Self {
            slots: SlotTable::new(SLOT_PREFIX, cfg.slots),
            local: RefCell::default(),
            local_capacity: (cfg.slots as usize).max(1),
            ttl_ms: cfg.ttl_ms,
            negative_ttl_ms: cfg.negative_ttl_ms,
            stale_if_error_ms: cfg.stale_if_error_ms,
        }
    }

    /// The worker's copy first, then the shared slot.
    pub fn lookup<H: Host>(&self, host: &H, d: &Digest, now_ms: u64) -> Lookup {
        if let Some((verdict, expires_at_ms)) = self.local_get(d, now_ms) {
            return Lookup::Fresh(verdict, expires_at_ms);
        }
        let (bytes, _) = host.shared_get(&self.slot_key(d));
        match read_slot(bytes.as_deref(), d, now_ms, self.stale_if_error_ms) {
            SlotRead::Fresh(verdict, expires_at_ms) => {
                self.local_put(*d, verdict.clone(), expires_at_ms);
                Lookup::Fresh(verdict, expires_at_ms)
            }
            SlotRead::Stale(id) => Lookup::Stale(id),
            SlotRead::Miss => Lookup::Miss,
        }
    }

    /// Whether the shared slot holds a verdict for `d` that outlives
    /// `expires_at_ms` (another worker refreshed it); this worker's copy
    /// then takes it.
    pub fn refreshed_elsewhere<H: Host>(
        &self,
        host: &H,
        d: &Digest,
        expires_at_ms: u64,
        now_ms: u64,
    ) -> bool {
        let (bytes, _) = host.shared_get(&self.slot_key(d));
        match read_slot(bytes.as_deref(), d, now_ms, 0) {
            SlotRead::Fresh(verdict, later) if later > expires_at_ms => {
                self.local_put(*d, verdict, later);
                true
            }
            _ => false,
        }
    }

    /// Keeps what the key service said, for as long as it may be trusted:
    /// valid keys for the TTL, invalid ones for the negative TTL, and
    /// nothing else (unavailability is never cached).
    pub fn store<H: Host>(&self, host: &H, d: &Digest, verdict: &Verdict, now_ms: u64) {
        let (cached, ttl_ms) = match verdict {
            Verdict::Allowed(id) => (Cached::Allowed(id.clone()), self.ttl_ms),
            Verdict::Invalid if self.negative_ttl_ms > 0 => (Cached::Invalid, self.negative_ttl_ms),
            _ => return,
        };
        let entry = Entry {
            digest: *d,
            verdict: cached,
            expires_at_ms: now_ms.saturating_add(ttl_ms),
        };
        // A lost race only means another worker stored its own verdict.
        host.shared_set(&self.slot_key(d), &entry.encode(), None);
        self.local_put(*d, entry.verdict, entry.expires_at_ms);
    }

    fn slot_key(&self, d: &Digest) -> String {
        let mut first = [0u8; 8];
        first.copy_from_slice(d.get(..8).unwrap_or(&[0; 8]));
        self.slots.key(u64::from_le_bytes(first))
    }

    fn local_get(&self, d: &Digest, now_ms: u64) -> Option<(Cached, u64)> {
        let mut local = self.local.try_borrow_mut().ok()?;
        match local.get(d) {
            Some((verdict, expires)) if now_ms < *expires => Some((verdict.clone(), *expires)),
            Some(_) => {
                local.remove(d);
                None
            }
            None => None,
        }
    }

    fn local_put(&self, d: Digest, verdict: Cached, expires_at_ms: u64) {
        let Ok(mut local) = self.local.try_borrow_mut() else {
            return;
        };
        if local.len() >= self.local_capacity && !local.contains_key(&d) {
            // Bounded: start over rather than track recency on the hot path.
            local.clear();
        }
        local.insert(d, (verdict, expires_at_ms));
    }
}

// --- a slot's entry ----------------------------------------------------------

/// What a shared slot says about a key at a given time.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SlotRead {
    /// A verdict and when it expires.
    Fresh(Cached, u64),
    Stale(Rc<Identity>),
    Miss,
}

fn read_slot(slot: Option<&[u8]>, digest: &Digest, now_ms: u64, grace_ms: u64) -> SlotRead {
    let Some(e) = slot.and_then(Entry::decode) else {
        return SlotRead::Miss;
    };
    if &e.digest != digest {
        return SlotRead::Miss;
    }
    if now_ms < e.expires_at_ms {
        return SlotRead::Fresh(e.verdict, e.expires_at_ms);
    }
    match e.verdict {
        Cached::Allowed(id) if now_ms < e.expires_at_ms.saturating_add(grace_ms) => {
            SlotRead::Stale(id)
        }
        _ => SlotRead::Miss,
    }
}

/// One slot's bytes: a version, the key's digest, the verdict and its expiry,
/// and for a valid key its identity. A fixed little binary layout rather than
/// JSON: it is read on every worker's first sight of a key, and any damage
/// decodes to a miss.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    digest: Digest,
    verdict: Cached,
    expires_at_ms: u64,
}

const VERSION: u8 = 1;
const ALLOWED: u8 = 1;
const INVALID: u8 = 2;
const NONE16: u16 = u16::MAX;
const ADMIN: u8 = 1;
const HAS_RATE_LIMIT: u8 = 4;

impl Entry {
    fn encode(&self) -> Vec<u8> {
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
                encode_identity(&mut out, id);
            }
        }
        out
    }

    /// Any damage, truncation or unknown version decodes to None (a miss).
    fn decode(b: &[u8]) -> Option<Entry> {
        let mut r = Reader { b };
        if r.u8()? != VERSION {
            return None;
        }
        let digest: Digest = r.take(32)?.try_into().ok()?;
        let kind = r.u8()?;
        let expires_at_ms = r.u64()?;
        let verdict = match kind {
            INVALID => Cached::Invalid,
            ALLOWED => Cached::Allowed(Rc::new(decode_identity(&mut r)?)),
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

fn encode_identity(out: &mut Vec<u8>, id: &Identity) {
    let flags = if id.is_admin { ADMIN } else { 0 }
        | if id.rate_limit_per_hour.is_some() {
            HAS_RATE_LIMIT
        } else {
            0
        };
    out.push(flags);
    out.extend_from_slice(&id.rate_limit_per_hour.unwrap_or(0).to_le_bytes());
    put_str(out, id.user_id.as_deref());
    put_str(out, id.key_id.as_deref());
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

fn decode_identity(r: &mut Reader<'_>) -> Option<Identity> {
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
    Some(Identity {
        user_id,
        key_id,
        scopes,
        rate_limit_per_hour: (flags & HAS_RATE_LIMIT != 0).then_some(rate),
        is_admin: flags & ADMIN != 0,
    })
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

/// For the property tests: a slot's bytes read at `now_ms`.
#[cfg(test)]
pub(crate) fn read_slot_for_tests(bytes: &[u8], d: &Digest, now_ms: u64, grace_ms: u64) -> bool {
    read_slot(Some(bytes), d, now_ms, grace_ms) != SlotRead::Miss
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn id() -> Rc<Identity> {
        Rc::new(Identity {
            user_id: Some("u_1".into()),
            key_id: Some("k_1".into()),
            scopes: vec!["mlflow:read".into(), "mlflow:write".into()],
            rate_limit_per_hour: Some(500),
            is_admin: true,
        })
    }

    fn auth(service_id: &str) -> AuthService {
        let json = format!(r#"{{"auth": {{"cluster": "c", "service_id": "{service_id}"}}}}"#);
        Config::parse(json.as_bytes()).unwrap().policy.auth
    }

    fn ns() -> Namespace {
        Namespace::of(&auth("platform"))
    }

    #[test]
    fn entries_round_trip() {
        let d = ns().digest("hk_test_abc");
        for verdict in [
            Cached::Invalid,
            Cached::Allowed(id()),
            Cached::Allowed(Rc::default()),
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
            digest: ns().digest(key),
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
        let d = ns().digest("hk_a");
        let other = ns().digest("hk_b");
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
            read_slot(Some(&allowed), &d, 999, 0),
            SlotRead::Fresh(Cached::Allowed(id()), 1000)
        );
        assert_eq!(read_slot(Some(&allowed), &d, 1000, 0), SlotRead::Miss);
        assert_eq!(
            read_slot(Some(&allowed), &d, 1500, 600),
            SlotRead::Stale(id())
        );
        assert_eq!(read_slot(Some(&allowed), &d, 1600, 600), SlotRead::Miss);
        assert_eq!(
            read_slot(Some(&invalid), &d, 999, 0),
            SlotRead::Fresh(Cached::Invalid, 1000)
        );
        assert_eq!(
            read_slot(Some(&invalid), &d, 1500, 600),
            SlotRead::Miss,
            "401s are never stale-served"
        );
        assert_eq!(read_slot(Some(&allowed), &other, 0, 0), SlotRead::Miss);
        assert_eq!(read_slot(None, &d, 0, 0), SlotRead::Miss);
        assert_eq!(read_slot(Some(b"junk"), &d, 0, 0), SlotRead::Miss);
    }

    #[test]
    fn namespaces_separate_configurations() {
        let a = Namespace::of(&auth("platform"));
        let b = Namespace::of(&auth("ml-platform"));
        assert_ne!(a.digest("k"), b.digest("k"));
        let mut split = auth("latform");
        split.cluster = "cp".into();
        let mut joined = auth("platform");
        joined.cluster = "c".into();
        assert_ne!(Namespace::of(&split), Namespace::of(&joined));
        let mut body = auth("platform");
        body.key_form = crate::config::KeyForm::Body;
        assert_ne!(Namespace::of(&body), a);
    }

    #[test]
    fn slots_stay_in_range_and_short_hashes_are_hex() {
        let t = SlotTable::new("p.", 16);
        for i in 0..1000 {
            let d = ns().digest(&format!("k{i}"));
            let mut first = [0u8; 8];
            first.copy_from_slice(&d[..8]);
            let key = t.key(u64::from_le_bytes(first));
            assert!(key["p.".len()..].parse::<u32>().unwrap() < 16);
        }
        assert_eq!(short_hash(&[0xab; 32]), "abababab");
        let mut d = [0u8; 32];
        d[..4].copy_from_slice(&[0x01, 0x23, 0xef, 0x90]);
        assert_eq!(short_hash(&d), "0123ef90");
    }

    #[test]
    fn a_worker_serves_fresh_verdicts_only_and_stays_bounded() {
        let cfg = Config::parse(br#"{"auth": {"cluster": "c", "service_id": "p"}}"#).unwrap();
        let c = VerdictCache {
            local_capacity: 2,
            ..VerdictCache::new(&cfg.cache)
        };
        let allowed = Cached::Allowed(Rc::default());
        c.local_put([1; 32], allowed.clone(), 100);
        c.local_put([2; 32], Cached::Invalid, 50);
        assert_eq!(
            c.local_get(&[1; 32], 99).map(|(v, _)| v),
            Some(allowed.clone())
        );
        assert_eq!(
            c.local_get(&[2; 32], 49).map(|(v, _)| v),
            Some(Cached::Invalid)
        );
        assert_eq!(c.local_get(&[2; 32], 50), None, "expired");
        assert_eq!(c.local_get(&[3; 32], 0), None);
        c.local_put([3; 32], Cached::Invalid, 10);
        c.local_put([4; 32], Cached::Invalid, 10);
        assert!(c.local.borrow().len() <= 2);
        assert_eq!(
            c.local_get(&[4; 32], 0).map(|(v, _)| v),
            Some(Cached::Invalid)
        );
    }
}
