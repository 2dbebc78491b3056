//! Each worker's table of the digests of the keys it has seen: a client
//! sends the same key on every request, and its SHA-256 digest (how the
//! verdict cache finds it) is the largest single cost of a cache hit, so
//! it is computed once per key and worker, not per request.
//!
//! A key is found here by a 128-bit fingerprint: two 64-bit SipHashes
//! (std's keyed hasher) of the key, told apart by a leading tag, under a
//! secret seed drawn when the worker starts. The seed makes the fingerprint
//! unpredictable, so no one can choose a key that shares another's
//! fingerprint; two keys meet by chance with probability 2^-128. (One seed
//! and two tags rather than two seeds: std draws a thread's second seed as
//! the first plus one.) The key itself is not kept, only its fingerprint
//! and digest, in a `DirectMap` (a new key takes the place of the one
//! before it).

use crate::tables::memo::DirectMap;
use crate::types::Digest;
use crate::verdict::cache::Namespace;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

pub struct KeyDigests {
    seed: RandomState,
    table: DirectMap<u128, Digest>,
}

impl KeyDigests {
    pub fn new(size: usize) -> Self {
        Self {
            seed: RandomState::new(),
            table: DirectMap::new(size),
        }
    }

    /// The key's digest in `namespace`, computed once per key (while it
    /// keeps its place).
    pub fn digest(&self, namespace: &Namespace, key: &str) -> Digest {
        let fingerprint = self.fingerprint(namespace, key);
        self.table.get_or(
            fingerprint as u64,
            |f| *f == fingerprint,
            || fingerprint,
            || namespace.digest(key),
        )
    }

    fn fingerprint(&self, namespace: &Namespace, key: &str) -> u128 {
        let half = |tag: u8| {
            let mut h = self.seed.build_hasher();
            h.write_u8(tag);
            h.write(namespace.as_bytes());
            h.write(key.as_bytes());
            h.finish()
        };
        (u128::from(half(0)) << 64) | u128::from(half(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn namespace(service_id: &str) -> Namespace {
        let cfg = format!(r#"{{"auth": {{"cluster": "c", "service_id": "{service_id}"}}}}"#);
        Namespace::of(&Config::parse(cfg.as_bytes()).unwrap().policy.auth)
    }

    #[test]
    fn digests_are_the_namespace_digests_whatever_the_table_holds() {
        let (a, b) = (namespace("platform"), namespace("other"));
        let table = KeyDigests::new(2);
        for round in 0..3 {
            for i in 0..5 {
                let key = format!("hk_test_{i}");
                assert_eq!(
                    table.digest(&a, &key),
                    a.digest(&key),
                    "round {round}, {key}"
                );
                assert_eq!(
                    table.digest(&b, &key),
                    b.digest(&key),
                    "round {round}, {key}"
                );
            }
        }
    }

    #[test]
    fn a_known_key_is_not_hashed_again() {
        let ns = namespace("platform");
        let table = KeyDigests::new(16);
        // A planted digest is what the table answers: the key is found by
        // its fingerprint, not digested again.
        let f = table.fingerprint(&ns, "hk_test_a");
        table.table.get_or(f as u64, |_| false, || f, || [9; 32]);
        assert_eq!(table.digest(&ns, "hk_test_a"), [9; 32]);
        assert_ne!(ns.digest("hk_test_a"), [9; 32]);
    }

    #[test]
    fn fingerprints_differ_by_key_namespace_and_worker() {
        let ns = namespace("platform");
        let (one, two) = (KeyDigests::new(1), KeyDigests::new(1));
        assert_ne!(one.fingerprint(&ns, "k1"), one.fingerprint(&ns, "k2"));
        assert_ne!(
            one.fingerprint(&ns, "k1"),
            one.fingerprint(&namespace("other"), "k1")
        );
        assert_ne!(one.fingerprint(&ns, "k1"), two.fingerprint(&ns, "k1"));
    }
}
