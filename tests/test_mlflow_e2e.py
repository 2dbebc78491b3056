"""End to end: the unmodified MLflow client, configured only by environment
variables, against a real MLflow server behind Envoy and the filter."""

import json
import os
import subprocess
import sys
import uuid

import pytest
import requests

import harness

SCENARIOS = harness.ROOT / "tests/mlflow_scenarios.py"


@pytest.fixture(scope="module")
def stack(workdir, keysvc):
    server = harness.MlflowServer(workdir / f"mlflow-{uuid.uuid4().hex[:6]}")
    gw = harness.Envoy(workdir, upstream_port=server.port, auth_port=keysvc.port, name="envoy-mlflow")
    yield gw
    gw.stop()
    server.stop()


def run_client(gw, scenario, mount="/api/mlflow", token=None, basic=None, big_mib=0, timeout=600):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(MLFLOW_TRACKING_URI=gw.url + mount, E2E_TAG=uuid.uuid4().hex[:8], E2E_BIG_MIB=str(big_mib),
               # Keep failures fast: the client's default backoff retries 5xx for minutes.
               MLFLOW_HTTP_REQUEST_MAX_RETRIES="2", MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR="0")
    if token:
        env["MLFLOW_TRACKING_TOKEN"] = token
    if basic:
        env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"] = basic
    work = harness.workdir("mlflow-client-")
    p = subprocess.run([sys.executable, str(SCENARIOS), scenario, str(work)], env=env, capture_output=True,
                       text=True, timeout=timeout, cwd=work)
    assert p.returncode == 0, f"{scenario} failed:\n{p.stdout[-3000:]}\n{p.stderr[-6000:]}"
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


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
