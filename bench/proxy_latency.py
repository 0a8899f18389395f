"""First-packet latency through the proxy: TCP connect() time to a ClusterIP, by ruleset size.

    sudo .venv/bin/python bench/proxy_latency.py [--sizes 10,1000,10000] [--samples 2000]

For each size N it builds one topology of three namespaces (kwtest-lat-N-{client,node,server})::

    client 10.244.1.2 --- 10.244.1.1 [node] 10.244.2.1 --- 10.244.2.2, 10.244.2.3 server

and loads N Services (``scenarios.synthetic(N-1, E)`` plus the measured Service, whose E
endpoints are the server's addresses) into the node namespace, where the rules DNAT at
prerouting. The client times ``connect()`` of a fresh socket to the ClusterIP: the SYN's
trip through the DNAT rules to the server and the SYN-ACK's trip back. Every connection
is a new conntrack entry, so every sample runs the NAT rules; sockets close with
SO_LINGER 0 (an RST, no TIME_WAIT).

Two rulesets, one at a time in the same topology, measured in the same run:

* ``nftables``: kubewire's ``compile_proxy`` + ``ProxySyncer`` (the ``kubewire-proxy``
  table: verdict-map dispatch, so the cost should not depend on N);
* ``iptables``: rules shaped like kube-proxy's iptables mode, loaded with
  ``iptables-legacy-restore`` if present (classic linear evaluation), else
  ``iptables-restore``: a ``KUBE-SERVICES`` chain with one rule per Service port, per-Service
  ``KUBE-SVC-*`` chains choosing among per-endpoint ``KUBE-SEP-*`` chains with
  ``-m statistic --mode random --probability``, and ``-j DNAT`` there. The measured
  Service's rule is the LAST one in ``KUBE-SERVICES`` (worst case: kube-proxy appends
  new Services), followed only by the NodePort jump kube-proxy puts at the end.

Phase 1 loads nftables in every topology and takes samples round-robin over the sizes in
batches (so slow drift of a shared machine hits every size alike); phase 2 deletes the
kubewire table, loads the iptables rules, and does the same. The listening sockets are
drained between batches rather than by an accepting thread, so no other Python thread
competes for the GIL while a connect() is being timed (backlog > batch size).

Output: one JSON line per (ruleset, size) with median/p90/p99 in microseconds, then a
summary line: nftables at the largest size relative to the smallest (target: within 10 %)
and iptables/nftables at each size. Bounded: --max-seconds caps the sampling time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubewire.kernel.netns import create_netns, delete_netns, entered, list_netns, netns_path
from kubewire.proxy.compiler import compile_proxy
from kubewire.proxy.scenarios import Obj, endpoint, endpoint_slice, service, synthetic
from kubewire.proxy.sync import ProxySyncer
from kubewire.proxy.views import NodeContext

PREFIX = "kwtest-lat-"
CLUSTER_CIDR = "10.244.0.0/16"
CLIENT_IP, CLIENT_GW = "10.244.1.2", "10.244.1.1"
SERVER_GW, SERVER_IPS = "10.244.2.1", ("10.244.2.2", "10.244.2.3", "10.244.2.4", "10.244.2.5")
VIP, PORT, TARGET_PORT = "10.100.0.10", 80, 8080
NODE = NodeContext("node-1", ("10.244.1.1",), CLUSTER_CIDR)
TABLE = "kubewire-proxy"


def emit(row: dict[str, Any]) -> None:
    print(json.dumps(row), flush=True)


def run(*cmd: str, stdin: str | None = None, timeout: float = 300.0) -> str:
    proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout,
                          check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])} failed ({proc.returncode}): "
                           f"{proc.stderr.strip()[:2000]}")
    return proc.stdout


# --- the Services --------------------------------------------------------------------

def workload(count: int, endpoints: int) -> tuple[list[Obj], list[Obj]]:
    """``count`` Services; the measured one (``bench/target``, VIP) is last, its endpoints
    are the server's addresses, so only it can answer."""
    services, slices = synthetic(count - 1, endpoints)
    services.append(service("target", VIP, [{"name": "http", "port": PORT,
                                              "targetPort": TARGET_PORT}], "bench"))
    slices.append(endpoint_slice("target", [endpoint(ip) for ip in SERVER_IPS[:endpoints]],
                                 [{"name": "http", "port": TARGET_PORT}], "bench", "target-x"))
    return services, slices


