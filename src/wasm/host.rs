//! `Host` for Envoy: the proxy-wasm ABI, called directly.
//!
//! The SDK's hostcall wrappers panic on any status they do not expect (and
//! on non-UTF-8 header values); a panic kills the VM for every request, so
//! the calls the filter makes per request are declared here with plain
//! integer statuses and every failure becomes a value.

use crate::host::{Headers, Host};
use crate::observability::logging::{self, EnvoyLog};
use crate::observability::metrics::{Counter, StatIds, StatKind};
use crate::types::{GrpcCall, Refresh, RefreshJob, Reply};
use crate::verdict::refresh::RefreshQueue;
use std::cell::{Cell, RefCell};
use std::ptr::null_mut;
use std::time::Duration;

const OK: u32 = 0;
const CAS_MISMATCH: u32 = 8;

// proxy-wasm ABI 0.2.1 enum values.
const MAP_REQUEST_HEADERS: u32 = 0;
const MAP_RESPONSE_HEADERS: u32 = 2;
const MAP_CALLOUT_RESPONSE_HEADERS: u32 = 6;
const BUFFER_CALLOUT_RESPONSE_BODY: u32 = 4;
const BUFFER_GRPC_RECEIVE: u32 = 5;
const STREAM_REQUEST: u32 = 0;
const METRIC_COUNTER: u32 = 0;
const METRIC_HISTOGRAM: u32 = 2;

