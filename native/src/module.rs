//! The native build's filter: a configuration per Envoy filter config, and
//! per request a thin shell around the core's `Stream`, as `plugin` is in
//! the wasm build. Generic over `Envoy`, so that the tests drive it with a
//! fake; `abi` drives it with Envoy.

use crate::envoy::{CalloutReply, Envoy};
use crate::grpc::GrpcHeaders;
use crate::host::{Call, NativeHost};
use crate::main_thread::MainThread;
use hokusai_mlflow_auth::Config;
use hokusai_mlflow_auth::Denial;
use hokusai_mlflow_auth::{Flow, Stream, Worker};
use hokusai_mlflow_auth::{Refresh, RefreshJob};
use hokusai_mlflow_auth::{StatIds, StatKind};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

/// A filter configuration, checked once on Envoy's main thread; each
/// worker thread builds its own `Worker` from it.
pub struct ModuleConfig {
    pub bytes: Vec<u8>,
    pub metrics: Arc<StatIds<usize>>,
    /// Where refresh-ahead jobs run.
    pub main: Arc<MainThread>,
}

impl ModuleConfig {
    /// Checks the plugin JSON as the wasm build does, and defines the stats
    /// (Envoy allows that only now) with `define`.
    pub fn new(
        bytes: &[u8],
        define: impl FnMut(StatKind, &str) -> Option<usize>,
    ) -> Result<ModuleConfig, String> {
        Config::parse(bytes)?;
        Ok(ModuleConfig {
            bytes: bytes.to_vec(),
            metrics: Arc::new(StatIds::define(define)),
            main: Arc::default(),
        })
    }

    /// This configuration's state for the calling worker thread.
    pub fn worker<E: Envoy>(&self) -> (Option<Rc<Worker>>, Rc<NativeHost<E>>) {
        // Checked in `new`: parsing again cannot fail.
        let worker = Config::parse(&self.bytes)
            .and_then(Worker::new)
            .ok()
            .map(Rc::new);
        let host = NativeHost::new(Arc::clone(&self.metrics), Arc::clone(&self.main));
        (worker, Rc::new(host))
    }

    /// On the main thread: starts the queued re-validations with `callout`
    /// (its id, or None if refused: judged as unanswered at once).
    pub fn start_refreshes<E: Envoy>(
        &self,
        state: &(Option<Rc<Worker>>, Rc<NativeHost<E>>),
        mut callout: impl FnMut(&RefreshJob) -> Option<u64>,
    ) {
        for job in self.main.take_jobs() {
            match callout(&job) {
                Some(id) => self.main.started(id, job.refresh),
                None => self.finish_refresh(state, job.refresh, CalloutReply::default()),
            }
        }
    }

    /// On the main thread: a re-validation's answer, by callout id.
    pub fn refresh_answered<E: Envoy>(
        &self,
        state: &(Option<Rc<Worker>>, Rc<NativeHost<E>>),
        id: u64,
        reply: CalloutReply,
    ) {
        if let Some(refresh) = self.main.answered(id) {
            self.finish_refresh(state, refresh, reply);
        }
    }

    fn finish_refresh<E: Envoy>(
        &self,
        (worker, host): &(Option<Rc<Worker>>, Rc<NativeHost<E>>),
        refresh: Refresh,
        reply: CalloutReply,
    ) {
        if let Some(w) = worker {
            w.complete_refresh(host.as_ref(), &refresh, reply.status, &reply.body);
        }
    }
}

/// One request. Its methods take `&self`: Envoy re-enters the module from
/// the calls `run_deferred` makes, so no `&mut` may be held across them.
pub struct Filter<E: Envoy> {
    ctx: u32,
    envoy: E,
    /// None if the configuration could not be built, or after a panic.
    stream: RefCell<Option<Rc<RefCell<Stream>>>>,
    host: Rc<NativeHost<E>>,
    done: Cell<bool>,
    /// The filter refused the request itself (no stream left to ask).
    refused: Cell<bool>,
}

