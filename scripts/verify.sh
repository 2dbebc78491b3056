#!/usr/bin/env bash
# Proves a Hokusai MLflow gateway works end to end with the unmodified MLflow
# client, or names the broken layer. The key comes from MLFLOW_TRACKING_TOKEN.
#
#   export MLFLOW_TRACKING_TOKEN=<your Hokusai API key>
#   scripts/verify.sh --tracking-uri https://<host>/api/mlflow [--write] [--json]
#
# Installed into the project's .venv by scripts/setup.sh; on a laptop:
# pip install ./verify, then run hokusai-verify.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/hokusai-verify ]; then
  echo "verify.sh: .venv/bin/hokusai-verify is missing: run scripts/setup.sh" >&2
  exit 2
fi
exec .venv/bin/hokusai-verify "$@"
