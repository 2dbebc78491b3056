//! The request state machine: one `Stream` per HTTP request, one `Worker`
//! per VM (Envoy runs a VM per worker thread). A request goes through named
//! steps: read its headers, remove its credentials, check its path, select
//! the policy of its route, rewrite its path, let through what needs no key
//! (public paths, preflights, routes without auth, anonymous reads), find
//! its key, get a verdict (the cache, else the callout another request
//! already has in flight, else a callout of its own), admit it (verdict,
//! scopes, rate limit) and forward it. Every refusal goes through
//! `Stream::deny`, every pass without a key through `Stream::pass`, every
//! host interaction through `Host`.

use crate::assertion::tokens::{self as assertion, Tokens};
use crate::config::routes::{RouteTable, Selector};
use crate::config::{Config, Policy, Source, WORKSPACE_HEADER};
use crate::host::{Headers, Host};
use crate::limits::lease::{Ask, LeaseTable};
use crate::limits::local::RateLimiter;
use crate::observability::metrics::Counter;
use crate::outcome::audit::{Audit, CacheState, Decision};
use crate::outcome::denial::Denial;
use crate::outcome::reply;
use crate::outcome::whoami::Whoami;
use crate::request::credential::{self, Credential, CredentialError, Presented};
use crate::request::endpoints::{Class, EndpointTable, UnknownEndpoints};
use crate::request::rewrite;
use crate::request::scopes;
use crate::tables::memo::Memo;
use crate::types::Digest;
use crate::types::Window;
use crate::verdict::cache::{Cached, Lookup, Namespace, VerdictCache};
use crate::verdict::key_digests::KeyDigests;
use crate::verdict::key_service::{self, Failure, Identity, Verdict, MAX_REPLY_BYTES};
use crate::verdict::refresh::Refreshing;
use crate::verdict::single_flight::Flights;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::{Rc, Weak};

mod charging;
mod refreshing;

/// What the host should do with the request after a callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Pause,
}

/// A stream waiting on another stream's callout, to be resumed by it.
type Waiter = Weak<RefCell<Stream>>;

/// A rate limit call in flight: the context that made it (and gets the
/// reply) and the stream it charges.
pub struct ChargeCall {
    owner: u32,
    member: u32,
    stream: Waiter,
}

/// Per-worker state: the configuration and what the worker's streams share.
pub struct Worker {
    pub cfg: Config,
    endpoints: EndpointTable,
    classes: Memo<Option<Class>>,
    unknown_endpoints: UnknownEndpoints,
    routes: RouteTable,
    /// Each policy's verdict namespace, at its `Config::policy_at` index.
    namespaces: Vec<Namespace>,
    digests: KeyDigests,
    cache: VerdictCache,
    rate: RateLimiter,
    /// Hits leased from the rate limit service (`rate_limit.mode: global`).
    leases: LeaseTable,
    /// Signed identity assertions, one per key, policy and verdict.
    assertions: Tokens,
    flights: RefCell<Flights<Waiter>>,
    /// Keys with a re-validation under way (refresh-ahead).
    refreshing: RefCell<Refreshing>,
    /// Rate limit service calls in flight, by token.
    charges: RefCell<HashMap<u32, ChargeCall>>,
}

impl Worker {
    pub fn new(cfg: Config) -> Result<Self, String> {
        let selectors: Vec<Selector> = cfg.rules.iter().map(|r| r.selector.clone()).collect();
        Ok(Self {
            endpoints: EndpointTable::builtin()?,
            classes: Memo::new(64),
            unknown_endpoints: UnknownEndpoints::default(),
            routes: RouteTable::new(selectors),
            namespaces: cfg.policies().map(|p| Namespace::of(&p.auth)).collect(),
            digests: KeyDigests::new(cfg.cache.slots as usize),
            cache: VerdictCache::new(&cfg.cache),
            rate: RateLimiter::new(cfg.rate_limit_slots),
            leases: LeaseTable::new(cfg.rate_limit_slots),
            assertions: Tokens::new(cfg.cache.slots),
            flights: RefCell::default(),
            refreshing: RefCell::new(Refreshing::new(cfg.cache.slots as usize)),
            charges: RefCell::default(),
            cfg,
        })
    }

