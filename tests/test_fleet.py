"""A fleet: two real Envoy replicas with the filter, counting one key's
hourly limit together in rate_limit.mode "global" (the rate limit service
stand-in on a real Redis, as envoyproxy/ratelimit counts), or each on its
own in the default local mode. Faults: Redis and the rate limit service
stopped and started again, under each failure_mode."""

import socket
import time

import pytest
import requests

from hokusai_testkit import harness

API = "/api/mlflow/api/2.0/mlflow/experiments/search"
# Every request is bounded: a request that waits on a dead service longer
# than the filter's timeout would fail here, not hang the suite.
CLIENT_TIMEOUT_S = 10


@pytest.fixture(scope="module")
def redis(workdir):
    r = harness.Redis(workdir, name=f"redis-{id(object())}")
    yield r
    r.stop()


class RateLimitService:
    """The stand-in, restartable on its port."""

    def __init__(self, workdir, redis):
        self.workdir, self.redis = workdir, redis
        self.standin = harness.StandIn("ratelimit", workdir, redis_url=redis.url, name="ratelimit")
        self.port = self.standin.port

    def stop(self):
        self.standin.stop()

    def start(self):
        self.standin = harness.StandIn("ratelimit", self.workdir, redis_url=self.redis.url,
                                       name="ratelimit-again", port=self.port)


@pytest.fixture(scope="module")
def rls(workdir, redis):
    s = RateLimitService(workdir, redis)
    yield s
    s.stop()


def limit_config(mode, failure_mode="local", timeout_ms=1000):
    # 1 s, not the 20 ms default: a worker's first call opens its HTTP/2
    # connection, which on a loaded test machine can take longer, and the
    # counting tests must not fall back. The hang test sets its own.
    section = {"mode": mode}
    if mode == "global":
        section.update(cluster="hokusai_ratelimit", failure_mode=failure_mode, timeout_ms=timeout_ms)
    return harness.plugin_config(rate_limit=section)


@pytest.fixture
def replicas(start_envoy, rls):
    """Two Envoys with the same plugin config, sharing the key service and
    the rate limit service."""
    def start(mode, port=None, **kw):
        cfg = limit_config(mode, **kw)
        return [start_envoy(cfg, ratelimit_port=port or rls.port) for _ in range(2)]
    return start


def away_from_the_hour_boundary():
    """The service's windows are wall-clock hours: a run that crosses one
    would start counting again halfway. Wait out the last 30 s of an hour."""
    left = 3600 - time.time() % 3600
    if left < 30:
        time.sleep(left + 1)


def call(envoy, key):
    return requests.get(envoy.url + API, headers={"Authorization": f"Bearer {key}"}, timeout=CLIENT_TIMEOUT_S)


def spread(envoys, key, n):
    """n requests, one replica after the other."""
    return [call(envoys[i % len(envoys)], key) for i in range(n)]


def remaining(r):
    return int(r.headers["x-ratelimit-remaining"])


def assert_healthy(envoys):
    for e in envoys:
        assert e.alive()
        assert "panic" not in e.log_text().lower()


def test_two_replicas_share_one_limit_in_global_mode(replicas, keys):
    away_from_the_hour_boundary()
    envoys = replicas("global")
    key = keys.new(rate_limit_per_hour=40)
    answers = spread(envoys, key, 100)
    allowed = [r for r in answers if r.status_code == 200]
    assert len(allowed) == 40, [r.status_code for r in answers]
    # One count across both replicas: each answer has one fewer left.
    assert [remaining(r) for r in allowed] == list(range(39, -1, -1))
    assert answers[:40] == allowed, "the first 40 pass, whichever replica served them"
    for r in answers[40:]:
        assert r.status_code == 429 and r.json()["error_code"] == "RESOURCE_EXHAUSTED"
        assert r.headers["x-ratelimit-limit"] == "40" and remaining(r) == 0
        assert 0 < int(r.headers["retry-after"]) <= 3600
    for e in envoys:
        s = e.stats("wasmcustom.hokusai_auth.ratelimit")
        assert s.get("wasmcustom.hokusai_auth.ratelimit.call") == 50
        assert s.get("wasmcustom.hokusai_auth.ratelimit.error", 0) == 0
    assert_healthy(envoys)


def test_local_mode_counts_per_replica(replicas, keys):
    """The default: each Envoy counts alone, so N replicas allow N× the limit."""
    envoys = replicas("local")
    key = keys.new(rate_limit_per_hour=40)
    answers = spread(envoys, key, 100)
    assert sum(r.status_code == 200 for r in answers) == 80
    for e in envoys:
        assert e.stat("wasmcustom.hokusai_auth.ratelimit.call") == 0


