//! The vocabulary the layers share: values that pass between the request
//! state machine, its host and the parts below it. It depends on nothing in
//! the crate, so that every other module can.

use std::time::Duration;

/// A key's SHA-256 in its key service's namespace: how the verdict cache,
/// single-flight and refresh-ahead name a key without holding it.
pub type Digest = [u8; 32];

/// The state of a key's window after this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub limit: u64,
    pub remaining: u64,
    /// Unix seconds at which the window ends.
    pub reset_at: u64,
    pub allowed: bool,
}

impl Window {
    pub fn retry_after(&self, now_s: u64) -> u64 {
        self.reset_at.saturating_sub(now_s).max(1)
    }
}

/// A unary gRPC call (the rate limit service's): its cluster by name and
/// as Envoy's gRPC call takes it (a serialized `GrpcService`), so that each
/// host uses the spelling its own call wants.
pub struct GrpcCall<'a> {
    pub cluster: &'a str,
    pub target: &'a str,
    pub service: &'a str,
    pub method: &'a str,
    pub message: &'a [u8],
    pub timeout: Duration,
}

/// A reply the filter makes itself (a refusal, or whoami).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u32,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

/// What a re-validation is for: the key (by digest) and its policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refresh {
    pub digest: Digest,
    /// The policy's index (`Config::policy_at`).
    pub policy: usize,
}

/// A re-validation to start: the same callout a cache miss makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshJob {
    pub refresh: Refresh,
    pub cluster: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
    pub timeout: Duration,
}

impl RefreshJob {
    pub fn header_pairs(&self) -> Vec<(&str, &str)> {
        self.headers.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }
}
