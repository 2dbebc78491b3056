"""The perf profile of a row, outside the timed rounds: perf stat (CPU,
syscalls, context switches per request) and perf record (where the cycles
go, by DSO) on Envoy while wrk runs the row."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from hokusai_testkit.bench.context import Ctx
from hokusai_testkit.bench.gateway import check_row, start_envoy
from hokusai_testkit.bench.rows import Row
from hokusai_testkit.bench.scenarios import wait_quiet


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
    """perf stat and perf record on Envoy while wrk runs the row."""
    a = ctx.args
    wait_quiet(ctx)
    envoy = start_envoy(ctx, row, f"envoy-perf-{row.name}")
    data = ctx.workdir / f"perf-{row.name}.data"
    stat_out = ctx.workdir / f"perf-stat-{row.name}.txt"
    try:
        check_row(ctx, row, envoy)
        keys = ctx.keys.measure if row.distinct_keys else ctx.keys.one
        ctx.run_wrk(envoy.port, ctx.keys.warm if row.distinct_keys else ctx.keys.one, a.warmup)
        r = under_perf(envoy.proc.p.pid, data, stat_out, lambda: ctx.run_wrk(envoy.port, keys, a.requests))
    finally:
        envoy.stop()
    n = r["requests"]
    return {"row": row.name, "requests": n, "per_request": stat_per_request(stat_out, n),
            "dso": dso_shares(data), "top": top_symbols(data)}


def under_perf(pid: int, data: Path, stat_out: Path, load):
    """`load()` with perf record and perf stat attached to `pid`; both
    stopped (SIGINT, so that they write their files) when it returns."""
    rec = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F", "2999", "-p", str(pid),
                            "-o", str(data)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    stat = subprocess.Popen(["perf", "stat", "-x", ",", "-o", str(stat_out), "-e",
                             "task-clock,context-switches,raw_syscalls:sys_enter", "-p", str(pid)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    time.sleep(0.3)
    try:
        return load()
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


def stat_per_request(stat_out: Path, n: int) -> dict[str, float]:
    out = {}
    for line in stat_out.read_text().splitlines():
        parts = line.split(",")
        if len(parts) > 2 and parts[0].replace(".", "", 1).isdigit():
            out[parts[2]] = float(parts[0]) / n
    return out


def dso_shares(data: Path) -> list[tuple[float, str]]:
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
    return dsos


def top_symbols(data: Path) -> list[str]:
    syms = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "--no-children",
                           "--sort", "dso,sym", "--percent-limit", "1.5"],
                          capture_output=True, text=True, timeout=300)
    return [ln.rstrip() for ln in syms.stdout.splitlines() if ln.strip() and not ln.startswith("#")][:20]
