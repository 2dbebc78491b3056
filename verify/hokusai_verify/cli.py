"""hokusai-verify: proves a Hokusai MLflow gateway works end to end with the
unmodified MLflow client, and when it does not, names the broken layer and
what to change.

    export MLFLOW_TRACKING_TOKEN=<your Hokusai API key>
    hokusai-verify --tracking-uri https://mlflow.example.com/api/mlflow [--write]

The key is read from MLFLOW_TRACKING_TOKEN only and never printed. Exit code
0 when no step failed (steps that do not apply are SKIP), 1 when one did,
2 for bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from .diagnose import Diagnosis
from .network import Failed, dns, tcp, tls
from .probe import Target, scrub
from .steps import Checks, Skipped


@dataclass
class Result:
    name: str
    status: str  # PASS, FAIL, SKIP
    seconds: float
    detail: str
    diagnosis: Diagnosis | None = None


class BadInput(Exception):
    """Refused before any step: a one-line reason."""


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="hokusai-verify", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tracking-uri", required=True, help="what MLFLOW_TRACKING_URI is: https://<host>/api/mlflow")
    ap.add_argument("--write", action="store_true",
                    help="also create an experiment (and check its owner), a run, an artifact, a model "
                         "version and an alias, then delete them")
    ap.add_argument("--artifact-mib", type=int, default=4, help="size of the --write artifact (default 4 MiB)")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds the whole run may take (default 120)")
    ap.add_argument("--ca-file", help="CA certificate(s) to trust for the gateway's TLS")
    ap.add_argument("--json", action="store_true", help="one JSON document instead of the table")
    ap.add_argument("--verbose", action="store_true", help="the evidence behind each step too")
    return ap.parse_args(argv)


def target(args) -> Target:
    token = os.environ.get("MLFLOW_TRACKING_TOKEN", "").strip()
    if not token:
        raise BadInput("MLFLOW_TRACKING_TOKEN is empty or unset: export it with your Hokusai API key")
    uri = args.tracking_uri.rstrip("/")
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadInput(f"--tracking-uri must be http(s)://<host>/<mount>, not {uri!r}")
    if parts.path in ("", "/"):
        raise BadInput(f"--tracking-uri {uri!r} has no mount prefix: the MLflow client must point at "
                       f"{uri}/api/mlflow (or the gateway's mount)")
    if args.artifact_mib < 1 or args.timeout <= 0:
        raise BadInput("--artifact-mib must be at least 1 and --timeout positive")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as e:
        raise BadInput(f"--tracking-uri {uri!r}: {e}") from e
    verify = args.ca_file or os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or True
    return Target(tracking_uri=uri, origin=f"{parts.scheme}://{parts.netloc}", mount=parts.path,
                  host=parts.hostname, port=port, tls=parts.scheme == "https", token=token, verify=verify,
                  deadline=time.monotonic() + args.timeout)


def step(name: str, fn) -> Result:
    start = time.monotonic()
    try:
        detail, status, diagnosis = fn(), "PASS", None
    except Skipped as e:
        detail, status, diagnosis = str(e), "SKIP", None
    except Failed as e:
        detail, status, diagnosis = str(e), "FAIL", e.diagnosis
    return Result(name, status, round(time.monotonic() - start, 3), detail, diagnosis)


def skip_rest(names, why: str) -> list[Result]:
    return [Result(n, "SKIP", 0.0, why) for n in names]


NETWORK_STEPS = ["dns", "tcp", "tls"]
READ_STEPS = ["health", "filter", "key", "scopes", "mlflow", "identity", "rate_limit"]
WRITE_STEPS = ["experiment", "ownership", "run", "artifact", "model_version", "alias", "cleanup"]


def network(t: Target) -> list[Result]:
    def no_tls():
        raise Skipped("plain HTTP")

    results = []
    for name, fn in (("dns", lambda: dns(t)), ("tcp", lambda: tcp(t)), ("tls", (lambda: tls(t)) if t.tls else no_tls)):
        results.append(step(name, fn))
        if results[-1].status == "FAIL":
            rest = NETWORK_STEPS[len(results):] + READ_STEPS + WRITE_STEPS
            return results + skip_rest(rest, f"{name} failed")
    return results


def mlflow_client(t: Target, args):
    """The unmodified MLflow client, configured as a user configures it."""
    os.environ["MLFLOW_TRACKING_URI"] = t.tracking_uri
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(max(1, int(t.remaining(60))))
    if isinstance(t.verify, str):
        os.environ["MLFLOW_TRACKING_SERVER_CERT_PATH"] = t.verify
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=t.tracking_uri)


def read_only(t: Target, args, client) -> tuple[list[Result], Checks]:
    checks = Checks(t, args.write)
    steps = (("health", checks.health), ("filter", checks.filter_in_path), ("key", checks.key),
             ("scopes", checks.scopes), ("mlflow", lambda: checks.mlflow(client)), ("identity", checks.identity),
             ("rate_limit", checks.rate_limit))
    return [step(name, fn) for name, fn in steps], checks


# Write steps that only look: the steps after them still apply when they fail.
CHECK_ONLY = {"ownership"}


def write_workflow(t: Target, args, client, user_id: str | None) -> list[Result]:
    from .write_steps import Workflow

    w = Workflow(client, args.artifact_mib, t, user_id)
    steps = (("experiment", w.create_experiment), ("ownership", w.ownership), ("run", w.log_run),
             ("artifact", w.artifact), ("model_version", w.register_model), ("alias", w.set_alias))
    results = []
    try:
        for i, (name, fn) in enumerate(steps):
            results.append(step(name, fn))
            if results[-1].status == "FAIL" and name not in CHECK_ONLY:
                results += skip_rest([n for n, _ in steps[i + 1:]], f"{name} failed")
                break
    finally:
        results.append(step("cleanup", w.cleanup))
    return results


def run(t: Target, args) -> list[Result]:
    results = network(t)
    if any(r.status == "FAIL" for r in results):
        return results
    client = mlflow_client(t, args)
    read, checks = read_only(t, args, client)
    results += read
    if not args.write:
        return results + skip_rest(WRITE_STEPS, "run with --write to try the write workflow")
    if any(r.status == "FAIL" for r in results):
        return results + skip_rest(WRITE_STEPS, "an earlier step failed")
    return results + write_workflow(t, args, client, checks.user_id())


# --- output ------------------------------------------------------------------


def table(t: Target, results: list[Result], verbose: bool) -> str:
    width = None if verbose else 110
    lines = [f"hokusai-verify {t.tracking_uri}", "", f"{'STEP':<14} {'RESULT':<6} {'TIME':>7}  DETAIL"]
    said: dict[tuple[str, str], str] = {}
    for r in results:
        detail = r.detail if width is None else r.detail[:width]
        lines.append(f"{r.name:<14} {r.status:<6} {r.seconds:>6.2f}s  {detail}")
        if r.diagnosis:
            cause = (r.diagnosis.layer, r.diagnosis.fix)
            text = f"same cause as {said[cause]}" if cause in said else f"{r.diagnosis.layer}: {r.diagnosis.fix}"
            said.setdefault(cause, r.name)
            lines.append(f"{'':<14} -> {text}")
    failed = [r for r in results if r.status == "FAIL"]
    lines.append("")
    if failed:
        first = failed[0].diagnosis
        lines.append(f"FAILED: {len(failed)} step(s); first broken layer: {first.layer if first else failed[0].name}")
    else:
        lines.append("OK: every step passed" + (" (some did not apply: SKIP)" if any(r.status == "SKIP" for r in results)
                                                else ""))
    return "\n".join(lines)


def as_json(t: Target, results: list[Result]) -> str:
    return json.dumps({
        "tracking_uri": t.tracking_uri,
        "ok": not any(r.status == "FAIL" for r in results),
        "steps": [{"name": r.name, "status": r.status, "seconds": r.seconds, "detail": r.detail,
                   "layer": r.diagnosis.layer if r.diagnosis else None,
                   "fix": r.diagnosis.fix if r.diagnosis else None} for r in results],
    }, indent=1)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        t = target(args)
    except BadInput as e:
        print(f"hokusai-verify: {e}", file=sys.stderr)
        return 2
    try:
        results = run(t, args)
    except Exception as e:  # noqa: BLE001 - one line, never a traceback
        print(scrub(f"hokusai-verify: unexpected error: {type(e).__name__}: {e}", t.token), file=sys.stderr)
        return 2
    out = as_json(t, results) if args.json else table(t, results, args.verbose)
    print(scrub(out, t.token))
    return 1 if any(r.status == "FAIL" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
