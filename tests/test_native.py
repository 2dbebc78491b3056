"""What only the native build (the dynamic module) does, in a real Envoy:
one cache and one single-flight for the whole process, and the plugin JSON
as a Struct. The rest of the Envoy-level suite runs
against it too (scripts/test.sh, HOKUSAI_FILTER=native)."""

import concurrent.futures as cf

import pytest
import requests

from hokusai_testkit import harness

pytestmark = pytest.mark.usefixtures("normal_mode")

RUNS_SEARCH = "/api/mlflow/api/2.0/mlflow/runs/search"


def native(start_envoy, **kw):
    kw.setdefault("concurrency", 2)
    return start_envoy(filter="native", **kw)


def per_worker_connections(e) -> list[int]:
    stats = e.stats("listener.127.0.0.1_")
    return [v for k, v in sorted(stats.items()) if ".worker_" in k and k.endswith(".downstream_cx_total")]


def burst(e, key: str, n: int) -> list[int]:
    """n requests at once, each on its own connection."""
    def one(_):
        with requests.Session() as s:
            return s.post(e.url + RUNS_SEARCH, headers={"Authorization": f"Bearer {key}"}, timeout=10).status_code

    with cf.ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


@pytest.mark.parametrize("workers", [2, 8])
def test_a_cold_burst_of_64_on_every_worker_makes_exactly_one_callout(start_envoy, keys, keysvc, workers):
    e = native(start_envoy, concurrency=workers)
    key = keys.new()
    keysvc.mode("normal", delay_ms=300)  # keep the callout in flight while the burst arrives
    before = keysvc.calls()
    assert burst(e, key, 64) == [200] * 64
    assert keysvc.calls() - before == 1
    reached = per_worker_connections(e)
    assert len(reached) == workers and min(reached) > 0, f"the burst reached every worker: {reached}"


def test_a_verdict_cached_on_one_worker_is_a_hit_on_the_other(start_envoy, keys, keysvc):
    e = native(start_envoy)
    key = keys.new()
    assert burst(e, key, 1) == [200]
    before = keysvc.calls()
    assert burst(e, key, 16) == [200] * 16
    assert keysvc.calls() == before
    assert min(per_worker_connections(e)) > 0


def test_the_plugin_json_may_come_as_a_struct_as_envoy_gateway_sends_it(start_envoy, echo):
    e = native(start_envoy, struct_config=True)
    r = requests.post(e.url + RUNS_SEARCH, headers={"Authorization": f"Bearer {harness.RW_KEY}"}, timeout=10)
    assert r.status_code == 200
    assert {k.lower(): v for k, v in echo.requests()[-1]["headers"]}["x-hokusai-user-id"] == "u_rw"

