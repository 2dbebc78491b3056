#!/usr/bin/env bash
# Times this working tree's filter against another revision's, in one run:
# builds REV's .wasm and native .so into target/compare/ and runs
# benches/run.py with them as variants (rows hit@REV, hit_rl@REV beside hit,
# hit_rl; native_hit@REV, native_hit_rl@REV beside native_hit,
# native_hit_rl). Extra arguments go to run.py; by default only the rows a
# hot-path change needs, without the cold bursts and steady streams.
#
#   scripts/bench-compare.sh HEAD~1
#   scripts/bench-compare.sh main --rounds 5 --rows none,noop,hit,hit@main
set -euo pipefail
cd "$(dirname "$0")/.."
rev=${1:?usage: scripts/bench-compare.sh REV [run.py arguments]}
shift
name=$(git rev-parse --short "$rev")
src=target/compare/src-$name
out=target/compare/$name.wasm
so=target/compare/$name/libhokusai_mlflow_auth_native.so
if [ ! -f "$out" ] || [ ! -f "$so" ]; then
  rm -rf "$src" && mkdir -p "$src" "$(dirname "$so")"
  git archive "$rev" | tar -x -C "$src"
  cargo build --release --target wasm32-wasip1 -p hokusai-mlflow-auth \
    --manifest-path "$src/Cargo.toml" --target-dir target/compare/build
  cp target/compare/build/wasm32-wasip1/release/hokusai_mlflow_auth.wasm "$out"
  cargo build --profile native -p hokusai-mlflow-auth-native \
    --manifest-path "$src/Cargo.toml" --target-dir target/compare/build
  cp target/compare/build/native/libhokusai_mlflow_auth_native.so "$so"
  rm -rf "$src"
fi
rows="none,noop,native_noop,api_key_auth,hit,hit_rl,hit@$name,hit_rl@$name"
rows="$rows,native_hit,native_hit_rl,native_hit@$name,native_hit_rl@$name"
if [ $# -eq 0 ]; then set -- --no-doc --no-perf --no-streams --rows "$rows"; fi
exec .venv/bin/python benches/run.py --variant "$name=$out" --variant "$name=$so" "$@"
