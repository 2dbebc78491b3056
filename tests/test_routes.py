"""Per-route configuration in a real Envoy: rules selected by route name,
host and path prefix; verdicts and rate-limit counts kept apart per key
service; routes without auth (the filter's own switch and Envoy's); and the
MLflow UI through the gateway in a real browser (Debian's Chromium, driven
by Playwright)."""

import base64
import json
import re
import secrets

import pytest
import requests
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import sync_playwright

from hokusai_testkit import harness

pytestmark = pytest.mark.usefixtures("normal_mode")

API_SEARCH = "/api/mlflow/api/2.0/mlflow/experiments/search"
UI_SEARCH = "/api/mlflow/ajax-api/2.0/mlflow/experiments/search"
UI_CREATE = "/api/mlflow/ajax-api/2.0/mlflow/experiments/create"
STAGING = {"Host": "staging.localhost"}
OUTPUT = harness.ROOT / "target/test-output"


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


def basic(key):
    return {"Authorization": "Basic " + base64.b64encode(f"mlflow:{key}".encode()).decode()}


def upstream(echo):
    """The last request the echo upstream received: its path and headers."""
    last = echo.requests()[-1]
    return last["path"], {k.lower(): v for k, v in last["headers"]}


def test_the_local_config_selects_api_ui_and_staging_routes(gw, echo, keysvc):
    # The MLflow client's paths: Bearer, as before.
    r = requests.get(gw.url + API_SEARCH, timeout=10)
    assert r.status_code == 401 and r.headers["www-authenticate"] == 'Bearer realm="hokusai"'
    # The browser's paths under the same mount: a Basic challenge, so the browser asks.
    for path in ("/api/mlflow/", "/api/mlflow", "/mlflow/", UI_SEARCH, "/api/mlflow/static-files/x.js"):
        r = requests.get(gw.url + path, timeout=10)
        assert r.status_code == 401 and r.headers["www-authenticate"] == 'Basic realm="Hokusai MLflow"', path
    # The key in the Basic password opens them.
    echo.clear()
    assert requests.get(gw.url + UI_SEARCH, headers=basic(harness.RW_KEY), timeout=10).status_code == 200
    path, headers = upstream(echo)
    assert path == "/ajax-api/2.0/mlflow/experiments/search" and headers["x-hokusai-user-id"] == "u_rw"
    assert "authorization" not in headers
    # The staging host's route (selected by its Envoy route name) asks for its own service.
    before = keysvc.stats()["last"]
    r = requests.get(gw.url + API_SEARCH, headers={**STAGING, **bearer(harness.STAGING_KEY)}, timeout=10)
    assert r.status_code == 200, r.text
    assert upstream(echo)[1]["x-hokusai-user-id"] == "u_staging"
    assert json.loads(keysvc.stats()["last"]["body"])["service_id"] == "ml-platform"
    assert keysvc.stats()["last"] != before


@pytest.mark.parametrize("first,second", [("platform", "staging"), ("staging", "platform")])
def test_a_verdict_for_one_service_is_never_used_for_another(gw, keys, keysvc, first, second):
    """A key valid for service A: cached on A's route, then 401 on B's route
    (its own callout, for B's service_id); and the other way round."""
    services = {"platform": ("platform", {}), "staging": ("ml-platform", STAGING)}
    service_id, headers = services[first]
    other_id, other_headers = services[second]
    key = keys.new(service_id=service_id)
    calls = keysvc.calls()
    for _ in range(2):
        r = requests.get(gw.url + API_SEARCH, headers={**headers, **bearer(key)}, timeout=10)
        assert r.status_code == 200, r.text
    assert keysvc.calls() == calls + 1, "the second request was a cache hit"
    r = requests.get(gw.url + API_SEARCH, headers={**other_headers, **bearer(key)}, timeout=10)
    assert r.status_code == 401 and f"'{other_id}'" in r.json()["message"]
    assert keysvc.calls() == calls + 2
    assert json.loads(keysvc.stats()["last"]["body"])["service_id"] == other_id
    # Both verdicts stay cached, each for its own service.
    assert requests.get(gw.url + API_SEARCH, headers={**headers, **bearer(key)}, timeout=10).status_code == 200
    assert requests.get(gw.url + API_SEARCH, headers={**other_headers, **bearer(key)}, timeout=10).status_code == 401
    assert keysvc.calls() == calls + 2


def with_routes(routes, **sections):
    cfg = harness.plugin_config(**sections)
    cfg["routes"] = routes
    return cfg