    fn namespace(&self, policy: usize) -> Namespace {
        self.namespaces
            .get(policy)
            .or(self.namespaces.first())
            .copied()
            .unwrap_or_else(|| Namespace::of(&self.cfg.policy.auth))
    }

    /// The key's digest in the namespace of the policy's key service.
    fn digest(&self, policy: usize, key: &str) -> Digest {
        self.digests.digest(&self.namespace(policy), key)
    }
}

/// Why a request goes on without a key.
#[derive(Clone, Copy)]
enum Pass {
    /// A public path, or a CORS preflight.
    Public,
    /// A route whose policy asks for no key.
    NotEnforced,
    /// A read on a route that allows anonymous reads.
    Anonymous,
}

enum State {
    Start,
    /// This stream's callout is in flight.
    Leading {
        digest: Digest,
        stale: Option<Rc<Identity>>,
        since_ms: u64,
    },
    /// Another stream's callout for the same key is in flight.
    Waiting {
        digest: Digest,
        stale: Option<Rc<Identity>>,
    },
    /// Admitted but for the rate limit, which the rate limit service charges.
    Charging(Charge),
    Done,
}

/// What admitting a request came to.
enum Decided {
    /// Decided here: forward with this identity, or refuse.
    Now(Outcome),
    /// To be charged by the rate limit service first.
    Charge(Charge),
}

type Outcome = Result<Rc<Identity>, Denial>;

/// A request the rate limit service is to count, with the lease asked for
/// (its account holds the key's limit).
struct Charge {
    id: Rc<Identity>,
    ask: Ask,
}

pub struct Stream {
    id: u32,
    me: Waiter,
    worker: Rc<Worker>,
    state: State,
    /// The policy that applies, at its `Config::policy_at` index.
    policy: usize,
    class: Class,
    /// The filter answers this request itself (`<mount>/_hokusai/whoami`).
    whoami: bool,
    /// Where the key was found, once it was.
    source: Option<Source>,
    /// The key's digest, once the key is known.
    digest: Option<Digest>,
    /// How the verdict was reached.
    cache: CacheState,
    /// The key's rate-limit window, for the response headers.
    window: Option<Window>,
    /// When the verdict the request goes on with expires; None when it is
    /// served stale (stale-if-error).
    verdict_expires_ms: Option<u64>,
    /// Read once per callback: one clock hostcall serves the whole decision.
    now_ms: u64,
    /// Rate limit calls this stream's context made for its waiters, not
    /// answered yet: the context must live until they are.
    held: usize,
    /// This stream's own outcome, kept until `held` is 0.
    deferred: Option<Outcome>,
    finished: bool,
    /// None when the audit line is off.
    audit: Option<Box<Audit>>,
}

/// The facts of a request's headers, read in one pass without copying.
struct Request<'h> {
    method: &'h str,
    path: &'h str,
    authority: &'h str,
    forwarded_for: Option<&'h [u8]>,
    presented: Presented<'h>,
}

impl<'h> Request<'h> {
    fn read(headers: &'h Headers, cfg: &Config) -> Request<'h> {
        let mut r = Request {
            method: "",
            path: "",
            authority: "",
            forwarded_for: None,
            presented: Presented::default(),
        };
        for (name, value) in headers.iter() {
            match name {
                ":method" => r.method = std::str::from_utf8(value).unwrap_or(""),
                ":path" => r.path = std::str::from_utf8(value).unwrap_or(""),
                ":authority" => r.authority = std::str::from_utf8(value).unwrap_or(""),
                "x-forwarded-for" => r.forwarded_for = r.forwarded_for.or(Some(value)),
                _ => r.presented.note(name, value, cfg),
            }
        }
        r
    }
}

impl Stream {
    pub fn new(id: u32, worker: Rc<Worker>) -> Rc<RefCell<Stream>> {
        let audit = worker.cfg.audit_log.then(Box::default);
        Rc::new_cyclic(|me| {
            RefCell::new(Stream {
                id,
                me: me.clone(),
                worker,
                state: State::Start,
                policy: 0,
                class: Class::Write,
                whoami: false,
                source: None,
                digest: None,
                cache: CacheState::None,
                window: None,
                verdict_expires_ms: None,
                now_ms: 0,
                held: 0,
                deferred: None,
                finished: false,
                audit,
            })
        })
    }

