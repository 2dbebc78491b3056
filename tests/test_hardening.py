"""Worst days, against the real Envoy: bypass attempts, key leaks, per-key
rate limits, outages with and without stale-if-error, an open circuit
breaker, single-flight under a cold burst, and the stats and audit trail."""

import base64
import concurrent.futures as cf
import json
import re
import secrets
import socket
import time

import pytest
import requests

from hokusai_testkit import harness

pytestmark = pytest.mark.usefixtures("normal_mode")

RUNS_CREATE = "/api/mlflow/api/2.0/mlflow/runs/create"
RUNS_SEARCH = "/api/mlflow/api/2.0/mlflow/runs/search"


def raw(gw, request: bytes, timeout=5.0) -> bytes:
    """Sends bytes as they are (for requests no client library would make)."""
    line, rest = request.split(b"\r\n", 1)
    with socket.create_connection(("127.0.0.1", gw.port), timeout=timeout) as s:
        s.sendall(line + b"\r\nConnection: close\r\n" + rest)
        out = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            out += chunk
            head, sep, body = out.partition(b"\r\n\r\n")
            m = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
            if sep and m and len(body) >= int(m.group(1)):
                break  # whole answer read; don't wait out Envoy's delayed close
        return out


def status_of(resp: bytes) -> int:
    m = re.match(rb"HTTP/1\.[01] (\d{3})", resp)
    return int(m.group(1)) if m else 0


BYPASS_PATHS = [
    "/api/mlflow%2Fapi/2.0/mlflow/runs/create",
    "/api/mlflow%2fapi/2.0/mlflow/runs/create",
    "/api/%6Dlflow/api/2.0/mlflow/runs/create",
    "/api/mlflow/%2e%2e/api/2.0/mlflow/runs/create",
    "/api/mlflow/./api/2.0/mlflow/runs/create",
    "/api/mlflow/../api/mlflow/api/2.0/mlflow/runs/create",
    "//api/mlflow//api/2.0/mlflow/runs/create",
    "/API/MLFLOW/api/2.0/mlflow/runs/create",
    "/Api/Mlflow/api/2.0/mlflow/runs/create",
    "/api/mlflow;x=1/api/2.0/mlflow/runs/create",
    "/api/mlflow/api/2.0/mlflow/runs/create;.css",
    "/api/mlflow/api/2.0/mlflow/runs/create;/health",
    "/api/mlflow/health/mlflow/../../api/2.0/mlflow/runs/create",
    "/api/mlflow/health/mlflow/%2e%2e/%2e%2e/api/2.0/mlflow/runs/create",
    "/health/../api/2.0/mlflow/runs/create",
    "/health%2F..%2Fapi/2.0/mlflow/runs/create",
    "/health/",
    "/health/x",
    "/HEALTH",
    "/api/mlflow/health/mlflow/",
    "/api/mlflow/health/mlflow%00",
    "/api/mlflow\\api/2.0/mlflow/runs/create",
    "/api/2.0/mlflow/runs/create",
    "/ajax-api/2.0/mlflow/runs/create",
    "/get-artifact?path=x&run_uuid=1",
    "/",
]


