"""What an operator sees when MLflow's side is misconfigured, on real servers,
and what the MLflow client makes of the plugin's error replies."""

from __future__ import annotations

import json

import pytest
import requests
from mlflow.exceptions import RestException
from mlflow.protos.service_pb2 import CreateExperiment
from mlflow.utils.rest_utils import MlflowHostCreds, call_endpoint

from conftest import Api, _require_installed_entry_point
from mlflow_server import MlflowAuthServer
from tokens import HEADER

EXIT_TIMEOUT = 120


def test_hokusai_auth_app_refuses_to_start_without_a_jwks(tmp_path, keys_dir):
    _require_installed_entry_point()
    server = MlflowAuthServer(tmp_path, keys_dir / "jwks.json", app_name="hokusai-auth",
                              env_overrides={"HOKUSAI_IDENTITY_JWKS": str(tmp_path / "missing.json")})
    try:
        code = server.wait_exit(EXIT_TIMEOUT)
    finally:
        server.stop()
    assert code != 0
    assert "HOKUSAI_IDENTITY_JWKS" in server.log() and "cannot read" in server.log()


def test_basic_auth_app_with_a_bad_jwks_answers_500_naming_the_variable(tmp_path, signer):
    bad = tmp_path / "jwks.json"
    bad.write_text('{"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "k1", "x": "AAAA", "d": "AAAA"}]}')
    server = MlflowAuthServer(tmp_path / "srv", bad)
    try:
        server.wait_healthy()  # basic-auth never imports the plugin before a request
        response = Api(server.url, signer.token("u_any")).call("GET", "/api/2.0/mlflow/users/current")
        assert response.status_code == 500
        assert response.json() == {
            "error_code": "INTERNAL_ERROR",
            "message": "MLflow's Hokusai identity plugin is misconfigured (HOKUSAI_IDENTITY_JWKS); "
                       "see the MLflow server log"}
    finally:
        server.stop()
    assert "holds private key material" in server.log()


def _create_experiment(url: str, token: str, name: str):
    return call_endpoint(MlflowHostCreds(url), "/api/2.0/mlflow/experiments/create",
                         "POST", json.dumps({"name": name}), CreateExperiment.Response(),
                         extra_headers={HEADER: token})


def test_mlflow_client_parses_the_401(server, unique):
    # call_endpoint is the MLflow client's REST path (MlflowClient -> RestStore).
    with pytest.raises(RestException) as raised:
        _create_experiment(server.url, "not-a-jwt", f"exp-{unique}")
    assert raised.value.error_code == "UNAUTHENTICATED"
    assert str(raised.value) == "UNAUTHENTICATED: malformed identity assertion (not a compact JWS)"


def test_mlflow_client_parses_the_hokusai_auth_403(strict_server, signer, unique):
    created = _create_experiment(strict_server.url, signer.token(f"u_a_{unique}"), f"exp-{unique}")
    with pytest.raises(RestException) as raised:
        call_endpoint(MlflowHostCreds(strict_server.url), "/api/2.0/mlflow/experiments/get", "GET",
                      json.dumps({"experiment_id": created.experiment_id}), CreateExperiment.Response(),
                      extra_headers={HEADER: signer.token(f"u_b_{unique}")})
    assert raised.value.error_code == "PERMISSION_DENIED"
    assert str(raised.value).startswith("PERMISSION_DENIED: Permission denied")


def test_mlflow_client_accepts_a_valid_assertion(server, signer, unique):
    created = _create_experiment(server.url, signer.token(f"u_a_{unique}"), f"exp-{unique}")
    assert created.experiment_id
    assert requests.get(f"{server.url}/api/2.0/mlflow/experiments/get", params={"experiment_id": created.experiment_id},
                        headers={HEADER: signer.token(f"u_a_{unique}")}, timeout=30).status_code == 200
