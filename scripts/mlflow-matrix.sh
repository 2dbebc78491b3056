#!/usr/bin/env bash
# Runs the MLflow end-to-end tests against several MLflow releases, each
# installed from PyPI (`mlflow[auth]==<version>`) in its own venv under
# .cache/mlflow-<version>/: the server and the client of a version are that
# version. Per version it also writes the route list
# tests/data/mlflow-endpoints-<version>.txt (scripts/list-mlflow-endpoints.py),
# then checks every route list against src/request/endpoints.txt (the unit
# test every_mlflow_route_is_in_the_table), and prints a table.
#
#   scripts/mlflow-matrix.sh [VERSION...]
#
# Default: the newest 2.22 patch, the newest 3.10 patch (a 3.x from before the
# permission API the plugin needs), the pin (tests/requirements.txt) and the newest
# 3.x that installs, as `pip index versions mlflow` lists them; a 3.x newer than
# that which does not install (yet) gets a row with pip's error but does not fail
# the run. docs/mlflow-versions.md has the last run. Outside CI: it installs
# several MLflow versions. Needs scripts/setup.sh done (the .wasm, the stand-in,
# .venv) and the harness's HOKUSAI_MLFLOW_PYTHON hook. Exits non-zero if a version
# it runs does not install, fails a test, or has a route the table does not class.
#
# Environment: PYTHON (makes the venvs, default python3), MLFLOW_MATRIX_TESTS
# (pytest arguments where the plugin runs; default tests/test_mlflow_e2e.py
# tests/test_ownership.py).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
PIP_FLAGS=(--disable-pip-version-check --quiet)
TESTS_OWNED=(${MLFLOW_MATRIX_TESTS:-tests/test_mlflow_e2e.py tests/test_ownership.py})
# Where the plugin (mlflow-plugin/) cannot run, MLflow runs without its auth app
# (HOKUSAI_MLFLOW_OWNERSHIP=off) and the one end-to-end test that needs it is left out.
TESTS_UNOWNED=(tests/test_mlflow_e2e.py
               --deselect tests/test_mlflow_e2e.py::test_mlflow_behind_the_gateway_answers_nobody_but_the_gateway)

if ! grep -q HOKUSAI_MLFLOW_PYTHON testkit/hokusai_testkit/harness.py; then
  echo "mlflow-matrix: testkit/hokusai_testkit/harness.py has no HOKUSAI_MLFLOW_PYTHON hook;" \
       "without it every version would run the pinned MLflow" >&2
  exit 2
fi

pinned=$(sed -n 's/^mlflow\[auth\]==\([0-9.]*\).*/\1/p' tests/requirements.txt)

# What the plain `pip install mlflow[auth]==<v>` of that day needs on top:
# 2.x imports sqlalchemy.pool.FallbackAsyncAdaptedQueuePool, gone in SQLAlchemy 2.1.
extra_requirements() {
  case $1 in
    2.*) echo "sqlalchemy<2.1" ;;
  esac
}

# Prints nothing when the plugin's app imports with the MLflow of python $1, else
# why not (its start-time configuration check failing here is fine).
plugin_error() {
  (cd "$(mktemp -d)" && PYTHONPATH=$OLDPWD/mlflow-plugin timeout 300 "$OLDPWD/$1" - <<'EOF'
try:
    import hokusai_mlflow_plugin.app  # noqa: F401
except ImportError as e:
    print(f"{e.__class__.__name__}: {e}".split(" (/")[0])
except Exception:
    pass
EOF
  )
}

# Prints nothing when `mlflow[auth]==$1` resolves, else pip's first ERROR line.
install_error() {
  local out
  if out=$(timeout 600 "$PY" -m pip install "${PIP_FLAGS[@]}" --dry-run --ignore-installed "mlflow[auth]==$1" 2>&1); then
    return 0
  fi
  { grep -m1 '^ERROR' <<<"$out" || tail -n1 <<<"$out"; } | sed 's/ (from versions:.*//'
}

