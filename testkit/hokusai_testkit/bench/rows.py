"""The rows of the benchmark: what each one runs (which filter, which build,
which plugin config) and what it must be seen to do before it is timed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hokusai_testkit import harness
from hokusai_testkit.bench.builds import NOOP_MODULE, NOOP_WASM

# A read the MLflow client makes; the filter strips the mount and classifies
# it as a read. Every row sends exactly this request.
REQ_PATH = "/api/mlflow/api/2.0/mlflow/experiments/get?experiment_id=0"


class Failed(Exception):
    """A row does not do what it claims: not timed, reported."""


@dataclass(frozen=True)
class Row:
    name: str
    label: str
    filter: str  # benches/filters/<filter>.yaml
    wasm: Path | None = None
    config: dict | None = None  # the Hokusai plugin config
    auth: bool = False  # refuses a wrong key
    distinct_keys: bool = False  # a new key on every request
    delay_ms: int = 0  # the stand-in waits this long before every answer
    callouts: float = 0.0  # expected callouts per request
    identity: bool = False  # the upstream gets x-hokusai-user-id
    hides_key: bool = False  # the upstream never sees Authorization
    global_limit: bool = False  # counts in the rate limit service (on Redis)
    native: bool = False  # the native build (dynamic module) instead of the .wasm
    so: Path | None = None  # that build's .so (default: harness.NATIVE)
    signing: bool = False  # the filter signs the identity assertion (x-hokusai-identity)
    like_filter: bool = False  # the route also rewrites the path and adds the key id, as the filter does


def hokusai_config(rate_limit: bool = False, routes: bool = False, global_limit: bool = False) -> dict:
    """The local plugin config, audit log off; rate limit as asked (counted
    by the rate limit service with global_limit); its per-route rules only
    when asked (so that the other rows can also time builds from before
    there were rules)."""
    limit = {"enabled": rate_limit or global_limit}
    if global_limit:
        limit.update(mode="global", cluster="hokusai_ratelimit", timeout_ms=1000)
    cfg = harness.plugin_config(audit_log=False, rate_limit=limit)
    if not routes:
        cfg.pop("routes", None)
    return cfg


def rows(variants: list[tuple[str, Path]] = ()) -> list[Row]:
    hw = harness.WASM
    return base_rows(hw) + [r for name, wasm in variants for r in variant_rows(name, wasm)]


def variant_rows(name: str, wasm: Path) -> list[Row]:
    """The cache-hit rows again with another build of the filter (--variant),
    so that a change is compared with its baseline in the same run."""
    if wasm.suffix == ".so":
        return [
            Row(f"native_hit@{name}", f"hokusai native, cache hit ({name})", "hokusai", so=wasm,
                config=hokusai_config(False), auth=True, identity=True, hides_key=True, native=True),
            Row(f"native_hit_rl@{name}", f"hokusai native, cache hit, rate limit on ({name})", "hokusai",
                so=wasm, config=hokusai_config(True), auth=True, identity=True, hides_key=True, native=True),
        ]
    return [
        Row(f"hit@{name}", f"hokusai, cache hit ({name})", "hokusai", wasm=wasm, config=hokusai_config(False),
            auth=True, identity=True, hides_key=True),
        Row(f"hit_rl@{name}", f"hokusai, cache hit, rate limit on ({name})", "hokusai", wasm=wasm,
            config=hokusai_config(True), auth=True, identity=True, hides_key=True),
    ]


def base_rows(hw: Path) -> list[Row]:
    return [
        Row("none", "no auth filter (ceiling)", "none"),
        Row("noop", "no-op wasm filter (floor)", "noop-wasm", wasm=NOOP_WASM),
        Row("native_noop", "no-op dynamic module (floor of the native build)", "hokusai", so=NOOP_MODULE,
            native=True),
        Row("api_key_auth", "native api_key_auth (static key list)", "api-key-auth",
            auth=True, identity=True, hides_key=True),
        Row("api_key_auth_like", "native api_key_auth + the route's prefix_rewrite and key-id header "
            "(a hit's work, in Envoy's config)", "api-key-auth", auth=True, identity=True, hides_key=True,
            like_filter=True),
        Row("hit", "hokusai, cache hit", "hokusai", wasm=hw, config=hokusai_config(False),
            auth=True, identity=True, hides_key=True),
        Row("native_hit", "hokusai native (dynamic module), cache hit", "hokusai", config=hokusai_config(False),
            auth=True, identity=True, hides_key=True, native=True),
        Row("native_hit_rl", "hokusai native, cache hit, rate limit on", "hokusai", config=hokusai_config(True),
            auth=True, identity=True, hides_key=True, native=True),
        Row("native_miss", "hokusai native, cache miss (new key each request)", "hokusai",
            config=hokusai_config(False), auth=True, distinct_keys=True, callouts=1.0,
            identity=True, hides_key=True, native=True),
        Row("hit_id", "hokusai, cache hit, identity assertion signed", "hokusai", wasm=hw,
            config=hokusai_config(False), auth=True, identity=True, hides_key=True, signing=True),
        Row("native_hit_id", "hokusai native, cache hit, identity assertion signed", "hokusai",
            config=hokusai_config(False), auth=True, identity=True, hides_key=True, native=True, signing=True),
        Row("miss_id", "hokusai, cache miss, identity assertion signed (a signature per new key)", "hokusai",
            wasm=hw, config=hokusai_config(False), auth=True, distinct_keys=True, callouts=1.0,
            identity=True, hides_key=True, signing=True),
        Row("native_miss_id", "hokusai native, cache miss, identity assertion signed", "hokusai",
            config=hokusai_config(False), auth=True, distinct_keys=True, callouts=1.0,
            identity=True, hides_key=True, native=True, signing=True),
        Row("hit_rl", "hokusai, cache hit, rate limit on", "hokusai", wasm=hw,
            config=hokusai_config(True), auth=True, identity=True, hides_key=True),
        Row("hit_grl", "hokusai, cache hit, global rate limit (rate limit service on Redis)", "hokusai",
            wasm=hw, config=hokusai_config(global_limit=True), auth=True, identity=True, hides_key=True,
            global_limit=True),
        Row("native_hit_grl", "hokusai native, cache hit, global rate limit (rate limit service on Redis)",
            "hokusai", config=hokusai_config(global_limit=True), auth=True, identity=True, hides_key=True,
            global_limit=True, native=True),
        Row("hit_routes", "hokusai, cache hit, the local config's per-route rules (one selects by route name)",
            "hokusai", wasm=hw, config=hokusai_config(False, routes=True), auth=True, identity=True,
            hides_key=True),
        Row("miss", "hokusai, cache miss (new key each request)", "hokusai", wasm=hw,
            config=hokusai_config(False), auth=True, distinct_keys=True, callouts=1.0,
            identity=True, hides_key=True),
        Row("ext_authz", "native ext_authz (HTTP), stand-in instant", "ext-authz",
            auth=True, callouts=1.0, identity=True),
        Row("ext_authz_5ms", "native ext_authz (HTTP), stand-in 5 ms", "ext-authz",
            auth=True, callouts=1.0, identity=True, delay_ms=5),
        Row("miss_5ms", "hokusai, cache miss, stand-in 5 ms", "hokusai", wasm=hw,
            config=hokusai_config(False), auth=True, distinct_keys=True, callouts=1.0,
            identity=True, hides_key=True, delay_ms=5),
    ]
