//! The process-wide key-value store behind `Host::shared_get`/`shared_set`
//! in the native build: what proxy-wasm's shared data is to the wasm build,
//! with the same compare-and-swap rule, and one more: an unset key has
//! version 0, so that two workers cannot both create it (proxy-wasm's set
//! creates a key whatever the version). Every worker thread sees it, so a
//! verdict cached on one worker is a hit on all. The lock is held only to
//! copy a value in or out, never across a call into Envoy.

use crate::sync::{Mutex, MutexGuard};
use std::collections::HashMap;
use std::sync::OnceLock;

/// The version of an unset key.
const UNSET: u32 = 0;

#[derive(Default)]
pub struct SharedData {
    entries: Mutex<HashMap<String, (Vec<u8>, u32)>>,
}

impl SharedData {
    /// The one store of this process.
    pub fn process() -> &'static SharedData {
        static STORE: OnceLock<SharedData> = OnceLock::new();
        STORE.get_or_init(SharedData::default)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, (Vec<u8>, u32)>> {
        // A panic elsewhere cannot leave a half-written entry: values are
        // replaced whole.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The value and its version (never 0), if the key is set; else none
    /// and version 0.
    pub fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        match self.lock().get(key) {
            Some((value, cas)) => (Some(value.clone()), Some(*cas)),
            None => (None, Some(UNSET)),
        }
    }

    /// Sets `key`; with `cas`, only if the key is still at that version
    /// (false otherwise): `UNSET` creates it only if no one did meanwhile;
    /// another version of an unset key creates it too, as proxy-wasm does.
    pub fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        let mut entries = self.lock();
        match entries.get_mut(key) {
            Some((_, current)) if cas.is_some_and(|c| c != *current) => false,
            Some((old, current)) => {
                old.clear();
                old.extend_from_slice(value);
                *current = current.wrapping_add(1).max(1);
                true
            }
            None => {
                entries.insert(key.to_string(), (value.to_vec(), 1));
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SharedData;

    #[test]
    fn compare_and_swap_as_proxy_wasm_shared_data() {
        let s = SharedData::default();
        assert_eq!(s.get("k"), (None, Some(0)));
        assert!(s.set("k", b"a", Some(7)), "an unset key takes any version");
        let (v, cas) = s.get("k");
        assert_eq!(v.as_deref(), Some(&b"a"[..]));
        assert!(s.set("k", b"b", cas));
        assert!(!s.set("k", b"c", cas), "a stale version is refused");
        assert_eq!(s.get("k").0.as_deref(), Some(&b"b"[..]));
        assert!(s.set("k", b"d", None), "no version: unconditional");
        assert_eq!(s.get("k").0.as_deref(), Some(&b"d"[..]));
        let (_, unset) = s.get("new");
        assert!(s.set("new", b"first", unset));
        assert!(!s.set("new", b"second", unset), "created meanwhile");
    }
}

/// The store model-checked with loom (`scripts/loom.sh`).
#[cfg(all(test, loom))]
mod loom_model {
    use super::SharedData;
    use loom::thread;
    use std::sync::Arc;

    /// (e) A refresh-ahead answer (Envoy's main thread) and a flight's
    /// answer (a worker) store the same key's verdict, unconditionally, as
    /// `VerdictCache::store` does, while another worker reads it: whole
    /// values only, and both writes counted.
    #[test]
    fn a_refresh_landing_beside_a_flight_stores_whole_verdicts() {
        loom::model(|| {
            let s = Arc::new(SharedData::default());
            let store = |value: &'static [u8]| {
                let s = Arc::clone(&s);
                thread::spawn(move || assert!(s.set("v", value, None)))
            };
            let (refresh, flight) = (store(b"refreshed"), store(b"answered"));
            let (seen, cas) = s.get("v");
            assert!(matches!(
                seen.as_deref(),
                None | Some(b"refreshed") | Some(b"answered")
            ));
            assert!(cas == Some(0) || cas == Some(1) || cas == Some(2));
            refresh.join().unwrap();
            flight.join().unwrap();
            let (last, cas) = s.get("v");
            assert!(matches!(
                last.as_deref(),
                Some(b"refreshed") | Some(b"answered")
            ));
            assert_eq!(cas, Some(2));
        });
    }

    /// Two workers charge one rate-limit window with the compare-and-swap
    /// loop of `limits::cas`, an existing one or one neither has seen
    /// (both create it): no charge is lost.
    #[test]
    fn compare_and_swap_loses_no_charge() {
        for existing in [true, false] {
            charge_twice(existing);
        }
    }

    fn charge_twice(existing: bool) {
        loom::model(move || {
            let s = Arc::new(SharedData::default());
            if existing {
                assert!(s.set("w", &[0], None));
            }
            let charge = || {
                let s = Arc::clone(&s);
                thread::spawn(move || loop {
                    let (value, cas) = s.get("w");
                    let n = value.and_then(|v| v.first().copied()).unwrap_or(0);
                    if s.set("w", &[n + 1], cas) {
                        return;
                    }
                })
            };
            let (a, b) = (charge(), charge());
            a.join().unwrap();
            b.join().unwrap();
            assert_eq!(s.get("w").0, Some(vec![2]));
        });
    }
}