#[allow(clashing_extern_declarations)]
#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, data: *const u8, size: usize) -> u32;
    fn proxy_get_current_time_nanoseconds(ret: *mut u64) -> u32;
    fn proxy_get_header_map_pairs(map: u32, ret_data: *mut *mut u8, ret_size: *mut usize) -> u32;
    fn proxy_replace_header_map_value(
        map: u32,
        k: *const u8,
        ks: usize,
        v: *const u8,
        vs: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map: u32, k: *const u8, ks: usize) -> u32;
    fn proxy_add_header_map_value(
        map: u32,
        k: *const u8,
        ks: usize,
        v: *const u8,
        vs: usize,
    ) -> u32;
    fn proxy_get_buffer_bytes(
        buffer: u32,
        start: usize,
        max: usize,
        ret_data: *mut *mut u8,
        ret_size: *mut usize,
    ) -> u32;
    fn proxy_get_property(
        path: *const u8,
        size: usize,
        ret_data: *mut *mut u8,
        ret_size: *mut usize,
    ) -> u32;
    fn proxy_get_shared_data(
        k: *const u8,
        ks: usize,
        ret_data: *mut *mut u8,
        ret_size: *mut usize,
        ret_cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(k: *const u8, ks: usize, v: *const u8, vs: usize, cas: u32) -> u32;
    fn proxy_continue_stream(stream: u32) -> u32;
    fn proxy_send_local_response(
        status: u32,
        details: *const u8,
        details_size: usize,
        body: *const u8,
        body_size: usize,
        headers: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_set_effective_context(context_id: u32) -> u32;
    fn proxy_define_metric(kind: u32, name: *const u8, size: usize, ret_id: *mut u32) -> u32;
    fn proxy_increment_metric(id: u32, offset: i64) -> u32;
    fn proxy_record_metric(id: u32, value: u64) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
}

/// Starts the root context's tick (the stats flush).
pub fn start_ticks(period: Duration) {
    // SAFETY: no pointers.
    unsafe {
        proxy_set_tick_period_milliseconds(u32::try_from(period.as_millis()).unwrap_or(u32::MAX))
    };
}

/// Takes ownership of a buffer the host allocated through the SDK's
/// `proxy_on_memory_allocate` (a Rust `Vec`).
unsafe fn owned(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() {
        Vec::new()
    } else {
        Vec::from_raw_parts(data, size, size)
    }
}

/// A string property; `path` is its segments joined by NUL.
fn property(path: &str) -> Option<String> {
    let (mut data, mut size) = (null_mut(), 0usize);
    // SAFETY: live path; the host writes a buffer it allocated with our allocator.
    let rc = unsafe { proxy_get_property(path.as_ptr(), path.len(), &mut data, &mut size) };
    let value = unsafe { owned(data, size) };
    if rc != OK {
        return None;
    }
    String::from_utf8(value).ok()
}

fn add_header(map: u32, name: &str, value: &str) {
    // SAFETY: pointers and lengths of live strings.
    unsafe {
        proxy_add_header_map_value(map, name.as_ptr(), name.len(), value.as_ptr(), value.len());
    }
}

fn get_pairs(map: u32) -> Headers {
    let (mut data, mut size) = (null_mut(), 0usize);
    // SAFETY: the host writes a buffer it allocated with our allocator.
    let status = unsafe { proxy_get_header_map_pairs(map, &mut data, &mut size) };
    let bytes = unsafe { owned(data, size) };
    if status == OK {
        Headers::from_serialized(bytes)
    } else {
        Headers::default()
    }
}

/// The `log` crate's logger in the wasm build: `proxy_log`, its status
/// ignored. The SDK's own logger unwraps that status, and a panic stops the
/// VM for every request.
static LOGGER: EnvoyLog = EnvoyLog { write: write_log };

fn write_log(level: u32, message: &str) {
    // SAFETY: pointer and length of a live &str.
    unsafe { proxy_log(level, message.as_ptr(), message.len()) };
}

/// Routes the `log` crate to Envoy and logs panics: once, as the VM starts.
pub fn install_logging() {
    logging::install(&LOGGER, "the VM will stop");
}

/// Metric ids of this VM (Envoy shares the stats across workers by name),
/// and the counts not yet handed to Envoy: counting is local and `flush`
/// (on the root context's tick) hands them over, so a request pays no
/// hostcall for its stats.
pub struct WasmHost {
    stats: StatIds<u32>,
    pending: Vec<Cell<u64>>,
    /// Re-validations queued by requests, started on the root's tick and
    /// answered to the root, by callout token.
    refreshes: RefCell<RefreshQueue<u32>>,
}

/// How often counts reach Envoy's stats.
pub const FLUSH_PERIOD: Duration = Duration::from_millis(200);

fn define(kind: StatKind, name: &str) -> Option<u32> {
    let kind = match kind {
        StatKind::Counter => METRIC_COUNTER,
        StatKind::Histogram => METRIC_HISTOGRAM,
    };
    let mut id = 0u32;
    // SAFETY: pointer and length of a live &str, out-pointer to a local.
    let status = unsafe { proxy_define_metric(kind, name.as_ptr(), name.len(), &mut id) };
    (status == OK).then_some(id)
}

impl WasmHost {
    pub fn new() -> Self {
        WasmHost {
            stats: StatIds::define(define),
            pending: Counter::ALL.iter().map(|_| Cell::new(0)).collect(),
            refreshes: RefCell::default(),
        }
    }

    /// The queued re-validations, to start from the root context.
    pub fn take_jobs(&self) -> Vec<RefreshJob> {
        self.refreshes.borrow_mut().take_jobs()
    }

    /// A re-validation the root context started, by its callout token.
    pub fn started(&self, token: u32, refresh: Refresh) {
        self.refreshes.borrow_mut().started(token, refresh);
    }

    /// The re-validation a callout token answers, if it is one.
    pub fn answered(&self, token: u32) -> Option<Refresh> {
        self.refreshes.borrow_mut().answered(&token)
    }
}

impl WasmHost {
    pub fn flush(&self) {
        for (id, pending) in self.stats.counters().zip(&self.pending) {
            let n = pending.take();
            if let (Some(id), true) = (id, n > 0) {
                // SAFETY: no pointers.
                unsafe { proxy_increment_metric(id, i64::try_from(n).unwrap_or(i64::MAX)) };
            }
        }
    }
}

impl Host for WasmHost {
    fn request_headers(&self) -> Headers {
        get_pairs(MAP_REQUEST_HEADERS)
    }

    fn set_request_header(&self, name: &str, value: Option<&str>) {
        // SAFETY: pointers and lengths of live strings.
        unsafe {
            match value {
                Some(v) => proxy_replace_header_map_value(
                    MAP_REQUEST_HEADERS,
                    name.as_ptr(),
                    name.len(),
                    v.as_ptr(),
                    v.len(),
                ),
                None => {
                    proxy_remove_header_map_value(MAP_REQUEST_HEADERS, name.as_ptr(), name.len())
                }
            };
        }
    }

    fn add_request_header(&self, name: &str, value: &str) {
        add_header(MAP_REQUEST_HEADERS, name, value);
    }

    fn add_response_header(&self, name: &str, value: &str) {
        add_header(MAP_RESPONSE_HEADERS, name, value);
    }

    fn send_reply(&self, reply: &Reply) {
        let headers: Vec<(&str, &[u8])> = reply
            .headers
            .iter()
            .map(|(k, v)| (*k, v.as_bytes()))
            .collect();
        let headers = Headers::serialize(&headers);
        let details = "hokusai_auth";
        // SAFETY: pointers and lengths of live buffers.
        unsafe {
            proxy_send_local_response(
                reply.status,
                details.as_ptr(),
                details.len(),
                reply.body.as_ptr(),
                reply.body.len(),
                headers.as_ptr(),
                headers.len(),
                -1,
            );
        }
    }

    fn resume_request(&self) {
        // SAFETY: no pointers.
        unsafe { proxy_continue_stream(STREAM_REQUEST) };
    }

    fn dispatch(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout: Duration,
    ) -> Option<u32> {
        // Through the SDK, which must know the token to route the reply.
        proxy_wasm::hostcalls::dispatch_http_call(
            cluster,
            headers.to_vec(),
            Some(body),
            Vec::new(),
            timeout,
        )
        .ok()
    }

    fn callout_reply(&self, body_size: usize, max: usize) -> (Option<u16>, Vec<u8>) {
        let status = get_pairs(MAP_CALLOUT_RESPONSE_HEADERS)
            .get(":status")
            .and_then(|v| std::str::from_utf8(v).ok()?.parse::<u16>().ok());
        if body_size == 0 || body_size > max {
            return (status, Vec::new());
        }
        let (mut data, mut size) = (null_mut(), 0usize);
        // SAFETY: the host writes a buffer it allocated with our allocator.
        let rc = unsafe {
            proxy_get_buffer_bytes(BUFFER_CALLOUT_RESPONSE_BODY, 0, max, &mut data, &mut size)
        };
        let body = unsafe { owned(data, size) };
        (status, if rc == OK { body } else { Vec::new() })
    }

    fn dispatch_grpc(&self, call: &GrpcCall<'_>) -> Option<u32> {
        // Through the SDK, which must know the token to route the reply.
        proxy_wasm::hostcalls::dispatch_grpc_call(
            call.target,
            call.service,
            call.method,
            Vec::new(),
            Some(call.message),
            call.timeout,
        )
        .ok()
    }

    fn grpc_reply(&self, size: usize, max: usize) -> Vec<u8> {
        if size == 0 || size > max {
            return Vec::new();
        }
        let (mut data, mut got) = (null_mut(), 0usize);
        // SAFETY: the host writes a buffer it allocated with our allocator.
        let rc =
            unsafe { proxy_get_buffer_bytes(BUFFER_GRPC_RECEIVE, 0, max, &mut data, &mut got) };
        let body = unsafe { owned(data, got) };
        if rc == OK {
            body
        } else {
            Vec::new()
        }
    }

    fn queue_refresh(&self, job: RefreshJob) -> bool {
        self.refreshes.borrow_mut().queue(job)
    }

    fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        let (mut data, mut size, mut cas) = (null_mut(), 0usize, 0u32);
        // SAFETY: live key; the host writes a buffer it allocated with our allocator.
        let rc = unsafe {
            proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas)
        };
        let value = unsafe { owned(data, size) };
        match rc {
            OK => (Some(value), (cas != 0).then_some(cas)),
            _ => (None, None),
        }
    }

    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        // SAFETY: pointers and lengths of live buffers.
        let rc = unsafe {
            proxy_set_shared_data(
                key.as_ptr(),
                key.len(),
                value.as_ptr(),
                value.len(),
                cas.unwrap_or(0),
            )
        };
        if rc == CAS_MISMATCH {
            return false;
        }
        rc == OK
    }

    fn now_ms(&self) -> u64 {
        let mut ns = 0u64;
        // SAFETY: out-pointer to a local.
        unsafe { proxy_get_current_time_nanoseconds(&mut ns) };
        ns / 1_000_000
    }

    fn peer_address(&self) -> Option<String> {
        property("source\0address")
    }

    fn route_name(&self) -> Option<String> {
        // `xds.route_name` in current Envoy (1.40 answers nothing for the
        // older `route_name`); the older name only where the newer is unknown.
        property("xds\0route_name").or_else(|| property("route_name"))
    }

    fn count(&self, counter: Counter) {
        if let Some(p) = self.pending.get(counter.index()) {
            p.set(p.get() + 1);
        }
    }

    fn record_callout_latency(&self, ms: u64) {
        if let Some(id) = self.stats.latency() {
            // SAFETY: no pointers.
            unsafe { proxy_record_metric(id, ms) };
        }
    }

    fn switch_to(&self, context_id: u32) -> bool {
        // SAFETY: no pointers.
        unsafe { proxy_set_effective_context(context_id) == OK }
    }
}
