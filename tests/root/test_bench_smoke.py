"""Keeps bench/lab_up.py working: the same script the recorded figures come from, tiny size."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "lab_up.py"


def test_lab_up_benchmark_runs_and_reports_a_passing_check() -> None:
    proc = subprocess.run([sys.executable, str(BENCH), "--sizes", "2x3"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    assert row["pods"] == 6 and row["check_ok"] and row["failed"] == 0
    assert row["probed"] == 8 * 7  # the 6 pods and the 2 kube-dns pods, every ordered pair
    assert 0 < row["up_to_check_s"] < 60
