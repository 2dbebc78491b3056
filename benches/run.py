#!/usr/bin/env python3
"""Benchmarks side by side with the peers: the single command.

    .venv/bin/python benches/run.py [--rounds 3 --requests 20000 --concurrency 16]

Builds what it needs (scripts/setup.sh, benches/noop-filter), starts the
key-service stand-in and the echo upstream once, then for R rounds runs
every row (shuffled order per round) against a freshly started Envoy
(--concurrency 1, same binary, same listener/route/upstream; only the auth
filter differs, see benches/envoy-bench.yaml and benches/filters/). Each
row is checked to do what it claims before it is timed. Medians over the
rounds are printed as one Markdown table and written with the machine
details to docs/benchmarks.md. See benches/README.md for what each row
measures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import platform
import random
import resource
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benches"
sys.path.insert(0, str(ROOT / "tests"))

import harness  # noqa: E402

NOOP_MANIFEST = BENCH / "noop-filter/Cargo.toml"
# Built outside benches/ (target/ is ignored by git).
NOOP_TARGET_DIR = ROOT / "target/noop-filter"
NOOP_WASM = NOOP_TARGET_DIR / "wasm32-wasip1/release/noop_filter.wasm"
NOOP_MODULE_MANIFEST = BENCH / "noop-module/Cargo.toml"
NOOP_MODULE_TARGET_DIR = ROOT / "target/noop-module"
NOOP_MODULE = NOOP_MODULE_TARGET_DIR / "release/libnoop_module.so"
TEMPLATE = BENCH / "envoy-bench.yaml"
FILTERS = BENCH / "filters"
DOC = ROOT / "docs/benchmarks.md"

# A read the MLflow client makes; the filter strips the mount and classifies
# it as a read. Every row sends exactly this request.
REQ_PATH = "/api/mlflow/api/2.0/mlflow/experiments/get?experiment_id=0"
BENCH_KEY = "hk_test_bench_hot_0000000000000000000"
WRONG_KEY = "hk_test_bench_wrong_00000000000000000"
KEY_SECONDS = 600  # bounds on every wait and subprocess below
CLK_TCK = os.sysconf("SC_CLK_TCK")

# wrk script: each request takes the next key of BENCH_KEYS (one per line);
# the thread stops after BENCH_LIMIT responses, so every row is timed over
# the same request count (with one wrk thread, the default). Kept here so
# that the bench is one file to run.
WRK_LUA = r"""
local ffi = require("ffi")
ffi.cdef[[ int getpid(void); int tgkill(int tgid, int tid, int sig); ]]
local keys, n, i, seen, limit, path = {}, 0, 0, 0, 0, "/"

function init(args)
  path = os.getenv("BENCH_PATH")
  limit = tonumber(os.getenv("BENCH_LIMIT"))
  for line in io.lines(os.getenv("BENCH_KEYS")) do
    if #line > 0 then n = n + 1; keys[n] = "Bearer " .. line end
  end
end

function request()
  i = i + 1
  return wrk.format("GET", path, { ["Authorization"] = keys[(i - 1) % n + 1] })
end

function response(status, headers, body)
  seen = seen + 1
  if seen == limit then
    wrk.thread:stop()
    -- wrk's main thread sleeps for the whole -d; a SIGINT to it ends that
    -- sleep, so the run (and its duration) ends with the last counted
    -- response. (os.execute would not do: system() ignores SIGINT.)
    local pid = ffi.C.getpid()
    ffi.C.tgkill(pid, pid, 2)
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests": %d, "duration_us": %d, "status_errors": %d, ' ..
    '"connect_errors": %d, "read_errors": %d, "write_errors": %d, "timeouts": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "p999_us": %d, "max_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean))
end
"""


# --------------------------------------------------------------------------
# rows


@dataclass(frozen=True)
class Row:
    name: str
    label: str
    filter: str  # benches/filters/<filter>.yaml
    wasm: Path | None = None
    config: dict | None = None  # the Hokusai plugin config
    auth: bool = False  # refuses a wrong key
    distinct_keys: bool = False  # a new key on every request
    delay_ms: int = 0  # the stand-in waits this long before every answer
    callouts: float = 0.0  # expected callouts per request
    identity: bool = False  # the upstream gets x-hokusai-user-id
    hides_key: bool = False  # the upstream never sees Authorization
    global_limit: bool = False  # counts in the rate limit service (on Redis)
    native: bool = False  # the native build (dynamic module) instead of the .wasm
    so: Path | None = None  # that build's .so (default: harness.NATIVE)


def hokusai_config(rate_limit: bool = False, routes: bool = False, global_limit: bool = False) -> dict:
    """The local plugin config, audit log off; rate limit as asked (counted
    by the rate limit service with global_limit); its per-route rules only
    when asked (so that the other rows can also time builds from before
    there were rules)."""
    limit = {"enabled": rate_limit or global_limit}
    if global_limit:
        limit.update(mode="global", cluster="hokusai_ratelimit", timeout_ms=1000)
    cfg = harness.plugin_config(audit_log=False, rate_limit=limit)
    if not routes:
        cfg.pop("routes", None)
    return cfg


def rows(variants: list[tuple[str, Path]] = ()) -> list[Row]:
    hw = harness.WASM
    return base_rows(hw) + [r for name, wasm in variants for r in variant_rows(name, wasm)]


def variant_rows(name: str, wasm: Path) -> list[Row]:
    """The cache-hit rows again with another build of the filter (--variant),
    so that a change is compared with its baseline in the same run."""
    if wasm.suffix == ".so":
        return [
            Row(f"native_hit@{name}", f"hokusai native, cache hit ({name})", "hokusai", so=wasm,
                config=hokusai_config(False), auth=True, identity=True, hides_key=True, native=True),
            Row(f"native_hit_rl@{name}", f"hokusai native, cache hit, rate limit on ({name})", "hokusai",
                so=wasm, config=hokusai_config(True), auth=True, identity=True, hides_key=True, native=True),
        ]
    return [
        Row(f"hit@{name}", f"hokusai, cache hit ({name})", "hokusai", wasm=wasm, config=hokusai_config(False),
            auth=True, identity=True, hides_key=True),
        Row(f"hit_rl@{name}", f"hokusai, cache hit, rate limit on ({name})", "hokusai", wasm=wasm,
            config=hokusai_config(True), auth=True, identity=True, hides_key=True),
    ]


def base_rows(hw: Path) -> list[Row]:
    return [
        Row("none", "no auth filter (ceiling)", "none"),
        Row("noop", "no-op wasm filter (floor)", "noop-wasm", wasm=NOOP_WASM),
        Row("native_noop", "no-op dynamic module (floor of the native build)", "hokusai", so=NOOP_MODULE,
            native=True),
        Row("api_key_auth", "native api_key_auth (static key list)", "api-key-auth",
            auth=True, identity=True, hides_key=True),
        Row("hit", "hokusai, cache hit", "hokusai", wasm=hw, config=hokusai_config(False),
            auth=True, identity=True, hides_key=True),
        Row("native_hit", "hokusai native (dynamic module), cache hit", "hokusai", config=hokusai_config(False),
            auth=True, identity=True, hides_key=True, native=True),
        Row("native_hit_rl", "hokusai native, cache hit, rate limit on", "hokusai", config=hokusai_config(True),
            auth=True, identity=True, hides_key=True, native=True),
        Row("native_miss", "hokusai native, cache miss (new key each request)", "hokusai",
            config=hokusai_config(False), auth=True, distinct_keys=True, callouts=1.0,
            identity=True, hides_key=True, native=True),
        Row("hit_rl", "hokusai, cache hit, rate limit on", "hokusai", wasm=hw,
            config=hokusai_config(True), auth=True, identity=True, hides_key=True),
        Row("hit_grl", "hokusai, cache hit, global rate limit (rate limit service on Redis)", "hokusai",
            wasm=hw, config=hokusai_config(global_limit=True), auth=True, identity=True, hides_key=True,
            global_limit=True),
        Row("hit_routes", "hokusai, cache hit, the local config's per-route rules (one selects by route name)",
            "hokusai", wasm=hw, config=hokusai_config(False, routes=True), auth=True, identity=True,
            hides_key=True),
        Row("miss", "hokusai, cache miss (new key each request)", "hokusai", wasm=hw,
            config=hokusai_config(False), auth=True, distinct_keys=True, callouts=1.0,
            identity=True, hides_key=True),
        Row("ext_authz", "native ext_authz (HTTP), stand-in instant", "ext-authz",
            auth=True, callouts=1.0, identity=True),
        Row("ext_authz_5ms", "native ext_authz (HTTP), stand-in 5 ms", "ext-authz",
            auth=True, callouts=1.0, identity=True, delay_ms=5),
        Row("miss_5ms", "hokusai, cache miss, stand-in 5 ms", "hokusai", wasm=hw,
            config=hokusai_config(False), auth=True, distinct_keys=True, callouts=1.0,
            identity=True, hides_key=True, delay_ms=5),
    ]


def render_template(row_filter: str, workdir: Path) -> Path:
    """envoy-bench.yaml with the row's filter snippet in ${HTTP_FILTERS}."""
    snippet = (FILTERS / f"{row_filter}.yaml").read_text()
    indented = "".join("          " + line if line.strip() else line
                       for line in snippet.splitlines(keepends=True))
    lines = TEMPLATE.read_text().splitlines(keepends=True)
    at = [i for i, line in enumerate(lines) if line.strip() == "${HTTP_FILTERS}"]
    if len(at) != 1:
        raise RuntimeError(f"{TEMPLATE} must have one ${{HTTP_FILTERS}} line")
    lines[at[0]] = indented
    path = workdir / f"template-{row_filter}.yaml"
    path.write_text("".join(lines))
    return path


