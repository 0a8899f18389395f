"""Synthetic clusters and an in-process benchmark of respond (``python -m kubewire.dns.bench``).

Pure: no sockets. The figure is the ceiling for the server, which adds socket costs on top.
"""

from __future__ import annotations

import argparse
import random
import time
from typing import Any

import dns.message
import dns.rdatatype

from kubewire.dns.answer import respond
from kubewire.dns.zone import ClusterZone, build_zone

Obj = dict[str, Any]


def synthetic(services: int, endpoints: int, headless_every: int = 10,
              namespaces: int = 20) -> tuple[list[Obj], list[Obj]]:
    """``services`` Services (every ``headless_every``-th headless), each with one slice."""
    svcs: list[Obj] = []
    slices: list[Obj] = []
    for i in range(services):
        ns, name = f"ns-{i % namespaces}", f"svc-{i}"
        headless = headless_every and i % headless_every == 0
        ip = "None" if headless else f"10.96.{i // 250}.{i % 250 + 1}"
        port = {"name": "http", "port": 80, "protocol": "TCP"}
        svcs.append({"metadata": {"name": name, "namespace": ns},
                     "spec": {"clusterIP": ip, "ports": [port]}})
        eps = [{"addresses": [f"10.{100 + (i * endpoints + e) // 65000 % 100}."
                              f"{(i * endpoints + e) // 250 % 260 % 256}.{e % 250 + 1}"],
                "conditions": {"ready": True},
                **({"hostname": f"pod-{e}"} if e % 2 else {})} for e in range(endpoints)]
        slices.append({"metadata": {"name": f"{name}-abc", "namespace": ns,
                                    "labels": {"kubernetes.io/service-name": name}},
                       "endpoints": eps, "ports": [{"name": "http", "port": 8080,
                                                    "protocol": "TCP"}]})
    return svcs, slices


def queries(services: int, count: int = 2000, seed: int = 1) -> list[bytes]:
    rnd = random.Random(seed)
    out = []
    for k in range(count):
        i = rnd.randrange(services)
        name = f"svc-{i}.ns-{i % 20}.svc.cluster.local."
        rdtype = dns.rdatatype.A if k % 4 else dns.rdatatype.SRV
        if rdtype == dns.rdatatype.SRV:
            name = "_http._tcp." + name
        q = dns.message.make_query(name, rdtype, use_edns=0 if k % 2 else None)
        q.id = k
        out.append(q.to_wire())
    return out


def measure(zone: ClusterZone, wires: list[bytes], seconds: float = 1.0) -> float:
    """Queries per second of respond over ``wires`` (round-robin), single thread."""
    done, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for w in wires:
            respond(zone, w)
        done += len(wires)
    return done / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--services", type=int, default=10_000)
    ap.add_argument("--endpoints", type=int, default=10)
    args = ap.parse_args()
    svcs, slices = synthetic(args.services, args.endpoints)
    t0 = time.perf_counter()
    zone = build_zone(svcs, slices)
    build = time.perf_counter() - t0
    qps = measure(zone, queries(args.services), 2.0)
    print(f"build_zone: {args.services} services x {args.endpoints} endpoints: {build:.2f} s, "
          f"{len(zone)} answers; respond: {qps:,.0f} queries/s")


if __name__ == "__main__":
    main()
