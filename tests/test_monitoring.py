"""deploy/monitoring/ against the real things: promtool checks and runs the
rules' unit tests; a real Envoy with each build shows the filter's stats
under the Prometheus names the rules select; and a real Prometheus scraping a
real Envoy sees the shipped alerts go pending, fire while the key-service
stand-in fails and resolve after it recovers, and answers every dashboard
query with data.

Needs Debian's `prometheus` package (promtool and prometheus on PATH;
scripts/setup.sh installs it). Both builds are covered in every run (the
tests take the build as a parameter), so this module is not in
scripts/test.sh's HOKUSAI_FILTER=native list."""

from __future__ import annotations

import concurrent.futures
import json
import math
import re
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest
import requests
import yaml

from hokusai_testkit import harness

MONITORING = harness.ROOT / "deploy/monitoring"
RULES = MONITORING / "hokusai-auth.rules.yaml"
RULE_TESTS = sorted((MONITORING / "tests").glob("*.yaml"))
DASHBOARD = MONITORING / "hokusai-auth.dashboard.json"
INSTALL_HINT = "run scripts/setup.sh, or: apt-get install -y prometheus"

# What the rules select, and the names Envoy 1.40 really shows per build.
SELECTOR = re.compile(r'\{__name__=~"\(envoy_wasmcustom_\)\?(hokusai_auth_[a-z_]+)"\}')
STRIP_GUARD = "envoy.reloadable_features.dynamic_modules_strip_custom_stat_prefix"
BUILDS = {  # id: (build, the runtime guard on, the Prometheus prefix of hokusai_auth_<name>)
    "wasm": ("wasm", False, ""),
    "native": ("native", False, "envoy_wasmcustom_"),
    "native-strip-guard": ("native", True, ""),
}
# Alerts the live test drives: the key service answering 500 to every call.
KEY_SERVICE_ALERTS = ("HokusaiAuthKeyServiceFailing", "HokusaiAuthUnavailable")
SHORT_FOR = "3s"
SEARCH = "/api/mlflow/api/2.0/mlflow/experiments/search?max_results=1"
CREATE = "/api/mlflow/api/2.0/mlflow/experiments/create"
UNKNOWN = "/api/mlflow/api/2.0/mlflow/not-an-endpoint/yet"


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not on PATH: {INSTALL_HINT}")
    return path


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=harness.ROOT)


def alerting_rules(doc: dict) -> list[dict]:
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


# --- promtool ---

def test_rules_pass_promtool_check():
    p = run([tool("promtool"), "check", "rules", str(RULES)])
    assert p.returncode == 0, p.stdout + p.stderr


def test_rule_unit_tests_pass():
    assert RULE_TESTS, "no promtool unit tests in deploy/monitoring/tests/"
    p = run([tool("promtool"), "test", "rules", *map(str, RULE_TESTS)])
    assert p.returncode == 0, p.stdout + p.stderr


def test_every_alert_waits_names_a_severity_and_a_runbook():
    alerts = alerting_rules(yaml.safe_load(RULES.read_text()))
    assert len(alerts) >= 9
    for a in alerts:
        assert a.get("for"), f"{a['alert']}: no for:"
        assert a["labels"]["severity"] in ("critical", "warning"), a["alert"]
        assert re.fullmatch(r"docs/deployment\.md#[a-z0-9-]+", a["annotations"]["runbook_url"]), a["alert"]
        assert a["annotations"]["summary"] and a["annotations"]["description"], a["alert"]


