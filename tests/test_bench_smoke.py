"""Smoke test of a benchmark script (the benchmarks themselves are not tests: see BENCHMARKS.md): the delivery
benchmark on a handful of events, which checks on its own that every row was delivered and accepted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_delivery_benchmark_runs_and_delivers_everything() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "backend"), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "delivery.py"), "--events", "6", "--rounds", "1", "--sample", "2",
         "--latency", "0.01", "--concurrency", "4"],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "round 0: 22 deliveries" in result.stdout, result.stdout
    assert "median over 1 rounds" in result.stdout
