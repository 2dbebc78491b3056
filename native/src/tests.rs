//! The native adapter against a fake Envoy: the calls it makes, their
//! order (nothing re-entrant while the core holds a stream), single-flight
//! across workers, and a panic's 503.

use crate::envoy::{Attribute, CalloutReply, CountWakes, Envoy, Wake};
use crate::grpc::GrpcHeaders;
use crate::host::NativeHost;
use crate::module::{Filter, ModuleConfig};
use hokusai_mlflow_auth::Headers;
use hokusai_mlflow_auth::Reply;
use hokusai_mlflow_auth::StatKind;
use std::cell::RefCell;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

const CONFIG: &str = r#"{"auth": {"cluster": "hokusai_auth", "service_id": "platform"},
                         "mlflow": {"mount_prefixes": ["/api/mlflow"]}}"#;
const GRANT: &[u8] = br#"{"user_id": "u_1", "key_id": "k_1", "scopes": ["mlflow:read"]}"#;

/// What the fake saw, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    Set(String, Option<String>),
    Add(String, String),
    Send(u32, String),
    Continue,
    RouteAgain,
    Callout(String),
    Increment(usize),
}

#[derive(Default)]
struct Stream {
    headers: Vec<(String, String)>,
    calls: RefCell<Vec<Call>>,
    /// The filter, for the fake to re-enter it as Envoy does.
    filter: RefCell<Weak<Filter<Fake>>>,
    wakes: Arc<AtomicUsize>,
    /// Every callout as sent: cluster, headers, body.
    sent: RefCell<Vec<Sent>>,
}

type Sent = (String, Vec<(String, String)>, Vec<u8>);

#[derive(Clone, Default)]
struct Fake(Rc<Stream>);

impl Fake {
    fn new(key: &str, path: &str) -> Fake {
        let headers = [
            (":method", "GET"),
            (":path", path),
            (":authority", "gw"),
            ("authorization", &format!("Bearer {key}")),
        ];
        Fake(Rc::new(Stream {
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Stream::default()
        }))
    }

    fn calls(&self) -> Vec<Call> {
        self.0.calls.borrow().clone()
    }

    fn note(&self, call: Call) {
        self.0.calls.borrow_mut().push(call);
    }
}

impl Envoy for Fake {
    fn request_headers(&self) -> Headers {
        Headers::from_pairs(
            self.0
                .headers
                .iter()
                .map(|(k, v)| (k.as_bytes(), v.as_bytes())),
        )
    }
    fn set_request_header(&self, name: &str, value: Option<&str>) {
        self.note(Call::Set(name.into(), value.map(Into::into)));
    }
    fn add_request_header(&self, name: &str, value: &str) {
        self.note(Call::Add(name.into(), value.into()));
    }
    fn add_response_header(&self, _: &str, _: &str) {}
    fn clear_route_cache(&self) {
        self.note(Call::RouteAgain);
    }
    fn send_response(&self, reply: &Reply) {
        self.note(Call::Send(reply.status, reply.body.clone()));
        // Envoy completes the stream from inside send_response.
        if let Some(f) = self.0.filter.borrow().upgrade() {
            f.on_stream_complete();
        }
    }
    fn continue_decoding(&self) {
        self.note(Call::Continue);
    }
    fn callout(&self, cluster: &str, headers: &[(&str, &str)], body: &[u8], _: u64) -> Option<u64> {
        self.note(Call::Callout(cluster.into()));
        let headers = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut sent = self.0.sent.borrow_mut();
        sent.push((cluster.into(), headers, body.to_vec()));
        // Envoy's ids: one per callout of the stream.
        Some(sent.len() as u64)
    }
    fn attribute(&self, _: Attribute) -> Option<String> {
        None
    }
    fn increment(&self, counter: usize) {
        self.note(Call::Increment(counter));
    }
    fn record(&self, _: usize, _: u64) {}
    fn waker(&self) -> Option<Box<dyn Wake>> {
        Some(Box::new(CountWakes(Arc::clone(&self.0.wakes))))
    }
}

/// A worker thread's state for the config (each call: another worker).
fn worker(
    config: &ModuleConfig,
) -> (
    Option<Rc<hokusai_mlflow_auth::Worker>>,
    Rc<NativeHost<Fake>>,
) {
    config.worker()
}

fn config() -> ModuleConfig {
    let mut next = 0;
    ModuleConfig::new(CONFIG.as_bytes(), |_, _| {
        next += 1;
        Some(next)
    })
    .unwrap()
}

