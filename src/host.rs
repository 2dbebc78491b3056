//! Everything the filter asks of its host, in one small trait, so that the
//! request state machine runs the same against Envoy and a test fake.

use crate::metrics::Counter;
use crate::reply::Reply;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Debug,
    Info,
    Warn,
}

pub trait Host {
    /// All request headers in one call; values as bytes (they need not be UTF-8).
    fn request_headers(&self) -> Vec<(String, Vec<u8>)>;
    /// Replaces every value of `name`, or removes them all with None.
    fn set_request_header(&self, name: &str, value: Option<&str>);
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
    fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>);
    /// False on a CAS mismatch or any other refusal.
    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool;
    fn now_ms(&self) -> u64;
    fn peer_address(&self) -> Option<String>;
    fn log(&self, level: Level, message: &str);
    fn count(&self, counter: Counter);
    fn record_callout_latency(&self, ms: u64);
    /// Makes later calls act on another stream of this VM (single-flight).
    fn switch_to(&self, context_id: u32) -> bool;
}
