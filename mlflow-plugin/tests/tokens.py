"""Identity assertions as the gateway mints them, and the broken ones an
attacker or a misconfigured gateway would send."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization

HEADER = "x-hokusai-identity"
AUDIENCE = "mlflow"
ISSUER = "hokusai-gateway"


def claims_for(sub: str, is_admin: bool = False, lifetime: int = 120, **overrides) -> dict:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "key_id": f"k_{sub}",
              "scopes": ["mlflow:read", "mlflow:write"], "is_admin": is_admin,
              "service_id": "platform", "iat": now, "exp": now + lifetime}
    claims.update(overrides)
    return claims


class Signer:
    """Signs with the PKCS#8 PEM the key tool wrote for `kid`."""

    def __init__(self, pem_path: Path, kid: str):
        self.kid = kid
        self.private_key = serialization.load_pem_private_key(pem_path.read_bytes(), password=None)

    def sign(self, claims: dict, kid: str | None = None) -> str:
        return jwt.encode(claims, self.private_key, algorithm="EdDSA",
                          headers={"kid": kid or self.kid, "typ": "JWT"})

    def token(self, sub: str, is_admin: bool = False, **overrides) -> str:
        return self.sign(claims_for(sub, is_admin, **overrides))

    def public_raw(self) -> bytes:
        return self.private_key.public_key().public_bytes(serialization.Encoding.Raw,
                                                          serialization.PublicFormat.Raw)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segments(header: dict, claims: dict) -> str:
    return f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"


def alg_none_token(claims: dict, kid: str) -> str:
    return _segments({"alg": "none", "typ": "JWT", "kid": kid}, claims) + "."


def hs256_with_public_key(claims: dict, kid: str, public_key: bytes) -> str:
    # The classic key-confusion forgery: HMAC keyed with the verifier's public key.
    signing_input = _segments({"alg": "HS256", "typ": "JWT", "kid": kid}, claims)
    mac = hmac.new(public_key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64url(mac)}"
