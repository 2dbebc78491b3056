//! The request state machine: one `Stream` per HTTP request, one `Shared`
//! per worker VM. Every host interaction goes through `Host`.

use crate::cache::{self, Cached, Digest, Entry, Lookup};
use crate::class_memo::ClassMemo;
use crate::config::Config;
use crate::credential::{self, Presented, QUERY_PARAM};
use crate::endpoints::{Class, EndpointTable};
use crate::flight::Flights;
use crate::host::{Host, Level};
use crate::local_cache::LocalCache;
use crate::metrics::Counter;
use crate::policy;
use crate::ratelimit::{self, Window};
use crate::reply::{self, Reply};
use crate::rewrite;
use crate::validation::{self, Failure, Identity, Verdict, MAX_REPLY_BYTES};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::{Rc, Weak};

/// What the host should do with the request after a callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Pause,
}

/// Per-VM state: configuration and what streams share with each other.
pub struct Shared {
    pub cfg: Config,
    table: EndpointTable,
    classes: ClassMemo,
    local: LocalCache,
    namespace: Digest,
    flights: RefCell<Flights>,
    /// Streams waiting on another stream's callout, to be resumed by it.
    waiters: RefCell<HashMap<u32, Weak<RefCell<Stream>>>>,
}

impl Shared {
    pub fn new(cfg: Config) -> Result<Self, String> {
        let local_capacity = cfg.cache.slots as usize;
        let table = EndpointTable::builtin()?;
        let form = format!("{:?}", cfg.auth.key_form);
        let namespace = cache::namespace(&[
            &cfg.auth.cluster,
            &cfg.auth.authority,
            &cfg.auth.path,
            &cfg.auth.service_id,
            &form,
        ]);
        Ok(Self {
            cfg,
            table,
            classes: ClassMemo::default(),
            local: LocalCache::new(local_capacity),
            namespace,
            flights: RefCell::default(),
            waiters: RefCell::default(),
        })
    }
}

const CACHE_PREFIX: &str = "hokusai_auth.v1.cache.";
const RATE_PREFIX: &str = "hokusai_auth.v1.rate.";
const CAS_ATTEMPTS: usize = 8;

/// How the verdict was reached, for the audit line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CacheState {
    None,
    Hit,
    Miss,
    Shared,
    Stale,
}

#[derive(Debug)]
enum State {
    Start,
    /// This stream's callout is in flight.
    Leading {
        digest: Digest,
        slot: u32,
        stale: Option<Identity>,
        since_ms: u64,
    },
    /// Another stream's callout for the same key is in flight.
    Waiting {
        digest: Digest,
        stale: Option<Identity>,
    },
    Done,
}

pub struct Stream {
    id: u32,
    me: Weak<RefCell<Stream>>,
    shared: Rc<Shared>,
    state: State,
    class: Class,
    method: String,
    path: String,
    /// The key's digest; the audit line shows 8 hex digits of it.
    digest: Option<Digest>,
    cache: CacheState,
    /// Decision for the audit line: verdict name and the status we sent.
    verdict: &'static str,
    user_id: Option<String>,
    key_id: Option<String>,
    window: Option<Window>,
    /// Read once per callback: one clock hostcall serves the whole decision.
    now_ms: u64,
    finished: bool,
}

impl Stream {
    pub fn new(id: u32, shared: Rc<Shared>) -> Rc<RefCell<Stream>> {
        Rc::new_cyclic(|me| {
            RefCell::new(Stream {
                id,
                me: me.clone(),
                shared,
                state: State::Start,
                class: Class::Write,
                method: String::new(),
                path: String::new(),
                digest: None,
                cache: CacheState::None,
                verdict: "none",
                user_id: None,
                key_id: None,
                window: None,
                now_ms: 0,
                finished: false,
            })
        })
    }

