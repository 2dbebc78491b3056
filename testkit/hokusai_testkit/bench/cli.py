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
import json
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from hokusai_testkit import harness
from hokusai_testkit.bench.builds import NOOP_MODULE, NOOP_WASM, build, wasm_sizes
from hokusai_testkit.bench.context import Ctx, Results
from hokusai_testkit.bench.doc import DOC, render_doc, write_doc
from hokusai_testkit.bench.keys import make_keys
from hokusai_testkit.bench.profile import perf_works, profile_row
from hokusai_testkit.bench.report import steady_table, steady_targets, table, targets
from hokusai_testkit.bench.rows import Failed, Row, rows
from hokusai_testkit.bench.scenarios import cold_burst, run_row, steady_stream
from hokusai_testkit.bench.summary import summarize
from hokusai_testkit.bench.wrk import WRK_LUA

# What a row, a burst or a stream may fail with: reported, the run goes on.
ROW_ERRORS = (Failed, RuntimeError, TimeoutError, OSError, subprocess.TimeoutExpired)
STREAM_ERRORS = (Failed, RuntimeError, TimeoutError, OSError)


class Unready(Exception):
    """The run cannot start: the message says what to do (exit code 2)."""


def parse_args() -> argparse.Namespace:
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
    ap.add_argument("--no-doc", action="store_true", help=f"do not write {DOC.relative_to(harness.ROOT)}")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (configs, logs)")
    return ap.parse_args()


def main() -> int:
    args = parse_args()
    started = time.monotonic()
    # A SIGTERM still stops every process this run started (finally blocks).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        all_rows = prepare(args)
    except Unready as e:
        print(e, file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 30)
    rng = random.Random(seed)

    workdir = harness.workdir("hokusai-bench-")
    lua = workdir / "bench.lua"
    lua.write_text(WRK_LUA)
    keys = make_keys(workdir, args)
    print(f"work directory {workdir}; {len(keys.standin['keys']):,} keys in the stand-in; seed {seed}", flush=True)
    keysvc = echo = ctx = None
    res = Results()
    try:
        keysvc = harness.StandIn("keys", workdir, keys=keys.standin, name="bench-keys")
        echo = harness.StandIn("echo", workdir, name="bench-echo")
        ctx = Ctx(args, workdir, keysvc, echo, lua, keys, quiet_left=args.quiet_wait, reruns_left=args.reruns)
        if any(r.global_limit for r in all_rows):
            ctx.redis = harness.Redis(workdir, name="bench-redis")
            ctx.rls = harness.StandIn("ratelimit", workdir, redis_url=ctx.redis.url, name="bench-ratelimit")
        run_rounds(ctx, all_rows, rng, started, res)
        run_profiles(ctx, started, res)
    finally:
        for s in (keysvc, echo) + ((ctx.rls, ctx.redis) if ctx else ()):
            if s is not None:
                s.stop()
    return report(args, all_rows, res, ctx, seed, started, workdir)


def prepare(args) -> list[Row]:
    """Builds, checks that everything to time is there: the rows to run."""
    try:
        build(args)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
        raise Unready(f"build failed ({e}); fix it, or run with --no-build to time what is built")
    if not shutil.which("wrk"):
        raise Unready("wrk is missing: run scripts/setup.sh (it installs Debian's wrk)")
    for p in (harness.WASM, NOOP_WASM, NOOP_MODULE, harness.NATIVE, harness.STANDIN):
        if not p.exists():
            raise Unready(f"{p} is missing: run without --no-build")
    all_rows = rows(variants(args))
    if not args.rows:
        return all_rows
    wanted = set(args.rows.split(","))
    unknown = wanted - {r.name for r in all_rows}
    if unknown:
        raise Unready(f"unknown rows: {sorted(unknown)}; rows: {[r.name for r in all_rows]}")
    return [r for r in all_rows if r.name in wanted]


def variants(args) -> list[tuple[str, Path]]:
    """--variant NAME=PATH, checked."""
    out = []
    for v in args.variant:
        name, sep, path = v.partition("=")
        if not sep or not name or not Path(path).is_file():
            raise Unready(f"--variant {v!r}: want NAME=PATH of a built .wasm or .so")
        if Path(path).suffix == ".so" and Path(path).name != harness.NATIVE.name:
            raise Unready(f"--variant {v!r}: Envoy finds the module by its file name, {harness.NATIVE.name}")
        out.append((name, Path(path).resolve()))
    return out


def run_rounds(ctx: Ctx, all_rows: list[Row], rng: random.Random, started: float, res: Results):
    args = ctx.args
    for rnd in range(1, args.rounds + 1):
        if time.monotonic() - started > args.budget_minutes * 60:
            res.failures.append(f"round {rnd} and later skipped: over the {args.budget_minutes} min budget")
            break
        order = list(all_rows)
        rng.shuffle(order)
        print(f"round {rnd}: {' '.join(r.name for r in order)}", flush=True)
        for row in order:
            time_row(ctx, row, rnd, res)
        if not args.no_streams and (any(r.filter == "hokusai" for r in all_rows) or not args.rows):
            run_bursts(ctx, rnd, res)
            run_steadies(ctx, rnd, res)


