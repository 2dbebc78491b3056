//! Envoy's dynamic-module ABI (ABI v0.2.0, Envoy 1.40): every `extern` and
//! every `unsafe` of the native build. The declarations follow Envoy's
//! `source/extensions/dynamic_modules/abi/abi.h`; only what the filter uses
//! is declared. Each event hook catches unwinds: a panic fails its request
//! closed (503) and never crosses into Envoy.

use crate::envoy::{Attribute, CalloutReply, Envoy, Wake};
use crate::grpc::GrpcHeaders;
use crate::host::NativeHost;
use crate::module::{Filter, ModuleConfig};
use fnv::FnvHashMap;
use hokusai_mlflow_auth::Headers;
use hokusai_mlflow_auth::RefreshJob;
use hokusai_mlflow_auth::Reply;
use hokusai_mlflow_auth::Worker;
use hokusai_mlflow_auth::{install_logger, EnvoyLog, StatKind};
use std::cell::{Cell, RefCell};
use std::ffi::c_void;
use std::os::raw::c_char;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::null;
use std::rc::Rc;
use std::sync::{Arc, Weak};

/// The ABI this module is built for; Envoy warns on a mismatch.
const ABI_VERSION: &[u8] = b"v0.2.0\0";

// Enum values of abi.h.
const REQUEST_HEADER: u32 = 0;
const RESPONSE_HEADER: u32 = 2;
const CONTINUE: u32 = 0;
const STOP_ITERATION: u32 = 1;
/// `on_http_filter_request_body_status_StopIterationAndWatermark`.
const STOP_ITERATION_AND_WATERMARK: u32 = 2;
const CALLOUT_INIT_SUCCESS: u32 = 0;
const CALLOUT_SUCCESS: u32 = 0;
const METRICS_SUCCESS: u32 = 0;
const ATTRIBUTE_SOURCE_ADDRESS: u32 = 24;
const ATTRIBUTE_XDS_ROUTE_NAME: u32 = 61;

type EnvoyPtr = *mut c_void;
type ModulePtr = *const c_void;

/// `envoy_dynamic_module_type_{module,envoy}_buffer`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Buffer {
    ptr: *const u8,
    length: usize,
}

impl Buffer {
    fn of(bytes: &[u8]) -> Buffer {
        Buffer {
            ptr: bytes.as_ptr(),
            length: bytes.len(),
        }
    }

    const NULL: Buffer = Buffer {
        ptr: null(),
        length: 0,
    };

    /// SAFETY: the buffer must be valid for `'a` (Envoy's: until the hook returns).
    unsafe fn bytes<'a>(self) -> &'a [u8] {
        if self.ptr.is_null() || self.length == 0 {
            &[]
        } else {
            std::slice::from_raw_parts(self.ptr, self.length)
        }
    }
}

/// `envoy_dynamic_module_type_{module,envoy}_http_header`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Header {
    key: Buffer,
    value: Buffer,
}

impl Header {
    fn of(key: &str, value: &[u8]) -> Header {
        Header {
            key: Buffer::of(key.as_bytes()),
            value: Buffer::of(value),
        }
    }
}

