//! A small per-worker memo of endpoint classes. MLflow clients call a
//! handful of endpoints over and over (ids travel in queries and bodies), so
//! a direct-mapped table saves the policy-table walk on almost every request.

use crate::endpoints::{Class, EndpointTable};
use std::cell::RefCell;
use std::hash::Hasher;

const ENTRIES: usize = 64;
/// Longer paths (artifact paths) are classified without being remembered.
const MAX_PATH: usize = 160;

struct Entry {
    method: String,
    path: String,
    class: Class,
}

#[derive(Default)]
pub struct ClassMemo {
    entries: RefCell<Vec<Option<Entry>>>,
}

fn position(method: &str, path: &str) -> usize {
    let mut h = fnv::FnvHasher::default();
    h.write(method.as_bytes());
    h.write_u8(b' ');
    h.write(path.as_bytes());
    (h.finish() % ENTRIES as u64) as usize
}

impl ClassMemo {
    pub fn classify(&self, table: &EndpointTable, method: &str, path: &str) -> Class {
        if path.len() > MAX_PATH {
            return table.classify(method, path);
        }
        let i = position(method, path);
        let Ok(mut entries) = self.entries.try_borrow_mut() else {
            return table.classify(method, path);
        };
        if entries.is_empty() {
            entries.resize_with(ENTRIES, || None);
        }
        match entries.get_mut(i) {
            Some(Some(e)) if e.method == method && e.path == path => e.class,
            Some(entry) => {
                let class = table.classify(method, path);
                *entry = Some(Entry {
                    method: method.to_string(),
                    path: path.to_string(),
                    class,
                });
                class
            }
            None => table.classify(method, path),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memo_agrees_with_the_table_whatever_the_order() {
        let table = EndpointTable::builtin().unwrap();
        let memo = ClassMemo::default();
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
                    memo.classify(&table, m, p),
                    table.classify(m, p),
                    "round {round}: {m} {p}"
                );
            }
        }
        // Same path, other method: never the other method's class.
        assert_eq!(
            memo.classify(&table, "GET", "/api/2.0/mlflow-artifacts/artifacts/x"),
            Class::Read
        );
        assert_eq!(
            memo.classify(&table, "PUT", "/api/2.0/mlflow-artifacts/artifacts/x"),
            Class::Write
        );
    }
}
