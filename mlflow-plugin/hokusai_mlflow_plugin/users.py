"""Keeps MLflow's user table in step with the gateway's assertions.

The assertion is the source of truth: a user is created the first time one
names them, and their admin flag follows the latest assertion.
"""

from __future__ import annotations

import logging
import secrets

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, RESOURCE_DOES_NOT_EXIST, ErrorCode

from .assertion import Identity

_logger = logging.getLogger(__name__)


def _auth_store():
    # MLflow's auth app owns the store and initialises it before serving.
    from mlflow.server.auth import store

    return store


def sync_user(identity: Identity) -> None:
    """One indexed read per request; a write only when something changed."""
    user = _get_or_create(identity)
    if user.is_admin != identity.is_admin:
        _auth_store().update_user(identity.username, is_admin=identity.is_admin)
        _logger.info("MLflow user %r: is_admin now %s (from the gateway's assertion)",
                     identity.username, identity.is_admin)


def _get_or_create(identity: Identity):
    store = _auth_store()
    try:
        return store.get_user(identity.username)
    except MlflowException as e:
        if not _is(e, RESOURCE_DOES_NOT_EXIST):
            raise
    try:
        # Nobody logs in with a password: the gateway vouches for the user.
        # A random one keeps MLflow's Basic-auth path closed to them too.
        user = store.create_user(identity.username, secrets.token_urlsafe(32), is_admin=identity.is_admin)
        _logger.info("created MLflow user %r (is_admin %s) on first assertion", identity.username, identity.is_admin)
        return user
    except MlflowException as e:
        if not _is(e, RESOURCE_ALREADY_EXISTS):
            raise
        return store.get_user(identity.username)  # a concurrent first request created it


def _is(error: MlflowException, code: int) -> bool:
    return error.error_code == ErrorCode.Name(code)
