"""`--write`: the MLflow workflow a user runs, with the unmodified client:
an experiment, a run with params and metrics, an artifact up and down
(checksum compared), a registered model version and an alias. Everything is
named `hokusai-verify-<tag>` and deleted again, also when a step fails."""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
import uuid
from pathlib import Path

from .diagnose import Diagnosis
from .network import Failed
from .steps import first_line

ARTIFACT_DIR = "hokusai-verify"
ALIAS = "verified"


def from_error(e: BaseException) -> Diagnosis:
    """The MLflow client's error, which carries the filter's error code."""
    text = first_line(e)
    for code, layer in (("PERMISSION_DENIED", "scopes"), ("UNAUTHENTICATED", "key"),
                        ("RESOURCE_EXHAUSTED", "rate limit"), ("TEMPORARILY_UNAVAILABLE", "key service")):
        if code in text:
            return Diagnosis(layer, text)
    return Diagnosis("MLflow", f"the MLflow call failed: {text}")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Workflow:
    def __init__(self, client, artifact_mib: int):
        self.client, self.mib = client, artifact_mib
        self.name = f"hokusai-verify-{uuid.uuid4().hex[:10]}"
        self.experiment_id: str | None = None
        self.run = None
        self.model_made = False
        self.version: str | None = None
        self.work = Path(tempfile.mkdtemp(prefix="hokusai-verify-"))

    def call(self, what: str, fn, *args, **kw):
        try:
            return fn(*args, **kw)
        except Exception as e:  # noqa: BLE001 - each failure is reported with its diagnosis
            raise Failed(f"{what}: {first_line(e)}", from_error(e)) from e

    def create_experiment(self) -> str:
        self.experiment_id = self.call("create_experiment", self.client.create_experiment, self.name)
        return f"experiment {self.name} ({self.experiment_id})"

    def log_run(self) -> str:
        self.run = self.call("create_run", self.client.create_run, self.experiment_id, run_name=self.name)
        run_id = self.run.info.run_id
        self.call("log_param", self.client.log_param, run_id, "checked_by", "hokusai-verify")
        for step, value in enumerate((0.5, 0.25)):
            self.call("log_metric", self.client.log_metric, run_id, "loss", value, step=step)
        got = self.call("get_run", self.client.get_run, run_id)
        if got.data.params.get("checked_by") != "hokusai-verify" or got.data.metrics.get("loss") != 0.25:
            raise Failed("the run read back differs", Diagnosis("MLflow", "MLflow stored the run differently "
                                                                          "from what was logged"))
        return f"run {run_id}: a param and two metric steps, read back"

    def artifact(self) -> str:
        up = self.work / f"{self.name}.bin"
        with open(up, "wb") as f:
            for _ in range(self.mib):
                f.write(os.urandom(1 << 20))
        start = time.monotonic()
        self.call("log_artifact", self.client.log_artifact, self.run.info.run_id, str(up), ARTIFACT_DIR)
        down = self.call("download_artifacts", self.client.download_artifacts, self.run.info.run_id,
                         f"{ARTIFACT_DIR}/{up.name}", str(self.work / "down"))
        seconds = time.monotonic() - start
        if sha256(Path(down)) != sha256(up):
            raise Failed("checksums differ", Diagnosis("artifacts", "the artifact came back different: a proxy "
                                                                    "in the path alters or truncates bodies"))
        return f"{self.mib} MiB up and down in {seconds:.1f} s, sha256 equal"

    def register_model(self) -> str:
        self.call("create_registered_model", self.client.create_registered_model, self.name)
        self.model_made = True
        source = f"{self.run.info.artifact_uri}/{ARTIFACT_DIR}"
        mv = self.call("create_model_version", self.client.create_model_version, self.name, source,
                       run_id=self.run.info.run_id)
        self.version = mv.version
        return f"model {self.name} version {mv.version}"

    def set_alias(self) -> str:
        self.call("set_registered_model_alias", self.client.set_registered_model_alias, self.name, ALIAS,
                  self.version)
        mv = self.call("get_model_version_by_alias", self.client.get_model_version_by_alias, self.name, ALIAS)
        return f"alias @{ALIAS} -> version {mv.version}"

    def cleanup(self) -> str:
        """Deletes whatever was made; each deletion tried even if one fails."""
        done, failed = [], []
        for what, fn in self.deletions():
            try:
                fn()
                done.append(what)
            except Exception as e:  # noqa: BLE001 - report, go on with the rest
                failed.append(f"{what}: {first_line(e)}")
        if failed:
            raise Failed("; ".join(failed), Diagnosis("cleanup", "some of what verify made is still in MLflow: "
                                                                 f"delete everything named {self.name}"))
        return f"deleted {', '.join(done) or 'nothing (nothing was made)'}"

    def deletions(self):
        if self.model_made:
            yield "model", self.delete_model
        if self.run is not None:
            yield "artifacts", self.delete_artifacts
            yield "run", lambda: self.client.delete_run(self.run.info.run_id)
        if self.experiment_id is not None:
            yield "experiment", lambda: self.client.delete_experiment(self.experiment_id)

    def delete_model(self):
        self.client.delete_registered_model(self.name)

    def delete_artifacts(self):
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        get_artifact_repository(self.run.info.artifact_uri).delete_artifacts(ARTIFACT_DIR)