rows=()
status=0
VERSIONS=("$@")
if [ ${#VERSIONS[@]} -eq 0 ]; then
  listed=$(timeout 120 "$PY" -m pip index versions mlflow 2>/dev/null | sed -n 's/^Available versions: //p' | tr -d ,)
  [ -n "$listed" ] || { echo "mlflow-matrix: pip index versions mlflow listed nothing" >&2; exit 2; }
  v2=$(tr ' ' '\n' <<<"$listed" | grep -m1 '^2\.22\.')
  v310=$(tr ' ' '\n' <<<"$listed" | grep -m1 '^3\.10\.')
  newest=""
  for v in $(tr ' ' '\n' <<<"$listed" | grep '^3\.'); do  # newest first
    [ "$v" = "$pinned" ] && { newest=$v; break; }
    err=$(install_error "$v")
    if [ -z "$err" ]; then newest=$v; break; fi
    echo "== mlflow $v does not install: $err"
    rows+=("| $v | - | - | - | - | - | not installable ($(date -u +%F)): \`$err\` | - | - |")
  done
  for v in "$v2" "$v310" "$pinned"; do [ -z "$v" ] || VERSIONS+=("$v"); done
  [ -n "$newest" ] && [ "$newest" != "$pinned" ] && VERSIONS+=("$newest")
fi

for v in "${VERSIONS[@]}"; do
  dir=.cache/mlflow-$v
  py=$dir/bin/python
  if [ ! -x "$py" ] || [ "$("$py" -c 'import mlflow; print(mlflow.__version__)' 2>/dev/null)" != "$v" ]; then
    echo "== mlflow $v: installing into $dir"
    rm -rf "$dir"
    "$PY" -m venv "$dir"
    # shellcheck disable=SC2046
    if ! timeout 1200 "$py" -m pip install "${PIP_FLAGS[@]}" "mlflow[auth]==$v" $(extra_requirements "$v") \
        >"$dir/install.log" 2>&1; then
      err=$({ grep -m1 '^ERROR' "$dir/install.log" || tail -n1 "$dir/install.log"; } | sed 's/ (from versions:.*//')
      rows+=("| $v | - | - | - | - | - | not installable ($(date -u +%F)): \`$err\` | - | - |"); status=1; continue
    fi
  fi
  client=$("$py" -c 'import mlflow; print(mlflow.__version__)' 2>/dev/null)

  # The route list of this version.
  list=tests/data/mlflow-endpoints-$v.txt
  if ! timeout 300 "$py" scripts/list-mlflow-endpoints.py >"$dir/routes.txt" 2>"$dir/routes.err"; then
    tail -n 20 "$dir/routes.err"
    rows+=("| $v | - | - | - | - | - | list-mlflow-endpoints.py failed | $client | - |"); status=1; continue
  fi
  cp "$dir/routes.txt" "$list"
  routes=$(grep -cv '^#' "$list")

  # Who owns what where the plugin's app imports. Not tried on 2.x: installing the
  # plugin there would replace the MLflow under test (it requires mlflow>=3).
  why=$([[ $v == 2.* ]] && echo "MLflow 2.x" || plugin_error "$py")
  if [ -n "$why" ]; then
    ownership="off ($why)"; tests=("${TESTS_UNOWNED[@]}")
  else
    ownership=on; tests=("${TESTS_OWNED[@]}")
    timeout 600 "$py" -m pip install "${PIP_FLAGS[@]}" -e ./mlflow-plugin >"$dir/plugin.log" 2>&1 \
      || { tail -n 5 "$dir/plugin.log"; ownership="on (plugin not installable)"; }
  fi
  # The end-to-end tests: server and client of this version; the project's .venv
  # runs pytest (the harness, Envoy, the stand-ins).
  echo "== mlflow $v: pytest ${tests[*]} (server and client $client, ownership $ownership)"
  HOKUSAI_MLFLOW_PYTHON=$PWD/$py HOKUSAI_MLFLOW_OWNERSHIP=${ownership%% *} \
    timeout 3600 .venv/bin/python -m pytest "${tests[@]}" -q -p no:cacheprovider \
    --junitxml="$dir/junit.xml" >"$dir/pytest.log" 2>&1 || true
  counts=$(python3 scripts/junit-counts.py "$dir/junit.xml")
  if [[ $counts != *"| ok" ]]; then
    status=1
    tail -n 40 "$dir/pytest.log"
  fi
  rows+=("| $v | $routes | UNCLASSED_$v | $counts | $client | $ownership |")
done

# Every route list in tests/data against the table: the unit test names each
# version's routes that fall through to the unknown default.
echo "== the route lists against src/request/endpoints.txt"
check=.cache/mlflow-matrix-check.log
ran=0
if timeout 1800 cargo test -q -p hokusai-mlflow-auth --lib every_mlflow_route_is_in_the_table >"$check" 2>&1; then
  echo "every route of every list is classed"; ran=1
else
  status=1
  grep -E '^(mlflow |  [A-Z]+ /|src/request)' "$check" || tail -n 40 "$check"
fi
# Passed, failed naming the versions with unclassed routes, or did not run (a build error).
grep -q 'every_mlflow_route_is_in_the_table' "$check" && ran=1
for i in "${!rows[@]}"; do
  v=$(cut -d' ' -f2 <<<"${rows[$i]}")
  n=$(sed -n "s/^mlflow $v: \([0-9]*\) routes without a line.*/\1/p" "$check" | head -n1)
  [ $ran = 1 ] || n="?"
  rows[$i]=${rows[$i]/UNCLASSED_$v/${n:-0}}
done

echo
echo "| MLflow | routes | unclassed | passed | failed | skipped | failing tests | client | ownership |"
echo "|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
exit $status
