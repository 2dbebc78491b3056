"""Who owns what (issue 22), end to end: a real MLflow with its auth app and
the Hokusai plugin behind Envoy with the filter signing who calls; the
unmodified MLflow client as users A and B (their own keys), an admin key,
and the MLflow UI in Chromium. MLflow trusts only the filter's signed
assertion: straight to MLflow, around the gateway, every request is 401."""

import time
import uuid

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from playwright.sync_api import sync_playwright

from hokusai_testkit import harness

pytestmark = pytest.mark.usefixtures("normal_mode")

MOUNT = "/api/mlflow"
API = MOUNT + "/api/2.0/mlflow"
GRANT = MOUNT + "/api/3.0/mlflow/users/permissions/grant"
OUTPUT = harness.ROOT / "target/test-output"
# try_changes's changes (mlflow_scenarios.change_actions), by kind.
UPDATES = ["log_param", "log_metric", "set_run_tag", "set_experiment_tag", "rename_experiment", "update_model",
           "update_version", "set_alias", "create_version", "rename_model"]
DELETIONS = ["delete_version", "delete_model", "delete_run", "delete_experiment"]
ALL_CHANGES = UPDATES + DELETIONS


class Users:
    """Write keys of users u_a and u_b, and an admin key (is_admin at the key service)."""

    def __init__(self, keys):
        self.a = keys.new(user_id="u_a")
        self.b = keys.new(user_id="u_b")
        self.admin = keys.new(user_id="u_boss", scopes=["mlflow:admin"], is_admin=True)


@pytest.fixture(scope="module")
def users(keys):
    return Users(keys)


@pytest.fixture(scope="module")
def identity(workdir):
    return harness.IdentityKeys.ensure(workdir / f"identity-{uuid.uuid4().hex[:6]}")


@pytest.fixture(scope="module")
def readable(workdir, keysvc, identity):
    """default_permission READ: everyone reads everything, changes only their own."""
    ownership = harness.Ownership(identity, "READ")
    with harness.mlflow_gateway(workdir, f"own-read-{uuid.uuid4().hex[:6]}", keysvc.port, ownership) as gw:
        yield gw


@pytest.fixture(scope="module")
def private(workdir, keysvc, identity):
    """default_permission NO_PERMISSIONS: users see only their own and what is granted."""
    ownership = harness.Ownership(identity, "NO_PERMISSIONS")
    with harness.mlflow_gateway(workdir, f"own-none-{uuid.uuid4().hex[:6]}", keysvc.port, ownership) as gw:
        yield gw


def client(gw, scenario, key, target=None) -> dict:
    """The unmodified MLflow client, as the key's user."""
    return harness.run_mlflow_client(gw.url + MOUNT, scenario, token=key, target=target)[0]


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


def refused_by_mlflow(error) -> bool:
    """MLflow's auth app's 403 (through the plugin), not the filter's scope check."""
    return isinstance(error, str) and "PERMISSION_DENIED: Permission denied" in error


def as_made(work: dict) -> dict:
    """What A made, as read_work shows it while nobody changed it."""
    return {"experiment": work["experiment_name"], "run_params": {"alpha": "0.5"}, "run_tags": [],
            "model_description": "", "versions": [work["version"]], "aliases": ["champion"],
            "champion": work["version"], "experiment_listed": True, "model_listed": True}


# --- B and A's work under default_permission READ --------------------------------


def test_b_reads_but_cannot_change_or_delete_what_a_made(readable, users):
    work = client(readable, "owned_work", users.a)
    tried = client(readable, "try_changes", users.b, target=work)
    assert list(tried) == ALL_CHANGES
    assert {n for n, e in tried.items() if not refused_by_mlflow(e)} == set(), tried
    # B still reads all of it, and none of B's attempts changed anything.
    read = client(readable, "read_work", users.b, target=work)
    assert read == as_made(work)


def test_a_and_an_admin_can_change_and_delete_what_a_made(readable, users):
    for who in (users.a, users.admin):
        work = client(readable, "owned_work", users.a)
        tried = client(readable, "try_changes", who, target=work)
        assert tried == {n: "ok" for n in ALL_CHANGES}, tried


def grant(gw, owner_key, username, resource_type, resource_id, permission="EDIT"):
    """MLflow's permissions API, through the gateway, as the owner."""
    r = requests.post(gw.url + GRANT, headers=bearer(owner_key), timeout=30,
                      json={"username": username, "resource_type": resource_type, "resource_id": resource_id,
                            "permission": permission})
    assert r.status_code == 200, r.text


