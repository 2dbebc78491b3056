//! A small per-worker memo: a direct-mapped table from a key of a few
//! strings to a value that depends on nothing else. MLflow clients call a
//! handful of endpoints on a handful of routes over and over, so the memo
//! spares the policy-table walk and the route match on almost every request.
//! The table itself (`DirectMap`) also keeps each worker's key digests.

use std::cell::RefCell;
use std::hash::Hasher;

/// Longer keys (artifact paths) are computed without being remembered.
const MAX_KEY: usize = 200;

/// A direct-mapped table, sized on first use: slot `hash % size` holds one
/// key and its value, and a new key takes the place of the one before.
pub struct DirectMap<K, V> {
    entries: RefCell<Vec<Option<(K, V)>>>,
    size: usize,
}

impl<K, V: Clone> DirectMap<K, V> {
    pub fn new(size: usize) -> Self {
        Self {
            entries: RefCell::default(),
            size: size.max(1),
        }
    }

    /// The value in `hash`'s slot if `is_key` owns the slot, else
    /// `compute()`, kept there under `key()` (whatever it replaces).
    pub fn get_or(
        &self,
        hash: u64,
        is_key: impl FnOnce(&K) -> bool,
        key: impl FnOnce() -> K,
        compute: impl FnOnce() -> V,
    ) -> V {
        let i = (hash % self.size as u64) as usize;
        let Ok(mut entries) = self.entries.try_borrow_mut() else {
            return compute();
        };
        if entries.is_empty() {
            entries.resize_with(self.size, || None);
        }
        match entries.get_mut(i) {
            Some(Some((k, v))) if is_key(k) => v.clone(),
            Some(entry) => {
                let v = compute();
                *entry = Some((key(), v.clone()));
                v
            }
            None => compute(),
        }
    }
}

pub struct Memo<V> {
    /// Keyed by the key's parts.
    table: DirectMap<Box<[String]>, V>,
}

impl<V: Clone> Memo<V> {
    pub fn new(size: usize) -> Self {
        Self {
            table: DirectMap::new(size),
        }
    }

    /// The remembered value for `key`, else `compute()` remembered in its
    /// place (whatever it replaces).
    pub fn get_or(&self, key: &[&str], compute: impl FnOnce() -> V) -> V {
        if key.iter().map(|k| k.len()).sum::<usize>() > MAX_KEY {
            return compute();
        }
        self.table.get_or(
            hash(key),
            |k| k.iter().map(String::as_str).eq(key.iter().copied()),
            || key.iter().map(|k| k.to_string()).collect(),
            compute,
        )
    }
}

fn hash(key: &[&str]) -> u64 {
    let mut h = fnv::FnvHasher::default();
    for part in key {
        h.write(part.as_bytes());
        h.write_u8(0);
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::endpoints::EndpointTable;

    #[test]
    fn memo_agrees_with_the_table_whatever_the_order() {
        let table = EndpointTable::builtin().unwrap();
        let memo = Memo::new(64);
        let classify = |m: &str, p: &str| memo.get_or(&[m, p], || table.classify(m, p));
        let cases = [
            ("POST", "/api/2.0/mlflow/runs/search"),
            ("POST", "/api/2.0/mlflow/runs/create"),
            ("GET", "/api/2.0/mlflow/runs/get"),
            ("POST", "/api/2.0/mlflow/registered-models/create"),
            ("DELETE", "/api/2.0/mlflow/runs/delete"),
            ("GET", "/api/2.0/mlflow/unknown"),
        ];
        let long = format!("/api/2.0/mlflow-artifacts/artifacts/{}", "a/".repeat(100));
        for round in 0..3 {
            for (m, p) in cases
                .iter()
                .chain([("GET", long.as_str()), ("PUT", long.as_str())].iter())
            {
                assert_eq!(
                    classify(m, p),
                    table.classify(m, p),
                    "round {round}: {m} {p}"
                );
            }
        }
        // Same path, other method: never the other method's class.
        let artifact = "/api/2.0/mlflow-artifacts/artifacts/x";
        assert_eq!(
            classify("GET", artifact),
            crate::request::endpoints::Class::Read
        );
        assert_eq!(
            classify("PUT", artifact),
            crate::request::endpoints::Class::Write
        );
    }

    #[test]
    fn keys_are_compared_part_by_part() {
        let memo = Memo::new(1);
        assert_eq!(memo.get_or(&["ab", "c"], || 1), 1);
        assert_eq!(
            memo.get_or(&["a", "bc"], || 2),
            2,
            "same bytes, other parts"
        );
        assert_eq!(memo.get_or(&["a", "bc"], || 3), 2, "remembered");
    }
}
