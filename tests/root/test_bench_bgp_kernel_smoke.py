"""Keeps bench/bgp_kernel_routes.py working: the recorded benchmark's script, 500 routes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bgp_kernel_routes.py"

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: creates a network namespace"),
]


def _bench_namespaces() -> set[str]:
    d = Path("/run/netns")
    if not d.is_dir():
        return set()
    return {p.name for p in d.iterdir() if p.name.startswith("kwtest-bgpk-")}


def test_kernel_routes_benchmark_runs_both_implementations() -> None:
    before = _bench_namespaces()
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--routes", "500", "--timeout", "30"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    rows = [json.loads(line) for line in lines if line.startswith("{")]
    assert [(r["impl"], r["shape"]) for r in rows] == [
        ("kubewire", "single"),
        ("ip-batch", "single"),
        ("kubewire", "ecmp2"),
        ("ip-batch", "ecmp2"),
    ]
    for row in rows:
        assert row["routes"] == 500, row
        for step in ("add", "replace", "delete"):
            assert row[f"{step}_s"] > 0 and row[f"{step}_per_s"] > 0, row
            assert row[f"{step}_cpu_s"] >= 0, row
    assert all(r["resync_s"] > 0 for r in rows if r["impl"] == "kubewire")
    table = [line for line in lines if line.startswith("| 500 |")]
    assert len(table) == 2 and all(line.count("|") == 15 for line in table), table
    assert _bench_namespaces() <= before, "the benchmark left its namespace behind"
    assert elapsed < 30, f"the smoke run took {elapsed:.1f}s"