def test_dashboard_reads_only_recorded_series():
    """The builds' names are handled once, in the recording rules: every
    dashboard query reads a series a rule records."""
    recorded = {r["record"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "record" in r}
    for panel, expr in dashboard_queries():
        names = set(re.findall(r"hokusai_auth:[a-z_0-9]+:[a-z_0-9]+", expr))
        assert names and names <= recorded, (panel, expr, names - recorded)
        assert "__name__" not in expr, (panel, expr)


# --- the names Envoy really shows ---

def prometheus_text(envoy: harness.Envoy) -> str:
    return envoy._get("/stats/prometheus")


def runtime_guard(on: bool):
    def edit(boot: dict):
        if on:
            boot["layered_runtime"] = {"layers": [{"name": "static", "static_layer": {STRIP_GUARD: True}}]}
    return edit


@pytest.mark.parametrize("variant", sorted(BUILDS))
def test_rules_select_the_names_each_build_shows(variant, start_envoy):
    """Every stat the filter defines (Envoy's /stats: wasmcustom.hokusai_auth.<name>)
    is in /stats/prometheus as <prefix>hokusai_auth_<name, . as _> for this
    build, a counter (the latency a histogram), and recorded by exactly one
    rule; every name the rules select exists."""
    build, guard, prefix = BUILDS[variant]
    gw = start_envoy(filter=build, edit=runtime_guard(guard))
    stats = [line.partition(":")[0] for line in gw._get("/stats?filter=wasmcustom.hokusai_auth.").splitlines()]
    assert len(stats) >= 30, stats
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", prometheus_text(gw), re.M))
    rules_text = RULES.read_text()
    selected = set(SELECTOR.findall(rules_text))
    for stat in stats:
        name = "hokusai_auth_" + stat.removeprefix("wasmcustom.hokusai_auth.").replace(".", "_")
        want = "histogram" if name.endswith("callout_latency_ms") else "counter"
        assert types.get(prefix + name) == want, (stat, prefix + name, sorted(t for t in types if "hokusai" in t))
        other = ("envoy_wasmcustom_" if prefix == "" else "") + name
        assert other not in types, f"{other} also shown"
        selected_as = name + "_bucket" if want == "histogram" else name
        count = rules_text.count(f'{{__name__=~"(envoy_wasmcustom_)?{selected_as}"}}[5m]')
        assert count == 1, f"{selected_as}: recorded by {count} rules"
    shown = {t.removeprefix(prefix) for t in types}
    for name in selected:
        assert name in shown or name.removesuffix("_bucket") in shown, f"the rules select {name}, which Envoy does not show"


# --- a real Prometheus ---

class Prometheus:
    """Debian's prometheus binary on a free loopback port, its TSDB in the
    work directory, scraping `targets` every second and evaluating
    `rule_file` every second. stop() always stops it."""

    def __init__(self, workdir: Path, name: str, rule_file: Path, targets: list[str]):
        binary = tool("prometheus")
        home = workdir / name
        home.mkdir()
        config = home / "prometheus.yml"
        config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rule_file)],
            "scrape_configs": [{"job_name": "hokusai-gateway", "metrics_path": "/stats/prometheus",
                                "static_configs": [{"targets": targets}]}],
        }))
        self.port = harness.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = harness.Proc(name, [
            binary, f"--config.file={config}", f"--storage.tsdb.path={home / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}", "--web.console.templates=",
            "--web.console.libraries=", "--log.level=warn",
        ], workdir)
        try:
            harness.wait_until("Prometheus ready", self._ready, timeout=30, interval=0.2)
        except Exception:
            self.stop()
            raise RuntimeError(f"Prometheus did not start:\n{self.log()}")

    def _ready(self) -> bool:
        if not self.proc.alive():
            raise harness.Fatal(f"prometheus exited:\n{self.log()}")
        return requests.get(self.url + "/-/ready", timeout=2).status_code == 200

    def log(self) -> str:
        return self.proc.log_path.read_text(errors="replace")[-3000:]

    def api(self, path: str, **params):
        r = requests.get(self.url + "/api/v1/" + path, params=params, timeout=5)
        body = r.json()
        assert body.get("status") == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        return self.api("query", query=expr)["result"]

    def alert_states(self) -> dict[str, str]:
        """alertname -> its most advanced state among its active alerts."""
        states: dict[str, str] = {}
        for a in self.api("alerts")["alerts"]:
            if states.get(a["labels"]["alertname"]) != "firing":
                states[a["labels"]["alertname"]] = a["state"]
        return states

    def rule_states(self) -> dict[str, str]:
        return {r["name"]: r["state"] for g in self.api("rules", type="alert")["groups"] for r in g["rules"]}

    def stop(self):
        self.proc.stop()


