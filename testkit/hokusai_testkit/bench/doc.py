"""docs/benchmarks.md: the latest run's tables and targets with the machine,
the load and every round, overwritten by every run."""

from __future__ import annotations

import datetime as dt
import os
import platform
import statistics
import subprocess

from hokusai_testkit import harness
from hokusai_testkit.bench.context import Results
from hokusai_testkit.bench.procstat import cpu_model
from hokusai_testkit.bench.rows import REQ_PATH

DOC = harness.ROOT / "docs/benchmarks.md"


def envoy_version() -> str:
    out = subprocess.run([str(harness.envoy_binary()), "--version"], capture_output=True,
                         text=True, timeout=60).stdout
    # "... version: <sha>/1.40.0/Clean/RELEASE/BoringSSL"
    v = out.strip().split("version:")[-1].strip()
    parts = v.split("/")
    return f"{parts[1]} ({'/'.join(parts[2:])}, {parts[0][:12]})" if len(parts) > 2 else v


def render_doc(md_table: str, tgt: list, res: Results, a, seed: int, elapsed: float, waited: float) -> str:
    results = res.rows
    out = header(a, seed, elapsed, waited, results) + [md_table, ""]
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
    out += per_round(results) + burst_lines(res.bursts) + profile_lines(res.profiles, a)
    if res.failures:
        out += ["", "## Failures", ""] + [f"- {f}" for f in res.failures]
    return "\n".join(out) + "\n"


def header(a, seed: int, elapsed: float, waited: float, results: list[dict]) -> list[str]:
    """The command, the machine and the load."""
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    uname = platform.uname().release
    return [
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
    ]


def per_round(results: list[dict]) -> list[str]:
    out = ["", "## Per round", "",
           "| row | round | req/s | p50 µs | p99 µs | CPU µs/req (stat) | CPU µs/req (schedstat) | "
           "Envoy core % | stand-ins core % | wrk core % | machine busy % | other load, % of a core |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(results, key=lambda r: (r["row"], r["round"])):
        out.append(f"| {r['row']} | {r['round']} | {r['rps']:,.0f} | {r['p50_us']} | {r['p99_us']} | "
                   f"{r['cpu_us_per_req']:.1f} | {r['cpu_sched_us_per_req']:.1f} | {r['envoy_core_pct']:.0f} | "
                   f"{r['standins_core_pct']:.0f} | {r['wrk_core_pct']:.0f} | {r['machine_busy_pct']:.0f} | "
                   f"{r['other_core_pct']:.0f} |")
    return out


def burst_lines(bursts: list[dict]) -> list[str]:
    if not bursts:
        return []
    out = ["", "Cold bursts:", ""]
    for b in bursts:
        out.append(f"- round {b['round']}, stand-in {b['delay_ms']} ms: {b['callouts']} callouts for "
                   f"{b['requests']} requests; connections per worker {b['connections_per_worker']}; "
                   f"single-flight waits {b['single_flight_waits']}, cache hits {b['cache_hits']}; "
                   f"statuses {b['statuses']}")
    return out


def profile_lines(profiles: list[dict], a) -> list[str]:
    if not profiles:
        return []
    out = ["", "## Profile (perf, outside the timed rounds)", ""]
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
    return out


def write_doc(text: str):
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text)
