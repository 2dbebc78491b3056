"""One Envoy per row: benches/envoy-bench.yaml with the row's filter, started
by the harness, and the check that the row does what it claims."""

from __future__ import annotations

import http.client
from pathlib import Path

from hokusai_testkit import harness
from hokusai_testkit.bench.context import Ctx
from hokusai_testkit.bench.keys import BENCH_KEY, WRONG_KEY
from hokusai_testkit.bench.rows import REQ_PATH, Failed, Row, hokusai_config

TEMPLATE = harness.ROOT / "benches/envoy-bench.yaml"
FILTERS = harness.ROOT / "benches/filters"


def render_template(row_filter: str, workdir: Path) -> Path:
    """envoy-bench.yaml with the row's filter snippet in ${HTTP_FILTERS}."""
    snippet = (FILTERS / f"{row_filter}.yaml").read_text()
    indented = "".join("          " + line if line.strip() else line
                       for line in snippet.splitlines(keepends=True))
    lines = TEMPLATE.read_text().splitlines(keepends=True)
    at = [i for i, line in enumerate(lines) if line.strip() == "${HTTP_FILTERS}"]
    if len(at) != 1:
        raise RuntimeError(f"{TEMPLATE} must have one ${{HTTP_FILTERS}} line")
    lines[at[0]] = indented
    path = workdir / f"template-{row_filter}.yaml"
    path.write_text("".join(lines))
    return path


# What the filter does on a cache hit beside the key check: the MLflow mount
# stripped from the path, the key's id added for the upstream (api_key_auth
# adds the user and removes the key itself).
MOUNT = "/api/mlflow/"
KEY_ID_HEADER = "x-hokusai-api-key-id"


def like_the_filter(boot: dict) -> None:
    """The bench route as a config-only equivalent of the filter's hit."""
    hcm = boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    vhost = hcm["route_config"]["virtual_hosts"][0]
    vhost["routes"] = [
        {"match": {"prefix": MOUNT},
         "route": {"cluster": "mlflow", "timeout": "60s", "prefix_rewrite": "/"},
         "request_headers_to_add": [{"header": {"key": KEY_ID_HEADER, "value": "k_bench_hot"}}]},
    ] + vhost["routes"]


def envoy_options(row: Row, workdir: Path, upstream_port: int, auth_port: int, concurrency: int = 1,
                  ratelimit_port: int | None = None) -> harness.EnvoyOptions:
    """The bench's Envoy for a row: its filter snippet, its build, its plugin config."""
    extra = {"BENCH_KEY": BENCH_KEY}
    if row.wasm is not None:
        extra["WASM"] = str(row.wasm)
    signing = harness.Signing(harness.IdentityKeys.ensure(workdir / "identity")) if row.signing else None
    return harness.EnvoyOptions(
        upstream_port=upstream_port, auth_port=auth_port, config=row.config or hokusai_config(False),
        concurrency=concurrency, log_level="warning", template=render_template(row.filter, workdir),
        extra_vars=extra, ratelimit_port=ratelimit_port, filter="native" if row.native else "wasm",
        native=row.so or harness.NATIVE, signing=signing,
        edit=like_the_filter if row.like_filter else None,
    )


def start_envoy(ctx: Ctx, row: Row, name: str, concurrency: int = 1) -> harness.Envoy:
    options = envoy_options(row, ctx.workdir, ctx.echo.port, ctx.keysvc.port, concurrency,
                            ctx.rls.port if ctx.rls else None)
    return harness.Envoy(ctx.workdir, options, name=name)


def get(url_port: int, path: str, headers: dict | None = None) -> tuple[int, bytes]:
    c = http.client.HTTPConnection("127.0.0.1", url_port, timeout=10)
    try:
        c.request("GET", path, headers=headers or {})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def check_row(ctx: Ctx, row: Row, envoy: harness.Envoy):
    """The row does what it claims: a good key passes, with the identity
    upstream where the row promises it; a wrong or missing key is refused
    by the auth rows and passes the others."""
    ctx.echo.clear()
    status, body = get(envoy.port, REQ_PATH, bearer(BENCH_KEY))
    if status != 200:
        raise Failed(f"good key: {status} {body[:300]!r}")
    seen = ctx.echo.requests()
    if not seen:
        raise Failed("good key: nothing reached the upstream")
    up = {k.lower(): v for k, v in seen[-1]["headers"]}
    if row.identity and up.get("x-hokusai-user-id") != "u_bench_hot":
        raise Failed(f"good key: upstream got no identity header: {sorted(up)}")
    if row.hides_key and "authorization" in up:
        raise Failed("good key: the key reached the upstream")
    if row.like_filter and (up.get(KEY_ID_HEADER) != "k_bench_hot" or seen[-1]["path"].startswith(MOUNT)):
        raise Failed(f"good key: no key id or the mount not stripped: {seen[-1]['path']} {sorted(up)}")
    if row.signing and up.get("x-hokusai-identity", "").count(".") != 2:
        raise Failed(f"good key: upstream got no signed identity: {sorted(up)}")
    for what, headers in (("wrong key", bearer(WRONG_KEY)), ("no key", {})):
        ctx.echo.clear()
        status, body = get(envoy.port, REQ_PATH, headers)
        if row.auth:
            if status not in (401, 403):
                raise Failed(f"{what}: {status} (want 401/403) {body[:300]!r}")
            if ctx.echo.requests():
                raise Failed(f"{what}: refused but reached the upstream")
        elif status != 200:
            raise Failed(f"{what}: {status} on a row without auth")
