"""Fixtures: keys made by the key tool, and real MLflow servers with the
plugin (each started once per session, always stopped)."""

from __future__ import annotations

import subprocess
import sys
import uuid
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import requests

from mlflow_server import PLUGIN_DIR, MlflowAuthServer
from tokens import HEADER, Signer

REQUEST_TIMEOUT = 30


def make_key(kid: str, directory: Path) -> None:
    subprocess.run([sys.executable, "-m", "hokusai_mlflow_plugin.keys", "new", "--kid", kid, "--dir", str(directory)],
                   check=True, cwd=PLUGIN_DIR, capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def keys_dir(tmp_path_factory) -> Path:
    """A JWKS with two keys (k1, then k2: a rotation in progress)."""
    directory = tmp_path_factory.mktemp("keys")
    make_key("k1", directory)
    make_key("k2", directory)
    return directory


@pytest.fixture(scope="session")
def signer(keys_dir) -> Signer:
    return Signer(keys_dir / "k1.pem", "k1")


@pytest.fixture(scope="session")
def signer2(keys_dir) -> Signer:
    return Signer(keys_dir / "k2.pem", "k2")


@pytest.fixture(scope="session")
def stranger_dir(tmp_path_factory) -> Path:
    """Keys MLflow was never told about."""
    directory = tmp_path_factory.mktemp("stranger-keys")
    make_key("k1", directory)
    make_key("k9", directory)
    return directory


class Api:
    """MLflow's REST API as one caller (one assertion) sees it."""

    def __init__(self, url: str, token: str | None):
        self.url, self.token = url, token

    def call(self, method: str, path: str, body: dict | None = None, params: dict | None = None,
             headers: dict | None = None) -> requests.Response:
        sent = {"content-type": "application/json"}
        if self.token is not None:
            sent[HEADER] = self.token
        sent.update(headers or {})
        return requests.request(method, self.url + path, json=body, params=params, headers=sent,
                                timeout=REQUEST_TIMEOUT)


def _serve(tmp_path_factory, keys_dir, name, **kwargs):
    server = MlflowAuthServer(tmp_path_factory.mktemp(name), keys_dir / "jwks.json", **kwargs)
    try:
        server.wait_healthy()
        yield server
    finally:
        server.stop()


def _require_installed_entry_point() -> None:
    names = {e.name for e in entry_points(group="mlflow.app")}
    if "hokusai-auth" not in names:
        raise RuntimeError("the mlflow.app entry point hokusai-auth is not registered: "
                           "`.venv/bin/python -m pip install -e ./mlflow-plugin` (scripts/setup.sh)")


@pytest.fixture(scope="session")
def server(tmp_path_factory, keys_dir):
    """`--app-name basic-auth`, default_permission READ."""
    yield from _serve(tmp_path_factory, keys_dir, "mlflow-read")


@pytest.fixture(scope="session")
def strict_server(tmp_path_factory, keys_dir):
    """`--app-name hokusai-auth` (JSON 403s), default_permission NO_PERMISSIONS."""
    _require_installed_entry_point()
    yield from _serve(tmp_path_factory, keys_dir, "mlflow-strict", default_permission="NO_PERMISSIONS",
                      app_name="hokusai-auth")


@pytest.fixture
def as_user(server, signer):
    def api(sub: str, is_admin: bool = False, on=None) -> Api:
        return Api((on or server).url, signer.token(sub, is_admin=is_admin))
    return api


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:10]
