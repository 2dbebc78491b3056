//! The built `.wasm` in-process: a small proxy-wasm host (on the `wasmi`
//! interpreter) loads the module exactly as Envoy would and drives requests
//! through its ABI, so a defect of the wasm build alone shows up before the
//! Envoy suite. Needs the release `.wasm` (scripts/setup.sh builds it); a
//! missing or stale one fails the test.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;
use wasmi::{
    Caller, Engine, Extern, ExternType, Func, Instance, Linker, Memory, Module, Store, Val,
};

const WASM: &str = "target/wasm32-wasip1/release/hokusai_mlflow_auth.wasm";
const KEY: &str = "hk_test_inprocess_0000000000000001"; // fixture, not a real key

// proxy-wasm ABI 0.2.1 values.
const OK: i32 = 0;
const NOT_FOUND: i32 = 1;
const CAS_MISMATCH: i32 = 8;
const MAP_REQUEST_HEADERS: i32 = 0;
const MAP_CALLOUT_HEADERS: i32 = 6;
const BUFFER_CALLOUT_BODY: i32 = 4;
const BUFFER_PLUGIN_CONFIGURATION: i32 = 7;
const ACTION_CONTINUE: i32 = 0;
const ACTION_PAUSE: i32 = 1;
const ROOT: i32 = 1;

type Pairs = Vec<(String, Vec<u8>)>;

#[derive(Debug, Clone)]
struct Reply {
    status: i32,
    body: String,
    headers: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
struct Callout {
    cluster: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// What Envoy would hold for the module: header maps, shared data, what the
/// module asked of it.
#[derive(Default)]
struct Envoy {
    config: Vec<u8>,
    context: i32,
    request_headers: HashMap<i32, Pairs>,
    callout_headers: Pairs,
    callout_body: Vec<u8>,
    shared: HashMap<String, (Vec<u8>, u32)>,
    logs: Vec<(i32, String)>,
    replies: HashMap<i32, Reply>,
    continued: Vec<i32>,
    callouts: Vec<(i32, Callout)>,
}

fn wasm_path() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let wasm = root.join(WASM);
    let built = std::fs::metadata(&wasm)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| panic!("{WASM} is missing: run scripts/setup.sh (or cargo build --release --target wasm32-wasip1 -p hokusai-mlflow-auth)"));
    let newest = newest_source(&root.join("src"));
    assert!(
        built >= newest,
        "{WASM} is older than the sources: run scripts/setup.sh to rebuild it"
    );
    wasm
}

fn modified(p: &Path) -> SystemTime {
    std::fs::metadata(p).and_then(|m| m.modified()).unwrap()
}

fn newest_source(dir: &Path) -> SystemTime {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| modified(&e.unwrap().path()))
        .max()
        .unwrap()
}

// --- memory helpers -----------------------------------------------------------

fn memory(caller: &Caller<'_, Envoy>) -> Memory {
    match caller.get_export("memory") {
        Some(Extern::Memory(m)) => m,
        _ => panic!("the module exports no memory"),
    }
}

fn read(caller: &Caller<'_, Envoy>, ptr: i32, len: i32) -> Vec<u8> {
    let mut buf = vec![0u8; len as usize];
    memory(caller).read(caller, ptr as usize, &mut buf).unwrap();
    buf
}

fn read_str(caller: &Caller<'_, Envoy>, ptr: i32, len: i32) -> String {
    String::from_utf8(read(caller, ptr, len)).unwrap()
}

fn write(caller: &mut Caller<'_, Envoy>, ptr: i32, bytes: &[u8]) {
    let mem = memory(caller);
    mem.write(caller, ptr as usize, bytes).unwrap();
}

