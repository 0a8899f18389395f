"""Benchmark the proxy: compile and sync times, and compiler memory, at scale.

    sudo .venv/bin/python bench/proxy_sync.py [--sizes 1000x2,10000x2,...] [--budget 300]

For each size (Services x endpoints per Service; every 20th Service is a NodePort) it
reports, as one JSON line: the compile time from Kubernetes JSON (views included), the
ruleset's size, and the time of a first full sync (``add table; delete table; table {...}``,
one ``nft -f -``) and of a full resync over the existing table (``flush table`` + refill).
For the sizes listed in --incremental it then adds one Service, ten times, and reports
the median time of the memoizing ``ProxyCompiler.compile`` of the full lists and of the
incremental sync; then adds ten more through ``ProxyCompiler.update`` (the change only, as
from watch events) and reports the median update, sync and end-to-end times. Last, the
compiler's peak allocation (tracemalloc) and RSS growth at --memory-size.

Everything happens in one throwaway namespace, kwtest-px-bench, removed at the end; no
packet is sent. A size whose estimated full sync would exceed --budget seconds (scaled
linearly from the largest size measured so far) is skipped with a JSON line saying so.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import sys
import time
import tracemalloc
from typing import Any

from kubewire.kernel.netns import create_netns, delete_netns, list_netns
from kubewire.proxy.compiler import ProxyCompiler, compile_proxy
from kubewire.proxy.scenarios import NODE, synthetic
from kubewire.proxy.sync import ProxySyncer

NETNS = "kwtest-px-bench"


def emit(row: dict[str, Any]) -> None:
    print(json.dumps(row), flush=True)


def sizes(text: str) -> list[tuple[int, int]]:
    out = []
    for item in text.split(","):
        services, _, endpoints = item.partition("x")
        out.append((int(services), int(endpoints)))
    return out


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def versioned(objs: list[dict[str, Any]], version: str) -> list[dict[str, Any]]:
    """Objects from the store carry a resourceVersion; the compiler's view cache uses it."""
    for obj in objs:
        obj["metadata"]["resourceVersion"] = version
    return objs


def measure(services: int, endpoints: int, incremental: bool, repeats: int) -> dict[str, Any]:
    svcs, slices = synthetic(services, endpoints)
    versioned(svcs, "1")
    versioned(slices, "1")
    gc.collect()
    t0 = time.perf_counter()
    ruleset = compile_proxy(svcs, slices, NODE)
    compile_s = time.perf_counter() - t0
    syncer = ProxySyncer(f"/run/netns/{NETNS}")
    first = syncer.sync(ruleset)
    again = syncer.resync()
    row: dict[str, Any] = {
        "bench": "proxy_sync", "services": services, "endpoints": endpoints,
        "chains": len(ruleset.chains), "rules": sum(len(c.rules) for c in ruleset.chains),
        "elements": sum(len(s.elements) for s in ruleset.sets),
        "transaction_mb": round(first.transaction_bytes / 1e6, 2),
        "compile_s": round(compile_s, 3),
        "full_sync_s": round(first.seconds, 3), "full_nft_s": round(first.nft_seconds, 3),
        "compile_plus_full_sync_s": round(compile_s + first.seconds, 3),
        "resync_s": round(again.seconds, 3),
    }
    if incremental:
        compiler = ProxyCompiler(NODE)
        compiler.compile(svcs, slices)
        syncer.sync(compiler.compile(svcs, slices))
        compile_times, sync_times, nft_times = [], [], []
        for k in range(repeats):
            extra_svcs, extra_slices = synthetic(1, endpoints, start=services + k)
            svcs += versioned(extra_svcs, "2")
            slices += versioned(extra_slices, "2")
            t0 = time.perf_counter()
            rs = compiler.compile(svcs, slices)
            compile_times.append(time.perf_counter() - t0)
            report = syncer.sync(rs)
            assert not report.full and len(report.chains_added) >= 1, report
            sync_times.append(report.seconds)
            nft_times.append(report.nft_seconds)
        row.update({
            "add_one_compile_ms": round(statistics.median(compile_times) * 1e3, 1),
            "add_one_sync_ms": round(statistics.median(sync_times) * 1e3, 1),
            "add_one_nft_ms": round(statistics.median(nft_times) * 1e3, 1),
            "add_one_fresh_compile_s": round(compile_s, 3),
        })
        # The same through update(), as an agent feeding it watch events does.
        update_times, sync_times, nft_times, total_times = [], [], [], []
        for k in range(repeats, 2 * repeats):
            extra_svcs, extra_slices = synthetic(1, endpoints, start=services + k)
            versioned(extra_svcs, "3")
            versioned(extra_slices, "3")
            t0 = time.perf_counter()
            rs = compiler.update(changed_services=extra_svcs, changed_slices=extra_slices)
            update_times.append(time.perf_counter() - t0)
            report = syncer.sync(rs)
            total_times.append(time.perf_counter() - t0)
            assert not report.full and len(report.chains_added) >= 1, report
            sync_times.append(report.seconds)
            nft_times.append(report.nft_seconds)
        row.update({
            "add_one_update_ms": round(statistics.median(update_times) * 1e3, 2),
            "add_one_update_sync_ms": round(statistics.median(sync_times) * 1e3, 1),
            "add_one_update_nft_ms": round(statistics.median(nft_times) * 1e3, 1),
            "add_one_update_total_ms": round(statistics.median(total_times) * 1e3, 1),
        })
    syncer.delete_table()
    return row


def memory(services: int, endpoints: int) -> dict[str, Any]:
    svcs, slices = synthetic(services, endpoints)
    gc.collect()
    before = rss_kib()
    tracemalloc.start()
    ruleset = compile_proxy(svcs, slices, NODE)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    gc.collect()
    after = rss_kib()
    row = {"bench": "proxy_compile_memory", "services": services, "endpoints": endpoints,
           "tracemalloc_peak_mb": round(peak / 2**20, 1),
           "rss_growth_mb": round((after - before) / 1024, 1),
           "chains": len(ruleset.chains)}
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=sizes,
                    default=sizes("1000x2,1000x10,10000x2,10000x10,30000x2,30000x10"))
    ap.add_argument("--incremental", type=sizes, default=sizes("10000x2,10000x10"),
                    help="sizes at which to time adding one Service")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--memory-size", type=sizes, default=sizes("30000x2"))
    ap.add_argument("--budget", type=float, default=300.0,
                    help="skip a size whose estimated full sync exceeds this many seconds")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (creates the network namespace kwtest-px-bench)", file=sys.stderr)
        return 2
    if NETNS in list_netns("kwtest-px-"):
        delete_netns(NETNS)
    create_netns(NETNS)
    resource.setrlimit(resource.RLIMIT_NOFILE, resource.getrlimit(resource.RLIMIT_NOFILE))
    per_rule: float | None = None
    try:
        for services, endpoints in args.sizes:
            rules = services * (endpoints + 2)
            if per_rule is not None and per_rule * rules > args.budget:
                emit({"bench": "proxy_sync", "services": services, "endpoints": endpoints,
                      "skipped": f"estimated {per_rule * rules:.0f}s > budget {args.budget}s"})
                continue
            row = measure(services, endpoints, (services, endpoints) in args.incremental,
                          args.repeats)
            emit(row)
            per_rule = (row["compile_s"] + row["full_sync_s"] + row["resync_s"]
                        ) / max(row["rules"], 1) * 3  # incl. the incremental runs
        for services, endpoints in args.memory_size:
            emit(memory(services, endpoints))
    finally:
        delete_netns(NETNS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