# --------------------------------------------------------------------------
# process and machine readings


def proc_cpu_ticks(pid: int) -> int:
    """utime + stime of the whole process (all threads), in clock ticks."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])


def proc_sched_ns(pid: int) -> int:
    """Sum of the threads' on-CPU time from schedstat (ns resolution)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


def proc_status_kb(pid: int, field_name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    return 0


def machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    parts = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = parts[3] + parts[4]
    return sum(parts) - idle, sum(parts)


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def envoy_version() -> str:
    out = subprocess.run([str(harness.envoy_binary()), "--version"], capture_output=True,
                         text=True, timeout=60).stdout
    # "... version: <sha>/1.40.0/Clean/RELEASE/BoringSSL"
    v = out.strip().split("version:")[-1].strip()
    parts = v.split("/")
    return f"{parts[1]} ({'/'.join(parts[2:])}, {parts[0][:12]})" if len(parts) > 2 else v


# --------------------------------------------------------------------------
# HTTP helpers


def get(url_port: int, path: str, headers: dict | None = None) -> tuple[int, bytes]:
    c = http.client.HTTPConnection("127.0.0.1", url_port, timeout=10)
    try:
        c.request("GET", path, headers=headers or {})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


# --------------------------------------------------------------------------
# the bench


class Failed(Exception):
    """A row does not do what it claims: not timed, reported."""


@dataclass
class Ctx:
    args: argparse.Namespace
    workdir: Path
    keysvc: harness.StandIn
    echo: harness.StandIn
    lua: Path
    one_key: Path
    warm_keys: Path
    measure_keys: Path
    lat_keys: Path
    cold_keys: list[str]
    runs: int = 0
    quiet_left: float = 0.0
    quiet_waited: float = 0.0
    redis: harness.Redis | None = None
    rls: harness.StandIn | None = None

    def helper_ticks(self) -> int:
        """CPU of the stand-ins (and Redis), in clock ticks."""
        parts = [self.keysvc, self.echo, self.rls, self.redis]
        return sum(proc_cpu_ticks(p.proc.p.pid) for p in parts if p is not None)


def make_keys(workdir: Path, args) -> tuple[dict, Path, Path, Path, Path, list[str]]:
    """The stand-in's keys: the hot key, one key per cache-miss request
    (warmup and measured sets), and fresh keys for the cold bursts."""
    def entry(key: str, i: str) -> dict:
        return {"key": key, "user_id": f"u_bench_{i}", "key_id": f"k_bench_{i}",
                "service_id": "platform", "scopes": ["mlflow:read", "mlflow:write"],
                "rate_limit_per_hour": 1_000_000_000}

    margin = 4 * args.concurrency + 16  # wrk may send a few past its limit
    warm = [f"hk_test_bench_warm_{i:018d}" for i in range(args.warmup + margin)]
    measure = [f"hk_test_bench_miss_{i:018d}" for i in range(args.requests + margin)]
    lat = [f"hk_test_bench_lat1_{i:018d}" for i in range(args.latency_requests + margin)]
    cold = [f"hk_test_bench_cold_{i:018d}" for i in range(4 * args.rounds + 8)]
    entries = [entry(BENCH_KEY, "hot")]
    entries += [entry(k, f"w{i}") for i, k in enumerate(warm)]
    entries += [entry(k, f"m{i}") for i, k in enumerate(measure)]
    entries += [entry(k, f"l{i}") for i, k in enumerate(lat)]
    entries += [entry(k, f"c{i}") for i, k in enumerate(cold)]
    keys = {"keys": harness.DEV_KEYS["keys"] + entries}
    one = workdir / "keys-one.txt"
    one.write_text(BENCH_KEY + "\n")
    warm_p = workdir / "keys-warm.txt"
    warm_p.write_text("\n".join(warm) + "\n")
    measure_p = workdir / "keys-measure.txt"
    measure_p.write_text("\n".join(measure) + "\n")
    lat_p = workdir / "keys-latency.txt"
    lat_p.write_text("\n".join(lat) + "\n")
    return keys, one, warm_p, measure_p, lat_p, cold


def wrk(ctx: Ctx, port: int, keys: Path, limit: int, connections: int | None = None) -> dict:
    a = ctx.args
    env = {**os.environ, "BENCH_KEYS": str(keys), "BENCH_LIMIT": str(limit), "BENCH_PATH": REQ_PATH}
    conns = connections or a.concurrency
    threads = min(a.threads, conns)
    cmd = ["wrk", "-t", str(threads), "-c", str(conns), "-d", f"{a.max_seconds}s",
           "--timeout", "5s", "-s", str(ctx.lua), f"http://127.0.0.1:{port}"]
    # With several threads each stops after `limit` responses of its own.
    if threads > 1:
        env["BENCH_LIMIT"] = str(max(1, limit // a.threads))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=a.max_seconds + 60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    for line in p.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            r = json.loads(line.split(" ", 1)[1])
            r["wrk_cpu_s"] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
            if r["requests"] < limit:
                raise Failed(f"wrk completed {r['requests']} of {limit} requests within "
                             f"{a.max_seconds}s:\n{p.stdout[-1500:]}")
            return r
    raise Failed(f"wrk gave no result (rc {p.returncode}):\n{p.stdout[-1500:]}\n{p.stderr[-1500:]}")


def start_envoy(ctx: Ctx, row: Row, name: str, concurrency: int = 1) -> harness.Envoy:
    template = render_template(row.filter, ctx.workdir)
    extra = {"BENCH_KEY": BENCH_KEY}
    if row.wasm is not None:
        extra["WASM"] = str(row.wasm)
    return harness.Envoy(
        ctx.workdir, upstream_port=ctx.echo.port, auth_port=ctx.keysvc.port,
        config=row.config or hokusai_config(False), concurrency=concurrency,
        log_level="warning", template=template, extra_vars=extra, name=name,
        ratelimit_port=ctx.rls.port if ctx.rls else None, filter="native" if row.native else "wasm",
        native=row.so or harness.NATIVE,
    )


def verify(ctx: Ctx, row: Row, envoy: harness.Envoy):
    """The row does what it claims: a good key passes, with the identity
    upstream where the row promises it; a wrong or missing key is refused
    by the auth rows and passes the others."""
    ctx.echo.clear()
    status, body = get(envoy.port, REQ_PATH, bearer(BENCH_KEY))
    if status != 200:
        raise Failed(f"good key: {status} {body[:300]!r}")
    seen = ctx.echo.requests()
    if not seen:
        raise Failed("good key: nothing reached the upstream")
    up = {k.lower(): v for k, v in seen[-1]["headers"]}
    if row.identity and up.get("x-hokusai-user-id") != "u_bench_hot":
        raise Failed(f"good key: upstream got no identity header: {sorted(up)}")
    if row.hides_key and "authorization" in up:
        raise Failed("good key: the key reached the upstream")
    for what, headers in (("wrong key", bearer(WRONG_KEY)), ("no key", {})):
        ctx.echo.clear()
        status, body = get(envoy.port, REQ_PATH, headers)
        if row.auth:
            if status not in (401, 403):
                raise Failed(f"{what}: {status} (want 401/403) {body[:300]!r}")
            if ctx.echo.requests():
                raise Failed(f"{what}: refused but reached the upstream")
        elif status != 200:
            raise Failed(f"{what}: {status} on a row without auth")


def wait_quiet(ctx: Ctx):
    """Waits (within --quiet-wait seconds for the whole run) while other
    work keeps the machine busy: the rows should not be timed against a
    neighbour's load test."""
    def busy_pct(seconds: float) -> float:
        b0 = machine_busy()
        time.sleep(seconds)
        b1 = machine_busy()
        return 100 * (b1[0] - b0[0]) / max(1, b1[1] - b0[1])

    pct = busy_pct(0.3)
    while pct > ctx.args.quiet_threshold and ctx.quiet_left > 0:
        t = time.monotonic()
        pct = busy_pct(2.0)
        ctx.quiet_left -= time.monotonic() - t
        ctx.quiet_waited += time.monotonic() - t


def run_row(ctx: Ctx, row: Row, rnd: int) -> dict:
    a = ctx.args
    ctx.runs += 1
    wait_quiet(ctx)
    ctx.keysvc.mode("normal", row.delay_ms)
    envoy = start_envoy(ctx, row, f"envoy-{row.name}-r{rnd}")
    try:
        pid = envoy.proc.p.pid
        verify(ctx, row, envoy)
        keys_w, keys_m = ((ctx.warm_keys, ctx.measure_keys) if row.distinct_keys
                          else (ctx.one_key, ctx.one_key))
        wrk(ctx, envoy.port, keys_w, a.warmup)
        ctx.keysvc.reset()
        ctx.echo.clear()
        s0 = envoy.stats("wasmcustom.hokusai_auth")
        t0, n0 = proc_cpu_ticks(pid), proc_sched_ns(pid)
        k0 = ctx.helper_ticks()
        m0 = machine_busy()
        w0 = time.monotonic()
        r = wrk(ctx, envoy.port, keys_m, a.requests)
        wall = time.monotonic() - w0
        t1, n1 = proc_cpu_ticks(pid), proc_sched_ns(pid)
        k1 = ctx.helper_ticks()
        m1 = machine_busy()
        st = ctx.keysvc.stats()
        s1 = envoy.stats("wasmcustom.hokusai_auth")
        if not envoy.alive():
            raise Failed("Envoy exited during the run")
        # Latency without queueing: one connection, so each request meets
        # an idle Envoy; what the filter adds to a request's time.
        lat = None
        if a.latency_requests > 0:
            lat_n = max(200, a.latency_requests // (5 if row.delay_ms else 1))
            lat_keys = ctx.lat_keys if row.distinct_keys else ctx.one_key
            lat = wrk(ctx, envoy.port, lat_keys, lat_n, connections=1)
            if lat["status_errors"] + lat["connect_errors"] + lat["read_errors"] + lat["timeouts"]:
                raise Failed(f"failed requests in the 1-connection run: {lat}")
        hwm_kb = proc_status_kb(pid, "VmHWM")
    finally:
        envoy.stop()
        ctx.keysvc.mode("normal", 0)

    n = r["requests"]
    bad = r["status_errors"] + r["connect_errors"] + r["read_errors"] + r["write_errors"] + r["timeouts"]
    if bad:
        raise Failed(f"{bad} failed requests of {n}: {r}")
    callouts = (st["validate_calls"] + st["ext_authz_calls"]) / n
    if abs(callouts - row.callouts) > 0.02:
        raise Failed(f"{callouts:.4f} callouts per request, want {row.callouts}")
    delta = {k.split("wasmcustom.hokusai_auth.", 1)[-1]: s1.get(k, 0) - s0.get(k, 0)
             for k in s1 if s1.get(k, 0) != s0.get(k, 0)}
    if row.filter == "hokusai" and row.auth:
        want = "cache.hit" if not row.distinct_keys else "cache.miss"
        if delta.get(want, 0) < n:
            raise Failed(f"filter counted {delta.get(want, 0)} {want} for {n} requests: {delta}")
    busy = (m1[0] - m0[0]) / max(1, m1[1] - m0[1])
    return {
        "row": row.name, "round": rnd, "requests": n,
        "rps": n / (r["duration_us"] / 1e6),
        "p50_us": r["p50_us"], "p90_us": r["p90_us"], "p99_us": r["p99_us"],
        "p999_us": r["p999_us"], "max_us": r["max_us"], "mean_us": r["mean_us"],
        "cpu_us_per_req": (t1 - t0) / CLK_TCK * 1e6 / n,
        "cpu_sched_us_per_req": (n1 - n0) / 1e3 / n,
        "envoy_core_pct": 100 * (t1 - t0) / CLK_TCK / wall,
        "standins_core_pct": 100 * (k1 - k0) / CLK_TCK / wall,
        "wrk_core_pct": 100 * r["wrk_cpu_s"] / wall,
        "machine_busy_pct": 100 * busy,
        # CPU used by anything but this Envoy, the stand-ins and wrk (other
        # work on a shared machine), in % of one core: a noisy-run warning.
        "other_core_pct": max(0.0, 100 * busy * (os.cpu_count() or 1)
                              - 100 * (t1 - t0) / CLK_TCK / wall
                              - 100 * (k1 - k0) / CLK_TCK / wall - 100 * r["wrk_cpu_s"] / wall),
        "callouts_per_req": callouts,
        "validate_calls": st["validate_calls"], "ext_authz_calls": st["ext_authz_calls"],
        "filter_counters": delta,
        "vmhwm_kb": hwm_kb,
        "c1_p50_us": lat["p50_us"] if lat else None,
        "c1_p99_us": lat["p99_us"] if lat else None,
        "c1_requests": lat["requests"] if lat else None,
    }


def cold_burst(ctx: Ctx, rnd: int, delay_ms: int, native: bool = False) -> dict:
    """N concurrent requests with one never-seen key at a fresh Envoy with
    two workers: how many callouts reach the stand-in."""
    a = ctx.args
    wait_quiet(ctx)
    key = ctx.cold_keys.pop()
    build = "native" if native else "wasm"
    row = Row("cold", "cold burst", "hokusai", wasm=None if native else harness.WASM,
              config=hokusai_config(False), native=native)
    ctx.keysvc.mode("normal", delay_ms)
    envoy = start_envoy(ctx, row, f"envoy-cold-{build}-{delay_ms}ms-r{rnd}", concurrency=a.burst_workers)
    socks: list[socket.socket] = []
    try:
        for _ in range(a.burst):
            s = socket.create_connection(("127.0.0.1", envoy.port), timeout=10)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            socks.append(s)
        time.sleep(0.5)  # let the workers accept every connection
        ctx.keysvc.reset()
        req = (f"GET {REQ_PATH} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {key}\r\n"
               "Connection: close\r\n\r\n").encode()
        for s in socks:  # all at once: a few KiB, never blocks
            s.sendall(req)
        pending = {s: b"" for s in socks}
        done: dict[socket.socket, bytes] = {}
        deadline = time.monotonic() + 20
        while pending and time.monotonic() < deadline:
            ready, _, _ = select.select(list(pending), [], [], 0.5)
            for s in ready:
                chunk = s.recv(65536)
                if chunk:
                    pending[s] += chunk
                else:
                    done[s] = pending.pop(s)
        statuses: dict[str, int] = {}
        for data in list(done.values()) + list(pending.values()):
            line = data.split(b"\r\n", 1)[0].decode(errors="replace")
            code = line.split(" ")[1] if line.startswith("HTTP/") and " " in line else "none"
            statuses[code] = statuses.get(code, 0) + 1
        calls = ctx.keysvc.calls()
        workers = {k: v for k, v in envoy.stats("downstream_cx_total").items()
                   if ".worker_" in k and k.startswith("listener.") and v > 0}
        counters = envoy.stats("wasmcustom.hokusai_auth")
    finally:
        for s in socks:
            s.close()
        envoy.stop()
        ctx.keysvc.mode("normal", 0)
    if statuses.get("200", 0) != a.burst:
        raise Failed(f"cold burst: statuses {statuses}")
    return {"round": rnd, "delay_ms": delay_ms, "build": build, "requests": a.burst, "callouts": calls,
            "workers": a.burst_workers, "workers_with_connections": len(workers),
            "connections_per_worker": sorted(workers.values()),
            "single_flight_waits": counters.get("wasmcustom.hokusai_auth.single_flight.wait", 0),
            "cache_hits": counters.get("wasmcustom.hokusai_auth.cache.hit", 0),
            "statuses": statuses}


STEADY_DELAY_MS = 5  # the stand-in's answer time for the steady stream
STEADY_EVERY_S = 0.02  # one request every 20 ms: 50 req/s of one key, so that one wait per TTL is 2%


def steady_stream(ctx: Ctx, rnd: int, native: bool, refresh: bool) -> dict:
    """One key's paced stream (one connection) across several expiries of
    a 1 s TTL, the stand-in at 5 ms: with refresh-ahead no request should
    wait for a callout after the first; without, one per TTL does."""
    a = ctx.args
    wait_quiet(ctx)
    build = "native" if native else "wasm"
    cfg = hokusai_config(False)
    cfg["cache"] = {**cfg.get("cache", {}), "ttl_seconds": 1, "refresh_ahead_percent": 50 if refresh else 0}
    row = Row("steady", "steady stream", "hokusai", wasm=None if native else harness.WASM, config=cfg, native=native)
    ctx.keysvc.mode("normal", STEADY_DELAY_MS)
    envoy = start_envoy(ctx, row, f"envoy-steady-{build}-{int(refresh)}-r{rnd}")
    lat: list[float] = []
    try:
        conn = http.client.HTTPConnection("127.0.0.1", envoy.port, timeout=10)
        conn.request("GET", REQ_PATH, headers=bearer(BENCH_KEY))
        conn.getresponse().read()  # the first miss is not part of the stream
        end = time.monotonic() + a.steady_seconds
        while time.monotonic() < end:
            t = time.perf_counter()
            conn.request("GET", REQ_PATH, headers=bearer(BENCH_KEY))
            r = conn.getresponse()
            r.read()
            lat.append((time.perf_counter() - t) * 1e6)
            if r.status != 200:
                raise Failed(f"steady stream: {r.status}")
            time.sleep(STEADY_EVERY_S)
        conn.close()
        counters = envoy.stats("wasmcustom.hokusai_auth.cache")
    finally:
        envoy.stop()
        ctx.keysvc.mode("normal", 0)
    lat.sort()
    pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]  # noqa: E731
    return {"round": rnd, "build": build, "refresh": refresh, "requests": len(lat),
            "p50_us": pct(0.5), "p99_us": pct(0.99), "max_us": lat[-1],
            # A request that missed the cache waited for a callout (the
            # filter's own count; the first request is not part of the stream).
            "waited": counters.get("wasmcustom.hokusai_auth.cache.miss", 0) - 1,
            "slow": sum(1 for x in lat if x >= STEADY_DELAY_MS * 1000),
            "refreshes": counters.get("wasmcustom.hokusai_auth.cache.refresh", 0)}


# --------------------------------------------------------------------------
# profile (outside the timed rounds)


def perf_works() -> bool:
    if not shutil.which("perf"):
        return False
    try:
        p = subprocess.run(["perf", "record", "-e", "cpu-clock", "-o", "/dev/null", "--", "true"],
                           capture_output=True, timeout=30)
        return p.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def profile_row(ctx: Ctx, row: Row) -> dict:
    """perf stat (syscalls, context switches) and perf record (where the
    cycles go, by DSO) on Envoy while wrk runs the row."""
    a = ctx.args
    wait_quiet(ctx)
    envoy = start_envoy(ctx, row, f"envoy-perf-{row.name}")
    out = {}
    try:
        pid = envoy.proc.p.pid
        verify(ctx, row, envoy)
        keys = ctx.measure_keys if row.distinct_keys else ctx.one_key
        wrk(ctx, envoy.port, ctx.warm_keys if row.distinct_keys else ctx.one_key, a.warmup)
        data = ctx.workdir / f"perf-{row.name}.data"
        stat_out = ctx.workdir / f"perf-stat-{row.name}.txt"
        rec = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F", "2999", "-p", str(pid),
                                "-o", str(data)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
        stat = subprocess.Popen(["perf", "stat", "-x", ",", "-o", str(stat_out), "-e",
                                 "task-clock,context-switches,raw_syscalls:sys_enter", "-p", str(pid)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(0.3)
        try:
            r = wrk(ctx, envoy.port, keys, a.requests)
        finally:
            for p in (stat, rec):
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGINT)
            for p in (stat, rec):
                try:
                    p.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait(timeout=10)
    finally:
        envoy.stop()
    n = r["requests"]
    for line in stat_out.read_text().splitlines():
        parts = line.split(",")
        if len(parts) > 2 and parts[0].replace(".", "", 1).isdigit():
            out[parts[2]] = float(parts[0]) / n
    rep = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "--no-children",
                          "--sort", "dso", "--percent-limit", "0.5"],
                         capture_output=True, text=True, timeout=300)
    dsos = []
    for line in rep.stdout.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "%" in line:
            pct, _, dso = line.partition("%")
            try:
                dsos.append((float(pct), dso.strip()))
            except ValueError:
                pass
    syms = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "--no-children",
                           "--sort", "dso,sym", "--percent-limit", "1.5"],
                          capture_output=True, text=True, timeout=300)
    top = [ln.rstrip() for ln in syms.stdout.splitlines() if ln.strip() and not ln.startswith("#")][:20]
    return {"row": row.name, "requests": n, "per_request": out, "dso": dsos, "top": top}


