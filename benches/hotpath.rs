//! The filter's own work on the cache-hit path, natively, with a host that
//! does nothing: what the filter costs beyond the hostcalls themselves.
//!
//!     cargo bench --bench hotpath                 # ns per request
//!     scripts/profile-hotpath.sh                  # callgrind: instructions by function
//!
//! It counts the hostcalls per request too, since in Envoy each one crosses
//! the VM boundary.

use hokusai_mlflow_auth::Config;
use hokusai_mlflow_auth::Counter;
use hokusai_mlflow_auth::Reply;
use hokusai_mlflow_auth::{Flow, Stream, Worker};
use hokusai_mlflow_auth::{GrpcCall, RefreshJob};
use hokusai_mlflow_auth::{Headers, Host};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::hint::black_box;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Default)]
struct NullHost {
    /// Serialized once, as Envoy hands them over.
    headers: Vec<u8>,
    shared: RefCell<HashMap<String, (Vec<u8>, u32)>>,
    calls: Cell<u64>,
    dispatched: Cell<bool>,
}

impl NullHost {
    fn call(&self) {
        self.calls.set(self.calls.get() + 1);
    }
}

impl Host for NullHost {
    fn request_headers(&self) -> Headers {
        self.call();
        Headers::from_serialized(self.headers.clone())
    }
    fn set_request_header(&self, _: &str, _: Option<&str>) {
        self.call();
    }
    fn add_request_header(&self, _: &str, _: &str) {
        self.call();
    }
    fn add_response_header(&self, _: &str, _: &str) {
        self.call();
    }
    fn send_reply(&self, r: &Reply) {
        self.call();
        panic!("unexpected local reply {}: {}", r.status, r.body);
    }
    fn resume_request(&self) {
        self.call();
    }
    fn dispatch(&self, _: &str, _: &[(&str, &str)], _: &[u8], _: Duration) -> Option<u32> {
        self.call();
        self.dispatched.set(true);
        Some(1)
    }
    fn dispatch_grpc(&self, _: &GrpcCall<'_>) -> Option<u32> {
        self.call();
        None
    }
    fn grpc_reply(&self, _: usize, _: usize) -> Vec<u8> {
        self.call();
        Vec::new()
    }
    fn queue_refresh(&self, _: RefreshJob) -> bool {
        self.call();
        true
    }
    fn callout_reply(&self, _: usize, _: usize) -> (Option<u16>, Vec<u8>) {
        self.call();
        let body = br#"{"user_id": "u_1", "key_id": "k_1", "scopes": ["mlflow:read", "mlflow:write"], "rate_limit_per_hour": 1000000000}"#;
        (Some(200), body.to_vec())
    }
    fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        self.call();
        match self.shared.borrow().get(key) {
            Some((v, c)) => (Some(v.clone()), Some(*c)),
            None => (None, None),
        }
    }
    fn shared_set(&self, key: &str, value: &[u8], _cas: Option<u32>) -> bool {
        self.call();
        let mut s = self.shared.borrow_mut();
        let cas = s.get(key).map_or(1, |(_, c)| c + 1);
        s.insert(key.to_string(), (value.to_vec(), cas));
        true
    }
    fn now_ms(&self) -> u64 {
        self.call();
        1_700_000_000_000
    }
    fn peer_address(&self) -> Option<String> {
        self.call();
        Some("127.0.0.1:5000".into())
    }
    fn route_name(&self) -> Option<String> {
        self.call();
        Some("mlflow".into())
    }
    fn count(&self, c: Counter) {
        self.call();
        black_box(c);
    }
    fn record_callout_latency(&self, _: u64) {
        self.call();
    }
    fn switch_to(&self, _: u32) -> bool {
        self.call();
        true
    }
}

/// Stands in for the SDK's logger: formats each line and counts the hostcall
/// it would make.
struct NullLogger;

static LOG_CALLS: AtomicU64 = AtomicU64::new(0);

impl log::Log for NullLogger {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        black_box(record.args().to_string());
        LOG_CALLS.fetch_add(1, Ordering::Relaxed);
    }
    fn flush(&self) {}
}

fn main() {
    log::set_logger(&NullLogger).unwrap();
    log::set_max_level(log::LevelFilter::Info);
    let rate_limit = std::env::args().any(|a| a == "--rate-limit");
    let audit = std::env::args().any(|a| a == "--audit");
    let iterations: u64 = std::env::var("ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let cfg = format!(
        r#"{{"auth": {{"cluster": "hokusai_auth", "service_id": "platform"}},
            "rate_limit": {{"enabled": {rate_limit}}}, "audit_log": {audit}}}"#
    );
    let worker = Rc::new(Worker::new(Config::parse(cfg.as_bytes()).unwrap()).unwrap());
    let pairs: Vec<(&str, &[u8])> = [
        (":method", "POST"),
        (":path", "/api/mlflow/api/2.0/mlflow/runs/search"),
        (":authority", "gateway.example"),
        (":scheme", "http"),
        ("user-agent", "mlflow-python-client/3.17.2"),
        ("accept", "*/*"),
        ("accept-encoding", "gzip, deflate"),
        ("content-type", "application/json"),
        ("content-length", "2"),
        ("authorization", "Bearer hk_test_rw_devkey_0000000000000001"),
        ("x-forwarded-proto", "http"),
        ("x-request-id", "5a3f8f9e-6c1e-4a55-9d1f-3f1c6d0e2b7a"),
    ]
    .iter()
    .map(|(k, v)| (*k, v.as_bytes()))
    .collect();
    let host = NullHost {
        headers: Headers::serialize(&pairs),
        ..NullHost::default()
    };

    // Warm the cache: one miss and its callout.
    let s = Stream::new(1, Rc::clone(&worker));
    assert_eq!(s.borrow_mut().on_request_headers(&host), Flow::Pause);
    assert!(host.dispatched.get());
    s.borrow_mut().on_callout_reply(&host, 100);

    host.calls.set(0);
    LOG_CALLS.store(0, Ordering::Relaxed);
    let t0 = Instant::now();
    for i in 0..iterations {
        let s = Stream::new(i as u32 + 2, Rc::clone(&worker));
        let mut s = s.borrow_mut();
        assert_eq!(s.on_request_headers(&host), Flow::Continue);
        s.on_response_headers(&host);
        s.on_done(&host);
    }
    let elapsed = t0.elapsed();
    println!(
        "cache hit (rate limit {}, audit log {}): {:.0} ns/request natively, {} hostcalls/request",
        if rate_limit { "on" } else { "off" },
        if audit { "on" } else { "off" },
        elapsed.as_nanos() as f64 / iterations as f64,
        (host.calls.get() + LOG_CALLS.load(Ordering::Relaxed)) / iterations
    );
}
