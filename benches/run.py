#!/usr/bin/env python3
"""Benchmarks side by side with the peers: the single command (--help).

    .venv/bin/python benches/run.py [--rounds 3 --requests 20000 --concurrency 16]

The bench itself is hokusai_testkit.bench (testkit/, installed into .venv by
scripts/setup.sh): rows, /proc readings, the wrk driver, the scenarios and
the report, one module each.
"""

import sys

from hokusai_testkit.bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
