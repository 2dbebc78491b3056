#!/usr/bin/env bash
# Builds the filter, installs the pinned Envoy and MLflow into .venv, and runs
# the local stack (key-service stand-in + MLflow + Envoy with the filter).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python scripts/stack.py "$@"