    pub fn on_request_headers<H: Host>(&mut self, host: &H) -> Flow {
        let worker = Rc::clone(&self.worker);
        let headers = host.request_headers();
        let mut request = Request::read(&headers, &worker.cfg);
        // Whatever happens next, no credential and no client-made identity
        // travels upstream.
        request.presented.remove_from(host);
        if let Some(a) = self.audit_mut() {
            a.method = request.method.to_string();
        }
        let (path, query) = rewrite::split(request.path);
        // Before any route is chosen by its path: what a rule selects must be
        // what the upstream serves.
        if !rewrite::is_unambiguous(path) {
            self.note_path("<refused>");
            return self.deny(host, Denial::AmbiguousPath);
        }
        self.policy = self.select_policy(host, request.authority, path);
        let policy = worker.cfg.policy_at(self.policy);
        request.presented.query = query;
        let (mlflow_path, public) = self.rewrite_path(host, policy, path, query);
        if public || request.method == "OPTIONS" {
            return self.pass(host, Pass::Public);
        }
        if !policy.enabled {
            return self.pass(host, Pass::NotEnforced);
        }
        self.whoami = is_whoami(policy, path, mlflow_path);
        self.class = if self.whoami {
            Class::Read
        } else {
            self.endpoint_class(host, request.method, mlflow_path)
        };
        match credential::extract(&request.presented, policy) {
            Ok(credential) => self.find_verdict(host, &credential, request.forwarded_for),
            Err(CredentialError::Missing) if policy.anonymous_read && self.class == Class::Read => {
                self.pass(host, Pass::Anonymous)
            }
            Err(e) => self.deny(host, Denial::credential(e, policy)),
        }
    }

    /// The rule that applies (its policy's index), by route name (one
    /// hostcall, only when a rule names routes), host and path.
    fn select_policy<H: Host>(&self, host: &H, authority: &str, path: &str) -> usize {
        let routes = &self.worker.routes;
        if routes.is_empty() {
            return 0;
        }
        let route_name = if routes.uses_route_name() {
            host.route_name()
        } else {
            None
        };
        routes
            .select(route_name.as_deref(), authority, path)
            .map_or(0, |i| i + 1)
    }

    /// Rewrites the path for MLflow: mount stripped, public path mapped,
    /// `api/` → `ajax-api/` if configured, the query's key removed. The
    /// MLflow path, and whether it is public.
    fn rewrite_path<'p, H: Host>(
        &mut self,
        host: &H,
        policy: &Policy,
        path: &'p str,
        query: Option<&str>,
    ) -> (&'p str, bool) {
        let stripped_query = query.and_then(credential::remove_query_key);
        let upstream_query = stripped_query.as_deref().or(query);
        let public = policy.public_paths.iter().find(|(from, _)| from == path);
        let mlflow_path = rewrite::strip_mount(path, &policy.mount_prefixes);
        self.note_path(mlflow_path);
        let ajax = policy
            .ajax_api
            .then(|| rewrite::ajax_map(mlflow_path))
            .flatten();
        let upstream_path = match public {
            Some((_, to)) => to.as_str(),
            None => ajax.as_deref().unwrap_or(mlflow_path),
        };
        if upstream_path != path || stripped_query.is_some() {
            host.set_request_header(":path", Some(&rewrite::join(upstream_path, upstream_query)));
        }
        (mlflow_path, public.is_some())
    }

    /// The one way a request goes on without a key (and without identity).
    fn pass<H: Host>(&mut self, host: &H, why: Pass) -> Flow {
        self.state = State::Done;
        let (counter, verdict) = match why {
            Pass::Public => (Counter::Public, "public"),
            Pass::NotEnforced => (Counter::NotEnforced, "not_enforced"),
            Pass::Anonymous => (Counter::Anonymous, "anonymous"),
        };
        self.decided(verdict);
        host.count(counter);
        Flow::Continue
    }

