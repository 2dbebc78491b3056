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
        info = mlflow.pyfunc.log_model(name="model", python_model=AddOne(), pip_requirements=["mlflow"])
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
    v2 = client.create_model_version(name, source=info.model_uri, run_id=run_id, model_id=info.model_id)
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


SCENARIOS = {"full": full, "read_only_write": read_only_write, "expect_error": expect_error, "ui_run": ui_run}

if __name__ == "__main__":
    scenario, work = sys.argv[1], Path(sys.argv[2])
    big = int(os.environ.get("E2E_BIG_MIB", "0"))
    result = SCENARIOS[scenario](work, os.environ.get("E2E_TAG", "t"), big)
    print("RESULT " + json.dumps(result))
