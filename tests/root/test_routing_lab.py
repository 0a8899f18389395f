"""Routing backends against the real kernel: a small lab of node and pod namespaces.

Topology (a small copy of the lead's lab): an underlay namespace holding bridge br0; node
namespaces whose eth0 (172.18.0.N+1/16) is a veth into br0, with a cni0 bridge holding the
pod gateway 10.244.N.1/24 and ip_forward on; one pod per node on a veth into cni0.
Every object lives in namespaces named kwtest-rt-*, all deleted in `finally`.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pyroute2 import IPRoute

from kubewire.kernel.netns import create_netns, delete_netns, entered, list_netns
from kubewire.routing import (
    BACKENDS,
    Delta,
    DesiredNodeNetwork,
    KernelSupportError,
    Link,
    NodeInfo,
    SyncReport,
    pod_mtu,
)
from kubewire.routing.apply import read_node_network, sync_node_network

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: creates network namespaces"),
]

UNDERLAY_MTU = 1500
POD_MTU = pod_mtu("vxlan", UNDERLAY_MTU)  # fits both backends, so pods survive a switch
DEADLINE = 5.0
_IP_MTU_DISCOVER = 10
_IP_PMTUDISC_DO = 2

# Backends that program static routes; bgp leaves routing to its speaker.
STATIC_BACKENDS = sorted(name for name in BACKENDS if name != "bgp")


@dataclass
class Lab:
    prefix: str
    underlay: Path
    nodes: list[NodeInfo] = field(default_factory=list)
    node_ns: dict[str, Path] = field(default_factory=dict)
    pod_ns: dict[str, Path] = field(default_factory=dict)
    pod_ip: dict[str, str] = field(default_factory=dict)

    def netns_name(self, node: str) -> str:
        return self.node_ns[node].name


def _open(path: Path) -> Any:
    with entered(path):
        return IPRoute()


def _veth_into(ipr: Any, name: str, peer_name: str, peer_ns: Path, mtu: int) -> int:
    fd = os.open(peer_ns, os.O_RDONLY)
    try:
        ipr.link(
            "add",
            ifname=name,
            kind="veth",
            mtu=mtu,
            peer={"ifname": peer_name, "net_ns_fd": fd, "mtu": mtu},
        )
    finally:
        os.close(fd)
    index: int = ipr.link_lookup(ifname=name)[0]
    return index


def _up_with_address(ipr: Any, ifname: str, cidr: str) -> int:
    (index,) = ipr.link_lookup(ifname=ifname)
    address, prefixlen = cidr.split("/")
    ipr.addr("add", index=index, address=address, prefixlen=int(prefixlen))
    ipr.link("set", index=index, state="up")
    return int(index)


def _add_node(lab: Lab, ul: Any, i: int, with_pod: bool) -> None:
    name = f"node-{i}"
    node = NodeInfo.for_node(name, f"172.18.0.{i + 1}", f"10.244.{i}.0/24")
    path = create_netns(f"{lab.prefix}-n{i}")
    lab.node_ns[name] = path
    port = _veth_into(ul, f"n{i}", "eth0", path, UNDERLAY_MTU)
    ul.link("set", index=port, master=ul.link_lookup(ifname="br0")[0], state="up")
    with entered(path):
        Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")
    ipr = _open(path)
    try:
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        _up_with_address(ipr, "eth0", f"{node.underlay_ip}/16")
        ipr.link("add", ifname="cni0", kind="bridge", mtu=POD_MTU)
        _up_with_address(ipr, "cni0", f"10.244.{i}.1/24")
        if with_pod:
            pod_path = create_netns(f"{lab.prefix}-p{i}")
            lab.pod_ns[name] = pod_path
            lab.pod_ip[name] = f"10.244.{i}.2"
            host_end = _veth_into(ipr, f"veth{i}", "eth0", pod_path, POD_MTU)
            ipr.link("set", index=host_end, master=ipr.link_lookup(ifname="cni0")[0], state="up")
            pod_ipr = _open(pod_path)
            try:
                pod_ipr.link("set", index=pod_ipr.link_lookup(ifname="lo")[0], state="up")
                _up_with_address(pod_ipr, "eth0", f"{lab.pod_ip[name]}/24")
                pod_ipr.route("add", dst="0.0.0.0/0", gateway=f"10.244.{i}.1")
            finally:
                pod_ipr.close()
    finally:
        ipr.close()
    lab.nodes.append(node)


@contextlib.contextmanager
def build_lab(count: int, with_pods: bool = True) -> Iterator[Lab]:
    prefix = f"kwtest-rt-{os.getpid() % 0xFFFF:x}{count}"
    try:
        lab = Lab(prefix=prefix, underlay=create_netns(f"{prefix}-ul"))
        ul = _open(lab.underlay)
        try:
            ul.link("add", ifname="br0", kind="bridge")
            ul.link("set", index=ul.link_lookup(ifname="br0")[0], state="up")
            for i in range(1, count + 1):
                _add_node(lab, ul, i, with_pods)
        finally:
            ul.close()
        yield lab
    finally:
        for name in list_netns(prefix):
            delete_netns(name)
        assert list_netns(prefix) == []


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with build_lab(3) as built:
        yield built


# -- helpers ------------------------------------------------------------------------------


def sync_all(lab: Lab, backend: str, nodes: list[NodeInfo] | None = None) -> dict[str, SyncReport]:
    members = lab.nodes if nodes is None else nodes
    return {
        node.name: sync_node_network(
            lab.node_ns[node.name], BACKENDS[backend].compile(node, members, UNDERLAY_MTU)
        )
        for node in members
    }


def ip_json(lab: Lab, node: str, *args: str, tool: str = "ip") -> Any:
    out = subprocess.run(
        [tool, "-n", lab.netns_name(node), "-j", *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out) if out.strip() else []


def in_ns(path: Path, kind: socket.SocketKind) -> socket.socket:
    with entered(path):
        sock = socket.socket(socket.AF_INET, kind)
    sock.settimeout(DEADLINE)
    return sock


def tcp_exchange(lab: Lab, src: str, dst: str, port: int = 8080) -> str:
    """Connect from src's pod to dst's pod; return the peer address the server saw."""
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(in_ns(lab.pod_ns[dst], socket.SOCK_STREAM))
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # earlier TIME_WAITs
        server.bind((lab.pod_ip[dst], port))
        server.listen(1)
        client = stack.enter_context(in_ns(lab.pod_ns[src], socket.SOCK_STREAM))
        client.connect((lab.pod_ip[dst], port))
        conn, (peer, _) = server.accept()
        stack.enter_context(conn)
        conn.settimeout(DEADLINE)
        client.sendall(b"ping from " + src.encode())
        assert conn.recv(100) == b"ping from " + src.encode()
        conn.sendall(b"pong")
        assert client.recv(100) == b"pong"
        return str(peer)


def udp_exchange(lab: Lab, src: str, dst: str, size: int = 64, port: int = 5353) -> str:
    """Send until the dst pod answers (deadline, no sleeps); return the source it saw."""
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(in_ns(lab.pod_ns[dst], socket.SOCK_DGRAM))
        server.bind((lab.pod_ip[dst], port))
        server.settimeout(0.2)
        client = stack.enter_context(in_ns(lab.pod_ns[src], socket.SOCK_DGRAM))
        client.setsockopt(socket.IPPROTO_IP, _IP_MTU_DISCOVER, _IP_PMTUDISC_DO)  # DF set
        client.settimeout(0.2)
        payload = os.urandom(size)
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            client.sendto(payload, (lab.pod_ip[dst], port))
            try:
                data, (peer, peer_port) = server.recvfrom(65535)
            except TimeoutError:
                continue
            assert data == payload
            server.sendto(data[::-1], (peer, peer_port))
            with contextlib.suppress(TimeoutError):
                if client.recv(65535) == payload[::-1]:
                    return str(peer)
        pytest.fail(f"no UDP answer from {dst} to {src} within {DEADLINE}s")


def assert_all_pairs_connect(lab: Lab) -> None:
    names = [node.name for node in lab.nodes]
    for src in names:
        for dst in names:
            if src == dst:
                continue
            # The server sees the client pod's own address: no NAT on the path.
            assert tcp_exchange(lab, src, dst) == lab.pod_ip[src]
            assert udp_exchange(lab, src, dst) == lab.pod_ip[src]


def link_names(lab: Lab, node: str) -> set[str]:
    return {link["ifname"] for link in ip_json(lab, node, "link", "show")}


def owned_routes(lab: Lab, node: str) -> dict[str, dict[str, Any]]:
    return {r["dst"]: r for r in ip_json(lab, node, "route", "show", "proto", "75")}


# -- tests --------------------------------------------------------------------------------


def test_vxlan_pods_talk_across_nodes_without_nat(lab: Lab) -> None:
    reports = sync_all(lab, "vxlan")
    assert all(r.changes > 0 for r in reports.values())
    assert_all_pairs_connect(lab)

    (vtep,) = ip_json(lab, "node-1", "-d", "link", "show", "flannel.1")
    info = vtep["linkinfo"]["info_data"]
    assert vtep["mtu"] == 1450
    assert (info["id"], info["port"], info["learning"], info["local"]) == (
        1,
        8472,
        False,
        "172.18.0.2",
    )
    assert vtep["address"] == lab.nodes[0].vtep_mac
    addrs = ip_json(lab, "node-1", "-4", "addr", "show", "flannel.1")[0]["addr_info"]
    assert [(a["local"], a["prefixlen"]) for a in addrs] == [("10.244.1.0", 32)]
    routes = owned_routes(lab, "node-1")
    assert set(routes) == {"10.244.2.0/24", "10.244.3.0/24"}
    assert routes["10.244.2.0/24"]["gateway"] == "10.244.2.0"
    assert "onlink" in routes["10.244.2.0/24"]["flags"]
    fdb = ip_json(lab, "node-1", "fdb", "show", "dev", "flannel.1", tool="bridge")
    assert {(e["mac"], e["dst"]) for e in fdb} == {
        (n.vtep_mac, n.underlay_ip) for n in lab.nodes[1:]
    }

    # A full-size pod packet (1450 bytes, DF set) fits through the 1450-byte VTEP.
    assert udp_exchange(lab, "node-1", "node-2", size=POD_MTU - 28) == lab.pod_ip["node-1"]


def test_vxlan_resync_is_a_noop_and_matches_desired(lab: Lab) -> None:
    sync_all(lab, "vxlan")
    again = sync_all(lab, "vxlan")
    assert {name: r.changes for name, r in again.items()} == dict.fromkeys(again, 0)
    for node in lab.nodes:
        desired = BACKENDS["vxlan"].compile(node, lab.nodes, UNDERLAY_MTU)
        assert read_node_network(lab.node_ns[node.name]).as_desired() == desired


@pytest.mark.parametrize("backend", STATIC_BACKENDS)
def test_removed_node_is_forgotten(lab: Lab, backend: str) -> None:
    sync_all(lab, backend)
    gone = lab.nodes[2]
    remaining = lab.nodes[:2]
    try:
        reports = sync_all(lab, backend, remaining)
        for node in remaining:
            report = reports[node.name]
            assert report.routes == Delta(removed=1), report
            per_node = 3 if backend == "vxlan" else 1
            assert report.changes == per_node, report
            assert gone.pod_cidr not in owned_routes(lab, node.name)
            if backend == "vxlan":
                neigh = ip_json(lab, node.name, "neigh", "show", "dev", "flannel.1")
                assert gone.vtep_ip not in {n["dst"] for n in neigh}
                fdb = ip_json(lab, node.name, "fdb", "show", "dev", "flannel.1", tool="bridge")
                assert gone.vtep_mac not in {e["mac"] for e in fdb}
        # node-1 has no way to node-3's pods any more: the kernel answers unreachable.
        with pytest.raises(OSError):
            tcp_exchange(lab, "node-1", "node-3")
        again = sync_all(lab, backend, remaining)
        assert all(r.changes == 0 for r in again.values())
    finally:
        sync_all(lab, backend)
    assert_all_pairs_connect(lab)


def test_hostgw_pods_talk_across_nodes_without_nat(lab: Lab) -> None:
    sync_all(lab, "host-gw")
    assert_all_pairs_connect(lab)
    routes = owned_routes(lab, "node-2")
    assert {dst: r["gateway"] for dst, r in routes.items()} == {
        "10.244.1.0/24": "172.18.0.2",
        "10.244.3.0/24": "172.18.0.4",
    }
    assert {r["dev"] for r in routes.values()} == {"eth0"}
    assert all(r.changes == 0 for r in sync_all(lab, "host-gw").values())


def test_switching_backends_both_ways(lab: Lab) -> None:
    sync_all(lab, "vxlan")
    connected_before = ip_json(lab, "node-1", "route", "show", "proto", "kernel")

    reports = sync_all(lab, "host-gw")
    for report in reports.values():
        assert report.links == Delta(removed=1)
        assert report.routes == Delta(updated=2)
    for node in lab.nodes:
        assert "flannel.1" not in link_names(lab, node.name)
    assert_all_pairs_connect(lab)

    reports = sync_all(lab, "vxlan")
    for report in reports.values():
        assert report.links == Delta(added=1)
        assert (report.neighbours, report.fdb) == (Delta(added=2), Delta(added=2))
    assert_all_pairs_connect(lab)
    # Objects the routing package does not own were never touched.
    assert ip_json(lab, "node-1", "route", "show", "proto", "kernel") == connected_before


def run_in(lab: Lab, node: str, *commands: str) -> None:
    for cmd in commands:
        subprocess.run(["ip", "netns", "exec", lab.netns_name(node), *cmd.split()], check=True)


def test_drift_is_repaired(lab: Lab) -> None:
    sync_all(lab, "vxlan")
    run_in(
        lab,
        "node-1",
        "ip neigh del 10.244.2.0 dev flannel.1",
        # A MAC change also flushes the remaining (permanent) neighbour entry.
        "ip link set flannel.1 mtu 1400 address 0e:de:ad:00:00:01",
        f"bridge fdb del {lab.nodes[2].vtep_mac} dev flannel.1 dst {lab.nodes[2].underlay_ip}",
        "ip route del 10.244.3.0/24",
        "ip route add 10.244.99.0/24 dev eth0 proto 75",
    )
    report = sync_all(lab, "vxlan")["node-1"]
    assert report.links == Delta(updated=1)
    assert report.neighbours == Delta(added=2)
    assert report.fdb == Delta(added=1)
    assert report.routes == Delta(added=1, removed=1)
    again = sync_all(lab, "vxlan")
    assert {n: str(r) for n, r in again.items() if r.changes} == {}
    assert_all_pairs_connect(lab)


def test_downed_vtep_is_brought_back(lab: Lab) -> None:
    sync_all(lab, "vxlan")
    # Down flushes the routes and neighbours that depend on the device.
    run_in(lab, "node-2", "ip link set flannel.1 down")
    report = sync_all(lab, "vxlan")["node-2"]
    assert report.links == Delta(updated=1)
    assert report.routes == Delta(added=2)
    desired = BACKENDS["vxlan"].compile(lab.nodes[1], lab.nodes, UNDERLAY_MTU)
    assert read_node_network(lab.node_ns["node-2"]).as_desired() == desired
    assert_all_pairs_connect(lab)


@pytest.mark.parametrize("backend", STATIC_BACKENDS)
def test_one_node_in_a_600_node_cluster(lab: Lab, backend: str) -> None:
    """Batches larger than one datagram (256 messages) in both directions."""
    me = lab.nodes[0]
    ghosts = [
        NodeInfo.for_node(
            f"ghost-{i}",
            f"172.18.{1 + i // 250}.{i % 250 + 1}",
            f"10.{100 + i // 250}.{i % 250}.0/24",
        )
        for i in range(600)
    ]
    big = BACKENDS[backend].compile(me, [me, *ghosts], UNDERLAY_MTU)
    try:
        report = sync_node_network(lab.node_ns[me.name], big)
        assert report.routes.added == 600
        assert len(owned_routes(lab, me.name)) == 600
        if backend == "vxlan":
            assert report.fdb == report.neighbours == Delta(added=600)
            fdb = ip_json(lab, me.name, "fdb", "show", "dev", "flannel.1", tool="bridge")
            assert len(fdb) == 600
        assert read_node_network(lab.node_ns[me.name]).as_desired() == big
        assert sync_node_network(lab.node_ns[me.name], big).changes == 0
    finally:
        small = BACKENDS[backend].compile(me, lab.nodes, UNDERLAY_MTU)
        back = sync_node_network(lab.node_ns[me.name], small)
    assert back.routes.removed == 600
    assert set(owned_routes(lab, me.name)) == {n.pod_cidr for n in lab.nodes[1:]}


def _kernel_has(symbol: str) -> bool:
    try:
        with gzip.open("/proc/config.gz", "rt") as config:
            return any(line.startswith(f"{symbol}=") for line in config)
    except OSError:
        return True  # unknown: do not assume it is missing


def test_missing_kernel_support_is_a_clear_error(lab: Lab) -> None:
    if _kernel_has("CONFIG_NET_IPIP"):
        pytest.skip("this kernel has ipip; nothing to detect")
    desired = DesiredNodeNetwork(links=(Link("kwipip0", "ipip", 1480),))
    with pytest.raises(KernelSupportError) as info:
        sync_node_network(lab.node_ns["node-1"], desired)
    assert str(info.value).startswith("this kernel has no ipip support (CONFIG_NET_IPIP)")
    assert "kwipip0" not in link_names(lab, "node-1")


def test_sync_50_nodes_initial_and_incremental(capsys: pytest.CaptureFixture[str]) -> None:
    lines = []
    with build_lab(50, with_pods=False) as big:
        for backend in STATIC_BACKENDS:
            timings: dict[str, float] = {}
            started = time.perf_counter()
            first = sync_all(big, backend)
            timings["initial"] = time.perf_counter() - started
            assert all(r.routes.added + r.routes.updated == 49 for r in first.values())

            started = time.perf_counter()
            shrink = sync_all(big, backend, big.nodes[:-1])
            timings["remove 1 node"] = time.perf_counter() - started
            per_node = 3 if backend == "vxlan" else 1
            assert all(r.changes == per_node for r in shrink.values())

            started = time.perf_counter()
            grow = sync_all(big, backend)
            timings["add it back"] = time.perf_counter() - started
            last = big.nodes[-1].name
            assert all(r.changes == per_node for name, r in grow.items() if name != last)
            assert grow[last].changes == 0  # it was never told that it had left

            started = time.perf_counter()
            noop = sync_all(big, backend)
            timings["no-op resync"] = time.perf_counter() - started
            assert all(r.changes == 0 for r in noop.values())
            lines.append(
                f"{backend}: "
                + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in timings.items())
                + " (50 nodes, all syncs sequential)"
            )
    with capsys.disabled():
        print("\n" + "\n".join(lines))