    /// The class the endpoint table gives the request; an endpoint it does
    /// not know is a write, counted and logged (once per worker).
    fn endpoint_class<H: Host>(&self, host: &H, method: &str, path: &str) -> Class {
        let worker = &self.worker;
        let found = worker
            .classes
            .get_or(&[method, path], || worker.endpoints.find(method, path));
        found.unwrap_or_else(|| {
            host.count(Counter::UnknownEndpoint);
            worker.unknown_endpoints.note(method, path);
            Class::Write
        })
    }

    /// The cache, else the callout another request has in flight for the
    /// same key, else a callout of this request's own.
    fn find_verdict<H: Host>(
        &mut self,
        host: &H,
        credential: &Credential,
        forwarded_for: Option<&[u8]>,
    ) -> Flow {
        let worker = Rc::clone(&self.worker);
        let digest = worker.digest(self.policy, &credential.key);
        self.digest = Some(digest);
        self.source = Some(credential.source);
        self.now_ms = host.now_ms();
        let stale = match worker.cache.lookup(host, &digest, self.now_ms) {
            Lookup::Fresh(cached, expires_at_ms) => {
                let hit = (digest, &cached, expires_at_ms);
                self.refresh_if_due(host, &credential.key, forwarded_for, hit);
                self.verdict_expires_ms = Some(expires_at_ms);
                return self.cache_hit(host, cached);
            }
            Lookup::Stale(id) => Some(id),
            Lookup::Miss => None,
        };
        self.note_cache(CacheState::Miss);
        host.count(Counter::CacheMiss);
        let joined = worker
            .flights
            .borrow_mut()
            .join(&digest, self.id, self.me.clone());
        if joined {
            self.note_cache(CacheState::Shared);
            host.count(Counter::SingleFlightWait);
            self.state = State::Waiting { digest, stale };
            return Flow::Pause;
        }
        self.call_out(host, &credential.key, forwarded_for, digest, stale)
    }

    fn cache_hit<H: Host>(&mut self, host: &H, cached: Cached) -> Flow {
        self.note_cache(CacheState::Hit);
        host.count(Counter::CacheHit);
        let verdict = match cached {
            Cached::Allowed(id) => Verdict::Allowed(id),
            Cached::Invalid => Verdict::Invalid,
        };
        self.act_on_verdict(host, verdict, None, false)
    }

    /// Asks the key service, and pauses the request until it answers.
    fn call_out<H: Host>(
        &mut self,
        host: &H,
        key: &str,
        forwarded_for: Option<&[u8]>,
        digest: Digest,
        stale: Option<Rc<Identity>>,
    ) -> Flow {
        let worker = Rc::clone(&self.worker);
        let auth = &worker.cfg.policy_at(self.policy).auth;
        let client_ip = key_service::client_ip(forwarded_for, host.peer_address().as_deref());
        let (headers, body) = key_service::request(auth, key, client_ip.as_deref());
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        host.count(Counter::Callout);
        if host
            .dispatch(&auth.cluster, &headers, &body, auth.timeout)
            .is_none()
        {
            host.count(Counter::CalloutErrorDispatch);
            return self.act_on_verdict(
                host,
                Verdict::Unavailable(Failure::Dispatch),
                stale,
                false,
            );
        }
        worker.flights.borrow_mut().lead(digest);
        self.state = State::Leading {
            digest,
            stale,
            since_ms: self.now_ms,
        };
        Flow::Pause
    }

