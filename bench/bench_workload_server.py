"""Benchmark the built-in pod server: start time and memory for many containers.

    sudo .venv/bin/python bench/bench_workload_server.py [--pods 1000] [--requests 5000]

Creates PODS network namespaces named kwtest-wl-bench-*, starts one built-in container
per namespace with 80/TCP and 53/UDP, and reports: total and per-container start time
(control round trips included), the server's RSS before and after, a bounded keep-alive
HTTP request rate from one client, and stop time. Everything it creates is removed at
the end; all traffic stays inside the benchmark's own namespaces.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import socket
import struct
import sys
import tempfile
import time
from pathlib import Path

from kubewire.kernel.netns import create_netns, delete_netns, entered, list_netns
from kubewire.workload.client import PodServerClient, spawn_server
from kubewire.workload.protocol import ContainerStart, PortSpec

PREFIX = "kwtest-wl-bench-"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def lo_up(path: Path) -> None:
    with entered(path):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        request = struct.pack("16sh14x", b"lo", 0)
        flags = struct.unpack("16sh14x", fcntl.ioctl(sock, 0x8913, request))[1]
        fcntl.ioctl(sock, 0x8914, struct.pack("16sh14x", b"lo", flags | 1))


def request_rate(netns: Path, count: int) -> float:
    with entered(netns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", 80))
    request = b"GET /bench HTTP/1.1\r\nHost: bench\r\n\r\n"
    began = time.perf_counter()
    buffer = b""
    for _ in range(count):
        sock.sendall(request)
        while True:
            head_end = buffer.find(b"\r\n\r\n")
            if head_end >= 0:
                length = int(buffer.split(b"Content-Length: ", 1)[1].split(b"\r\n", 1)[0])
                if len(buffer) >= head_end + 4 + length:
                    buffer = buffer[head_end + 4 + length :]
                    break
            buffer += sock.recv(65536)
    elapsed = time.perf_counter() - began
    sock.close()
    return count / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=5000)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (creates network namespaces)", file=sys.stderr)
        return 2
    if list_netns(PREFIX):
        print(f"leftover {PREFIX}* namespaces exist; remove them first", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="kw-bench-workload-"))
    names = [f"{PREFIX}{i}" for i in range(args.pods)]
    created: list[str] = []
    proc = None
    try:
        began = time.perf_counter()
        for name in names:
            path = create_netns(name)
            created.append(name)
            lo_up(path)
        ns_seconds = time.perf_counter() - began
        proc = spawn_server(work / "ctl.sock", work / "server.log")
        client = PodServerClient(work / "ctl.sock")
        rss_before = rss_kib(proc.pid)
        specs = [
            ContainerStart(
                id=f"c{i}",
                pod=f"bench-{i}",
                namespace="bench",
                node="node-1",
                pod_ip=f"10.{200 + i // 65536}.{i // 256 % 256}.{i % 256}",
                netns=f"/run/netns/{name}",
                container="app",
                ports=(PortSpec(80), PortSpec(53, "UDP")),
                log=str(work / f"c{i}.log"),
            )
            for i, name in enumerate(names)
        ]
        began = time.perf_counter()
        for spec in specs:
            client.start(spec)
        start_seconds = time.perf_counter() - began
        rss_after = rss_kib(proc.pid)
        rate = request_rate(Path(f"/run/netns/{names[0]}"), args.requests)
        began = time.perf_counter()
        for spec in specs:
            client.stop(spec.id)
        stop_seconds = time.perf_counter() - began
        client.close()
        result = {
            "pods": args.pods,
            "ports_per_pod": 2,
            "namespace_setup_s": round(ns_seconds, 3),
            "start_total_s": round(start_seconds, 3),
            "start_per_container_ms": round(start_seconds * 1000 / args.pods, 3),
            "rss_idle_mib": round(rss_before / 1024, 1),
            "rss_loaded_mib": round(rss_after / 1024, 1),
            "rss_per_container_kib": round((rss_after - rss_before) / args.pods, 1),
            "http_keepalive_req_per_s": round(rate),
            "stop_total_s": round(stop_seconds, 3),
        }
        print(json.dumps(result, indent=1))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)
        for name in created:
            delete_netns(name)
        for f in work.iterdir():
            f.unlink()
        work.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
