#!/usr/bin/env python3
"""List every HTTP route of the MLflow tracking server, one `METHOD PATH` a line.

Run it with the interpreter of the MLflow whose routes you want (scripts/mlflow-matrix.sh
does, for each supported version):

    /path/to/venv/bin/python scripts/list-mlflow-endpoints.py > tests/data/mlflow-endpoints-<version>.txt

Sources, all unioned:

* the Flask app `mlflow.server.app` (`url_map`), which is built from
  `mlflow.server.handlers.get_endpoints()` plus the routes registered directly in
  `mlflow/server/__init__.py` (get-artifact, ajax-only UI routes, health, version, ...);
* `mlflow.server.handlers.get_endpoints()` itself;
* the native FastAPI routers that `mlflow server` (uvicorn, the default) mounts in front
  of the Flask app (`mlflow.server.fastapi_app.create_fastapi_app`: OTLP `/v1/traces`,
  jobs, AI gateway invocations, assistant, streaming artifact upload/download,
  MCP server registry, server-info, health). MLflow 2.x has none (`mlflow server` runs
  the Flask app alone, under gunicorn): the output then says so in a second `#` line;
* the routes added by the basic-auth app (`mlflow server --app-name basic-auth`:
  users, roles, permissions). That needs the `auth` extra (Flask-WTF); without it the
  script fails unless `--no-basic-auth` is given, so the output never silently shrinks.

Output format:

* path parameters as `<name>` (one segment) or `<path:name>` (one or more segments);
  Flask converters other than `path` (`int`, ...) and FastAPI `{name}` /
  `{name:path}` are mapped onto these two forms;
* methods without `HEAD` and `OPTIONS`: Flask adds both to every rule automatically
  (HEAD runs the GET view, OPTIONS is CORS preflight); the auth filter treats HEAD
  like GET and lets OPTIONS through before classification;
* sorted by path then method, deduplicated; the first line is a `#` comment naming the
  MLflow version.

The static prefix (`--static-prefix`, env `_MLFLOW_STATIC_PREFIX`) is cleared so that the
paths are the canonical ones the filter sees after stripping its mount prefix.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import tempfile
import warnings

IGNORED_METHODS = {"HEAD", "OPTIONS"}

_FLASK_PARAM = re.compile(r"<(?:(?P<conv>[A-Za-z_]\w*)(?:\([^)]*\))?:)?(?P<name>[A-Za-z_]\w*)>")
_FASTAPI_PARAM = re.compile(r"\{(?P<name>[A-Za-z_]\w*)(?::(?P<conv>[A-Za-z_]\w*))?\}")


def _param(match: re.Match) -> str:
    name, conv = match.group("name"), match.group("conv")
    return f"<path:{name}>" if conv == "path" else f"<{name}>"


def normalize_flask(rule: str) -> str:
    return _FLASK_PARAM.sub(_param, rule)


def normalize_fastapi(path: str) -> str:
    return _FASTAPI_PARAM.sub(_param, path)


def add(routes: set[tuple[str, str]], methods, path: str) -> None:
    for method in methods or ():
        method = method.upper()
        if method not in IGNORED_METHODS:
            routes.add((method, path))


def flask_routes(flask_app, routes: set[tuple[str, str]]) -> None:
    for rule in flask_app.url_map.iter_rules():
        add(routes, rule.methods, normalize_flask(rule.rule))


def handler_endpoints(routes: set[tuple[str, str]]) -> None:
    from mlflow.server import handlers

    for endpoint in handlers.get_endpoints():
        path, methods = endpoint[0], endpoint[2]
        add(routes, methods, normalize_flask(path))


def _walk_fastapi(route_list, prefix: str, routes: set[tuple[str, str]]) -> None:
    for route in route_list:
        original = getattr(route, "original_router", None)
        if original is not None:
            # FastAPI >= 0.16x keeps included routers as `_IncludedRouter` objects.
            context = getattr(route, "include_context", None)
            sub_prefix = getattr(context, "prefix", "") or ""
            _walk_fastapi(original.routes, prefix + sub_prefix, routes)
            continue
        methods = getattr(route, "methods", None)
        path = getattr(route, "path", None)
        if methods and path is not None:
            add(routes, methods, normalize_fastapi(prefix + path))
        # Mounts (the Flask app at "/") carry no methods; Flask routes come from url_map.


def fastapi_routes(flask_app, routes: set[tuple[str, str]]) -> bool:
    """False when this MLflow has no FastAPI app (2.x: `mlflow server` runs the
    Flask app alone, under gunicorn); from 3.x on its absence is an error."""
    import mlflow

    try:
        from mlflow.server.fastapi_app import create_fastapi_app
    except ModuleNotFoundError:
        if int(mlflow.__version__.split(".")[0]) < 3:
            return False
        raise

    fastapi_app = create_fastapi_app(flask_app)
    _walk_fastapi(fastapi_app.routes, "", routes)
    return True


def basic_auth_routes(flask_app, routes: set[tuple[str, str]], workdir: str) -> None:
    try:
        import flask_wtf  # noqa: F401
    except ImportError:
        sys.exit(
            "list-mlflow-endpoints: the basic-auth routes need Flask-WTF "
            "(pip install 'mlflow[auth]==<version>'), or pass --no-basic-auth"
        )
    config = os.path.join(workdir, "basic_auth.ini")
    with open(config, "w", encoding="utf-8") as f:
        f.write(
            "[mlflow]\n"
            "default_permission = READ\n"
            f"database_uri = sqlite:///{os.path.join(workdir, 'basic_auth.db')}\n"
            "admin_username = admin\n"
            # Throwaway store in a temporary directory, deleted on exit.
            f"admin_password = {os.urandom(12).hex()}Aa1!\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        )
    os.environ["MLFLOW_AUTH_CONFIG_PATH"] = config
    os.environ["MLFLOW_FLASK_SERVER_SECRET_KEY"] = os.urandom(16).hex()
    # Return the Flask app, not a FastAPI wrapper: FastAPI routes are collected separately.
    os.environ.pop("_MLFLOW_SGI_NAME", None)
    from mlflow.server.auth import create_app

    auth_app = create_app(flask_app)
    flask_routes(auth_app, routes)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--no-basic-auth",
        action="store_true",
        help="do not include the routes of the basic-auth app (users, roles, permissions)",
    )
    args = parser.parse_args()

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    os.environ.pop("_MLFLOW_STATIC_PREFIX", None)

    with tempfile.TemporaryDirectory(prefix="list-mlflow-endpoints-") as workdir:
        # Importing the server may create local stores relative to the working directory.
        os.chdir(workdir)

        import mlflow
        from mlflow.server import app as flask_app

        routes: set[tuple[str, str]] = set()
        flask_routes(flask_app, routes)
        handler_endpoints(routes)
        has_fastapi = fastapi_routes(flask_app, routes)
        if not args.no_basic_auth:
            basic_auth_routes(flask_app, routes, workdir)
        os.chdir("/")

    out = [f"# mlflow {mlflow.__version__}"]
    if not has_fastapi:
        out.append("# no FastAPI app in this MLflow: the Flask routes are all it serves")
    out += [f"{method} {path}" for method, path in sorted(routes, key=lambda r: (r[1], r[0]))]
    sys.stdout.write("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