# --------------------------------------------------------------------------
# report


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, spec=".1f", dash="–"):
    return dash if v is None else format(v, spec)


def summarize(results: list[dict], all_rows: list[Row]) -> dict:
    by_round: dict[int, dict[str, dict]] = {}
    for r in results:
        by_round.setdefault(r["round"], {})[r["row"]] = r
    summary = {}
    for row in all_rows:
        mine = [rr[row.name] for rr in by_round.values() if row.name in rr]
        if not mine:
            continue
        s = {k: med([m[k] for m in mine]) for k in
             ("rps", "p50_us", "p99_us", "cpu_us_per_req", "cpu_sched_us_per_req", "envoy_core_pct",
              "standins_core_pct", "wrk_core_pct", "machine_busy_pct", "other_core_pct",
              "callouts_per_req", "vmhwm_kb",
              "c1_p50_us", "c1_p99_us")}
        s["rounds"] = len(mine)
        for base in ("none", "noop", "api_key_auth", "hit", "native_hit"):
            rps_x, cpu_x, cpu_d, p99_d, c1_d = [], [], [], [], []
            for rr in by_round.values():
                if row.name in rr and base in rr:
                    me, b = rr[row.name], rr[base]
                    rps_x.append(me["rps"] / b["rps"])
                    cpu_x.append(me["cpu_us_per_req"] / b["cpu_us_per_req"])
                    cpu_d.append(me["cpu_us_per_req"] - b["cpu_us_per_req"])
                    p99_d.append(me["p99_us"] - b["p99_us"])
                    if me["c1_p99_us"] is not None and b["c1_p99_us"] is not None:
                        c1_d.append(me["c1_p99_us"] - b["c1_p99_us"])
            s[f"rps_x_{base}"] = med(rps_x)
            s[f"cpu_x_{base}"] = med(cpu_x)
            s[f"cpu_d_{base}"] = med(cpu_d)
            s[f"p99_d_{base}"] = med(p99_d)
            s[f"c1_p99_d_{base}"] = med(c1_d)
        base_name = row.name.split("@", 1)[0]
        if base_name != row.name:
            pairs = [(rr[row.name], rr[base_name]) for rr in by_round.values() if row.name in rr and base_name in rr]
            s["cpu_d_base"] = med([me["cpu_us_per_req"] - b["cpu_us_per_req"] for me, b in pairs])
            s["cpu_x_base"] = med([me["cpu_us_per_req"] / b["cpu_us_per_req"] for me, b in pairs])
        for peer in ("ext_authz", "ext_authz_5ms"):
            xs = [rr[row.name]["rps"] / rr[peer]["rps"] for rr in by_round.values()
                  if row.name in rr and peer in rr]
            s[f"rps_x_{peer}"] = med(xs)
        summary[row.name] = s
    return summary


