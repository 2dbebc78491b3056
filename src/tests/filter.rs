//! The request state machine against a fake host: every decision the filter
//! makes, checked through the hostcalls it issues.

use crate::config::Config;
use crate::filter::{Flow, Stream, Worker};
use crate::host::{Headers, Host};
use crate::observability::metrics::Counter;
use crate::types::Reply;
use crate::types::{GrpcCall, RefreshJob};
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::Duration;

const KEY: &str = "hk_test_SECRETKEYVALUE0123456789"; // fixture, not a real key

type HeaderList = Vec<(String, Vec<u8>)>;
type Callout = (u32, Vec<(String, String)>, Vec<u8>);
/// A rate limit call: the context that made it, its target and message.
type Charge = (u32, String, Vec<u8>);

#[derive(Default)]
struct FakeHost {
    ctx: Cell<u32>,
    headers: RefCell<HashMap<u32, HeaderList>>,
    replies: RefCell<HashMap<u32, Reply>>,
    resumed: RefCell<Vec<u32>>,
    response_headers: RefCell<HashMap<u32, Vec<(String, String)>>>,
    dispatched: RefCell<Vec<Callout>>,
    callout: RefCell<(Option<u16>, Vec<u8>)>,
    shared: RefCell<HashMap<String, (Vec<u8>, u32)>>,
    now: Cell<u64>,
    counts: RefCell<HashMap<Counter, u64>>,
    refuse_dispatch: Cell<bool>,
    shared_reads: Cell<u32>,
    gone: RefCell<HashSet<u32>>,
    route: RefCell<Option<String>>,
    charges_sent: RefCell<Vec<Charge>>,
    count_reply: RefCell<Vec<u8>>,
    refuse_grpc: Cell<bool>,
    jobs: RefCell<Vec<RefreshJob>>,
}

impl Host for FakeHost {
    fn request_headers(&self) -> Headers {
        let all = self.headers.borrow();
        let pairs: Vec<(&str, &[u8])> = all
            .get(&self.ctx.get())
            .map(|h| h.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect())
            .unwrap_or_default();
        Headers::from_serialized(Headers::serialize(&pairs))
    }
    fn set_request_header(&self, name: &str, value: Option<&str>) {
        let mut all = self.headers.borrow_mut();
        let h = all.entry(self.ctx.get()).or_default();
        h.retain(|(k, _)| k != name);
        if let Some(v) = value {
            h.push((name.to_string(), v.as_bytes().to_vec()));
        }
    }
    fn add_request_header(&self, name: &str, value: &str) {
        let mut all = self.headers.borrow_mut();
        let h = all.entry(self.ctx.get()).or_default();
        assert!(
            h.iter().all(|(k, _)| k != name),
            "{name} added to a request that has it"
        );
        h.push((name.to_string(), value.as_bytes().to_vec()));
    }
    fn add_response_header(&self, name: &str, value: &str) {
        self.response_headers
            .borrow_mut()
            .entry(self.ctx.get())
            .or_default()
            .push((name.into(), value.into()));
    }
    fn send_reply(&self, reply: &Reply) {
        let previous = self
            .replies
            .borrow_mut()
            .insert(self.ctx.get(), reply.clone());
        assert!(previous.is_none(), "two replies for one stream");
    }
    fn resume_request(&self) {
        self.resumed.borrow_mut().push(self.ctx.get());
    }
    fn dispatch(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout: Duration,
    ) -> Option<u32> {
        assert_eq!(cluster, "hokusai_auth");
        assert_eq!(timeout, Duration::from_millis(1000));
        if self.refuse_dispatch.get() {
            return None;
        }
        let h = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut d = self.dispatched.borrow_mut();
        d.push((self.ctx.get(), h, body.to_vec()));
        Some(d.len() as u32)
    }
    fn callout_reply(&self, _body_size: usize, _max: usize) -> (Option<u16>, Vec<u8>) {
        self.callout.borrow().clone()
    }
    fn dispatch_grpc(&self, call: &GrpcCall<'_>) -> Option<u32> {
        assert_eq!(call.cluster, "hokusai_ratelimit");
        assert_eq!(
            (call.service, call.method),
            (
                "envoy.service.ratelimit.v3.RateLimitService",
                "ShouldRateLimit"
            )
        );
        assert_eq!(call.timeout, Duration::from_millis(20));
        if self.refuse_grpc.get() {
            return None;
        }
        let mut sent = self.charges_sent.borrow_mut();
        sent.push((
            self.ctx.get(),
            call.target.to_string(),
            call.message.to_vec(),
        ));
        Some(1000 + sent.len() as u32)
    }
    fn grpc_reply(&self, _size: usize, _max: usize) -> Vec<u8> {
        self.count_reply.borrow().clone()
    }
    fn queue_refresh(&self, job: RefreshJob) -> bool {
        self.jobs.borrow_mut().push(job);
        true
    }
    fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        self.shared_reads.set(self.shared_reads.get() + 1);
        match self.shared.borrow().get(key) {
            Some((v, cas)) => (Some(v.clone()), Some(*cas)),
            None => (None, None),
        }
    }
    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        let mut s = self.shared.borrow_mut();
        let current = s.get(key).map_or(0, |(_, c)| *c);
        if let Some(c) = cas {
            if c != current {
                return false;
            }
        }
        s.insert(key.to_string(), (value.to_vec(), current + 1));
        true
    }
    fn now_ms(&self) -> u64 {
        self.now.get()
    }
    fn peer_address(&self) -> Option<String> {
        Some("127.0.0.1:40000".into())
    }
    fn route_name(&self) -> Option<String> {
        self.route.borrow().clone()
    }
    fn count(&self, counter: Counter) {
        *self.counts.borrow_mut().entry(counter).or_default() += 1;
    }
    fn record_callout_latency(&self, _ms: u64) {}
    fn switch_to(&self, context_id: u32) -> bool {
        if self.gone.borrow().contains(&context_id) {
            return false;
        }
        self.ctx.set(context_id);
        true
    }
}

impl FakeHost {
    /// The filter added `name: value` to the response of stream `id`.
    fn assert_response_header(&self, id: u32, name: &str, value: &str) {
        let all = self.response_headers.borrow();
        let headers = all.get(&id).cloned().unwrap_or_default();
        assert!(
            headers.contains(&(name.into(), value.into())),
            "{headers:?}"
        );
    }
    fn header(&self, ctx: u32, name: &str) -> Option<String> {
        self.headers.borrow().get(&ctx).and_then(|h| {
            h.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        })
    }
    fn status(&self, ctx: u32) -> Option<u32> {
        self.replies.borrow().get(&ctx).map(|r| r.status)
    }
    fn count_of(&self, c: Counter) -> u64 {
        self.counts.borrow().get(&c).copied().unwrap_or(0)
    }
    fn calls(&self) -> usize {
        self.dispatched.borrow().len()
    }
    fn answer(&self, status: Option<u16>, body: &str) {
        *self.callout.borrow_mut() = (status, body.as_bytes().to_vec());
    }
}

/// Log lines as the `log` crate hands them to the host's logger, captured
/// per test thread.
mod captured {
    use std::cell::RefCell;

    thread_local! {
        static LINES: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    }

    struct Capture;

    impl log::Log for Capture {
        fn enabled(&self, _: &log::Metadata) -> bool {
            true
        }
        fn log(&self, record: &log::Record) {
            LINES.with(|l| l.borrow_mut().push(record.args().to_string()));
        }
        fn flush(&self) {}
    }

    static CAPTURE: Capture = Capture;

    /// Starts a test's capture afresh.
    pub fn start() {
        let _ = log::set_logger(&CAPTURE);
        log::set_max_level(log::LevelFilter::Info);
        LINES.with(|l| l.borrow_mut().clear());
    }

    pub fn lines() -> Vec<String> {
        LINES.with(|l| l.borrow().clone())
    }
}

struct Rig {
    host: FakeHost,
    worker: Rc<Worker>,
    next: Cell<u32>,
    /// Streams a test will hand rate limit replies to, by context.
    streams: RefCell<HashMap<u32, Rc<RefCell<Stream>>>>,
}