fn filter(
    ctx: u32,
    fake: &Fake,
    state: &(
        Option<Rc<hokusai_mlflow_auth::Worker>>,
        Rc<NativeHost<Fake>>,
    ),
) -> Rc<Filter<Fake>> {
    let f = Rc::new(Filter::new(
        ctx,
        fake.clone(),
        state.0.clone(),
        Rc::clone(&state.1),
    ));
    *fake.0.filter.borrow_mut() = Rc::downgrade(&f);
    f
}

fn unique_key() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("hk_test_native_{:016}", N.fetch_add(1, Ordering::SeqCst))
}

const PATH: &str = "/api/mlflow/api/2.0/mlflow/experiments/search";

#[test]
fn a_valid_key_is_resumed_after_its_headers_are_set() {
    let cfg = config();
    let state = worker(&cfg);
    let fake = Fake::new(&unique_key(), PATH);
    let f = filter(1, &fake, &state);
    assert!(!f.on_request_headers(), "paused for the callout");
    f.on_callout_done(
        1,
        CalloutReply {
            status: Some(200),
            body: GRANT.to_vec(),
        },
        &GrpcHeaders::default(),
    );
    let calls = fake.calls();
    assert!(calls.contains(&Call::Callout("hokusai_auth".into())));
    assert!(
        calls.contains(&Call::Set("authorization".into(), None)),
        "credential removed"
    );
    let user = calls
        .iter()
        .position(|c| *c == Call::Add("x-hokusai-user-id".into(), "u_1".into()));
    let resumed = calls.iter().position(|c| *c == Call::Continue);
    assert!(
        user.is_some() && resumed.is_some() && user < resumed,
        "{calls:?}"
    );
    assert!(
        calls.iter().any(|c| matches!(c, Call::Increment(_))),
        "stats counted"
    );
    let rewritten = Call::Set(
        ":path".into(),
        Some("/api/2.0/mlflow/experiments/search".into()),
    );
    let rewrite = calls.iter().position(|c| *c == rewritten);
    let again = calls.iter().position(|c| *c == Call::RouteAgain);
    assert!(
        rewrite.is_some() && again > rewrite,
        "route matched again after the rewrite: {calls:?}"
    );
}

#[test]
fn a_refusal_reenters_without_a_second_borrow_and_completes_once() {
    let cfg = config();
    let state = worker(&cfg);
    let fake = Fake::new(&unique_key(), PATH);
    let f = filter(1, &fake, &state);
    assert!(!f.on_request_headers());
    f.on_callout_done(
        1,
        CalloutReply {
            status: Some(401),
            body: Vec::new(),
        },
        &GrpcHeaders::default(),
    );
    let sent: Vec<_> = fake
        .calls()
        .into_iter()
        .filter(|c| matches!(c, Call::Send(..)))
        .collect();
    assert_eq!(sent.len(), 1);
    assert!(matches!(&sent[0], Call::Send(401, body) if body.contains("UNAUTHENTICATED")));
    assert!(!fake.calls().contains(&Call::Continue));
    f.on_stream_complete();
}

/// One request with the same new key on each of two workers, both paused.
fn one_key_on_two_workers() -> (Fake, Fake, Rc<Filter<Fake>>, Rc<Filter<Fake>>) {
    let cfg = config();
    let (w1, w2) = (worker(&cfg), worker(&cfg));
    let key = unique_key();
    let (a, b) = (Fake::new(&key, PATH), Fake::new(&key, PATH));
    let (fa, fb) = (filter(1, &a, &w1), filter(1, &b, &w2));
    assert!(!fa.on_request_headers() && !fb.on_request_headers());
    (a, b, fa, fb)
}

#[test]
fn a_second_worker_joins_the_first_workers_callout() {
    let (a, b, fa, fb) = one_key_on_two_workers();
    let callouts = |f: &Fake| {
        f.calls()
            .iter()
            .filter(|c| matches!(c, Call::Callout(_)))
            .count()
    };
    assert_eq!(
        callouts(&a) + callouts(&b),
        1,
        "one callout for both workers"
    );
    fb.on_scheduled();
    assert!(
        !b.calls().contains(&Call::Continue),
        "not woken yet: nothing happens"
    );
    fa.on_callout_done(
        1,
        CalloutReply {
            status: Some(200),
            body: GRANT.to_vec(),
        },
        &GrpcHeaders::default(),
    );
    assert_eq!(b.0.wakes.load(Ordering::SeqCst), 1, "the joiner is woken");
    fb.on_scheduled();
    assert!(a.calls().contains(&Call::Continue) && b.calls().contains(&Call::Continue));
}