    /// The reply to this stream's callout: decide for it and for every
    /// stream that waited on the same key.
    pub fn on_callout_reply<H: Host>(&mut self, host: &H, body_size: usize) {
        let State::Leading {
            digest,
            stale,
            since_ms,
        } = std::mem::replace(&mut self.state, State::Done)
        else {
            return;
        };
        let worker = Rc::clone(&self.worker);
        let (status, body) = host.callout_reply(body_size, MAX_REPLY_BYTES);
        let verdict = key_service::verdict(status, body_size, &body);
        self.now_ms = host.now_ms();
        host.record_callout_latency(self.now_ms.saturating_sub(since_ms));
        if let Verdict::Unavailable(f) = &verdict {
            report_failure(host, *f);
        }
        worker.cache.store(host, &digest, &verdict, self.now_ms);
        let waiters = worker.flights.borrow_mut().land(&digest);
        self.verdict_expires_ms = Some(self.now_ms + worker.cfg.cache.ttl_ms);
        let own = self.decide(host, verdict.clone(), stale);
        let to_charge = decide_for_waiters(host, waiters, &verdict, true);
        host.switch_to(self.id);
        self.charge_for_waiters(host, to_charge);
        match own {
            Decided::Now(outcome) => self.act_or_defer(host, outcome),
            Decided::Charge(charge) => {
                self.charge_globally(host, charge, true);
            }
        }
    }

    /// Whether the request waits for its verdict (a callout, another
    /// stream's callout, the rate limit service): its body must wait too,
    /// or the host would let the request go on with it.
    pub fn awaiting_verdict(&self) -> bool {
        let waiting = matches!(
            self.state,
            State::Leading { .. } | State::Waiting { .. } | State::Charging(_)
        );
        waiting || self.deferred.is_some()
    }

    pub fn on_response_headers<H: Host>(&mut self, host: &H) {
        if let Some(w) = &self.window {
            for (name, value) in reply::window_headers(w) {
                host.add_response_header(name, &value);
            }
        }
    }

    /// The stream is over (answered, or the client went away).
    pub fn on_done<H: Host>(&mut self, host: &H) {
        if self.finished {
            return;
        }
        self.finished = true;
        match std::mem::replace(&mut self.state, State::Done) {
            State::Leading { digest, .. } => self.abandon_flight(host, &digest),
            State::Waiting { digest, .. } => {
                self.worker.flights.borrow_mut().leave(&digest, self.id);
            }
            State::Charging(_) | State::Start | State::Done => {}
        }
        self.abandon_charges(host);
        if let Some(line) = self.audit_line() {
            log::info!("{line}");
        }
    }

    /// Envoy cancels a dead stream's callout; its waiters must not hang,
    /// and they get no answer we could trust.
    fn abandon_flight<H: Host>(&self, host: &H, digest: &Digest) {
        let waiters = self.worker.flights.borrow_mut().land(digest);
        if !waiters.is_empty() {
            host.count(Counter::SingleFlightAbandoned);
            decide_for_waiters(
                host,
                waiters,
                &Verdict::Unavailable(Failure::NoReply),
                false,
            );
            host.switch_to(self.id);
        }
    }

    /// Applies a verdict. `resumed`: the request is paused and must be
    /// resumed (callout path), else it just continues (cache hit).
    fn act_on_verdict<H: Host>(
        &mut self,
        host: &H,
        verdict: Verdict,
        stale: Option<Rc<Identity>>,
        resumed: bool,
    ) -> Flow {
        match self.decide(host, verdict, stale) {
            Decided::Now(outcome) => self.act(host, outcome, resumed),
            Decided::Charge(charge) => self.charge_globally(host, charge, resumed),
        }
    }

    /// Forwards or refuses.
    fn act<H: Host>(&mut self, host: &H, outcome: Outcome, resumed: bool) -> Flow {
        self.state = State::Done;
        match outcome {
            Ok(id) => self.forward(host, &id, resumed),
            Err(denial) => self.deny(host, denial),
        }
    }

    /// Applies an outcome reached after a pause, or keeps it until the
    /// calls this context holds for others are answered.
    fn act_or_defer<H: Host>(&mut self, host: &H, outcome: Outcome) {
        if self.held > 0 {
            self.deferred = Some(outcome);
        } else {
            self.act(host, outcome, true);
        }
    }

