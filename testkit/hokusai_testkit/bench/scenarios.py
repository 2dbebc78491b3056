"""The timed scenarios, each against a freshly started Envoy: a row under
wrk (throughput, CPU per request, latency), a cold burst (callouts for one
never-seen key) and a steady stream (refresh-ahead across TTLs)."""

from __future__ import annotations

import http.client
import os
import select
import socket
import time

from hokusai_testkit import harness
from hokusai_testkit.bench.context import Ctx
from hokusai_testkit.bench.gateway import bearer, check_row, start_envoy
from hokusai_testkit.bench.keys import BENCH_KEY
from hokusai_testkit.bench.procstat import CLK_TCK, machine_busy, proc_cpu_ticks, proc_sched_ns, proc_status_kb
from hokusai_testkit.bench.rows import REQ_PATH, Failed, Row, hokusai_config

FILTER_STATS = "wasmcustom.hokusai_auth"


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


def cpu_readings(ctx: Ctx, pid: int) -> dict:
    """Envoy's CPU (ticks and schedstat), the stand-ins' and the machine's, now."""
    return {"envoy": proc_cpu_ticks(pid), "sched": proc_sched_ns(pid), "helpers": ctx.helper_ticks(),
            "machine": machine_busy()}


def run_row(ctx: Ctx, row: Row, rnd: int) -> dict:
    a = ctx.args
    ctx.runs += 1
    wait_quiet(ctx)
    ctx.keysvc.mode("normal", row.delay_ms)
    envoy = start_envoy(ctx, row, f"envoy-{row.name}-r{rnd}")
    try:
        pid = envoy.proc.p.pid
        check_row(ctx, row, envoy)
        keys_w, keys_m = ((ctx.keys.warm, ctx.keys.measure) if row.distinct_keys
                          else (ctx.keys.one, ctx.keys.one))
        ctx.run_wrk(envoy.port, keys_w, a.warmup)
        ctx.keysvc.reset()
        ctx.echo.clear()
        s0 = envoy.stats(FILTER_STATS)
        c0 = cpu_readings(ctx, pid)
        w0 = time.monotonic()
        r = ctx.run_wrk(envoy.port, keys_m, a.requests)
        wall = time.monotonic() - w0
        c1 = cpu_readings(ctx, pid)
        st = ctx.keysvc.stats()
        s1 = envoy.stats(FILTER_STATS)
        if not envoy.alive():
            raise Failed("Envoy exited during the run")
        lat = latency_run(ctx, row, envoy)
        hwm_kb = proc_status_kb(pid, "VmHWM")
    finally:
        envoy.stop()
        ctx.keysvc.mode("normal", 0)
    delta = {k.split(FILTER_STATS + ".", 1)[-1]: s1.get(k, 0) - s0.get(k, 0)
             for k in s1 if s1.get(k, 0) != s0.get(k, 0)}
    callouts = checked_callouts(row, r, st, delta)
    return {"row": row.name, "round": rnd, "requests": r["requests"], **wrk_figures(r),
            **cpu_figures(r, c0, c1, wall),
            "callouts_per_req": callouts,
            "validate_calls": st["validate_calls"], "ext_authz_calls": st["ext_authz_calls"],
            "filter_counters": delta,
            "vmhwm_kb": hwm_kb,
            "c1_p50_us": lat["p50_us"] if lat else None,
            "c1_p99_us": lat["p99_us"] if lat else None,
            "c1_requests": lat["requests"] if lat else None}


def latency_run(ctx: Ctx, row: Row, envoy: harness.Envoy) -> dict | None:
    """Latency without queueing: one connection, so each request meets an
    idle Envoy; what the filter adds to a request's time."""
    a = ctx.args
    if a.latency_requests <= 0:
        return None
    lat_n = max(200, a.latency_requests // (5 if row.delay_ms else 1))
    lat_keys = ctx.keys.latency if row.distinct_keys else ctx.keys.one
    lat = ctx.run_wrk(envoy.port, lat_keys, lat_n, connections=1)
    if lat["status_errors"] + lat["connect_errors"] + lat["read_errors"] + lat["timeouts"]:
        raise Failed(f"failed requests in the 1-connection run: {lat}")
    return lat


def checked_callouts(row: Row, r: dict, st: dict, delta: dict) -> float:
    """Every request answered, the callouts per request the row promises and
    the filter's own count of hits or misses: the callouts per request."""
    n = r["requests"]
    bad = r["status_errors"] + r["connect_errors"] + r["read_errors"] + r["write_errors"] + r["timeouts"]
    if bad:
        raise Failed(f"{bad} failed requests of {n}: {r}")
    callouts = (st["validate_calls"] + st["ext_authz_calls"]) / n
    if abs(callouts - row.callouts) > 0.02:
        raise Failed(f"{callouts:.4f} callouts per request, want {row.callouts}")
    if row.filter == "hokusai" and row.auth:
        want = "cache.hit" if not row.distinct_keys else "cache.miss"
        if delta.get(want, 0) < n:
            raise Failed(f"filter counted {delta.get(want, 0)} {want} for {n} requests: {delta}")
    return callouts


def wrk_figures(r: dict) -> dict:
    return {"rps": r["requests"] / (r["duration_us"] / 1e6),
            "p50_us": r["p50_us"], "p90_us": r["p90_us"], "p99_us": r["p99_us"],
            "p999_us": r["p999_us"], "max_us": r["max_us"], "mean_us": r["mean_us"]}


def cpu_figures(r: dict, c0: dict, c1: dict, wall: float) -> dict:
    """CPU per request and each party's share of the wall time."""
    n = r["requests"]
    envoy_ticks, helper_ticks = c1["envoy"] - c0["envoy"], c1["helpers"] - c0["helpers"]
    (b0, t0), (b1, t1) = c0["machine"], c1["machine"]
    busy = (b1 - b0) / max(1, t1 - t0)
    return {
        "cpu_us_per_req": envoy_ticks / CLK_TCK * 1e6 / n,
        "cpu_sched_us_per_req": (c1["sched"] - c0["sched"]) / 1e3 / n,
        "envoy_core_pct": 100 * envoy_ticks / CLK_TCK / wall,
        "standins_core_pct": 100 * helper_ticks / CLK_TCK / wall,
        "wrk_core_pct": 100 * r["wrk_cpu_s"] / wall,
        "machine_busy_pct": 100 * busy,
        # CPU used by anything but this Envoy, the stand-ins and wrk (other
        # work on a shared machine), in % of one core: a noisy-run warning.
        "other_core_pct": max(0.0, 100 * busy * (os.cpu_count() or 1)
                              - 100 * envoy_ticks / CLK_TCK / wall
                              - 100 * helper_ticks / CLK_TCK / wall - 100 * r["wrk_cpu_s"] / wall),
    }


def cold_burst(ctx: Ctx, rnd: int, delay_ms: int, native: bool = False) -> dict:
    """N concurrent requests with one never-seen key at a fresh Envoy with
    two workers: how many callouts reach the stand-in."""
    a = ctx.args
    wait_quiet(ctx)
    key = ctx.keys.cold.pop()
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
        statuses = burst_statuses(socks, key)
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


def burst_statuses(socks: list[socket.socket], key: str) -> dict[str, int]:
    """One request with `key` on every connection at once: how many answers
    of each status (none: no answer within 20 s)."""
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
    return statuses


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
