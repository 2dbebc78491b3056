"""Verifies the gateway's identity assertion (an EdDSA-signed JWT).

The messages say what is wrong, never echo the token or its attacker-chosen
fields, and are what the MLflow client prints after `UNAUTHENTICATED:`.
"""

from __future__ import annotations

from dataclasses import dataclass

import jwt

from .config import Config

ALGORITHMS = ["EdDSA"]  # exactly: `none`, HS256-with-the-public-key etc. never verify
LEEWAY_SECONDS = 30  # clock skew between the gateway and MLflow
# The gateway mints assertions for a minute or a few; a longer one is not
# from a correctly configured gateway and would be worth stealing.
MAX_LIFETIME_SECONDS = 15 * 60
REQUIRED_CLAIMS = ["iss", "aud", "sub", "iat", "exp", "is_admin"]
MAX_USERNAME_LENGTH = 255  # MLflow's users.username column


class Rejected(Exception):
    """The assertion does not prove who is calling; str() says why."""


@dataclass(frozen=True)
class Identity:
    username: str
    is_admin: bool
    key_id: str | None
    service_id: str | None
    scopes: tuple[str, ...]


def verify(token: str, config: Config) -> Identity:
    key = _key_for(token, config)
    claims = _decode(token, key, config)
    return _identity_from(claims)


def _key_for(token: str, config: Config):
    try:
        header = jwt.get_unverified_header(token)
    except jwt.DecodeError:
        raise Rejected("malformed identity assertion (not a compact JWS)") from None
    if header.get("alg") not in ALGORITHMS:
        raise Rejected("identity assertion not signed with EdDSA, the only accepted algorithm")
    kid = header.get("kid")
    if not isinstance(kid, str) or kid not in config.keys:
        raise Rejected("identity assertion signed with an unknown key id (kid not in HOKUSAI_IDENTITY_JWKS)")
    return config.keys[kid]


def _decode(token: str, key, config: Config) -> dict:
    try:
        return jwt.decode(
            token, key, algorithms=ALGORITHMS, audience=config.audience, issuer=config.issuer,
            leeway=LEEWAY_SECONDS, options={"require": REQUIRED_CLAIMS},
        )
    except jwt.InvalidSignatureError:
        raise Rejected("identity assertion has a bad signature") from None
    except jwt.ExpiredSignatureError:
        raise Rejected("identity assertion expired") from None
    except jwt.ImmatureSignatureError:
        raise Rejected("identity assertion issued in the future (clock skew?)") from None
    except jwt.InvalidAudienceError:
        raise Rejected(f"identity assertion for another audience (this MLflow is {config.audience!r})") from None
    except jwt.InvalidIssuerError:
        raise Rejected(f"identity assertion from another issuer (expected {config.issuer!r})") from None
    except jwt.MissingRequiredClaimError as e:
        raise Rejected(f"identity assertion lacks the {e.claim!r} claim") from None
    except jwt.DecodeError:
        raise Rejected("malformed identity assertion") from None
    except jwt.InvalidTokenError:
        raise Rejected("invalid identity assertion (a claim has the wrong type)") from None


def _identity_from(claims: dict) -> Identity:
    _check_lifetime(claims)
    sub, is_admin = claims["sub"], claims["is_admin"]
    if not isinstance(sub, str) or not sub or len(sub) > MAX_USERNAME_LENGTH:
        raise Rejected("identity assertion has no usable 'sub' (the MLflow username)")
    if not isinstance(is_admin, bool):
        raise Rejected("identity assertion's 'is_admin' is not a boolean")
    return Identity(
        username=sub,
        is_admin=is_admin,
        key_id=_optional_str(claims, "key_id"),
        service_id=_optional_str(claims, "service_id"),
        scopes=_scopes(claims),
    )


def _check_lifetime(claims: dict) -> None:
    iat, exp = claims["iat"], claims["exp"]  # numbers: PyJWT checked them
    if exp - iat > MAX_LIFETIME_SECONDS:
        raise Rejected(f"identity assertion lives longer than {MAX_LIFETIME_SECONDS} s; the gateway mints short ones")


def _optional_str(claims: dict, name: str) -> str | None:
    value = claims.get(name)
    if value is not None and not isinstance(value, str):
        raise Rejected(f"identity assertion's {name!r} is not a string")
    return value


def _scopes(claims: dict) -> tuple[str, ...]:
    scopes = claims.get("scopes", [])
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        raise Rejected("identity assertion's 'scopes' is not a list of strings")
    return tuple(scopes)
