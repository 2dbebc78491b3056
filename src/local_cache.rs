//! A per-worker copy of recent verdicts in front of the shared-data cache.
//!
//! Reading shared data is the dearest hostcall on the hit path (Envoy takes
//! a lock, copies the entry and calls back into the VM to allocate it), so
//! each worker keeps the verdicts it has seen, under the same digest and
//! with the same expiry as the shared entry. Shared data stays the source
//! between workers. No key is held: entries are indexed by the digest.

use crate::cache::{Cached, Digest};
use std::cell::RefCell;
use std::collections::HashMap;

pub struct LocalCache {
    entries: RefCell<HashMap<Digest, (Cached, u64)>>,
    capacity: usize,
}

impl LocalCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: RefCell::default(),
            capacity: capacity.max(1),
        }
    }

    /// A verdict still fresh at `now_ms`.
    pub fn get(&self, d: &Digest, now_ms: u64) -> Option<Cached> {
        let mut entries = self.entries.try_borrow_mut().ok()?;
        match entries.get(d) {
            Some((verdict, expires)) if now_ms < *expires => Some(verdict.clone()),
            Some(_) => {
                entries.remove(d);
                None
            }
            None => None,
        }
    }

    pub fn put(&self, d: Digest, verdict: Cached, expires_at_ms: u64) {
        let Ok(mut entries) = self.entries.try_borrow_mut() else {
            return;
        };
        if entries.len() >= self.capacity && !entries.contains_key(&d) {
            // Bounded: start over rather than track recency on the hot path.
            entries.clear();
        }
        entries.insert(d, (verdict, expires_at_ms));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::Identity;

    #[test]
    fn serves_fresh_verdicts_only_and_stays_bounded() {
        let c = LocalCache::new(2);
        let allowed = Cached::Allowed(Identity::default());
        c.put([1; 32], allowed.clone(), 100);
        c.put([2; 32], Cached::Invalid, 50);
        assert_eq!(c.get(&[1; 32], 99), Some(allowed.clone()));
        assert_eq!(c.get(&[2; 32], 49), Some(Cached::Invalid));
        assert_eq!(c.get(&[2; 32], 50), None, "expired");
        assert_eq!(c.get(&[3; 32], 0), None);
        c.put([3; 32], Cached::Invalid, 10);
        c.put([4; 32], Cached::Invalid, 10);
        assert!(c.entries.borrow().len() <= 2);
        assert_eq!(c.get(&[4; 32], 0), Some(Cached::Invalid));
    }
}