/// Hands the module bytes the way Envoy does: in memory the module
/// allocates (`proxy_on_memory_allocate`), pointer and size written back.
fn give(caller: &mut Caller<'_, Envoy>, bytes: &[u8], ret_ptr: i32, ret_len: i32) {
    let alloc = match caller.get_export("proxy_on_memory_allocate") {
        Some(Extern::Func(f)) => f,
        _ => panic!("no proxy_on_memory_allocate"),
    };
    let mut out = [Val::I32(0)];
    alloc
        .call(&mut *caller, &[Val::I32(bytes.len() as i32)], &mut out)
        .unwrap();
    let Val::I32(ptr) = out[0] else { panic!() };
    write(caller, ptr, bytes);
    write(caller, ret_ptr, &ptr.to_le_bytes());
    write(caller, ret_len, &(bytes.len() as i32).to_le_bytes());
}

/// proxy-wasm's header map encoding: count, sizes, NUL-terminated bytes.
fn serialize(pairs: &Pairs) -> Vec<u8> {
    let mut out = (pairs.len() as u32).to_le_bytes().to_vec();
    for (k, v) in pairs {
        out.extend((k.len() as u32).to_le_bytes());
        out.extend((v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend(k.as_bytes());
        out.push(0);
        out.extend(v);
        out.push(0);
    }
    out
}

fn deserialize(bytes: &[u8]) -> Vec<(String, String)> {
    let word = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap()) as usize;
    let n = word(0);
    let mut at = 4 + n * 8;
    (0..n)
        .map(|i| {
            let (ks, vs) = (word(4 + i * 8), word(8 + i * 8));
            let k = String::from_utf8(bytes[at..at + ks].to_vec()).unwrap();
            let v = String::from_utf8(bytes[at + ks + 1..at + ks + 1 + vs].to_vec()).unwrap();
            at += ks + vs + 2;
            (k, v)
        })
        .collect()
}

// --- the hostcalls ---------------------------------------------------------------

fn map_of(envoy: &mut Envoy, map: i32) -> &mut Pairs {
    let ctx = envoy.context;
    match map {
        MAP_REQUEST_HEADERS => envoy.request_headers.entry(ctx).or_default(),
        MAP_CALLOUT_HEADERS => &mut envoy.callout_headers,
        _ => panic!("map {map} not faked"),
    }
}

fn define_logging_and_time(linker: &mut Linker<Envoy>) {
    linker
        .func_wrap(
            "env",
            "proxy_log",
            |c: Caller<'_, Envoy>, level: i32, ptr: i32, len: i32| -> i32 {
                let text = read_str(&c, ptr, len);
                let mut c = c;
                c.data_mut().logs.push((level, text));
                OK
            },
        )
        .unwrap();
    linker
        .func_wrap(
            "env",
            "proxy_get_current_time_nanoseconds",
            |mut c: Caller<'_, Envoy>, ret: i32| -> i32 {
                write(&mut c, ret, &1_700_000_000_000_000_000u64.to_le_bytes());
                OK
            },
        )
        .unwrap();
}

fn define_header_maps(linker: &mut Linker<Envoy>) {
    linker
        .func_wrap(
            "env",
            "proxy_get_header_map_pairs",
            |mut c: Caller<'_, Envoy>, map: i32, ret_ptr: i32, ret_len: i32| -> i32 {
                let bytes = serialize(map_of(c.data_mut(), map));
                give(&mut c, &bytes, ret_ptr, ret_len);
                OK
            },
        )
        .unwrap();
    linker
        .func_wrap(
            "env",
            "proxy_replace_header_map_value",
            |mut c: Caller<'_, Envoy>, map: i32, kp: i32, kl: i32, vp: i32, vl: i32| -> i32 {
                let (k, v) = (read_str(&c, kp, kl), read(&c, vp, vl));
                let pairs = map_of(c.data_mut(), map);
                pairs.retain(|(n, _)| *n != k);
                pairs.push((k, v));
                OK
            },
        )
        .unwrap();
    linker
        .func_wrap(
            "env",
            "proxy_add_header_map_value",
            |mut c: Caller<'_, Envoy>, map: i32, kp: i32, kl: i32, vp: i32, vl: i32| -> i32 {
                let (k, v) = (read_str(&c, kp, kl), read(&c, vp, vl));
                map_of(c.data_mut(), map).push((k, v));
                OK
            },
        )
        .unwrap();
    linker
        .func_wrap(
            "env",
            "proxy_remove_header_map_value",
            |mut c: Caller<'_, Envoy>, map: i32, kp: i32, kl: i32| -> i32 {
                let k = read_str(&c, kp, kl);
                map_of(c.data_mut(), map).retain(|(n, _)| *n != k);
                OK
            },
        )
        .unwrap();
}