def _chain(kind: str, *key: str) -> str:
    # kube-proxy's iptables chains are KIND-<16-char hash> (28-char limit); any stable
    # hash serves here.
    digest = hashlib.sha256("/".join(key).encode()).hexdigest()[:16].upper()
    return f"KUBE-{kind}-{digest}"


def iptables_ruleset(services: list[Obj], slices: list[Obj]) -> tuple[str, int, int]:
    """iptables-restore input shaped like kube-proxy's iptables mode (TCP ClusterIP and
    NodePort), Services in list order; returns (text, rules, user-defined chains)."""
    by_service: dict[tuple[str, str], Obj] = {}
    for sl in slices:
        meta = sl["metadata"]
        by_service[(meta["namespace"], meta["labels"]["kubernetes.io/service-name"])] = sl
    chains: list[str] = ["KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-MARK-MASQ",
                         "KUBE-POSTROUTING"]
    services_rules: list[str] = []
    nodeport_rules: list[str] = []
    other: list[str] = []
    for svc in services:
        ns, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
        spec = svc["spec"]
        sl = by_service.get((ns, name))
        if sl is None:
            continue
        target_ports = {p["name"]: p["port"] for p in sl["ports"]}
        addrs = [e["addresses"][0] for e in sl["endpoints"]
                 if e.get("conditions", {}).get("ready", True)]
        for port in spec["ports"]:
            if port.get("protocol", "TCP") != "TCP" or not addrs:
                continue
            pname, vip, vport = port["name"], spec["clusterIP"], port["port"]
            tport = target_ports[pname]
            svc_chain = _chain("SVC", ns, name, pname, "tcp")
            comment = f'-m comment --comment "{ns}/{name}:{pname} cluster IP"'
            services_rules.append(f"-A KUBE-SERVICES -d {vip}/32 -p tcp {comment} -m tcp "
                                  f"--dport {vport} -j {svc_chain}")
            chains.append(svc_chain)
            other.append(f"-A {svc_chain} ! -s {CLUSTER_CIDR} -d {vip}/32 -p tcp {comment} "
                         f"-m tcp --dport {vport} -j KUBE-MARK-MASQ")
            for i, addr in enumerate(addrs):
                sep = _chain("SEP", ns, name, pname, "tcp", addr)
                chains.append(sep)
                left = len(addrs) - i
                pick = (f"-m statistic --mode random --probability {1 / left:.10f} "
                        if left > 1 else "")
                other.append(f"-A {svc_chain} {pick}-j {sep}")
                other.append(f"-A {sep} -s {addr}/32 -j KUBE-MARK-MASQ")
                other.append(f"-A {sep} -p tcp -m tcp -j DNAT --to-destination {addr}:{tport}")
            if "nodePort" in port:
                ext = _chain("EXT", ns, name, pname, "tcp")
                chains.append(ext)
                nodeport_rules.append(f"-A KUBE-NODEPORTS -p tcp -m tcp --dport "
                                      f"{port['nodePort']} -j {ext}")
                other.append(f"-A {ext} -j KUBE-MARK-MASQ")
                other.append(f"-A {ext} -j {svc_chain}")
    fixed = [
        '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        "-A POSTROUTING -j KUBE-POSTROUTING",
        "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000",
        "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
        "-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000",
        "-A KUBE-POSTROUTING -j MASQUERADE --random-fully",
    ]
    # kube-proxy ends KUBE-SERVICES with the NodePort jump.
    services_rules.append("-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS")
    filter_rules = [
        "-A FORWARD -m conntrack --ctstate NEW -j KUBE-SERVICES",
        "-A FORWARD -j KUBE-FORWARD",
        "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP",
        "-A KUBE-FORWARD -m mark --mark 0x4000/0x4000 -j ACCEPT",
        "-A KUBE-FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
    ]
    nat_rules = fixed + services_rules + nodeport_rules + other
    lines = ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
             ":KUBE-SERVICES - [0:0]", ":KUBE-FORWARD - [0:0]", *filter_rules, "COMMIT",
             "*nat", ":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
             ":POSTROUTING ACCEPT [0:0]", *(f":{c} - [0:0]" for c in chains), *nat_rules,
             "COMMIT", ""]
    return "\n".join(lines), len(nat_rules) + len(filter_rules), len(chains) + 2


