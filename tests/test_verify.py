"""The verifier (scripts/verify.sh, verify/) against the local stack: healthy,
every step passes and nothing it made is left in MLflow; and broken one layer
at a time (hokusai_testkit.local_stack's switches), the diagnosis names the cause.
The verifier runs as users run it: its own process, the key in
MLFLOW_TRACKING_TOKEN. The stacks share one MLflow with its auth app and the
Hokusai plugin, and sign with the key pair it trusts (kept in its data
directory), unless a test asks otherwise."""

from __future__ import annotations

import json
import os
import re
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


MLFLOW_DIR = "verify-mlflow"  # the shared MLflow's data, and the key pair it trusts


@pytest.fixture(scope="module")
def mlflow(workdir):
    data = workdir / MLFLOW_DIR
    server = harness.MlflowServer(data, ownership=harness.Ownership.made_in(data / "identity"))
    yield server
    server.stop()


@pytest.fixture
def stack(workdir, keysvc, mlflow):
    """A local stack with these switches. The shared MLflow, signed for with
    the key pair it trusts (unless own_keys: the stack's own pair, which
    MLflow does not know), when it fits: not for ownership=False (it runs
    the auth app) nor for mlflow_allowed_hosts (the stack starts its own)."""
    started = []

    def start(own_keys=False, **switches):
        sw = Switches(**switches)
        shared = sw.ownership and not sw.mlflow_allowed_hosts
        mlflow_dir = workdir / MLFLOW_DIR if shared and not own_keys else None
        s = LocalStack(workdir, sw, name=f"verify-{len(started)}", keysvc=keysvc, mlflow=mlflow if shared else None,
                       mlflow_dir=mlflow_dir)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


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
    # MLflow answers only the gateway's signed requests: asked as the admin,
    # who sees everything.
    api = f"{s.url}/api/mlflow/api/2.0/mlflow"
    admin = bearer(harness.ADMIN_KEY)
    models = requests.get(f"{api}/registered-models/search", headers=admin, timeout=10).json()
    assert not [m for m in models.get("registered_models", []) if m["name"].startswith("hokusai-verify-")]
    exps = requests.post(f"{api}/experiments/search", json={"max_results": 1000, "view_type": "ALL"},
                         headers=admin, timeout=10).json()["experiments"]
    made = [e for e in exps if e["name"].startswith("hokusai-verify-")]
    assert made and all(e["lifecycle_stage"] == "deleted" for e in made)
    leftovers = [p for p in (mlflow.data / "artifacts").rglob("*") if p.is_file() and "hokusai-verify" in str(p)]
    assert not leftovers, leftovers


def test_mlflow_sees_the_keys_user_and_its_admin_flag(stack):
    s = stack()
    for key, seen in ((harness.RW_KEY, "MLflow sees you as u_rw (admin: no)"),
                      (harness.ADMIN_KEY, "MLflow sees you as u_admin (admin: yes)")):
        rc, report = verify(s.url + "/api/mlflow", token=key)
        assert rc == 0, report
        identity = steps(report)["identity"]
        assert identity["status"] == "PASS", identity
        assert identity["detail"] == f"{seen}, the key's user_id", identity


def test_with_write_the_keys_user_owns_the_experiment_it_made(stack):
    s = stack()
    rc, report = verify(s.url + "/api/mlflow", "--write", "--artifact-mib", "1", token=harness.ALICE_KEY)
    assert rc == 0, report
    owner = steps(report)["ownership"]
    assert owner["status"] == "PASS", owner
    found = re.fullmatch(r"u_alice has MANAGE on experiment (hokusai-verify-\w+) \((\d+)\): its creator owns it",
                         owner["detail"])
    assert found, owner
    # True by MLflow's permissions API, asked as the admin (the experiment is
    # in MLflow's trash by now: cleanup ran); another user does not own it.
    name, experiment_id = found.groups()
    assert steps(report)["experiment"]["detail"] == f"experiment {name} ({experiment_id})"
    # Bob's first request makes him an MLflow user.
    assert requests.get(f"{s.url}/api/mlflow/api/2.0/mlflow/users/current", headers=bearer(harness.BOB_KEY),
                        timeout=10).status_code == 200
    for user, permission in (("u_alice", "MANAGE"), ("u_bob", "READ")):
        got = requests.get(f"{s.url}/api/mlflow/api/3.0/mlflow/users/permissions/get",
                           headers=bearer(harness.ADMIN_KEY), timeout=10,
                           params={"username": user, "resource_type": "experiment", "resource_id": experiment_id})
        assert got.status_code == 200 and got.json()["permission"] == permission, (user, got.text)
    assert steps(report)["cleanup"]["status"] == "PASS"