extern "C" {
    fn envoy_dynamic_module_callback_log(level: u32, message: Buffer);
    fn envoy_dynamic_module_callback_http_get_headers_size(f: EnvoyPtr, kind: u32) -> usize;
    fn envoy_dynamic_module_callback_http_get_headers(
        f: EnvoyPtr,
        kind: u32,
        out: *mut Header,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_set_header(
        f: EnvoyPtr,
        kind: u32,
        key: Buffer,
        value: Buffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_add_header(
        f: EnvoyPtr,
        kind: u32,
        key: Buffer,
        value: Buffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_send_response(
        f: EnvoyPtr,
        status: u32,
        headers: *const Header,
        headers_size: usize,
        body: Buffer,
        details: Buffer,
    );
    fn envoy_dynamic_module_callback_http_filter_continue_decoding(f: EnvoyPtr);
    fn envoy_dynamic_module_callback_http_clear_route_cache(f: EnvoyPtr);
    fn envoy_dynamic_module_callback_http_filter_http_callout(
        f: EnvoyPtr,
        callout_id: *mut u64,
        cluster: Buffer,
        headers: *const Header,
        headers_size: usize,
        body: Buffer,
        timeout_ms: u64,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_get_attribute_string(
        f: EnvoyPtr,
        id: u32,
        out: *mut Buffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_filter_config_define_counter(
        config: EnvoyPtr,
        name: Buffer,
        labels: *const Buffer,
        labels_size: usize,
        id: *mut usize,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_config_define_histogram(
        config: EnvoyPtr,
        name: Buffer,
        labels: *const Buffer,
        labels_size: usize,
        id: *mut usize,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_increment_counter(
        f: EnvoyPtr,
        id: usize,
        labels: *const Buffer,
        labels_size: usize,
        value: u64,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_record_histogram_value(
        f: EnvoyPtr,
        id: usize,
        labels: *const Buffer,
        labels_size: usize,
        value: u64,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_config_http_callout(
        config: EnvoyPtr,
        callout_id: *mut u64,
        cluster: Buffer,
        headers: *const Header,
        headers_size: usize,
        body: Buffer,
        timeout_ms: u64,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_config_scheduler_new(
        config: EnvoyPtr,
    ) -> *mut c_void;
    fn envoy_dynamic_module_callback_http_filter_config_scheduler_commit(
        scheduler: *mut c_void,
        event_id: u64,
    );
    fn envoy_dynamic_module_callback_http_filter_config_scheduler_delete(scheduler: *mut c_void);
    fn envoy_dynamic_module_callback_http_filter_scheduler_new(f: EnvoyPtr) -> *mut c_void;
    fn envoy_dynamic_module_callback_http_filter_scheduler_commit(
        scheduler: *mut c_void,
        event_id: u64,
    );
    fn envoy_dynamic_module_callback_http_filter_scheduler_delete(scheduler: *mut c_void);
}

// ---------------------------------------------------------------- calls --

/// One stream's `filter_envoy_ptr`, valid from `on_http_filter_new` until
/// the stream is destroyed (the host forgets it then).
#[derive(Clone, Copy)]
pub struct EnvoyStream(EnvoyPtr);

impl EnvoyStream {
    fn add_header(&self, kind: u32, name: &str, value: &str) {
        // SAFETY: a live stream; Envoy copies the buffers.
        unsafe {
            envoy_dynamic_module_callback_http_add_header(
                self.0,
                kind,
                Buffer::of(name.as_bytes()),
                Buffer::of(value.as_bytes()),
            );
        }
    }
}

impl Envoy for EnvoyStream {
    fn request_headers(&self) -> Headers {
        // SAFETY: a live stream; `out` has room for the size Envoy gave.
        unsafe {
            let n = envoy_dynamic_module_callback_http_get_headers_size(self.0, REQUEST_HEADER);
            let mut out = vec![Header::of("", b""); n];
            if n == 0
                || !envoy_dynamic_module_callback_http_get_headers(
                    self.0,
                    REQUEST_HEADER,
                    out.as_mut_ptr(),
                )
            {
                return Headers::default();
            }
            Headers::from_pairs(out.iter().map(|h| (h.key.bytes(), h.value.bytes())))
        }
    }

    fn set_request_header(&self, name: &str, value: Option<&str>) {
        let value = value.map_or(Buffer::NULL, |v| Buffer::of(v.as_bytes()));
        // SAFETY: a live stream; Envoy copies the buffers.
        unsafe {
            envoy_dynamic_module_callback_http_set_header(
                self.0,
                REQUEST_HEADER,
                Buffer::of(name.as_bytes()),
                value,
            );
        }
    }

    fn add_request_header(&self, name: &str, value: &str) {
        self.add_header(REQUEST_HEADER, name, value);
    }

    fn add_response_header(&self, name: &str, value: &str) {
        self.add_header(RESPONSE_HEADER, name, value);
    }

    fn clear_route_cache(&self) {
        // SAFETY: a live stream.
        unsafe { envoy_dynamic_module_callback_http_clear_route_cache(self.0) };
    }

    fn send_response(&self, reply: &Reply) {
        let headers: Vec<Header> = reply
            .headers
            .iter()
            .map(|(k, v)| Header::of(k, v.as_bytes()))
            .collect();
        // SAFETY: a live stream; Envoy copies the buffers.
        unsafe {
            envoy_dynamic_module_callback_http_send_response(
                self.0,
                reply.status,
                headers.as_ptr(),
                headers.len(),
                Buffer::of(reply.body.as_bytes()),
                Buffer::of(b"hokusai_auth"),
            );
        }
    }

    fn continue_decoding(&self) {
        // SAFETY: a live stream.
        unsafe { envoy_dynamic_module_callback_http_filter_continue_decoding(self.0) };
    }

    fn callout(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout_ms: u64,
    ) -> Option<u64> {
        let headers: Vec<Header> = headers
            .iter()
            .map(|(k, v)| Header::of(k, v.as_bytes()))
            .collect();
        let mut id = 0u64;
        // SAFETY: a live stream; Envoy copies the buffers; `id` is a local.
        let rc = unsafe {
            envoy_dynamic_module_callback_http_filter_http_callout(
                self.0,
                &mut id,
                Buffer::of(cluster.as_bytes()),
                headers.as_ptr(),
                headers.len(),
                Buffer::of(body),
                timeout_ms,
            )
        };
        (rc == CALLOUT_INIT_SUCCESS).then_some(id)
    }

    fn attribute(&self, which: Attribute) -> Option<String> {
        let id = match which {
            Attribute::SourceAddress => ATTRIBUTE_SOURCE_ADDRESS,
            Attribute::RouteName => ATTRIBUTE_XDS_ROUTE_NAME,
        };
        let mut out = Buffer::NULL;
        // SAFETY: a live stream; the value is Envoy's until the hook returns
        // and is copied before that.
        unsafe {
            if !envoy_dynamic_module_callback_http_filter_get_attribute_string(self.0, id, &mut out)
            {
                return None;
            }
            String::from_utf8(out.bytes().to_vec()).ok()
        }
    }

    fn increment(&self, counter: usize) {
        // SAFETY: a live stream; no labels.
        unsafe {
            envoy_dynamic_module_callback_http_filter_increment_counter(
                self.0,
                counter,
                null(),
                0,
                1,
            )
        };
    }

    fn record(&self, histogram: usize, value: u64) {
        // SAFETY: a live stream; no labels.
        unsafe {
            envoy_dynamic_module_callback_http_filter_record_histogram_value(
                self.0,
                histogram,
                null(),
                0,
                value,
            )
        };
    }

    fn waker(&self) -> Option<Box<dyn Wake>> {
        // SAFETY: a live stream.
        let ptr = unsafe { envoy_dynamic_module_callback_http_filter_scheduler_new(self.0) };
        Scheduler::boxed(
            ptr,
            envoy_dynamic_module_callback_http_filter_scheduler_commit,
            envoy_dynamic_module_callback_http_filter_scheduler_delete,
        )
    }
}

/// One of Envoy's schedulers, a stream's or the filter config's: a commit
/// from any thread runs the matching `..._scheduled` hook on its owner's
/// thread (a stream's worker, Envoy's main thread), or nothing if the owner
/// is gone by then. Deleted once, when dropped.
struct Scheduler {
    ptr: *mut c_void,
    commit: unsafe extern "C" fn(*mut c_void, u64),
    delete: unsafe extern "C" fn(*mut c_void),
}

// SAFETY: Envoy's schedulers may be committed to and deleted from any thread.
unsafe impl Send for Scheduler {}
unsafe impl Sync for Scheduler {}

impl Scheduler {
    fn boxed(
        ptr: *mut c_void,
        commit: unsafe extern "C" fn(*mut c_void, u64),
        delete: unsafe extern "C" fn(*mut c_void),
    ) -> Option<Box<dyn Wake>> {
        (!ptr.is_null()).then(|| {
            Box::new(Scheduler {
                ptr,
                commit,
                delete,
            }) as Box<dyn Wake>
        })
    }
}

impl Wake for Scheduler {
    fn wake(&self) {
        // SAFETY: live until dropped.
        unsafe { (self.commit)(self.ptr, 0) };
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        // SAFETY: made by its scheduler_new, deleted once.
        unsafe { (self.delete)(self.ptr) };
    }
}

fn config_scheduler(config: EnvoyPtr) -> Option<Box<dyn Wake>> {
    // SAFETY: Envoy's config pointer, during on_http_filter_config_new.
    let ptr = unsafe { envoy_dynamic_module_callback_http_filter_config_scheduler_new(config) };
    Scheduler::boxed(
        ptr,
        envoy_dynamic_module_callback_http_filter_config_scheduler_commit,
        envoy_dynamic_module_callback_http_filter_config_scheduler_delete,
    )
}

/// A re-validation as a callout of the filter config (main thread).
fn config_callout(config: EnvoyPtr, job: &RefreshJob) -> Option<u64> {
    let headers: Vec<Header> = job
        .headers
        .iter()
        .map(|(k, v)| Header::of(k, v.as_bytes()))
        .collect();
    let timeout_ms = u64::try_from(job.timeout.as_millis()).unwrap_or(u64::MAX);
    let mut id = 0u64;
    // SAFETY: Envoy's config pointer, on the main thread; Envoy copies the buffers.
    let rc = unsafe {
        envoy_dynamic_module_callback_http_filter_config_http_callout(
            config,
            &mut id,
            Buffer::of(job.cluster.as_bytes()),
            headers.as_ptr(),
            headers.len(),
            Buffer::of(&job.body),
            timeout_ms,
        )
    };
    (rc == CALLOUT_INIT_SUCCESS).then_some(id)
}

fn define(config: EnvoyPtr, kind: StatKind, name: &str) -> Option<usize> {
    let mut id = 0usize;
    // SAFETY: Envoy's config pointer, during on_http_filter_config_new.
    let rc = unsafe {
        match kind {
            StatKind::Counter => envoy_dynamic_module_callback_http_filter_config_define_counter(
                config,
                Buffer::of(name.as_bytes()),
                null(),
                0,
                &mut id,
            ),
            StatKind::Histogram => {
                envoy_dynamic_module_callback_http_filter_config_define_histogram(
                    config,
                    Buffer::of(name.as_bytes()),
                    null(),
                    0,
                    &mut id,
                )
            }
        }
    };
    (rc == METRICS_SUCCESS).then_some(id)
}

// -------------------------------------------------------------- logging --

/// The `log` crate's logger in the native build.
static LOGGER: EnvoyLog = EnvoyLog { write: write_log };

fn write_log(level: u32, message: &str) {
    // SAFETY: Envoy copies the message.
    unsafe { envoy_dynamic_module_callback_log(level, Buffer::of(message.as_bytes())) };
}

// ---------------------------------------------------------- event hooks --

/// Runs a hook; on a panic, `recover` (itself guarded: a second panic gives `last`).
fn guard<R>(last: R, recover: impl FnOnce() -> R, hook: impl FnOnce() -> R) -> R {
    match catch_unwind(AssertUnwindSafe(hook)) {
        Ok(r) => r,
        Err(_) => catch_unwind(AssertUnwindSafe(recover)).unwrap_or(last),
    }
}

/// SAFETY: `fm` is a pointer `on_http_filter_new` returned, not yet destroyed.
unsafe fn filter<'a>(fm: ModulePtr) -> Option<&'a Filter<EnvoyStream>> {
    (fm as *const Filter<EnvoyStream>).as_ref()
}

type WorkerState = (
    Weak<ModuleConfig>,
    Option<Rc<Worker>>,
    Rc<NativeHost<EnvoyStream>>,
);

thread_local! {
    /// Each configuration's state on this worker thread, by its address
    /// (the Weak keeps the address from being reused while listed; read on
    /// every request, and no client picks it: a plain FNV hash).
    static WORKERS: RefCell<FnvHashMap<usize, WorkerState>> = RefCell::default();
    static NEXT_CONTEXT: Cell<u32> = const { Cell::new(1) };
}

fn worker_state(config: &Arc<ModuleConfig>) -> (Option<Rc<Worker>>, Rc<NativeHost<EnvoyStream>>) {
    let key = Arc::as_ptr(config) as usize;
    WORKERS.with_borrow_mut(|workers| {
        if let Some((alive, worker, host)) = workers.get(&key) {
            if alive.strong_count() > 0 {
                return (worker.clone(), Rc::clone(host));
            }
        }
        workers.retain(|_, (alive, _, _)| alive.strong_count() > 0);
        let (worker, host) = config.worker();
        workers.insert(
            key,
            (Arc::downgrade(config), worker.clone(), Rc::clone(&host)),
        );
        (worker, host)
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    install_logger(&LOGGER, "the request fails closed");
    ABI_VERSION.as_ptr().cast()
}

/// # Safety
/// Called by Envoy with its config pointer and buffers valid for the call.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    config_envoy: EnvoyPtr,
    _name: Buffer,
    config: Buffer,
) -> ModulePtr {
    guard(null(), null, || {
        match ModuleConfig::new(config.bytes(), |kind, stat| {
            define(config_envoy, kind, stat)
        }) {
            Ok(c) => {
                if let Some(waker) = config_scheduler(config_envoy) {
                    c.main.set_waker(waker);
                }
                Box::into_raw(Box::new(Arc::new(c))) as ModulePtr
            }
            Err(e) => {
                log::error!("hokusai-auth: configuration rejected: {e}");
                null()
            }
        }
    })
}

/// # Safety
/// `config` is a pointer `on_http_filter_config_new` returned.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(config: ModulePtr) {
    guard(
        (),
        || (),
        || {
            if !config.is_null() {
                drop(Box::from_raw(config as *mut Arc<ModuleConfig>));
            }
        },
    )
}

/// # Safety
/// `config` is a live pointer `on_http_filter_config_new` returned.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_new(
    config: ModulePtr,
    stream: EnvoyPtr,
) -> ModulePtr {
    guard(null(), null, || {
        let Some(config) = module_config(config) else {
            return null();
        };
        let (worker, host) = worker_state(config);
        let ctx = NEXT_CONTEXT.replace(NEXT_CONTEXT.get().wrapping_add(1).max(1));
        Box::into_raw(Box::new(Filter::new(
            ctx,
            EnvoyStream(stream),
            worker,
            host,
        ))) as ModulePtr
    })
}

/// # Safety
/// `fm` is a live filter pointer.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    _f: EnvoyPtr,
    fm: ModulePtr,
    _end_of_stream: bool,
) -> u32 {
    let Some(filter) = filter(fm) else {
        return STOP_ITERATION;
    };
    guard(
        STOP_ITERATION,
        || {
            filter.fail_closed();
            STOP_ITERATION
        },
        || {
            if filter.on_request_headers() {
                CONTINUE
            } else {
                STOP_ITERATION
            }
        },
    )
}

/// # Safety
/// `fm` is a live filter pointer.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    _f: EnvoyPtr,
    fm: ModulePtr,
    _end_of_stream: bool,
) -> u32 {
    if let Some(filter) = filter(fm) {
        guard((), || filter.abandon(), || filter.on_response_headers());
    }
    CONTINUE
}

/// # Safety
/// `fm` is a live filter pointer.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    _f: EnvoyPtr,
    fm: ModulePtr,
    _eos: bool,
) -> u32 {
    // A body let through while the headers wait would take the request past
    // its verdict: it waits too (with flow control, not a size limit).
    match filter(fm) {
        Some(f) if !guard(true, || true, || f.holds_request()) => CONTINUE,
        _ => STOP_ITERATION_AND_WATERMARK,
    }
}

/// # Safety
/// `fm` is a live filter pointer.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
    _f: EnvoyPtr,
    fm: ModulePtr,
) -> u32 {
    match filter(fm) {
        Some(f) if !guard(true, || true, || f.holds_request()) => CONTINUE,
        _ => STOP_ITERATION,
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
    _f: EnvoyPtr,
    _fm: ModulePtr,
    _eos: bool,
) -> u32 {
    CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(
    _f: EnvoyPtr,
    _fm: ModulePtr,
) -> u32 {
    CONTINUE
}

/// # Safety
/// `fm` is a live filter pointer.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(
    _f: EnvoyPtr,
    fm: ModulePtr,
) {
    if let Some(filter) = filter(fm) {
        guard((), || filter.abandon(), || filter.on_stream_complete());
    }
}

/// # Safety
/// `fm` is a filter pointer, destroyed here once.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_destroy(fm: ModulePtr) {
    if !fm.is_null() {
        guard(
            (),
            || (),
            || drop(Box::from_raw(fm as *mut Filter<EnvoyStream>)),
        );
    }
}

/// # Safety
/// `fm` is a live filter pointer; headers and chunks are Envoy's for the call.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    _f: EnvoyPtr,
    fm: ModulePtr,
    callout_id: u64,
    result: u32,
    headers: *const Header,
    headers_size: usize,
    chunks: *const Buffer,
    chunks_size: usize,
) {
    let Some(filter) = filter(fm) else {
        return;
    };
    guard(
        (),
        || filter.fail_closed(),
        || {
            let grpc = grpc_headers(result, (headers, headers_size));
            let reply = callout_reply(result, (headers, headers_size), (chunks, chunks_size));
            filter.on_callout_done(callout_id, reply, &grpc);
        },
    )
}

/// SAFETY: an array Envoy passed to `http_callout_done`, valid for the call.
unsafe fn header_slice<'a>(headers: *const Header, n: usize) -> &'a [Header] {
    if headers.is_null() {
        &[]
    } else {
        std::slice::from_raw_parts(headers, n)
    }
}

/// What the reply's headers say of gRPC. Envoy hands a callout's headers
/// and body, not its trailers: a `grpc-status` is seen only in the headers
/// of a trailers-only reply (`grpc`).
/// SAFETY: an array Envoy passed to `http_callout_done`, valid for the call.
unsafe fn grpc_headers(result: u32, (headers, n): (*const Header, usize)) -> GrpcHeaders {
    if result != CALLOUT_SUCCESS {
        return GrpcHeaders::default();
    }
    GrpcHeaders::read(
        header_slice(headers, n)
            .iter()
            .map(|h| (h.key.bytes(), h.value.bytes())),
    )
}

/// SAFETY: arrays Envoy passed to `http_callout_done`, valid for the call.
unsafe fn callout_reply(
    result: u32,
    (headers, n): (*const Header, usize),
    (chunks, m): (*const Buffer, usize),
) -> CalloutReply {
    if result != CALLOUT_SUCCESS {
        return CalloutReply::default();
    }
    let headers = header_slice(headers, n);
    let chunks: &[Buffer] = if chunks.is_null() {
        &[]
    } else {
        std::slice::from_raw_parts(chunks, m)
    };
    let status = headers
        .iter()
        .find(|h| h.key.bytes() == b":status")
        .and_then(|h| std::str::from_utf8(h.value.bytes()).ok()?.parse().ok());
    let body = chunks
        .iter()
        .flat_map(|c| c.bytes().iter().copied())
        .collect();
    CalloutReply { status, body }
}

/// # Safety
/// `fm` is a live filter pointer.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
    _f: EnvoyPtr,
    fm: ModulePtr,
    _event_id: u64,
) {
    if let Some(filter) = filter(fm) {
        guard((), || filter.fail_closed(), || filter.on_scheduled());
    }
}

/// SAFETY: `config` is a live pointer `on_http_filter_config_new` returned.
unsafe fn module_config<'a>(config: ModulePtr) -> Option<&'a Arc<ModuleConfig>> {
    (config as *const Arc<ModuleConfig>).as_ref()
}

/// # Safety
/// Envoy's config pointer and a live config pointer, on the main thread.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(
    config_envoy: EnvoyPtr,
    config: ModulePtr,
    _event_id: u64,
) {
    if let Some(config) = module_config(config) {
        guard(
            (),
            || (),
            || {
                let state = worker_state(config);
                config.start_refreshes(&state, |job| config_callout(config_envoy, job));
            },
        );
    }
}

/// # Safety
/// A live config pointer; headers and chunks are Envoy's for the call.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_http_callout_done(
    _config_envoy: EnvoyPtr,
    config: ModulePtr,
    callout_id: u64,
    result: u32,
    headers: *const Header,
    headers_size: usize,
    chunks: *const Buffer,
    chunks_size: usize,
) {
    let Some(config) = module_config(config) else {
        return;
    };
    guard(
        (),
        || (),
        || {
            let reply = callout_reply(result, (headers, headers_size), (chunks, chunks_size));
            config.refresh_answered(&worker_state(config), callout_id, reply);
        },
    )
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_local_reply(
    _f: EnvoyPtr,
    _fm: ModulePtr,
    _status: u32,
    _details: Buffer,
    _reset_imminent: bool,
) -> u32 {
    CONTINUE
}

// Hooks Envoy resolves but the filter has no use for: no streamed callouts,
// no flow control, no per-route config object of its own (Envoy's generic
// `FilterConfig` with `disabled: true` switches it off per route).

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
    _f: EnvoyPtr,
    _fm: ModulePtr,
    _stream: u64,
    _headers: *const Header,
    _size: usize,
    _end: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
    _f: EnvoyPtr,
    _fm: ModulePtr,
    _stream: u64,
    _data: *const Buffer,
    _count: usize,
    _end: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
    _f: EnvoyPtr,
    _fm: ModulePtr,
    _stream: u64,
    _trailers: *const Header,
    _size: usize,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(
    _f: EnvoyPtr,
    _fm: ModulePtr,
    _stream: u64,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(
    _f: EnvoyPtr,
    _fm: ModulePtr,
    _stream: u64,
    _reason: u32,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
    _f: EnvoyPtr,
    _fm: ModulePtr,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
    _f: EnvoyPtr,
    _fm: ModulePtr,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_new(
    _name: Buffer,
    _config: Buffer,
) -> ModulePtr {
    null()
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_destroy(_config: ModulePtr) {
}
