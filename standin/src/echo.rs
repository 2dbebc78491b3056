//! `echo`: the upstream that tells what it received.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::Request;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::server::{self, body_error, header_list, target, Reply, Service};

/// How many requests `/__admin/requests` remembers.
const KEPT: usize = 1000;

#[derive(Default)]
pub struct Echo {
    recent: Mutex<VecDeque<Value>>,
}

/// Length and SHA-256 of a body, streamed frame by frame so any size passes
/// without being held.
async fn hash_body(mut body: Incoming) -> Result<(u64, String), String> {
    let mut hasher = Sha256::new();
    let mut len = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        if let Some(data) = frame.data_ref() {
            hasher.update(data);
            len += data.len() as u64;
        }
    }
    Ok((len, hex(&hasher.finalize())))
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .flat_map(|b| [b >> 4, b & 0xf])
        .map(|nibble| char::from(b"0123456789abcdef"[usize::from(nibble)]))
        .collect()
}

impl Echo {
    fn recent(&self) -> MutexGuard<'_, VecDeque<Value>> {
        self.recent.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn admin(&self, method: &str, path: &str) -> Option<Reply> {
        match (method, path) {
            ("GET", "/__admin/requests") => {
                let recent: Vec<Value> = self.recent().iter().cloned().collect();
                Some(Reply::Send(server::json(200, &Value::Array(recent))))
            }
            ("POST", "/__admin/reset") => {
                self.recent().clear();
                Some(Reply::Send(server::json(200, &json!({ "ok": true }))))
            }
            _ => None,
        }
    }

    /// Kept before answering, so a test reading it after its reply sees it.
    fn keep(&self, seen: &Value) {
        let mut recent = self.recent();
        if recent.len() == KEPT {
            recent.pop_front();
        }
        recent.push_back(seen.clone());
    }
}

impl Service for Echo {
    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Reply {
        let (method, path, headers) = (req.method().to_string(), target(&req), header_list(&req));
        let (body_len, body_sha256) = match hash_body(req.into_body()).await {
            Ok(summary) => summary,
            Err(e) => return body_error(&e),
        };
        let bare_path = path.split('?').next().unwrap_or("");
        if let Some(reply) = self.admin(&method, bare_path) {
            return reply;
        }
        let headers: Vec<[&str; 2]> = headers
            .iter()
            .map(|(n, v)| [n.as_str(), v.as_str()])
            .collect();
        let seen = json!({
            "method": method,
            "path": path,
            "headers": headers,
            "body_len": body_len,
            "body_sha256": body_sha256,
        });
        self.keep(&seen);
        Reply::Send(server::json(200, &seen))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lower_case_and_two_digits_a_byte() {
        assert_eq!(
            hex(&Sha256::digest(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(hex(&[0x00, 0x0f, 0xf0]), "000ff0");
    }
}
