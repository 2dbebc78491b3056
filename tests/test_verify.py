"""The verifier (scripts/verify.sh, verify/) against the local stack: healthy,
every step passes and nothing it made is left in MLflow; and broken one layer
at a time (hokusai_testkit.local_stack's switches), the diagnosis names the cause.
The verifier runs as users run it: its own process, the key in
MLFLOW_TRACKING_TOKEN."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests

from hokusai_testkit import harness
from hokusai_testkit.local_stack import LocalStack, Switches

VERIFY = Path(sys.executable).parent / "hokusai-verify"


def verify(url: str, *args: str, token: str | None = harness.RW_KEY) -> tuple[int, dict | str]:
    assert VERIFY.exists(), f"{VERIFY} is missing: run scripts/setup.sh"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    if token is not None:
        env["MLFLOW_TRACKING_TOKEN"] = token
    p = subprocess.run([str(VERIFY), "--tracking-uri", url, "--json", "--timeout", "90", *args], env=env,
                       capture_output=True, text=True, timeout=180)
    assert "Traceback" not in p.stdout + p.stderr, p.stderr[-3000:]
    if token:
        assert token not in p.stdout + p.stderr, "the key was printed"
    out = p.stdout.strip()
    return p.returncode, json.loads(out) if out.startswith("{") else (p.stderr.strip() or out)


def steps(report: dict) -> dict[str, dict]:
    return {s["name"]: s for s in report["steps"]}


def failed(report: dict) -> dict[str, dict]:
    return {n: s for n, s in steps(report).items() if s["status"] == "FAIL"}


@pytest.fixture(scope="module")
def mlflow(workdir):
    server = harness.MlflowServer(workdir / "verify-mlflow")
    yield server
    server.stop()


@pytest.fixture
def stack(workdir, keysvc, mlflow):
    started = []

    def start(**switches):
        s = LocalStack(workdir, Switches(**switches), name=f"verify-{len(started)}", keysvc=keysvc, mlflow=mlflow)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def test_a_healthy_gateway_passes_every_step_and_leaves_nothing_behind(stack, mlflow):
    s = stack()
    rc, report = verify(s.url + "/api/mlflow", "--write", "--artifact-mib", "3")
    assert rc == 0, report
    status = {n: st["status"] for n, st in steps(report).items()}
    assert status.pop("tls") == "SKIP"  # plain HTTP
    assert set(status.values()) == {"PASS"}, report
    assert "sha256 equal" in steps(report)["artifact"]["detail"]
    # What it made is gone: the model outright, the artifact files, and the
    # run and experiment into MLflow's trash (the REST API cannot purge them).
    api = f"{mlflow.url}/api/2.0/mlflow"
    models = requests.get(f"{api}/registered-models/search", timeout=10).json()
    assert not [m for m in models.get("registered_models", []) if m["name"].startswith("hokusai-verify-")]
    exps = requests.post(f"{api}/experiments/search", json={"max_results": 1000, "view_type": "ALL"},
                         timeout=10).json()["experiments"]
    made = [e for e in exps if e["name"].startswith("hokusai-verify-")]
    assert made and all(e["lifecycle_stage"] == "deleted" for e in made)
    leftovers = [p for p in (mlflow.data / "artifacts").rglob("*") if p.is_file() and "hokusai-verify" in str(p)]
    assert not leftovers, leftovers


def test_https_with_a_trusted_certificate_passes(stack):
    s = stack(tls_names=["127.0.0.1"])
    rc, report = verify(s.url + "/api/mlflow", "--ca-file", s.ca_file)
    assert rc == 0, report
    assert steps(report)["tls"]["status"] == "PASS" and "TLS" in steps(report)["tls"]["detail"]


def only_failure(report: dict, step: str, layer: str, *words: str):
    bad = failed(report)
    assert step in bad, report
    assert bad[step]["layer"] == layer, bad[step]
    for w in words:
        assert w in bad[step]["fix"], (w, bad[step])


def test_a_key_for_another_service_is_named_as_such(stack):
    rc, report = verify(stack(service_id="website").url + "/api/mlflow")
    assert rc == 1
    only_failure(report, "key", "key", "'website'", "another service or environment")


def test_no_filter_on_the_route(stack):
    rc, report = verify(stack(no_filter=True).url + "/api/mlflow")
    assert rc == 1
    only_failure(report, "filter", "filter", "not in the path")


def test_mlflow_refusing_the_host_header(stack):
    rc, report = verify(stack(mlflow_allowed_hosts="mlflow.internal").url + "/api/mlflow")
    assert rc == 1
    only_failure(report, "mlflow", "MLflow host check", "--allowed-hosts", "host_rewrite_literal")


def test_the_key_service_down(stack):
    rc, report = verify(stack(auth_down=True).url + "/api/mlflow")
    assert rc == 1
    only_failure(report, "key", "key service", "unavailable")


def test_mlflow_down(stack):
    rc, report = verify(stack(mlflow_down=True).url + "/api/mlflow")
    assert rc == 1
    only_failure(report, "mlflow", "MLflow", "could not reach MLflow")
    assert steps(report)["key"]["status"] == "PASS", "the filter answers whoami without MLflow"


def test_an_upstream_that_serves_only_ajax_api_and_the_fix(stack):
    rc, report = verify(stack(ajax_only=True).url + "/api/mlflow")
    assert rc == 1
    only_failure(report, "mlflow", "path rewrite", "mlflow.ajax_api: true")
    rc, report = verify(stack(ajax_only=True, ajax_api=True).url + "/api/mlflow")
    assert rc == 0, report


def test_a_mount_the_filter_does_not_strip(stack):
    rc, report = verify(stack(mount_prefixes=["/elsewhere"]).url + "/api/mlflow")
    assert rc == 1
    only_failure(report, "filter", "filter", "mlflow.mount_prefixes")
    only_failure(report, "mlflow", "path rewrite", "did not strip /api/mlflow")


def test_no_route_to_mlflow(stack):
    rc, report = verify(stack(no_route=True).url + "/api/mlflow")
    assert rc == 1
    only_failure(report, "mlflow", "route", "no route for /api/mlflow")


def test_a_certificate_for_another_name(stack):
    s = stack(tls_names=["wrong.example"])
    rc, report = verify(s.url + "/api/mlflow", "--ca-file", s.ca_file)
    assert rc == 1
    only_failure(report, "tls", "TLS", "wrong.example", "not 127.0.0.1")


def test_a_key_over_its_limit_says_until_when(stack, keys):
    s = stack()
    key = keys.new(rate_limit_per_hour=2)
    for _ in range(2):
        requests.get(s.url + "/api/mlflow/api/2.0/mlflow/experiments/search", headers={"Authorization": f"Bearer {key}"},
                     timeout=10)
    rc, report = verify(s.url + "/api/mlflow", token=key)
    assert rc == 1
    only_failure(report, "key", "rate limit", "until 20")


# --- bad input: one line, a non-zero exit, never a traceback ---------------------


def test_bad_input_is_one_line_and_exit_2(stack):
    url = stack().url
    for args, token, words in [
        ((url,), "", "MLFLOW_TRACKING_TOKEN is empty"),
        ((url,), None, "MLFLOW_TRACKING_TOKEN is empty"),
        ((url + "/",), harness.RW_KEY, "no mount prefix"),
        (("ftp://example.com/api/mlflow",), harness.RW_KEY, "must be http(s)"),
    ]:
        rc, out = verify(*args, token=token)
        assert rc == 2 and isinstance(out, str) and len(out.splitlines()) == 1 and words in out, (args, out)


def test_unreachable_and_non_http_urls_are_diagnosed():
    dead = harness.free_port()
    rc, report = verify(f"http://127.0.0.1:{dead}/api/mlflow")
    assert rc == 1
    only_failure(report, "tcp", "TCP", "nothing accepts connections")
    with not_http_server() as port:
        rc, report = verify(f"http://127.0.0.1:{port}/api/mlflow")
        assert rc == 1
        only_failure(report, "health", "HTTP", "does not answer HTTP")
        rc, report = verify(f"https://127.0.0.1:{port}/api/mlflow")
        assert rc == 1
        assert failed(report)["tls"]["layer"] == "TLS"


class not_http_server:
    """A TCP server that greets like SSH and hangs up."""

    def __enter__(self) -> int:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()
        return self.sock.getsockname()[1]

    def serve(self):
        while not self.done.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join(timeout=5)
        self.sock.close()