    pub fn on_request_headers<H: Host>(&mut self, host: &H) -> Flow {
        let shared = Rc::clone(&self.shared);
        let cfg = &shared.cfg;
        let headers = host.request_headers();

        let mut raw_path: &str = "";
        let mut method: &[u8] = b"";
        let mut presented = Presented::default();
        let mut forwarded_for = None;
        let (mut has_user_header, mut has_key_header) = (false, false);
        // Servers behind WSGI/ASGI adapters read `x_hokusai_user_id` as
        // `x-hokusai-user-id`: underscore spellings of protected headers go too.
        let mut underscored: Vec<&str> = Vec::new();
        for (name, value) in headers.iter() {
            match name {
                ":method" => method = value,
                ":path" => raw_path = std::str::from_utf8(value).unwrap_or(""),
                "authorization" => presented.authorization.push(value),
                "x-api-key" => presented.x_api_key.push(value),
                "x-forwarded-for" => forwarded_for = forwarded_for.or(Some(value)),
                n if n == cfg.user_id_header => has_user_header = true,
                n if n == cfg.key_id_header => has_key_header = true,
                n if n.contains('_') && is_protected(n, cfg) => underscored.push(n),
                _ => {}
            }
        }

        // Whatever happens next, no credential and no client-made identity
        // travels upstream.
        if has_user_header {
            host.set_request_header(&cfg.user_id_header, None);
        }
        if has_key_header {
            host.set_request_header(&cfg.key_id_header, None);
        }
        if !presented.authorization.is_empty() {
            host.set_request_header("authorization", None);
        }
        if !presented.x_api_key.is_empty() {
            host.set_request_header("x-api-key", None);
        }
        for name in underscored {
            host.set_request_header(name, None);
        }

        let method = std::str::from_utf8(method).unwrap_or("");
        // The audit line's facts are kept only when it will be written.
        if cfg.audit_log {
            self.method = method.to_string();
        }
        let (path, query) = rewrite::split(raw_path);
        if !rewrite::is_unambiguous(path) {
            if cfg.audit_log {
                self.path = "<refused>".into();
            }
            return self.refuse(host, Counter::DeniedBadRequest, "bad_path", &reply::bad_request(
                "the request path is ambiguous (dot segments, doubled or encoded slashes, ';' or encoded unreserved characters)",
            ));
        }
        let stripped_query = query.and_then(|q| rewrite::strip_param(q, QUERY_PARAM));
        let upstream_query = stripped_query.as_deref().or(query);
        presented.query = query;

        let public = cfg.public_paths.iter().find(|(from, _)| from == path);
        let mlflow_path = rewrite::strip_mount(path, &cfg.mount_prefixes);
        if cfg.audit_log {
            self.path = mlflow_path.to_string();
        }
        let ajax = if cfg.ajax_api {
            rewrite::ajax_map(mlflow_path)
        } else {
            None
        };
        let upstream_path = match public {
            Some((_, to)) => to.as_str(),
            None => ajax.as_deref().unwrap_or(mlflow_path),
        };
        if upstream_path != path || stripped_query.is_some() {
            host.set_request_header(":path", Some(&rewrite::join(upstream_path, upstream_query)));
        }

        if public.is_some() || method == "OPTIONS" {
            self.verdict = "public";
            self.state = State::Done;
            host.count(Counter::Public);
            return Flow::Continue;
        }

        let credential = match credential::extract(&presented, cfg) {
            Ok(c) => c,
            Err(e) => {
                return self.refuse(
                    host,
                    Counter::DeniedUnauthenticated,
                    e.reason(),
                    &reply::unauthenticated(e.message()),
                );
            }
        };
        self.class = shared.classes.classify(&shared.table, method, mlflow_path);

        let digest = cache::digest(&shared.namespace, &credential.key);
        self.digest = Some(digest);
        let slot = cache::slot_of(&digest, cfg.cache.slots);
        self.now_ms = host.now_ms();
        let now = self.now_ms;
        if let Some(cached) = shared.local.get(&digest, now) {
            return self.cache_hit(host, cached);
        }
        let (bytes, _) = host.shared_get(&slot_key(CACHE_PREFIX, slot.into()));
        let stale = match cache::lookup(bytes.as_deref(), &digest, now, cfg.cache.stale_if_error_ms)
        {
            Lookup::Fresh(cached, expires_at_ms) => {
                shared.local.put(digest, cached.clone(), expires_at_ms);
                return self.cache_hit(host, cached);
            }
            Lookup::Stale(id) => Some(id),
            Lookup::Miss => None,
        };
        self.cache = CacheState::Miss;
        host.count(Counter::CacheMiss);

        if shared.flights.borrow_mut().wait(&digest, self.id) {
            self.cache = CacheState::Shared;
            host.count(Counter::SingleFlightWait);
            shared.waiters.borrow_mut().insert(self.id, self.me.clone());
            self.state = State::Waiting { digest, stale };
            return Flow::Pause;
        }

        let client_ip = validation::client_ip(forwarded_for, host.peer_address().as_deref());
        let (headers, body) = validation::request(&cfg.auth, &credential.key, client_ip.as_deref());
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        host.count(Counter::Callout);
        match host.dispatch(&cfg.auth.cluster, &headers, &body, cfg.auth.timeout) {
            Some(_) => {
                shared.flights.borrow_mut().start(digest);
                self.state = State::Leading {
                    digest,
                    slot,
                    stale,
                    since_ms: now,
                };
                Flow::Pause
            }
            None => {
                host.count(Counter::CalloutErrorDispatch);
                self.conclude(host, Verdict::Unavailable(Failure::Dispatch), stale, false)
            }
        }
    }