def wasm_sizes() -> dict[str, int]:
    return {"noop": NOOP_WASM.stat().st_size, "hokusai": harness.WASM.stat().st_size}


def table(summary: dict, all_rows: list[Row], bursts: list[dict], sizes: dict, a) -> str:
    head = ("| row | req/s | p50 µs | p99 µs | Δp99 vs none µs | 1 conn: p50 / p99 µs | "
            "1 conn: Δp99 vs none µs | Envoy CPU µs/req | "
            "Δ CPU vs none / no-op / api_key µs | CPU × none / no-op / api_key | "
            "req/s × none / no-op / api_key | Envoy core % | callouts/req | Envoy VmHWM MiB | .wasm |")
    ncols = head.count("|") - 1
    lines = [head, "|" + "---|" * ncols]
    for row in all_rows:
        s = summary.get(row.name)
        if s is None:
            lines.append(f"| {row.label} | failed: see below |" + " |" * (ncols - 2))
            continue
        trio = lambda p, spec: " / ".join(fmt(s[f"{p}_{b}"], spec) for b in ("none", "noop", "api_key_auth"))  # noqa: E731
        wasm = ""
        built = (row.so or harness.NATIVE) if row.native else row.wasm
        if built is not None:
            size = built.stat().st_size
            wasm = f"{size:,} B ({size / 1024:.1f} KiB){' .so' if row.native else ''}"
        lines.append(
            f"| {row.label} | {fmt(s['rps'], ',.0f')} | {fmt(s['p50_us'], '.0f')} | {fmt(s['p99_us'], '.0f')} "
            f"| {fmt(s['p99_d_none'], '+.0f')} | {fmt(s['c1_p50_us'], '.0f')} / {fmt(s['c1_p99_us'], '.0f')} "
            f"| {fmt(s['c1_p99_d_none'], '+.0f')} | {fmt(s['cpu_us_per_req'], '.1f')} | {trio('cpu_d', '+.1f')} "
            f"| {trio('cpu_x', '.2f')} | {trio('rps_x', '.2f')} | {fmt(s['envoy_core_pct'], '.0f')} "
            f"| {fmt(s['callouts_per_req'], '.3f')} | {fmt(s['vmhwm_kb'] / 1024 if s['vmhwm_kb'] else None, '.1f')} "
            f"| {wasm} |")
    variants = [r for r in all_rows if "@" in r.name and r.name in summary]
    if variants:
        lines += ["", "| variant row | Envoy CPU µs/req | vs the same row of this build: Δ CPU µs | CPU × |",
                  "|---|---|---|---|"]
        for row in variants:
            s = summary[row.name]
            lines.append(f"| {row.label} | {fmt(s['cpu_us_per_req'])} | {fmt(s.get('cpu_d_base'), '+.1f')} "
                         f"| {fmt(s.get('cpu_x_base'), '.3f')} |")
        lines.append("")
    for build, delay in sorted({(b["build"], b["delay_ms"]) for b in bursts}):
        bs = [b for b in bursts if b["delay_ms"] == delay and b["build"] == build]
        calls = [b["callouts"] for b in bs]
        label = (f"cold burst ({build}): {a.burst} concurrent requests, one new key, {a.burst_workers} workers, "
                 f"stand-in {'instant' if not delay else f'{delay} ms'}")
        per = ", ".join(str(c) for c in calls)
        lines.append(f"| {label} | | | | | | | | | | | | {max(calls)} callouts max (rounds: {per}; "
                     f"single-flight waits {med([b['single_flight_waits'] for b in bs]):.0f}) | | |")
    return "\n".join(lines)


