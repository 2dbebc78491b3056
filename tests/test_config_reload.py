"""Plugin configuration changes on a live gateway, under load (issue 23,
item 3). Both builds in one pass: the test is parametrized over `wasm` and
`native` and builds each bootstrap itself (HOKUSAI_FILTER does not select
it, so scripts/test.sh's native pass need not list this file).

Envoy takes its listener from a watched file (LDS `path_config_source`),
as Istio and Envoy Gateway push a changed filter config: each change is a
new listener version on the same socket (Envoy's in-place filter-chain
update: new connections get the new filter config, connections on the old
one drain). Without `watched_directory` Envoy watches the file path itself
for moves, so each version is written to a temporary file and renamed over
it. The bootstrap is envoy-config/local.yaml's admin, clusters and gateway
listener, with only the plugin JSON changing.

While wrk sends one valid key's requests without pause (4 connections, about
2 s of load on each version), the plugin config changes: v2
`cache.ttl_seconds` 60 -> 2, v3 two route rules added in front, v4
`auth.timeout_ms` 1000 -> 150 (for the .wasm also the VM's own
configuration, so that Envoy starts new VMs), v5 a config the filter
refuses (`auth.service_id` empty), v6 `auth.authority` (another key
service namespace). Proven, per build:

- no request fails: every response wrk got is a 200, no socket error;
- each setting answers as configured right after its version is active;
  the refused one leaves v4 serving, named in the log and counted
  (`listener_manager.lds.update_rejected`, the listener's error_state);
- no callout storm: the loaded key is asked about once, and once more
  (once per worker at most; native: once) after the namespace change;
- kept across a change: the verdict cache while the key service stays the
  same (also through new VMs), the rate-limit counts (also across the
  namespace change: the scope is unchanged). Not kept: verdicts of another
  key service namespace; a verdict keeps the TTL it was stored with.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import requests
import yaml

from hokusai_testkit import harness

pytestmark = pytest.mark.usefixtures("normal_mode")

WORKERS = 2
MIN_LOAD_PER_VERSION_S = 2.0
DRAIN_CLOSE = "http.gateway.downstream_cx_drain_close"
READ = "/api/mlflow/api/2.0/mlflow/experiments/get?experiment_id=1"
OPEN = "/api/mlflow/open-area/ping"  # under the rule added with "enabled": false
BROWSER = "/api/mlflow/browser-area/x"  # under the rule added with a Basic challenge
LOAD_KEY_ID = "k_reload_load"
LISTENER_TYPE = "type.googleapis.com/envoy.config.listener.v3.Listener"

# Counts every status wrk received, across its threads, and prints them
# with wrk's own error counts as one JSON line.
WRK_LUA = r"""
counts = {}  -- a global: done() reads each thread's with thread:get
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function response(status, headers, body)
  local s = tostring(status)
  counts[s] = (counts[s] or 0) + 1
end

function done(summary, latency, requests)
  local all = {}
  for _, t in ipairs(threads) do
    for s, n in pairs(t:get("counts")) do all[s] = (all[s] or 0) + n end
  end
  local parts = {}
  for s, n in pairs(all) do table.insert(parts, string.format('"%s": %d', s, n)) end
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests": %d, "duration_us": %d, "statuses": {%s}, "status_errors": %d, ' ..
    '"connect_errors": %d, "read_errors": %d, "write_errors": %d, "timeouts": %d, "p99_us": %d, ' ..
    '"max_us": %d}\n',
    summary.requests, summary.duration, table.concat(parts, ", "), e.status, e.connect, e.read,
    e.write, e.timeout, latency:percentile(99), latency.max))
end
"""


# --- the bootstrap and the listener versions ---------------------------------------------------


def rendered_local(listen_port: int, echo_port: int, keys_port: int) -> dict:
    """envoy-config/local.yaml as the harness renders it for the .wasm."""
    options = harness.EnvoyOptions(upstream_port=echo_port, auth_port=keys_port, listen_port=listen_port,
                                   filter="wasm")
    return yaml.safe_load(harness.bootstrap(options, harness.NATIVE_MODULE))


def bootstrap(local: dict, listeners_file: Path) -> dict:
    """local.yaml's admin and clusters, its listener from the watched file."""
    return {
        "node": {"id": "reload-test", "cluster": "reload-test"},
        "admin": local["admin"],
        "static_resources": {"clusters": local["static_resources"]["clusters"]},
        "dynamic_resources": {
            "lds_config": {"resource_api_version": "V3", "path_config_source": {"path": str(listeners_file)}},
        },
    }