def test_rate_limits_count_per_route_scope(start_envoy, keys):
    e = start_envoy(with_routes([
        {"name": "small", "match": {"path_prefix": "/small"}, "rate_limit": {"scope": "small"}},
        {"name": "shared-a", "match": {"path_prefix": "/a"}, "rate_limit": {"scope": "shared"}},
        {"name": "shared-b", "match": {"path_prefix": "/b"}, "rate_limit": {"scope": "shared"}},
    ]))
    key = keys.new(rate_limit_per_hour=2)
    get = lambda prefix: requests.get(e.url + prefix + "/api/2.0/mlflow/experiments/search",  # noqa: E731
                                      headers=bearer(key), timeout=10)
    assert [get("/small").status_code for _ in range(3)] == [200, 200, 429]
    # Routes that name the same scope share the key's count; others keep their own.
    assert [get(p).status_code for p in ("/a", "/b", "/a")] == [200, 200, 429]
    assert get("/api/mlflow").headers["x-ratelimit-remaining"] == "1"


def test_anonymous_reads_pass_without_identity_and_writes_ask_the_browser(start_envoy, echo, keysvc):
    e = start_envoy(with_routes([
        {"name": "api", "match": {"path_prefix": "/api/mlflow/api"}},
        {"name": "ui", "match": {"path_prefix": "/api/mlflow"}, "anonymous_read": True,
         "challenge": {"scheme": "basic", "realm": "Hokusai MLflow"}},
    ]))
    calls = keysvc.calls()
    echo.clear()
    r = requests.get(e.url + UI_SEARCH, headers={"X-Hokusai-User-Id": "root"}, timeout=10)
    assert r.status_code == 200
    path, headers = upstream(echo)
    assert path == "/ajax-api/2.0/mlflow/experiments/search"
    assert "x-hokusai-user-id" not in headers, "no identity on an anonymous read"
    r = requests.post(e.url + UI_CREATE, json={"name": "x"}, timeout=10)
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic")
    r = requests.get(e.url + API_SEARCH, timeout=10)
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer"), "the client's route asks"
    assert keysvc.calls() == calls
    # With a key, the read is checked and identified like any other.
    requests.get(e.url + UI_SEARCH, headers=basic(harness.RW_KEY), timeout=10)
    assert upstream(echo)[1]["x-hokusai-user-id"] == "u_rw"
    assert e.stat("wasmcustom.hokusai_auth.anonymous") == 1


def test_a_route_with_auth_off_still_removes_credentials(start_envoy, echo, keysvc):
    e = start_envoy(with_routes([{"name": "open", "match": {"path_prefix": "/open"}, "enabled": False}]))
    calls = keysvc.calls()
    echo.clear()
    r = requests.get(e.url + "/open/thing?api_key=hk_test_x&a=1",
                     headers={**bearer("hk_test_y"), "X-API-Key": "hk_test_z", "X-Hokusai-User-Id": "root"},
                     timeout=10)
    assert r.status_code == 200
    path, headers = upstream(echo)
    assert path == "/open/thing?a=1"
    assert not {"authorization", "x-api-key", "x-hokusai-user-id"} & set(headers)
    assert keysvc.calls() == calls
    assert e.stat("wasmcustom.hokusai_auth.not_enforced") == 1


def local_yaml_with_an_open_route(workdir):
    """envoy-config/local.yaml with one more route to the upstream on which
    Envoy itself turns the filter off (typed_per_filter_config)."""
    text = harness.ENVOY_TEMPLATE.read_text()
    route = '''              - name: envoy-disabled
                match: { prefix: "/envoy-disabled/" }
                route: { cluster: mlflow }
                typed_per_filter_config:
                  hokusai_auth:
                    "@type": type.googleapis.com/envoy.config.route.v3.FilterConfig
                    disabled: true
'''
    anchor = "              - name: mlflow\n"
    assert anchor in text
    path = workdir / "local-open-route.yaml"
    path.write_text(text.replace(anchor, route + anchor, 1))
    return path