    /// The reply to this stream's callout: decide for it and for every
    /// stream that waited on the same key.
    pub fn on_callout_reply<H: Host>(&mut self, host: &H, body_size: usize) {
        let State::Leading {
            digest,
            slot,
            stale,
            since_ms,
        } = std::mem::replace(&mut self.state, State::Done)
        else {
            return;
        };
        let shared = Rc::clone(&self.shared);
        let cfg = &shared.cfg;
        let (status, body) = host.callout_reply(body_size, MAX_REPLY_BYTES);
        let verdict = validation::verdict(status, body_size, &body);
        self.now_ms = host.now_ms();
        let now = self.now_ms;
        host.record_callout_latency(now.saturating_sub(since_ms));

        let cached = match &verdict {
            Verdict::Allowed(id) => Some((Cached::Allowed(id.clone()), cfg.cache.ttl_ms)),
            Verdict::Invalid if cfg.cache.negative_ttl_ms > 0 => {
                Some((Cached::Invalid, cfg.cache.negative_ttl_ms))
            }
            Verdict::Unavailable(f) => {
                host.count(failure_counter(*f));
                host.log(
                    Level::Warn,
                    &format!(
                        "hokusai-auth: key service unavailable: {}",
                        failure_text(*f, status)
                    ),
                );
                None
            }
            _ => None,
        };
        if let Some((verdict, ttl)) = cached {
            let entry = Entry {
                digest,
                verdict,
                expires_at_ms: now.saturating_add(ttl),
            };
            // A lost race only means another worker stored its own verdict.
            host.shared_set(&slot_key(CACHE_PREFIX, slot.into()), &entry.encode(), None);
            shared.local.put(digest, entry.verdict, entry.expires_at_ms);
        }

        let waiters = shared.flights.borrow_mut().land(&digest);
        self.conclude(host, verdict.clone(), stale, true);
        deliver(&shared, host, &waiters, &verdict);
        host.switch_to(self.id);
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
        let shared = Rc::clone(&self.shared);
        match std::mem::replace(&mut self.state, State::Done) {
            State::Leading { digest, .. } => {
                // Envoy cancels a dead stream's callout; its waiters must not
                // hang, and they get no answer we could trust.
                let waiters = shared.flights.borrow_mut().land(&digest);
                if !waiters.is_empty() {
                    host.count(Counter::SingleFlightAbandoned);
                    deliver(
                        &shared,
                        host,
                        &waiters,
                        &Verdict::Unavailable(Failure::NoReply),
                    );
                    host.switch_to(self.id);
                }
            }
            State::Waiting { digest, .. } => {
                shared.flights.borrow_mut().leave(&digest, self.id);
                shared.waiters.borrow_mut().remove(&self.id);
            }
            State::Start | State::Done => {}
        }
        if shared.cfg.audit_log && self.verdict != "none" {
            host.log(Level::Info, &self.audit_line());
        }
    }