def test_bypass_corpus_reaches_nothing_without_a_valid_key(gw, echo, keys):
    bad = keys.new(service_id="website")  # a real key for another service
    attempts = []
    for path in BYPASS_PATHS:
        for method in ("GET", "POST"):
            attempts.append(f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode())
            attempts.append(f"{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {bad}\r\n"
                            f"Content-Length: 0\r\n\r\n".encode())
    for extra in [
        # absolute-form URIs
        b"POST http://127.0.0.1/api/mlflow/api/2.0/mlflow/runs/create HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        b"GET http://evil.example/health/../api/2.0/mlflow/runs/search HTTP/1.1\r\nHost: x\r\n\r\n",
        # a valid key beside a conflicting or broken one
        f"POST {RUNS_CREATE} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {harness.RW_KEY}\r\n"
        f"Authorization: Bearer hk_test_other\r\nContent-Length: 0\r\n\r\n".encode(),
        f"POST {RUNS_CREATE} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {harness.RW_KEY}\r\n"
        f"X-API-Key: hk_test_other\r\nContent-Length: 0\r\n\r\n".encode(),
        f"POST {RUNS_CREATE}?api_key=hk_test_other HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {harness.RW_KEY}\r\n"
        f"Content-Length: 0\r\n\r\n".encode(),
        f"POST {RUNS_CREATE} HTTP/1.1\r\nHost: x\r\nX-API-Key: {harness.RW_KEY}\r\nX-API-Key: junk junk\r\n"
        f"Content-Length: 0\r\n\r\n".encode(),
        # the key in the Basic username, no password
        b"POST " + RUNS_CREATE.encode() + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Basic "
        + base64.b64encode(harness.RW_KEY.encode() + b":") + b"\r\nContent-Length: 0\r\n\r\n",
        # spoofed identity, no key
        f"POST {RUNS_CREATE} HTTP/1.1\r\nHost: x\r\nX-Hokusai-User-Id: u_admin\r\n"
        f"X-Hokusai-API-Key-Id: k_admin\r\nContent-Length: 0\r\n\r\n".encode(),
        # very long and non-ASCII headers
        f"POST {RUNS_CREATE} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {'k' * 50000}\r\nContent-Length: 0\r\n\r\n".encode(),
        b"POST " + RUNS_CREATE.encode() + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer hk_\xe9\xff\r\n"
        b"Content-Length: 0\r\n\r\n",
        b"POST " + RUNS_CREATE.encode() + b" HTTP/1.1\r\nHost: x\r\nX-API-Key: \xc3\xa9\r\nContent-Length: 0\r\n\r\n",
        # scheme tricks
        f"POST {RUNS_CREATE} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer\t{bad}\r\nContent-Length: 0\r\n\r\n".encode(),
        f"POST {RUNS_CREATE} HTTP/1.1\r\nHost: x\r\nAuthorization: Token {harness.RW_KEY}\r\nContent-Length: 0\r\n\r\n".encode(),
        f"POST {RUNS_CREATE} HTTP/1.0\r\nContent-Length: 0\r\n\r\n".encode(),
    ]:
        attempts.append(extra)

    echo.clear()
    statuses = {}
    for req in attempts:
        s = status_of(raw(gw, req))
        statuses[s] = statuses.get(s, 0) + 1
        assert s != 0, f"no HTTP answer to {req[:120]!r}"
    forwarded = echo.requests()
    leaked = [r for r in forwarded if r["path"].split("?")[0] != "/health"]
    assert not leaked, f"reached the upstream without a valid key: {leaked}"
    for r in forwarded:
        names = {k.lower() for k, _ in r["headers"]}
        assert not names & {"authorization", "x-api-key", "x-hokusai-user-id", "x-hokusai-api-key-id"}, r
    assert 200 not in statuses or statuses[200] == len(forwarded)
    assert statuses.get(401, 0) > len(BYPASS_PATHS), statuses
    assert gw.alive()


ROUTE_PROBES = [
    (RUNS_SEARCH, {}), (RUNS_CREATE, {}), ("/api/mlflow/health/mlflow", {}),
    ("/api/mlflow/ajax-api/2.0/mlflow/experiments/search", {}), ("/mlflow/", {}),
    (RUNS_SEARCH, {"Host": "staging.localhost"}),
]


