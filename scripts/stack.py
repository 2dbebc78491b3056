"""Runs the whole local stack on 127.0.0.1: the key-service stand-in with dev
keys, a real MLflow server (sqlite, artifacts served by the server; its auth
app with the Hokusai plugin, so users own what they make) and Envoy with the
filter in front of it, signing who calls. Ctrl-C stops everything.

    scripts/stack.sh [--port 8080] [--data .stack] [--replicas 2 --global-rate-limit] [--no-ownership]

The --break-* switches each break one layer the way real deployments do
(the verifier's tests use them; try scripts/verify.sh against each).
"""

import argparse
import json
import signal
import sys
import time
from pathlib import Path

from hokusai_testkit import harness
from hokusai_testkit.local_stack import LocalStack, Switches


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=8080, help="gateway port on 127.0.0.1 (default 8080)")
    ap.add_argument("--data", type=Path, default=harness.ROOT / ".stack",
                    help="where MLflow's database, artifacts, logs and the dev keys live (kept between runs)")
    ap.add_argument("--service-id", help="the service_id the gateway asks the key service for "
                    "(another one than the keys': every key gets 401)")
    ap.add_argument("--mount-prefixes", help="comma-separated mounts the filter strips (e.g. /other)")
    ap.add_argument("--ajax-api", action="store_true", help="the filter maps api/2.0 to ajax-api/2.0")
    ap.add_argument("--mlflow-allowed-hosts", help="MLflow's --allowed-hosts (e.g. mlflow.internal: MLflow "
                    "refuses the Host the gateway sends)")
    ap.add_argument("--break-rest-api", action="store_true", help="the upstream serves /ajax-api/ but not "
                    "/api/2.0/ (what --ajax-api fixes)")
    ap.add_argument("--break-no-filter", action="store_true", help="the route has no Hokusai filter")
    ap.add_argument("--break-no-route", action="store_true", help="the gateway routes nothing to MLflow")
    ap.add_argument("--break-key-service", action="store_true", help="the key service is unreachable")
    ap.add_argument("--break-front-proxy", action="store_true", help="a front proxy (a second Envoy, as a load "
                    "balancer or CDN) on --port drops the Authorization header before the gateway")
    ap.add_argument("--credential-sources", help="comma-separated places the filter reads the key from "
                    "(credentials.sources; e.g. x_api_key: the MLflow client's Bearer key is not read)")
    ap.add_argument("--identity-audience", help="the audience the filter signs for (MLflow expects mlflow: "
                    "another one, and MLflow refuses every request)")
    ap.add_argument("--tls-names", help="serve HTTPS with a self-signed certificate for these comma-separated "
                    "names (e.g. 127.0.0.1, or wrong.example for a name mismatch)")
    ap.add_argument("--replicas", type=int, default=1, help="Envoy replicas on consecutive ports from --port "
                    "(default 1), sharing the key service and MLflow")
    ap.add_argument("--global-rate-limit", action="store_true", help="start Redis and the rate limit service and "
                    "count every key's hourly limit across the replicas (rate_limit.mode global)")
    ap.add_argument("--no-ownership", action="store_true", help="MLflow without its auth app and the filter "
                    "without the signed identity: every key's user may change anything")
    args = ap.parse_args()
    if not 1 <= args.replicas <= 8:
        ap.error("--replicas: 1 to 8")
    return args


def switches_from(args) -> Switches:
    listed = lambda v: v.split(",") if v else None  # noqa: E731
    return Switches(service_id=args.service_id, ajax_api=args.ajax_api, mount_prefixes=listed(args.mount_prefixes),
                    mlflow_allowed_hosts=args.mlflow_allowed_hosts, ajax_only=args.break_rest_api,
                    no_filter=args.break_no_filter, no_route=args.break_no_route,
                    auth_down=args.break_key_service, tls_names=listed(args.tls_names),
                    replicas=args.replicas, global_rate_limit=args.global_rate_limit,
                    ownership=not args.no_ownership, identity_audience=args.identity_audience,
                    credential_sources=listed(args.credential_sources),
                    front_proxy_drops=["authorization"] if args.break_front_proxy else None)


def dev_keys(data: Path) -> dict:
    """data/dev-keys.json, made from the harness's dev keys; a file from an
    older run gets the dev keys it lacks (by key_id), its own entries kept."""
    keys_file = data / "dev-keys.json"
    keys = json.loads(keys_file.read_text()) if keys_file.exists() else {"keys": []}
    known = {k.get("key_id") for k in keys["keys"]}
    missing = [k for k in harness.DEV_KEYS["keys"] if k["key_id"] not in known]
    if missing:
        keys["keys"] += missing
        keys_file.write_text(json.dumps(keys, indent=2) + "\n")
    return keys


def key_of(keys: dict, key_id: str) -> str:
    return next((k["key"] for k in keys["keys"] if k.get("key_id") == key_id), f"(no {key_id} in dev-keys.json)")


