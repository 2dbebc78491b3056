"""MLflow client sessions, run as a user would: a fresh interpreter whose only
configuration is MLFLOW_TRACKING_URI and MLFLOW_TRACKING_TOKEN (or
MLFLOW_TRACKING_USERNAME/PASSWORD). The unmodified MLflow client talks to the
gateway; nothing here makes HTTP requests by hand.

    python -m hokusai_testkit.mlflow_scenarios <scenario> <workdir>

Prints one JSON line with the results on success.
"""

import hashlib
import json
import os
import sys
from pathlib import Path

import mlflow
from mlflow import MlflowClient

# MLflow 2.x clients (scripts/mlflow-matrix.sh) name a model's place `artifact_path`
# and have no logged-model ids.
MLFLOW_2 = mlflow.__version__.startswith("2.")


class AddOne(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return [v + 1 for v in model_input["x"]]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def big_file(path: Path, mib: int) -> Path:
    # Incompressible and not all-zero, written in chunks: nothing holds it whole.
    seed = hashlib.sha256(b"hokusai").digest()
    with open(path, "wb") as f:
        for i in range(mib * 32):
            block = hashlib.sha256(seed + i.to_bytes(8, "little")).digest() * 1024
            f.write(block)
    return path


def full(work: Path, tag: str, big_mib: int):
    client = MlflowClient()
    exp_name = f"e2e-{tag}"
    exp_id = mlflow.create_experiment(exp_name)
    assert any(e.experiment_id == exp_id for e in mlflow.search_experiments(filter_string=f"name = '{exp_name}'"))
    mlflow.set_experiment(exp_name)
    out = {"experiment_id": exp_id}

    with mlflow.start_run() as run:
        mlflow.log_param("alpha", 0.5)
        mlflow.log_params({"beta": 2, "gamma": "x"})
        mlflow.log_metric("loss", 0.25, step=1)
        mlflow.log_metrics({"loss": 0.125, "acc": 0.9}, step=2)
        mlflow.set_tags({"team": "hokusai", "stage": "e2e"})
        client.log_batch(run.info.run_id, metrics=[mlflow.entities.Metric("m", 1.0, 0, 0)],
                         params=[mlflow.entities.Param("p", "v")], tags=[mlflow.entities.RunTag("t", "v")])
        small = work / f"notes-{tag}.txt"
        small.write_text("hello from the hokusai gateway\n")
        mlflow.log_artifact(str(small))
        if big_mib:
            big = big_file(work / f"big-{tag}.bin", big_mib)
            mlflow.log_artifact(str(big), artifact_path="big")
        where = {"artifact_path": "model"} if MLFLOW_2 else {"name": "model"}
        info = mlflow.pyfunc.log_model(**where, python_model=AddOne(), pip_requirements=["mlflow"])
    run_id = run.info.run_id

    got = client.get_run(run_id)
    assert got.data.params["alpha"] == "0.5" and got.data.params["p"] == "v"
    assert got.data.metrics["loss"] == 0.125 and got.data.tags["team"] == "hokusai"
    assert [m.value for m in client.get_metric_history(run_id, "loss")] == [0.25, 0.125]
    assert len(mlflow.search_runs([exp_id], filter_string="params.alpha = '0.5'")) == 1

    dl = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=small.name, dst_path=str(work / f"dl-{tag}")))
    assert dl.read_text() == small.read_text()
    if big_mib:
        dl_big = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=f"big/{big.name}",
                                                          dst_path=str(work / f"dl-big-{tag}")))
        out["big_sha256_up"], out["big_sha256_down"] = sha256(big), sha256(dl_big)
        assert out["big_sha256_up"] == out["big_sha256_down"]
        out["big_bytes"] = dl_big.stat().st_size

    name = f"e2e-model-{tag}"
    v1 = mlflow.register_model(info.model_uri, name)
    v2 = client.create_model_version(name, source=info.model_uri, run_id=run_id,
                                     **({} if MLFLOW_2 else {"model_id": info.model_id}))
    client.set_registered_model_alias(name, "champion", v2.version)
    assert client.get_model_version_by_alias(name, "champion").version == v2.version
    assert [m.name for m in client.search_registered_models(filter_string=f"name = '{name}'")] == [name]
    import pandas as pd

    model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    assert list(model.predict(pd.DataFrame({"x": [1, 2]}))) == [2, 3]
    out.update(run_id=run_id, versions=[v1.version, v2.version])
    return out


def read_only_write(work: Path, tag: str, big_mib: int):
    """A read-only key can read; its write fails with PERMISSION_DENIED."""
    found = [e.name for e in mlflow.search_experiments()]
    try:
        mlflow.create_experiment(f"ro-{tag}")
    except mlflow.exceptions.MlflowException as e:
        return {"read": len(found), "error": str(e)}
    raise AssertionError("a read-only key created an experiment")


def expect_error(work: Path, tag: str, big_mib: int):
    """Any call: the error the client shows."""
    try:
        mlflow.search_experiments()
    except mlflow.exceptions.MlflowException as e:
        return {"error": str(e)}
    raise AssertionError("the call succeeded")


