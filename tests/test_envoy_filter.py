"""The filter inside a real Envoy, in front of the echo upstream, calling the
key-service stand-in. Every assertion about the upstream is made on what the
upstream actually received."""

import base64
import json
import secrets
import time
import urllib.parse

import pytest
import requests

from hokusai_testkit import harness

pytestmark = pytest.mark.usefixtures("normal_mode")

RW, RO = harness.RW_KEY, harness.RO_KEY
RUNS_SEARCH = "/api/mlflow/api/2.0/mlflow/runs/search"
RUNS_CREATE = "/api/mlflow/api/2.0/mlflow/runs/create"


def seen(resp):
    """What the echo upstream received, as it reported it."""
    assert resp.status_code == 200, (resp.status_code, resp.text)
    return resp.json()


def header(received, name):
    values = [v for k, v in received["headers"] if k.lower() == name]
    return values[0] if len(values) == 1 else (values or None)


def assert_no_key(received, key):
    blob = json.dumps(received)
    for part in (key, key[8:], key[-12:], urllib.parse.quote(key)):
        assert part not in blob, f"key material reached the upstream: {received}"


def basic(password, user="mlflow-user"):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


LOCATIONS = {
    "bearer": lambda k: ({"Authorization": f"Bearer {k}"}, ""),
    "apikey_scheme": lambda k: ({"Authorization": f"apikey {k}"}, ""),
    "x_api_key": lambda k: ({"X-API-Key": k}, ""),
    "query": lambda k: ({}, f"&api_key={k}"),
    "basic": lambda k: ({"Authorization": basic(k)}, ""),
}


@pytest.mark.parametrize("where", sorted(LOCATIONS))
def test_each_key_location_is_accepted_and_never_forwarded(gw, keys, where):
    key = keys.new()
    headers, extra_query = LOCATIONS[where](key)
    r = requests.get(f"{gw.url}/api/mlflow/api/2.0/mlflow/experiments/get?experiment_id=1{extra_query}&z=%20y",
                     headers=headers, timeout=10)
    got = seen(r)
    assert got["path"] == "/api/2.0/mlflow/experiments/get?experiment_id=1&z=%20y"
    assert header(got, "x-hokusai-user-id") == "u_" + key[-6:]
    assert header(got, "x-hokusai-api-key-id") == "k_" + key[-6:]
    assert header(got, "authorization") is None and header(got, "x-api-key") is None
    assert_no_key(got, key)


def test_the_callout_follows_the_contract(gw, keys, keysvc):
    key = keys.new()
    requests.post(gw.url + RUNS_SEARCH, headers={"Authorization": f"Bearer {key}", "X-Forwarded-For": "203.0.113.7"},
                  json={}, timeout=10)
    last = keysvc.stats()["last"]
    h = {k.lower(): v for k, v in last["headers"]}
    assert h["authorization"] == f"Bearer {key}"
    assert h["content-type"] == "application/json"
    assert h["host"] == "auth.hokusai.local"
    assert json.loads(last["body"]) == {"service_id": "platform", "client_ip": "203.0.113.7"}


def test_identity_headers_cannot_be_spoofed(gw, keys, echo):
    spoof = {"X-Hokusai-User-Id": "root", "X-Hokusai-API-Key-Id": "k_root"}
    key = keys.new(user_id=None, key_id=None)
    # Allowed request whose key has no ids: the spoofed values must not survive.
    got = seen(requests.get(gw.url + "/api/mlflow/api/2.0/mlflow/experiments/get?experiment_id=1",
                            headers={"Authorization": f"Bearer {key}", **spoof}, timeout=10))
    assert header(got, "x-hokusai-user-id") is None and header(got, "x-hokusai-api-key-id") is None
    got = seen(requests.get(gw.url + "/api/mlflow/health/mlflow", headers=spoof, timeout=10))
    assert got["path"] == "/health"
    assert header(got, "x-hokusai-user-id") is None and header(got, "x-hokusai-api-key-id") is None
    got = seen(requests.get(gw.url + "/api/mlflow/api/2.0/mlflow/runs/get?run_id=1",
                            headers={"Authorization": f"Bearer {RW}", **spoof}, timeout=10))
    assert header(got, "x-hokusai-user-id") == "u_rw"
    assert header(got, "x-hokusai-api-key-id") == "k_rw"


