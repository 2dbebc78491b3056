"""`mlflow server --app-name hokusai-auth`: MLflow's basic-auth app, plus

- a start-time check: `mlflow server` imports this module before it starts
  any worker (to see whether the app is a factory), so a bad configuration
  stops the command with one error naming the variable. With
  `--app-name basic-auth` the plugin is first imported on the first request.
- MLflow-format JSON 403s (`PERMISSION_DENIED`) instead of the auth app's
  plain `Permission denied`, through Flask's after-request hook and a
  FastAPI middleware: both registered before the app serves, no MLflow
  internals patched.
"""

from __future__ import annotations

from flask import Flask, Response
from mlflow.server import app as mlflow_flask_app
from mlflow.server.auth import auth_config, bootstrap_admin_user, get_flask_server_secret_key
from mlflow.server.auth import create_app as create_basic_auth_app

from . import responses
from .config import ConfigError, get_config

AUTHORIZATION_FUNCTION = "hokusai_mlflow_plugin:authenticate"


def check_deployment() -> None:
    """Raise, naming what to fix, unless this process can serve."""
    get_config()
    if auth_config.authorization_function != AUTHORIZATION_FUNCTION:
        raise ConfigError(
            f"authorization_function in MLflow's auth ini (MLFLOW_AUTH_CONFIG_PATH) is "
            f"{auth_config.authorization_function!r}; hokusai-auth needs {AUTHORIZATION_FUNCTION!r}",
            "MLFLOW_AUTH_CONFIG_PATH")
    # What `mlflow server` does before starting workers for `basic-auth` only:
    # a missing secret key or admin password is one error, not a worker restart loop.
    get_flask_server_secret_key()
    bootstrap_admin_user()


def _permission_denied_as_json(response: Response) -> Response:
    if response.status_code == 403 and response.get_data() == responses.PERMISSION_DENIED_TEXT:
        response.set_data(responses.permission_denied_body())
        response.mimetype = "application/json"
    return response


def _add_json_403_middleware(fastapi_app) -> None:
    from starlette.responses import Response as StarletteResponse

    # Added after MLflow's permission middleware, so it wraps it: it sees the
    # 403s that middleware answers for the routes FastAPI serves itself.
    @fastapi_app.middleware("http")
    async def permission_denied_as_json(request, call_next):
        response = await call_next(request)
        if response.status_code != 403 or not response.headers.get("content-type", "").startswith("text/plain"):
            return response
        body = b"".join([chunk async for chunk in response.body_iterator])
        if body != responses.PERMISSION_DENIED_TEXT:
            return StarletteResponse(body, status_code=403, headers=dict(response.headers))
        return StarletteResponse(responses.permission_denied_body(), status_code=403,
                                 media_type="application/json")


def create_app(app: Flask = mlflow_flask_app):
    """The `mlflow.app` entry point `hokusai-auth` (checked at import, below)."""
    # Registered before the auth app's own hook; Flask runs after-request
    # hooks in reverse, so this one sees the auth app's final response.
    app.after_request(_permission_denied_as_json)
    served = create_basic_auth_app(app)
    if not isinstance(served, Flask):  # uvicorn: the FastAPI app that mounts Flask
        _add_json_403_middleware(served)
    return served


# The start-time check; see the module docstring.
check_deployment()