def ui_run(work: Path, tag: str, big_mib: int):
    """An experiment and a named run for the browser to find; the client
    prints the run's UI link when the run ends."""
    exp_id = mlflow.create_experiment(f"ui-{tag}")
    with mlflow.start_run(experiment_id=exp_id, run_name=f"ui-run-{tag}") as run:
        mlflow.log_param("alpha", 0.5)
    return {"experiment": f"ui-{tag}", "run": f"ui-run-{tag}", "run_id": run.info.run_id}


# --- who owns what: one user's work, another user's attempts on it ---------


def target() -> dict:
    """What another user's scenario made (E2E_TARGET, set by run_mlflow_client)."""
    return json.loads(os.environ.get("E2E_TARGET") or "{}")


def owned_work(work: Path, tag: str, big_mib: int):
    """An experiment, a run with a param, a registered model with a version
    and an alias: all the caller's own."""
    client = MlflowClient()
    exp_name = f"owned-{tag}"
    exp_id = mlflow.create_experiment(exp_name)
    with mlflow.start_run(experiment_id=exp_id) as run:
        mlflow.log_param("alpha", "0.5")
    model = f"owned-model-{tag}"
    client.create_registered_model(model)
    version = client.create_model_version(model, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    client.set_registered_model_alias(model, "champion", version.version)
    return {"experiment_id": exp_id, "experiment_name": exp_name, "run_id": run.info.run_id,
            "artifact_uri": run.info.artifact_uri, "model": model, "version": version.version}


def change_actions(t: dict, tag: str) -> dict:
    """Every kind of change to another user's work, in an order in which the
    owner's own run of them all succeeds (updates first, deletions last)."""
    c = MlflowClient()
    state = {"model": t["model"]}

    def rename_model():
        new_name = f"{t['model']}-renamed-{tag}"
        c.rename_registered_model(state["model"], new_name)
        state["model"] = new_name  # what the deletions after it name

    return {
        "log_param": lambda: c.log_param(t["run_id"], f"p-{tag}", "x"),
        "log_metric": lambda: c.log_metric(t["run_id"], f"m-{tag}", 1.0),
        "set_run_tag": lambda: c.set_tag(t["run_id"], f"t-{tag}", "x"),
        "set_experiment_tag": lambda: c.set_experiment_tag(t["experiment_id"], f"t-{tag}", "x"),
        "rename_experiment": lambda: c.rename_experiment(t["experiment_id"], f"{t['experiment_name']}-renamed-{tag}"),
        "update_model": lambda: c.update_registered_model(state["model"], description=f"changed by {tag}"),
        "update_version": lambda: c.update_model_version(state["model"], t["version"], description=f"by {tag}"),
        "set_alias": lambda: c.set_registered_model_alias(state["model"], f"a-{tag}", t["version"]),
        "create_version": lambda: c.create_model_version(state["model"], source=f"{t['artifact_uri']}/other",
                                                         run_id=t["run_id"]),
        "rename_model": rename_model,
        "delete_version": lambda: c.delete_model_version(state["model"], t["version"]),
        "delete_model": lambda: c.delete_registered_model(state["model"]),
        "delete_run": lambda: c.delete_run(t["run_id"]),
        "delete_experiment": lambda: c.delete_experiment(t["experiment_id"]),
    }


def try_changes(work: Path, tag: str, big_mib: int):
    """Each change of change_actions (or those E2E_TARGET's `actions` name)
    on the target: "ok", or the error the client shows."""
    t = target()
    out = {}
    for name, action in change_actions(t, tag).items():
        if t.get("actions") and name not in t["actions"]:
            continue
        try:
            action()
            out[name] = "ok"
        except mlflow.exceptions.MlflowException as e:
            out[name] = str(e)
    return out


def read_work(work: Path, tag: str, big_mib: int):
    """The target as the caller can read it: each read's value or the error
    the client shows, and whether searches list it."""
    t, c = target(), MlflowClient()
    reads = {
        "experiment": lambda: c.get_experiment(t["experiment_id"]).name,
        "run_params": lambda: c.get_run(t["run_id"]).data.params,
        "run_tags": lambda: sorted(k for k in c.get_run(t["run_id"]).data.tags if not k.startswith("mlflow.")),
        "model_description": lambda: c.get_registered_model(t["model"]).description or "",
        # A search: it lists only what the caller may read.
        "versions": lambda: sorted(v.version for v in c.search_model_versions(f"name = '{t['model']}'")),
        "aliases": lambda: sorted(c.get_registered_model(t["model"]).aliases),
        "champion": lambda: c.get_model_version_by_alias(t["model"], "champion").version,
    }
    out = {}
    for name, read in reads.items():
        try:
            out[name] = read()
        except mlflow.exceptions.MlflowException as e:
            out[name] = {"error": str(e)}
    out["experiment_listed"] = any(e.experiment_id == t["experiment_id"] for e in mlflow.search_experiments())
    out["model_listed"] = any(m.name == t["model"] for m in c.search_registered_models())
    return out


SCENARIOS = {"full": full, "read_only_write": read_only_write, "expect_error": expect_error, "ui_run": ui_run,
             "owned_work": owned_work, "try_changes": try_changes, "read_work": read_work}

if __name__ == "__main__":
    scenario, work = sys.argv[1], Path(sys.argv[2])
    big = int(os.environ.get("E2E_BIG_MIB", "0"))
    result = SCENARIOS[scenario](work, os.environ.get("E2E_TAG", "t"), big)
    print("RESULT " + json.dumps(result))
