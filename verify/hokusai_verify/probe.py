"""HTTP requests made for their evidence: what came back (status, headers,
body) or why nothing did, always within the run's deadline."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import requests

MARKER = "x-hokusai-auth-reply"


@dataclass
class Target:
    """Where the gateway is and how to talk to it."""

    tracking_uri: str  # without a trailing slash
    origin: str  # scheme://host[:port]
    mount: str  # e.g. /api/mlflow
    host: str
    port: int
    tls: bool
    token: str
    verify: str | bool  # a CA file, or True for the system store
    deadline: float  # time.monotonic() by which everything must be over

    def remaining(self, cap: float = 30.0) -> float:
        return max(0.1, min(cap, self.deadline - time.monotonic()))


@dataclass
class Evidence:
    """One request's outcome."""

    url: str
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""
    error: str | None = None  # no HTTP answer: why
    sent_bearer: bool = False  # the request carried the key as the MLflow client does

    @property
    def marker(self) -> str | None:
        """The filter's reply marker: the filter answered, and why."""
        return self.headers.get(MARKER)

    @property
    def from_upstream(self) -> bool:
        """Envoy adds this to replies it got from an upstream."""
        return "x-envoy-upstream-service-time" in self.headers

    def json(self) -> dict:
        try:
            v = requests.models.complexjson.loads(self.body)
        except ValueError:
            return {}
        return v if isinstance(v, dict) else {}


def fetch(t: Target, path: str, key: bool = True, method: str = "GET", json_body=None,
          headers: dict[str, str] | None = None) -> Evidence:
    """A request to the gateway: `path` is below the origin. With `key`, the
    key as the MLflow client sends MLFLOW_TRACKING_TOKEN (Bearer); `headers`
    instead of that."""
    url = t.origin + path
    if headers is None:
        headers = {"Authorization": f"Bearer {t.token}"} if key else {}
    ev = Evidence(url=url, sent_bearer=headers.get("Authorization", "").startswith("Bearer "))
    try:
        r = requests.request(method, url, headers=headers, json=json_body, timeout=t.remaining(),
                             verify=t.verify, allow_redirects=False)
    except requests.exceptions.RequestException as e:
        ev.error = scrub(f"{type(e).__name__}: {e}", t.token)
        return ev
    ev.status = r.status_code
    ev.headers = {k.lower(): v for k, v in r.headers.items()}
    ev.body = scrub(r.text[:4000], t.token)
    return ev


def scrub(text: str, token: str) -> str:
    """Whatever a server said, never the key."""
    if token and len(token) >= 4:
        text = text.replace(token, "***")
    return text
