#!/usr/bin/env python3
"""Envoy instructions per request, counted by callgrind: a deterministic
companion to run.py's CPU times, which move by 10 % between runs on a shared
machine. Each row runs in its own Envoy (one worker) under valgrind; after a
warm-up the counters are zeroed, N requests go through one keep-alive
connection, and the worker thread's instructions are divided by N.

    .venv/bin/python benches/callgrind.py none api_key_auth native_noop native_hit hit
    .venv/bin/python benches/callgrind.py native_hit old=target/compare/abc1234/libhokusai_mlflow_auth_native.so

A row is a run.py row name, or NAME=PATH of another build (.wasm, or a
native lib<name>.so), timed as the cache-hit row. Instructions are not time
(cache misses, branch mispredictions and V8's code are weighed differently),
but a change that removes instructions shows it here to the hundred.
"""
from __future__ import annotations

import argparse
import glob
import http.client
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from hokusai_testkit import harness
from hokusai_testkit.bench.gateway import bearer, envoy_options
from hokusai_testkit.bench.keys import BENCH_KEY
from hokusai_testkit.bench.rows import REQ_PATH, Row, base_rows, hokusai_config

KEY_ENTRY = {"key": BENCH_KEY, "user_id": "u_bench_hot", "key_id": "k_bench_hot", "service_id": "platform",
             "scopes": ["mlflow:read", "mlflow:write"], "rate_limit_per_hour": 1_000_000_000}


def row_for(spec: str, rate_limit: bool) -> Row:
    name, sep, path = spec.partition("=")
    if not sep:
        rows = {r.name: r for r in base_rows(harness.WASM)}
        if name not in rows:
            raise SystemExit(f"unknown row {name!r}; rows: {sorted(rows)}")
        return rows[name]
    p = Path(path).resolve()
    if not p.is_file():
        raise SystemExit(f"{spec}: no such file")
    if p.suffix == ".so":
        return Row(name, name, "hokusai", so=p, config=hokusai_config(rate_limit), native=True)
    return Row(name, name, "hokusai", wasm=p, config=hokusai_config(rate_limit))


def get(conn: http.client.HTTPConnection) -> int:
    conn.request("GET", REQ_PATH, headers=bearer(BENCH_KEY))
    r = conn.getresponse()
    r.read()
    return r.status


def first_ok(port: int, seconds: float) -> http.client.HTTPConnection:
    """A connection once Envoy (slow under valgrind) answers 200: the first
    requests may be refused while the key service's callout times out."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            if get(conn) == 200:
                return conn
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"no 200 from the Envoy under valgrind within {seconds:.0f} s")
        time.sleep(1)


def worker_instructions(out: Path) -> int:
    """The busiest thread's instructions in callgrind's dump (the worker)."""
    totals = []
    for f in glob.glob(f"{out}.1-*"):
        m = re.search(r"^(?:summary|totals):\s+(\d+)", Path(f).read_text(errors="replace"), re.M)
        if m:
            totals.append(int(m.group(1)))
    if not totals:
        raise RuntimeError(f"no callgrind dump at {out}.1-*")
    return max(totals)


def measure(row: Row, work: Path, echo, keys, rls, n: int, warm: int) -> float:
    port = harness.free_port()
    rls_port = rls.port if row.global_limit else None
    options = replace(envoy_options(row, work, echo.port, keys.port, ratelimit_port=rls_port), listen_port=port)
    # Rendered by the harness (then stopped), run again under valgrind.
    envoy = harness.Envoy(work, options, name=f"cg-{row.name}")
    config = envoy.config_path
    envoy.stop()
    out = work / f"callgrind-{row.name}.out"
    log = (work / f"callgrind-{row.name}.log").open("w")
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--smc-check=all-non-file", "--separate-threads=yes",
         f"--callgrind-out-file={out}", str(harness.envoy_binary()), "-c", str(config), "--concurrency", "1",
         "--disable-hot-restart", "-l", "warning"],
        stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, **harness.envoy_environment(options)})
    try:
        conn = first_ok(port, 300)
        for _ in range(warm):
            get(conn)
        subprocess.run(["callgrind_control", "-z", str(proc.pid)], check=True, capture_output=True, timeout=120)
        for _ in range(n):
            status = get(conn)
            if status != 200:
                raise RuntimeError(f"{row.name}: {status} during the counted requests")
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True, capture_output=True, timeout=120)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
        log.close()
    return worker_instructions(out) / n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("rows", nargs="+", help="run.py row names, or NAME=PATH of another build")
    ap.add_argument("--requests", type=int, default=1000, help="counted requests per row")
    ap.add_argument("--warmup", type=int, default=200, help="requests before the counters are zeroed")
    ap.add_argument("--rate-limit", action="store_true", help="NAME=PATH rows with the rate limit on")
    a = ap.parse_args()
    for tool in ("valgrind", "callgrind_control"):
        if not shutil.which(tool):
            print(f"{tool} is missing: apt-get install valgrind", file=sys.stderr)
            return 2
    rows = [row_for(spec, a.rate_limit) for spec in a.rows]
    work = harness.workdir("hokusai-callgrind-")
    keys = harness.StandIn("keys", work, keys={"keys": harness.DEV_KEYS["keys"] + [KEY_ENTRY]}, name="cg-keys")
    echo = harness.StandIn("echo", work, name="cg-echo")
    redis = rls = None
    try:
        if any(r.global_limit for r in rows):
            redis = harness.Redis(work, name="cg-redis")
            rls = harness.StandIn("ratelimit", work, redis_url=redis.url, name="cg-ratelimit")
        results = [(row, measure(row, work, echo, keys, rls, a.requests, a.warmup)) for row in rows]
    finally:
        for s in (keys, echo, rls, redis):
            if s is not None:
                s.stop()
    base = results[0][1]
    print(f"\n| row | Envoy worker instructions / request | Δ vs {results[0][0].name} |\n|---|---|---|")
    for row, per in results:
        print(f"| {row.label} | {per:,.0f} | {per - base:+,.0f} |")
    print(f"\n(work directory {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
