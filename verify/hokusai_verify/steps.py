"""The read-only steps over HTTP: the health path, the filter in the path,
the key, its scopes, MLflow behind the path rewrite, whom MLflow sees, the
rate limit."""

from __future__ import annotations

from .diagnose import Diagnosis, diagnose, no_auth_app, reset_time
from .lost_key import why_lost
from .network import Failed
from .probe import Evidence, Target, fetch


class Skipped(Exception):
    """A step that does not apply here."""


API_SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"
API_CURRENT_USER = "/api/2.0/mlflow/users/current"  # MLflow's auth app: whom it sees


class Checks:
    """The steps, sharing what they learn (the whoami answer)."""

    def __init__(self, t: Target, write: bool):
        self.t, self.write = t, write
        self.whoami: Evidence | None = None
        self.mlflow_ok = False  # the MLflow step passed: MLflow serves the REST paths it is sent
        self.lost: Diagnosis | None = None  # where the key the filter found `missing` got lost

    def diagnose(self, ev: Evidence) -> Diagnosis:
        """diagnose(), knowing what was sent: for a key sent as the MLflow
        client sends it that the filter says is missing, where it got lost
        (found out once), not "set MLFLOW_TRACKING_TOKEN"."""
        if ev.marker == "missing" and ev.sent_bearer:
            if self.lost is None:
                self.lost = why_lost(self.t, ev.url.removeprefix(self.t.origin))
            return self.lost
        return diagnose(ev, self.t)

    def health(self) -> str:
        first = None
        for path in (self.t.mount + "/health/mlflow", "/health"):
            ev = fetch(self.t, path, key=False)
            if ev.status == 200:
                return f"{path}: 200 {ev.body.strip()[:40]!r}"
            first = first or ev
        raise Failed(f"{first.url}: {first.status or first.error}", diagnose(first, self.t))

    def filter_in_path(self) -> str:
        self.whoami = fetch(self.t, self.t.mount + "/_hokusai/whoami")
        ev = self.whoami
        if ev.marker:
            return f"{self.t.mount}/_hokusai/whoami answered by the filter ({ev.marker}, {ev.status})"
        if ev.error is not None or (ev.status == 404 and not ev.body.strip() and not ev.from_upstream):
            raise Failed(ev.error or f"{ev.status} from the gateway", diagnose(ev, self.t))
        raise Failed(f"{ev.url}: {ev.status} without the filter's marker", self.why_no_whoami())

    def why_no_whoami(self) -> Diagnosis:
        """The filter did not answer whoami: absent, or not seeing this mount."""
        bare = fetch(self.t, self.t.mount + API_SEARCH, key=False)
        if bare.marker:
            return Diagnosis("filter", f"the filter is in the path but did not answer {self.t.mount}/_hokusai/"
                                       f"whoami: {self.t.mount} is not one of its mlflow.mount_prefixes (so it "
                                       "is not stripped either), or whoami is off on this route")
        return Diagnosis("filter", f"the Hokusai filter is not in the path: a request without a key got "
                                   f"{bare.status} from {'MLflow' if bare.from_upstream else 'the gateway'}; "
                                   "attach the filter (WasmPlugin, EnvoyExtensionPolicy or the bootstrap's "
                                   "http_filters) to this route")

    def key(self) -> str:
        ev = self.whoami or fetch(self.t, self.t.mount + "/_hokusai/whoami")
        if ev.status != 200 or ev.marker != "whoami":
            sent = " (the key sent as Authorization: Bearer)" if ev.marker == "missing" else ""
            raise Failed(f"{ev.status} {ev.marker or ''}".strip() + sent, self.diagnose(ev))
        me = ev.json()
        return (f"key {me.get('key_id')} of user {me.get('user_id')}, service_id {me.get('service_id')}, "
                f"route {me.get('route')}, found in {me.get('key_source')}")

    def scopes(self) -> str:
        if self.whoami is None or self.whoami.status != 200:
            raise Skipped("no whoami answer")
        me = self.whoami.json()
        access = me.get("access", {})
        granted = [name for name in ("read", "write", "registry_write", "admin") if access.get(name)]
        needed = ["read", "write", "registry_write"] if self.write else ["read"]
        missing = [n for n in needed if n not in granted]
        if missing:
            raise Failed(f"may {', '.join(granted) or 'nothing'}", Diagnosis(
                "scopes", f"the key may not {', '.join(missing)} here (scopes {me.get('scopes')}): give it a "
                          "write scope such as mlflow:write, or run without --write"))
        return f"may {', '.join(granted)} (scopes {', '.join(me.get('scopes') or []) or 'none'})"

    def mlflow(self, client) -> str:
        try:
            found = client.search_experiments(max_results=1)
        except Exception as e:  # noqa: BLE001 - any failure is diagnosed from the raw request
            raise Failed(first_line(e), self.why_no_mlflow()) from e
        self.mlflow_ok = True
        return f"MLflow answered {self.t.mount}/api/2.0/mlflow/experiments/search ({len(found)} experiment(s))"

    def why_no_mlflow(self) -> Diagnosis:
        ev = fetch(self.t, self.t.mount + API_SEARCH)
        refused = auth_app_refused(ev)
        if (ev.status != 404 and not refused) or ev.marker:
            return self.diagnose_mlflow(ev)
        if not ev.body.strip() and not ev.from_upstream:
            return diagnose(ev, self.t)  # the gateway's own 404: no route
        ajax = fetch(self.t, self.t.mount + API_SEARCH.replace("/api/", "/ajax-api/", 1))
        if ajax.status == 200:
            return Diagnosis("path rewrite", "the server serves the UI's /ajax-api/2.0/ but not /api/2.0/: set "
                                             "mlflow.ajax_api: true for this route")
        how = " (its auth app refuses, 403, what it has no rule for)" if refused else ""
        return Diagnosis("path rewrite", f"MLflow does not know the path it is sent{how}: the gateway did not "
                                         f"strip {self.t.mount} (add it to mlflow.mount_prefixes), or MLflow "
                                         "serves under a prefix of its own (--static-prefix)")

    def whoami_answer(self) -> dict | None:
        """The filter's whoami answer for the key, if it gave one."""
        if self.whoami is None or self.whoami.status != 200 or self.whoami.marker != "whoami":
            return None
        return self.whoami.json()

    def user_id(self) -> str | None:
        """The key's user_id, from the filter's whoami answer."""
        return (self.whoami_answer() or {}).get("user_id")

    def identity(self) -> str:
        """Whom MLflow's auth app sees: the key's user, made an MLflow user by
        the plugin from the gateway's signed assertion."""
        me = self.whoami_answer()
        if me is None:
            raise Skipped("no whoami answer: the key's user is unknown")
        if not self.mlflow_ok:
            raise Skipped("MLflow not reached (the mlflow step failed)")
        user_id = me.get("user_id")
        ev = fetch(self.t, self.t.mount + API_CURRENT_USER)
        if ev.status == 200 and not ev.marker:
            return self.same_user(ev, user_id, bool(me.get("is_admin")))
        detail = f"{self.t.mount}{API_CURRENT_USER}: {ev.status or ev.error}"
        if ev.status == 404 and not ev.marker and ev.from_upstream:
            raise Failed(detail, no_auth_app(f"{self.t.mount}{API_CURRENT_USER} (and serves its other paths)"))
        raise Failed(detail, self.diagnose_mlflow(ev))

    def diagnose_mlflow(self, ev: Evidence) -> Diagnosis:
        """diagnose(), knowing the key: the filter signs no assertion for a key without a user_id."""
        refused = ev.status == 401 and ev.headers.get("www-authenticate", "").startswith("HokusaiIdentity")
        if refused and "missing" in ev.json().get("message", "") and self.whoami_answer() is not None \
                and not self.user_id():
            return Diagnosis("identity assertion", "the key service gives this key no user_id, so the gateway "
                                                   "signs no identity for it and MLflow refuses the request "
                                                   f"({ev.json().get('message')!r}): give the key a user_id")
        return self.diagnose(ev)

    def same_user(self, ev: Evidence, user_id: str | None, key_is_admin: bool) -> str:
        user = ev.json().get("user")
        if not isinstance(user, dict) or not isinstance(user.get("username"), str):
            raise Failed(f"{self.t.mount}{API_CURRENT_USER}: 200 without a user", Diagnosis(
                "MLflow auth app", f"MLflow's answer to {API_CURRENT_USER} names no user "
                                   f"({ev.body.strip()[:120]!r}): is it MLflow's auth app answering?"))
        name, admin = user["username"], bool(user.get("is_admin"))
        seen = f"MLflow sees you as {name} (admin: {'yes' if admin else 'no'})"
        if name != user_id:
            raise Failed(f"{seen}; the key's user_id is {user_id}", Diagnosis(
                "identity assertion", f"MLflow takes this key for {name!r}, the key service says it is "
                                      f"{user_id!r}'s: MLflow's authorization_function is not the Hokusai "
                                      "plugin (hokusai_mlflow_plugin:authenticate), or a layer between the "
                                      "gateway and MLflow sets another identity"))
        if admin != key_is_admin:
            raise Failed(f"{seen}; the key's is_admin is {key_is_admin}", Diagnosis(
                "identity assertion", f"MLflow's admin flag for {name!r} ({admin}) is not the key's is_admin "
                                      f"({key_is_admin}); the Hokusai plugin sets it from every assertion: "
                                      "MLflow's authorization_function is not the plugin"))
        return f"{seen}, the key's user_id"

    def rate_limit(self) -> str:
        ev = fetch(self.t, self.t.mount + API_SEARCH)
        if ev.marker == "rate_limited" or ev.headers.get("x-ratelimit-remaining") == "0":
            raise Failed("no requests left this hour", self.diagnose(ev) if ev.marker else Diagnosis(
                "rate limit", f"the key is at its hourly limit until {reset_time(ev)}"))
        if "x-ratelimit-limit" not in ev.headers:
            if ev.status != 200:
                raise Failed(f"{ev.status}", self.diagnose(ev))
            raise Skipped("no X-RateLimit headers: the filter's rate limit is off on this route")
        h = ev.headers
        return (f"limit {h['x-ratelimit-limit']}/hour, {h.get('x-ratelimit-remaining')} left, window ends "
                f"{reset_time(ev)}")


def auth_app_refused(ev: Evidence) -> bool:
    """MLflow's auth app's 403 (plain `Permission denied`, or the Hokusai
    plugin's JSON PERMISSION_DENIED). For experiments/search, which it
    filters rather than refuses, that means a path it has no rule for:
    it fails closed (MLFLOW_BASIC_AUTH_FAIL_CLOSED, on by default)."""
    if ev.status != 403 or ev.marker or not ev.from_upstream:
        return False
    return ev.body.strip() == "Permission denied" or ev.json().get("error_code") == "PERMISSION_DENIED"


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__

