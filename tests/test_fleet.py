"""A fleet: three real Envoy replicas with the filter, counting one key's
hourly limit together in rate_limit.mode "global" (the rate limit service
stand-in on a real Redis, as envoyproxy/ratelimit counts), each spending
leases of the key's hits; or each on its own in the default local mode.
Faults: the rate limit service stopped, Redis stopped and Redis frozen,
each for 10 s mid-run, under each failure_mode."""

import socket
import time

import pytest
import requests

from hokusai_testkit import harness

API = "/api/mlflow/api/2.0/mlflow/experiments/search"
# Every request is bounded: a request that waits on a dead service longer
# than the filter's timeout would fail here, not hang the suite.
CLIENT_TIMEOUT_S = 10
# The filter's call timeout in these tests: 1 s, not the 20 ms default: a
# worker's first call opens its HTTP/2 connection, which on a loaded test
# machine can take longer, and the counting tests must not fall back. The
# hang test sets its own.
TIMEOUT_MS = 1000
OUTAGE_S = 10


@pytest.fixture(scope="module")
def redis(workdir):
    # Persisted, as a production Redis behind the rate limit service is: a
    # Redis that restarts empty gives every key its window back.
    r = harness.Redis(workdir, name=f"redis-{id(object())}", persist=True)
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


def limit_config(mode, replicas, failure_mode="local", timeout_ms=TIMEOUT_MS, **extra):
    section = {"mode": mode}
    if mode == "global":
        section.update(cluster="hokusai_ratelimit", failure_mode=failure_mode, timeout_ms=timeout_ms,
                       replicas=replicas, **extra)
    return harness.plugin_config(rate_limit=section)


@pytest.fixture
def replicas(start_envoy, rls):
    """n Envoys with the same plugin config (which says there are n),
    sharing the key service and the rate limit service."""
    def start(mode, n=3, port=None, concurrency=2, **kw):
        cfg = limit_config(mode, n, **kw)
        return [start_envoy(cfg, ratelimit_port=port or rls.port, concurrency=concurrency) for _ in range(n)]
    return start


def away_from_the_hour_boundary(need_s=30):
    """The service's windows are wall-clock hours: a run that crosses one
    would start counting again halfway. Wait out the end of an hour."""
    left = 3600 - time.time() % 3600
    if left < need_s:
        time.sleep(left + 1)


def call(envoy, key):
    return requests.get(envoy.url + API, headers={"Authorization": f"Bearer {key}"}, timeout=CLIENT_TIMEOUT_S)


def spread(envoys, key, n, start=0):
    """n requests, one replica after the other."""
    return [call(envoys[(start + i) % len(envoys)], key) for i in range(n)]


def remaining(r):
    return int(r.headers["x-ratelimit-remaining"])


def total(envoys, name):
    return sum(e.stat(f"wasmcustom.hokusai_auth.{name}") for e in envoys)


def assert_healthy(envoys):
    for e in envoys:
        assert e.alive()
        assert "panic" not in e.log_text().lower()


def test_three_replicas_share_one_limit_in_global_mode(replicas, keys):
    away_from_the_hour_boundary()
    envoys = replicas("global")
    key = keys.new(rate_limit_per_hour=40)
    answers = spread(envoys, key, 100)
    allowed = [r for r in answers if r.status_code == 200]
    assert len(allowed) == 40, [r.status_code for r in answers]
    # 40 over 3 replicas leases one hit at a time, so each answer says
    # exactly what the fleet has left.
    assert [remaining(r) for r in allowed] == list(range(39, -1, -1))
    assert answers[:40] == allowed, "the first 40 pass, whichever replica served them"
    for r in answers[40:]:
        assert r.status_code == 429 and r.json()["error_code"] == "RESOURCE_EXHAUSTED"
        assert r.headers["x-ratelimit-limit"] == "40" and remaining(r) == 0
        assert 0 < int(r.headers["retry-after"]) <= 3600
    # Once a replica hears the window is spent it asks no more.
    assert total(envoys, "ratelimit.call") == 40 + 3
    assert total(envoys, "ratelimit.error") == 0
    assert_healthy(envoys)