def rules_with_short_for(workdir: Path) -> Path:
    """The shipped rule file with every alert's `for:` shortened; nothing else changed."""
    doc = yaml.safe_load(RULES.read_text())
    for a in alerting_rules(doc):
        assert a.get("for"), a["alert"]
        a["for"] = SHORT_FOR
    path = workdir / f"rules-short-for-{secrets.token_hex(4)}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every panel target, with the dashboard's
    variables as Grafana fills them for "All" (its allValue)."""
    dash = json.loads(DASHBOARD.read_text())
    all_values = {v["name"]: v.get("allValue", ".*") for v in dash["templating"]["list"] if v["type"] == "query"}
    out = []
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name, value in all_values.items():
                expr = expr.replace("$" + name, value)
            assert "$" not in expr, (panel["title"], expr)
            out.append((panel["title"], expr))
    return out


def key_entry(key: str, **fields) -> dict:
    return {"key": key, "user_id": "u_" + key[-6:], "key_id": "k_" + key[-6:], "service_id": "platform",
            "scopes": ["mlflow:read", "mlflow:write"], "rate_limit_per_hour": 100000, **fields}


def new_key() -> str:
    return "hk_test_mon_" + secrets.token_hex(12)


def get(session: requests.Session, url: str, key: str | None = None, method: str = "GET") -> int:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return session.request(method, url, headers=headers, json={} if method == "POST" else None, timeout=10).status_code


def value(sample: dict) -> float:
    return float(sample["value"][1])


def wait_for_states(prom: Prometheus, want: str, seen: dict[str, list[str]], timeout: float):
    """Polls /api/v1/alerts until each key-service alert is in `want`
    ("firing", or "resolved": no longer active), recording every state seen."""
    def check():
        states = prom.alert_states()
        for name in KEY_SERVICE_ALERTS:
            state = states.get(name, "resolved")
            if not seen[name] or seen[name][-1] != state:
                seen[name].append(state)
        return all(states.get(name, "resolved") == want for name in KEY_SERVICE_ALERTS)
    try:
        harness.wait_until(f"alerts {want}", check, timeout=timeout, interval=0.2)
    except TimeoutError as e:
        ratios = prom.query('{__name__=~"hokusai_auth:.*ratio_rate5m"}')
        raise AssertionError(f"{e}; states seen: {seen}; alerts now: {prom.api('alerts')}; ratios: {ratios}") from None


@pytest.mark.parametrize("build", ["wasm", "native"])
def test_alerts_fire_and_resolve_and_dashboard_has_data_in_real_prometheus(build, workdir, keysvc, start_envoy,
                                                                           normal_mode):
    rw, limited = new_key(), new_key()
    fresh = [new_key() for _ in range(100)]  # valid keys never seen: one successful call each
    keysvc.set_keys({"keys": [*harness.DEV_KEYS["keys"], key_entry(rw), key_entry(limited, rate_limit_per_hour=1),
                              *map(key_entry, fresh)]})
    gw = start_envoy(filter=build)
    admin = gw.admin.removeprefix("http://")
    prom = Prometheus(workdir, f"prometheus-{build}-{secrets.token_hex(3)}", rules_with_short_for(workdir), [admin])
    s = requests.Session()
    try:
        harness.wait_until("Prometheus scraping the filter's stats",
                           lambda: prom.query('{__name__=~"(envoy_wasmcustom_)?hokusai_auth_allowed"}'),
                           timeout=20, interval=0.2)
        # Healthy traffic: every outcome but those the local config cannot give
        # (not_enforced, anonymous: route rules; auth_rate_limited: the key service's 429).
        assert [get(s, gw.url + SEARCH, rw) for _ in range(5)] == [200] * 5
        assert get(s, gw.url + "/api/mlflow/_hokusai/whoami", rw) == 200
        assert get(s, gw.url + "/api/mlflow/health/mlflow") == 200
        assert get(s, gw.url + SEARCH) == 401
        bad = s.get(gw.url + "/api/mlflow;x=1/api/2.0/mlflow/runs/search", timeout=10)  # ambiguous: the filter's 400
        assert (bad.status_code, bad.headers.get("x-hokusai-auth-reply")) == (400, "bad_path")
        assert get(s, gw.url + SEARCH, new_key()) == 401  # unknown to the key service
        assert get(s, gw.url + CREATE, harness.RO_KEY, method="POST") == 403
        assert [get(s, gw.url + SEARCH, limited) for _ in range(2)] == [200, 429]
        assert get(s, gw.url + UNKNOWN, rw) == 200  # not in the endpoint table: a write
        harness.wait_until("the healthy traffic recorded",
                           lambda: prom.query('hokusai_auth:requests:rate5m{outcome="denied.rate_limited"} > 0'),
                           timeout=20, interval=0.2)
        # (HokusaiAuthUnknownEndpoints may go pending: UNKNOWN was such a request.)
        assert not set(KEY_SERVICE_ALERTS) & set(prom.alert_states()), prom.api("alerts")

        # The key service answers 500: every key the cache lacks gets 503.
        keysvc.mode("error")
        assert [get(s, gw.url + SEARCH, new_key()) for _ in range(3)] == [503] * 3
        seen: dict[str, list[str]] = {name: [] for name in KEY_SERVICE_ALERTS}
        wait_for_states(prom, "firing", seen, timeout=30)
        for name in KEY_SERVICE_ALERTS:
            assert seen[name][-2:] == ["pending", "firing"], (name, seen[name])
        firing = {a["labels"]["alertname"]: a for a in prom.api("alerts")["alerts"]}
        assert firing["HokusaiAuthUnavailable"]["labels"]["job"] == "hokusai-gateway"
        assert firing["HokusaiAuthKeyServiceFailing"]["annotations"]["runbook_url"] == "docs/deployment.md#503"

        # It recovers, and traffic goes on: the 503s' share falls under 1%,
        # the failed calls' under 5%.
        keysvc.mode("normal")

        def traffic(keys: list[str]) -> list[int]:
            with requests.Session() as session:
                return [get(session, gw.url + SEARCH, k) for k in keys]
        batches = [fresh[i::4] + [rw] * 150 for i in range(4)]
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            statuses = [c for batch in pool.map(traffic, batches) for c in batch]
        assert set(statuses) == {200}, statuses
        wait_for_states(prom, "resolved", seen, timeout=30)
        assert all(seen[name][-1] == "resolved" for name in KEY_SERVICE_ALERTS), seen
        rules = prom.rule_states()
        assert all(rules[name] == "inactive" for name in KEY_SERVICE_ALERTS), rules

        # Every dashboard query answers with data from this Prometheus.
        for panel, expr in dashboard_queries():
            harness.wait_until(f"data for {panel!r}: {expr}",
                               lambda: [r for r in prom.query(expr) if math.isfinite(value(r))],
                               timeout=20, interval=0.5)
        outcomes = {r["metric"]["outcome"]: value(r) for r in prom.query("sum by (outcome) (hokusai_auth:requests:rate5m)")}
        for outcome in ("allowed", "whoami", "public", "denied.bad_request", "denied.unauthenticated", "denied.invalid_key",
                        "denied.forbidden", "denied.rate_limited", "denied.unavailable"):
            assert outcomes.get(outcome, 0) > 0, (outcome, outcomes)
        errors = {r["metric"]["reason"]: value(r) for r in prom.query("sum by (reason) (hokusai_auth:callout_errors:rate5m)")}
        assert errors["bad_status"] > 0, errors
        assert value(prom.query("hokusai_auth:endpoint_unknown:rate5m")[0]) > 0
        hit = value(prom.query("hokusai_auth:cache_hit:ratio_rate5m")[0])
        assert 0.5 < hit < 1, hit
        p99 = value(prom.query('hokusai_auth:callout_latency_ms:quantile_rate5m{quantile="0.99"}')[0])
        assert 0 < p99 < 1000, p99
    finally:
        prom.stop()
        s.close()
