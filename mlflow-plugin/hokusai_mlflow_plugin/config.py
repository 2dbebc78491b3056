"""The plugin's configuration: environment variables, read once per process.

Every error names the variable to fix, because the only person who can act
on it is whoever deploys MLflow.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

ENV_JWKS = "HOKUSAI_IDENTITY_JWKS"
ENV_AUDIENCE = "HOKUSAI_IDENTITY_AUDIENCE"
ENV_ISSUER = "HOKUSAI_IDENTITY_ISSUER"
ENV_HEADER = "HOKUSAI_IDENTITY_HEADER"

DEFAULT_AUDIENCE = "mlflow"
DEFAULT_ISSUER = "hokusai-gateway"
DEFAULT_HEADER = "x-hokusai-identity"

# Two keys at once is what rotation needs: the current one and the next (or
# the previous) one. More would be keys nobody remembers to retire.
MAX_KEYS = 2


class ConfigError(Exception):
    """The deployment is misconfigured; the message names the variable."""

    def __init__(self, message: str, variable: str = ENV_JWKS):
        super().__init__(message)
        self.variable = variable


@dataclass(frozen=True)
class Config:
    keys: dict[str, Ed25519PublicKey]  # by kid
    audience: str
    issuer: str
    header: str


def parse_jwks(document: object, source: str) -> dict[str, Ed25519PublicKey]:
    """The Ed25519 public keys of a JWKS document, by kid; `source` names
    where it came from in errors."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ConfigError(f'{source}: not a JWKS (expected {{"keys": [...]}})')
    keys: dict[str, Ed25519PublicKey] = {}
    for index, jwk in enumerate(document["keys"]):
        kid, key = _parse_jwk(jwk, f"{source}: keys[{index}]")
        if kid in keys:
            raise ConfigError(f"{source}: kid {kid!r} appears twice")
        keys[kid] = key
    return keys


def _parse_jwk(jwk: object, where: str) -> tuple[str, Ed25519PublicKey]:
    if not isinstance(jwk, dict):
        raise ConfigError(f"{where}: not a JSON object")
    kid = jwk.get("kid")
    if not isinstance(kid, str) or not kid:
        raise ConfigError(f"{where}: no kid")
    if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
        raise ConfigError(f"{where} (kid {kid!r}): not an Ed25519 key (kty OKP, crv Ed25519)")
    if "d" in jwk:
        # A private key in a file meant to be public: refuse rather than serve it.
        raise ConfigError(f"{where} (kid {kid!r}): holds private key material ('d'); publish public keys only")
    try:
        key = jwt.PyJWK(jwk, algorithm="EdDSA").key
    except jwt.PyJWTError as e:
        raise ConfigError(f"{where} (kid {kid!r}): unusable key: {e}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{where} (kid {kid!r}): not an Ed25519 public key")
    return kid, key


def load_jwks_file(path: Path) -> dict[str, Ed25519PublicKey]:
    source = f"{ENV_JWKS}={path}"
    try:
        document = json.loads(path.read_text())
    except OSError as e:
        raise ConfigError(f"{source}: cannot read: {e.strerror}") from None
    except ValueError as e:
        raise ConfigError(f"{source}: not JSON: {e}") from None
    keys = parse_jwks(document, source)
    if not keys:
        raise ConfigError(f"{source}: no keys: every request would be refused")
    if len(keys) > MAX_KEYS:
        raise ConfigError(f"{source}: {len(keys)} keys; at most {MAX_KEYS} (current and next) are accepted")
    return keys


def _non_empty(environ, name: str, default: str) -> str:
    value = environ.get(name, default)
    if not value.strip():
        raise ConfigError(f"{name} is set but empty (unset it for the default {default!r})", name)
    return value.strip()


def load_config(environ=os.environ) -> Config:
    jwks_path = environ.get(ENV_JWKS, "").strip()
    if not jwks_path:
        raise ConfigError(f"{ENV_JWKS} is not set: it must name the JWKS file with the gateway's public keys")
    return Config(
        keys=load_jwks_file(Path(jwks_path)),
        audience=_non_empty(environ, ENV_AUDIENCE, DEFAULT_AUDIENCE),
        issuer=_non_empty(environ, ENV_ISSUER, DEFAULT_ISSUER),
        header=_non_empty(environ, ENV_HEADER, DEFAULT_HEADER),
    )


_lock = threading.Lock()
_loaded: Config | ConfigError | None = None


def get_config() -> Config:
    """The process's configuration, read on first use; a failure is kept and
    raised again on every call (fix the deployment, then restart)."""
    global _loaded
    with _lock:
        if _loaded is None:
            try:
                _loaded = load_config()
            except ConfigError as e:
                _loaded = e
    if isinstance(_loaded, ConfigError):
        raise ConfigError(str(_loaded), _loaded.variable)  # a fresh one: re-raising one object grows its traceback
    return _loaded
