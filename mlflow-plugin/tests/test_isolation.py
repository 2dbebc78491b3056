"""Tenant isolation by MLflow's own auth app, with users and admin flags
taken from the gateway's assertion."""

from __future__ import annotations

import pytest

from conftest import Api

EXPERIMENTS = "/api/2.0/mlflow/experiments"
MODELS = "/api/2.0/mlflow/registered-models"
GRANT = "/api/3.0/mlflow/users/permissions/grant"


def ok(response):
    assert response.status_code == 200, f"{response.status_code}: {response.text}"
    return response.json()


def create_experiment(api: Api, name: str) -> str:
    return ok(api.call("POST", f"{EXPERIMENTS}/create", {"name": name}))["experiment_id"]


def get_experiment(api: Api, experiment_id: str):
    return api.call("GET", f"{EXPERIMENTS}/get", params={"experiment_id": experiment_id})


def create_model(api: Api, name: str) -> None:
    ok(api.call("POST", f"{MODELS}/create", {"name": name}))


def get_model(api: Api, name: str):
    return api.call("GET", f"{MODELS}/get", params={"name": name})


def assert_forbidden(response) -> None:
    assert response.status_code == 403, f"{response.status_code}: {response.text}"


@pytest.fixture
def users(as_user, unique):
    """Two tenants and an admin, as fresh assertions."""
    return as_user(f"u_a_{unique}"), as_user(f"u_b_{unique}"), as_user(f"ops_{unique}", is_admin=True)


def test_other_user_reads_but_cannot_change_an_experiment(users, unique):
    a, b, admin = users
    experiment_id = create_experiment(a, f"exp-{unique}")

    assert ok(get_experiment(b, experiment_id))["experiment"]["name"] == f"exp-{unique}"
    assert_forbidden(b.call("POST", f"{EXPERIMENTS}/update", {"experiment_id": experiment_id, "new_name": "stolen"}))
    assert_forbidden(b.call("POST", f"{EXPERIMENTS}/delete", {"experiment_id": experiment_id}))

    experiment = ok(get_experiment(admin, experiment_id))["experiment"]
    assert (experiment["name"], experiment["lifecycle_stage"]) == (f"exp-{unique}", "active")


def test_other_user_reads_but_cannot_change_a_registered_model(users, unique):
    a, b, admin = users
    name = f"model-{unique}"
    create_model(a, name)

    assert ok(get_model(b, name))["registered_model"]["name"] == name
    assert_forbidden(b.call("POST", f"{MODELS}/rename", {"name": name, "new_name": f"stolen-{unique}"}))
    assert_forbidden(b.call("PATCH", f"{MODELS}/update", {"name": name, "description": "defaced"}))
    assert_forbidden(b.call("DELETE", f"{MODELS}/delete", {"name": name}))

    model = ok(get_model(admin, name))["registered_model"]
    assert model.get("description", "") == ""
    assert get_model(admin, f"stolen-{unique}").status_code == 404


def test_owner_deletes_own_experiment_and_model(users, unique):
    a, _, admin = users
    experiment_id = create_experiment(a, f"exp-{unique}")
    create_model(a, f"model-{unique}")

    ok(a.call("POST", f"{EXPERIMENTS}/delete", {"experiment_id": experiment_id}))
    ok(a.call("DELETE", f"{MODELS}/delete", {"name": f"model-{unique}"}))

    assert ok(get_experiment(admin, experiment_id))["experiment"]["lifecycle_stage"] == "deleted"
    assert get_model(admin, f"model-{unique}").status_code == 404


def test_admin_deletes_anyones_model(users, unique):
    a, _, admin = users
    create_model(a, f"model-{unique}")

    ok(admin.call("DELETE", f"{MODELS}/delete", {"name": f"model-{unique}"}))

    assert get_model(admin, f"model-{unique}").status_code == 404


def test_owner_grants_edit_then_other_user_can_update(users, unique):
    a, b, admin = users
    experiment_id = create_experiment(a, f"exp-{unique}")
    grant = {"username": f"u_b_{unique}", "resource_type": "experiment", "resource_id": experiment_id,
             "permission": "EDIT"}
    assert_forbidden(b.call("POST", GRANT, grant))  # B cannot grant itself

    ok(a.call("POST", GRANT, grant))
    ok(b.call("POST", f"{EXPERIMENTS}/update", {"experiment_id": experiment_id, "new_name": f"renamed-{unique}"}))

    assert ok(get_experiment(admin, experiment_id))["experiment"]["name"] == f"renamed-{unique}"


def test_admin_flag_follows_the_latest_assertion(as_user, users, unique):
    a, _, admin = users
    create_model(a, f"first-{unique}")
    create_model(a, f"second-{unique}")

    b_as_admin = as_user(f"u_b_{unique}", is_admin=True)
    ok(b_as_admin.call("DELETE", f"{MODELS}/delete", {"name": f"first-{unique}"}))
    b_demoted = as_user(f"u_b_{unique}", is_admin=False)
    assert_forbidden(b_demoted.call("DELETE", f"{MODELS}/delete", {"name": f"second-{unique}"}))

    assert ok(b_demoted.call("GET", "/api/2.0/mlflow/users/current"))["user"]["is_admin"] is False
    assert get_model(admin, f"first-{unique}").status_code == 404
    assert ok(get_model(admin, f"second-{unique}"))["registered_model"]["name"] == f"second-{unique}"


def test_no_permissions_default_hides_other_users_experiment(strict_server, as_user, unique):
    a = as_user(f"u_a_{unique}", on=strict_server)
    b = as_user(f"u_b_{unique}", on=strict_server)
    experiment_id = create_experiment(a, f"exp-{unique}")

    assert ok(get_experiment(a, experiment_id))["experiment"]["name"] == f"exp-{unique}"
    denied = get_experiment(b, experiment_id)
    assert_forbidden(denied)
    # The hokusai-auth app answers denials in MLflow's JSON format.
    assert denied.headers["content-type"] == "application/json"
    assert denied.json()["error_code"] == "PERMISSION_DENIED"


def test_hokusai_auth_app_json_403_on_fastapi_served_route(strict_server, as_user, unique):
    a = as_user(f"u_a_{unique}", on=strict_server)
    b = as_user(f"u_b_{unique}", on=strict_server)
    experiment_id = create_experiment(a, f"exp-{unique}")
    path = f"/api/2.0/mlflow-artifacts/artifacts/{experiment_id}/{unique}.txt"
    upload = a.call("PUT", path, headers={"content-type": "text/plain"})
    assert upload.status_code == 200, upload.text

    denied = b.call("GET", path)

    assert_forbidden(denied)
    assert denied.headers["content-type"] == "application/json"
    assert denied.json()["error_code"] == "PERMISSION_DENIED"


def test_basic_auth_app_403_stays_plain_text(users, unique):
    # What `--app-name basic-auth` does with denials: MLflow's own text, which
    # the plugin cannot change from an authorization_function.
    a, b, _ = users
    create_model(a, f"model-{unique}")

    denied = b.call("DELETE", f"{MODELS}/delete", {"name": f"model-{unique}"})

    assert_forbidden(denied)
    assert denied.text == "Permission denied"
