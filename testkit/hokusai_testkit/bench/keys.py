"""The stand-in's keys for a run and the key files wrk reads (one key per
line, one per request)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hokusai_testkit import harness

BENCH_KEY = "hk_test_bench_hot_0000000000000000000"
WRONG_KEY = "hk_test_bench_wrong_00000000000000000"


@dataclass
class KeyFiles:
    standin: dict  # every key the stand-in knows (the dev keys too)
    one: Path  # the hot key alone: the cache-hit rows
    warm: Path  # one new key per warm-up request of the cache-miss rows
    measure: Path  # one new key per timed request of the cache-miss rows
    latency: Path  # one new key per request of the 1-connection run
    cold: list[str]  # never-seen keys, one per cold burst


def entry(key: str, i: str) -> dict:
    return {"key": key, "user_id": f"u_bench_{i}", "key_id": f"k_bench_{i}",
            "service_id": "platform", "scopes": ["mlflow:read", "mlflow:write"],
            "rate_limit_per_hour": 1_000_000_000}


def key_file(path: Path, keys: list[str]) -> Path:
    path.write_text("\n".join(keys) + "\n")
    return path


def make_keys(workdir: Path, args) -> KeyFiles:
    """The stand-in's keys: the hot key, one key per cache-miss request
    (warmup and measured sets), and fresh keys for the cold bursts."""
    margin = 4 * args.concurrency + 16  # wrk may send a few past its limit
    warm = [f"hk_test_bench_warm_{i:018d}" for i in range(args.warmup + margin)]
    measure = [f"hk_test_bench_miss_{i:018d}" for i in range(args.requests + margin)]
    lat = [f"hk_test_bench_lat1_{i:018d}" for i in range(args.latency_requests + margin)]
    cold = [f"hk_test_bench_cold_{i:018d}" for i in range(4 * args.rounds + 8)]
    entries = [entry(BENCH_KEY, "hot")]
    entries += [entry(k, f"w{i}") for i, k in enumerate(warm)]
    entries += [entry(k, f"m{i}") for i, k in enumerate(measure)]
    entries += [entry(k, f"l{i}") for i, k in enumerate(lat)]
    entries += [entry(k, f"c{i}") for i, k in enumerate(cold)]
    return KeyFiles(standin={"keys": harness.DEV_KEYS["keys"] + entries},
                    one=key_file(workdir / "keys-one.txt", [BENCH_KEY]),
                    warm=key_file(workdir / "keys-warm.txt", warm),
                    measure=key_file(workdir / "keys-measure.txt", measure),
                    latency=key_file(workdir / "keys-latency.txt", lat),
                    cold=cold)
