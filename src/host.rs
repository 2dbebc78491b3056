//! Everything the filter asks of its host, in one small trait, so that the
//! request state machine runs the same against Envoy and a test fake. Logs
//! go through the `log` crate, whose logger each host installs.

use crate::observability::metrics::Counter;
use crate::types::{GrpcCall, RefreshJob, Reply};
use std::time::Duration;

/// A header map as proxy-wasm serializes it (count, then name and value
/// sizes, then NUL-terminated names and values), read in place: one buffer,
/// no allocation per header. Values are bytes: they need not be UTF-8.
#[derive(Debug, Default)]
pub struct Headers {
    buf: Vec<u8>,
    /// Every name, checked as UTF-8 once, so that reading them is free.
    names: String,
    /// (name start, name end) into `names`, (value start, value end) into `buf`.
    spans: Vec<(usize, usize, usize, usize)>,
}

impl Headers {
    /// Trusts nothing: a truncated or inconsistent buffer yields the headers
    /// read before the damage; names that are not UTF-8 are skipped.
    pub fn from_serialized(buf: Vec<u8>) -> Headers {
        let word = |at: usize| -> Option<usize> {
            Some(u32::from_le_bytes(buf.get(at..at.checked_add(4)?)?.try_into().ok()?) as usize)
        };
        let mut spans = Vec::new();
        let mut names = String::with_capacity(buf.len().min(4096));
        if let Some(n) = word(0) {
            let mut data = n.saturating_mul(8).saturating_add(4);
            for i in 0..n.min(buf.len() / 8) {
                let (Some(ks), Some(vs)) = (word(4 + i * 8), word(8 + i * 8)) else {
                    break;
                };
                let name = (data, data.saturating_add(ks));
                let value = (
                    name.1.saturating_add(1),
                    name.1.saturating_add(1).saturating_add(vs),
                );
                if value.1 >= buf.len() {
                    break;
                }
                if let Some(k) = buf
                    .get(name.0..name.1)
                    .and_then(|k| std::str::from_utf8(k).ok())
                {
                    spans.push((names.len(), names.len() + k.len(), value.0, value.1));
                    names.push_str(k);
                }
                data = value.1 + 1;
            }
        }
        Headers { buf, names, spans }
    }

    /// Headers from (name, value) pairs, copied once into one buffer (the
    /// native build reads them from Envoy this way); names that are not
    /// UTF-8 are skipped. The names are checked as UTF-8 in one go: the
    /// check per name was the larger part of the copy.
    pub fn from_pairs<'a>(pairs: impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone) -> Headers {
        let (mut count, mut name_bytes, mut value_bytes) = (0, 0, 0);
        for (name, value) in pairs.clone() {
            count += 1;
            name_bytes += name.len();
            value_bytes += value.len();
        }
        let mut names = Vec::with_capacity(name_bytes);
        let mut buf = Vec::with_capacity(value_bytes);
        let mut spans = Vec::with_capacity(count);
        for (name, value) in pairs.clone() {
            let (ns, vs) = (names.len(), buf.len());
            names.extend_from_slice(name);
            buf.extend_from_slice(value);
            spans.push((ns, names.len(), vs, buf.len()));
        }
        match String::from_utf8(names) {
            Ok(names) => Headers { buf, names, spans },
            Err(_) => Headers::from_pairs_one_by_one(pairs),
        }
    }

    /// `from_pairs` when some name is not UTF-8: each name checked alone.
    fn from_pairs_one_by_one<'a>(pairs: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> Headers {
        let mut h = Headers::default();
        for (name, value) in pairs {
            let Ok(name) = std::str::from_utf8(name) else {
                continue;
            };
            let (ns, vs) = (h.names.len(), h.buf.len());
            h.names.push_str(name);
            h.buf.extend_from_slice(value);
            h.spans.push((ns, h.names.len(), vs, h.buf.len()));
        }
        h
    }

    /// The serialized form of `pairs` (for the validation request and fakes).
    pub fn serialize(pairs: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
        for (k, v) in pairs {
            out.extend_from_slice(&(k.len() as u32).to_le_bytes());
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        }
        for (k, v) in pairs {
            out.extend_from_slice(k.as_bytes());
            out.push(0);
            out.extend_from_slice(v);
            out.push(0);
        }
        out
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.spans
            .iter()
            .filter_map(|&(ks, ke, vs, ve)| Some((self.names.get(ks..ke)?, self.buf.get(vs..ve)?)))
    }

    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter().find(|(k, _)| *k == name).map(|(_, v)| v)
    }
}