def time_row(ctx: Ctx, row: Row, rnd: int, res: Results):
    """One row in one round; again while a neighbour's load spoiled it (bounded)."""
    try:
        r = run_row(ctx, row, rnd)
        while r["other_core_pct"] > ctx.args.max_other_load and ctx.reruns_left > 0:
            ctx.reruns_left -= 1
            print(f"  {row.name:14s} other load {r['other_core_pct']:.0f}% of a core: run again",
                  flush=True)
            ctx.quiet_left = max(ctx.quiet_left, 10.0)
            r = run_row(ctx, row, rnd)
            r["reruns"] = r.get("reruns", 0) + 1
    except ROW_ERRORS as e:
        res.failures.append(f"round {rnd}, {row.name}: {e}")
        print(f"  {row.name:14s} FAILED: {e}", flush=True)
        return
    res.rows.append(r)
    print(f"  {row.name:14s} {r['rps']:9,.0f} req/s  p50 {r['p50_us']:5d} µs  p99 {r['p99_us']:6d} µs  "
          f"CPU {r['cpu_us_per_req']:6.1f} µs/req (sched {r['cpu_sched_us_per_req']:6.1f})  "
          f"Envoy {r['envoy_core_pct']:3.0f}% core  other load {r['other_core_pct']:3.0f}%  "
          f"callouts {r['callouts_per_req']:.3f}", flush=True)


def run_bursts(ctx: Ctx, rnd: int, res: Results):
    for delay, native in ((0, False), (5, False), (0, True), (5, True)):
        try:
            b = cold_burst(ctx, rnd, delay, native)
            res.bursts.append(b)
            print(f"  cold burst {b['build']} {delay} ms: {b['callouts']} callouts for {b['requests']} requests, "
                  f"connections per worker {b['connections_per_worker']}, "
                  f"single-flight waits {b['single_flight_waits']}", flush=True)
        except STREAM_ERRORS as e:
            res.failures.append(f"round {rnd}, cold burst {delay} ms: {e}")
            print(f"  cold burst FAILED: {e}", flush=True)


def run_steadies(ctx: Ctx, rnd: int, res: Results):
    for native, refresh in ((False, False), (False, True), (True, False), (True, True)):
        try:
            st = steady_stream(ctx, rnd, native, refresh)
            res.steadies.append(st)
            print(f"  steady {st['build']:6s} refresh {'on ' if refresh else 'off'}: p50 "
                  f"{st['p50_us']:6.0f} µs  p99 {st['p99_us']:6.0f} µs  max {st['max_us']:6.0f} µs  "
                  f"waited {st['waited']} of {st['requests']} (≥ 5 ms: {st['slow']})  "
                  f"refreshes {st['refreshes']}", flush=True)
        except STREAM_ERRORS as e:
            res.failures.append(f"round {rnd}, steady stream: {e}")
            print(f"  steady stream FAILED: {e}", flush=True)


def run_profiles(ctx: Ctx, started: float, res: Results):
    """perf on the no-op and cache-hit rows, within the time budget."""
    args = ctx.args
    if args.no_perf or not perf_works() or time.monotonic() - started >= args.budget_minutes * 60:
        return
    for name in ("noop", "hit"):
        row = next((r for r in rows() if r.name == name), None)
        try:
            res.profiles.append(profile_row(ctx, row))
        except ROW_ERRORS as e:
            res.failures.append(f"perf profile of {name}: {e}")


def report(args, all_rows: list[Row], res: Results, ctx: Ctx | None, seed: int, started: float,
           workdir: Path) -> int:
    """Prints the tables and targets, writes results.json and the doc: the exit code."""
    summary = summarize(res.rows, all_rows)
    sizes = wasm_sizes()
    md_table = table(summary, all_rows, res.bursts, sizes, args) + steady_table(res.steadies, args)
    tgt = targets(summary, res.bursts, sizes, args) + steady_targets(res.steadies)
    elapsed = time.monotonic() - started

    print()
    print(md_table)
    print()
    for name, value, verdict in tgt:
        print(f"- {name}: {value} — {verdict}")
    for f in res.failures:
        print(f"FAILED: {f}")

    if waited := (ctx.quiet_waited if ctx is not None else 0.0):
        print(f"waited {waited:.0f} s in all for other work on the machine to calm down")
    raw = {"args": vars(args), "seed": seed, "quiet_waited_s": waited, "results": res.rows, "bursts": res.bursts,
           "steady": res.steadies, "profiles": res.profiles, "summary": summary, "failures": res.failures,
           "wasm_sizes": sizes}
    (workdir / "results.json").write_text(json.dumps(raw, indent=1))
    print(f"\nraw results: {workdir / 'results.json'}")

    if not args.no_doc:
        write_doc(render_doc(md_table, tgt, res, args, seed, elapsed, waited))
        print(f"wrote {DOC.relative_to(harness.ROOT)}")
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if res.failures else 0
