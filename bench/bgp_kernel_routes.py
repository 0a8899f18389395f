"""Routes per second into the kernel: kubewire's BGP route programmer against `ip -batch`.

    sudo .venv/bin/python bench/bgp_kernel_routes.py [--routes 10000,100000] [--timeout 300]

One throwaway namespace, kwtest-bgpk-<pid> (always removed): eth0, one end of a veth pair
whose other end stays in the namespace, holds 172.30.0.1/24; the next hops 172.30.0.2 and
.3 are on that subnet (nothing is ever sent: no packet leaves the namespace). For each size
N and each shape (single: one next hop; ecmp2: one RTA_MULTIPATH route over both), N
distinct /24s from 16.0.0.0 up go into the main table at proto bgp metric 20:

- kubewire: `BgpRouteProgrammer.apply` (up to 256 requests per sendmsg, every ack
  checked): add all N; a no-op `resync` of all N (dump the table, compare, send nothing);
  replace all N with the other shape; delete all N;
- ip -batch: one `ip -n NS -batch FILE` each for add, replace and delete with the same
  routes (`route add ... proto bgp metric 20 [nexthop via A dev eth0 nexthop via B dev eth0]`);
  iproute2 sends one request and waits for its ack before the next.

The table is checked after every step (the routes are all there, or all gone). Output: one
JSON line per (implementation, N, shape) with wall seconds, routes per second and CPU
seconds per step (ours: this process; ip: the child; both user + system, and the kernel's
route work is system time of the sender), then one markdown table row per (N, shape) with
the rates and the ratio ours/ip (above 1: we are faster). On a shared machine the CPU
seconds are the steadier figure. The whole run stops with an error after --timeout seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from kubewire.kernel.netns import create_netns, delete_netns
from kubewire.routing.bgproutes import DEFAULT_METRIC, BgpRoute, BgpRouteProgrammer

# Keeps a typo from filling the kernel; 500k /24s from 16.0.0.0 end below 24.0.0.0.
MAX_ROUTES = 500_000
NH1, NH2 = IPv4Address("172.30.0.2"), IPv4Address("172.30.0.3")
FIRST = int(IPv4Address("16.0.0.0"))


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds
        self.seconds = seconds

    def check(self, what: str) -> None:
        if time.monotonic() > self.end:
            raise SystemExit(f"gave up before {what}: the run exceeded --timeout {self.seconds} s")

    def left(self) -> float:
        return max(1.0, self.end - time.monotonic())


def prefixes(n: int) -> list[IPv4Network]:
    return [IPv4Network((FIRST + (i << 8), 24)) for i in range(n)]


def shape(nets: list[IPv4Network], kind: str) -> dict[IPv4Network, BgpRoute]:
    hops = (NH1,) if kind == "single" else (NH1, NH2)
    return {net: BgpRoute(net, hops) for net in nets}


def ip(ns: str, *args: str, timeout: float = 60) -> str:
    proc = subprocess.run(
        ["ip", "-n", ns, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode:
        raise SystemExit(f"ip -n {ns} {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def count_bgp_routes(ns: str, deadline: Deadline) -> int:
    out = ip(
        ns,
        "-4",
        "route",
        "show",
        "proto",
        "bgp",
        "metric",
        str(DEFAULT_METRIC),
        timeout=deadline.left(),
    )
    return sum(1 for line in out.splitlines() if line and not line[0].isspace())


def ip_line(verb: str, route: BgpRoute) -> str:
    if verb == "del":
        return f"route del {route.dst} proto bgp metric {DEFAULT_METRIC}\n"
    head = f"route {verb} {route.dst} proto bgp metric {DEFAULT_METRIC}"
    if not route.ecmp:
        return f"{head} via {route.nexthops[0]} dev eth0\n"
    return head + "".join(f" nexthop via {h} dev eth0" for h in route.nexthops) + "\n"


def cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def ip_batch(
    ns: str, verb: str, routes: Mapping[IPv4Network, BgpRoute], deadline: Deadline, tmp: Path
) -> tuple[float, float]:
    """Wall and CPU seconds of one `ip -batch` (user + system: the kernel's route work
    runs in the sending process's system time)."""
    path = tmp / f"{verb}.batch"
    path.write_text("".join(ip_line(verb, r) for r in routes.values()))
    before = cpu(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    ip(ns, "-batch", str(path), timeout=deadline.left())
    return time.perf_counter() - started, cpu(resource.RUSAGE_CHILDREN) - before


def timed(step: Callable[[], Any]) -> tuple[float, float, Any]:
    before = cpu(resource.RUSAGE_SELF)
    started = time.perf_counter()
    result = step()
    return time.perf_counter() - started, cpu(resource.RUSAGE_SELF) - before, result


def expect(ns: str, n: int, what: str, deadline: Deadline) -> None:
    got = count_bgp_routes(ns, deadline)
    if got != n:
        raise SystemExit(f"after {what} the table holds {got} proto-bgp routes, expected {n}")


def rate(n: int, seconds: float) -> int:
    return round(n / seconds) if seconds > 0 else 0


def bench_ours(ns: str, n: int, kind: str, deadline: Deadline) -> dict[str, Any]:
    nets = prefixes(n)
    first, other = shape(nets, kind), shape(nets, "ecmp2" if kind == "single" else "single")
    with BgpRouteProgrammer(f"/run/netns/{ns}") as prog:
        deadline.check("kubewire add")
        add_s, add_cpu, report = timed(lambda: prog.apply(first))
        if report.added != n or not report.ok:
            raise SystemExit(f"kubewire add: {report}")
        expect(ns, n, "kubewire add", deadline)
        resync_s, _cpu, report = timed(lambda: prog.resync(first))
        if report.unchanged != n or report.messages:
            raise SystemExit(f"kubewire no-op resync changed something: {report}")
        deadline.check("kubewire replace")
        replace_s, replace_cpu, report = timed(lambda: prog.apply(other))
        if report.replaced != n or not report.ok:
            raise SystemExit(f"kubewire replace: {report}")
        if prog.read() != other:
            raise SystemExit("kubewire replace: the table does not hold the new next hops")
        deadline.check("kubewire delete")
        delete_s, delete_cpu, report = timed(lambda: prog.apply(dict.fromkeys(nets)))
        if report.deleted != n or not report.ok:
            raise SystemExit(f"kubewire delete: {report}")
        expect(ns, 0, "kubewire delete", deadline)
    return row(
        "kubewire",
        n,
        kind,
        (add_s, add_cpu),
        (replace_s, replace_cpu),
        (delete_s, delete_cpu),
        resync_s=round(resync_s, 3),
    )


def bench_ip(ns: str, n: int, kind: str, deadline: Deadline, tmp: Path) -> dict[str, Any]:
    nets = prefixes(n)
    first, other = shape(nets, kind), shape(nets, "ecmp2" if kind == "single" else "single")
    deadline.check("ip -batch add")
    add = ip_batch(ns, "add", first, deadline, tmp)
    expect(ns, n, "ip -batch add", deadline)
    deadline.check("ip -batch replace")
    replace = ip_batch(ns, "replace", other, deadline, tmp)
    expect(ns, n, "ip -batch replace", deadline)
    deadline.check("ip -batch delete")
    delete = ip_batch(ns, "del", first, deadline, tmp)
    expect(ns, 0, "ip -batch delete", deadline)
    return row("ip-batch", n, kind, add, replace, delete)


def row(
    impl: str,
    n: int,
    kind: str,
    add: tuple[float, float],
    replace: tuple[float, float],
    delete: tuple[float, float],
    **extra: Any,
) -> dict[str, Any]:
    out: dict[str, Any] = {"impl": impl, "routes": n, "shape": kind}
    for step, (wall, cpu_s) in (("add", add), ("replace", replace), ("delete", delete)):
        out[f"{step}_s"] = round(wall, 3)
        out[f"{step}_per_s"] = rate(n, wall)
        out[f"{step}_cpu_s"] = round(cpu_s, 3)
    return {**out, **extra}


def cpu_us(r: dict[str, Any]) -> float:
    """CPU microseconds per route change, over add, replace and delete."""
    total = float(r["add_cpu_s"] + r["replace_cpu_s"] + r["delete_cpu_s"])
    return round(total * 1e6 / (3 * int(r["routes"])), 1)


def markdown(ours: dict[str, Any], theirs: dict[str, Any]) -> str:
    def ratio(key: str) -> str:
        return f"{ours[key] / theirs[key]:.1f}x" if theirs[key] else "-"

    return (
        f"| {ours['routes']:,} | {ours['shape']} "
        f"| {ours['add_per_s']:,} | {theirs['add_per_s']:,} | {ratio('add_per_s')} "
        f"| {ours['replace_per_s']:,} | {theirs['replace_per_s']:,} | {ratio('replace_per_s')} "
        f"| {ours['delete_per_s']:,} | {theirs['delete_per_s']:,} | {ratio('delete_per_s')} "
        f"| {cpu_us(ours)} | {cpu_us(theirs)} | {ours['resync_s']} |"
    )


def setup(ns: str) -> None:
    create_netns(ns)
    ip(ns, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0")
    ip(ns, "link", "set", "eth0", "up")
    ip(ns, "link", "set", "peer0", "up")
    ip(ns, "addr", "add", "172.30.0.1/24", "dev", "eth0")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--routes",
        default="10000,100000",
        help="comma-separated route counts (default 10000,100000)",
    )
    ap.add_argument("--shapes", default="single,ecmp2", help="single and/or ecmp2")
    ap.add_argument("--timeout", type=float, default=300.0, help="stop after this many seconds")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.routes.split(",") if s]
    shapes = [s for s in args.shapes.split(",") if s]
    if any(not 1 <= n <= MAX_ROUTES for n in sizes) or not set(shapes) <= {"single", "ecmp2"}:
        ap.error(f"--routes must be 1..{MAX_ROUTES}; --shapes single and/or ecmp2")
    if os.geteuid() != 0:
        ap.error("needs root: it creates a network namespace")
    deadline = Deadline(args.timeout)
    ns = f"kwtest-bgpk-{os.getpid()}"
    pairs = []
    try:
        setup(ns)
        with tempfile.TemporaryDirectory(prefix="kw-bgpk-") as tmp:
            for n in sizes:
                for kind in shapes:
                    ours = bench_ours(ns, n, kind, deadline)
                    print(json.dumps(ours), flush=True)
                    theirs = bench_ip(ns, n, kind, deadline, Path(tmp))
                    print(json.dumps(theirs), flush=True)
                    pairs.append((ours, theirs))
    finally:
        delete_netns(ns)
    print(
        "| routes | shape | add/s ours | add/s ip | ratio | replace/s ours | replace/s ip "
        "| ratio | delete/s ours | delete/s ip | ratio | CPU us/route ours | CPU us/route ip "
        "| no-op resync ours (s) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for ours, theirs in pairs:
        print(markdown(ours, theirs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
