"""The key tool, run as operators run it (`python -m ...`)."""

from __future__ import annotations

import json
import stat
import subprocess
import sys

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hokusai_mlflow_plugin.config import load_jwks_file
from mlflow_server import PLUGIN_DIR


def keys(*args, directory):
    return subprocess.run([sys.executable, "-m", "hokusai_mlflow_plugin.keys", *args, "--dir", str(directory)],
                          cwd=PLUGIN_DIR, capture_output=True, text=True, timeout=60)


def kids(directory):
    return [k["kid"] for k in json.loads((directory / "jwks.json").read_text())["keys"]]


def test_new_writes_a_private_pem_and_publishes_the_public_key(tmp_path):
    result = keys("new", "--kid", "k1", directory=tmp_path)

    assert result.returncode == 0, result.stderr
    pem = tmp_path / "k1.pem"
    assert stat.S_IMODE(pem.stat().st_mode) == 0o600
    assert pem.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8
    private_key = serialization.load_pem_private_key(pem.read_bytes(), password=None)
    assert isinstance(private_key, Ed25519PrivateKey)
    published = load_jwks_file(tmp_path / "jwks.json")["k1"]
    assert published.public_bytes_raw() == private_key.public_key().public_bytes_raw()
    assert "d" not in json.loads((tmp_path / "jwks.json").read_text())["keys"][0]
    assert "PRIVATE" not in result.stdout + result.stderr


def test_new_keeps_the_newest_two_keys(tmp_path):
    for kid in ("k1", "k2", "k3"):
        assert keys("new", "--kid", kid, directory=tmp_path).returncode == 0

    assert kids(tmp_path) == ["k2", "k3"]


def test_new_refuses_a_kid_in_use(tmp_path):
    keys("new", "--kid", "k1", directory=tmp_path)
    before = (tmp_path / "k1.pem").read_bytes()

    result = keys("new", "--kid", "k1", directory=tmp_path)

    assert result.returncode == 1 and "already in" in result.stderr
    assert (tmp_path / "k1.pem").read_bytes() == before


def test_new_refuses_a_kid_that_is_not_a_file_name(tmp_path):
    result = keys("new", "--kid", "../evil", directory=tmp_path)
    assert result.returncode == 2 and "a kid is" in result.stderr
    assert not (tmp_path / "jwks.json").exists()


def test_retire_removes_the_key_but_never_the_last(tmp_path):
    keys("new", "--kid", "k1", directory=tmp_path)
    keys("new", "--kid", "k2", directory=tmp_path)

    assert keys("retire", "--kid", "k1", directory=tmp_path).returncode == 0
    assert kids(tmp_path) == ["k2"]
    last = keys("retire", "--kid", "k2", directory=tmp_path)
    assert last.returncode == 1 and "only key" in last.stderr
    assert kids(tmp_path) == ["k2"]
    unknown = keys("retire", "--kid", "k7", directory=tmp_path)
    assert unknown.returncode == 1 and "not in" in unknown.stderr