    /// What the verdict, the endpoint's scopes and the key's rate limit (if
    /// charged here) say of the request.
    fn decide<H: Host>(
        &mut self,
        host: &H,
        verdict: Verdict,
        stale: Option<Rc<Identity>>,
    ) -> Decided {
        self.state = State::Done;
        let id = match self.identity(host, verdict, stale) {
            Ok(id) => id,
            Err(denial) => return Decided::Now(Err(denial)),
        };
        if let Some(a) = self.audit_mut() {
            a.user_id = id.user_id.clone();
            a.key_id = id.key_id.clone();
        }
        let worker = Rc::clone(&self.worker);
        let policy = worker.cfg.policy_at(self.policy);
        if let Err(why) = scopes::check(self.class, &id, &policy.scopes) {
            return Decided::Now(Err(Denial::Forbidden(why)));
        }
        match &policy.rate_limit {
            Some(limit) if limit.global.is_some() => self.take_lease(host, id),
            Some(_) => Decided::Now(self.charge_locally(host, &id).map(|()| id)),
            None => Decided::Now(Ok(id)),
        }
    }

    /// What the verdict says of the key; during an outage, a recently valid
    /// key's expired verdict if stale-if-error allows it.
    fn identity<H: Host>(
        &mut self,
        host: &H,
        verdict: Verdict,
        stale: Option<Rc<Identity>>,
    ) -> Result<Rc<Identity>, Denial> {
        match (verdict, stale) {
            (Verdict::Allowed(id), _) => Ok(id),
            (Verdict::Unavailable(_), Some(id)) => {
                self.note_cache(CacheState::Stale);
                host.count(Counter::CacheStaleServed);
                self.verdict_expires_ms = None;
                Ok(id)
            }
            (Verdict::Unavailable(_), None) => Err(Denial::Unavailable),
            (Verdict::Invalid, _) => {
                Err(Denial::invalid_key(self.worker.cfg.policy_at(self.policy)))
            }
            (Verdict::RateLimited, _) => Err(Denial::AuthRateLimited),
        }
    }

    /// Counts the request in this Envoy, in the key's window of the route's
    /// limit scope, per `key_id` as the contract says (a key without one by
    /// its digest).
    fn charge_locally<H: Host>(&mut self, host: &H, id: &Identity) -> Result<(), Denial> {
        let worker = Rc::clone(&self.worker);
        let Some(limit) = &worker.cfg.policy_at(self.policy).rate_limit else {
            return Ok(());
        };
        let owner = match (&id.key_id, &self.digest) {
            (Some(k), _) => k.as_bytes(),
            (None, Some(d)) => d.as_slice(),
            (None, None) => &[],
        };
        let now_s = self.now_ms / 1000;
        let per_hour = id.rate_limit_per_hour.unwrap_or(limit.default_per_hour);
        let window = worker
            .rate
            .charge(host, &limit.scope, owner, per_hour, now_s);
        if !window.allowed {
            return Err(Denial::RateLimited { window, now_s });
        }
        self.window = Some(window);
        Ok(())
    }

    /// Sets the identity headers and lets the request go upstream, or
    /// answers it here if it asked who the key is.
    fn forward<H: Host>(&mut self, host: &H, id: &Identity, resumed: bool) -> Flow {
        if self.whoami {
            return self.answer_whoami(host, id);
        }
        // Added, not set: any value the client sent went with the
        // credentials, when the request's headers were read.
        let headers = &self.worker.cfg.identity_headers;
        if let Some(u) = &id.user_id {
            host.add_request_header(&headers.user_id, u);
        }
        if let Some(k) = &id.key_id {
            host.add_request_header(&headers.key_id, k);
        }
        self.assert_identity(host, id);
        host.count(Counter::Allowed);
        self.decided("allowed");
        if resumed {
            host.resume_request();
        }
        Flow::Continue
    }

    /// The signed identity for MLflow, and the workspace the route maps to.
    fn assert_identity<H: Host>(&self, host: &H, id: &Identity) {
        let worker = &self.worker;
        let policy = worker.cfg.policy_at(self.policy);
        if let (Some(a), Some(digest)) = (&policy.assertion, self.digest) {
            let request = assertion::Request {
                signer: &a.signer,
                ttl_s: a.ttl_s,
                service_id: &policy.auth.service_id,
                digest,
                policy: self.policy,
                verdict_expires_ms: self.verdict_expires_ms,
                now_ms: self.now_ms,
            };
            if let Some(token) = worker.assertions.token(host, &request, id) {
                host.add_request_header(&worker.cfg.identity_headers.assertion, &token);
            }
        }
        if let Some(w) = &policy.workspace {
            host.set_request_header(WORKSPACE_HEADER, Some(w));
        }
    }