def targets(summary: dict, bursts: list[dict], sizes: dict, a) -> list[tuple[str, str, str]]:
    out = []

    def check(name, value, ok, shown):
        out.append((name, shown if value is not None else "not measured",
                    "–" if value is None else ("met" if ok else "**missed**")))

    hit = summary.get("hit", {})
    v = hit.get("cpu_d_noop")
    check("cache hit ≤ 6 µs Envoy CPU/request above the no-op wasm row", v, v is not None and v <= 6,
          f"{fmt(v, '+.1f')} µs")
    v = summary.get("hit_rl", {}).get("cpu_d_hit")
    check("rate limit on ≤ +3 µs Envoy CPU/request over the cache hit", v, v is not None and v <= 3,
          f"{fmt(v, '+.1f')} µs")
    native = summary.get("native_hit", {})
    # Beside each native target, what the floor rows reach in the same run:
    # no filter at all, and a dynamic module that does nothing.
    floor = summary.get("native_noop", {}).get("cpu_x_api_key_auth")
    v = native.get("cpu_x_api_key_auth")
    check("native cache hit ≤ 1.05× api_key_auth Envoy CPU/request", v, v is not None and v <= 1.05,
          f"{fmt(v, '.3f')}× (the no-op dynamic module: {fmt(floor, '.3f')}×)")
    v = native.get("rps_x_ext_authz")
    ceiling = summary.get("none", {}).get("rps_x_ext_authz")
    check("native cache hit ≥ 2× the ext_authz row's req/s (stand-in instant)", v, v is not None and v >= 2,
          f"{fmt(v, '.2f')}× (no filter at all: {fmt(ceiling, '.2f')}×)")
    v = summary.get("native_hit_rl", {}).get("cpu_d_native_hit")
    check("native: rate limit on ≤ +3 µs Envoy CPU/request over the native cache hit", v,
          v is not None and v <= 3, f"{fmt(v, '+.1f')} µs")
    v = hit.get("c1_p99_d_none")
    check("cache hit p99 ≤ 100 µs above no filter (1 connection: no queueing)", v,
          v is not None and v <= 100, f"{fmt(v, '+.0f')} µs")
    v = hit.get("p99_d_none")
    check(f"cache hit p99 ≤ 100 µs above no filter ({a.concurrency} connections: saturated, "
          "mostly queueing)", v, v is not None and v <= 100, f"{fmt(v, '+.0f')} µs")
    v = hit.get("rps_x_ext_authz")
    check("cache hit ≥ 2.5× the ext_authz row's req/s (stand-in instant)", v, v is not None and v >= 2.5,
          f"{fmt(v, '.2f')}×")
    v = hit.get("rps_x_ext_authz_5ms")
    check("cache hit ≥ 10× the ext_authz row's req/s (stand-in 5 ms)", v, v is not None and v >= 10,
          f"{fmt(v, '.2f')}×")
    v = max((b["callouts"] for b in bursts if b["build"] == "wasm"), default=None)
    check(f"cold burst ≤ 1 callout per worker ({a.burst_workers} workers)", v,
          v is not None and v <= a.burst_workers, f"{v} callouts (max over rounds and stand-in delays)")
    v = max((b["callouts"] for b in bursts if b["build"] == "native"), default=None)
    check(f"native cold burst: exactly 1 callout ({a.burst_workers} workers, one process-wide flight)", v,
          v == 1, f"{v} callouts (max over rounds and stand-in delays)")
    v = sizes["hokusai"]
    check(".wasm ≤ 400 KiB", v, v <= 400 * 1024, f"{v:,} B = {v / 1024:.1f} KiB")
    return out