pub trait Host {
    /// All request headers in one call.
    fn request_headers(&self) -> Headers;
    /// Replaces every value of `name`, or removes them all with None.
    fn set_request_header(&self, name: &str, value: Option<&str>);
    /// Adds a value of `name`, which the request does not have: cheaper
    /// than `set_request_header` in Envoy, which first looks for values to
    /// remove.
    fn add_request_header(&self, name: &str, value: &str);
    fn add_response_header(&self, name: &str, value: &str);
    fn send_reply(&self, reply: &Reply);
    fn resume_request(&self);
    /// Starts a callout; None if the host refused it.
    fn dispatch(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout: Duration,
    ) -> Option<u32>;
    /// The `:status` of the callout reply being delivered (None: no headers,
    /// i.e. timeout or reset) and at most `max` bytes of its body.
    fn callout_reply(&self, body_size: usize, max: usize) -> (Option<u16>, Vec<u8>);
    /// Starts a unary gRPC call; None if the host refused it.
    fn dispatch_grpc(&self, call: &GrpcCall<'_>) -> Option<u32>;
    /// At most `max` bytes of the gRPC reply being delivered (empty if larger).
    fn grpc_reply(&self, size: usize, max: usize) -> Vec<u8>;
    /// Takes a re-validation to start outside any request; its answer goes
    /// to `Worker::complete_refresh`. False if the host cannot take it.
    fn queue_refresh(&self, job: RefreshJob) -> bool;
    /// The value and the version to compare-and-swap against; a host may
    /// give a version for an unset key too (the native one does), so that
    /// two workers cannot both create it.
    fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>);
    /// False on a CAS mismatch or any other refusal.
    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool;
    fn now_ms(&self) -> u64;
    fn peer_address(&self) -> Option<String>;
    /// The name of the Envoy route the request matched.
    fn route_name(&self) -> Option<String>;
    fn count(&self, counter: Counter);
    fn record_callout_latency(&self, ms: u64);
    /// Makes later calls act on another stream of this VM (single-flight).
    fn switch_to(&self, context_id: u32) -> bool;
}

#[cfg(test)]
mod tests {
    use super::Headers;

    #[test]
    fn serialized_maps_read_back() {
        let pairs: [(&str, &[u8]); 3] = [(":path", b"/a"), ("x", b""), ("v", b"\xff\x00z")];
        let h = Headers::from_serialized(Headers::serialize(&pairs));
        assert_eq!(h.iter().collect::<Vec<_>>(), pairs.to_vec());
        assert_eq!(h.get("v"), Some(&b"\xff\x00z"[..]));
        assert_eq!(h.get("nope"), None);
    }

    #[test]
    fn damaged_maps_give_what_was_intact() {
        let full = Headers::serialize(&[("a", b"1"), ("b", b"2")]);
        for n in 0..full.len() {
            let h = Headers::from_serialized(full[..n].to_vec());
            assert!(h.iter().count() <= 2);
        }
        assert_eq!(Headers::from_serialized(full).iter().count(), 2);
        let mut huge_count = Headers::serialize(&[("a", b"1")]);
        huge_count[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(Headers::from_serialized(huge_count).iter().count(), 0);
        let bad_name = Headers::serialize(&[("\u{0}", b"1")]);
        let mut bad = bad_name.clone();
        let at = bad.len() - 4;
        bad[at] = 0xff;
        assert_eq!(Headers::from_serialized(bad).iter().count(), 0);
        assert!(Headers::from_serialized(Vec::new()).iter().next().is_none());
    }

    #[test]
    fn pairs_read_back_and_bad_names_are_skipped() {
        let pairs: [(&[u8], &[u8]); 3] = [(b":path", b"/a"), (b"\xff", b"x"), (b"v", b"\xff\x00")];
        let h = Headers::from_pairs(pairs.iter().copied());
        let read: Vec<_> = h.iter().collect();
        assert_eq!(read, vec![(":path", &b"/a"[..]), ("v", &b"\xff\x00"[..])]);
    }
}
