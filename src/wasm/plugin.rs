//! The proxy-wasm entry points: a root context per plugin configuration and
//! an HTTP context per request, each a thin shell around `filter`.

use crate::config::Config;
use crate::filter::{Flow, Stream, Worker};
use crate::host::Host;
use crate::outcome::denial::Denial;
use crate::verdict::key_service::MAX_REPLY_BYTES;
use crate::wasm::host::{install_logging, start_ticks, WasmHost, FLUSH_PERIOD};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};
use std::cell::RefCell;
use std::rc::Rc;

proxy_wasm::main! {{
    // Not the SDK's set_log_level: its logger unwraps host statuses, and it
    // would install its own panic hook over ours.
    install_logging();
    proxy_wasm::set_root_context(|_| Box::new(Root { worker: None, host: None }));
}}

struct Root {
    worker: Option<Rc<Worker>>,
    host: Option<Rc<WasmHost>>,
}

impl Context for Root {
    /// A re-validation's answer (refresh-ahead).
    fn on_http_call_response(
        &mut self,
        token: u32,
        _headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        let (Some(worker), Some(host)) = (&self.worker, &self.host) else {
            return;
        };
        if let Some(refresh) = host.answered(token) {
            let (status, body) = host.callout_reply(body_size, MAX_REPLY_BYTES);
            worker.complete_refresh(host.as_ref(), &refresh, status, &body);
        }
    }
}

impl Root {
    /// Starts the re-validations requests queued, from this root context
    /// (so that they outlive the requests and answer here).
    fn start_refreshes(&self) {
        let (Some(worker), Some(host)) = (&self.worker, &self.host) else {
            return;
        };
        for job in host.take_jobs() {
            match host.dispatch(&job.cluster, &job.header_pairs(), &job.body, job.timeout) {
                Some(token) => host.started(token, job.refresh),
                None => worker.complete_refresh(host.as_ref(), &job.refresh, None, &[]),
            }
        }
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        match Config::parse(&bytes).and_then(Worker::new) {
            Ok(worker) => {
                self.worker = Some(Rc::new(worker));
                self.host.get_or_insert_with(|| Rc::new(WasmHost::new()));
                start_ticks(FLUSH_PERIOD);
                true
            }
            Err(e) => {
                log::error!("hokusai-auth: configuration rejected: {e}");
                false
            }
        }
    }

    fn on_tick(&mut self) {
        self.start_refreshes();
        if let Some(h) = &self.host {
            h.flush();
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let host = self
            .host
            .clone()
            .unwrap_or_else(|| Rc::new(WasmHost::new()));
        let stream = self.worker.clone().map(|w| Stream::new(context_id, w));
        Some(Box::new(Http { stream, host }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Http {
    /// None only if the configuration never loaded: every request is refused.
    stream: Option<Rc<RefCell<Stream>>>,
    host: Rc<WasmHost>,
}

impl Http {
    fn with<R>(&self, f: impl FnOnce(&mut Stream, &WasmHost) -> R) -> Option<R> {
        let stream = self.stream.as_ref()?;
        let mut s = stream.try_borrow_mut().ok()?;
        Some(f(&mut s, &self.host))
    }
}

impl Context for Http {
    fn on_http_call_response(
        &mut self,
        _token: u32,
        _headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        self.with(|s, h| s.on_callout_reply(h, body_size));
    }

    fn on_grpc_call_response(&mut self, token: u32, status: u32, size: usize) {
        self.with(|s, h| s.on_charge_reply(h, token, status, size));
    }

    fn on_done(&mut self) -> bool {
        self.with(|s, h| s.on_done(h));
        true
    }
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        match self.with(|s, h| s.on_request_headers(h)) {
            Some(Flow::Continue) => Action::Continue,
            Some(Flow::Pause) => Action::Pause,
            None => {
                Denial::NotConfigured.send(self.host.as_ref());
                Action::Pause
            }
        }
    }

    fn on_http_response_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        self.with(|s, h| s.on_response_headers(h));
        Action::Continue
    }
}
