"""The `authorization_function` MLflow's auth app calls for every request.

MLflow calls it with no arguments inside a Flask request context: from its
`before_request` hook for Flask-served routes, from a synthetic Flask context
for the routes FastAPI serves itself (artifact up/downloads, the AI
gateway), and again from its validators and after-request handlers, which
only want the username. The auth app uses only `.username` of the returned
`Authorization`: no password is looked up.
"""

from __future__ import annotations

import logging

from flask import Response, g, request
from werkzeug.datastructures import Authorization

from . import responses
from .assertion import Rejected, verify
from .config import ConfigError, get_config
from .users import sync_user

_logger = logging.getLogger(__name__)
_G_KEY = "hokusai_identity_result"
_config_error_logged = False


def authenticate() -> Authorization | Response:
    # MLflow asks up to a handful of times per request; verify and sync once.
    result = g.get(_G_KEY)
    if result is None:
        result = _authenticate_request()
        setattr(g, _G_KEY, result)
    return result


def _authenticate_request() -> Authorization | Response:
    try:
        config = get_config()
    except ConfigError as e:
        _log_config_error_once(e)
        return responses.misconfigured(
            f"MLflow's Hokusai identity plugin is misconfigured ({e.variable}); see the MLflow server log")
    token = request.headers.get(config.header, "").strip()
    if not token:
        return _reject(f"missing {config.header} header: requests must come through the Hokusai gateway")
    try:
        identity = verify(token, config)
    except Rejected as e:
        return _reject(str(e))
    sync_user(identity)
    return Authorization("basic", {"username": identity.username})


def _log_config_error_once(error: ConfigError) -> None:
    global _config_error_logged
    if not _config_error_logged:
        _config_error_logged = True
        _logger.error("hokusai_mlflow_plugin: refusing every request until restarted with a fixed "
                      "configuration: %s", error)


def _reject(reason: str) -> Response:
    _logger.info("401 %s %s: %s", request.method, request.path, reason)
    return responses.unauthenticated(reason)