    fn cache_hit<H: Host>(&mut self, host: &H, cached: Cached) -> Flow {
        self.cache = CacheState::Hit;
        host.count(Counter::CacheHit);
        let verdict = match cached {
            Cached::Allowed(id) => Verdict::Allowed(id),
            Cached::Invalid => Verdict::Invalid,
        };
        self.conclude(host, verdict, None, false)
    }

    fn refuse<H: Host>(
        &mut self,
        host: &H,
        counter: Counter,
        why: &'static str,
        r: &Reply,
    ) -> Flow {
        host.count(counter);
        self.verdict = why;
        self.state = State::Done;
        host.send_reply(r);
        Flow::Pause
    }

    /// Applies a verdict. `resumed` says whether the request is paused and
    /// must be resumed (callout path) or can just continue (cache hit).
    fn conclude<H: Host>(
        &mut self,
        host: &H,
        verdict: Verdict,
        stale: Option<Identity>,
        resumed: bool,
    ) -> Flow {
        self.state = State::Done;
        let verdict = match (verdict, stale) {
            (Verdict::Unavailable(_), Some(id)) => {
                self.cache = CacheState::Stale;
                host.count(Counter::CacheStaleServed);
                Verdict::Allowed(id)
            }
            (v, _) => v,
        };
        let shared = Rc::clone(&self.shared);
        let cfg = &shared.cfg;
        let id = match verdict {
            Verdict::Allowed(id) => id,
            Verdict::Invalid => {
                let msg = format!(
                    "the API key is invalid, expired, or not registered for service '{}'",
                    cfg.auth.service_id
                );
                return self.refuse(
                    host,
                    Counter::DeniedInvalidKey,
                    "invalid_key",
                    &reply::unauthenticated(&msg),
                );
            }
            Verdict::RateLimited => {
                return self.refuse(
                    host,
                    Counter::DeniedAuthRateLimited,
                    "auth_rate_limited",
                    &reply::auth_rate_limited(),
                );
            }
            Verdict::Unavailable(_) => {
                return self.refuse(
                    host,
                    Counter::Unavailable,
                    "unavailable",
                    &reply::unavailable("the Hokusai key service is unavailable; retry shortly"),
                );
            }
        };
        if cfg.audit_log {
            self.user_id = id.user_id.clone();
            self.key_id = id.key_id.clone();
        }
        if let Err(msg) = policy::check(self.class, &id, &cfg.scopes) {
            return self.refuse(
                host,
                Counter::DeniedForbidden,
                "forbidden",
                &reply::forbidden(&msg),
            );
        }
        if let Some(w) = self.count_rate(host, &id) {
            self.window = Some(w);
            if !w.allowed {
                self.window = None;
                let now_s = self.now_ms / 1000;
                return self.refuse(
                    host,
                    Counter::DeniedRateLimited,
                    "rate_limited",
                    &reply::rate_limited(&w, now_s),
                );
            }
        }
        if let Some(u) = &id.user_id {
            host.set_request_header(&cfg.user_id_header, Some(u));
        }
        if let Some(k) = &id.key_id {
            host.set_request_header(&cfg.key_id_header, Some(k));
        }
        host.count(Counter::Allowed);
        self.verdict = "allowed";
        if resumed {
            host.resume_request();
        }
        Flow::Continue
    }

