"""`--write`: the MLflow workflow a user runs, with the unmodified client:
an experiment (owned by the key's user, MLflow's permissions API says), a run
with params and metrics, an artifact up and down (checksum compared), a
registered model version and an alias. Everything is
named `hokusai-verify-<tag>` and deleted again, also when a step fails."""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlencode

from .diagnose import Diagnosis, assertion_refused, diagnose, no_auth_app
from .network import Failed
from .probe import Target, fetch
from .steps import Skipped, first_line

ARTIFACT_DIR = "hokusai-verify"
ALIAS = "verified"
API_PERMISSION = "/api/3.0/mlflow/users/permissions/get"  # MLflow's auth app: a user's permission on a resource


def from_error(e: BaseException) -> Diagnosis:
    """The MLflow client's error, which carries the filter's error code (or
    the Hokusai plugin's, from MLflow's auth app)."""
    text = first_line(e)
    if "your MLflow user lacks the permission" in text:  # the Hokusai plugin's 403 from MLflow's auth app
        return Diagnosis("MLflow permissions", f"MLflow's auth app refused it: {text}")
    if "UNAUTHENTICATED: " in text and ("identity assertion" in text or "-identity header" in text):
        return assertion_refused(text.split("UNAUTHENTICATED: ", 1)[1])  # the plugin's 401, not the filter's
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
    def __init__(self, client, artifact_mib: int, t: Target, user_id: str | None):
        self.client, self.mib = client, artifact_mib
        self.t, self.user_id = t, user_id
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

    def ownership(self) -> str:
        """MLflow's auth app makes the creator the owner: MANAGE for the key's user."""
        if self.user_id is None:
            raise Skipped("the key's user_id is unknown")
        query = urlencode({"username": self.user_id, "resource_type": "experiment",
                           "resource_id": self.experiment_id})
        ev = fetch(self.t, f"{self.t.mount}{API_PERMISSION}?{query}")
        what = f"experiment {self.name} ({self.experiment_id})"
        if ev.status == 200 and not ev.marker:
            permission = ev.json().get("permission")
            if permission == "MANAGE":
                return f"{self.user_id} has MANAGE on {what}: its creator owns it"
            raise Failed(f"{self.user_id} has {permission} on {what}, not MANAGE", Diagnosis(
                "MLflow permissions", f"MLflow's auth app did not record the key's user as the owner of the "
                                      f"experiment it just created (it says {permission}); likely MLflow "
                                      "replicas that do not share one auth database (the auth ini's "
                                      "database_uri), or a replica without the auth app"))
        detail = f"{self.t.mount}{API_PERMISSION}: {ev.status or ev.error}"
        if ev.status == 404 and not ev.marker and ev.from_upstream:
            raise Failed(detail, no_auth_app(f"{self.t.mount}{API_PERMISSION}"))
        raise Failed(detail, diagnose(ev, self.t))

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