def test_envoys_per_route_switch_skips_the_filter_entirely(start_envoy, workdir, echo, keysvc):
    e = start_envoy(template=local_yaml_with_an_open_route(workdir))
    calls = keysvc.calls()
    before = e.stats("wasmcustom.hokusai_auth")
    r = requests.get(e.url + "/robots.txt", timeout=10)
    assert r.status_code == 200 and r.text.startswith("User-agent")
    echo.clear()
    r = requests.get(e.url + "/envoy-disabled/x", headers={**bearer("hk_test_passes_through"), "X-Hokusai-User-Id": "root"},
                     timeout=10)
    assert r.status_code == 200
    headers = upstream(echo)[1]
    # The filter never ran: nothing removed, nothing asked, nothing counted.
    # (Hence the filter's own `enabled: false` for routes that reach MLflow.)
    assert headers["authorization"] == "Bearer hk_test_passes_through" and headers["x-hokusai-user-id"] == "root"
    assert keysvc.calls() == calls
    assert e.stats("wasmcustom.hokusai_auth") == before
    # The other routes still authenticate.
    assert requests.get(e.url + API_SEARCH, timeout=10).status_code == 401


def test_a_bad_rule_is_rejected_at_load_naming_the_field(workdir, echo, keysvc):
    cfg = with_routes([{"match": {"host": "a.example"}}, {"match": {"path_prefix": "/x"}, "scopes": {"write": [""]}}])
    with pytest.raises(RuntimeError) as info:
        harness.Envoy(workdir, harness.EnvoyOptions(upstream_port=echo.port, auth_port=keysvc.port, config=cfg),
                      name="envoy-badrule")
    assert "configuration rejected: routes[1].scopes.write" in str(info.value)


# --- the MLflow UI in a real browser ---------------------------------------


@pytest.fixture(scope="module")
def ui_stack(workdir, keysvc):
    with harness.mlflow_gateway(workdir, f"ui-{secrets.token_hex(3)}", keysvc.port) as gw:
        yield gw


@pytest.fixture(scope="module")
def chromium():
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=harness.chromium_binary(), args=harness.CHROMIUM_ARGS)
        yield browser
        browser.close()


def test_the_mlflow_ui_through_the_gateway_in_a_real_browser(ui_stack, chromium):
    gw = ui_stack
    # The unmodified MLflow client makes an experiment and a run, and prints
    # the run's UI link under the tracking URI itself.
    made, printed = harness.run_mlflow_client(gw.url + "/api/mlflow", "ui_run", token=harness.RW_KEY)
    links = re.findall(r"View run \S+ at: (\S+)", printed)
    assert links and links[-1].startswith(gw.url + "/api/mlflow/#/experiments/"), printed[-2000:]

    # Without credentials a Bearer challenge is just a page of JSON to a
    # browser; the UI route's Basic challenge makes it ask (headless, with
    # nothing to answer, Chromium gives up on the prompt).
    anonymous = chromium.new_context()
    page = anonymous.new_page()
    response = page.goto(gw.url + "/api/mlflow/api/2.0/mlflow/experiments/search")
    assert response.status == 401 and "UNAUTHENTICATED" in page.content()
    with pytest.raises(PlaywrightError, match="ERR_INVALID_AUTH_CREDENTIALS"):
        page.goto(gw.url + "/api/mlflow/")
    anonymous.close()

    # The credentials typed into that prompt: any user name, the key as password.
    context = chromium.new_context(http_credentials={"username": "mlflow", "password": harness.RW_KEY})
    page = context.new_page()
    seen = []
    page.on("response", lambda r: seen.append((r.status, r.url)))
    page.goto(gw.url + "/api/mlflow/#/experiments")
    page.get_by_text(made["experiment"], exact=True).first.wait_for(timeout=60_000)
    OUTPUT.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(OUTPUT / "mlflow-ui-experiments.png"), full_page=True)
    # The run, by the link the client printed.
    page.goto(links[-1])
    page.get_by_text(made["run"], exact=True).first.wait_for(timeout=60_000)
    page.screenshot(path=str(OUTPUT / "mlflow-ui-run.png"), full_page=True)
    # The other mount serves the same UI.
    page.goto(gw.url + "/mlflow/#/experiments")
    page.get_by_text(made["experiment"], exact=True).first.wait_for(timeout=60_000)
    context.close()

    # Everything the page loaded stayed under the mount, static files and
    # ajax-api calls alike, and none of it was refused by the gateway but
    # the admin-only assistant (PERMISSION_DENIED for a read-write key).
    outside = [u for _, u in seen if not u.startswith((gw.url + "/api/mlflow/", gw.url + "/mlflow/"))]
    assert not outside, outside
    assert any("/api/mlflow/static-files/" in u and s == 200 for s, u in seen)
    assert any("/api/mlflow/ajax-api/2.0/mlflow/experiments/search" in u and s == 200 for s, u in seen)
    refused = [(s, u) for s, u in seen if s in (401, 429, 503) or (s == 403 and "/assistant/" not in u)]
    assert not refused, refused
