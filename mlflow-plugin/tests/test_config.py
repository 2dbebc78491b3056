"""Configuration errors name the variable to fix (no server needed)."""

from __future__ import annotations

import json

import pytest

from hokusai_mlflow_plugin.config import ConfigError, load_config
from hokusai_mlflow_plugin.keys import main as keys_main


@pytest.fixture
def jwks(tmp_path):
    keys_main(["new", "--kid", "k1", "--dir", str(tmp_path)])
    return tmp_path / "jwks.json"


def test_defaults(jwks):
    config = load_config({"HOKUSAI_IDENTITY_JWKS": str(jwks)})
    assert (config.audience, config.issuer, config.header) == ("mlflow", "hokusai-gateway", "x-hokusai-identity")
    assert list(config.keys) == ["k1"]


def test_overrides(jwks):
    config = load_config({"HOKUSAI_IDENTITY_JWKS": str(jwks), "HOKUSAI_IDENTITY_AUDIENCE": "mlflow-prod",
                          "HOKUSAI_IDENTITY_ISSUER": "gw", "HOKUSAI_IDENTITY_HEADER": "x-id"})
    assert (config.audience, config.issuer, config.header) == ("mlflow-prod", "gw", "x-id")


def _jwk(jwks, **changes):
    key = json.loads(jwks.read_text())["keys"][0]
    key.update(changes)
    return key


@pytest.mark.parametrize("document,expected", [
    (None, "HOKUSAI_IDENTITY_JWKS is not set"),
    ("missing", "cannot read"),
    ("{not json", "not JSON"),
    ('{"keys": []}', "no keys"),
    ('["k1"]', "not a JWKS"),
    ("private", "holds private key material"),
    ("rsa", "not an Ed25519 key"),
    ("no-kid", "no kid"),
    ("three", "3 keys; at most 2"),
])
def test_bad_jwks_names_the_variable(tmp_path, jwks, document, expected):
    environ = {}
    if document is not None:
        path = tmp_path / "bad.json"
        environ["HOKUSAI_IDENTITY_JWKS"] = str(path)
        variants = {
            "private": {"keys": [_jwk(jwks, d="AAAA")]},
            "rsa": {"keys": [_jwk(jwks, kty="RSA")]},
            "no-kid": {"keys": [{k: v for k, v in _jwk(jwks).items() if k != "kid"}]},
            "three": {"keys": [_jwk(jwks, kid=f"k{i}") for i in range(3)]},
        }
        if document in variants:
            path.write_text(json.dumps(variants[document]))
        elif document != "missing":
            path.write_text(document)
    with pytest.raises(ConfigError) as raised:
        load_config(environ)
    assert raised.value.variable == "HOKUSAI_IDENTITY_JWKS"
    assert "HOKUSAI_IDENTITY_JWKS" in str(raised.value) and expected in str(raised.value)


def test_empty_override_names_its_variable(jwks):
    with pytest.raises(ConfigError) as raised:
        load_config({"HOKUSAI_IDENTITY_JWKS": str(jwks), "HOKUSAI_IDENTITY_AUDIENCE": " "})
    assert raised.value.variable == "HOKUSAI_IDENTITY_AUDIENCE"
    assert "HOKUSAI_IDENTITY_AUDIENCE is set but empty" in str(raised.value)