const RW: &str = r#"{"user_id": "u_1", "key_id": "k_1", "scopes": ["mlflow:read", "mlflow:write"], "rate_limit_per_hour": 1000}"#;
const RO: &str = r#"{"user_id": "u_2", "key_id": "k_2", "scopes": ["mlflow:read"]}"#;

impl Rig {
    fn new(extra: &str) -> Rig {
        Rig::with_env(extra, &|_| None)
    }

    /// A rig whose configuration reads `env` for its environment variables.
    fn with_env(extra: &str, env: &dyn Fn(&str) -> Option<String>) -> Rig {
        let json = format!(
            r#"{{"auth": {{"cluster": "hokusai_auth", "service_id": "platform"}}{extra}}}"#
        );
        let cfg = Config::parse_with_env(json.as_bytes(), env).unwrap();
        captured::start();
        Rig {
            host: FakeHost::default(),
            worker: Rc::new(Worker::new(cfg).unwrap()),
            next: Cell::new(10),
            streams: RefCell::default(),
        }
    }

    /// Starts a request; returns its context id, stream and the flow.
    fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (u32, Rc<RefCell<Stream>>, Flow) {
        self.request_on(&self.worker, method, path, headers)
    }

    /// A request on the worker whose per-VM state is `worker`.
    fn request_on(
        &self,
        worker: &Rc<Worker>,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (u32, Rc<RefCell<Stream>>, Flow) {
        let id = self.next.get();
        self.next.set(id + 1);
        let mut h = vec![
            (":method".to_string(), method.as_bytes().to_vec()),
            (":path".to_string(), path.as_bytes().to_vec()),
            (":authority".to_string(), b"gateway".to_vec()),
        ];
        h.extend(
            headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())),
        );
        self.host.headers.borrow_mut().insert(id, h);
        self.host.ctx.set(id);
        let stream = Stream::new(id, Rc::clone(worker));
        let flow = stream.borrow_mut().on_request_headers(&self.host);
        (id, stream, flow)
    }

    fn bearer(&self, path: &str) -> (u32, Rc<RefCell<Stream>>, Flow) {
        self.request("POST", path, &[("authorization", &format!("Bearer {KEY}"))])
    }

    /// Delivers the callout reply to the stream that made it.
    fn reply(&self, id: u32, stream: &Rc<RefCell<Stream>>, status: Option<u16>, body: &str) {
        self.host.answer(status, body);
        self.host.ctx.set(id);
        stream.borrow_mut().on_callout_reply(&self.host, body.len());
    }

    fn done(&self, id: u32, stream: &Rc<RefCell<Stream>>) {
        self.host.ctx.set(id);
        stream.borrow_mut().on_done(&self.host);
    }

    fn assert_no_key_anywhere(&self) {
        let needle = &KEY[8..20];
        for (ctx, h) in self.host.headers.borrow().iter() {
            for (k, v) in h {
                assert!(
                    !String::from_utf8_lossy(v).contains(needle),
                    "ctx {ctx} header {k} carries the key"
                );
            }
        }
        for l in captured::lines().iter() {
            assert!(!l.contains(needle), "log carries the key: {l}");
        }
        for r in self.host.replies.borrow().values() {
            assert!(!r.body.contains(needle));
        }
        for k in self.host.shared.borrow().keys() {
            assert!(!k.contains(needle));
        }
    }
}

const RUNS_CREATE: &str = "/api/mlflow/api/2.0/mlflow/runs/create";
const EXP_SEARCH: &str = "/api/mlflow/api/2.0/mlflow/experiments/search";

#[test]
fn miss_calls_out_then_the_hit_does_not() {
    let rig = Rig::new("");
    let (id, s, flow) = rig.bearer(RUNS_CREATE);
    assert_eq!(flow, Flow::Pause);
    assert_eq!(rig.host.calls(), 1);
    {
        let d = rig.host.dispatched.borrow();
        let (_, headers, body) = &d[0];
        let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        assert_eq!(get(":method").as_deref(), Some("POST"));
        assert_eq!(get(":path").as_deref(), Some("/api/v1/keys/validate"));
        assert_eq!(get("authorization"), Some(format!("Bearer {KEY}")));
        let v: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"service_id": "platform", "client_ip": "127.0.0.1"})
        );
    }
    assert_eq!(
        rig.host.header(id, "authorization"),
        None,
        "credential stripped before the verdict"
    );
    rig.reply(id, &s, Some(200), RW);
    assert_eq!(rig.host.resumed.borrow().as_slice(), &[id]);
    assert_eq!(
        rig.host.header(id, "x-hokusai-user-id").as_deref(),
        Some("u_1")
    );
    assert_eq!(
        rig.host.header(id, "x-hokusai-api-key-id").as_deref(),
        Some("k_1")
    );
    assert_eq!(
        rig.host.header(id, ":path").as_deref(),
        Some("/api/2.0/mlflow/runs/create")
    );

    let (id2, _, flow) = rig.bearer(RUNS_CREATE);
    assert_eq!(flow, Flow::Continue);
    assert_eq!(rig.host.calls(), 1, "cache hit makes no callout");
    assert_eq!(
        rig.host.header(id2, "x-hokusai-user-id").as_deref(),
        Some("u_1")
    );
    assert_eq!(rig.host.count_of(Counter::CacheHit), 1);
    assert_eq!(rig.host.count_of(Counter::CacheMiss), 1);
    rig.assert_no_key_anywhere();
}

#[test]
fn positive_verdicts_expire_after_the_ttl() {
    let rig = Rig::new("");
    let (id, s, _) = rig.bearer(RUNS_CREATE);
    rig.reply(id, &s, Some(200), RW);
    rig.host.now.set(59_999);
    assert_eq!(rig.bearer(RUNS_CREATE).2, Flow::Continue);
    rig.host.now.set(60_000);
    assert_eq!(rig.bearer(RUNS_CREATE).2, Flow::Pause);
    assert_eq!(rig.host.calls(), 2);
}