@pytest.mark.parametrize("workers", [2, 8])
def test_a_busy_key_is_counted_in_leases_and_still_exactly(replicas, keys, workers):
    """600 an hour over three replicas: leases of many hits, a call for
    far fewer than one request in two, and still exactly 600; each request
    on a connection of its own, so the workers of a replica share its
    leases."""
    away_from_the_hour_boundary()
    envoys = replicas("global", concurrency=workers)
    key = keys.new(rate_limit_per_hour=600)
    answers = spread(envoys, key, 700)
    statuses = [r.status_code for r in answers]
    assert statuses == [200] * 600 + [429] * 100
    calls, leased = total(envoys, "ratelimit.call"), total(envoys, "ratelimit.leased")
    assert calls + leased == 600 + 3, (calls, leased)
    assert calls * 2 < 600, calls
    # Each answer's remaining is what its replica knows the fleet has left
    # (what the service last said, plus the replica's lease): one fewer on
    # each of its answers.
    for i in range(3):
        seen = [remaining(r) for r in answers[i:600:3]]
        assert all(a > b for a, b in zip(seen, seen[1:])), seen
    print(f"600 an hour, {workers} workers: {calls} calls, {leased} admitted from leases")
    assert_healthy(envoys)


def test_local_mode_counts_per_replica(replicas, keys):
    """The default: each Envoy counts alone, so N replicas allow N× the limit."""
    envoys = replicas("local")
    key = keys.new(rate_limit_per_hour=40)
    answers = spread(envoys, key, 150)
    assert sum(r.status_code == 200 for r in answers) == 120
    assert total(envoys, "ratelimit.call") == 0


class Fault:
    """One of the outages the fleet must ride out, for OUTAGE_S."""

    def __init__(self, kind, redis, rls):
        self.kind, self.redis, self.rls = kind, redis, rls

    def begin(self):
        {"rate_limit_service_stopped": self.rls.stop, "redis_stopped": self.redis.stop,
         "redis_frozen": self.redis.freeze}[self.kind]()

    def end(self):
        {"rate_limit_service_stopped": self.rls.start, "redis_stopped": self.redis.start,
         "redis_frozen": self.redis.thaw}[self.kind]()


def timed(envoy, key):
    t = time.monotonic()
    r = call(envoy, key)
    return r, time.monotonic() - t


@pytest.mark.parametrize("kind", ["rate_limit_service_stopped", "redis_stopped", "redis_frozen"])
def test_an_outage_spends_only_what_the_fleet_had_left(replicas, keys, redis, rls, kind):
    """Three replicas, 40 an hour, requests in turn: after 15 the fault
    begins, requests go on for 10 s, the fault ends and requests go on. The fleet admits at most 40 + 3 (each replica its
    share of what was left when last heard), no request fails and none
    waits longer than the call's timeout."""
    away_from_the_hour_boundary(need_s=OUTAGE_S + 60)
    envoys = replicas("global", failure_mode="local")
    key = keys.new(rate_limit_per_hour=40)
    answers = [timed(e, key) for e in [envoys[i % 3] for i in range(15)]]
    assert [r.status_code for r, _ in answers] == [200] * 15
    fault = Fault(kind, redis, rls)
    fault.begin()
    try:
        until = time.monotonic() + OUTAGE_S
        while time.monotonic() < until:
            answers.append(timed(envoys[len(answers) % 3], key))
            time.sleep(0.1)
    finally:
        fault.end()
    during = len(answers) - 15
    answers += [timed(envoys[(len(answers) + i) % 3], key) for i in range(max(15, 100 - len(answers)))]
    statuses = [r.status_code for r, _ in answers]
    assert set(statuses) <= {200, 429}, statuses
    allowed = statuses.count(200)
    assert allowed <= 40 + 3, statuses
    assert total(envoys, "ratelimit.fallback.local") > 0, "the outage was seen"
    slowest = max(t for _, t in answers)
    assert slowest < TIMEOUT_MS / 1000 + 0.5, slowest
    # What the outage admitted was counted once the service was back: the
    # requests after it find the window spent.
    assert statuses[-5:] == [429] * 5, statuses
    print(f"{kind}: {during} requests during the outage, {allowed} admitted in all")
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
        # Each replica its third of what it last heard was left (39), or of
        # the limit (40) if it heard nothing: 13 each.
        assert all(r.status_code == 200 for r in answers)
        assert sorted(remaining(r) for r in answers) == [11, 11, 11, 12, 12, 12]
    stat = f"ratelimit.fallback.{failure_mode}"
    assert total(envoys, stat) == 6
    # The service is back (same Redis, same window): counting goes on from
    # the one request it saw, plus, under `local`, the two each replica
    # admitted meanwhile, counted with its next call.
    after = [remaining(r) for r in spread(envoys, key, 3)]
    assert after == ([36, 33, 30] if failure_mode == "local" else [38, 37, 36])
    assert_healthy(envoys)


def test_a_service_that_never_answers_costs_one_timeout(replicas, keys):
    """A listener that accepts and never speaks: each request waits the
    configured timeout_ms, then the failure mode decides."""
    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen(64)
        envoys = replicas("global", n=2, port=hole.getsockname()[1], failure_mode="deny", timeout_ms=200)
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