fn define_buffers_and_properties(linker: &mut Linker<Envoy>) {
    linker
        .func_wrap(
            "env",
            "proxy_get_buffer_bytes",
            |mut c: Caller<'_, Envoy>, kind: i32, start: i32, max: i32, rp: i32, rl: i32| -> i32 {
                let all = match kind {
                    BUFFER_PLUGIN_CONFIGURATION => c.data().config.clone(),
                    BUFFER_CALLOUT_BODY => c.data().callout_body.clone(),
                    _ => return NOT_FOUND,
                };
                let start = (start as usize).min(all.len());
                let end = start.saturating_add(max as u32 as usize).min(all.len());
                give(&mut c, &all[start..end], rp, rl);
                OK
            },
        )
        .unwrap();
    linker
        .func_wrap(
            "env",
            "proxy_get_property",
            |mut c: Caller<'_, Envoy>, pp: i32, pl: i32, rp: i32, rl: i32| -> i32 {
                match read(&c, pp, pl).as_slice() {
                    b"source\0address" => {
                        give(&mut c, b"127.0.0.1:40000", rp, rl);
                        OK
                    }
                    _ => NOT_FOUND,
                }
            },
        )
        .unwrap();
}

fn define_shared_data(linker: &mut Linker<Envoy>) {
    linker
        .func_wrap(
            "env",
            "proxy_get_shared_data",
            |mut c: Caller<'_, Envoy>, kp: i32, kl: i32, rp: i32, rl: i32, rcas: i32| -> i32 {
                let k = read_str(&c, kp, kl);
                let Some((v, cas)) = c.data().shared.get(&k).cloned() else {
                    return NOT_FOUND;
                };
                give(&mut c, &v, rp, rl);
                write(&mut c, rcas, &cas.to_le_bytes());
                OK
            },
        )
        .unwrap();
    linker
        .func_wrap(
            "env",
            "proxy_set_shared_data",
            |mut c: Caller<'_, Envoy>, kp: i32, kl: i32, vp: i32, vl: i32, cas: i32| -> i32 {
                let (k, v) = (read_str(&c, kp, kl), read(&c, vp, vl));
                let shared = &mut c.data_mut().shared;
                let current = shared.get(&k).map_or(0, |(_, c)| *c);
                if cas != 0 && cas as u32 != current {
                    return CAS_MISMATCH;
                }
                shared.insert(k, (v, current + 1));
                OK
            },
        )
        .unwrap();
}

fn define_stream_control(linker: &mut Linker<Envoy>) {
    linker
        .func_wrap(
            "env",
            "proxy_continue_stream",
            |mut c: Caller<'_, Envoy>, _s: i32| -> i32 {
                let ctx = c.data().context;
                c.data_mut().continued.push(ctx);
                OK
            },
        )
        .unwrap();
    linker
        .func_wrap(
            "env",
            "proxy_set_effective_context",
            |mut c: Caller<'_, Envoy>, ctx: i32| -> i32 {
                c.data_mut().context = ctx;
                OK
            },
        )
        .unwrap();
    linker
        .func_wrap(
            "env",
            "proxy_send_local_response",
            |mut c: Caller<'_, Envoy>,
             status: i32,
             _dp: i32,
             _dl: i32,
             bp: i32,
             bl: i32,
             hp: i32,
             hl: i32,
             _grpc: i32|
             -> i32 {
                let reply = Reply {
                    status,
                    body: read_str(&c, bp, bl),
                    headers: deserialize(&read(&c, hp, hl)),
                };
                let ctx = c.data().context;
                assert!(
                    c.data_mut().replies.insert(ctx, reply).is_none(),
                    "two replies"
                );
                OK
            },
        )
        .unwrap();
}