    /// Counts the request in the key's shared window (compare-and-swap,
    /// bounded retries). None when rate limiting is off.
    fn count_rate<H: Host>(&self, host: &H, id: &Identity) -> Option<Window> {
        let rl = self.shared.cfg.rate_limit.as_ref()?;
        // Per key_id as the contract says; a key without one counts by digest.
        let owner = match (&id.key_id, &self.digest) {
            (Some(k), _) => ratelimit::tag(k.as_bytes()),
            (None, d) => ratelimit::tag(d.as_ref().map_or(&[][..], |d| &d[..])),
        };
        let key = slot_key(RATE_PREFIX, owner % u64::from(rl.slots));
        let limit = id.rate_limit_per_hour.unwrap_or(rl.default_per_hour);
        let now_s = self.now_ms / 1000;
        let mut last = None;
        for _ in 0..CAS_ATTEMPTS {
            let (bytes, cas) = host.shared_get(&key);
            let (new, w) = ratelimit::step(bytes.as_deref(), owner, now_s, limit);
            match new {
                None => return Some(w),
                Some(v) if host.shared_set(&key, &v, cas) => return Some(w),
                Some(_) => last = Some(w),
            }
        }
        // Under extreme contention, let the request through uncounted
        // rather than fail it: this is a quota, not the authentication.
        host.log(
            Level::Warn,
            "hokusai-auth: rate-limit slot contended; request not counted",
        );
        last
    }

    fn audit_line(&self) -> String {
        serde_json::json!({
            "event": "hokusai_auth",
            "verdict": self.verdict,
            "cache": format!("{:?}", self.cache).to_lowercase(),
            "key": self.digest.as_ref().map(cache::short_hash),
            "key_id": self.key_id,
            "user_id": self.user_id,
            "method": self.method,
            "path": self.path,
            "class": format!("{:?}", self.class).to_lowercase(),
        })
        .to_string()
    }
}

/// Gives streams that waited on a callout the verdict it brought.
fn deliver<H: Host>(shared: &Shared, host: &H, waiters: &[u32], verdict: &Verdict) {
    for w in waiters {
        let stream = shared
            .waiters
            .borrow_mut()
            .remove(w)
            .and_then(|s| s.upgrade());
        let Some(stream) = stream else { continue };
        if !host.switch_to(*w) {
            continue;
        }
        let Ok(mut s) = stream.try_borrow_mut() else {
            continue;
        };
        let stale = match std::mem::replace(&mut s.state, State::Done) {
            State::Waiting { stale, .. } => stale,
            _ => None,
        };
        s.conclude(host, verdict.clone(), stale, true);
    }
}

/// Whether `name`, read with `_` as `-`, is a credential or identity header.
fn is_protected(name: &str, cfg: &Config) -> bool {
    let same = |protected: &str| {
        name.len() == protected.len()
            && name
                .bytes()
                .zip(protected.bytes())
                .all(|(a, b)| a == b || (a == b'_' && b == b'-'))
    };
    same(&cfg.user_id_header)
        || same(&cfg.key_id_header)
        || same("x-api-key")
        || same("authorization")
}

/// `prefix` followed by `n` in decimal, without the formatting machinery
/// (this runs on every request).
fn slot_key(prefix: &str, mut n: u64) -> String {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        if let Some(d) = digits.get_mut(i) {
            *d = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 || i == 0 {
            break;
        }
    }
    let mut s = String::with_capacity(prefix.len() + digits.len() - i);
    s.push_str(prefix);
    for d in digits.iter().skip(i) {
        s.push(char::from(*d));
    }
    s
}

fn failure_counter(f: Failure) -> Counter {
    match f {
        Failure::Dispatch => Counter::CalloutErrorDispatch,
        Failure::NoReply => Counter::CalloutErrorNoReply,
        Failure::Status(_) => Counter::CalloutErrorStatus,
        Failure::TooLarge => Counter::CalloutErrorTooLarge,
        Failure::NotJsonObject => Counter::CalloutErrorNotJsonObject,
        Failure::BadFields => Counter::CalloutErrorBadFields,
    }
}

fn failure_text(f: Failure, status: Option<u16>) -> String {
    match (f, status) {
        (Failure::Status(s), _) => format!("{} (status {s})", f.kind()),
        _ => f.kind().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::slot_key;

    #[test]
    fn slot_keys_are_prefix_and_decimal() {
        assert_eq!(slot_key("p.", 0), "p.0");
        assert_eq!(slot_key("p.", 4095), "p.4095");
        assert_eq!(slot_key("", u64::MAX), u64::MAX.to_string());
    }
}
