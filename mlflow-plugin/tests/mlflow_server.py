"""A real `mlflow server` with the auth app and this plugin, on loopback.

Every wait is bounded; `stop()` ends the server's whole process group.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

PLUGIN_DIR = Path(__file__).resolve().parent.parent
START_TIMEOUT = 120.0
STOP_TIMEOUT = 15.0
SECRET_KEY = "test-only-flask-secret-0123456789"
ADMIN_PASSWORD = "bootstrap-admin-password-never-used"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_auth_ini(workdir: Path, default_permission: str) -> Path:
    ini = workdir / "auth.ini"
    ini.write_text(
        "[mlflow]\n"
        f"default_permission = {default_permission}\n"
        f"database_uri = sqlite:///{workdir / 'auth.db'}\n"
        "admin_username = admin\n"
        f"admin_password = {ADMIN_PASSWORD}\n"
        "authorization_function = hokusai_mlflow_plugin:authenticate\n"
    )
    return ini


def server_env(workdir: Path, jwks: Path, default_permission: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HOKUSAI_"))}
    env.update(
        MLFLOW_AUTH_CONFIG_PATH=str(write_auth_ini(workdir, default_permission)),
        MLFLOW_FLASK_SERVER_SECRET_KEY=SECRET_KEY,
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
        HOKUSAI_IDENTITY_JWKS=str(jwks),
        # The plugin's source, ahead of any installed copy.
        PYTHONPATH=os.pathsep.join(filter(None, [str(PLUGIN_DIR), env.get("PYTHONPATH")])),
    )
    return env


def server_command(workdir: Path, port: int, app_name: str) -> list[str]:
    return [
        sys.executable, "-m", "mlflow", "server", "--app-name", app_name,
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{workdir / 'mlflow.db'}",
        "--artifacts-destination", str(workdir / "artifacts"), "--serve-artifacts",
    ]


class MlflowAuthServer:
    def __init__(self, workdir: Path, jwks: Path, default_permission: str = "READ",
                 app_name: str = "basic-auth", env_overrides: dict[str, str | None] | None = None):
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "server.log"
        env = server_env(workdir, jwks, default_permission)
        for name, value in (env_overrides or {}).items():
            env.pop(name, None) if value is None else env.__setitem__(name, value)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(server_command(workdir, self.port, app_name), env=env, cwd=workdir,
                                     stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_healthy(self) -> "MlflowAuthServer":
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited ({self.proc.returncode}):\n{self.log()[-4000:]}")
            try:
                if requests.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"mlflow server not healthy within {START_TIMEOUT} s:\n{self.log()[-4000:]}")

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"mlflow server still running after {timeout} s:\n{self.log()[-4000:]}") from None

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=STOP_TIMEOUT)
        self._kill_leftover_group()
        self._log.close()

    def _kill_leftover_group(self) -> None:
        # uvicorn's workers share the server's process group; none may outlive it.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