def iptables_tools() -> tuple[str, str, str] | None:
    """(restore, save, label): legacy (linear, in-kernel x_tables) if installed."""
    for restore, save in (("iptables-legacy-restore", "iptables-legacy-save"),
                          ("iptables-restore", "iptables-save")):
        if shutil.which(restore) and shutil.which(save):
            version = run(restore, "--version").strip()  # "iptables-restore v1.8.9 (legacy)"
            backend = version.rsplit("(", 1)[-1].rstrip(")") if "(" in version else "?"
            return restore, save, f"iptables-{backend}"
    return None


# --- the topology --------------------------------------------------------------------

@dataclass
class Topology:
    services: int
    endpoints: int
    client: Path = field(init=False)
    node: Path = field(init=False)
    server: Path = field(init=False)
    listener: socket.socket | None = None
    accepted: Counter[str] = field(default_factory=Counter)
    syncer: ProxySyncer | None = None

    def __post_init__(self) -> None:
        self.client = netns_path(self.name("client"))
        self.node = netns_path(self.name("node"))
        self.server = netns_path(self.name("server"))

    def name(self, role: str) -> str:
        return f"{PREFIX}{self.services}-{role}"

    def build(self) -> None:
        for role in ("client", "node", "server"):
            create_netns(self.name(role))
        c, n, s = self.name("client"), self.name("node"), self.name("server")
        # Both veth ends are created directly inside our namespaces: nothing ever appears
        # in the machine's own namespace.
        run("ip", "-n", n, "link", "add", "to-client", "type", "veth", "peer", "name", "eth0",
            "netns", c)
        run("ip", "-n", n, "link", "add", "to-server", "type", "veth", "peer", "name", "eth0",
            "netns", s)
        batch = {
            c: [f"addr add {CLIENT_IP}/24 dev eth0", "link set eth0 up", "link set lo up",
                f"route add default via {CLIENT_GW}"],
            n: [f"addr add {CLIENT_GW}/24 dev to-client", f"addr add {SERVER_GW}/24 dev to-server",
                "link set to-client up", "link set to-server up", "link set lo up"],
            s: [*(f"addr add {ip}/24 dev eth0" for ip in SERVER_IPS), "link set eth0 up",
                "link set lo up", f"route add default via {SERVER_GW}"],
        }
        for ns, cmds in batch.items():
            run("ip", "-n", ns, "-batch", "-", stdin="\n".join(cmds) + "\n")
        with entered(self.node), open("/proc/sys/net/ipv4/ip_forward", "w") as f:
            f.write("1\n")
        with entered(self.server):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", TARGET_PORT))
        sock.listen(4096)
        sock.setblocking(False)
        self.listener = sock

    def drain(self) -> int:
        """Accept and close every connection waiting in the backlog."""
        assert self.listener is not None
        got = 0
        while True:
            try:
                conn, _ = self.listener.accept()
            except BlockingIOError:
                return got
            try:
                self.accepted[conn.getsockname()[0]] += 1
            except OSError:  # already reset by the client: its address is gone
                self.accepted["reset"] += 1
            conn.close()
            got += 1

    def teardown(self) -> None:
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        for role in ("client", "node", "server"):
            delete_netns(self.name(role))

    def nft_tables(self) -> list[str]:
        with entered(self.node):
            out = run("nft", "list", "tables")
        return [line.strip() for line in out.splitlines() if line.strip()]

    def iptables_rule_count(self, save: str) -> int:
        with entered(self.node):
            out = run(save)
        return sum(1 for line in out.splitlines() if line.startswith("-A "))


# --- sampling ------------------------------------------------------------------------