def test_a_grants_b_edit_and_then_b_updates_but_cannot_delete(readable, users):
    work = client(readable, "owned_work", users.a)
    before = client(readable, "try_changes", users.b, target={**work, "actions": ["rename_experiment"]})
    assert refused_by_mlflow(before["rename_experiment"]), before
    grant(readable, users.a, "u_b", "experiment", work["experiment_id"])
    grant(readable, users.a, "u_b", "registered_model", work["model"])
    tried = client(readable, "try_changes", users.b, target={**work, "actions": ALL_CHANGES})
    assert {n: tried[n] for n in UPDATES} == {n: "ok" for n in UPDATES}, tried
    assert all(refused_by_mlflow(tried[n]) for n in DELETIONS), tried


def test_b_cannot_grant_itself_access_to_what_a_made(readable, users):
    work = client(readable, "owned_work", users.a)
    r = requests.post(readable.url + GRANT, headers=bearer(users.b), timeout=30,
                      json={"username": "u_b", "resource_type": "experiment", "resource_id": work["experiment_id"],
                            "permission": "MANAGE"})
    assert r.status_code == 403 and r.json()["error_code"] == "PERMISSION_DENIED", r.text
    assert "x-hokusai-auth-reply" not in r.headers, "MLflow refused it, not the filter"


# --- under NO_PERMISSIONS ----------------------------------------------------------


def test_under_no_permissions_b_cannot_even_read_what_a_made(private, users):
    work = client(private, "owned_work", users.a)
    read = client(private, "read_work", users.b, target=work)
    # Searches leave A's work out; each direct read is refused.
    listed = {n: read.pop(n) for n in ("experiment_listed", "model_listed", "versions")}
    assert listed == {"experiment_listed": False, "model_listed": False, "versions": []}, listed
    assert all(isinstance(v, dict) and refused_by_mlflow(v["error"]) for v in read.values()), read
    own = client(private, "read_work", users.a, target=work)
    assert own == as_made(work)


# --- around the gateway ------------------------------------------------------------


def claims(sub, audience="mlflow", lifetime=60, age=0, is_admin=False):
    now = int(time.time()) - age
    return {"iss": "hokusai-gateway", "aud": audience, "sub": sub, "key_id": "k_forged", "scopes": ["mlflow:write"],
            "is_admin": is_admin, "service_id": "platform", "iat": now, "exp": now + lifetime}


def signed(keys: harness.IdentityKeys, payload: dict) -> str:
    private_key = serialization.load_pem_private_key(keys.pem.read_bytes(), password=None)
    return jwt.encode(payload, private_key, algorithm="EdDSA", headers={"kid": keys.kid, "typ": "JWT"})


def unsigned(payload: dict, kid: str) -> str:
    """alg none: a header and claims anyone can write."""
    return jwt.encode(payload, None, algorithm="none", headers={"kid": kid, "typ": "JWT"})


def test_straight_to_mlflow_every_request_is_401_and_changes_nothing(readable, users, identity, workdir):
    work = client(readable, "owned_work", users.a)
    # Another key pair with the gateway's kid: only the signature is wrong.
    stranger = harness.IdentityKeys.ensure(workdir / f"stranger-{uuid.uuid4().hex[:6]}", kid=identity.kid)
    attempts = {
        "no assertion": {},
        "hand-written identity headers": {"x-hokusai-user-id": "u_a", "x-hokusai-api-key-id": "k_a"},
        "a token from another key": {"x-hokusai-identity": signed(stranger, claims("u_boss", is_admin=True))},
        "a forged (unsigned) token": {"x-hokusai-identity": unsigned(claims("u_a"), identity.kid)},
        "an expired token": {"x-hokusai-identity": signed(identity, claims("u_a", lifetime=60, age=600))},
        "a token for another audience": {"x-hokusai-identity": signed(identity, claims("u_a", audience="other"))},
    }
    rename = {"experiment_id": work["experiment_id"], "new_name": "taken-around-the-gateway"}
    for what, headers in attempts.items():
        r = requests.post(readable.mlflow.url + "/api/2.0/mlflow/experiments/update", json=rename,
                          headers=headers, timeout=30)
        assert r.status_code == 401 and r.json()["error_code"] == "UNAUTHENTICATED", (what, r.status_code, r.text)
    # Nothing changed, as A sees it through the gateway.
    r = requests.get(readable.url + API + "/experiments/get", params={"experiment_id": work["experiment_id"]},
                     headers=bearer(users.a), timeout=30)
    assert r.status_code == 200 and r.json()["experiment"]["name"] == work["experiment_name"], r.text
    # The control: the same path with a good assertion is served.
    good = {"x-hokusai-identity": signed(identity, claims("u_a"))}
    r = requests.get(readable.mlflow.url + "/api/2.0/mlflow/experiments/get",
                     params={"experiment_id": work["experiment_id"]}, headers=good, timeout=30)
    assert r.status_code == 200, r.text


