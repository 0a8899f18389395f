"""Time from `kubewire up` to a passing `kubewire check`, and peak memory, per lab size.

Memory is measured machine-wide as the peak of (MemTotal - MemAvailable) during the run
minus its value before: that counts kernel objects (namespaces, links, sockets) and every
process the lab started, which is what the target is about. Namespace teardown is
asynchronous, so each run first waits until the machine's memory use has settled; the
peak RSS of the lab's own processes (daemon, pod server) is reported beside it.

    sudo .venv/bin/python bench/lab_up.py                 # the three sizes of issue 2
    sudo .venv/bin/python bench/lab_up.py --sizes 3x10    # the CI smoke run
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

KW = [sys.executable, "-m", "kubewire.cli.main"]


def used_kib() -> int:
    info = {}
    with open("/proc/meminfo") as f:
        for line in f:
            k, v = line.split(":", 1)
            info[k] = int(v.split()[0])
    return info["MemTotal"] - info["MemAvailable"]


def settle(timeout: float = 90.0) -> None:
    """Wait until memory use stops moving (a previous lab's namespaces are freed lazily)."""
    deadline = time.monotonic() + timeout
    last, calm = used_kib(), 0
    while time.monotonic() < deadline and calm < 3:
        time.sleep(0.5)
        now = used_kib()
        calm = calm + 1 if abs(now - last) < 2048 else 0
        last = now


def lab_rss_kib(lab: str) -> int:
    total = 0
    for record in Path(f"/run/kubewire/{lab}/pids").glob("*.json"):
        try:
            pid = json.loads(record.read_text())["pid"]
            with open(f"/proc/{pid}/status") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))
        except (OSError, ValueError, KeyError, StopIteration):
            continue
    return total


class PeakMemory:
    def __init__(self, lab: str) -> None:
        settle()
        self.lab = lab
        self.base = used_kib()
        self.peak = self.base
        self.peak_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, used_kib())
            self.peak_rss = max(self.peak_rss, lab_rss_kib(self.lab))

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def mib(self) -> float:
        return (self.peak - self.base) / 1024


def manifests(lab: str, nodes: int, pods_per_node: int, backend: str) -> str:
    return f"""apiVersion: kubewire.dev/v1alpha1
kind: Cluster
metadata: {{name: {lab}}}
spec:
  nodes: {nodes}
  network: {{backend: {backend}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: bench}}
spec:
  replicas: {nodes * pods_per_node}
  selector: {{matchLabels: {{app: bench}}}}
  template:
    metadata: {{labels: {{app: bench}}}}
    spec:
      containers:
      - name: srv
        image: agnhost
        ports: [{{containerPort: 8080}}]
"""


def run_size(nodes: int, per_node: int, backend: str, max_pairs: int) -> dict[str, object]:
    lab = f"bench{nodes}x{per_node}"
    subprocess.run([*KW, "down", lab], capture_output=True)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(manifests(lab, nodes, per_node, backend))
    try:
        with PeakMemory(lab) as mem:
            t0 = time.monotonic()
            up = subprocess.run([*KW, "up", "-f", f.name], capture_output=True, text=True)
            t_up = time.monotonic() - t0
            if up.returncode != 0:
                raise SystemExit(f"up failed for {lab}:\n{up.stdout}\n{up.stderr}")
            chk = subprocess.run([*KW, "--lab", lab, "check", "-o", "json", "--max-pairs",
                                  str(max_pairs)], capture_output=True, text=True)
            total = time.monotonic() - t0
        report = json.loads(chk.stdout)
        return {"lab": f"{nodes} nodes x {per_node} pods", "pods": nodes * per_node,
                "backend": backend, "up_s": round(t_up, 2), "up_to_check_s": round(total, 2),
                "check_ok": chk.returncode == 0, "probed": report["probed"],
                "failed": report["failed"], "peak_mib": round(mem.mib, 1),
                "lab_processes_peak_rss_mib": round(mem.peak_rss / 1024, 1)}
    finally:
        subprocess.run([*KW, "down", lab], capture_output=True)
        Path(f.name).unlink()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="3x10,10x100,50x20")
    ap.add_argument("--backend", default="vxlan")
    ap.add_argument("--max-pairs", type=int, default=2500)
    args = ap.parse_args()
    rows = []
    for size in args.sizes.split(","):
        n, p = (int(x) for x in size.split("x"))
        row = run_size(n, p, args.backend, args.max_pairs)
        rows.append(row)
        print(json.dumps(row), flush=True)
    if not all(r["check_ok"] for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