_LINGER0 = struct.pack("ii", 1, 0)


def connect_batch(topo: Topology, count: int) -> list[float]:
    """``count`` connect() times in microseconds, each on a fresh socket, closed with RST."""
    with entered(topo.client):
        socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    times: list[float] = []
    try:
        for sock in socks:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER0)
            # Blocking connect (one syscall), but give up after 2 SYN retries (~7 s).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_SYNCNT, 2)
            t0 = time.perf_counter_ns()
            sock.connect((VIP, PORT))
            t1 = time.perf_counter_ns()
            times.append((t1 - t0) / 1e3)
            sock.close()
    finally:
        for sock in socks:
            sock.close()
    return times


def check_reachable(topo: Topology) -> None:
    with entered(topo.client):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.settimeout(2.0)
        sock.connect((VIP, PORT))
    except OSError as exc:
        raise RuntimeError(f"{VIP}:{PORT} unreachable from {topo.name('client')}: {exc}"
                           ) from None
    finally:
        sock.close()
    deadline = time.monotonic() + 2.0
    while topo.drain() == 0 and time.monotonic() < deadline:
        time.sleep(0.01)


def sample(topos: list[Topology], samples: int, warmup: int, batch: int,
           deadline: float) -> dict[int, list[float]]:
    """Round-robin batches over the topologies until each has ``samples`` (or the deadline)."""
    for topo in topos:
        check_reachable(topo)
        for start in range(0, warmup, batch):
            connect_batch(topo, min(batch, warmup - start))
            topo.drain()
        topo.accepted.clear()
    results: dict[int, list[float]] = {t.services: [] for t in topos}
    while time.monotonic() < deadline:
        pending = [t for t in topos if len(results[t.services]) < samples]
        if not pending:
            break
        for topo in pending:
            results[topo.services] += connect_batch(
                topo, min(batch, samples - len(results[topo.services])))
            topo.drain()
    for topo in topos:
        wait = time.monotonic() + 2.0
        while sum(topo.accepted.values()) < len(results[topo.services]) \
                and time.monotonic() < wait:
            topo.drain()
            time.sleep(0.01)
    return results


def summarize(times: list[float]) -> dict[str, float]:
    if len(times) < 2:
        return {}
    q = statistics.quantiles(times, n=100, method="inclusive")
    return {"median_us": round(statistics.median(times), 1), "p90_us": round(q[89], 1),
            "p99_us": round(q[98], 1), "min_us": round(min(times), 1),
            "mean_us": round(statistics.fmean(times), 1)}


# --- the two rulesets ----------------------------------------------------------------

def load_nftables(topo: Topology, save: str | None) -> dict[str, Any]:
    if save is not None:
        assert topo.iptables_rule_count(save) == 0, "iptables rules active before nftables"
    services, slices = workload(topo.services, topo.endpoints)
    ruleset = compile_proxy(services, slices, NODE)
    topo.syncer = ProxySyncer(topo.node)
    report = topo.syncer.sync(ruleset)
    return {"load_s": round(report.seconds, 3),
            "rules": sum(len(c.rules) for c in ruleset.chains),
            "chains": len(ruleset.chains)}


def unload_nftables(topo: Topology) -> None:
    if topo.syncer is not None:
        topo.syncer.delete_table()
        topo.syncer = None


def load_iptables(topo: Topology, restore: str) -> dict[str, Any]:
    tables = topo.nft_tables()
    assert not any(TABLE in t for t in tables), f"kubewire table still active: {tables}"
    services, slices = workload(topo.services, topo.endpoints)
    text, rules, chains = iptables_ruleset(services, slices)
    t0 = time.perf_counter()
    with entered(topo.node):
        run(restore, stdin=text)
    return {"load_s": round(time.perf_counter() - t0, 3), "rules": rules, "chains": chains}


def unload_iptables(topo: Topology, restore: str) -> None:
    empty = ("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
             "COMMIT\n*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n"
             ":OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n")
    with entered(topo.node):
        run(restore, stdin=empty)


