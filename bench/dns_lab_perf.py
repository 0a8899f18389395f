"""dnsperf from a real lab pod against cluster DNS, through the kube-dns Service.

    sudo .venv/bin/python bench/dns_lab_perf.py [--duration 10] [--services 200]

Brings up a throwaway lab (`b-dns`: 2 nodes, a client pod, ``--services`` ClusterIP
Services), runs dnsperf inside the client pod against 10.96.0.10 (so every query goes
through the node's proxy DNAT to one of the two kube-dns pods, as in a cluster), and prints
one JSON line: queries/s, latency, lost queries, and the CPU seconds each DNS pod's server
used (so q/s per server CPU-second is the per-core figure). Complements bench/dns_perf.py,
which pins one server to one core in bare namespaces and measures Unbound beside it.
The lab is removed at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

LAB = "b-dns"
KW = [sys.executable, "-m", "kubewire.cli.main", "--lab", LAB]


def kw(*args: str, stdin: str | None = None, check: bool = True) -> str:
    proc = subprocess.run([*KW, *args], input=stdin, capture_output=True, text=True,
                          timeout=300)
    if check and proc.returncode != 0:
        raise SystemExit(f"kubewire {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def manifests(services: int) -> str:
    docs = [f"apiVersion: kubewire.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: {LAB}}}\n"
            "spec: {nodes: 2}",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: client}\nspec:\n  nodeName: node-1\n"
            "  containers: [{name: c, image: agnhost, ports: [{containerPort: 9999}]}]"]
    for i in range(services):
        docs.append(f"apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}}}\n"
                    f"spec: {{selector: {{app: none}}, ports: [{{port: 80}}]}}")
    return "\n---\n".join(docs) + "\n"


def dns_cpu_seconds() -> dict[str, float]:
    """CPU seconds used so far by each DNS pod's server process (from its pid record)."""
    out = {}
    pids = Path(f"/run/kubewire/{LAB}/pids")
    for record in pids.glob("kube-system_coredns-*.json"):
        pid = json.loads(record.read_text())["pid"]
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        out[record.stem] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def parse(text: str) -> dict[str, Any]:
    def num(pattern: str) -> float:
        m = re.search(pattern, text)
        return float(m.group(1)) if m else float("nan")
    return {"qps": num(r"Queries per second:\s+([\d.]+)"),
            "sent": num(r"Queries sent:\s+(\d+)"),
            "lost": num(r"Queries lost:\s+(\d+)"),
            "avg_latency_ms": num(r"Average Latency \(s\):\s+([\d.]+)") * 1000,
            "max_latency_ms": num(r"max ([\d.]+)\)") * 1000}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--services", type=int, default=200)
    ap.add_argument("--outstanding", type=int, default=100)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        queries = Path(tmp) / "queries.txt"
        queries.write_text("".join(f"svc-{i}.default.svc.cluster.local A\n"
                                   for i in range(args.services)))
        kw("down", LAB, check=False)
        try:
            kw("up", "-f", "-", stdin=manifests(args.services))
            before, started = dns_cpu_seconds(), time.monotonic()
            out = kw("exec", "client", "--", "dnsperf", "-s", "10.96.0.10", "-d", str(queries),
                     "-l", str(args.duration), "-c", "4", "-q", str(args.outstanding))
            elapsed = time.monotonic() - started
            after = dns_cpu_seconds()
        finally:
            kw("down", LAB, check=False)
    result = parse(out)
    cpu = sum(after[k] - before.get(k, 0.0) for k in after)
    row = {"bench": "dns_lab_perf", "services": args.services, "duration_s": args.duration,
           **result, "dns_pods": len(after), "dns_cpu_s": round(cpu, 2),
           "dns_cpu_cores": round(cpu / elapsed, 2),
           "qps_per_dns_cpu_s": round(result["sent"] / cpu) if cpu else None}
    print(json.dumps(row))
    return 0 if result["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
