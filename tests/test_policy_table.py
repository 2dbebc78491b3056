"""Every endpoint of the policy table (src/request/endpoints.txt) through the real
filter: a read-only key reaches the upstream exactly on `read` endpoints and
gets the filter's 403 everywhere else; a read-write key is refused only on
`admin` endpoints; an admin key everywhere passes."""

import pytest
import requests

from hokusai_testkit import harness

TABLE = harness.ROOT / "src/request/endpoints.txt"


def endpoints():
    rows = []
    for line in TABLE.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        cls, method, pattern = line.split()
        path = pattern.replace("/**", "/a/b").replace("{}", "x")
        rows.append((cls, "GET" if method == "*" else method, path))
    assert len(rows) > 200, "the table looks truncated"
    return rows


@pytest.fixture(scope="module")
def gw(workdir, echo, keysvc):
    cfg = harness.plugin_config(rate_limit={"enabled": False})
    e = harness.Envoy(workdir, harness.EnvoyOptions(upstream_port=echo.port, auth_port=keysvc.port, config=cfg),
                      name="envoy-policy")
    yield e
    e.stop()


def outcome(gw, key, method, path):
    r = requests.request(method, f"{gw.url}/api/mlflow{path}", headers={"Authorization": f"Bearer {key}"},
                         data=b"{}" if method in ("POST", "PUT", "PATCH") else None, timeout=10)
    if r.status_code == 200 and r.json().get("path", "").startswith(path):
        return "upstream"
    if r.status_code == 403 and r.json().get("error_code") == "PERMISSION_DENIED":
        return "denied"
    raise AssertionError(f"{method} {path}: unexpected {r.status_code} {r.text[:200]}")


def mismatches(gw, key, passes):
    """Every table endpoint whose outcome for `key` is not `passes(class)`."""
    wrong = []
    for cls, method, path in endpoints():
        want = "upstream" if passes(cls) else "denied"
        got = outcome(gw, key, method, path)
        if got != want:
            wrong.append(f"{cls:15} {method:6} {path}: {got}")
    return "\n".join(wrong)


def test_read_only_key_reaches_exactly_the_read_endpoints(gw):
    assert not mismatches(gw, harness.RO_KEY, lambda cls: cls == "read")


def test_read_write_key_is_refused_only_on_admin_endpoints(gw):
    assert not mismatches(gw, harness.RW_KEY, lambda cls: cls != "admin")


def test_admin_key_passes_everywhere_and_unknown_endpoints_count_as_writes(gw):
    for cls, method, path in endpoints()[::7]:
        assert outcome(gw, harness.ADMIN_KEY, method, path) == "upstream", (cls, method, path)
    assert outcome(gw, harness.RO_KEY, "GET", "/api/2.0/mlflow/not-an-endpoint") == "denied"
    assert outcome(gw, harness.RW_KEY, "GET", "/api/2.0/mlflow/not-an-endpoint") == "upstream"
