"""Keeps bench/dns_perf.py working: the same script as the recorded figures, tiny size."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "dns_perf.py"


@pytest.mark.skipif(shutil.which("dnsperf") is None or shutil.which("unbound") is None,
                    reason="dnsperf and unbound are not installed (scripts/setup.sh installs "
                           "them): the benchmark drives dnsperf and uses Unbound as upstream")
def test_dns_perf_benchmark_answers_every_query_of_both_mixes() -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--services", "20", "--endpoints", "2", "--pods", "40",
         "--external-names", "10", "--query-lines", "500", "--servers", "kubewire-bare",
         "--duration", "1", "--repeats", "1", "--warmup", "0", "--outstanding", "10",
         "--latency-qps", "0", "--agreement", "0", "--quiet-wait", "0",
         "--no-memory-baseline"],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["bench"] for r in rows] == ["dns_perf_setup", "dns_perf", "dns_perf",
                                          "dns_perf_memory", "dns_perf_summary"], rows
    setup, *runs, memory, summary = rows
    assert setup["pods"] == 40 and setup["zone_answers"] > 20, setup
    assert [r["mix"] for r in runs] == ["cluster", "external"]
    for row in runs:
        assert row["server"] == "kubewire-bare" and row["outstanding"] == 10, row
        # Every query answered, with a real answer: no loss, no SERVFAIL (the external
        # names reach the upstream Unbound in its own namespace).
        assert row["sent"] > 100 and row["completed"] == row["sent"], row
        assert row["lost"] == 0 and "SERVFAIL" not in row["rcodes"], row
        assert set(row["rcodes"]) <= {"NOERROR", "NXDOMAIN"}, row
        assert 0 < row["min_latency_ms"] <= row["avg_latency_ms"] <= row["max_latency_ms"]
        assert row["qps"] > 0 and 0 < row["server_cores"] <= 1.2, row
    # Pinned to one cpu: the server never uses more than a core.
    assert memory["server"] == "kubewire-bare" and memory["rss_mb_loaded"] > 5, memory
    assert memory["counters"][0]["fallbacks"] > 0, memory
    assert memory["counters"][0]["fallback_failures"] == 0, memory
    table = summary["table"]
    assert set(table) == {"kubewire-bare/cluster", "kubewire-bare/external"}, table
    assert summary["coredns_memory_formula_mb"]["value"] == pytest.approx(54.1)  # 60/1000 + 54