def listener(local: dict, build: str, plugin: dict, vm_configuration: str | None = None) -> dict:
    """local.yaml's gateway listener with this plugin JSON, for this build."""
    gateway = copy.deepcopy(local["static_resources"]["listeners"][0])
    assert gateway["name"] == "gateway"
    for f in gateway["filter_chains"][0]["filters"]:
        for hf in f["typed_config"]["http_filters"]:
            if hf["name"] == "hokusai_auth":
                wasm = hf["typed_config"]["config"]
                wasm["configuration"]["value"] = json.dumps(plugin)
                if vm_configuration is not None:
                    # Part of Envoy's VM key: a different value makes Envoy start a new VM
                    # (same vm_id, so the same shared data).
                    wasm["vm_config"]["configuration"] = {
                        "@type": "type.googleapis.com/google.protobuf.StringValue", "value": vm_configuration}
    if build == "native":
        harness.as_native({"static_resources": {"listeners": [gateway]}})
    return {"@type": LISTENER_TYPE, **gateway}


def write_listeners(path: Path, version: str, resource: dict):
    """Atomically: Envoy reloads the file when something is moved onto it."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"version_info": version, "resources": [resource]}))
    os.replace(tmp, path)


# --- Envoy with its listener from LDS (the harness's Envoy wants a static listener) -----------


class LdsEnvoy:
    """A real Envoy with this bootstrap; stopped by stop(), also when it fails to start."""

    def __init__(self, workdir: Path, name: str, boot: dict, env: dict, extra_args: tuple[str, ...] = ()):
        config = workdir / f"{name}.yaml"
        config.write_text(yaml.safe_dump(boot, sort_keys=False))
        self.admin_path = workdir / f"{name}.admin"
        self.admin_path.unlink(missing_ok=True)
        binary = harness.envoy_binary()
        if not binary.exists():
            raise RuntimeError(f"no Envoy binary at {binary}: run scripts/setup.sh")
        self.proc = harness.Proc(name, [
            str(binary), "-c", str(config), "--concurrency", str(WORKERS), "--use-dynamic-base-id",
            "--admin-address-path", str(self.admin_path), "-l", "info",
            "--log-format", "[%Y-%m-%d %T.%e][%l][%n] %v", *extra_args,
        ], workdir, env=env)
        try:
            self.admin = "http://" + harness.wait_until("Envoy admin address", self._admin_address, timeout=60)
            harness.wait_until("Envoy ready", lambda: self.get("/ready").strip() == "LIVE", timeout=60)
        except Exception:
            tail = self.log_text()[-4000:]
            self.stop()
            raise RuntimeError(f"Envoy failed to start:\n{tail}")

    def _admin_address(self):
        if not self.proc.alive():
            raise harness.Fatal(f"envoy exited:\n{self.log_text()[-4000:]}")
        return self.admin_path.read_text().strip() or None if self.admin_path.exists() else None

    def get(self, path: str) -> str:
        if not self.proc.alive():
            raise harness.Fatal(f"envoy exited:\n{self.log_text()[-4000:]}")
        with urllib.request.urlopen(self.admin + path, timeout=5) as r:
            return r.read().decode()

    def counters(self, *names: str) -> dict[str, int]:
        out = {}
        for line in self.get("/stats").splitlines():
            name, _, value = line.partition(": ")
            if name in names and value.strip().isdigit():
                out[name] = int(value)
        return {n: out.get(n, 0) for n in names}

    def counters_settled(self, *names: str) -> dict[str, int]:
        """The .wasm hands its counts to Envoy every 200 ms per worker: two reads 300 ms apart agree."""
        last = self.counters(*names)
        for _ in range(10):
            time.sleep(0.3)
            now = self.counters(*names)
            if now == last:
                return now
            last = now
        return last

    def gateway_state(self) -> dict:
        dump = json.loads(self.get("/config_dump?resource=dynamic_listeners"))
        states = [c for c in dump.get("configs", []) if c.get("name") == "gateway"]
        return states[0] if states else {}

    def version_text(self) -> str:
        """The LDS version Envoy last accepted."""
        for line in self.get("/stats?filter=^listener_manager.lds.version_text$").splitlines():
            name, _, value = line.partition(": ")
            if name == "listener_manager.lds.version_text":
                return value.strip().strip('"')
        return ""

    def active_plugin(self) -> dict | None:
        """The plugin JSON of the gateway listener Envoy serves (None while a version warms).
        Envoy 1.40 keeps active_state.version_info at the version that added the listener
        across in-place filter-chain updates, so the config itself is compared."""
        state = self.gateway_state()
        if "warming_state" in state or "active_state" not in state:
            return None
        for f in state["active_state"]["listener"]["filter_chains"][0]["filters"]:
            for hf in f["typed_config"].get("http_filters", []):
                if hf["name"] == "hokusai_auth":
                    tc = hf["typed_config"]
                    value = tc["config"]["configuration"]["value"] if "config" in tc else tc["filter_config"]["value"]
                    return json.loads(value)
        return None

    def log_text(self) -> str:
        return self.proc.log_path.read_text(errors="replace")

    def stop(self):
        self.proc.stop()


# --- wrk ----------------------------------------------------------------------------------------


def start_wrk(workdir: Path, url: str, key: str) -> subprocess.Popen:
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is missing: run `scripts/setup.sh` (or `apt-get install wrk`)")
    script = workdir / "reload-wrk.lua"
    script.write_text(WRK_LUA)
    # Runs until SIGINT (wrk then prints its summary and runs done()); -d only bounds a stray run.
    return subprocess.Popen(
        ["wrk", "-t", "1", "-c", "4", "-d", "60s", "--timeout", "5s", "-s", str(script),
         "-H", f"Authorization: Bearer {key}", url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def stop_wrk(p: subprocess.Popen) -> dict:
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGINT)
    try:
        out, err = p.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate(timeout=10)
    for line in out.splitlines():
        if line.startswith("WRK_RESULT "):
            return json.loads(line.split(" ", 1)[1])
    raise AssertionError(f"wrk gave no result (rc {p.returncode}):\n{out[-2000:]}\n{err[-2000:]}")


# --- the test -----------------------------------------------------------------------------------


def whoami(url: str, key: str) -> dict:
    r = requests.get(url + "/api/mlflow/_hokusai/whoami", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert r.status_code == 200, (r.status_code, r.text)
    return r.json()


def remaining(url: str, key: str) -> int:
    r = requests.get(url + READ, headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert r.status_code == 200, (r.status_code, r.text)
    return int(r.headers["x-ratelimit-remaining"])


def in_effect(what: str, check, timeout: float = 2.0) -> float:
    """Seconds until `check` holds on new connections (bounded): the new
    version is already active when this is called."""
    start = time.monotonic()
    harness.wait_until(what, check, timeout=timeout, interval=0.02)
    return time.monotonic() - start


class Versions:
    """Writes listener versions and waits for Envoy to take (or refuse) each."""

    def __init__(self, envoy: LdsEnvoy | None, path: Path, local: dict, build: str):
        self.envoy, self.path, self.local, self.build = envoy, path, local, build
        self.n = 0
        self.taken: dict[str, float] = {}  # version: seconds from the rename to active
        self.vms: dict[str, tuple[int, int]] = {}  # version: the .wasm's VMs (created, active) once active
        self.drain_closes: dict[str, int] = {}  # version: connections closed by draining, when it came
        self.last_push = 0.0

    def write(self, plugin: dict, vm_configuration: str | None = None) -> str:
        self.n += 1
        version = f"v{self.n}"
        write_listeners(self.path, version, listener(self.local, self.build, plugin, vm_configuration))
        return version

    def active(self, version: str, plugin: dict) -> bool:
        return self.envoy.version_text() == version and self.envoy.active_plugin() == plugin

    def push(self, plugin: dict, vm_configuration: str | None = None) -> str:
        # Each version serves the load for a while before the next one comes.
        time.sleep(max(0.0, self.last_push + MIN_LOAD_PER_VERSION_S - time.monotonic()))
        start = time.monotonic()
        version = self.write(plugin, vm_configuration)
        try:
            harness.wait_until(f"listener version {version} active", lambda: self.active(version, plugin),
                               timeout=10, interval=0.02)
        except TimeoutError as e:
            state = json.dumps(self.envoy.gateway_state())[:3000]
            raise AssertionError(f"{e}\nconfig_dump: {state}\nlog: {self.envoy.log_text()[-3000:]}") from None
        self.taken[version] = round(time.monotonic() - start, 3)
        self.last_push = time.monotonic()
        self.vms[version] = self.vm_counts()
        self.drain_closes[version] = self.envoy.counters(DRAIN_CLOSE)[DRAIN_CLOSE]
        return version

    def vm_counts(self) -> tuple[int, int]:
        c = self.envoy.counters("wasm.envoy.wasm.runtime.v8.created", "wasm.envoy.wasm.runtime.v8.active")
        return c["wasm.envoy.wasm.runtime.v8.created"], c["wasm.envoy.wasm.runtime.v8.active"]


def callouts_for(keysvc, key_id: str) -> int:
    return keysvc.stats()["by_key_id"].get(key_id, 0)


@pytest.mark.parametrize("build", ["wasm", "native"])
def test_config_changes_under_load_fail_nothing_take_effect_and_keep_the_cache(build, workdir, echo, keysvc, keys):
    module = harness.checked_module(harness.EnvoyOptions(upstream_port=0, auth_port=0, filter=build))
    assert module == harness.NATIVE_MODULE
    run = workdir / f"reload-{build}"
    run.mkdir()
    listeners_file = run / "listeners.json"
    local = rendered_local(harness.free_port(), echo.port, keysvc.port)
    port = local["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"]
    url = f"http://127.0.0.1:{port}"

    # v1: the local stack's config, without the audit line (thousands a second here).
    base = harness.plugin_config(audit_log=False)
    versions = Versions(None, listeners_file, local, build)
    versions.write(base, vm_configuration="vm-1")
    env = {"ENVOY_DYNAMIC_MODULES_SEARCH_PATH": str(harness.NATIVE.parent)}
    envoy = LdsEnvoy(run, f"envoy-reload-{build}", bootstrap(local, listeners_file), env)
    versions.envoy = envoy
    wrk = None
    try:
        assert harness.wait_until("v1 active", lambda: versions.active("v1", base), timeout=10)
        versions.vms["v1"] = versions.vm_counts()
        load_id = f"{LOAD_KEY_ID}_{build}"
        load_key = keys.new(key_id=load_id)
        rl_key = keys.new(rate_limit_per_hour=1000)

        # Before any change: the load key cached (its one callout), the rate-limit probe at 3,
        # the paths of the rules to come answered by the top-level rules, a 500 ms key
        # service within the 1000 ms timeout.
        assert requests.get(url + READ, headers={"Authorization": f"Bearer {load_key}"}, timeout=10).status_code == 200
        assert callouts_for(keysvc, load_id) == 1
        assert [remaining(url, rl_key) for _ in range(3)] == [999, 998, 997]
        r = requests.get(url + OPEN, timeout=10)
        assert r.status_code == 401 and r.headers["www-authenticate"] == 'Basic realm="Hokusai MLflow"'
        keysvc.mode("normal", delay_ms=500)
        r = requests.get(url + READ, headers={"Authorization": f"Bearer {keys.new()}"}, timeout=10)
        assert r.status_code == 200, "a 500 ms key service is within v1's 1000 ms timeout"
        keysvc.mode("normal")
        stat_names = ("listener_manager.lds.update_success", "listener_manager.lds.update_rejected",
                      "wasmcustom.hokusai_auth.callout.total", "wasm.envoy.wasm.runtime.v8.created",
                      "http.gateway.downstream_cx_total", DRAIN_CLOSE,
                      "listener_manager.listener_in_place_updated")
        at_start = envoy.counters_settled(*stat_names)
        calls_at_start = keysvc.calls()

        wrk = start_wrk(run, url + READ, load_key)
        time.sleep(1.5)
        probe_callouts = 0

        # v2: cache.ttl_seconds 60 -> 2. A verdict stored now expires after 2 s (a 60 s one
        # would not); the load key's verdict, stored under v1, is still a hit.
        cfg = harness.plugin_config(audit_log=False, cache={"ttl_seconds": 2})
        versions.push(cfg, vm_configuration="vm-1")
        ttl_key = keys.new()
        assert requests.get(url + READ, headers={"Authorization": f"Bearer {ttl_key}"}, timeout=10).status_code == 200
        assert callouts_for(keysvc, "k_" + ttl_key[-6:]) == 1
        time.sleep(2.3)
        assert requests.get(url + READ, headers={"Authorization": f"Bearer {ttl_key}"}, timeout=10).status_code == 200
        assert callouts_for(keysvc, "k_" + ttl_key[-6:]) == 2, "the 2 s TTL of v2 is in effect"
        probe_callouts += 2
        assert callouts_for(keysvc, load_id) == 1, "the verdict cache survived v1 -> v2"

        # v3: TTL back to 60, two rules added in front: one that asks no key, one with its own
        # Basic realm. Both answer as configured on the next connection.
        rules = [{"name": "open", "match": {"path_prefix": "/api/mlflow/open-area"}, "enabled": False},
                 {"name": "browser", "match": {"path_prefix": "/api/mlflow/browser-area"},
                  "challenge": {"scheme": "basic", "realm": "Reload v3"}}]
        cfg = harness.plugin_config(audit_log=False, routes=rules + base["routes"])
        versions.push(cfg, vm_configuration="vm-1")
        effect_s = in_effect("the open rule", lambda: requests.get(url + OPEN, timeout=5).status_code == 200)
        assert "/open-area/ping" in [r["path"] for r in echo.requests()], "forwarded without a key"
        r = requests.get(url + BROWSER, timeout=5)
        assert r.status_code == 401 and r.headers["www-authenticate"] == 'Basic realm="Reload v3"'
        assert remaining(url, rl_key) == 996, "the rate-limit count survived v1 -> v3"
        assert callouts_for(keysvc, load_id) == 1, "the verdict cache survived v2 -> v3"

        # v4: auth.timeout_ms 1000 -> 150 (for the .wasm with a new VM: its vm_config changed).
        # A 500 ms key service is now past the timeout: 503, in well under 500 ms.
        cfg = harness.plugin_config(audit_log=False, routes=rules + base["routes"], auth={"timeout_ms": 150})
        versions.push(cfg, vm_configuration="vm-2")
        keysvc.mode("normal", delay_ms=500)
        t0 = time.monotonic()
        r = requests.get(url + READ, headers={"Authorization": f"Bearer {keys.new()}"}, timeout=10)
        slow_reply_s = time.monotonic() - t0
        keysvc.mode("normal")
        probe_callouts += 1
        assert r.status_code == 503 and r.headers["x-hokusai-auth-reply"] == "unavailable", (r.status_code, r.text)
        assert slow_reply_s < 0.45, f"the 150 ms timeout of v4 is in effect ({slow_reply_s:.3f} s)"
        me = whoami(url, load_key)
        assert me["cached"] is True, f"the verdict cache survived v3 -> v4: {me}"
        assert callouts_for(keysvc, load_id) == 1, "the verdict cache survived v3 -> v4"
        assert remaining(url, rl_key) == 995, "the rate-limit count survived v3 -> v4"

        # v5, refused: auth.service_id empty. Envoy keeps v4 serving, says so, counts it.
        rejected_before = envoy.counters("listener_manager.lds.update_rejected")["listener_manager.lds.update_rejected"]
        bad = copy.deepcopy(cfg)
        bad["auth"]["service_id"] = ""
        bad["routes"] = base["routes"]  # would drop the rules, were it taken
        refused = versions.write(bad, vm_configuration="vm-2")
        harness.wait_until(f"{refused} rejected", lambda: envoy.counters("listener_manager.lds.update_rejected")[
            "listener_manager.lds.update_rejected"] == rejected_before + 1, timeout=10, interval=0.05)
        assert versions.active("v4", cfg), "v4 still serves"
        error_state = envoy.gateway_state().get("error_state", {})
        assert error_state.get("failed_configuration", {}).get("name") == "gateway", error_state
        log = envoy.log_text()
        assert "configuration rejected: auth.service_id: must not be empty" in log
        assert "lds: listener 'gateway' config rejected" in log
        versions.vms[refused + " (refused)"] = versions.vm_counts()
        assert requests.get(url + OPEN, timeout=5).status_code == 200, "v4's rules still serve"
        assert callouts_for(keysvc, load_id) == 1

        # v6: auth.authority changed: another key service namespace, so the cached verdict is
        # not used; the load key is asked again once per worker at most (native: once), and
        # its rate-limit count (scope service_id@cluster) goes on.
        cfg = harness.plugin_config(audit_log=False, routes=rules + base["routes"],
                                    auth={"timeout_ms": 150, "authority": "keys.hokusai.local"})
        versions.push(cfg, vm_configuration="vm-2")
        assert remaining(url, rl_key) == 994, "the rate-limit count survived v4 -> v6"
        probe_callouts += 1  # the rate-limit probe, asked again in the new namespace
        harness.wait_until("the load key asked in v6's namespace", lambda: callouts_for(keysvc, load_id) >= 2,
                           timeout=5)
        time.sleep(1.5)  # load on v6
        assert wrk.poll() is None, "wrk ran through every change"
        running, wrk = wrk, None
        result = stop_wrk(running)

        at_end = envoy.counters_settled(*stat_names)
        load_callouts = callouts_for(keysvc, load_id)
        calls = keysvc.calls() - calls_at_start
        report = {
            "build": build, "wrk": result, "versions_taken_s": versions.taken, "rule_in_effect_s": round(effect_s, 3),
            "vms_created_active": versions.vms, "drain_closes_at_push": versions.drain_closes,
            "load_key_callouts": load_callouts, "key_service_calls_during_load": calls,
            "stats_delta": {k: at_end[k] - at_start[k] for k in stat_names}, "slow_reply_s": round(slow_reply_s, 3),
            "draining_chains": envoy.get("/stats?filter=total_filter_chains_draining").strip(),
            "rejection_log": [ln for ln in envoy.log_text().splitlines() if "reject" in ln.lower()][:6],
        }
        print("RELOAD_REPORT " + json.dumps(report))

        # Zero failed requests: every response a 200, no socket error, load all along.
        assert result["requests"] > 1000, report
        assert result["statuses"] == {"200": result["requests"]}, report
        assert (result["connect_errors"], result["read_errors"], result["write_errors"], result["timeouts"],
                result["status_errors"]) == (0, 0, 0, 0, 0), report
        # No callout storm. The load key: its first callout, then one per worker at most for the
        # one namespace change (v6); the verdict cache made every other request a hit. All
        # callouts during the load: that plus the probes' own; a storm would be one per request.
        assert load_callouts <= 1 + WORKERS, report
        if build == "native":
            assert load_callouts == 2, f"one process-wide single-flight: {report}"
        assert calls == (load_callouts - 1) + probe_callouts, report
        assert at_end["wasmcustom.hokusai_auth.callout.total"] - at_start["wasmcustom.hokusai_auth.callout.total"] \
            == calls, report
        # Four changes taken (v2, v3, v4, v6), one refused (v5).
        assert at_end["listener_manager.lds.update_rejected"] - at_start["listener_manager.lds.update_rejected"] == 1
        assert at_end["listener_manager.lds.update_success"] - at_start["listener_manager.lds.update_success"] == 4
        # The load ran on the new versions: Envoy closed wrk's connections on the old filter
        # chains as they drained (wrk reconnected without an error), and v6's namespace change
        # was asked about by wrk's requests (above).
        assert at_end[DRAIN_CLOSE] - at_start[DRAIN_CLOSE] >= 4, report
        if build == "wasm":
            # Envoy reused the VMs for a plugin-config change, and started new ones (same vm_id,
            # same shared data) when the VM's own configuration changed (v4).
            vms = versions.vms
            assert vms["v1"][1] == vms["v2"][1] == vms["v3"][1], report
            assert vms["v4"][1] > vms["v3"][1], report
        assert envoy.proc.alive()
        assert "panic" not in envoy.log_text().lower()
    finally:
        if wrk is not None and wrk.poll() is None:
            os.killpg(wrk.pid, signal.SIGKILL)
            wrk.wait(timeout=10)
        envoy.stop()
