"""Flood and soak runs against a real Envoy with the filter (loopback only,
bounded in requests and time). Prints the figures; docs/hardening.md keeps
the latest.

    .venv/bin/python scripts/flood.py flood [--requests 1000000]
        every request a new random key: Envoy's memory must stay within the
        bound the fixed cache slots set, and callouts within the circuit
        breaker's limits.
    .venv/bin/python scripts/flood.py soak [--seconds 180]
        mixed load (cached valid keys, new keys, invalid keys, health) while
        the key service flaps between normal, error, hang and close: every
        request answered, none lost, no VM failure.
"""

import argparse
import json
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

from hokusai_testkit import harness

RANDOM_KEYS_LUA = r"""
math.randomseed(os.time())
local n = 0
request = function()
  n = n + 1
  local key = string.format("hk_test_flood_%08x%08x%d", math.random(0, 0x7fffffff), math.random(0, 0x7fffffff), n)
  return wrk.format("POST", "/api/mlflow/api/2.0/mlflow/runs/search", {["Authorization"] = "Bearer " .. key}, "{}")
end
"""

MIXED_LUA = r"""
math.randomseed(os.time())
local keys = {KEYS}
request = function()
  local r = math.random(1, 10)
  local path = "/api/mlflow/api/2.0/mlflow/runs/search"
  if r <= 6 then
    return wrk.format("POST", path, {["Authorization"] = "Bearer " .. keys[math.random(1, #keys)]}, "{}")
  elseif r <= 8 then
    return wrk.format("POST", path, {["Authorization"] = "Bearer hk_test_new_" .. math.random(1, 1000000000)}, "{}")
  elseif r == 9 then
    return wrk.format("GET", "/api/mlflow/health/mlflow")
  else
    return wrk.format("POST", path, {}, "{}")
  end
end
"""


def need_wrk():
    if not shutil.which("wrk"):
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=True, timeout=600)


def wrk(url, script: Path, *, connections: int, seconds: int, threads: int = 1) -> dict:
    out = subprocess.run(["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s",
                          "--timeout", "10s", "-s", str(script), url],
                         capture_output=True, text=True, timeout=seconds + 60).stdout
    total = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {"requests": total, "socket_errors": [int(x) for x in errors.groups()] if errors else [0, 0, 0, 0],
            "raw": out}


def codes(e: harness.Envoy) -> dict:
    s = e.stats("http.gateway.downstream_rq_")
    return {k.rsplit("_", 1)[-1]: v for k, v in s.items() if re.search(r"downstream_rq_[1-5]xx$", k)}


def flood(args, work):
    keysvc = harness.StandIn("keys", work)
    echo = harness.StandIn("echo", work)
    cfg = harness.plugin_config(cache={"slots": 4096, "negative_ttl_seconds": 10})
    e = harness.Envoy(work, harness.EnvoyOptions(upstream_port=echo.port, auth_port=keysvc.port, config=cfg,
                                                 concurrency=2, log_level="warn", auth_limits=(64, 64, 256)))
    try:
        script = work / "random.lua"
        script.write_text(RANDOM_KEYS_LUA)
        rss_before = e.memory_kb("VmRSS")
        done, rounds = 0, []
        deadline = time.monotonic() + args.max_seconds
        while done < args.requests and time.monotonic() < deadline:
            r = wrk(e.url, script, connections=64, seconds=30)
            done += r["requests"]
            rounds.append((done, e.memory_kb("VmRSS")))
            print(f"  {done:>9} requests, Envoy RSS {rounds[-1][1] / 1024:.1f} MiB", flush=True)
        st = e.stats("")
        result = {
            "requests": done,
            "envoy_rss_mib_before": round(rss_before / 1024, 1),
            "envoy_rss_mib_after": round(e.memory_kb("VmRSS") / 1024, 1),
            "envoy_peak_rss_mib": round(e.memory_kb("VmHWM") / 1024, 1),
            "rss_mib_by_progress": [(n, round(kb / 1024, 1)) for n, kb in rounds],
            "callouts": keysvc.calls(),
            "responses": codes(e),
            "breaker_overflow": st.get("cluster.hokusai_auth.upstream_rq_pending_overflow", 0),
            "max_concurrent_callouts_allowed": 256,
            "envoy_alive": e.alive(),
        }
        assert done >= args.requests, f"only {done} requests in {args.max_seconds}s"
        return result
    finally:
        e.stop()
        echo.stop()
        keysvc.stop()


def soak(args, work):
    keysvc = harness.StandIn("keys", work)
    echo = harness.StandIn("echo", work)
    cfg = harness.plugin_config(cache={"ttl_seconds": 5, "negative_ttl_seconds": 2})
    e = harness.Envoy(work, harness.EnvoyOptions(upstream_port=echo.port, auth_port=keysvc.port, config=cfg,
                                                 concurrency=2, log_level="warn"))
    stop = threading.Event()
    flaps = []

    def flap():
        modes = ["normal", "error", "normal", "hang", "normal", "close", "normal", "garbage"]
        i = 0
        while not stop.wait(3):
            m = modes[i % len(modes)]
            keysvc.mode(m)
            flaps.append(m)
            i += 1
        keysvc.mode("normal")

    try:
        keys = [k["key"] for k in harness.DEV_KEYS["keys"]]
        script = work / "mixed.lua"
        script.write_text(MIXED_LUA.replace("{KEYS}", "{" + ", ".join(json.dumps(k) for k in keys) + "}"))
        t = threading.Thread(target=flap, daemon=True)
        t.start()
        r = wrk(e.url, script, connections=32, seconds=args.seconds)
        stop.set()
        t.join(10)
        answered = sum(codes(e).values())
        log = e.log_text()
        result = {
            "seconds": args.seconds,
            "requests_completed_by_wrk": r["requests"],
            "answered_by_envoy": answered,
            "socket_errors_connect_read_write_timeout": r["socket_errors"],
            "responses": codes(e),
            "key_service_flaps": len(flaps),
            "vm_failures_in_log": len(re.findall(r"(?i)wasm vm failed|panic", log)),
            "envoy_alive": e.alive(),
        }
        assert result["socket_errors_connect_read_write_timeout"] == [0, 0, 0, 0], r["raw"]
        assert result["vm_failures_in_log"] == 0
        assert e.alive()
        return result
    finally:
        stop.set()
        e.stop()
        echo.stop()
        keysvc.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["flood", "soak"])
    ap.add_argument("--requests", type=int, default=1_000_000)
    ap.add_argument("--max-seconds", type=int, default=900)
    ap.add_argument("--seconds", type=int, default=180)
    args = ap.parse_args()
    need_wrk()
    work = harness.workdir(f"hokusai-{args.what}-")
    result = (flood if args.what == "flood" else soak)(args, work)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
