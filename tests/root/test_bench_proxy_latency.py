"""Keeps bench/proxy_latency.py working: the same script as the recorded figures, tiny size."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "proxy_latency.py"
SERVER_IPS = {"10.244.2.2", "10.244.2.3"}


@pytest.mark.skipif(not (shutil.which("iptables-legacy-restore") or
                         shutil.which("iptables-restore")),
                    reason="iptables is not installed (scripts/setup.sh installs it): "
                           "the benchmark compares against an iptables ruleset")
@pytest.mark.skipif(shutil.which("nft") is None, reason="nft is not installed")
def test_proxy_latency_benchmark_reports_sane_numbers_for_both_rulesets() -> None:
    proc = subprocess.run([sys.executable, str(BENCH), "--sizes", "10", "--samples", "100",
                           "--warmup", "20"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    *measured, summary = rows
    assert [r["ruleset"] for r in measured] == ["nftables", measured[1]["ruleset"]]
    assert measured[1]["ruleset"].startswith("iptables-")
    for row in measured:
        assert row["services"] == 10 and row["samples"] == 100, row
        # A connect() between namespaces on one machine: microseconds, never seconds.
        assert 0 < row["min_us"] <= row["median_us"] <= row["p90_us"] <= row["p99_us"], row
        assert row["median_us"] < 50_000, row
        # Every connection reached the server through the DNAT, on the target's endpoints.
        assert sum(row["accepted"].values()) == 100, row
        assert set(row["accepted"]) <= SERVER_IPS, row
    assert summary["bench"] == "proxy_latency_summary"
    assert summary["iptables_over_nftables"]["10"]["median"] > 0
