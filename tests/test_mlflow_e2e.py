"""End to end: the unmodified MLflow client, configured only by environment
variables, against a real MLflow server behind Envoy and the filter; MLflow
runs its auth app with the Hokusai plugin, trusting the filter's signed
identity, as deployed (who may change whose work: test_ownership.py)."""

import uuid

import pytest
import requests

from hokusai_testkit import harness


@pytest.fixture(scope="module")
def stack(workdir, keysvc):
    name = f"e2e-{uuid.uuid4().hex[:6]}"
    ownership = harness.Ownership.made_in(workdir / f"identity-{name}")
    with harness.mlflow_gateway(workdir, name, keysvc.port, ownership) as gw:
        yield gw


def run_client(gw, scenario, mount="/api/mlflow", token=None, basic=None, big_mib=0, timeout=600):
    result, _ = harness.run_mlflow_client(gw.url + mount, scenario, token=token, basic=basic, big_mib=big_mib,
                                          timeout=timeout)
    return result


def test_full_session_with_a_100_mib_artifact(stack):
    peak_before = stack.memory_kb("VmHWM")
    out = run_client(stack, "full", token=harness.RW_KEY, big_mib=100)
    # Streamed, not buffered: Envoy's peak memory grows far less than the artifact.
    assert stack.memory_kb("VmHWM") - peak_before < 32 * 1024
    assert out["big_bytes"] == 100 * 1024 * 1024
    assert out["big_sha256_up"] == out["big_sha256_down"]
    assert out["versions"] == ["1", "2"]


def test_full_session_through_the_mlflow_mount(stack):
    run_client(stack, "full", mount="/mlflow", token=harness.RW_KEY)


def test_full_session_with_http_basic(stack):
    run_client(stack, "full", basic=("mlflow-user", harness.RW_KEY))


def test_admin_key_with_nested_identity(stack):
    run_client(stack, "full", token=harness.ADMIN_KEY)


def downstream_4xx(gw):
    return gw.stat("http.gateway.downstream_rq_4xx")


def test_bad_key_shows_unauthenticated_and_is_not_retried(stack):
    before = downstream_4xx(stack)
    out = run_client(stack, "expect_error", token="hk_test_" + uuid.uuid4().hex)
    assert "UNAUTHENTICATED" in out["error"], out
    assert "invalid, expired, or not registered for service 'platform'" in out["error"]
    assert downstream_4xx(stack) - before == 1, "the client retried a 401"


def test_missing_key_tells_the_user_what_to_set(stack):
    out = run_client(stack, "expect_error")
    assert "UNAUTHENTICATED" in out["error"] and "MLFLOW_TRACKING_TOKEN" in out["error"], out


def test_read_only_key_reads_but_cannot_write(stack):
    before = downstream_4xx(stack)
    out = run_client(stack, "read_only_write", token=harness.RO_KEY)
    assert out["read"] >= 1
    assert "PERMISSION_DENIED" in out["error"] and "mlflow:write" in out["error"], out
    assert harness.RO_KEY not in out["error"]
    assert downstream_4xx(stack) - before == 1, "the client retried a 403"


def test_health_reaches_mlflow_without_a_key(stack):
    r = requests.get(stack.url + "/api/mlflow/health/mlflow", timeout=10)
    assert r.status_code == 200 and r.text.strip() == "OK"


def test_mlflow_behind_the_gateway_answers_nobody_but_the_gateway(stack):
    """The sessions above passed MLflow's auth app: without the filter's
    signed identity, MLflow itself refuses."""
    r = requests.post(stack.mlflow.url + "/api/2.0/mlflow/experiments/search", json={"max_results": 1}, timeout=10)
    assert r.status_code == 401 and r.json()["error_code"] == "UNAUTHENTICATED", r.text