fn define_http_call(linker: &mut Linker<Envoy>) {
    linker
        .func_wrap(
            "env",
            "proxy_http_call",
            |mut c: Caller<'_, Envoy>,
             up: i32,
             ul: i32,
             hp: i32,
             hl: i32,
             bp: i32,
             bl: i32,
             _tp: i32,
             _tl: i32,
             _timeout: i32,
             ret_token: i32|
             -> i32 {
                let callout = Callout {
                    cluster: read_str(&c, up, ul),
                    headers: deserialize(&read(&c, hp, hl)),
                    body: read(&c, bp, bl),
                };
                let ctx = c.data().context;
                c.data_mut().callouts.push((ctx, callout));
                let token = c.data().callouts.len() as i32;
                write(&mut c, ret_token, &token.to_le_bytes());
                OK
            },
        )
        .unwrap();
}

fn define_metrics(linker: &mut Linker<Envoy>) {
    linker
        .func_wrap(
            "env",
            "proxy_define_metric",
            |mut c: Caller<'_, Envoy>, _kind: i32, _np: i32, _nl: i32, ret: i32| -> i32 {
                write(&mut c, ret, &1i32.to_le_bytes());
                OK
            },
        )
        .unwrap();
    for name in ["proxy_increment_metric", "proxy_record_metric"] {
        linker
            .func_wrap(
                "env",
                name,
                |_: Caller<'_, Envoy>, _id: i32, _v: i64| -> i32 { OK },
            )
            .unwrap();
    }
    linker
        .func_wrap(
            "env",
            "proxy_set_tick_period_milliseconds",
            |_: Caller<'_, Envoy>, _ms: i32| -> i32 { OK },
        )
        .unwrap();
}

fn define_wasi(linker: &mut Linker<Envoy>) {
    let m = "wasi_snapshot_preview1";
    linker
        .func_wrap(
            m,
            "random_get",
            |mut c: Caller<'_, Envoy>, p: i32, l: i32| -> i32 {
                write(&mut c, p, &vec![7u8; l as usize]);
                0
            },
        )
        .unwrap();
    linker
        .func_wrap(
            m,
            "environ_sizes_get",
            |mut c: Caller<'_, Envoy>, n: i32, s: i32| -> i32 {
                write(&mut c, n, &0i32.to_le_bytes());
                write(&mut c, s, &0i32.to_le_bytes());
                0
            },
        )
        .unwrap();
    linker
        .func_wrap(
            m,
            "environ_get",
            |_: Caller<'_, Envoy>, _a: i32, _b: i32| -> i32 { 0 },
        )
        .unwrap();
}

/// Every import of the module answers "unimplemented" (12), the status
/// Envoy gives for an ABI call it lacks, until the fake defines it.
fn define_unimplemented(linker: &mut Linker<Envoy>, module: &Module) {
    for import in module.imports() {
        let ExternType::Func(ty) = import.ty() else {
            continue;
        };
        let (module_name, name) = (import.module().to_string(), import.name().to_string());
        linker
            .func_new(&module_name, &name, ty.clone(), |_, _, results| {
                if let Some(r) = results.first_mut() {
                    *r = Val::I32(12);
                }
                Ok(())
            })
            .unwrap();
    }
}

// --- the module under test ---------------------------------------------------------

struct Vm {
    store: Store<Envoy>,
    instance: Instance,
}