def test_underscore_spellings_of_identity_headers_never_reach_the_upstream(gw, echo):
    echo.clear()
    r = requests.get(gw.url + "/api/mlflow/api/2.0/mlflow/runs/get?run_id=1",
                     headers={"Authorization": f"Bearer {RW}", "x_hokusai_user_id": "root"}, timeout=10)
    assert r.status_code == 400  # Envoy refuses underscored headers (local.yaml)
    assert echo.requests() == []


def test_paths_are_rewritten_for_both_mounts(gw):
    auth = {"Authorization": f"Bearer {RW}"}
    for sent, want in [
        ("/api/mlflow/api/2.0/mlflow/runs/get?run_id=abc", "/api/2.0/mlflow/runs/get?run_id=abc"),
        ("/mlflow/api/2.0/mlflow/runs/get?run_id=abc", "/api/2.0/mlflow/runs/get?run_id=abc"),
        ("/api/mlflow/api/2.0/mlflow-artifacts/artifacts/1/r/a%20b.txt",
         "/api/2.0/mlflow-artifacts/artifacts/1/r/a%20b.txt"),
        ("/api/mlflow/health/mlflow", "/health"),
        ("/api/health/mlflow", "/health"),
    ]:
        assert seen(requests.get(gw.url + sent, headers=auth, timeout=10))["path"] == want


def test_health_and_preflight_need_no_key(gw, keysvc):
    before = keysvc.calls()
    assert seen(requests.get(gw.url + "/api/mlflow/health/mlflow", timeout=10))["path"] == "/health"
    assert seen(requests.get(gw.url + "/health", timeout=10))["path"] == "/health"
    got = seen(requests.options(gw.url + RUNS_CREATE, headers={"Origin": "https://x", "Access-Control-Request-Method": "POST"},
                                timeout=10))
    assert got["method"] == "OPTIONS"
    assert keysvc.calls() == before


def mlflow_error(r, status, code):
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["error_code"] == code, body
    return body["message"]


def test_missing_and_bad_keys_get_401_without_a_callout(gw, keysvc, echo):
    echo.clear()
    before = keysvc.calls()
    for headers, query in [
        ({}, ""),
        ({"Authorization": "Bearer "}, ""),
        ({"Authorization": "Bearer hk_test_a", "X-API-Key": "hk_test_b"}, ""),
        ({"Authorization": 'Bearer hk_test_a"b'}, ""),
        ({"X-API-Key": "hk_test_a<script>"}, ""),
        ({"Authorization": "Bearer " + "k" * 300}, ""),
        ({}, "?api_key=hk_test_a&api_key=hk_test_b"),
        ({"Authorization": basic("", user="hk_test_key_in_the_username")}, ""),
    ]:
        r = requests.post(gw.url + RUNS_SEARCH + query, headers=headers, json={}, timeout=10)
        mlflow_error(r, 401, "UNAUTHENTICATED")
        assert r.headers["www-authenticate"].startswith("Bearer")
    assert keysvc.calls() == before
    assert echo.requests() == []


def test_invalid_key_is_401_and_negatively_cached(gw, keysvc):
    bad = "hk_test_" + secrets.token_hex(12)
    before = keysvc.calls()
    for _ in range(3):
        msg = mlflow_error(requests.post(gw.url + RUNS_SEARCH, headers={"Authorization": f"Bearer {bad}"}, timeout=10),
                           401, "UNAUTHENTICATED")
        assert "platform" in msg and bad not in msg
    assert keysvc.calls() == before + 1


def test_wrong_service_is_401_naming_the_configured_service(gw, keys):
    key = keys.new(service_id="website")
    msg = mlflow_error(requests.post(gw.url + RUNS_SEARCH, headers={"Authorization": f"Bearer {key}"}, timeout=10),
                       401, "UNAUTHENTICATED")
    assert "'platform'" in msg
    assert "website" not in msg, "the key service's body is never echoed"