def test_no_byte_of_the_key_anywhere(start_envoy, keys, echo):
    """A distinctive key through every location and every route, valid and
    invalid: not upstream, not in any response, not in any filter log line at
    trace level, not in stats."""
    e = start_envoy(log_level="info", extra_args=["--component-log-level", f"{harness.FILTER_LOG}:trace"])
    valid = keys.new(prefix="hk_live_CANARYvalid")
    invalid = "hk_live_CANARYinvalid" + secrets.token_hex(8)
    echo.clear()
    responses = []
    for key in (valid, invalid):
        for headers, query in [
            ({"Authorization": f"Bearer {key}"}, ""),
            ({"Authorization": f"ApiKey {key}"}, ""),
            ({"X-API-Key": key}, ""),
            ({}, f"?api_key={key}"),
            ({"Authorization": "Basic " + base64.b64encode(f"u:{key}".encode()).decode()}, ""),
            ({"Authorization": f"Bearer {key}"}, "?x=1"),
        ]:
            # Every route of the local config: the client's API, the UI (Basic
            # challenge, both mounts), the staging host's service, a public path.
            for path, host in ROUTE_PROBES:
                r = requests.post(e.url + path + query, headers={**headers, **host}, json={}, timeout=10)
                responses.append(r.text + json.dumps(dict(r.headers)))
    stats = requests.get(e.admin + "/stats", timeout=10).text
    filter_log = "\n".join(line for line in e.log_text().splitlines() if f"[{harness.FILTER_LOG}]" in line)
    assert "hokusai_auth" in filter_log, "the filter logged nothing at trace level"
    upstream = json.dumps(echo.requests())
    for key in (valid, invalid):
        needles = {key, key[8:], key[-16:], base64.b64encode(f"u:{key}".encode()).decode()[4:24]}
        for where, text in [("upstream", upstream), ("responses", "\n".join(responses)),
                            ("filter log", filter_log), ("stats", stats)]:
            for n in needles:
                assert n not in text, f"key material in {where}"
        assert "CANARY" not in filter_log + stats + upstream


