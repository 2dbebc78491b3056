"""The builds the bench times beside the filter: the no-op wasm filter and
the no-op dynamic module (built outside benches/, in target/, which git
ignores), and how they and the filter are built."""

from __future__ import annotations

import subprocess

from hokusai_testkit import harness

ROOT = harness.ROOT
BENCH = ROOT / "benches"
NOOP_MANIFEST = BENCH / "noop-filter/Cargo.toml"
NOOP_TARGET_DIR = ROOT / "target/noop-filter"
NOOP_WASM = NOOP_TARGET_DIR / "wasm32-wasip1/release/noop_filter.wasm"
NOOP_MODULE_MANIFEST = BENCH / "noop-module/Cargo.toml"
NOOP_MODULE_TARGET_DIR = ROOT / "target/noop-module"
NOOP_MODULE = NOOP_MODULE_TARGET_DIR / "release/libnoop_module.so"


def build(args):
    if args.no_build:
        return
    print("build: scripts/setup.sh", flush=True)
    subprocess.run(["bash", str(ROOT / "scripts/setup.sh")], cwd=ROOT, check=True, timeout=1800)
    print("build: benches/noop-filter, benches/noop-module", flush=True)
    subprocess.run(["cargo", "build", "--release", "--target", "wasm32-wasip1", "--manifest-path",
                    str(NOOP_MANIFEST), "--target-dir", str(NOOP_TARGET_DIR)],
                   cwd=ROOT, check=True, timeout=900)
    subprocess.run(["cargo", "build", "--release", "--manifest-path", str(NOOP_MODULE_MANIFEST),
                    "--target-dir", str(NOOP_MODULE_TARGET_DIR)], cwd=ROOT, check=True, timeout=900)


def wasm_sizes() -> dict[str, int]:
    return {"noop": NOOP_WASM.stat().st_size, "hokusai": harness.WASM.stat().st_size}