def test_second_request_with_the_same_key_makes_no_callout(gw, keys, keysvc):
    key = keys.new()
    before = keysvc.calls()
    for _ in range(5):
        seen(requests.post(gw.url + RUNS_SEARCH, headers={"Authorization": f"Bearer {key}"}, json={}, timeout=10))
    assert keysvc.calls() == before + 1
    assert gw.stat("wasmcustom.hokusai_auth.cache.hit") >= 4


def test_key_service_429_becomes_429_with_retry_after(gw, keys, echo):
    key = keys.new(auth_rate_limited=True)
    echo.clear()
    r = requests.post(gw.url + RUNS_SEARCH, headers={"Authorization": f"Bearer {key}"}, timeout=10)
    mlflow_error(r, 429, "RESOURCE_EXHAUSTED")
    assert r.headers["retry-after"] == "60"
    assert echo.requests() == []


@pytest.mark.parametrize("mode", ["error", "garbage", "array", "wrong_types", "huge", "reset", "close", "hang"])
def test_key_service_failures_are_503_within_the_timeout(gw, keys, keysvc, echo, mode):
    key = keys.new()
    keysvc.mode(mode)
    echo.clear()
    t0 = time.monotonic()
    r = requests.post(gw.url + RUNS_SEARCH, headers={"Authorization": f"Bearer {key}"}, timeout=10)
    elapsed = time.monotonic() - t0
    msg = mlflow_error(r, 503, "TEMPORARILY_UNAVAILABLE")
    assert r.headers["retry-after"] == "1"
    assert "detail" not in msg and "Internal" not in msg
    assert echo.requests() == []
    assert elapsed < 1.0 + 2.0, f"{mode}: answered after {elapsed:.2f}s (timeout 1s)"
    # Unavailability is never cached: the service back, the key works.
    keysvc.mode("normal")
    seen(requests.post(gw.url + RUNS_SEARCH, headers={"Authorization": f"Bearer {key}"}, timeout=10))


def test_auth_down_is_503_and_envoy_stays_up(start_envoy, echo):
    dead = harness.free_port()  # nothing listens here
    e = start_envoy(auth_port=dead)
    t0 = time.monotonic()
    r = requests.post(e.url + RUNS_SEARCH, headers={"Authorization": f"Bearer {RW}"}, timeout=10)
    assert time.monotonic() - t0 < 3.0
    mlflow_error(r, 503, "TEMPORARILY_UNAVAILABLE")
    assert e.alive()


def test_ttl_expiry_triggers_a_new_callout(start_envoy, keys, keysvc):
    e = start_envoy(harness.plugin_config(cache={"ttl_seconds": 1, "negative_ttl_seconds": 1}))
    key = keys.new()
    before = keysvc.calls()
    seen(requests.post(e.url + RUNS_SEARCH, headers={"Authorization": f"Bearer {key}"}, timeout=10))
    seen(requests.post(e.url + RUNS_SEARCH, headers={"Authorization": f"Bearer {key}"}, timeout=10))
    assert keysvc.calls() == before + 1
    time.sleep(1.2)
    seen(requests.post(e.url + RUNS_SEARCH, headers={"Authorization": f"Bearer {key}"}, timeout=10))
    assert keysvc.calls() == before + 2


REFRESH_AHEAD = {"ttl_seconds": 2, "negative_ttl_seconds": 60, "refresh_ahead_percent": 50}


def steady(e, key: str, seconds: float, every: float = 0.1) -> list[int]:
    """One key's requests, one at a time, for `seconds`."""
    codes, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        codes.append(requests.post(e.url + RUNS_SEARCH, headers={"Authorization": f"Bearer {key}"},
                                   timeout=10).status_code)
        time.sleep(every)
    return codes


def test_refresh_ahead_keeps_a_steady_stream_off_the_callout_path(start_envoy, keys, keysvc):
    """Across three TTLs only the first request waits for a callout (one
    cache miss); the re-validations run beside the stream."""
    e = start_envoy(harness.plugin_config(cache=REFRESH_AHEAD), concurrency=1)
    key = keys.new()
    keysvc.mode("normal", delay_ms=300)
    before = keysvc.calls()
    assert set(steady(e, key, 6.0)) == {200}
    stats = e.stats("wasmcustom.hokusai_auth.cache")
    assert stats.get("wasmcustom.hokusai_auth.cache.miss") == 1, stats
    assert stats.get("wasmcustom.hokusai_auth.cache.refresh", 0) >= 2, stats
    assert keysvc.calls() - before >= 3, "the first callout, then the re-validations"