def steady_table(steadies: list[dict], a) -> str:
    if not steadies:
        return ""
    lines = ["", "", f"Steady stream: one key, one request every {STEADY_EVERY_S * 1000:.0f} ms on one connection "
             f"for {a.steady_seconds:.0f} s, cache TTL 1 s, stand-in {STEADY_DELAY_MS} ms (medians over the rounds)",
             "", "| build | refresh-ahead | p50 µs | p99 µs | max µs | requests that waited for a callout "
             "(cache misses), per round | requests ≥ 5 ms | re-validations |", "|---|---|---|---|---|---|---|---|"]
    for build in ("wasm", "native"):
        for refresh in (False, True):
            ss = [s for s in steadies if s["build"] == build and s["refresh"] == refresh]
            if ss:
                lines.append(f"| {build} | {'on (50%)' if refresh else 'off'} | {med([s['p50_us'] for s in ss]):.0f} "
                             f"| {med([s['p99_us'] for s in ss]):.0f} | {med([s['max_us'] for s in ss]):.0f} "
                             f"| {', '.join(str(s['waited']) for s in ss)} of ~{ss[0]['requests']} "
                             f"| {', '.join(str(s['slow']) for s in ss)} | {med([s['refreshes'] for s in ss]):.0f} |")
    return "\n".join(lines)


def steady_targets(steadies: list[dict]) -> list[tuple[str, str, str]]:
    on = [s for s in steadies if s["refresh"]]
    if not on:
        return [("refresh-ahead: no request of a steady stream waits for a callout after the first",
                 "not measured", "–")]
    waited = max(s["waited"] for s in on)
    return [("refresh-ahead: no request of a steady stream waits for a callout after the first",
             f"{waited} waited (max over builds and rounds)", "met" if waited == 0 else "**missed**")]


def write_doc(text: str):
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text)


# --------------------------------------------------------------------------


