#!/usr/bin/env bash
# Model-checks the native build's cross-worker protocol with loom: every
# interleaving of the single-flight (native/src/coalesce.rs: lead, join,
# land, leave, abandon) and of the process-wide store (native/src/shared.rs).
# Its own target dir: `--cfg loom` would otherwise rebuild the normal one.
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTFLAGS="--cfg loom ${RUSTFLAGS:-}"
# Exhaustive (no preemption bound): the models are small enough (about a
# second). LOOM_MAX_PREEMPTIONS=3 bounds them if they grow.
exec cargo test -p hokusai-mlflow-auth-native --release --target-dir target/loom --lib loom "$@"
