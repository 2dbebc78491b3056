"""What one bench run shares: its arguments, the stand-ins (and Redis), the
key files, the wrk script and the budget for waiting on a quiet machine."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from hokusai_testkit import harness
from hokusai_testkit.bench import wrk
from hokusai_testkit.bench.keys import KeyFiles
from hokusai_testkit.bench.procstat import proc_cpu_ticks


@dataclass
class Ctx:
    args: argparse.Namespace
    workdir: Path
    keysvc: harness.StandIn
    echo: harness.StandIn
    lua: Path
    keys: KeyFiles
    runs: int = 0
    quiet_left: float = 0.0
    quiet_waited: float = 0.0
    reruns_left: int = 0  # re-runs of rows timed against other load, left for the whole run
    redis: harness.Redis | None = None
    rls: harness.StandIn | None = None

    def helper_ticks(self) -> int:
        """CPU of the stand-ins (and Redis), in clock ticks."""
        parts = [self.keysvc, self.echo, self.rls, self.redis]
        return sum(proc_cpu_ticks(p.proc.p.pid) for p in parts if p is not None)

    def run_wrk(self, port: int, keys: Path, limit: int, connections: int | None = None) -> dict:
        """wrk with this run's script and load (--concurrency unless `connections`)."""
        a = self.args
        return wrk.run(self.lua, port, keys, limit, connections=connections or a.concurrency,
                       threads=a.threads, max_seconds=a.max_seconds)


@dataclass
class Results:
    """Everything a run measured, and what failed."""

    rows: list[dict] = field(default_factory=list)  # one per row and round
    bursts: list[dict] = field(default_factory=list)
    steadies: list[dict] = field(default_factory=list)
    profiles: list[dict] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