# --- admin follows the key service -------------------------------------------------


def test_an_admin_demoted_at_the_key_service_loses_admin_once_its_verdict_expires(
        readable, users, keys, identity, start_envoy):
    # Its own gateway in front of the same MLflow, with verdicts cached for 1 s.
    gw = start_envoy(harness.plugin_config(cache={"ttl_seconds": 1, "negative_ttl_seconds": 1}),
                     upstream_port=readable.mlflow.port, signing=harness.Signing(identity))
    boss = keys.new(user_id="u_demoted", scopes=["mlflow:admin"], is_admin=True)
    r = requests.post(gw.url + API + "/experiments/create", json={"name": f"a-{uuid.uuid4().hex[:8]}"},
                      headers=bearer(users.a), timeout=30)
    assert r.status_code == 200, r.text
    tag = {"experiment_id": r.json()["experiment_id"], "key": "touched-by", "value": "admin"}

    def tag_as_boss():
        return requests.post(gw.url + API + "/experiments/set-experiment-tag", json=tag, headers=bearer(boss),
                             timeout=30)

    assert tag_as_boss().status_code == 200, "an admin changes anyone's experiment"
    keys.update(boss, is_admin=False)
    demoted = time.monotonic()
    # A requests.Response is falsy when refused: wait for a list holding it.
    [refused] = harness.wait_until("MLflow refusing the demoted admin",
                                   lambda: [r for r in [tag_as_boss()] if r.status_code == 403], timeout=20,
                                   interval=0.2)
    assert time.monotonic() - demoted < 10
    assert refused.json()["error_code"] == "PERMISSION_DENIED" and "x-hokusai-auth-reply" not in refused.headers
    # The filter still lets the key write (its scopes did not change): MLflow refused.
    r = requests.post(gw.url + API + "/experiments/create", json={"name": f"own-{uuid.uuid4().hex[:8]}"},
                      headers=bearer(boss), timeout=30)
    assert r.status_code == 200, r.text


# --- the MLflow UI -----------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium():
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=harness.chromium_binary(), args=harness.CHROMIUM_ARGS)
        yield browser
        browser.close()


def delete_model_in_the_ui(page):
    """The model page's menu, Delete, and Delete again in the dialog: the
    UI's delete call's reply."""
    page.get_by_test_id("overflow-menu-trigger").click()
    page.get_by_role("menuitem", name="Delete").click()
    dialog = page.get_by_role("dialog")
    with page.expect_response(lambda r: "/ajax-api/2.0/mlflow/registered-models/delete" in r.url,
                              timeout=60_000) as reply:
        dialog.get_by_role("button", name="Delete").click()
    return reply.value


def test_in_the_ui_b_sees_a_s_model_and_its_delete_is_refused(readable, users, chromium):
    work = client(readable, "owned_work", users.a)
    context = chromium.new_context(http_credentials={"username": "b", "password": users.b})
    try:
        page = context.new_page()
        page.goto(readable.url + f"{MOUNT}/#/models/{work['model']}")
        page.get_by_text(work["model"], exact=True).first.wait_for(timeout=60_000)
        # MLflow's UI knows the caller as the filter's assertion named them.
        page.get_by_text("u_b", exact=True).first.wait_for(timeout=60_000)
        reply = delete_model_in_the_ui(page)
        assert reply.status == 403 and reply.json()["error_code"] == "PERMISSION_DENIED", reply.text()
        page.get_by_text("PERMISSION_DENIED: Permission denied", exact=False).first.wait_for(timeout=30_000)
        OUTPUT.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(OUTPUT / "mlflow-ui-delete-refused.png"), full_page=True)
        page.reload()
        page.get_by_text(work["model"], exact=True).first.wait_for(timeout=60_000)
    finally:
        context.close()
    r = requests.get(readable.url + API + "/registered-models/get", params={"name": work["model"]},
                     headers=bearer(users.a), timeout=30)
    assert r.status_code == 200, r.text