def parse_sizes(text: str) -> list[int]:
    sizes = sorted({int(x) for x in text.split(",") if x.strip()})
    if not sizes or sizes[0] < 1:
        raise argparse.ArgumentTypeError("sizes must be positive integers, e.g. 10,1000,10000")
    return sizes


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=parse_sizes, default=parse_sizes("10,1000,10000"),
                    help="Service counts (comma-separated)")
    ap.add_argument("--endpoints", type=int, default=2, choices=range(1, len(SERVER_IPS) + 1),
                    help="endpoints per Service")
    ap.add_argument("--samples", type=int, default=2000, help="connects per configuration")
    ap.add_argument("--warmup", type=int, default=200, help="discarded connects first")
    ap.add_argument("--batch", type=int, default=50, help="connects per round-robin turn")
    ap.add_argument("--max-seconds", type=float, default=120.0,
                    help="cap on each phase's sampling time")
    ap.add_argument("--skip-iptables", action="store_true")
    args = ap.parse_args()
    if not 1 <= args.batch <= 1000:
        ap.error("--batch must be 1..1000 (a batch must fit the listen backlog)")
    if os.geteuid() != 0:
        print("needs root (creates network namespaces kwtest-lat-*)", file=sys.stderr)
        return 2
    if not shutil.which("nft"):
        print("nft not found: run scripts/setup.sh (apt-get install nftables)", file=sys.stderr)
        return 2
    tools = None if args.skip_iptables else iptables_tools()
    if tools is None and not args.skip_iptables:
        print("iptables not found: run scripts/setup.sh (apt-get install iptables), "
              "or pass --skip-iptables", file=sys.stderr)
        return 2

    for stale in list_netns(PREFIX):
        delete_netns(stale)
    topos = [Topology(n, args.endpoints) for n in args.sizes]
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    started = time.monotonic()
    try:
        for topo in topos:
            topo.build()
        phases: list[str] = ["nftables"] + ([] if tools is None else [tools[2]])
        for ruleset in phases:
            loads: dict[int, dict[str, Any]] = {}
            for topo in topos:
                if ruleset == "nftables":
                    loads[topo.services] = load_nftables(topo, tools[1] if tools else None)
                else:
                    assert tools is not None
                    unload_nftables(topo)
                    loads[topo.services] = load_iptables(topo, tools[0])
            results = sample(topos, args.samples, args.warmup, args.batch,
                             time.monotonic() + args.max_seconds)
            for topo in topos:
                times = results[topo.services]
                row = {"bench": "proxy_latency", "ruleset": ruleset, "services": topo.services,
                       "endpoints": topo.endpoints, **loads[topo.services],
                       "samples": len(times), **summarize(times),
                       "accepted": dict(sorted(topo.accepted.items()))}
                rows[(ruleset, topo.services)] = row
                emit(row)
        if tools is not None:
            for topo in topos:
                unload_iptables(topo, tools[0])
    finally:
        for topo in topos:
            topo.teardown()

    summary: dict[str, Any] = {"bench": "proxy_latency_summary",
                               "iptables_tool": tools[0] if tools else None,
                               "total_s": round(time.monotonic() - started, 1)}
    small, large = args.sizes[0], args.sizes[-1]
    nft_small, nft_large = rows[("nftables", small)], rows[("nftables", large)]
    if "median_us" in nft_small and "median_us" in nft_large:
        rel = nft_large["median_us"] / nft_small["median_us"]
        summary[f"nftables_median_{large}_vs_{small}"] = round(rel, 3)
        summary[f"nftables_p90_{large}_vs_{small}"] = round(
            nft_large["p90_us"] / nft_small["p90_us"], 3)
        summary["nftables_within_10pct"] = abs(rel - 1) <= 0.10
    if tools is not None:
        ratios: dict[str, dict[str, float]] = {}
        for n in args.sizes:
            ipt, nft = rows[(tools[2], n)], rows[("nftables", n)]
            if "median_us" in ipt and "median_us" in nft:
                ratios[str(n)] = {k: round(ipt[f"{k}_us"] / nft[f"{k}_us"], 2)
                                  for k in ("median", "p90", "p99")}
        summary["iptables_over_nftables"] = ratios
    emit(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