def build(args):
    if args.no_build:
        return
    print("build: scripts/setup.sh --bench", flush=True)
    subprocess.run(["bash", str(ROOT / "scripts/setup.sh"), "--bench"], cwd=ROOT, check=True, timeout=1800)
    print("build: benches/noop-filter, benches/noop-module", flush=True)
    subprocess.run(["cargo", "build", "--release", "--target", "wasm32-wasip1", "--manifest-path",
                    str(NOOP_MANIFEST), "--target-dir", str(NOOP_TARGET_DIR)],
                   cwd=ROOT, check=True, timeout=900)
    subprocess.run(["cargo", "build", "--release", "--manifest-path", str(NOOP_MODULE_MANIFEST),
                    "--target-dir", str(NOOP_MODULE_TARGET_DIR)], cwd=ROOT, check=True, timeout=900)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=20000, help="timed requests per row and round")
    ap.add_argument("--concurrency", type=int, default=16, help="wrk connections")
    ap.add_argument("--threads", type=int, default=1, help="wrk threads")
    ap.add_argument("--warmup", type=int, default=2000, help="untimed requests before each timed run")
    ap.add_argument("--latency-requests", type=int, default=5000,
                    help="requests of the 1-connection latency run per row and round (a fifth for "
                         "the 5 ms rows; 0: skip)")
    ap.add_argument("--burst", type=int, default=64, help="requests in the cold burst")
    ap.add_argument("--steady-seconds", type=float, default=6.0,
                    help="length of the steady-stream run (TTL 1 s: as many expiries)")
    ap.add_argument("--burst-workers", type=int, default=2, help="Envoy --concurrency for the cold burst")
    ap.add_argument("--rows", default="", help="comma-separated row names (default: all)")
    ap.add_argument("--seed", type=int, default=None, help="row order shuffle seed")
    ap.add_argument("--max-seconds", type=int, default=120, help="bound on one wrk run")
    ap.add_argument("--budget-minutes", type=float, default=14.0,
                    help="no new round starts after this much time")
    ap.add_argument("--quiet-threshold", type=float, default=20.0,
                    help="before each row, wait while the machine is busier than this (%% of all cores)")
    ap.add_argument("--quiet-wait", type=float, default=120.0,
                    help="seconds the whole run may spend waiting for a quiet machine")
    ap.add_argument("--max-other-load", type=float, default=15.0,
                    help="a row timed while other work used more than this %% of a core is run again")
    ap.add_argument("--reruns", type=int, default=10, help="at most this many such re-runs in the whole run")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=PATH",
                    help="also time the cache-hit rows with this .wasm (rows hit@NAME, hit_rl@NAME) or "
                         f"native lib{harness.NATIVE_MODULE}.so (rows native_hit@NAME, native_hit_rl@NAME), "
                         "e.g. a baseline build from scripts/bench-compare.sh; repeatable")
    ap.add_argument("--no-build", action="store_true", help="use the built .wasm files as they are")
    ap.add_argument("--no-perf", action="store_true", help="skip the perf profile of the hit row")
    ap.add_argument("--no-streams", action="store_true",
                    help="skip the cold bursts and steady streams (a comparison of CPU per request)")
    ap.add_argument("--no-doc", action="store_true", help=f"do not write {DOC.relative_to(ROOT)}")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (configs, logs)")
    args = ap.parse_args()
    started = time.monotonic()
    # A SIGTERM still stops every process this run started (finally blocks).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    try:
        build(args)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
        print(f"build failed ({e}); fix it, or run with --no-build to time what is built", file=sys.stderr)
        return 2
    if not shutil.which("wrk"):
        print("wrk is missing: run scripts/setup.sh --bench (it installs Debian's wrk)", file=sys.stderr)
        return 2
    for p in (harness.WASM, NOOP_WASM, NOOP_MODULE, harness.NATIVE, harness.STANDIN):
        if not p.exists():
            print(f"{p} is missing: run without --no-build", file=sys.stderr)
            return 2

    variants = []
    for v in args.variant:
        name, sep, path = v.partition("=")
        if not sep or not name or not Path(path).is_file():
            print(f"--variant {v!r}: want NAME=PATH of a built .wasm or .so", file=sys.stderr)
            return 2
        if Path(path).suffix == ".so" and Path(path).name != harness.NATIVE.name:
            print(f"--variant {v!r}: Envoy finds the module by its file name, {harness.NATIVE.name}",
                  file=sys.stderr)
            return 2
        variants.append((name, Path(path).resolve()))
    all_rows = rows(variants)
    if args.rows:
        wanted = set(args.rows.split(","))
        unknown = wanted - {r.name for r in all_rows}
        if unknown:
            print(f"unknown rows: {sorted(unknown)}; rows: {[r.name for r in all_rows]}", file=sys.stderr)
            return 2
        all_rows = [r for r in all_rows if r.name in wanted]
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 30)
    rng = random.Random(seed)

    workdir = harness.workdir("hokusai-bench-")
    lua = workdir / "bench.lua"
    lua.write_text(WRK_LUA)
    keys, one, warm, measure, lat, cold = make_keys(workdir, args)
    print(f"work directory {workdir}; {len(keys['keys']):,} keys in the stand-in; seed {seed}", flush=True)
    keysvc = echo = ctx = None
    results: list[dict] = []
    failures: list[str] = []
    bursts: list[dict] = []
    steadies: list[dict] = []
    profiles: list[dict] = []
    try:
        keysvc = harness.StandIn("keys", workdir, keys=keys, name="bench-keys")
        echo = harness.StandIn("echo", workdir, name="bench-echo")
        ctx = Ctx(args, workdir, keysvc, echo, lua, one, warm, measure, lat, cold,
                  quiet_left=args.quiet_wait)
        if any(r.global_limit for r in all_rows):
            ctx.redis = harness.Redis(workdir, name="bench-redis")
            ctx.rls = harness.StandIn("ratelimit", workdir, redis_url=ctx.redis.url, name="bench-ratelimit")
        reruns_left = args.reruns
        for rnd in range(1, args.rounds + 1):
            if time.monotonic() - started > args.budget_minutes * 60:
                failures.append(f"round {rnd} and later skipped: over the {args.budget_minutes} min budget")
                break
            order = list(all_rows)
            rng.shuffle(order)
            print(f"round {rnd}: {' '.join(r.name for r in order)}", flush=True)
            for row in order:
                try:
                    r = run_row(ctx, row, rnd)
                    # Timed against a neighbour's load: run it again (bounded).
                    while r["other_core_pct"] > args.max_other_load and reruns_left > 0:
                        reruns_left -= 1
                        print(f"  {row.name:14s} other load {r['other_core_pct']:.0f}% of a core: run again",
                              flush=True)
                        ctx.quiet_left = max(ctx.quiet_left, 10.0)
                        r = run_row(ctx, row, rnd)
                        r["reruns"] = r.get("reruns", 0) + 1
                except (Failed, RuntimeError, TimeoutError, OSError, subprocess.TimeoutExpired) as e:
                    failures.append(f"round {rnd}, {row.name}: {e}")
                    print(f"  {row.name:14s} FAILED: {e}", flush=True)
                    continue
                results.append(r)
                print(f"  {row.name:14s} {r['rps']:9,.0f} req/s  p50 {r['p50_us']:5d} µs  p99 {r['p99_us']:6d} µs  "
                      f"CPU {r['cpu_us_per_req']:6.1f} µs/req (sched {r['cpu_sched_us_per_req']:6.1f})  "
                      f"Envoy {r['envoy_core_pct']:3.0f}% core  other load {r['other_core_pct']:3.0f}%  "
                      f"callouts {r['callouts_per_req']:.3f}", flush=True)
            if not args.no_streams and (any(r.filter == "hokusai" for r in all_rows) or not args.rows):
                for delay, native in ((0, False), (5, False), (0, True), (5, True)):
                    try:
                        b = cold_burst(ctx, rnd, delay, native)
                        bursts.append(b)
                        print(f"  cold burst {b['build']} {delay} ms: {b['callouts']} callouts for {b['requests']} requests, "
                              f"connections per worker {b['connections_per_worker']}, "
                              f"single-flight waits {b['single_flight_waits']}", flush=True)
                    except (Failed, RuntimeError, TimeoutError, OSError) as e:
                        failures.append(f"round {rnd}, cold burst {delay} ms: {e}")
                        print(f"  cold burst FAILED: {e}", flush=True)
                for native, refresh in ((False, False), (False, True), (True, False), (True, True)):
                    try:
                        st = steady_stream(ctx, rnd, native, refresh)
                        steadies.append(st)
                        print(f"  steady {st['build']:6s} refresh {'on ' if refresh else 'off'}: p50 "
                              f"{st['p50_us']:6.0f} µs  p99 {st['p99_us']:6.0f} µs  max {st['max_us']:6.0f} µs  "
                              f"waited {st['waited']} of {st['requests']} (≥ 5 ms: {st['slow']})  "
                              f"refreshes {st['refreshes']}", flush=True)
                    except (Failed, RuntimeError, TimeoutError, OSError) as e:
                        failures.append(f"round {rnd}, steady stream: {e}")
                        print(f"  steady stream FAILED: {e}", flush=True)
        if not args.no_perf and perf_works() and time.monotonic() - started < args.budget_minutes * 60:
            for name in ("noop", "hit"):
                row = next((r for r in rows() if r.name == name), None)
                try:
                    profiles.append(profile_row(ctx, row))
                except (Failed, RuntimeError, TimeoutError, OSError, subprocess.TimeoutExpired) as e:
                    failures.append(f"perf profile of {name}: {e}")
    finally:
        for s in (keysvc, echo) + ((ctx.rls, ctx.redis) if ctx else ()):
            if s is not None:
                s.stop()

    summary = summarize(results, all_rows)
    sizes = wasm_sizes()
    md_table = table(summary, all_rows, bursts, sizes, args) + steady_table(steadies, args)
    tgt = targets(summary, bursts, sizes, args) + steady_targets(steadies)
    elapsed = time.monotonic() - started

    print()
    print(md_table)
    print()
    for name, value, verdict in tgt:
        print(f"- {name}: {value} — {verdict}")
    for f in failures:
        print(f"FAILED: {f}")

    if ctx_waited := (ctx.quiet_waited if ctx is not None else 0.0):
        print(f"waited {ctx_waited:.0f} s in all for other work on the machine to calm down")
    raw = {"args": vars(args), "seed": seed, "quiet_waited_s": ctx_waited, "results": results, "bursts": bursts,
           "steady": steadies,
           "profiles": profiles, "summary": summary, "failures": failures, "wasm_sizes": sizes}
    (workdir / "results.json").write_text(json.dumps(raw, indent=1))
    print(f"\nraw results: {workdir / 'results.json'}")

    if not args.no_doc:
        doc = render_doc(md_table, tgt, summary, results, bursts, profiles, failures, sizes, args, seed, elapsed,
                         ctx_waited)
        write_doc(doc)
        print(f"wrote {DOC.relative_to(ROOT)}")
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failures else 0


