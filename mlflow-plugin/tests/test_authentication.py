"""Against a real `mlflow server --app-name basic-auth`: only a valid
assertion gets in, and a refused request changes nothing."""

from __future__ import annotations

import time

import pytest
from cryptography.hazmat.primitives import serialization

from conftest import Api
from tokens import Signer, alg_none_token, claims_for, hs256_with_public_key

CREATE = "/api/2.0/mlflow/experiments/create"


def _public_pem(signer: Signer) -> bytes:
    return signer.private_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                        serialization.PublicFormat.SubjectPublicKeyInfo)


def _tampered(signer: Signer, sub: str) -> str:
    # A validly signed assertion whose payload was swapped for an admin one.
    header, _, signature = signer.token(sub).split(".")
    forged = signer.token(sub, is_admin=True).split(".")[1]
    return f"{header}.{forged}.{signature}"


def _without(claims: dict, name: str) -> dict:
    return {k: v for k, v in claims.items() if k != name}


# (case id, token maker(signer, strangers, sub), what the 401 message must say)
BAD_ASSERTIONS = [
    ("no-header", lambda s, x, sub: None, "missing x-hokusai-identity header"),
    ("garbage", lambda s, x, sub: "not-a-jwt", "malformed identity assertion"),
    ("garbage-three-segments", lambda s, x, sub: "!!!.!!!.!!!", "malformed identity assertion"),
    ("header-without-alg", lambda s, x, sub: "e30.e30.AAAA", "not signed with EdDSA"),
    ("alg-none", lambda s, x, sub: alg_none_token(claims_for(sub), "k1"), "not signed with EdDSA"),
    ("hs256-with-raw-public-key",
     lambda s, x, sub: hs256_with_public_key(claims_for(sub), "k1", s.public_raw()), "not signed with EdDSA"),
    ("hs256-with-pem-public-key",
     lambda s, x, sub: hs256_with_public_key(claims_for(sub), "k1", _public_pem(s)), "not signed with EdDSA"),
    ("expired", lambda s, x, sub: s.sign(claims_for(sub, iat=int(time.time()) - 300, exp=int(time.time()) - 120)),
     "expired"),
    ("other-audience", lambda s, x, sub: s.token(sub, aud="mlflow-staging"), "another audience"),
    ("other-issuer", lambda s, x, sub: s.token(sub, iss="someone-else"), "another issuer"),
    ("key-not-in-jwks-same-kid", lambda s, x, sub: x["k1"].token(sub), "bad signature"),
    ("unknown-kid", lambda s, x, sub: x["k9"].token(sub), "unknown key id"),
    ("tampered-payload", lambda s, x, sub: _tampered(s, sub), "bad signature"),
    ("too-long-lived", lambda s, x, sub: s.token(sub, lifetime=24 * 3600), "lives longer than"),
    ("no-is-admin-claim", lambda s, x, sub: s.sign(_without(claims_for(sub), "is_admin")), "'is_admin'"),
    ("no-exp-claim", lambda s, x, sub: s.sign(_without(claims_for(sub), "exp")), "'exp'"),
]


@pytest.fixture(scope="module")
def strangers(stranger_dir) -> dict[str, Signer]:
    return {kid: Signer(stranger_dir / f"{kid}.pem", kid) for kid in ("k1", "k9")}


@pytest.mark.parametrize("make_token,expected", [(m, e) for _, m, e in BAD_ASSERTIONS],
                         ids=[case for case, _, _ in BAD_ASSERTIONS])
def test_bad_assertion_is_refused_and_changes_nothing(server, signer, strangers, as_user, unique,
                                                      make_token, expected):
    sub, name = f"u_intruder_{unique}", f"refused-{unique}"
    token = make_token(signer, strangers, sub)
    response = Api(server.url, token).call("POST", CREATE, {"name": name})

    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["error_code"] == "UNAUTHENTICATED"
    assert expected in body["message"]
    if token:
        assert token not in response.text and token.split(".")[0] not in body["message"]
    admin = as_user(f"ops_{unique}", is_admin=True)
    lookup = admin.call("GET", "/api/2.0/mlflow/experiments/get-by-name", params={"experiment_name": name})
    assert lookup.status_code == 404 and lookup.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    user = admin.call("GET", "/api/2.0/mlflow/users/get", params={"username": sub})
    assert user.status_code == 404, f"a refused assertion created user {sub}: {user.text}"


def test_valid_assertion_creates_the_user_on_first_sight(server, as_user, unique):
    sub = f"u_new_{unique}"
    admin = as_user(f"ops_{unique}", is_admin=True)
    assert admin.call("GET", "/api/2.0/mlflow/users/get", params={"username": sub}).status_code == 404

    current = as_user(sub).call("GET", "/api/2.0/mlflow/users/current")

    assert current.status_code == 200, current.text
    assert current.json()["user"]["username"] == sub
    assert current.json()["user"]["is_admin"] is False
    assert admin.call("GET", "/api/2.0/mlflow/users/get", params={"username": sub}).status_code == 200


def test_fastapi_served_artifact_route_uses_the_plugin_too(server, as_user, unique):
    # /api/2.0/mlflow-artifacts/artifacts/* GET/PUT are served by FastAPI, not
    # Flask: MLflow bridges the authorization_function into a synthetic Flask context.
    path = f"/api/2.0/mlflow-artifacts/artifacts/0/{unique}.txt"

    refused = Api(server.url, None).call("PUT", path, headers={"content-type": "text/plain"})
    assert refused.status_code == 401
    assert refused.json()["error_code"] == "UNAUTHENTICATED"

    owner = as_user(f"u_art_{unique}", is_admin=True)
    upload = owner.call("PUT", path, headers={"content-type": "text/plain"})
    assert upload.status_code == 200, upload.text


def test_rotation_both_keys_in_the_jwks_verify(server, signer, signer2, unique):
    sub = f"u_rot_{unique}"
    for key in (signer, signer2):
        response = Api(server.url, key.token(sub)).call("GET", "/api/2.0/mlflow/users/current")
        assert response.status_code == 200, f"kid {key.kid}: {response.text}"
        assert response.json()["user"]["username"] == sub
