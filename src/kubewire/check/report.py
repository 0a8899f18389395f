"""Rendering connectivity results: a node-by-node summary table, failures, or JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence

from kubewire.check.matrix import ProbeResult, Target


def _summary(results: Sequence[ProbeResult]) -> dict[tuple[str, str], tuple[int, int]]:
    cells: dict[tuple[str, str], tuple[int, int]] = {}
    for r in results:
        ok, total = cells.get((r.src.node, r.dst.node), (0, 0))
        cells[(r.src.node, r.dst.node)] = (ok + int(r.ok), total + 1)
    return cells


def render_table(results: Sequence[ProbeResult], targets: Sequence[Target], sampled: bool,
                 elapsed: float) -> str:
    nodes = sorted({t.node for t in targets})
    cells = _summary(results)
    width = max([len(n) for n in nodes] + [9])
    lines = ["pod-to-pod TCP, by node (rows: source node, columns: destination node; "
             "ok/probed)", " " * (width + 2) + "  ".join(n.ljust(width) for n in nodes)]
    for a in nodes:
        row = []
        for b in nodes:
            ok, total = cells.get((a, b), (0, 0))
            mark = f"{ok}/{total}" if total else "-"
            if total and ok < total:
                mark += " !"
            row.append(mark.ljust(width))
        lines.append(a.ljust(width) + "  " + "  ".join(row))
    failed = [r for r in results if not r.ok]
    for r in failed[:50]:
        lines.append(f"FAIL {r.src.ref} ({r.src.ip}) -> {r.dst.ref} ({r.dst.ip}:"
                     f"{r.dst.tcp_port or '-'}): {r.outcome}")
    if len(failed) > 50:
        lines.append(f"... and {len(failed) - 50} more failures")
    how = (f"a sample of {len(results)} pairs covering every node pair and every pod"
           if sampled else f"all {len(results)} pairs")
    lines.append(f"{len(results) - len(failed)}/{len(results)} connections ok "
                 f"({how} of {len(targets)} pods) in {elapsed:.2f}s")
    return "\n".join(lines)


def render_json(results: Sequence[ProbeResult], targets: Sequence[Target], sampled: bool,
                elapsed: float) -> str:
    return json.dumps({
        "pods": len(targets),
        "sampled": sampled,
        "probed": len(results),
        "ok": sum(1 for r in results if r.ok),
        "failed": sum(1 for r in results if not r.ok),
        "seconds": round(elapsed, 3),
        "results": [{
            "from": r.src.ref, "fromIP": r.src.ip, "fromNode": r.src.node,
            "to": r.dst.ref, "toIP": r.dst.ip, "toNode": r.dst.node, "port": r.dst.tcp_port,
            "ok": r.ok, "outcome": r.outcome, "ms": round(r.ms, 2)} for r in results],
    }, indent=2)
