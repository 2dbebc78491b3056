"""The load generator: wrk with a Lua script that sends each request with
the next key of a file and stops after a fixed count of responses."""

from __future__ import annotations

import json
import os
import resource
import subprocess
from pathlib import Path

from hokusai_testkit.bench.rows import REQ_PATH, Failed

# wrk script: each request takes the next key of BENCH_KEYS (one per line);
# the thread stops after BENCH_LIMIT responses, so every row is timed over
# the same request count (with one wrk thread, the default). Written into
# the run's work directory (wrk -s reads a file).
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


def run(script: Path, port: int, keys: Path, limit: int, *, connections: int, threads: int,
        max_seconds: int) -> dict:
    """`limit` requests at 127.0.0.1:port, each with the next key of `keys`:
    wrk's figures, and the CPU wrk used (wrk_cpu_s)."""
    env = {**os.environ, "BENCH_KEYS": str(keys), "BENCH_LIMIT": str(limit), "BENCH_PATH": REQ_PATH}
    used = min(threads, connections)
    cmd = ["wrk", "-t", str(used), "-c", str(connections), "-d", f"{max_seconds}s",
           "--timeout", "5s", "-s", str(script), f"http://127.0.0.1:{port}"]
    # With several threads each stops after `limit` responses of its own.
    if used > 1:
        env["BENCH_LIMIT"] = str(max(1, limit // threads))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=max_seconds + 60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    for line in p.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            r = json.loads(line.split(" ", 1)[1])
            r["wrk_cpu_s"] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
            if r["requests"] < limit:
                raise Failed(f"wrk completed {r['requests']} of {limit} requests within "
                             f"{max_seconds}s:\n{p.stdout[-1500:]}")
            return r
    raise Failed(f"wrk gave no result (rc {p.returncode}):\n{p.stdout[-1500:]}\n{p.stderr[-1500:]}")
