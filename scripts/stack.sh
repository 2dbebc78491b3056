#!/usr/bin/env bash
# Builds the filter, installs the pinned Envoy and MLflow into .venv, and runs
# the local stack (key-service stand-in + MLflow with its auth app + Envoy with
# the filter signing who calls; --no-ownership for MLflow without auth).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python scripts/stack.py "$@"