impl<E: Envoy> Filter<E> {
    pub fn new(ctx: u32, envoy: E, worker: Option<Rc<Worker>>, host: Rc<NativeHost<E>>) -> Self {
        host.register(ctx, envoy.clone());
        let stream = worker.map(|w| Stream::new(ctx, w));
        Filter {
            ctx,
            envoy,
            stream: RefCell::new(stream),
            host,
            done: Cell::new(false),
            refused: Cell::new(false),
        }
    }

    /// Runs `f` on the stream with hostcalls acting on it, then what the
    /// core deferred (after the stream is let go).
    fn with<R>(&self, f: impl FnOnce(&mut Stream, &NativeHost<E>) -> R) -> Option<R> {
        self.host.enter(self.ctx, &self.envoy);
        let stream = self.stream.borrow().clone()?;
        let out = {
            let mut s = stream.try_borrow_mut().ok()?;
            f(&mut s, &self.host)
        };
        self.host.run_deferred();
        Some(out)
    }

    /// True: let the request go on now.
    pub fn on_request_headers(&self) -> bool {
        match self.with(|s, h| s.on_request_headers(h)) {
            Some(Flow::Continue) => true,
            Some(Flow::Pause) => false,
            None => {
                self.refuse(&Denial::NotConfigured);
                false
            }
        }
    }

    /// Whether the request's body (and trailers) must wait: Envoy lets a
    /// paused request go on when a filter lets its body through.
    pub fn holds_request(&self) -> bool {
        match self.stream.borrow().as_ref() {
            Some(stream) => stream.try_borrow().map_or(true, |s| s.awaiting_verdict()),
            None => self.refused.get(),
        }
    }

    pub fn on_response_headers(&self) {
        self.with(|s, h| s.on_response_headers(h));
    }

    /// This stream's callout `id` answered: a rate limit call's reply goes
    /// to the charge it was for; the key service's to its joiners on other
    /// workers too.
    pub fn on_callout_done(&self, id: u64, reply: CalloutReply, grpc: &GrpcHeaders) {
        if let Some(token) = self.host.take_grpc_call(self.ctx, id) {
            let (status, message) = crate::grpc::reply(reply, grpc);
            let size = message.len();
            self.host.set_grpc_reply(message);
            self.with(|s, h| s.on_charge_reply(h, token, status, size));
            return;
        }
        if let Some(Call::Own { flight, .. }) = self.host.take_call(self.ctx) {
            crate::coalesce::Callouts::process().land(&flight, &reply);
        }
        self.answer(reply);
    }

    /// Woken: the flight this stream joined on another worker landed.
    pub fn on_scheduled(&self) {
        match self.host.take_call(self.ctx) {
            Some(Call::Joined { flight, joiner }) => match joiner.take_reply() {
                Some(reply) => self.answer(reply),
                None => self
                    .host
                    .put_call(self.ctx, Call::Joined { flight, joiner }),
            },
            Some(other) => self.host.put_call(self.ctx, other),
            None => {}
        }
    }

    fn answer(&self, reply: CalloutReply) {
        let size = reply.body.len();
        self.host.set_callout_reply(reply);
        self.with(|s, h| s.on_callout_reply(h, size));
    }

    /// The stream is over: the audit line, and the waiters of its callout.
    pub fn on_stream_complete(&self) {
        if self.done.replace(true) {
            return;
        }
        self.with(|s, h| s.on_done(h));
        self.host.unregister(self.ctx);
    }

    /// After a panic in the module: the request is refused with 503, as
    /// when the key service is unavailable, and the stream is left alone.
    pub fn fail_closed(&self) {
        self.abandon();
        self.refuse(&Denial::Unavailable);
    }

    /// After a panic outside the request's decision: the core's state may
    /// be half-changed, so the stream is not touched again.
    pub fn abandon(&self) {
        self.stream.borrow_mut().take();
    }

    fn refuse(&self, denial: &Denial) {
        self.refused.set(true);
        self.host.enter(self.ctx, &self.envoy);
        denial.send(self.host.as_ref());
        self.host.run_deferred();
    }
}

impl<E: Envoy> Drop for Filter<E> {
    fn drop(&mut self) {
        self.on_stream_complete();
    }
}