#[test]
fn a_hit_near_expiry_queues_one_refresh_and_goes_on() {
    let rig = Rig::new(r#", "cache": {"ttl_seconds": 60, "refresh_ahead_percent": 20}"#);
    let (id, s, _) = rig.bearer(RUNS_CREATE);
    rig.reply(id, &s, Some(200), RW);
    rig.host.now.set(47_999);
    assert_eq!(rig.bearer(RUNS_CREATE).2, Flow::Continue);
    assert!(rig.host.jobs.borrow().is_empty(), "not yet in the last 20%");
    rig.host.now.set(48_000);
    assert_eq!(
        rig.bearer(RUNS_CREATE).2,
        Flow::Continue,
        "goes on with the verdict it has"
    );
    assert_eq!(rig.bearer(RUNS_CREATE).2, Flow::Continue);
    let jobs = rig.host.jobs.borrow().clone();
    assert_eq!(jobs.len(), 1, "one re-validation per key at a time");
    assert_eq!(jobs[0].cluster, "hokusai_auth");
    let job_headers: Vec<(String, String)> = jobs[0]
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    assert_eq!(
        job_headers,
        rig.host.dispatched.borrow()[0].1,
        "the same callout a miss makes"
    );
    assert_eq!(rig.host.count_of(Counter::CacheRefresh), 1);
    rig.host.now.set(50_000);
    rig.worker
        .complete_refresh(&rig.host, &jobs[0].refresh, Some(200), RW.as_bytes());
    rig.host.now.set(100_000);
    assert_eq!(
        rig.bearer(RUNS_CREATE).2,
        Flow::Continue,
        "the refreshed verdict lives a TTL from its answer"
    );
    assert_eq!(
        rig.host.calls(),
        1,
        "the stream never waited for a callout again"
    );
}

#[test]
fn a_refresh_that_finds_the_key_revoked_stops_it_and_a_failed_one_changes_nothing() {
    let rig = Rig::new(r#", "cache": {"ttl_seconds": 10, "refresh_ahead_percent": 50}"#);
    let (id, s, _) = rig.bearer(RUNS_CREATE);
    rig.reply(id, &s, Some(200), RW);
    rig.host.now.set(6_000);
    assert_eq!(rig.bearer(RUNS_CREATE).2, Flow::Continue);
    let job = rig.host.jobs.borrow_mut().remove(0);
    rig.worker
        .complete_refresh(&rig.host, &job.refresh, None, b"");
    assert_eq!(rig.host.count_of(Counter::CacheRefreshFailed), 1);
    assert_eq!(
        rig.bearer(RUNS_CREATE).2,
        Flow::Continue,
        "the old verdict still stands"
    );
    let job = rig.host.jobs.borrow_mut().remove(0);
    rig.worker
        .complete_refresh(&rig.host, &job.refresh, Some(401), b"");
    let (id, _, flow) = rig.bearer(RUNS_CREATE);
    assert_eq!(
        (flow, rig.host.status(id)),
        (Flow::Pause, Some(401)),
        "revoked: refused at once"
    );
    assert_eq!(rig.host.calls(), 1);
}

#[test]
fn refresh_ahead_is_off_by_default() {
    let rig = Rig::new("");
    let (id, s, _) = rig.bearer(RUNS_CREATE);
    rig.reply(id, &s, Some(200), RW);
    rig.host.now.set(59_999);
    assert_eq!(rig.bearer(RUNS_CREATE).2, Flow::Continue);
    assert!(rig.host.jobs.borrow().is_empty());
}

#[test]
fn invalid_keys_get_401_and_are_negatively_cached() {
    let rig = Rig::new("");
    let (id, s, _) = rig.bearer(EXP_SEARCH);
    rig.reply(
        id,
        &s,
        Some(401),
        r#"{"detail": "API key registered for 'website' not 'platform'"}"#,
    );
    let r = rig.host.replies.borrow().get(&id).cloned().unwrap();
    assert_eq!(r.status, 401);
    assert!(r.body.contains("UNAUTHENTICATED") && r.body.contains("'platform'"));
    assert!(
        !r.body.contains("website"),
        "never echo the key service's body"
    );
    assert!(r.headers.iter().any(|(k, _)| *k == "www-authenticate"));
    assert!(rig.host.resumed.borrow().is_empty());

    let (id2, _, flow) = rig.bearer(EXP_SEARCH);
    assert_eq!(flow, Flow::Pause);
    assert_eq!(rig.host.status(id2), Some(401));
    assert_eq!(rig.host.calls(), 1, "negative cache");
    rig.host.now.set(10_000);
    rig.bearer(EXP_SEARCH);
    assert_eq!(rig.host.calls(), 2, "negative TTL is shorter");
    rig.assert_no_key_anywhere();
}

#[test]
fn unavailable_gets_503_and_is_never_cached() {
    for (status, body) in [
        (None, ""),
        (Some(500), r#"{"detail": "boom"}"#),
        (Some(200), "not json"),
        (Some(200), "[1, 2]"),
        (Some(200), r#"{"user_id": 7}"#),
        (Some(403), "{}"),
    ] {
        let rig = Rig::new("");
        let (id, s, _) = rig.bearer(EXP_SEARCH);
        rig.reply(id, &s, status, body);
        let r = rig.host.replies.borrow().get(&id).cloned().unwrap();
        assert_eq!(r.status, 503, "{status:?} {body}");
        assert!(r.headers.contains(&("retry-after", "1".into())));
        assert!(r.body.contains("TEMPORARILY_UNAVAILABLE"));
        rig.bearer(EXP_SEARCH);
        assert_eq!(rig.host.calls(), 2, "not cached: {status:?} {body}");
    }
}

#[test]
fn key_service_429_is_passed_on() {
    let rig = Rig::new("");
    let (id, s, _) = rig.bearer(EXP_SEARCH);
    rig.reply(id, &s, Some(429), r#"{"detail": "slow down"}"#);
    let r = rig.host.replies.borrow().get(&id).cloned().unwrap();
    assert_eq!(r.status, 429);
    assert!(r.headers.contains(&("retry-after", "60".into())));
}

#[test]
fn refused_dispatch_is_503_at_once() {
    let rig = Rig::new("");
    rig.host.refuse_dispatch.set(true);
    let (id, _, flow) = rig.bearer(EXP_SEARCH);
    assert_eq!(flow, Flow::Pause);
    assert_eq!(rig.host.status(id), Some(503));
    assert_eq!(rig.host.count_of(Counter::CalloutErrorDispatch), 1);
}

#[test]
fn concurrent_misses_share_one_callout() {
    let rig = Rig::new("");
    let (lead, ls, _) = rig.bearer(RUNS_CREATE);
    let (w1, _s1, f1) = rig.bearer(EXP_SEARCH);
    let (w2, _s2, f2) = rig.request(
        "GET",
        "/mlflow/api/2.0/mlflow/runs/get?run_id=1",
        &[("x-api-key", KEY)],
    );
    assert_eq!((f1, f2), (Flow::Pause, Flow::Pause));
    assert_eq!(rig.host.calls(), 1);
    rig.reply(lead, &ls, Some(200), RW);
    let mut resumed = rig.host.resumed.borrow().clone();
    resumed.sort();
    assert_eq!(resumed, vec![lead, w1, w2]);
    for id in [lead, w1, w2] {
        assert_eq!(
            rig.host.header(id, "x-hokusai-user-id").as_deref(),
            Some("u_1")
        );
    }
    assert_eq!(
        rig.host.header(w2, ":path").as_deref(),
        Some("/api/2.0/mlflow/runs/get?run_id=1")
    );
    assert_eq!(rig.host.count_of(Counter::SingleFlightWait), 2);
    rig.assert_no_key_anywhere();
}

#[test]
fn waiters_get_their_own_policy_decision() {
    let rig = Rig::new("");
    let (lead, ls, _) = rig.bearer(EXP_SEARCH);
    let (w, _ws, _) = rig.bearer(RUNS_CREATE);
    rig.reply(lead, &ls, Some(200), RO);
    assert_eq!(rig.host.resumed.borrow().as_slice(), &[lead]);
    assert_eq!(rig.host.status(w), Some(403));
}

#[test]
fn a_dead_leader_does_not_strand_its_waiters() {
    let rig = Rig::new("");
    let (lead, ls, _) = rig.bearer(EXP_SEARCH);
    let (w, _ws, _) = rig.bearer(EXP_SEARCH);
    rig.done(lead, &ls);
    assert_eq!(rig.host.status(w), Some(503));
    assert_eq!(rig.host.count_of(Counter::SingleFlightAbandoned), 1);
    // The next request starts a fresh callout.
    rig.bearer(EXP_SEARCH);
    assert_eq!(rig.host.calls(), 2);
}

#[test]
fn a_waiter_that_left_is_not_answered() {
    let rig = Rig::new("");
    let (lead, ls, _) = rig.bearer(EXP_SEARCH);
    let (w, ws, _) = rig.bearer(EXP_SEARCH);
    rig.done(w, &ws);
    rig.reply(lead, &ls, Some(200), RW);
    assert_eq!(rig.host.resumed.borrow().as_slice(), &[lead]);
    assert_eq!(rig.host.status(w), None);
}

#[test]
fn public_paths_and_preflight_need_no_key_and_lose_spoofed_identity() {
    let rig = Rig::new("");
    let (id, _, flow) = rig.request(
        "GET",
        "/api/mlflow/health/mlflow",
        &[("x-hokusai-user-id", "admin")],
    );
    assert_eq!(flow, Flow::Continue);
    assert_eq!(rig.host.header(id, ":path").as_deref(), Some("/health"));
    assert_eq!(rig.host.header(id, "x-hokusai-user-id"), None);
    let (id, _, flow) = rig.request(
        "OPTIONS",
        RUNS_CREATE,
        &[("X-Hokusai-API-Key-Id".to_lowercase().as_str(), "k")],
    );
    assert_eq!(flow, Flow::Continue);
    assert_eq!(
        rig.host.header(id, ":path").as_deref(),
        Some("/api/2.0/mlflow/runs/create")
    );
    assert_eq!(rig.host.header(id, "x-hokusai-api-key-id"), None);
    assert_eq!(rig.host.calls(), 0);
    // Not a public path: only the exact path is.
    let (id, _, _) = rig.request("GET", "/api/mlflow/health/mlflow/x", &[]);
    assert_eq!(rig.host.status(id), Some(401));
}

#[test]
fn spoofed_identity_is_replaced_on_allowed_requests() {
    let rig = Rig::new("");
    let (id, s, _) = rig.request(
        "POST",
        RUNS_CREATE,
        &[
            ("authorization", &format!("Bearer {KEY}")),
            ("x-hokusai-user-id", "someone-else"),
        ],
    );
    assert_eq!(rig.host.header(id, "x-hokusai-user-id"), None);
    rig.reply(id, &s, Some(200), r#"{"scopes": ["mlflow:write"]}"#);
    assert_eq!(
        rig.host.header(id, "x-hokusai-user-id"),
        None,
        "no user id known: header stays absent"
    );
    assert_eq!(rig.host.resumed.borrow().as_slice(), &[id]);
}

#[test]
fn missing_and_bad_credentials_get_401_without_a_callout() {
    let rig = Rig::new("");
    for headers in [
        vec![],
        vec![("authorization", "Bearer ")],
        vec![("authorization", "Bearer a b")],
        vec![("authorization", "Bearer hk_a"), ("x-api-key", "hk_b")],
        vec![("authorization", "Digest x")],
    ] {
        let (id, _, flow) = rig.request("POST", EXP_SEARCH, &headers);
        assert_eq!(flow, Flow::Pause);
        assert_eq!(rig.host.status(id), Some(401), "{headers:?}");
        assert_eq!(rig.host.header(id, "authorization"), None);
        assert_eq!(rig.host.header(id, "x-api-key"), None);
    }
    assert_eq!(rig.host.calls(), 0);
}

#[test]
fn query_key_is_removed_and_the_query_kept() {
    let rig = Rig::new("");
    let (id, s, _) = rig.request(
        "GET",
        &format!("/api/mlflow/api/2.0/mlflow/runs/get?run_id=7&api_key={KEY}&x=%20y"),
        &[],
    );
    assert_eq!(
        rig.host.header(id, ":path").as_deref(),
        Some("/api/2.0/mlflow/runs/get?run_id=7&x=%20y")
    );
    rig.reply(id, &s, Some(200), RW);
    assert_eq!(rig.host.resumed.borrow().as_slice(), &[id]);
    rig.assert_no_key_anywhere();
}

#[test]
fn ajax_mapping_is_applied_when_configured() {
    let rig = Rig::new(r#", "mlflow": {"ajax_api": true}"#);
    let (id, s, _) = rig.bearer(EXP_SEARCH);
    assert_eq!(
        rig.host.header(id, ":path").as_deref(),
        Some("/ajax-api/2.0/mlflow/experiments/search")
    );
    rig.reply(id, &s, Some(200), RO);
    assert_eq!(rig.host.resumed.borrow().as_slice(), &[id]);
}

#[test]
fn ambiguous_paths_get_400() {
    let rig = Rig::new("");
    let (id, _, _) = rig.bearer("/api/mlflow/health/mlflow/../../api/2.0/mlflow/runs/create");
    assert_eq!(rig.host.status(id), Some(400));
    assert_eq!(rig.host.calls(), 0);
}

#[test]
fn read_only_keys_can_read_but_not_write() {
    let rig = Rig::new("");
    let (id, s, _) = rig.bearer(EXP_SEARCH);
    rig.reply(id, &s, Some(200), RO);
    assert_eq!(rig.host.resumed.borrow().as_slice(), &[id]);
    let (id, _, _) = rig.bearer(RUNS_CREATE);
    let r = rig.host.replies.borrow().get(&id).cloned().unwrap();
    assert_eq!(r.status, 403);
    assert!(
        r.body.contains("PERMISSION_DENIED")
            && r.body.contains("mlflow:write")
            && r.body.contains("[mlflow:read]")
    );
}

#[test]
fn rate_limit_counts_per_key_and_reports_remaining() {
    let rig = Rig::new("");
    let (id, s, _) = rig.bearer(EXP_SEARCH);
    rig.reply(
        id,
        &s,
        Some(200),
        r#"{"key_id": "k_9", "rate_limit_per_hour": 2}"#,
    );
    rig.host.ctx.set(id);
    s.borrow_mut().on_response_headers(&rig.host);
    rig.host
        .assert_response_header(id, "x-ratelimit-remaining", "1");
    rig.host
        .assert_response_header(id, "x-ratelimit-limit", "2");
    assert_eq!(rig.bearer(EXP_SEARCH).2, Flow::Continue);
    let (id, _, _) = rig.bearer(EXP_SEARCH);
    let r = rig.host.replies.borrow().get(&id).cloned().unwrap();
    assert_eq!(r.status, 429);
    assert!(r.headers.contains(&("x-ratelimit-remaining", "0".into())));
    assert!(r.headers.iter().any(|(k, _)| *k == "retry-after"));
}

#[test]
fn rate_limit_can_be_off() {
    let rig = Rig::new(r#", "rate_limit": {"enabled": false}"#);
    let (id, s, _) = rig.bearer(EXP_SEARCH);
    rig.reply(id, &s, Some(200), r#"{"rate_limit_per_hour": 1}"#);
    for _ in 0..3 {
        assert_eq!(rig.bearer(EXP_SEARCH).2, Flow::Continue);
    }
}

#[test]
fn stale_if_error_serves_only_expired_positive_verdicts() {
    let rig = Rig::new(r#", "cache": {"stale_if_error_seconds": 300}"#);
    let (id, s, _) = rig.bearer(EXP_SEARCH);
    rig.reply(id, &s, Some(200), RO);
    rig.host.now.set(61_000);
    let (id, s, _) = rig.bearer(EXP_SEARCH);
    rig.reply(id, &s, None, "");
    assert!(
        rig.host.resumed.borrow().contains(&id),
        "stale verdict used during the outage"
    );
    assert_eq!(rig.host.count_of(Counter::CacheStaleServed), 1);
    rig.host.now.set(61_000 + 300_000);
    let (id, s, _) = rig.bearer(EXP_SEARCH);
    rig.reply(id, &s, None, "");
    assert_eq!(rig.host.status(id), Some(503), "past the grace");
}

#[test]
fn stale_if_error_is_off_by_default_and_never_for_401() {
    let rig = Rig::new("");
    let (id, s, _) = rig.bearer(EXP_SEARCH);
    rig.reply(id, &s, Some(200), RO);
    rig.host.now.set(61_000);
    let (id, s, _) = rig.bearer(EXP_SEARCH);
    rig.reply(id, &s, None, "");
    assert_eq!(rig.host.status(id), Some(503));

    let rig = Rig::new(r#", "cache": {"stale_if_error_seconds": 300}"#);
    let (id, s, _) = rig.bearer(EXP_SEARCH);
    rig.reply(id, &s, Some(401), "{}");
    rig.host.now.set(11_000);
    let (id, s, _) = rig.bearer(EXP_SEARCH);
    rig.reply(id, &s, None, "");
    assert_eq!(rig.host.status(id), Some(503));
}

#[test]
fn the_audit_line_names_the_key_by_id_only() {
    let rig = Rig::new("");
    let (id, s, _) = rig.bearer(EXP_SEARCH);
    rig.reply(id, &s, Some(200), RW);
    rig.done(id, &s);
    let logs = captured::lines();
    let line = logs
        .iter()
        .find(|l| l.contains("\"event\":\"hokusai_auth\""))
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["verdict"], "allowed");
    assert_eq!(v["key_id"], "k_1");
    assert_eq!(v["user_id"], "u_1");
    assert_eq!(v["cache"], "miss");
    assert_eq!(v["path"], "/api/2.0/mlflow/experiments/search");
    assert_eq!(v["key"].as_str().unwrap().len(), 8);
    rig.assert_no_key_anywhere();
}

#[test]
fn underscore_spellings_of_protected_headers_are_removed() {
    let rig = Rig::new("");
    let (id, s, _) = rig.request(
        "POST",
        RUNS_CREATE,
        &[
            ("authorization", &format!("Bearer {KEY}")),
            ("x_hokusai_user_id", "root"),
            ("x_hokusai_api_key_id", "k_root"),
            ("x_api_key", KEY),
            ("x_other", "kept"),
        ],
    );
    rig.reply(id, &s, Some(200), RW);
    for gone in ["x_hokusai_user_id", "x_hokusai_api_key_id", "x_api_key"] {
        assert_eq!(rig.host.header(id, gone), None, "{gone}");
    }
    assert_eq!(rig.host.header(id, "x_other").as_deref(), Some("kept"));
    assert_eq!(
        rig.host.header(id, "x-hokusai-user-id").as_deref(),
        Some("u_1")
    );
}

#[test]
fn a_worker_reuses_its_own_verdicts_without_reading_shared_data() {
    let rig = Rig::new(r#", "rate_limit": {"enabled": false}"#);
    let (id, s, _) = rig.bearer(EXP_SEARCH);
    rig.reply(id, &s, Some(200), RW);
    let reads = rig.host.shared_reads.get();
    assert_eq!(rig.bearer(EXP_SEARCH).2, Flow::Continue);
    assert_eq!(
        rig.host.shared_reads.get(),
        reads,
        "served from the worker's copy"
    );
    // Another worker (its own Worker) finds the verdict in shared data.
    let other = Rc::new(Worker::new(rig.worker.cfg.clone()).unwrap());
    let bearer = format!("Bearer {KEY}");
    let (_, _, flow) = rig.request_on(&other, "POST", EXP_SEARCH, &[("authorization", &bearer)]);
    assert_eq!(flow, Flow::Continue);
    assert_eq!(rig.host.shared_reads.get(), reads + 1);
    assert_eq!(rig.host.calls(), 1);
}

// --- per-route rules ---

const ROUTES: &str = r#", "routes": [
    {"name": "api", "match": {"path_prefix": "/api/mlflow/api"}},
    {"name": "ui", "match": {"path_prefix": "/api/mlflow"}, "anonymous_read": true,
     "challenge": {"scheme": "basic", "realm": "Hokusai MLflow"}},
    {"name": "staging", "match": {"host": "*.staging.example"},
     "auth": {"service_id": "ml-platform"}, "rate_limit": {"default_per_hour": 1}},
    {"name": "static", "match": {"route_name": "static"}, "enabled": false}
]"#;

fn dispatched_service(rig: &Rig, n: usize) -> String {
    let d = rig.host.dispatched.borrow();
    let v: serde_json::Value = serde_json::from_slice(&d[n].2).unwrap();
    v["service_id"].as_str().unwrap().to_string()
}

#[test]
fn a_ui_route_lets_reads_through_without_a_key_and_asks_a_browser_for_writes() {
    let rig = Rig::new(ROUTES);
    let (id, _, flow) = rig.request("GET", "/api/mlflow/static-files/static/js/main.js", &[]);
    assert_eq!(flow, Flow::Continue);
    assert_eq!(rig.host.count_of(Counter::Anonymous), 1);
    assert_eq!(
        rig.host.header(id, ":path").as_deref(),
        Some("/static-files/static/js/main.js")
    );
    let (id, _, flow) = rig.request("POST", "/api/mlflow/ajax-api/2.0/mlflow/runs/create", &[]);
    assert_eq!(flow, Flow::Pause);
    let r = rig.host.replies.borrow().get(&id).cloned().unwrap();
    assert_eq!(r.status, 401);
    assert!(r
        .headers
        .contains(&("www-authenticate", "Basic realm=\"Hokusai MLflow\"".into())));
    assert_eq!(rig.host.calls(), 0);
    // The MLflow client's paths under the same mount keep the default.
    let (id, _, _) = rig.request("POST", RUNS_CREATE, &[]);
    let r = rig.host.replies.borrow().get(&id).cloned().unwrap();
    assert!(r
        .headers
        .contains(&("www-authenticate", "Bearer realm=\"hokusai\"".into())));
    let (id, _, _) = rig.request("GET", "/api/mlflow/api/2.0/mlflow/experiments/get", &[]);
    assert_eq!(
        rig.host.status(id),
        Some(401),
        "no anonymous reads on the API route"
    );
}

#[test]
fn a_key_on_an_anonymous_route_is_still_checked_and_identified() {
    let rig = Rig::new(ROUTES);
    let (id, s, flow) = rig.request(
        "GET",
        "/api/mlflow/ajax-api/2.0/mlflow/experiments/search",
        &[("authorization", &format!("Bearer {KEY}"))],
    );
    assert_eq!(flow, Flow::Pause);
    rig.reply(id, &s, Some(200), RW);
    assert_eq!(
        rig.host.header(id, "x-hokusai-user-id").as_deref(),
        Some("u_1")
    );
}

#[test]
fn a_route_without_auth_strips_credentials_and_asks_nothing() {
    let rig = Rig::new(ROUTES);
    *rig.host.route.borrow_mut() = Some("static".into());
    let (id, _, flow) = rig.request(
        "POST",
        "/anything",
        &[
            ("authorization", &format!("Bearer {KEY}")),
            ("x-hokusai-user-id", "root"),
        ],
    );
    assert_eq!(flow, Flow::Continue);
    assert_eq!(rig.host.header(id, "authorization"), None);
    assert_eq!(rig.host.header(id, "x-hokusai-user-id"), None);
    assert_eq!(rig.host.count_of(Counter::NotEnforced), 1);
    assert_eq!(rig.host.calls(), 0);
    rig.assert_no_key_anywhere();
}

#[test]
fn verdicts_never_cross_from_one_service_to_another() {
    let rig = Rig::new(ROUTES);
    let (id, s, _) = rig.bearer(RUNS_CREATE);
    rig.reply(id, &s, Some(200), RW);
    assert_eq!(
        rig.bearer(RUNS_CREATE).2,
        Flow::Continue,
        "cached for platform"
    );
    // The same key on the staging host: its own callout, for its own service.
    let staging = [
        (":authority", "registry.staging.example:443"),
        ("authorization", &format!("Bearer {KEY}")),
    ];
    let (id, s, flow) = rig.request("POST", "/mlflow/api/2.0/mlflow/runs/search", &staging);
    assert_eq!(flow, Flow::Pause);
    assert_eq!(rig.host.calls(), 2);
    assert_eq!(dispatched_service(&rig, 0), "platform");
    assert_eq!(dispatched_service(&rig, 1), "ml-platform");
    rig.reply(id, &s, Some(401), "{}");
    let r = rig.host.replies.borrow().get(&id).cloned().unwrap();
    assert!(r.body.contains("'ml-platform'"));
    // And the platform verdict is still there for the platform routes.
    assert_eq!(rig.bearer(RUNS_CREATE).2, Flow::Continue);
    assert_eq!(rig.host.calls(), 2);
}

#[test]
fn each_route_counts_a_key_in_its_own_limit_scope() {
    let rig = Rig::new(ROUTES);
    let staging = [
        (":authority", "a.staging.example"),
        ("authorization", &format!("Bearer {KEY}")),
    ];
    let (id, s, _) = rig.request("POST", "/mlflow/api/2.0/mlflow/runs/search", &staging);
    rig.reply(id, &s, Some(200), r#"{"key_id": "k_1"}"#);
    assert_eq!(
        rig.host.resumed.borrow().as_slice(),
        &[id],
        "1 of 1 this hour"
    );
    let (id, _, _) = rig.request("POST", "/mlflow/api/2.0/mlflow/runs/search", &staging);
    assert_eq!(rig.host.status(id), Some(429));
    // The platform routes count the same key_id apart.
    let (id, s, _) = rig.bearer(RUNS_CREATE);
    rig.reply(
        id,
        &s,
        Some(200),
        r#"{"key_id": "k_1", "scopes": ["mlflow:write"]}"#,
    );
    assert!(rig.host.resumed.borrow().contains(&id));
}

#[test]
fn requests_no_rule_selects_get_the_default() {
    let rig = Rig::new(ROUTES);
    *rig.host.route.borrow_mut() = Some("unknown".into());
    let (id, _, _) = rig.request("GET", "/somewhere/else", &[(":authority", "bad host")]);
    let r = rig.host.replies.borrow().get(&id).cloned().unwrap();
    assert_eq!(r.status, 401);
    assert!(r
        .headers
        .contains(&("www-authenticate", "Bearer realm=\"hokusai\"".into())));
}

// --- whoami ---

const WHOAMI: &str = "/api/mlflow/_hokusai/whoami";

#[test]
fn whoami_is_answered_by_the_filter_with_what_the_key_may_do() {
    let rig = Rig::new("");
    let (id, s, _) = rig.request(
        "GET",
        WHOAMI,
        &[("authorization", &format!("Bearer {KEY}"))],
    );
    rig.reply(id, &s, Some(200), RO);
    let r = rig.host.replies.borrow().get(&id).cloned().unwrap();
    assert_eq!(r.status, 200);
    assert!(r
        .headers
        .contains(&("x-hokusai-auth-reply", "whoami".into())));
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["key_id"], "k_2");
    assert_eq!(v["access"]["read"], true);
    assert_eq!(v["access"]["write"], false);
    assert_eq!(v["service_id"], "platform");
    assert_eq!(v["key_source"], "bearer");
    assert_eq!(v["cached"], false);
    assert!(
        rig.host.resumed.borrow().is_empty(),
        "never forwarded to MLflow"
    );
    // The second time from the cache.
    let (id, _, flow) = rig.request(
        "GET",
        WHOAMI,
        &[("authorization", &format!("Bearer {KEY}"))],
    );
    assert_eq!(flow, Flow::Pause);
    let r = rig.host.replies.borrow().get(&id).cloned().unwrap();
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["cached"], true);
    assert_eq!(rig.host.count_of(Counter::Whoami), 2);
    rig.assert_no_key_anywhere();
}

#[test]
fn whoami_needs_a_key_and_can_be_switched_off_per_route() {
    let rig = Rig::new(
        r#", "routes": [{"match": {"path_prefix": "/mlflow"}, "whoami": {"enabled": false}}]"#,
    );
    let (id, _, _) = rig.request("GET", WHOAMI, &[]);
    assert_eq!(rig.host.status(id), Some(401));
    let (id, s, _) = rig.request(
        "GET",
        "/mlflow/_hokusai/whoami",
        &[("authorization", &format!("Bearer {KEY}"))],
    );
    rig.reply(id, &s, Some(200), RW);
    assert_eq!(
        rig.host.resumed.borrow().as_slice(),
        &[id],
        "passed on to MLflow"
    );
    assert_eq!(
        rig.host.header(id, ":path").as_deref(),
        Some("/_hokusai/whoami")
    );
    // Without a mount there is no whoami either.
    let (id, _, flow) = rig.request(
        "GET",
        "/_hokusai/whoami",
        &[("authorization", &format!("Bearer {KEY}"))],
    );
    assert_eq!(flow, Flow::Continue);
    assert_eq!(rig.host.status(id), None);
}

// --- rate_limit.mode: global ---

const GLOBAL: &str = r#", "rate_limit": {"mode": "global", "cluster": "hokusai_ratelimit"}"#;

mod rls_reply {
    use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
    use prost::Message;

    /// What the service answers: `remaining` after this hit, or over.
    pub fn of(over: bool, remaining: u32) -> Vec<u8> {
        crate::limits::global::fixtures::reply(over, 1000, remaining, 120)
    }

    /// The descriptor's entries and limit override of a sent request.
    pub fn read(message: &[u8]) -> (Vec<(String, String)>, u32) {
        let (entries, limit, _) = read_hits(message);
        (entries, limit)
    }

    /// And the hits it asks to count.
    pub fn read_hits(message: &[u8]) -> (Vec<(String, String)>, u32, u32) {
        let r = RateLimitRequest::decode(message).unwrap();
        assert_eq!(r.domain, "hokusai-mlflow");
        let d = &r.descriptors[0];
        let entries = d
            .entries
            .iter()
            .map(|e| (e.key.clone(), e.value.clone()))
            .collect();
        (entries, d.limit.unwrap().requests_per_unit, r.hits_addend)
    }
}

impl Rig {
    /// Delivers a rate limit reply (gRPC `status`) for `token` to the
    /// context that made the call.
    fn count_reply(&self, token: u32, status: u32, body: Vec<u8>) {
        let owner = self.host.charges_sent.borrow()[(token - 1001) as usize].0;
        let stream = self.streams.borrow().get(&owner).cloned().unwrap();
        *self.host.count_reply.borrow_mut() = body;
        self.host.ctx.set(owner);
        let size = self.host.count_reply.borrow().len();
        stream
            .borrow_mut()
            .on_charge_reply(&self.host, token, status, size);
    }

    fn remember(&self, id: u32, s: &Rc<RefCell<Stream>>) {
        self.streams.borrow_mut().insert(id, Rc::clone(s));
    }

    /// A request whose key is cached already (a first request's callout).
    fn warm(&self) {
        let (id, s, _) = self.bearer(EXP_SEARCH);
        self.remember(id, &s);
        self.reply(id, &s, Some(200), RW);
        let token = 1000 + self.host.charges_sent.borrow().len() as u32;
        self.count_reply(token, 0, rls_reply::of(false, 999));
    }
}

#[test]
fn global_mode_leases_hits_with_the_keys_limit_and_spends_them_without_calls() {
    let rig = Rig::new(GLOBAL);
    rig.warm();
    let first = rls_reply::read_hits(&rig.host.charges_sent.borrow()[0].2);
    assert_eq!(first.2, 1, "nothing heard yet: one hit");
    let (id, s, flow) = rig.bearer(EXP_SEARCH);
    rig.remember(id, &s);
    assert_eq!(flow, Flow::Pause, "a cache hit waits for the count");
    let sent = rig.host.charges_sent.borrow().clone();
    assert_eq!(sent.len(), 2);
    let (ctx, target, message) = &sent[1];
    assert_eq!(*ctx, id);
    assert_eq!(
        target,
        &crate::limits::global::target("hokusai_ratelimit").unwrap()
    );
    let (entries, limit, hits) = rls_reply::read_hits(message);
    assert_eq!(limit, 1000);
    assert_eq!(hits, 100, "999 left heard: max_lease");
    assert!(
        entries.contains(&("key_id".into(), "k_1".into())),
        "{entries:?}"
    );
    rig.count_reply(1002, 0, rls_reply::of(false, 799));
    assert!(rig.host.resumed.borrow().contains(&id));
    rig.host.ctx.set(id);
    s.borrow_mut().on_response_headers(&rig.host);
    rig.host
        .assert_response_header(id, "x-ratelimit-remaining", "898");
    // The next are admitted from the lease, with no call, until a quarter
    // of the next lease (99: 799 heard left) is left.
    for left in (799 + 24..898).rev() {
        let (id, s, flow) = rig.bearer(EXP_SEARCH);
        assert_eq!(flow, Flow::Continue);
        rig.host.ctx.set(id);
        s.borrow_mut().on_response_headers(&rig.host);
        rig.host
            .assert_response_header(id, "x-ratelimit-remaining", &left.to_string());
    }
    assert_eq!(rig.host.count_of(Counter::RateLimitCall), 2);
    assert_eq!(rig.host.count_of(Counter::RateLimitLeased), 75);
    let (id, s, flow) = rig.bearer(EXP_SEARCH);
    rig.remember(id, &s);
    assert_eq!(flow, Flow::Pause, "renewed ahead");
    let (_, _, hits) = rls_reply::read_hits(&rig.host.charges_sent.borrow()[2].2);
    assert_eq!(hits, 99);
    let (_, _, flow) = rig.bearer(EXP_SEARCH);
    assert_eq!(flow, Flow::Continue, "the others spend what is held");
    assert_eq!(rig.host.count_of(Counter::RateLimitCall), 3);
    rig.assert_no_key_anywhere();
}

#[test]
fn max_lease_one_asks_on_every_request() {
    let rig = Rig::new(
        r#", "rate_limit": {"mode": "global", "cluster": "hokusai_ratelimit", "max_lease": 1}"#,
    );
    rig.warm();
    for n in 2..5u32 {
        let (id, s, flow) = rig.bearer(EXP_SEARCH);
        rig.remember(id, &s);
        assert_eq!(flow, Flow::Pause);
        let (_, _, hits) = rls_reply::read_hits(&rig.host.charges_sent.borrow()[n as usize - 1].2);
        assert_eq!(hits, 1);
        rig.count_reply(1000 + n, 0, rls_reply::of(false, 999 - n));
    }
    assert_eq!(rig.host.count_of(Counter::RateLimitLeased), 0);
}

#[test]
fn a_refusal_spends_the_window_for_this_process_without_more_calls() {
    let rig = Rig::new(GLOBAL);
    rig.warm();
    let (id, s, _) = rig.bearer(EXP_SEARCH);
    rig.remember(id, &s);
    rig.count_reply(1002, 0, rls_reply::of(true, 0));
    assert_eq!(rig.host.status(id), Some(429));
    let (id, _, flow) = rig.bearer(EXP_SEARCH);
    assert_eq!((flow, rig.host.status(id)), (Flow::Pause, Some(429)));
    assert_eq!(rig.host.count_of(Counter::RateLimitCall), 2);
}

#[test]
fn an_outage_admits_this_replicas_share_of_what_was_left_and_owes_it() {
    let rig = Rig::new(
        r#", "rate_limit": {"mode": "global", "cluster": "hokusai_ratelimit", "replicas": 4, "max_lease": 1}"#,
    );
    let (id, s, _) = rig.bearer(EXP_SEARCH);
    rig.remember(id, &s);
    rig.reply(id, &s, Some(200), RW);
    rig.count_reply(1001, 0, rls_reply::of(false, 9));
    // UNAVAILABLE three times: 9 left over 4 replicas is 2 here.
    let mut statuses = Vec::new();
    for token in 1002..1005 {
        let (id, s, _) = rig.bearer(EXP_SEARCH);
        rig.remember(id, &s);
        rig.count_reply(token, 14, Vec::new());
        statuses.push(rig.host.status(id));
    }
    assert_eq!(statuses, [None, None, Some(429)]);
    // Back: the next call counts the two the outage admitted.
    let (id, s, _) = rig.bearer(EXP_SEARCH);
    rig.remember(id, &s);
    let (_, _, hits) = rls_reply::read_hits(&rig.host.charges_sent.borrow()[4].2);
    assert_eq!(hits, 3);
    rig.count_reply(1005, 0, rls_reply::of(false, 4));
    assert_eq!(rig.host.status(id), None);
}

#[test]
fn global_over_limit_is_429_with_the_services_window() {
    let rig = Rig::new(GLOBAL);
    rig.warm();
    let (id, s, _) = rig.bearer(EXP_SEARCH);
    rig.remember(id, &s);
    rig.count_reply(1002, 0, rls_reply::of(true, 0));
    let r = rig.host.replies.borrow().get(&id).cloned().unwrap();
    assert_eq!(r.status, 429);
    assert!(r.headers.contains(&("x-ratelimit-remaining", "0".into())));
    assert!(
        r.headers.contains(&("retry-after", "120".into())),
        "{:?}",
        r.headers
    );
}

#[test]
fn a_key_without_key_id_is_counted_by_a_short_hash_never_the_key() {
    let rig = Rig::new(GLOBAL);
    let (id, s, _) = rig.bearer(EXP_SEARCH);
    rig.remember(id, &s);
    rig.reply(
        id,
        &s,
        Some(200),
        r#"{"scopes": ["mlflow:read"], "rate_limit_per_hour": 40}"#,
    );
    let (entries, limit) = rls_reply::read(&rig.host.charges_sent.borrow()[0].2);
    assert_eq!(limit, 40);
    let owner = &entries.iter().find(|(k, _)| k == "key_id").unwrap().1;
    assert_eq!(owner.len(), 16, "8 bytes of the digest, in hex");
    assert!(!KEY.contains(owner.as_str()));
}

#[test]
fn each_failure_mode_does_what_it_says() {
    for (mode, status, counter) in [
        ("local", None, Counter::RateLimitFallbackLocal),
        ("allow", None, Counter::RateLimitFallbackAllow),
        ("deny", Some(503), Counter::RateLimitFallbackDeny),
    ] {
        let rig = Rig::new(&format!(
            r#", "rate_limit": {{"mode": "global", "cluster": "hokusai_ratelimit", "failure_mode": "{mode}"}}"#
        ));
        rig.warm();
        // A gRPC error (14: UNAVAILABLE, also what a timeout gives).
        let (id, s, _) = rig.bearer(EXP_SEARCH);
        rig.remember(id, &s);
        rig.count_reply(1002, 14, Vec::new());
        assert_eq!(rig.host.status(id), status, "{mode}");
        // A refused dispatch decides at once.
        rig.host.refuse_grpc.set(true);
        let (id, _, flow) = rig.bearer(EXP_SEARCH);
        let expected = if status.is_some() {
            Flow::Pause
        } else {
            Flow::Continue
        };
        assert_eq!((flow, rig.host.status(id)), (expected, status), "{mode}");
        assert_eq!(rig.host.count_of(counter), 2, "{mode}");
        assert_eq!(rig.host.count_of(Counter::RateLimitError), 2, "{mode}");
        if mode == "local" {
            let local = rig
                .host
                .shared
                .borrow()
                .keys()
                .any(|k| k.contains(".lease."));
            assert!(local, "admitted from this process's share instead");
        }
    }
}

#[test]
fn waiters_are_counted_by_the_leaders_context_which_answers_last() {
    let rig = Rig::new(GLOBAL);
    let (lead, ls, _) = rig.bearer(EXP_SEARCH);
    let (w1, ws1, _) = rig.bearer(EXP_SEARCH);
    let (w2, ws2, _) = rig.bearer(RUNS_CREATE);
    for (id, s) in [(lead, &ls), (w1, &ws1), (w2, &ws2)] {
        rig.remember(id, s);
    }
    rig.reply(lead, &ls, Some(200), RW);
    let sent = rig.host.charges_sent.borrow().clone();
    assert_eq!(sent.len(), 3);
    assert!(
        sent.iter().all(|(ctx, _, _)| *ctx == lead),
        "all from the leader's context"
    );
    assert!(rig.host.resumed.borrow().is_empty());
    // The leader's own count (the last call) comes first: it still waits.
    rig.count_reply(1003, 0, rls_reply::of(false, 5));
    assert!(rig.host.resumed.borrow().is_empty());
    rig.count_reply(1001, 0, rls_reply::of(false, 6));
    assert_eq!(rig.host.resumed.borrow().as_slice(), &[w1]);
    rig.count_reply(1002, 0, rls_reply::of(true, 0));
    assert_eq!(rig.host.status(w2), Some(429));
    assert_eq!(rig.host.resumed.borrow().as_slice(), &[w1, lead]);
}

#[test]
fn a_leader_that_goes_away_leaves_its_waiters_the_failure_mode() {
    let rig = Rig::new(
        r#", "rate_limit": {"mode": "global", "cluster": "hokusai_ratelimit", "failure_mode": "deny"}"#,
    );
    let (lead, ls, _) = rig.bearer(EXP_SEARCH);
    let (w, ws, _) = rig.bearer(EXP_SEARCH);
    rig.remember(w, &ws);
    rig.reply(lead, &ls, Some(200), RW);
    rig.done(lead, &ls);
    assert_eq!(rig.host.status(w), Some(503));
    // The reply that comes anyway finds nothing to do.
    rig.remember(lead, &ls);
    rig.count_reply(1001, 0, rls_reply::of(false, 1));
    assert!(rig.host.resumed.borrow().is_empty());
}

// --- the identity assertion ---------------------------------------------------

/// RFC 8032's first test key, as PKCS#8 PEM: a fixture, never deployed.
const SIGNING_PEM: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g
-----END PRIVATE KEY-----";
const SIGNING_PUBLIC: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
const ASSERTING: &str = r#", "identity_assertion": {"signing_key_env": "SIGNING_KEY", "kid": "k1"},
    "mlflow": {"workspace": "team-a"},
    "routes": [{"name": "other", "match": {"path_prefix": "/other/"},
                "mlflow": {"mount_prefixes": ["/other"]},
                "identity_assertion": {"audience": "mlflow-other"}}]"#;

fn signing_env(name: &str) -> Option<String> {
    (name == "SIGNING_KEY").then(|| SIGNING_PEM.to_string())
}

/// The claims of a token whose signature the test key verifies.
fn verified_claims(token: &str) -> serde_json::Value {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use ed25519_dalek::Verifier as _;
    let (input, signature) = token.rsplit_once('.').unwrap();
    let public: [u8; 32] = hex::decode(SIGNING_PUBLIC).unwrap().try_into().unwrap();
    let key = ed25519_dalek::VerifyingKey::from_bytes(&public).unwrap();
    let signature: [u8; 64] = URL_SAFE_NO_PAD
        .decode(signature)
        .unwrap()
        .try_into()
        .unwrap();
    key.verify(
        input.as_bytes(),
        &ed25519_dalek::Signature::from_bytes(&signature),
    )
    .expect("signed by the configured key");
    let payload = input.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

#[test]
fn a_forwarded_request_carries_a_signed_identity_reused_per_verdict() {
    let rig = Rig::with_env(ASSERTING, &signing_env);
    rig.host.now.set(1_000_000);
    let (id, s, _) = rig.request(
        "POST",
        RUNS_CREATE,
        &[
            ("authorization", &format!("Bearer {KEY}")),
            ("x-hokusai-identity", "forged"),
            ("x_hokusai_identity", "forged"),
            ("x-mlflow-workspace", "team-b"),
        ],
    );
    assert_eq!(
        rig.host.header(id, "x-hokusai-identity"),
        None,
        "client copy removed"
    );
    assert_eq!(rig.host.header(id, "x_hokusai_identity"), None);
    rig.reply(id, &s, Some(200), RW);
    let token = rig
        .host
        .header(id, "x-hokusai-identity")
        .expect("assertion added");
    let claims = verified_claims(&token);
    assert_eq!(
        claims,
        serde_json::json!({
            "iss": "hokusai-gateway", "aud": "mlflow", "sub": "u_1", "key_id": "k_1",
            "scopes": ["mlflow:read", "mlflow:write"], "is_admin": false,
            "service_id": "platform", "iat": 1000, "exp": 1060,
        })
    );
    assert_eq!(
        rig.host.header(id, "x-mlflow-workspace").as_deref(),
        Some("team-a")
    );
    rig.host.now.set(1_020_000);
    let (id2, _, flow) = rig.bearer(RUNS_CREATE);
    assert_eq!(flow, Flow::Continue, "a cache hit");
    assert_eq!(
        rig.host.header(id2, "x-hokusai-identity"),
        Some(token),
        "not signed again"
    );
    rig.assert_no_key_anywhere();
}

#[test]
fn a_rule_signs_for_its_own_audience_and_workspace() {
    let rig = Rig::with_env(ASSERTING, &signing_env);
    let (id, s, _) = rig.bearer("/other/api/2.0/mlflow/runs/create");
    rig.reply(id, &s, Some(200), RW);
    let token = rig.host.header(id, "x-hokusai-identity").unwrap();
    assert_eq!(verified_claims(&token)["aud"], "mlflow-other");
    assert_eq!(
        rig.host.header(id, "x-mlflow-workspace").as_deref(),
        Some("team-a"),
        "laid over the top level's mlflow section"
    );
}

#[test]
fn no_assertion_without_a_signing_key_or_for_refusals() {
    let rig = Rig::new("");
    let (id, s, _) = rig.request(
        "POST",
        RUNS_CREATE,
        &[
            ("authorization", &format!("Bearer {KEY}")),
            ("x-hokusai-identity", "forged"),
        ],
    );
    rig.reply(id, &s, Some(200), RW);
    assert_eq!(rig.host.header(id, "x-hokusai-identity"), None);
    let rig = Rig::with_env(ASSERTING, &signing_env);
    let (id, s, _) = rig.bearer(RUNS_CREATE);
    rig.reply(id, &s, Some(401), r#"{"detail": "invalid"}"#);
    assert_eq!(rig.host.status(id), Some(401));
    assert_eq!(rig.host.header(id, "x-hokusai-identity"), None);
}

#[test]
fn a_missing_or_malformed_signing_key_is_refused_naming_the_field() {
    let json = |extra: &str| {
        format!(
            r#"{{"auth": {{"cluster": "a", "service_id": "s"}}, "identity_assertion": {extra}}}"#
        )
    };
    let unset = Config::parse_with_env(
        json(r#"{"signing_key_env": "SIGNING_KEY", "kid": "k1"}"#).as_bytes(),
        &|_| None,
    )
    .unwrap_err();
    assert!(
        unset.starts_with(
            "identity_assertion.signing_key_env: the environment variable SIGNING_KEY is not set"
        ),
        "{unset}"
    );
    let garbage = "-----BEGIN PRIVATE KEY-----\nAAAAsecretsecret\n-----END PRIVATE KEY-----";
    let bad = Config::parse_with_env(
        json(r#"{"signing_key_env": "SIGNING_KEY", "kid": "k1"}"#).as_bytes(),
        &|_| Some(garbage.to_string()),
    )
    .unwrap_err();
    assert!(
        bad.starts_with("identity_assertion.signing_key_env: SIGNING_KEY: "),
        "{bad}"
    );
    assert!(!bad.contains("secret"), "{bad}");
    let no_kid = Config::parse_with_env(
        json(r#"{"signing_key_env": "SIGNING_KEY"}"#).as_bytes(),
        &signing_env,
    )
    .unwrap_err();
    assert!(no_kid.starts_with("identity_assertion.kid: "), "{no_kid}");
    let in_rule = Config::parse_with_env(
        br#"{"auth": {"cluster": "a", "service_id": "s"}, "routes": [{"match": {"path_prefix": "/x/"}, "identity_assertion": {"kid": "k2"}}]}"#,
        &signing_env,
    )
    .unwrap_err();
    assert!(
        in_rule.starts_with("routes[0].identity_assertion.kid: set it at the top level"),
        "{in_rule}"
    );
}

#[test]
fn an_unknown_endpoint_is_a_write_counted_each_time_and_logged_once() {
    let rig = Rig::new("");
    let unknown = "/api/mlflow/api/2.0/mlflow/brand-new/search";
    for round in 1..=3 {
        let (id, s, _) = rig.bearer(unknown);
        if round == 1 {
            rig.reply(id, &s, Some(200), RO);
        }
        assert_eq!(
            rig.host.status(id),
            Some(403),
            "a read-only key may not write"
        );
        assert_eq!(rig.host.count_of(Counter::UnknownEndpoint), round);
    }
    let logged: Vec<String> = captured::lines()
        .into_iter()
        .filter(|l| l.contains("unknown MLflow endpoint POST /api/2.0/mlflow/brand-new/search"))
        .collect();
    assert_eq!(logged.len(), 1, "{logged:?}");
    let (_, _, flow) = rig.bearer(EXP_SEARCH);
    assert_eq!(flow, Flow::Continue);
    assert_eq!(
        rig.host.count_of(Counter::UnknownEndpoint),
        3,
        "a known endpoint is not counted"
    );
}

#[test]
fn a_second_worker_forwards_the_token_the_first_signed() {
    let rig = Rig::with_env(ASSERTING, &signing_env);
    rig.host.now.set(1_000_000);
    let (id, s, _) = rig.bearer(RUNS_CREATE);
    rig.reply(id, &s, Some(200), RW);
    let token = rig.host.header(id, "x-hokusai-identity").unwrap();
    let other = Rc::new(Worker::new(rig.worker.cfg.clone()).unwrap());
    rig.host.now.set(1_030_000);
    let auth = format!("Bearer {KEY}");
    let (id2, _, flow) = rig.request_on(&other, "POST", RUNS_CREATE, &[("authorization", &auth)]);
    assert_eq!(flow, Flow::Continue, "the verdict from shared data");
    assert_eq!(
        rig.host.header(id2, "x-hokusai-identity"),
        Some(token),
        "one signature for the process, not one per worker"
    );
}