    fn answer_whoami<H: Host>(&mut self, host: &H, id: &Identity) -> Flow {
        let worker = Rc::clone(&self.worker);
        let reply = Whoami {
            id,
            policy: worker.cfg.policy_at(self.policy),
            source: self.source,
            window: self.window.as_ref(),
            cached: matches!(self.cache, CacheState::Hit | CacheState::Stale),
        }
        .reply();
        host.count(Counter::Whoami);
        self.decided("whoami");
        // The rate-limit headers are in the reply already.
        self.window = None;
        host.send_reply(&reply);
        Flow::Pause
    }

    /// The one way a request is refused: the reply, the stat, the audit verdict.
    fn deny<H: Host>(&mut self, host: &H, denial: Denial) -> Flow {
        self.state = State::Done;
        self.decided(denial.verdict());
        denial.send(host);
        Flow::Pause
    }

    // --- the audit line's facts (kept only when it is on) ---

    fn audit_mut(&mut self) -> Option<&mut Audit> {
        self.audit.as_deref_mut()
    }

    fn decided(&mut self, verdict: &'static str) {
        if let Some(a) = self.audit_mut() {
            a.verdict = Some(verdict);
        }
    }

    fn note_cache(&mut self, state: CacheState) {
        self.cache = state;
    }

    fn note_path(&mut self, path: &str) {
        if let Some(a) = self.audit_mut() {
            a.path = path.to_string();
        }
    }

    fn audit_line(&self) -> Option<String> {
        self.audit.as_ref()?.line(&Decision {
            route: &self.worker.cfg.policy_at(self.policy).name,
            digest: self.digest.as_ref(),
            class: self.class,
            cache: self.cache,
            source: self.source,
        })
    }
}

/// Gives the streams that waited on a callout the verdict it brought. Those
/// the rate limit service must charge are returned, for the caller's context
/// to ask for them, when it can (`can_hold`); else they are treated as if
/// the service had not answered.
fn decide_for_waiters<H: Host>(
    host: &H,
    waiters: Vec<(u32, Waiter)>,
    verdict: &Verdict,
    can_hold: bool,
) -> Vec<(u32, Waiter)> {
    let mut to_charge = Vec::new();
    for (ctx, waiter) in waiters {
        let Some(stream) = waiter.upgrade() else {
            continue;
        };
        if !host.switch_to(ctx) {
            continue;
        }
        let Ok(mut s) = stream.try_borrow_mut() else {
            continue;
        };
        let stale = match std::mem::replace(&mut s.state, State::Done) {
            State::Waiting { stale, .. } => stale,
            _ => None,
        };
        s.verdict_expires_ms = Some(s.now_ms + s.worker.cfg.cache.ttl_ms);
        match s.decide(host, verdict.clone(), stale) {
            Decided::Now(outcome) => {
                s.act(host, outcome, true);
            }
            Decided::Charge(charge) if can_hold => {
                s.state = State::Charging(charge);
                to_charge.push((ctx, waiter));
            }
            Decided::Charge(charge) => {
                let outcome = s.uncharged(host, charge);
                s.act(host, outcome, true);
            }
        }
    }
    to_charge
}

/// `<mount>/_hokusai/whoami`: the policy's whoami path under a mount (the
/// mount was stripped).
fn is_whoami(policy: &Policy, path: &str, mlflow_path: &str) -> bool {
    policy
        .whoami
        .as_deref()
        .is_some_and(|w| w == mlflow_path && mlflow_path != path)
}

fn report_failure<H: Host>(host: &H, f: Failure) {
    host.count(f.counter());
    log::warn!("hokusai-auth: key service unavailable: {}", f.describe());
}
