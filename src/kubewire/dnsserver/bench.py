"""Queries per second over loopback: bare DnsServer vs the default Corefile chain.

``python -m kubewire.dnsserver.bench [--seconds 5] [--services 1000]`` starts each server in
its own process pinned to CPU 0 (``taskset``) and drives it with dnsperf pinned to CPU 1, all
on 127.0.0.1, bounded in time. ``--serve-bare OBJECTS`` is the bare server it launches.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from kubewire.dns.bench import synthetic
from kubewire.dns.corefile import default_corefile
from kubewire.dns.zone import build_zone
from kubewire.dnsserver.server import DnsServer


async def _serve_bare(objects: str) -> None:
    data = json.loads(Path(objects).read_text())
    zone = build_zone(data["Service"], data["EndpointSlice"], [], "cluster.local")
    server = DnsServer(lambda: zone, "127.0.0.1", 0)
    await server.start()
    print(f"bare -> 127.0.0.1:{server.port}", flush=True)  # serving already: zone built
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop()


def bench_corefile() -> str:
    """The default Corefile with HTTP on ephemeral ports and an upstream nobody queries."""
    text = default_corefile(upstream="127.0.0.1:9", port=0)
    for fixed in (":9153", "ready"):
        text = text.replace(fixed, {":9153": "127.0.0.1:0", "ready": "ready 127.0.0.1:0"}[fixed])
    return text.replace("health {", "health 127.0.0.1:0 {").replace("lameduck 5s", "lameduck 0s")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _run(cmd: list[str], seconds: float, queries: str) -> tuple[float, float]:
    """(queries/s at saturation, server CPU microseconds per answered query).

    The second figure is what a shared, noisy machine measures best: 1e6 / it is the rate one
    core sustains when nothing else runs on it.
    """
    pin = ["taskset", "-c", "0"] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else []
    proc = subprocess.Popen([*pin, *cmd], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = 0
        # Wait until it serves: the port line, and for the chain the ready line that follows
        # set_cluster (before it, the zone is still being built).
        while True:
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{cmd} exited before it was ready")
            if " -> " in line and not port:
                port = int(line.rsplit(":", 1)[1])
            if port and (line.startswith("bare") or "ready" in line):
                break
        perf_pin = ["taskset", "-c", "1"] if pin else []
        cpu0 = _cpu_seconds(proc.pid)
        out = subprocess.run([*perf_pin, "dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d",
                              queries, "-l", str(seconds), "-c", "4", "-q", "500"],
                             capture_output=True, text=True, timeout=seconds + 30).stdout
        cpu = _cpu_seconds(proc.pid) - cpu0
        m = re.search(r"Queries per second:\s+([\d.]+)", out)
        done = re.search(r"Queries completed:\s+(\d+)", out)
        if m is None or done is None or not int(done.group(1)):
            raise RuntimeError(f"dnsperf said:\n{out}")
        return float(m.group(1)), cpu / int(done.group(1)) * 1e6
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--services", type=int, default=1000)
    ap.add_argument("--serve-bare", metavar="OBJECTS")
    args = ap.parse_args()
    if args.serve_bare:
        asyncio.run(_serve_bare(args.serve_bare))
        return
    if shutil.which("dnsperf") is None:
        sys.exit("dnsperf is not installed (apt-get install dnsperf)")
    svcs, slices = synthetic(args.services, 3)
    with tempfile.TemporaryDirectory() as tmp:
        objects = Path(tmp, "objects.json")
        objects.write_text(json.dumps({"Service": svcs, "EndpointSlice": slices}))
        # The same file as JSON for --objects: a List of every object.
        listing = Path(tmp, "list.json")
        listing.write_text(json.dumps({"kind": "List", "items": [
            {**s, "kind": "Service"} for s in svcs] + [
            {**s, "kind": "EndpointSlice"} for s in slices]}))
        core = Path(tmp, "Corefile")
        core.write_text(bench_corefile())
        queries = Path(tmp, "queries")
        queries.write_text("".join(f"svc-{i}.ns-{i % 20}.svc.cluster.local A\n"
                                   for i in range(args.services) if i % 10))
        py = sys.executable
        bare, bare_us = _run([py, "-m", "kubewire.dnsserver.bench", "--serve-bare",
                              str(objects)], args.seconds, str(queries))
        print(f"bare DnsServer:          {bare:>8,.0f} queries/s; {bare_us:5.1f} us CPU/query "
              f"(= {1e6 / bare_us:,.0f}/s per core)")
        chain, chain_us = _run([py, "-m", "kubewire.dnsserver", "-conf", str(core),
                                "--objects", str(listing), "--host", "127.0.0.1"],
                               args.seconds, str(queries))
        print(f"default Corefile chain:  {chain:>8,.0f} queries/s; {chain_us:5.1f} us CPU/query "
              f"(= {1e6 / chain_us:,.0f}/s per core)")


if __name__ == "__main__":
    main()
