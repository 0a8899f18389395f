"""The compiled policy table in the real kernel, in namespaces made for each test.

1. Every golden scenario and a realistic ruleset (1k policies over 5k pods, one node's
   share) load with one ``nft -f`` transaction, twice (the transaction replaces the table).
2. Real packets on a bridged node (br_netfilter, as in the lab): an allowed connection
   connects, a denied TCP connection is refused at once (reset) and a denied UDP one gets
   ICMP admin-prohibited at once; the oracle agrees on each.

Topology (namespaces kwtest-pol-*; nothing touches the machine's own)::

    x-a 10.244.1.10 --+
    y-a 10.244.1.13 --+-- cni0 10.244.1.1 [node]
    z-a 10.244.1.16 --+
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubewire.kernel.netns import create_netns, delete_netns, entered
from kubewire.policy import names
from kubewire.policy.cases import load_cases
from kubewire.policy.compiler import PolicyNode, compile_policy
from kubewire.policy.evaluate import allowed
from kubewire.policy.fake import check_ruleset
from kubewire.policy.model import Ruleset
from kubewire.policy.scenarios import NODE, SCENARIOS, synthetic
from kubewire.policy.views import PolicyView

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: creates namespaces")

GATEWAY = "10.244.1.1"
PODS = {"x-a": "10.244.1.10", "y-a": "10.244.1.13", "z-a": "10.244.1.16"}


def nft_load(ns: str, ruleset: Ruleset) -> float:
    assert check_ruleset(ruleset) == []
    start = time.perf_counter()
    proc = subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"],
                          input=ruleset.transaction(), capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr[:2000]
    return time.perf_counter() - start


def nft_json(ns: str, *args: str) -> dict[str, object]:
    out = subprocess.run(["ip", "netns", "exec", ns, "nft", "-j", *args], capture_output=True,
                         text=True, check=True).stdout
    result: dict[str, object] = json.loads(out)
    return result


@contextlib.contextmanager
def namespaces(tag: str, *names_: str) -> Iterator[list[str]]:
    prefix = f"kwtest-pol-{tag}-{os.getpid() % 100000}"
    made: list[str] = []
    try:
        for name in names_:
            create_netns(f"{prefix}-{name}")
            made.append(f"{prefix}-{name}")
        yield made
    finally:
        for name in made:
            delete_netns(name)


def test_golden_scenarios_and_a_realistic_table_load_into_nft() -> None:
    policies, pods, spaces = synthetic(1000, 5000)
    big = compile_policy(policies, pods, spaces, PolicyNode("node-1"))
    assert sum(len(s.elements) for s in big.sets) > 10000
    assert sum(len(c.rules) for c in big.chains) > 2000
    with namespaces("load", "node") as (node,):
        for _, build in sorted(SCENARIOS.items()):
            nft_load(node, compile_policy(*build(), NODE))
        first = nft_load(node, big)
        again = nft_load(node, big)  # replaces the table in one transaction
        assert first < 10 and again < 10, (first, again)
        listed = nft_json(node, "list", "map", "ip", names.TABLE, names.INGRESS_ISOLATED)
        items = listed["nftables"]
        assert isinstance(items, list)
        kernel_map = items[1]["map"]
        assert len(kernel_map["elem"]) == len(big.set(names.INGRESS_ISOLATED).elements)


# ---------------------------------------------------------------- real packets


def _serve(ns: Path, stop: threading.Event, sockets: list[socket.socket]) -> None:
    with entered(ns):
        tcp = socket.socket()
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.bind(("0.0.0.0", 80))
        tcp.listen(64)
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("0.0.0.0", 80))
    for s in (tcp, udp):
        s.settimeout(0.2)
        sockets.append(s)

    def tcp_loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = tcp.accept()
            except OSError:
                continue
            with conn:
                conn.sendall(b"ok\n")

    def udp_loop() -> None:
        while not stop.is_set():
            try:
                data, peer = udp.recvfrom(512)
            except OSError:
                continue
            udp.sendto(b"ok " + data, peer)

    for loop in (tcp_loop, udp_loop):
        threading.Thread(target=loop, daemon=True).start()


def _tcp(ns: Path, ip: str) -> tuple[bool, float]:
    start = time.perf_counter()
    with entered(ns):
        s = socket.socket()
    s.settimeout(3)
    with s:
        try:
            s.connect((ip, 80))
            ok = s.recv(16) == b"ok\n"
        except ConnectionRefusedError:
            ok = False
    return ok, time.perf_counter() - start


def _udp(ns: Path, ip: str) -> tuple[bool, float]:
    start = time.perf_counter()
    with entered(ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(3)
    with s:
        s.connect((ip, 80))
        s.send(b"hi")
        try:
            ok = s.recv(64) == b"ok hi"
        except OSError as exc:  # ICMP admin-prohibited arrives as EHOSTUNREACH
            assert exc.errno in (errno.EHOSTUNREACH, errno.ECONNREFUSED), exc
            ok = False
    return ok, time.perf_counter() - start


def test_real_packets_are_allowed_and_denied_fast_as_the_oracle_says() -> None:
    step = next(c for c in load_cases() if c.name == "allow-from-namespace-by-label").steps[0]
    model = {p.key: p for p in step.pods() if p.node == "node-1"}
    assert {k: p.ip for k, p in model.items() if k != "kube-system/coredns"} == {
        k.replace("-", "/"): ip for k, ip in PODS.items()}
    ruleset = compile_policy(step.policies, step.pods(), step.namespaces(), NODE)
    views = [PolicyView.from_k8s(p) for p in step.policies]
    stop = threading.Event()
    sockets: list[socket.socket] = []
    with namespaces("pkt", "node", *PODS) as made:
        node, pod_ns = made[0], dict(zip(PODS, made[1:], strict=True))
        batch = ["link set lo up", "link add cni0 type bridge",
                 f"addr add {GATEWAY}/24 dev cni0", "link set cni0 up"]
        for i, ns in enumerate(pod_ns.values()):
            batch += [f"link add veth{i} type veth peer name eth0 netns {ns}",
                      f"link set veth{i} master cni0 up"]
        subprocess.run(["ip", "-n", node, "-batch", "-"], input="\n".join(batch), text=True,
                       check=True)
        for pod, ns in pod_ns.items():
            subprocess.run(["ip", "-n", ns, "-batch", "-"], text=True, check=True, input="\n".join(
                ["link set lo up", f"addr add {PODS[pod]}/24 dev eth0", "link set eth0 up",
                 f"route add default via {GATEWAY}"]))
        for key in ("net.ipv4.ip_forward", "net.bridge.bridge-nf-call-iptables"):
            subprocess.run(["ip", "netns", "exec", node, "sysctl", "-qw", f"{key}=1"],
                           check=True)
        try:
            _serve(Path("/run/netns") / pod_ns["x-a"], stop, sockets)
            nft_load(node, ruleset)
            for src in ("y-a", "z-a"):
                want = allowed(model[src.replace("-", "/")], model["x/a"], "TCP", 80, views,
                               step.namespaces()).allowed
                assert want == (src == "y-a")
                for probe in (_tcp, _udp):
                    ok, took = probe(Path("/run/netns") / pod_ns[src], PODS["x-a"])
                    assert ok == want, (src, probe.__name__)
                    assert took < 0.5, (src, probe.__name__, took)  # rejected, not timed out
        finally:
            stop.set()
            for s in sockets:
                s.close()
