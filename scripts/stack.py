"""Runs the whole local stack on 127.0.0.1: the key-service stand-in with dev
keys, a real MLflow server (sqlite, artifacts served by the server) and Envoy
with the filter in front of it. Ctrl-C stops everything.

    scripts/stack.sh [--port 8080] [--data .stack]
"""

import argparse
import json
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import harness  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=8080, help="gateway port on 127.0.0.1 (default 8080)")
    ap.add_argument("--data", type=Path, default=harness.ROOT / ".stack",
                    help="where MLflow's database, artifacts, logs and the dev keys live (kept between runs)")
    args = ap.parse_args()
    data = args.data.resolve()
    data.mkdir(parents=True, exist_ok=True)
    keys_file = data / "dev-keys.json"
    if not keys_file.exists():
        keys_file.write_text(json.dumps(harness.DEV_KEYS, indent=2) + "\n")
    keys = json.loads(keys_file.read_text())

    parts = []

    def stop(*_):
        for p in reversed(parts):
            p.stop()
        print("\nstopped; data kept in", data)
        sys.exit(0)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        print("starting the key-service stand-in, MLflow and Envoy ...", flush=True)
        keysvc = harness.StandIn("keys", data, keys=keys, name="keyservice")
        parts.append(keysvc)
        mlflow = harness.MlflowServer(data)
        parts.append(mlflow)
        gw = harness.Envoy(data, upstream_port=mlflow.port, auth_port=keysvc.port, listen_port=args.port,
                           concurrency=2, name="envoy")
        parts.append(gw)
    except Exception as e:  # noqa: BLE001 - report and clean up whatever started
        print(f"failed to start: {e}", file=sys.stderr)
        for p in reversed(parts):
            p.stop()
        sys.exit(1)

    rw, ro, admin = (k["key"] for k in keys["keys"][:3])
    staging = next((k["key"] for k in keys["keys"] if k.get("service_id") == "ml-platform"),
                   "(no ml-platform key in dev-keys.json)")
    print(f"""
The Hokusai MLflow gateway is up: {gw.url}/api/mlflow  (Envoy admin: {gw.admin})
Data, logs and the dev keys: {data}

Use it from another shell with the standard MLflow client:

    export MLFLOW_TRACKING_URI={gw.url}/api/mlflow
    export MLFLOW_TRACKING_TOKEN={rw}

The MLflow UI in a browser: {gw.url}/api/mlflow/ (or {gw.url}/mlflow/).
It asks for a user name and password: any user name, a dev key as the password.

A second registry host, whose keys belong to service_id ml-platform:

    export MLFLOW_TRACKING_URI=http://staging.localhost:{gw.port}/api/mlflow
    export MLFLOW_TRACKING_TOKEN={staging}

(Browsers and curl resolve *.localhost to this machine; for Python add
`127.0.0.1 staging.localhost` to /etc/hosts, or use curl -H 'Host: staging.localhost'.)

Dev keys (stand-in only): read-write {rw}
                          read-only  {ro}
                          admin      {admin}
                          staging    {staging}
Routes: envoy-config/plugin-config.json (the API, UI and staging rules).
Ctrl-C stops everything.""", flush=True)
    while all(p.proc.alive() for p in parts):
        time.sleep(0.5)
    dead = [p.proc.name for p in parts if not p.proc.alive()]
    print(f"{', '.join(dead)} exited; see the logs in {data}", file=sys.stderr)
    for p in reversed(parts):
        p.stop()
    sys.exit(1)


if __name__ == "__main__":
    main()
