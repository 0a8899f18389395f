"""Golden tests for the pure routing compilers (no kernel, no root)."""

from __future__ import annotations

import difflib
import subprocess
import sys
from ipaddress import IPv4Address, IPv4Network

import pytest

from kubewire.routing import (
    BACKENDS,
    DesiredNodeNetwork,
    FdbEntry,
    InvalidNodesError,
    Link,
    Neighbour,
    NodeInfo,
    Route,
    RoutingError,
    UnknownBackendError,
    get_backend,
    pod_mtu,
    vtep_mac_for,
)

NODES = (
    NodeInfo("node-a", "172.18.0.2", "10.244.1.0/24", "0e:00:00:00:00:0a"),
    NodeInfo("node-b", "172.18.0.3", "10.244.2.0/24", "0e:00:00:00:00:0b"),
    NodeInfo("node-c", "172.18.0.4", "10.244.10.0/24", "0e:00:00:00:00:0c"),
)

# Backends that program static routes; bgp leaves routing to its speaker.
STATIC_BACKENDS = sorted(name for name in BACKENDS if name != "bgp")


def assert_lines(actual: list[str], expected: str) -> None:
    want = expected.strip().splitlines()
    if actual != want:
        diff = "\n".join(difflib.unified_diff(want, actual, "expected", "actual", lineterm=""))
        pytest.fail(f"compiled state differs from golden:\n{diff}")


def test_vxlan_three_nodes_golden() -> None:
    desired = BACKENDS["vxlan"].compile(NODES[0], NODES, 1500)
    assert desired == DesiredNodeNetwork(
        links=(
            Link(
                name="flannel.1",
                kind="vxlan",
                mtu=1450,
                attrs=(
                    ("dev", "eth0"),
                    ("dstport", 8472),
                    ("learning", False),
                    ("local", "172.18.0.2"),
                    ("vni", 1),
                ),
                mac="0e:00:00:00:00:0a",
                addresses=("10.244.1.0/32",),
            ),
        ),
        routes=(
            Route("10.244.2.0/24", "10.244.2.0", "flannel.1", onlink=True),
            Route("10.244.10.0/24", "10.244.10.0", "flannel.1", onlink=True),
        ),
        neighbours=(
            Neighbour("10.244.2.0", "0e:00:00:00:00:0b", "flannel.1"),
            Neighbour("10.244.10.0", "0e:00:00:00:00:0c", "flannel.1"),
        ),
        fdb=(
            FdbEntry("0e:00:00:00:00:0b", "172.18.0.3", "flannel.1"),
            FdbEntry("0e:00:00:00:00:0c", "172.18.0.4", "flannel.1"),
        ),
    )
    assert_lines(
        desired.to_commands(),
        """
ip link add flannel.1 type vxlan id 1 local 172.18.0.2 dev eth0 dstport 8472 nolearning
ip link set flannel.1 mtu 1450 address 0e:00:00:00:00:0a up
ip addr add 10.244.1.0/32 dev flannel.1
ip neigh replace 10.244.2.0 lladdr 0e:00:00:00:00:0b dev flannel.1 nud permanent
ip neigh replace 10.244.10.0 lladdr 0e:00:00:00:00:0c dev flannel.1 nud permanent
bridge fdb append 0e:00:00:00:00:0b dev flannel.1 dst 172.18.0.3
bridge fdb append 0e:00:00:00:00:0c dev flannel.1 dst 172.18.0.4
ip route replace 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink proto 75
ip route replace 10.244.10.0/24 via 10.244.10.0 dev flannel.1 onlink proto 75
""",
    )


def test_hostgw_three_nodes_golden() -> None:
    desired = BACKENDS["host-gw"].compile(NODES[1], NODES, 1500)
    assert desired == DesiredNodeNetwork(
        routes=(
            Route("10.244.1.0/24", "172.18.0.2", "eth0"),
            Route("10.244.10.0/24", "172.18.0.4", "eth0"),
        )
    )
    assert_lines(
        desired.to_commands(),
        """
ip route replace 10.244.1.0/24 via 172.18.0.2 dev eth0 proto 75
ip route replace 10.244.10.0/24 via 172.18.0.4 dev eth0 proto 75
""",
    )


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_compile_is_deterministic_and_order_independent(name: str) -> None:
    backend = BACKENDS[name]
    forward = backend.compile(NODES[2], NODES, 1500)
    backward = backend.compile(NODES[2], tuple(reversed(NODES)), 1500)
    assert forward == backward
    assert forward == backend.compile(NODES[2], NODES, 1500)


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_single_node_cluster_needs_no_routes(name: str) -> None:
    desired = BACKENDS[name].compile(NODES[0], NODES[:1], 1500)
    assert (desired.routes, desired.neighbours, desired.fdb) == ((), (), ())


@pytest.mark.parametrize("name", STATIC_BACKENDS)
def test_leaving_node_may_be_absent_from_the_list(name: str) -> None:
    desired = BACKENDS[name].compile(NODES[0], NODES[1:], 1500)
    assert [r.dst for r in desired.routes] == ["10.244.2.0/24", "10.244.10.0/24"]