def banner(stack: LocalStack, data: Path, keys: dict) -> str:
    gw, url = stack.envoy, stack.url
    rw, ro, admin = (k["key"] for k in keys["keys"][:3])
    staging = next((k["key"] for k in keys["keys"] if k.get("service_id") == "ml-platform"),
                   "(no ml-platform key in dev-keys.json)")
    ca = f" --ca-file {stack.ca_file}" if stack.ca_file else ""
    return fleet(stack) + f"""
The Hokusai MLflow gateway is up: {url}/api/mlflow  (Envoy admin: {gw.admin})
Data, logs and the dev keys: {data}

Use it from another shell with the standard MLflow client:

    export MLFLOW_TRACKING_URI={url}/api/mlflow
    export MLFLOW_TRACKING_TOKEN={rw}

Prove it works end to end (add --write to also write and clean up):

    scripts/verify.sh --tracking-uri {url}/api/mlflow{ca}

The MLflow UI in a browser: {url}/api/mlflow/ (or {url}/mlflow/).
It asks for a user name and password: any user name, a dev key as the password.
{ownership(stack, keys)}
A second registry host, whose keys belong to service_id ml-platform:

    export MLFLOW_TRACKING_URI={url.replace("127.0.0.1", "staging.localhost")}/api/mlflow
    export MLFLOW_TRACKING_TOKEN={staging}

(Browsers and curl resolve *.localhost to this machine; for Python add
`127.0.0.1 staging.localhost` to /etc/hosts, or use curl -H 'Host: staging.localhost'.)

Dev keys (stand-in only): read-write {rw}
                          read-only  {ro}
                          admin      {admin}
                          staging    {staging}
                          alice      {key_of(keys, "k_alice")}  (read-write, user u_alice)
                          bob        {key_of(keys, "k_bob")}  (read-write, user u_bob)
Routes: envoy-config/plugin-config.json (the API, UI and staging rules).
Ctrl-C stops everything."""


def ownership(stack: LocalStack, keys: dict) -> str:
    """Who may change whose work, as this stack runs: two users' exports."""
    if stack.ownership is None:
        return "\nOwnership off (--no-ownership): any write key may change or delete anything.\n"
    return f"""
Two users, each owning what they make (one shell each):

    export MLFLOW_TRACKING_TOKEN={key_of(keys, "k_alice")}   # alice (user u_alice)
    export MLFLOW_TRACKING_TOKEN={key_of(keys, "k_bob")}   # bob (user u_bob)

Bob reads alice's experiments, runs and models (default_permission READ)
but may not change or delete them (PERMISSION_DENIED) until she grants him
EDIT; the admin key may do anything. MLflow's auth app trusts only the
filter's signed identity (keys in {stack.ownership.keys.dir}): MLflow itself
refuses what does not come through the gateway.
"""


def fleet(stack: LocalStack) -> str:
    """The replicas, when there are several."""
    if len(stack.urls) == 1:
        return ""
    counting = ("one count per key across them (Redis " + stack.redis.url + ")" if stack.s.global_rate_limit
                else "each counting its own rate limits")
    lines = "\n".join(f"    replica {i}: {url}/api/mlflow  (Envoy admin: {e.admin})"
                      for i, (url, e) in enumerate(zip(stack.urls, stack.envoys)))
    return f"\n{len(stack.urls)} gateway replicas, {counting}:\n{lines}\n"


def supervise(stack: LocalStack):
    """Returns when a part of the stack exits, but for Redis and the rate
    limit service: those are restarted, so that stopping one rehearses the
    fleet's outage (the gateways answer by their failure_mode meanwhile)."""
    while True:
        time.sleep(0.5)
        for name in stack.revive_dependencies():
            print(f"{name} exited: restarted on the same port (the gateways used their "
                  f"failure_mode while it was down)", flush=True)
        if not all(p.proc.alive() for p in stack.owned):
            return


def main():
    args = parse_args()
    data = args.data.resolve()
    data.mkdir(parents=True, exist_ok=True)
    keys = dev_keys(data)
    stack = None

    def stop(*_):
        if stack is not None:
            stack.stop()
        print("\nstopped; data kept in", data)
        sys.exit(0)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    print("starting the key-service stand-in, MLflow and Envoy ...", flush=True)
    keysvc = harness.StandIn("keys", data, keys=keys, name="keyservice")
    try:
        stack = LocalStack(data, switches_from(args), name="stack", keysvc=keysvc, listen_port=args.port,
                           mlflow_dir=data)
    except Exception as e:  # noqa: BLE001 - report and clean up whatever started
        keysvc.stop()
        print(f"failed to start: {e}", file=sys.stderr)
        sys.exit(1)
    stack.owned.insert(0, keysvc)
    print(banner(stack, data, keys), flush=True)
    supervise(stack)
    dead = [p.proc.name for p in stack.owned if not p.proc.alive()]
    print(f"{', '.join(dead)} exited; see the logs in {data}", file=sys.stderr)
    stack.stop()
    sys.exit(1)


if __name__ == "__main__":
    main()
