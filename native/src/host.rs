//! `Host` for the native build, on top of `Envoy` (one stream's calls).
//! One per worker thread and configuration, like the wasm build's VM.
//!
//! Envoy re-enters the module from `send_response` and `continue_decoding`
//! (the stream completes, or the next filter answers at once), so those two
//! are deferred: they run in `run_deferred`, after the core has returned
//! and let go of the stream. Shared data is the process-wide store, and a
//! callout is coalesced with an identical one under way on another worker.

use crate::coalesce::{callout_digest, CalloutDigest, Callouts, Joiner, Role};
use crate::envoy::{Attribute, CalloutReply, Envoy};
use crate::grpc;
use crate::main_thread::MainThread;
use crate::shared::SharedData;
use fnv::FnvHashMap;
use hokusai_mlflow_auth::Reply;
use hokusai_mlflow_auth::{Counter, StatIds};
use hokusai_mlflow_auth::{GrpcCall, RefreshJob};
use hokusai_mlflow_auth::{Headers, Host};
use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What waits for the core to let go of the stream.
enum Deferred {
    Send(Reply),
    Resume,
}

/// A stream's callout under way.
pub enum Call {
    /// Its own: `land` hands the answer to the streams that joined it.
    Own { flight: CalloutDigest },
    /// Another worker's, for the same request.
    Joined {
        flight: CalloutDigest,
        joiner: Arc<Joiner>,
    },
}

pub struct NativeHost<E: Envoy> {
    metrics: Arc<StatIds<usize>>,
    main: Arc<MainThread>,
    /// The stream hostcalls act on (`switch_to` changes it).
    current: RefCell<Option<(u32, E)>>,
    /// This worker's live streams, by context id (ours, sequential: a
    /// plain FNV hash, no keyed one, on this per-request path).
    streams: RefCell<FnvHashMap<u32, E>>,
    calls: RefCell<FnvHashMap<u32, Call>>,
    deferred: RefCell<Vec<(E, Deferred)>>,
    /// The callout answer being delivered (taken by `callout_reply`).
    reply: RefCell<CalloutReply>,
    /// The rate limit calls under way, by stream: (callout id, the token
    /// the core was given).
    grpc_calls: RefCell<FnvHashMap<u32, Vec<(u64, u32)>>>,
    /// The last token given out (never 0).
    grpc_token: Cell<u32>,
    /// The gRPC message being delivered (taken by `grpc_reply`).
    grpc_reply: RefCell<Vec<u8>>,
}

impl<E: Envoy> NativeHost<E> {
    pub fn new(metrics: Arc<StatIds<usize>>, main: Arc<MainThread>) -> Self {
        NativeHost {
            metrics,
            main,
            current: RefCell::new(None),
            streams: RefCell::default(),
            calls: RefCell::default(),
            deferred: RefCell::default(),
            reply: RefCell::default(),
            grpc_calls: RefCell::default(),
            grpc_token: Cell::new(0),
            grpc_reply: RefCell::default(),
        }
    }

    pub fn register(&self, ctx: u32, envoy: E) {
        self.streams.borrow_mut().insert(ctx, envoy);
    }

    /// The stream is gone: its callout's joiners are told there was no
    /// answer, or it stops waiting for another's.
    pub fn unregister(&self, ctx: u32) {
        self.streams.borrow_mut().remove(&ctx);
        self.grpc_calls.borrow_mut().remove(&ctx);
        match self.calls.borrow_mut().remove(&ctx) {
            Some(Call::Own { flight, .. }) => {
                Callouts::process().land(&flight, &CalloutReply::default());
            }
            Some(Call::Joined { flight, joiner }) => Callouts::process().leave(&flight, &joiner),
            None => {}
        }
    }

    /// Makes hostcalls act on `ctx`.
    pub fn enter(&self, ctx: u32, envoy: &E) {
        *self.current.borrow_mut() = Some((ctx, envoy.clone()));
    }

    pub fn take_call(&self, ctx: u32) -> Option<Call> {
        self.calls.borrow_mut().remove(&ctx)
    }

    pub fn put_call(&self, ctx: u32, call: Call) {
        self.calls.borrow_mut().insert(ctx, call);
    }

    /// The token of `ctx`'s rate limit call `id`, if it is one (then no
    /// longer under way).
    pub fn take_grpc_call(&self, ctx: u32, id: u64) -> Option<u32> {
        let mut calls = self.grpc_calls.borrow_mut();
        let mine = calls.get_mut(&ctx)?;
        let at = mine.iter().position(|(i, _)| *i == id)?;
        let (_, token) = mine.swap_remove(at);
        if mine.is_empty() {
            calls.remove(&ctx);
        }
        Some(token)
    }

    /// The message `grpc_reply` gives next.
    pub fn set_grpc_reply(&self, message: Vec<u8>) {
        *self.grpc_reply.borrow_mut() = message;
    }

    /// The answer `callout_reply` gives next.
    pub fn set_callout_reply(&self, reply: CalloutReply) {
        *self.reply.borrow_mut() = reply;
    }

    /// Sends the replies and resumes the streams the core decided on.
    pub fn run_deferred(&self) {
        loop {
            let batch = std::mem::take(&mut *self.deferred.borrow_mut());
            if batch.is_empty() {
                return;
            }
            for (envoy, action) in batch {
                match action {
                    Deferred::Send(reply) => envoy.send_response(&reply),
                    Deferred::Resume => envoy.continue_decoding(),
                }
            }
        }
    }