def render_doc(md_table, tgt, summary, results, bursts, profiles, failures, sizes, a, seed, elapsed,
               waited) -> str:
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    uname = platform.uname().release
    out = [
        "# Benchmarks: the Hokusai filter side by side with its peers",
        "",
        "Latest result of `.venv/bin/python benches/run.py"
        + ("" if (a.rounds, a.requests, a.concurrency) == (3, 20000, 16)
           else f" --rounds {a.rounds} --requests {a.requests} --concurrency {a.concurrency}")
        + "` (overwritten by every run; see `benches/README.md` for what each row measures).",
        "",
        f"- date: {now}",
        f"- kernel (`uname -r`): {uname}",
        f"- `nproc`: {os.cpu_count()}",
        f"- CPU: {cpu_model()}",
        f"- Envoy: {envoy_version()}, `--concurrency 1` for every row (2 for the cold burst)",
        f"- load: wrk, {a.concurrency} connections on {a.threads} thread(s), {a.requests:,} timed requests per row "
        f"and round after {a.warmup:,} untimed; {a.rounds} rounds, row order shuffled per round (seed {seed}); "
        f"a fresh Envoy for every row and round; medians over the rounds; run took {elapsed / 60:.1f} min"
        + (f" ({waited:.0f} s of it waiting for other work on the machine to calm down)" if waited >= 1 else "")
        + (f"; {sum(r.get('reruns', 0) for r in results)} row run(s) repeated because other work loaded the "
           f"machine (> {a.max_other_load:.0f}% of a core)" if any(r.get("reruns") for r in results) else ""),
        "- request: `GET " + REQ_PATH + "` with `Authorization: Bearer <key>`, upstream the echo stand-in",
        "- cache miss rows: every request carries a different key registered in the stand-in "
        "(a 200 that is then cached), so each one is a callout; not `negative_ttl_seconds: 0` with unknown keys",
        "- Envoy CPU µs/req: utime+stime of the Envoy process from `/proc/<pid>/stat` over the timed "
        "requests; ratios and differences are taken within each round, then the median",
        "",
        md_table,
        "",
    ]
    other = [r["other_core_pct"] for r in results]
    if other and statistics.median(other) > 10:
        out += [f"**Noisy run:** other work on the machine used a median {statistics.median(other):.0f}% "
                f"of a core (max {max(other):.0f}%) during the timed runs; see the per-round table.", ""]
    out += [
        "## Targets",
        "",
        "| target | measured | |",
        "|---|---|---|",
    ]
    out += [f"| {n} | {v} | {verdict} |" for n, v, verdict in tgt]
    out += ["", "## Per round", "",
            "| row | round | req/s | p50 µs | p99 µs | CPU µs/req (stat) | CPU µs/req (schedstat) | "
            "Envoy core % | stand-ins core % | wrk core % | machine busy % | other load, % of a core |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(results, key=lambda r: (r["row"], r["round"])):
        out.append(f"| {r['row']} | {r['round']} | {r['rps']:,.0f} | {r['p50_us']} | {r['p99_us']} | "
                   f"{r['cpu_us_per_req']:.1f} | {r['cpu_sched_us_per_req']:.1f} | {r['envoy_core_pct']:.0f} | "
                   f"{r['standins_core_pct']:.0f} | {r['wrk_core_pct']:.0f} | {r['machine_busy_pct']:.0f} | "
                   f"{r['other_core_pct']:.0f} |")
    if bursts:
        out += ["", "Cold bursts:", ""]
        for b in bursts:
            out.append(f"- round {b['round']}, stand-in {b['delay_ms']} ms: {b['callouts']} callouts for "
                       f"{b['requests']} requests; connections per worker {b['connections_per_worker']}; "
                       f"single-flight waits {b['single_flight_waits']}, cache hits {b['cache_hits']}; "
                       f"statuses {b['statuses']}")
    if profiles:
        out += ["", "## Profile (perf, outside the timed rounds)", ""]
        out += ["Envoy under `perf record -e cpu-clock` and `perf stat` (both slow it down a little), "
                f"{a.requests:,} requests at {a.concurrency} connections. `[JIT]` is V8's generated code: "
                "the filter's wasm and the wasm/host call wrappers; `envoy` includes the host side of "
                "every proxy-wasm call.", ""]
        for p in profiles:
            per = p["per_request"]
            task_us = per.get("task-clock", 0.0) * 1000  # perf reports task-clock in ms
            out.append(f"- `{p['row']}` row, per request: {task_us:.0f} µs on CPU, "
                       f"{per.get('raw_syscalls:sys_enter', 0):.2f} syscalls, "
                       f"{per.get('context-switches', 0):.2f} context switches")
            out.append("  - by DSO: " + "; ".join(f"{d} {pct:.1f}% ≈ {pct * task_us / 100:.0f} µs"
                                                 for pct, d in p["dso"][:6]))
    if failures:
        out += ["", "## Failures", ""] + [f"- {f}" for f in failures]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(main())
