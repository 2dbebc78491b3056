"""Signing keys for the gateway's identity assertions.

    python -m hokusai_mlflow_plugin.keys new --kid KID --dir DIR
    python -m hokusai_mlflow_plugin.keys retire --kid KID --dir DIR

`new` writes DIR/KID.pem (the gateway's Ed25519 private key, PKCS#8 PEM,
mode 0600) and appends its public key to DIR/jwks.json (MLflow's
HOKUSAI_IDENTITY_JWKS), keeping the newest two: rotation is `new`, restart
MLflow, switch the gateway to the new key, `retire` the old one, restart
MLflow. Private key material is never printed.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import sys
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .config import MAX_KEYS, ConfigError, parse_jwks

JWKS_NAME = "jwks.json"
KID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # also a file name


class KeyToolError(Exception):
    pass


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_jwk(private_key: Ed25519PrivateKey, kid: str) -> dict:
    raw = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": _b64url(raw), "kid": kid, "use": "sig", "alg": "EdDSA"}


def read_jwks(directory: Path) -> list[dict]:
    path = directory / JWKS_NAME
    if not path.exists():
        return []
    try:
        document = json.loads(path.read_text())
        parse_jwks(document, str(path))  # refuse to extend a file MLflow would refuse
    except (ValueError, ConfigError) as e:
        raise KeyToolError(f"{path} is not a usable JWKS ({e}); fix or remove it") from None
    return document["keys"]


def write_jwks(directory: Path, keys: list[dict]) -> None:
    # Atomic: MLflow (re)starting meanwhile reads the old or the new file, never half of one.
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".jwks.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump({"keys": keys}, f, indent=2)
        f.write("\n")
    os.chmod(tmp, 0o644)  # public keys
    os.replace(tmp, directory / JWKS_NAME)


def write_private_key(path: Path, private_key: Ed25519PrivateKey) -> None:
    pem = private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    # O_EXCL: never overwrite a key a gateway may be using; 0600 from creation on.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)


def new_key(kid: str, directory: Path) -> list[str]:
    keys = read_jwks(directory)
    if any(k.get("kid") == kid for k in keys):
        raise KeyToolError(f"kid {kid!r} is already in {directory / JWKS_NAME}")
    pem_path = directory / f"{kid}.pem"
    if pem_path.exists():
        raise KeyToolError(f"{pem_path} exists; pick a new kid")
    private_key = Ed25519PrivateKey.generate()
    write_private_key(pem_path, private_key)
    keys.append(public_jwk(private_key, kid))
    dropped, keys = keys[:-MAX_KEYS], keys[-MAX_KEYS:]
    write_jwks(directory, keys)
    lines = [f"wrote {pem_path} (private key for the gateway, mode 0600)",
             f"added kid {kid!r} to {directory / JWKS_NAME} (MLflow's HOKUSAI_IDENTITY_JWKS), newest last"]
    lines += [f"dropped kid {k['kid']!r} from {JWKS_NAME}: keeps {MAX_KEYS} keys" for k in dropped]
    return lines


def retire_key(kid: str, directory: Path) -> list[str]:
    keys = read_jwks(directory)
    remaining = [k for k in keys if k.get("kid") != kid]
    if len(remaining) == len(keys):
        raise KeyToolError(f"kid {kid!r} is not in {directory / JWKS_NAME}")
    if not remaining:
        raise KeyToolError(f"kid {kid!r} is the only key: MLflow would refuse every request; add a new one first")
    write_jwks(directory, remaining)
    return [f"removed kid {kid!r} from {directory / JWKS_NAME}; restart MLflow to stop trusting it",
            f"{directory / (kid + '.pem')} (if here) signs nothing MLflow accepts any more: delete it"]


def _kid(value: str) -> str:
    if not KID_PATTERN.fullmatch(value):
        raise argparse.ArgumentTypeError("a kid is 1-64 of A-Z a-z 0-9 . _ - (it names the .pem file)")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m hokusai_mlflow_plugin.keys",
                                     description="Ed25519 keys for the gateway's identity assertions")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("new", "make a key pair and publish its public key"),
                            ("retire", "stop publishing a public key")):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("--kid", required=True, type=_kid)
        command.add_argument("--dir", required=True, type=Path)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "new":
            args.dir.mkdir(parents=True, exist_ok=True)
            lines = new_key(args.kid, args.dir)
        else:
            lines = retire_key(args.kid, args.dir)
    except (KeyToolError, OSError) as e:
        print(f"keys {args.command}: {e}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