impl Vm {
    fn load() -> Vm {
        let engine = Engine::default();
        let module = Module::new(&engine, std::fs::read(wasm_path()).unwrap()).unwrap();
        let mut store = Store::new(&engine, Envoy::default());
        let mut linker = Linker::<Envoy>::new(&engine);
        linker.allow_shadowing(true);
        define_unimplemented(&mut linker, &module);
        define_logging_and_time(&mut linker);
        define_header_maps(&mut linker);
        define_buffers_and_properties(&mut linker);
        define_shared_data(&mut linker);
        define_stream_control(&mut linker);
        define_http_call(&mut linker);
        define_metrics(&mut linker);
        define_wasi(&mut linker);
        let instance = linker.instantiate_and_start(&mut store, &module).unwrap();
        let mut vm = Vm { store, instance };
        vm.call("_initialize", &[]).unwrap();
        vm
    }

    fn func(&self, name: &str) -> Func {
        self.instance
            .get_func(&self.store, name)
            .unwrap_or_else(|| panic!("no export {name}"))
    }

    /// Calls an export as Envoy does, the context it acts on made current.
    fn call(&mut self, name: &str, args: &[i32]) -> Result<i32, wasmi::Error> {
        if let Some(ctx) = args.first() {
            self.store.data_mut().context = *ctx;
        }
        let f = self.func(name);
        let args: Vec<Val> = args.iter().map(|a| Val::I32(*a)).collect();
        let mut out = vec![Val::I32(0); f.ty(&self.store).results().len()];
        f.call(&mut self.store, &args, &mut out)?;
        Ok(match out.first() {
            Some(Val::I32(v)) => *v,
            _ => 0,
        })
    }

    fn configure(&mut self, json: &str) -> bool {
        self.store.data_mut().config = json.as_bytes().to_vec();
        self.call("proxy_on_context_create", &[ROOT, 0]).unwrap();
        assert_eq!(self.call("proxy_on_vm_start", &[ROOT, 0]).unwrap(), 1);
        self.call("proxy_on_configure", &[ROOT, json.len() as i32])
            .unwrap()
            == 1
    }

    fn request(&mut self, ctx: i32, path: &str, headers: &[(&str, &str)]) -> i32 {
        let mut pairs: Pairs = vec![
            (":method".into(), b"POST".to_vec()),
            (":path".into(), path.as_bytes().to_vec()),
            (":authority".into(), b"gateway".to_vec()),
        ];
        pairs.extend(
            headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())),
        );
        let n = pairs.len() as i32;
        self.store.data_mut().request_headers.insert(ctx, pairs);
        self.call("proxy_on_context_create", &[ctx, ROOT]).unwrap();
        self.call("proxy_on_request_headers", &[ctx, n, 1]).unwrap()
    }

    fn answer_callout(&mut self, ctx: i32, token: i32, status: &str, body: &str) {
        let envoy = self.store.data_mut();
        envoy.callout_headers = vec![(":status".into(), status.as_bytes().to_vec())];
        envoy.callout_body = body.as_bytes().to_vec();
        self.call(
            "proxy_on_http_call_response",
            &[ctx, token, 1, body.len() as i32, 0],
        )
        .unwrap();
    }

    fn header(&self, ctx: i32, name: &str) -> Option<String> {
        self.store.data().request_headers[&ctx]
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8(v.clone()).unwrap())
    }
}

fn local_config() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(root.join("envoy-config/plugin-config.json")).unwrap()
}

#[test]
fn a_missing_key_gets_the_mlflow_401_without_a_callout() {
    let mut vm = Vm::load();
    assert!(vm.configure(&local_config()));
    let action = vm.request(2, "/api/mlflow/api/2.0/mlflow/runs/search", &[]);
    assert_eq!(action, ACTION_PAUSE);
    let reply = vm.store.data().replies[&2].clone();
    assert_eq!(reply.status, 401);
    let body: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(body["error_code"], "UNAUTHENTICATED");
    assert!(reply
        .headers
        .contains(&("www-authenticate".into(), "Bearer realm=\"hokusai\"".into())));
    assert!(vm.store.data().callouts.is_empty());
}