    fn with_current<R>(&self, f: impl FnOnce(u32, &E) -> R) -> Option<R> {
        let current = self.current.borrow();
        let (ctx, envoy) = current.as_ref()?;
        Some(f(*ctx, envoy))
    }

    fn defer(&self, action: Deferred) {
        if let Some(envoy) = self.with_current(|_, e| e.clone()) {
            self.deferred.borrow_mut().push((envoy, action));
        }
    }

    /// Leads the flight for this request, or joins the one under way on
    /// another worker (a token of 0: the answer comes by `on_scheduled`).
    fn lead_or_join(
        &self,
        ctx: u32,
        envoy: &E,
        call: (&str, &[(&str, &str)], &[u8], u64),
    ) -> Option<u32> {
        let (cluster, headers, body, timeout_ms) = call;
        let flight = callout_digest(cluster, headers, body);
        match Callouts::process().lead_or_join(flight, || envoy.waker()) {
            Role::Lead => match envoy.callout(cluster, headers, body, timeout_ms) {
                Some(id) => {
                    self.put_call(ctx, Call::Own { flight });
                    Some(id as u32)
                }
                None => {
                    Callouts::process().land(&flight, &CalloutReply::default());
                    None
                }
            },
            Role::Join(joiner) => {
                self.put_call(ctx, Call::Joined { flight, joiner });
                Some(0)
            }
        }
    }
}

impl<E: Envoy> Host for NativeHost<E> {
    fn request_headers(&self) -> Headers {
        self.with_current(|_, e| e.request_headers())
            .unwrap_or_default()
    }

    fn set_request_header(&self, name: &str, value: Option<&str>) {
        self.with_current(|_, e| {
            e.set_request_header(name, value);
            // As the wasm host does on a `:path` change: the route is chosen
            // again for the path the upstream will serve.
            if name == ":path" {
                e.clear_route_cache();
            }
        });
    }

    fn add_request_header(&self, name: &str, value: &str) {
        self.with_current(|_, e| e.add_request_header(name, value));
    }

    fn add_response_header(&self, name: &str, value: &str) {
        self.with_current(|_, e| e.add_response_header(name, value));
    }

    fn send_reply(&self, reply: &Reply) {
        self.defer(Deferred::Send(reply.clone()));
    }

    fn resume_request(&self) {
        self.defer(Deferred::Resume);
    }

    fn dispatch(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout: Duration,
    ) -> Option<u32> {
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let (ctx, envoy) = self.with_current(|ctx, e| (ctx, e.clone()))?;
        self.lead_or_join(ctx, &envoy, (cluster, headers, body, timeout_ms))
    }

    fn callout_reply(&self, _body_size: usize, max: usize) -> (Option<u16>, Vec<u8>) {
        let reply = self.reply.take();
        let body = if reply.body.len() <= max {
            reply.body
        } else {
            Vec::new()
        };
        (reply.status, body)
    }

    /// Envoy's dynamic modules have no gRPC callout: the unary call goes as
    /// an HTTP/2 callout to the target's cluster (`grpc`), never coalesced
    /// (each one charges a request).
    fn dispatch_grpc(&self, call: &GrpcCall<'_>) -> Option<u32> {
        let path = format!("/{}/{}", call.service, call.method);
        let (headers, body) = grpc::request(&path, call.cluster, call.message)?;
        let timeout_ms = u64::try_from(call.timeout.as_millis()).unwrap_or(u64::MAX);
        let (ctx, id) = self.with_current(|ctx, e| {
            e.callout(call.cluster, &headers, &body, timeout_ms)
                .map(|id| (ctx, id))
        })??;
        let token = self.grpc_token.get().checked_add(1).unwrap_or(1);
        self.grpc_token.set(token);
        self.grpc_calls
            .borrow_mut()
            .entry(ctx)
            .or_default()
            .push((id, token));
        Some(token)
    }

    fn grpc_reply(&self, _size: usize, max: usize) -> Vec<u8> {
        let message = self.grpc_reply.take();
        if message.len() <= max {
            message
        } else {
            Vec::new()
        }
    }

    fn queue_refresh(&self, job: RefreshJob) -> bool {
        self.main.queue(job)
    }

    fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        SharedData::process().get(key)
    }

    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        SharedData::process().set(key, value, cas)
    }

    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    fn peer_address(&self) -> Option<String> {
        self.with_current(|_, e| e.attribute(Attribute::SourceAddress))?
    }

    fn route_name(&self) -> Option<String> {
        self.with_current(|_, e| e.attribute(Attribute::RouteName))?
    }

    fn count(&self, counter: Counter) {
        if let Some(id) = self.metrics.counter(counter) {
            self.with_current(|_, e| e.increment(id));
        }
    }

    fn record_callout_latency(&self, ms: u64) {
        if let Some(id) = self.metrics.latency() {
            self.with_current(|_, e| e.record(id, ms));
        }
    }

    fn switch_to(&self, ctx: u32) -> bool {
        let Some(envoy) = self.streams.borrow().get(&ctx).cloned() else {
            return false;
        };
        *self.current.borrow_mut() = Some((ctx, envoy));
        true
    }
}