#[test]
fn a_leader_that_goes_away_wakes_its_joiners_with_no_answer() {
    let (_a, b, fa, fb) = one_key_on_two_workers();
    drop(fa);
    assert_eq!(b.0.wakes.load(Ordering::SeqCst), 1);
    fb.on_scheduled();
    assert!(
        b.calls().iter().any(|c| matches!(c, Call::Send(503, _))),
        "{:?}",
        b.calls()
    );
}

#[test]
fn fail_closed_answers_503_once() {
    let cfg = config();
    let state = worker(&cfg);
    let fake = Fake::new(&unique_key(), PATH);
    let f = filter(1, &fake, &state);
    f.fail_closed();
    let sent: Vec<_> = fake
        .calls()
        .into_iter()
        .filter(|c| matches!(c, Call::Send(..)))
        .collect();
    assert!(
        matches!(&sent[..], [Call::Send(503, body)] if body.contains("TEMPORARILY_UNAVAILABLE")),
        "{sent:?}"
    );
    assert!(
        !f.on_request_headers(),
        "the stream is left alone after a panic"
    );
}

#[test]
fn configuration_errors_name_the_field() {
    let err = |json: &str| {
        ModuleConfig::new(json.as_bytes(), |_, _| Some(0))
            .err()
            .unwrap()
    };
    assert!(err(r#"{"auth": {"cluster": 5}}"#).contains("auth"));
    let global = r#"{"auth": {"cluster": "a", "service_id": "s"},
        "rate_limit": {"mode": "global"}}"#;
    assert!(
        err(global).contains("rate_limit.cluster"),
        "{}",
        err(global)
    );
}

#[test]
fn stats_are_defined_once_per_configuration_in_table_order() {
    let mut seen = Vec::new();
    ModuleConfig::new(CONFIG.as_bytes(), |kind, name| {
        seen.push((kind, name.to_string()));
        Some(seen.len())
    })
    .unwrap();
    assert_eq!(
        seen.first().map(|(_, n)| n.as_str()),
        Some("hokusai_auth.public")
    );
    assert_eq!(
        seen.last(),
        Some(&(
            StatKind::Histogram,
            "hokusai_auth.callout_latency_ms".into()
        ))
    );
}

#[test]
fn the_body_waits_while_the_key_is_checked_and_goes_on_after() {
    let cfg = config();
    let state = worker(&cfg);
    let fake = Fake::new(&unique_key(), PATH);
    let f = filter(1, &fake, &state);
    assert!(!f.holds_request(), "nothing to wait for yet");
    assert!(!f.on_request_headers());
    assert!(f.holds_request(), "paused for the callout: the body waits");
    f.on_callout_done(
        1,
        CalloutReply {
            status: Some(200),
            body: GRANT.to_vec(),
        },
        &GrpcHeaders::default(),
    );
    assert!(!f.holds_request(), "resumed: the body follows");
    let refused = Fake::new(&unique_key(), PATH);
    let g = filter(2, &refused, &state);
    g.fail_closed();
    assert!(g.holds_request(), "refused by the filter: nothing goes on");
}

const GLOBAL: &str = r#"{"auth": {"cluster": "hokusai_auth", "service_id": "platform"},
    "mlflow": {"mount_prefixes": ["/api/mlflow"]},
    "rate_limit": {"mode": "global", "cluster": "hokusai_ratelimit", "failure_mode": "deny"}}"#;