#[test]
fn a_key_is_validated_by_callout_then_served_from_the_cache() {
    let mut vm = Vm::load();
    assert!(vm.configure(&local_config()));
    let bearer = format!("Bearer {KEY}");
    let action = vm.request(
        2,
        "/api/mlflow/api/2.0/mlflow/runs/search",
        &[("authorization", &bearer)],
    );
    assert_eq!(action, ACTION_PAUSE);
    let (ctx, callout) = vm.store.data().callouts[0].clone();
    assert_eq!(ctx, 2);
    assert_eq!(callout.cluster, "hokusai_auth");
    assert!(callout
        .headers
        .contains(&(":path".into(), "/api/v1/keys/validate".into())));
    assert!(callout
        .headers
        .contains(&("authorization".into(), bearer.clone())));
    let body: serde_json::Value = serde_json::from_slice(&callout.body).unwrap();
    assert_eq!(body["service_id"], "platform");
    assert_eq!(
        vm.header(2, "authorization"),
        None,
        "removed before the verdict"
    );

    vm.answer_callout(
        2,
        1,
        "200",
        r#"{"user_id":"u_1","key_id":"k_1","scopes":["mlflow:read","mlflow:write"]}"#,
    );
    assert_eq!(vm.store.data().continued, vec![2]);
    assert_eq!(vm.header(2, "x-hokusai-user-id").as_deref(), Some("u_1"));
    assert_eq!(vm.header(2, "x-hokusai-api-key-id").as_deref(), Some("k_1"));
    assert_eq!(
        vm.header(2, ":path").as_deref(),
        Some("/api/2.0/mlflow/runs/search")
    );

    let action = vm.request(
        3,
        "/api/mlflow/api/2.0/mlflow/runs/search",
        &[("authorization", &bearer)],
    );
    assert_eq!(action, ACTION_CONTINUE, "a cache hit");
    assert_eq!(vm.store.data().callouts.len(), 1);
    assert_eq!(vm.header(3, "x-hokusai-user-id").as_deref(), Some("u_1"));
    let logs = format!("{:?}", vm.store.data().logs);
    assert!(!logs.contains(&KEY[8..]), "the key reached a log line");
}

#[test]
fn a_public_path_passes_with_its_upstream_path() {
    let mut vm = Vm::load();
    assert!(vm.configure(&local_config()));
    assert_eq!(
        vm.request(2, "/api/mlflow/health/mlflow", &[]),
        ACTION_CONTINUE
    );
    assert_eq!(vm.header(2, ":path").as_deref(), Some("/health"));
}

#[test]
fn a_bad_configuration_is_refused_naming_the_field() {
    let mut vm = Vm::load();
    let bad = r#"{"auth": {"cluster": "a", "service_id": "p"}, "cache": {"slots": 1}}"#;
    assert!(!vm.configure(bad));
    let logs = &vm.store.data().logs;
    assert!(
        logs.iter()
            .any(|(level, l)| *level == 4 && l.contains("configuration rejected: cache.slots")),
        "{logs:?}"
    );
}

#[test]
fn a_panic_is_logged_by_our_hook_before_the_vm_stops() {
    let mut vm = Vm::load();
    assert!(vm.configure(r#"{"auth": {"cluster": "hokusai_auth", "service_id": "platform"}}"#));
    // The SDK panics on a context whose root it does not know: host
    // misbehaviour, but a real panic inside the module.
    let trapped = vm.call("proxy_on_context_create", &[9, 12345]);
    assert!(trapped.is_err(), "the module should have stopped");
    let logs = &vm.store.data().logs;
    assert!(
        logs.iter().any(|(level, l)| *level == 4
            && l.contains("hokusai-auth: panic, the VM will stop")
            && l.contains("invalid root_context_id")),
        "our panic line was not logged: {logs:?}"
    );
}