def test_mlflow_without_its_auth_app_fails_the_identity_step(stack):
    rc, report = verify(stack(ownership=False).url + "/api/mlflow", "--write")
    assert rc == 1
    assert set(failed(report)) == {"identity"}, report
    only_failure(report, "identity", "MLflow auth app", "404", "without its auth app", "cannot tell users apart",
                 "--app-name hokusai-auth", "mlflow-plugin")
    assert steps(report)["mlflow"]["status"] == "PASS"
    assert steps(report)["experiment"]["status"] == "SKIP", "nothing is written into a registry without owners"


def test_a_gateway_signing_with_a_key_mlflow_does_not_trust_is_named_from_its_refusal(stack):
    # The stack's own key pair, same kid: MLflow has that kid with another public key.
    rc, report = verify(stack(own_keys=True).url + "/api/mlflow")
    assert rc == 1
    # Every request MLflow gets is refused: the mlflow step says why, whom it sees is unknown.
    assert set(failed(report)) == {"mlflow"}, report
    only_failure(report, "mlflow", "identity assertion", "bad signature", "signing_key_env", "not that key's pair")
    assert steps(report)["identity"]["status"] == "SKIP"
    assert steps(report)["key"]["status"] == "PASS", "the filter accepts the key; MLflow refuses the assertion"


def test_a_key_without_a_user_id_is_named_as_the_cause(stack, keys):
    key = keys.new(user_id=None)
    rc, report = verify(stack().url + "/api/mlflow", token=key)
    assert rc == 1
    assert set(failed(report)) == {"mlflow"}, report
    only_failure(report, "mlflow", "identity assertion", "no user_id", "signs no identity")
    assert steps(report)["identity"]["status"] == "SKIP"


def test_a_gateway_signing_for_another_audience_is_named_from_mlflows_refusal(stack):
    rc, report = verify(stack(identity_audience="mlflow-staging").url + "/api/mlflow")
    assert rc == 1
    # MLflow refuses every request: the mlflow step says why, whom it sees is unknown.
    assert set(failed(report)) == {"mlflow"}, report
    only_failure(report, "mlflow", "identity assertion", "another audience", "identity_assertion.audience",
                 "HOKUSAI_IDENTITY_AUDIENCE")
    assert steps(report)["identity"]["status"] == "SKIP"


# --- the key sent, and missing to the filter: where it got lost -------------------


def whoami(url: str, headers: dict) -> tuple[int, str | None]:
    r = requests.get(url + "/api/mlflow/_hokusai/whoami", headers=headers, timeout=10)
    return r.status_code, r.headers.get("x-hokusai-auth-reply")


def test_a_front_proxy_dropping_authorization_is_named_and_confirmed_with_x_api_key(stack):
    s = stack(front_proxy_drops=["authorization"])
    # The stack: through the front proxy the filter sees no Bearer key, but
    # sees X-API-Key; the gateway itself takes the Bearer key.
    assert whoami(s.url, bearer(harness.RW_KEY)) == (401, "missing")
    assert whoami(s.url, {"X-API-Key": harness.RW_KEY}) == (200, "whoami")
    assert whoami(s.envoy.url, bearer(harness.RW_KEY)) == (200, "whoami")

    rc, report = verify(s.url + "/api/mlflow")
    assert rc == 1
    assert steps(report)["filter"]["status"] == "PASS"
    words = ("drops the Authorization header", "the filter sees none", "X-API-Key reaches it and works",
             "forward the Authorization header", "cannot send X-API-Key")
    only_failure(report, "key", "front proxy", *words)
    # The MLflow client's refusal has the same cause, not "set the token".
    only_failure(report, "mlflow", "front proxy", *words)
    for step in report["steps"]:
        assert "set MLFLOW_TRACKING_TOKEN" not in (step["fix"] or ""), step


def test_a_front_proxy_dropping_every_credential_header_is_named(stack):
    rc, report = verify(stack(front_proxy_drops=["authorization", "x-api-key"]).url + "/api/mlflow")
    assert rc == 1
    only_failure(report, "key", "front proxy", "neither Authorization nor X-API-Key",
                 "forward Authorization (and X-API-Key)", "cannot send X-API-Key")
    assert "set MLFLOW_TRACKING_TOKEN" not in failed(report)["key"]["fix"]


def test_a_gateway_that_does_not_read_bearer_is_told_apart_from_a_dropped_header(stack):
    # Authorization reaches the filter (it answers the probe's unknown scheme),
    # so the lost Bearer key is the filter's credentials.sources.
    rc, report = verify(stack(credential_sources=["x_api_key"]).url + "/api/mlflow")
    assert rc == 1
    only_failure(report, "key", "key", "does not read the key from Authorization: Bearer", "it works in X-API-Key",
                 "credentials.sources")
    assert "drops" not in failed(report)["key"]["fix"]


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