/// A grant of 40 an hour, for a `key_id` of its own: the process-wide
/// store keeps each key's lease (and a refusal) across the tests.
fn grant_40() -> Vec<u8> {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    format!(r#"{{"user_id": "u_1", "key_id": "k_1_{n}", "scopes": ["mlflow:read"], "rate_limit_per_hour": 40}}"#)
        .into_bytes()
}

/// A stream of the global-mode config, its key accepted: the rate limit
/// call it then sent.
fn charged(over: bool) -> (Fake, Rc<Filter<Fake>>, Sent, Vec<u8>) {
    let cfg = ModuleConfig::new(GLOBAL.as_bytes(), |_, _| Some(0)).unwrap();
    let state = worker(&cfg);
    let fake = Fake::new(&unique_key(), PATH);
    let f = filter(1, &fake, &state);
    assert!(!f.on_request_headers());
    f.on_callout_done(
        1,
        CalloutReply {
            status: Some(200),
            body: grant_40(),
        },
        &GrpcHeaders::default(),
    );
    assert!(
        !fake.calls().contains(&Call::Continue),
        "waits for the charge"
    );
    let sent = fake
        .0
        .sent
        .borrow()
        .get(1)
        .cloned()
        .expect("a rate limit call");
    // envoy.service.ratelimit.v3.RateLimitResponse, by hand: overall_code,
    // one status with its current_limit (40/hour), limit_remaining 39 (0
    // if over) and duration_until_reset 600 s.
    let (code, left) = if over { (2, 0) } else { (1, 39) };
    let status = [
        0x08, code, 0x12, 0x04, 0x08, 40, 0x10, 0x03, 0x18, left, 0x22, 0x03, 0x08, 0xd8, 0x04,
    ];
    let mut message = vec![0x08, code, 0x12, status.len() as u8];
    message.extend_from_slice(&status);
    (fake, f, sent, message)
}

fn framed(message: &[u8]) -> Vec<u8> {
    let mut body = vec![0];
    body.extend_from_slice(&(message.len() as u32).to_be_bytes());
    body.extend_from_slice(message);
    body
}

fn grpc_ok() -> GrpcHeaders {
    GrpcHeaders::read([(&b"content-type"[..], &b"application/grpc"[..])].into_iter())
}

#[test]
fn global_mode_sends_should_rate_limit_as_a_framed_http2_post() {
    let (_fake, _f, (cluster, headers, body), _) = charged(false);
    assert_eq!(cluster, "hokusai_ratelimit");
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(header(":method"), Some("POST"));
    assert_eq!(
        header(":path"),
        Some("/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit")
    );
    assert_eq!(header(":authority"), Some("hokusai_ratelimit"));
    assert_eq!(header("content-type"), Some("application/grpc"));
    assert_eq!(header("te"), Some("trailers"));
    assert_eq!(body[0], 0, "not compressed");
    let len = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
    assert_eq!(len, body.len() - 5, "the frame's length is the message's");
    let message = String::from_utf8_lossy(&body[5..]);
    assert!(message.contains("hokusai-mlflow") && message.contains("k_1"));
}

#[test]
fn global_mode_goes_on_when_the_service_counts_the_request() {
    let (fake, f, _, message) = charged(false);
    f.on_callout_done(
        2,
        CalloutReply {
            status: Some(200),
            body: framed(&message),
        },
        &grpc_ok(),
    );
    assert!(fake.calls().contains(&Call::Continue), "{:?}", fake.calls());
    assert!(!fake.calls().iter().any(|c| matches!(c, Call::Send(..))));
}

#[test]
fn global_mode_answers_429_when_the_service_says_over_limit() {
    let (fake, f, _, message) = charged(true);
    f.on_callout_done(
        2,
        CalloutReply {
            status: Some(200),
            body: framed(&message),
        },
        &grpc_ok(),
    );
    assert!(
        fake.calls()
            .iter()
            .any(|c| matches!(c, Call::Send(429, b) if b.contains("RESOURCE_EXHAUSTED"))),
        "{:?}",
        fake.calls()
    );
    assert!(!fake.calls().contains(&Call::Continue));
}

#[test]
fn global_mode_fails_to_the_failure_mode_on_a_trailers_only_error_or_a_bad_frame() {
    let unavailable = GrpcHeaders::read(
        [
            (&b"content-type"[..], &b"application/grpc"[..]),
            (&b"grpc-status"[..], &b"14"[..]),
        ]
        .into_iter(),
    );
    let (_, _, _, message) = charged(false);
    let mut compressed = framed(&message);
    compressed[0] = 1;
    let replies = [
        (Some(200), Vec::new(), unavailable),
        (Some(200), compressed, grpc_ok()),
        (Some(200), message.clone(), grpc_ok()),
        (Some(200), framed(&message), GrpcHeaders::default()),
        (Some(503), framed(&message), grpc_ok()),
        (None, Vec::new(), GrpcHeaders::default()),
    ];
    for (status, body, grpc) in replies {
        let (fake, f, _, _) = charged(false);
        f.on_callout_done(2, CalloutReply { status, body }, &grpc);
        let calls = fake.calls();
        assert!(
            calls
                .iter()
                .any(|c| matches!(c, Call::Send(503, b) if b.contains("TEMPORARILY_UNAVAILABLE"))),
            "failure_mode deny: {status:?} {grpc:?} {calls:?}"
        );
        assert!(!calls.contains(&Call::Continue));
    }
}