def test_registry_and_mtu() -> None:
    assert set(BACKENDS) == {"vxlan", "host-gw", "bgp"}
    assert BACKENDS["bgp"].mtu_overhead == 0
    assert BACKENDS["vxlan"].mtu_overhead == 50
    assert BACKENDS["host-gw"].mtu_overhead == 0
    assert pod_mtu("vxlan", 1500) == 1450
    assert pod_mtu(BACKENDS["host-gw"], 1500) == 1500
    assert pod_mtu("vxlan", 9000) == 8950
    vtep = BACKENDS["vxlan"].compile(NODES[0], NODES, 9000).links[0]
    assert vtep.mtu == pod_mtu("vxlan", 9000)


def test_unknown_backend_lists_choices() -> None:
    with pytest.raises(UnknownBackendError) as info:
        get_backend("ipip")
    assert str(info.value) == "unknown routing backend 'ipip'; choose one of: bgp, host-gw, vxlan"
    assert isinstance(info.value, RoutingError)
    with pytest.raises(UnknownBackendError):
        pod_mtu("calico", 1500)


def test_vtep_mac_is_stable_local_unicast_and_distinct() -> None:
    macs = {vtep_mac_for(f"node-{i}") for i in range(2000)}
    assert len(macs) == 2000
    for mac in macs:
        first = int(mac.split(":")[0], 16)
        assert first & 0x02, mac  # locally administered
        assert not first & 0x01, mac  # unicast
    assert vtep_mac_for("kind-worker") == vtep_mac_for("kind-worker")
    node = NodeInfo.for_node("kind-worker", "172.18.0.5", "10.244.5.0/24")
    assert node.vtep_mac == vtep_mac_for("kind-worker")
    assert node.vtep_ip == "10.244.5.0"


def test_nodeinfo_normalises_and_validates() -> None:
    node = NodeInfo("n", "172.18.0.2", "10.244.1.0/24", "0E:AA:00:00:00:01")
    assert node.vtep_mac == "0e:aa:00:00:00:01"
    with pytest.raises(InvalidNodesError, match="not a network address"):
        NodeInfo("n", "172.18.0.2", "10.244.1.1/24", "0e:00:00:00:00:01")
    with pytest.raises(InvalidNodesError, match="not an IP address"):
        NodeInfo("n", "node-a.example", "10.244.1.0/24", "0e:00:00:00:00:01")
    with pytest.raises(InvalidNodesError, match="IPv4 only"):
        NodeInfo("n", "fd00::2", "10.244.1.0/24", "0e:00:00:00:00:01")
    with pytest.raises(InvalidNodesError, match="MAC"):
        NodeInfo("n", "172.18.0.2", "10.244.1.0/24", "0e:00:00:00:01")


@pytest.mark.parametrize(
    ("other", "message"),
    [
        (NodeInfo("x", "172.18.0.9", "10.244.1.128/25", "0e:00:00:00:00:99"), "overlap"),
        (NodeInfo("x", "172.18.0.2", "10.244.9.0/24", "0e:00:00:00:00:99"), "underlay_ip"),
        (NodeInfo("x", "172.18.0.9", "10.244.9.0/24", "0e:00:00:00:00:0b"), "vtep_mac"),
        (NodeInfo("node-b", "172.18.0.9", "10.244.9.0/24", "0e:00:00:00:00:99"), "twice"),
    ],
)
@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_inconsistent_node_lists_are_rejected(name: str, other: NodeInfo, message: str) -> None:
    with pytest.raises(InvalidNodesError, match=message):
        BACKENDS[name].compile(NODES[0], (*NODES, other), 1500)


def test_tiny_mtu_is_rejected() -> None:
    with pytest.raises(RoutingError, match="too small"):
        BACKENDS["vxlan"].compile(NODES[0], NODES, 600)


def test_for_node_accepts_ipaddress_objects() -> None:
    node = NodeInfo.for_node("n1", IPv4Address("172.18.0.2"), IPv4Network("10.244.1.0/24"))
    assert (node.underlay_ip, node.pod_cidr) == ("172.18.0.2", "10.244.1.0/24")
    assert node.vtep_mac == vtep_mac_for("n1")
    published = NodeInfo.for_node("n1", "172.18.0.2", "10.244.1.0/24", "0e:00:00:00:00:01")
    assert published.vtep_mac == "0e:00:00:00:00:01"


def test_importing_the_compilers_does_not_load_the_applier() -> None:
    code = (
        "import sys, kubewire.routing as r; "
        "assert 'kubewire.routing.apply' not in sys.modules; "
        "from kubewire.routing import sync_node_network; "
        "assert sync_node_network.__module__ == 'kubewire.routing.apply'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_bgp_backend_programs_nothing_static() -> None:
    """Its routes come from the node's BGP speaker; compiling it removes vxlan/host-gw state."""
    desired = BACKENDS["bgp"].compile(NODES[0], NODES, 1500)
    assert desired == DesiredNodeNetwork()
    with pytest.raises(RoutingError, match="too small"):
        BACKENDS["bgp"].compile(NODES[0], NODES, 500)