def test_a_key_revoked_at_the_service_stops_passing_within_one_ttl(start_envoy, keys, keysvc):
    e = start_envoy(harness.plugin_config(cache=REFRESH_AHEAD), concurrency=1)
    key = keys.new()
    assert set(steady(e, key, 1.0)) == {200}
    keys.revoke(key)
    revoked_at = time.monotonic()
    codes = []
    while time.monotonic() - revoked_at < 4.0 and codes[-3:] != [401] * 3:
        codes += steady(e, key, 0.1)
    refused_after = time.monotonic() - revoked_at
    assert codes[-3:] == [401] * 3, codes
    # One TTL (2 s), the root's tick (0.2 s) and slack for a loaded machine.
    assert refused_after < 2.0 + 0.2 + 1.0, f"still passing {refused_after:.1f} s after revocation"


def test_older_body_form_sends_the_key_in_the_body(start_envoy, keys, keysvc):
    e = start_envoy(harness.plugin_config(auth={"key_form": "body"}))
    key = keys.new()
    seen(requests.post(e.url + RUNS_SEARCH, headers={"Authorization": f"Bearer {key}"}, timeout=10))
    last = keysvc.stats()["last"]
    assert "authorization" not in {k.lower() for k, _ in last["headers"]}
    assert json.loads(last["body"])["api_key"] == key


def test_bad_config_is_rejected_at_load_naming_the_field(workdir, echo, keysvc):
    cfg = harness.plugin_config(cache={"slots": 1})
    with pytest.raises(RuntimeError) as info:
        harness.Envoy(workdir, harness.EnvoyOptions(upstream_port=echo.port, auth_port=keysvc.port, config=cfg),
                      name="envoy-badcfg")
    assert "configuration rejected: cache.slots" in str(info.value)


def test_whoami_is_answered_by_the_filter_and_never_reaches_mlflow(gw, echo, keys):
    key = keys.new(scopes=["mlflow:read"], rate_limit_per_hour=50)
    echo.clear()
    for mount in ("/api/mlflow", "/mlflow"):
        r = requests.get(gw.url + mount + "/_hokusai/whoami", headers={"Authorization": f"Bearer {key}"},
                         timeout=10)
        assert r.status_code == 200, r.text
        assert r.headers["x-hokusai-auth-reply"] == "whoami"
        me = r.json()
        assert me["key_id"] == "k_" + key[-6:] and me["user_id"] == "u_" + key[-6:]
        assert me["access"] == {"read": True, "write": False, "registry_write": False, "admin": False}
        assert me["service_id"] == "platform" and me["key_source"] == "bearer"
        assert me["rate_limit"]["limit"] == 50 and me["rate_limit"]["remaining"] < 50
        assert me["filter"]["name"] == "hokusai-mlflow-auth" and me["filter"]["version"]
        assert key[8:] not in r.text
    assert me["cached"] is True, "the second whoami came from the cache"
    assert echo.requests() == [], "whoami never reaches MLflow"


def test_every_reply_of_the_filter_is_marked_and_the_upstreams_are_not(gw, keys, echo):
    marked = {
        "unauthenticated": requests.get(gw.url + RUNS_SEARCH, timeout=10),
        "bad_path": requests.get(gw.url + "/api/mlflow;x=1/api/2.0/mlflow/runs/search", timeout=10),
        "invalid_key": requests.get(gw.url + RUNS_SEARCH, headers={"Authorization": "Bearer hk_test_nope_123456"},
                                    timeout=10),
        "forbidden": requests.post(gw.url + RUNS_CREATE, headers={"Authorization": f"Bearer {RO}"}, json={},
                                   timeout=10),
    }
    for verdict, r in marked.items():
        want = "missing" if verdict == "unauthenticated" else verdict
        assert r.headers.get("x-hokusai-auth-reply") == want, (verdict, r.status_code, dict(r.headers))
    ok = requests.get(gw.url + RUNS_SEARCH, headers={"Authorization": f"Bearer {RW}"}, timeout=10)
    assert ok.status_code == 200 and "x-hokusai-auth-reply" not in ok.headers
