"""Keeps bench/bgp_converge.py working: 3 nodes + 1 joining, with a route reflector."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bgp_converge.py"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: builds a lab")


def test_converge_benchmark_sees_the_new_node_everywhere() -> None:
    proc = subprocess.run([sys.executable, str(BENCH), "--nodes", "3", "--reflectors", "1",
                           "--timeout", "60"], capture_output=True, text=True, timeout=240,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    first, table = proc.stdout.strip().splitlines()[-2:]
    result = json.loads(first)
    assert result["nodes"] == 3 and result["mode"] == "1 route reflector"
    assert 0 < result["apply_returned"] <= result["join"] < 60
    assert table.startswith("| 3 + 1 | 1 route reflector |")
    assert not list(Path("/run/kubewire").glob("bgpconv3")), "the lab was not removed"