def test_per_key_rate_limit_across_workers(start_envoy, keys):
    e = start_envoy(concurrency=2)
    key = keys.new(rate_limit_per_hour=5)
    seen = []
    for i in range(5):
        r = requests.post(e.url + RUNS_SEARCH, headers={"Authorization": f"Bearer {key}"}, timeout=10)
        assert r.status_code == 200, r.text
        assert r.headers["x-ratelimit-limit"] == "5"
        seen.append(int(r.headers["x-ratelimit-remaining"]))
        reset = int(r.headers["x-ratelimit-reset"])
        assert 0 < reset - time.time() <= 3600
    assert seen == [4, 3, 2, 1, 0]
    r = requests.post(e.url + RUNS_SEARCH, headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert r.status_code == 429 and r.json()["error_code"] == "RESOURCE_EXHAUSTED"
    assert r.headers["x-ratelimit-remaining"] == "0"
    assert 0 < int(r.headers["retry-after"]) <= 3600
    assert e.stat("wasmcustom.hokusai_auth.denied.rate_limited") == 1


def test_stale_if_error_only_for_recently_valid_keys(start_envoy, keys, keysvc):
    e = start_envoy(harness.plugin_config(cache={"ttl_seconds": 1, "negative_ttl_seconds": 1,
                                                 "stale_if_error_seconds": 30}))
    good = keys.new()
    never = keys.new()
    bad = "hk_test_" + secrets.token_hex(12)
    post = lambda k: requests.post(e.url + RUNS_SEARCH, headers={"Authorization": f"Bearer {k}"}, timeout=10)
    assert post(good).status_code == 200
    assert post(bad).status_code == 401
    time.sleep(1.2)
    keysvc.mode("error")
    assert post(good).status_code == 200, "expired valid verdict served during the outage"
    assert post(never).status_code == 503, "a key never seen valid is not let through"
    assert post(bad).status_code == 503, "a 401 verdict is never stale-served"
    assert e.stat("wasmcustom.hokusai_auth.cache.stale_served") == 1


def test_fail_closed_by_default_during_an_outage(gw, keys, keysvc):
    key = keys.new()
    keysvc.mode("error")
    assert requests.post(gw.url + RUNS_SEARCH, headers={"Authorization": f"Bearer {key}"}, timeout=10).status_code == 503


def test_open_circuit_breaker_answers_503_at_once(start_envoy, keysvc):
    e = start_envoy(auth_limits=(1, 1, 1))
    keysvc.mode("hang")

    def one(i):
        t0 = time.monotonic()
        r = requests.post(e.url + RUNS_SEARCH, headers={"Authorization": f"Bearer hk_test_cb{i}_{secrets.token_hex(6)}"},
                          timeout=10)
        return r.status_code, time.monotonic() - t0

    with cf.ThreadPoolExecutor(12) as pool:
        results = list(pool.map(one, range(12)))
    assert all(s == 503 for s, _ in results), results
    fast = [t for _, t in results if t < 0.5]
    assert len(fast) >= 8, f"breaker should refuse most at once: {results}"
    assert max(t for _, t in results) < 1.0 + 1.5
    assert e.stat("cluster.hokusai_auth.upstream_rq_pending_overflow") > 0


@pytest.mark.parametrize("workers", [2, 8])
def test_cold_burst_makes_at_most_one_callout_per_worker(start_envoy, keys, keysvc, workers):
    e = start_envoy(concurrency=workers)
    key = keys.new()
    keysvc.mode("normal", delay_ms=200)  # keep the callout in flight while the burst arrives
    before = keysvc.calls()
    with cf.ThreadPoolExecutor(32) as pool:
        codes = list(pool.map(lambda _: requests.post(e.url + RUNS_SEARCH, headers={"Authorization": f"Bearer {key}"},
                                                      timeout=10).status_code, range(32)))
    assert codes == [200] * 32
    assert keysvc.calls() - before <= workers
    # Every other request waits (but for the odd one arriving after the
    # answer, a cache hit).
    assert e.stat("wasmcustom.hokusai_auth.single_flight.wait") >= 30 - workers


def test_every_decision_is_counted_and_audited(start_envoy, keys, keysvc):
    e = start_envoy()
    ro = harness.RO_KEY
    post = lambda path, headers=None: requests.post(e.url + path, headers=headers or {}, json={}, timeout=10)
    post(RUNS_SEARCH, {"Authorization": f"Bearer {ro}"})
    post(RUNS_SEARCH, {"Authorization": f"Bearer {ro}"})
    post(RUNS_CREATE, {"Authorization": f"Bearer {ro}"})
    post(RUNS_SEARCH)
    post(RUNS_SEARCH, {"Authorization": "Bearer hk_test_unknown_key_xyz"})
    post("/api/mlflow/health/mlflow")
    keysvc.mode("garbage")
    post(RUNS_SEARCH, {"Authorization": f"Bearer {keys.new()}"})
    keysvc.mode("normal")
    s = e.stats("wasmcustom.hokusai_auth")
    want = {"allowed": 2, "denied.forbidden": 1, "denied.unauthenticated": 1, "denied.invalid_key": 1,
            "public": 1, "cache.hit": 2, "cache.miss": 3, "callout.total": 3,
            "callout.error.not_json_object": 1, "denied.unavailable": 1}
    for name, n in want.items():
        assert s.get(f"wasmcustom.hokusai_auth.{name}") == n, (name, s)
    hist = requests.get(e.admin + "/stats?filter=callout_latency_ms", timeout=10).text
    assert "wasmcustom.hokusai_auth.callout_latency_ms" in hist
    lines = [json.loads(line[line.index("{"):]) for line in e.log_text().splitlines()
             if '"event":"hokusai_auth"' in line]
    verdicts = sorted(v["verdict"] for v in lines)
    assert verdicts == sorted(["allowed", "allowed", "forbidden", "missing", "invalid_key", "public", "unavailable"]), lines
    allowed = [v for v in lines if v["verdict"] == "allowed"]
    assert {v["key_id"] for v in allowed} == {"k_ro"} and {v["user_id"] for v in allowed} == {"u_ro"}
    assert sorted(v["cache"] for v in allowed) == ["hit", "miss"]


@pytest.mark.parametrize("verdict", ["invalid", "garbage"])
def test_a_request_body_does_not_carry_the_request_past_an_undecided_key(start_envoy, keysvc, echo, verdict):
    """A body that arrives while the key is being checked waits with the
    headers: an invalid key or an unavailable key service still refuses it,
    and nothing reaches the upstream (Envoy continues a stream whose filter
    lets its body through)."""
    e = start_envoy()
    keysvc.mode("garbage" if verdict == "garbage" else "normal", delay_ms=300)
    echo.clear()
    key = "hk_test_body_race_" + secrets.token_hex(8)
    r = requests.post(e.url + RUNS_CREATE, headers={"Authorization": f"Bearer {key}"},
                      data=b'{"experiment_id": "0"}' * 100, timeout=10)
    assert r.status_code == (401 if verdict == "invalid" else 503), r.text
    assert echo.requests() == []