def test_redis_stopped_and_restarted(replicas, keys, redis):
    away_from_the_hour_boundary()
    envoys = replicas("global", failure_mode="local")
    key = keys.new(rate_limit_per_hour=40)
    before = spread(envoys, key, 10)
    assert [remaining(r) for r in before] == list(range(39, 29, -1))
    redis.stop()
    try:
        during = spread(envoys, key, 10)
    finally:
        redis.start()
    # The service fails each call (UNAVAILABLE); each replica counts alone
    # meanwhile, from its own empty count.
    assert all(r.status_code == 200 for r in during)
    assert sorted(remaining(r) for r in during) == sorted(list(range(39, 34, -1)) * 2)
    fallbacks = sum(e.stat("wasmcustom.hokusai_auth.ratelimit.fallback.local") for e in envoys)
    assert fallbacks == 10
    # Back: the service counts again. The restarted Redis kept nothing (no
    # persistence), so the window starts over.
    after = spread(envoys, key, 4)
    assert [remaining(r) for r in after] == [39, 38, 37, 36]
    assert_healthy(envoys)


@pytest.mark.parametrize("failure_mode", ["local", "allow", "deny"])
def test_rate_limit_service_down_each_failure_mode(replicas, keys, rls, failure_mode):
    away_from_the_hour_boundary()
    envoys = replicas("global", failure_mode=failure_mode)
    key = keys.new(rate_limit_per_hour=40)
    assert remaining(call(envoys[0], key)) == 39
    rls.stop()
    try:
        answers = spread(envoys, key, 6)
    finally:
        rls.start()
    if failure_mode == "deny":
        for r in answers:
            assert r.status_code == 503 and r.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
            assert r.headers["x-hokusai-auth-reply"] == "rate_limit_unavailable"
    elif failure_mode == "allow":
        for r in answers:
            assert r.status_code == 200 and "x-ratelimit-remaining" not in r.headers
    else:
        assert all(r.status_code == 200 for r in answers)
        assert sorted(remaining(r) for r in answers) == [37, 37, 38, 38, 39, 39]
    stat = f"wasmcustom.hokusai_auth.ratelimit.fallback.{failure_mode}"
    assert sum(e.stat(stat) for e in envoys) == 6
    # The service is back (same Redis, same window): counting goes on from
    # the one request it saw.
    assert [remaining(r) for r in spread(envoys, key, 2)] == [38, 37]
    assert_healthy(envoys)


def test_a_service_that_never_answers_costs_one_timeout(replicas, keys):
    """A listener that accepts and never speaks: each request waits the
    configured timeout_ms, then the failure mode decides."""
    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen(64)
        envoys = replicas("global", port=hole.getsockname()[1], failure_mode="deny", timeout_ms=200)
        key = keys.new(rate_limit_per_hour=40)
        for r in spread(envoys, key, 4):
            assert r.status_code == 503 and r.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
    for e in envoys:
        assert e.stat("cluster.hokusai_ratelimit.upstream_rq_timeout") == 2
        assert e.stat("wasmcustom.hokusai_auth.ratelimit.fallback.deny") == 2
    assert_healthy(envoys)


def test_the_dev_stack_restarts_a_dead_dependency_on_its_port(workdir, keysvc):
    """scripts/stack.py --replicas 2 --global-rate-limit: Redis or the rate
    limit service exiting is restarted, not the end of the stack, so that
    an operator can rehearse the fleet's outage."""
    from hokusai_testkit.local_stack import LocalStack, Switches

    stack = LocalStack(workdir / "revive", Switches(replicas=2, global_rate_limit=True, ownership=False),
                       name="revive", keysvc=keysvc)
    try:
        redis, rls = stack.dependencies
        ports = (redis.port, rls.port)
        url = stack.urls[1] + "/api/mlflow/api/2.0/mlflow/experiments/search?max_results=1"
        auth = {"Authorization": f"Bearer {harness.RW_KEY}"}
        before = requests.get(url, headers=auth, timeout=10)
        assert before.status_code == 200, before.text
        assert stack.revive_dependencies() == [], "nothing to restart while both live"
        redis.proc.p.kill()
        rls.proc.p.kill()
        harness.wait_until("both exited", lambda: not redis.proc.alive() and not rls.proc.alive(), timeout=10)
        assert sorted(stack.revive_dependencies()) == sorted([redis.proc.name, rls.proc.name])
        assert (redis.port, rls.port) == ports and redis.proc.alive() and rls.proc.alive()
        # Counted again by the restarted service (Redis restarts empty).
        after = harness.wait_until(
            "the rate limit service answering the gateway",
            lambda: (r := requests.get(url, headers=auth, timeout=10)).status_code == 200
            and "x-ratelimit-remaining" in r.headers and r, timeout=20)
        assert int(after.headers["x-ratelimit-remaining"]) >= int(before.headers["x-ratelimit-remaining"])
        assert all(e.alive() for e in stack.envoys), "the gateways were never stopped"
    finally:
        stack.stop()
