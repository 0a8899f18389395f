"""Keeps bench/bgp_feed.py working: the same script as the recorded figures, 2k prefixes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bgp_feed.py"


def _bench_namespaces() -> set[str]:
    d = Path("/run/netns")
    return {p.name for p in d.iterdir() if p.name.startswith("kwtest-bgpb-")} if d.is_dir() \
        else set()


@pytest.mark.skipif(not os.path.exists("/usr/sbin/bird"),
                    reason="bird2 is not installed (the project's setup installs it)")
def test_bgp_feed_benchmark_both_receivers_get_every_prefix() -> None:
    before = _bench_namespaces()
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--prefixes", "2000", "--per-update", "50",
         "--timeout", "15"], capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(rows) == 3, rows
    bird, ours, ratio = rows
    assert [bird["receiver"], ours["receiver"]] == ["bird", "kubewire"]
    for row in (bird, ours):
        assert row["prefixes"] == row["routes"] == 2000, row  # every prefix in the Loc-RIB
        assert row["per_update"] == 50, row
        assert 0 < row["seconds"] < 15 and row["prefixes_per_s"] > 0, row
        assert row["rss_kib"] >= row["rss_before_kib"] > 1000, row
    assert ratio["ratio"] == "kubewire/bird" and ratio["prefixes"] == 2000, ratio
    assert ratio["time"] > 0 and ratio["rss"] > 0, ratio
    assert {"time_target": 2.0, "rss_target": 3.0}.items() <= ratio.items(), ratio
    assert _bench_namespaces() <= before, "the benchmark left namespaces behind"
    assert elapsed < 20, f"the smoke run took {elapsed:.1f}s"
