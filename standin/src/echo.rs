//! `echo`: the upstream that tells what it received.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::sync::{Mutex, PoisonError};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::http::{BodyReader, Request, Response};
use crate::server::{body_error, Reply, Service};

/// How many requests `/__admin/requests` remembers.
const KEPT: usize = 1000;

#[derive(Default)]
pub struct Echo {
    recent: Mutex<VecDeque<Value>>,
}

/// Length and SHA-256 of a body, streamed through a fixed buffer so any size
/// passes without being held.
fn hash_body(body: &mut dyn Read) -> io::Result<(u64, String)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut len = 0u64;
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    let hex: String = hasher
        .finalize()
        .iter()
        .flat_map(|b| [b >> 4, b & 0xf])
        .map(|nibble| char::from(b"0123456789abcdef"[usize::from(nibble)]))
        .collect();
    Ok((len, hex))
}

impl Echo {
    fn recent(&self) -> std::sync::MutexGuard<'_, VecDeque<Value>> {
        self.recent.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Service for Echo {
    fn handle(&self, req: &Request, body: &mut BodyReader<'_>) -> Reply {
        let (body_len, body_sha256) = match hash_body(body) {
            Ok(summary) => summary,
            Err(e) => return body_error(&e),
        };
        match (req.method.as_str(), req.path()) {
            ("GET", "/__admin/requests") => {
                let recent: Vec<Value> = self.recent().iter().cloned().collect();
                return Reply::Send(Response::json(200, &Value::Array(recent)));
            }
            ("POST", "/__admin/reset") => {
                self.recent().clear();
                return Reply::Send(Response::json(200, &json!({ "ok": true })));
            }
            _ => {}
        }
        let headers: Vec<[&str; 2]> = req
            .headers
            .iter()
            .map(|(n, v)| [n.as_str(), v.as_str()])
            .collect();
        let seen = json!({
            "method": req.method,
            "path": req.target,
            "headers": headers,
            "body_len": body_len,
            "body_sha256": body_sha256,
        });
        // Kept before answering, so a test reading it after its reply sees it.
        {
            let mut recent = self.recent();
            if recent.len() == KEPT {
                recent.pop_front();
            }
            recent.push_back(seen.clone());
        }
        Reply::Send(Response::json(200, &seen))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_what_it_reads() {
        let (len, hex) = hash_body(&mut &b"abc"[..]).unwrap();
        assert_eq!(len, 3);
        assert_eq!(
            hex,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let (len, hex) = hash_body(&mut io::empty()).unwrap();
        assert_eq!(len, 0);
        assert_eq!(
            hex,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
