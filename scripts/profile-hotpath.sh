#!/usr/bin/env bash
# Where the filter's own instructions go on a cache hit (natively, with a
# host that does nothing): callgrind over benches/hotpath.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(cargo bench --bench hotpath --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys; print([m["executable"] for m in map(json.loads, sys.stdin) if m.get("executable")][-1])')
out=target/callgrind.hotpath.out
ITERATIONS=${ITERATIONS:-20000} valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" "$@" 2>&1 | grep -E "refs|cache hit"
callgrind_annotate --inclusive=yes "$out" | grep -E "hokusai_mlflow_auth|sha2|alloc::fmt|malloc|free" | head -${TOP:-25}
