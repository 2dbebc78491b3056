#!/usr/bin/env bash
# Long property-test run of every parser that sees request data or host
# answers (src/tests/fuzz.rs). CI runs the same tests with proptest's bounded
# default; this runs CASES inputs per target (default 200000).
set -euo pipefail
cd "$(dirname "$0")/.."
PROPTEST_CASES=${CASES:-200000} cargo test --release -p hokusai-mlflow-auth tests::fuzz -- --nocapture
