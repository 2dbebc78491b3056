//! A small per-worker memo of endpoint classes. MLflow clients call a
//! handful of endpoints over and over (ids travel in queries and bodies), so
//! a direct-mapped table saves the policy-table walk on almost every request.

use crate::endpoints::{Class, EndpointTable};
use std::cell::RefCell;

const SLOTS: usize = 64;
/// Longer paths (artifact paths) are classified without being remembered.
const MAX_PATH: usize = 160;

struct Slot {
    method: String,
    path: String,
    class: Class,
}

#[derive(Default)]
pub struct ClassMemo {
    slots: RefCell<Vec<Option<Slot>>>,
}

fn slot_of(method: &str, path: &str) -> usize {
    let h = method
        .bytes()
        .chain([b' '])
        .chain(path.bytes())
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    (h % SLOTS as u64) as usize
}

impl ClassMemo {
    pub fn classify(&self, table: &EndpointTable, method: &str, path: &str) -> Class {
        if path.len() > MAX_PATH {
            return table.classify(method, path);
        }
        let i = slot_of(method, path);
        let Ok(mut slots) = self.slots.try_borrow_mut() else {
            return table.classify(method, path);
        };
        if slots.is_empty() {
            slots.resize_with(SLOTS, || None);
        }
        match slots.get_mut(i) {
            Some(Some(s)) if s.method == method && s.path == path => s.class,
            Some(slot) => {
                let class = table.classify(method, path);
                *slot = Some(Slot {
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
