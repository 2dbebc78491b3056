"""Error replies in MLflow's REST format, so the MLflow client raises
`RestException: <ERROR_CODE>: <message>` instead of printing raw text."""

from __future__ import annotations

import json

from flask import Response

PERMISSION_DENIED_TEXT = b"Permission denied"  # MLflow's auth app's plain-text 403 body


def error_body(error_code: str, message: str) -> bytes:
    return json.dumps({"error_code": error_code, "message": message}).encode()


def _json_response(status: int, error_code: str, message: str) -> Response:
    return Response(error_body(error_code, message), status=status, mimetype="application/json")


def unauthenticated(message: str) -> Response:
    response = _json_response(401, "UNAUTHENTICATED", message)
    # Not `Basic`: a browser must not offer a password prompt nobody can answer.
    response.headers["WWW-Authenticate"] = 'HokusaiIdentity realm="mlflow"'
    return response


def misconfigured(message: str) -> Response:
    return _json_response(500, "INTERNAL_ERROR", message)


def permission_denied_body() -> bytes:
    return error_body("PERMISSION_DENIED", "Permission denied: your MLflow user lacks the permission this "
                      "request needs on the resource (ask its owner or an admin to grant it)")
