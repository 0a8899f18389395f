"""Node objects and node IPAM (pod CIDRs, underlay addresses)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest

from kubewire.controllers import (
    DuplicateNodeName,
    NodeSpec,
    PodCidrExhausted,
    UnderlayExhausted,
    allocate_pod_cidrs,
    allocate_underlay_addresses,
    build_node,
    build_nodes,
)
from kubewire.controllers.nodes import internal_ip_of, pod_cidr_of

POD_CIDR = IPv4Network("10.244.0.0/16")
UNDERLAY = IPv4Network("172.18.0.0/24")


def net(text: str) -> IPv4Network:
    return IPv4Network(text)


def test_first_allocation_is_lowest_first_in_name_order() -> None:
    result = allocate_pod_cidrs(POD_CIDR, 24, ["c", "a", "b"], {})
    assert list(result) == ["a", "b", "c"]
    assert result == {
        "a": net("10.244.0.0/24"),
        "b": net("10.244.1.0/24"),
        "c": net("10.244.2.0/24"),
    }


def test_allocation_ignores_input_order() -> None:
    assert allocate_pod_cidrs(POD_CIDR, 24, ["b", "a"], {}) == allocate_pod_cidrs(
        POD_CIDR, 24, ["a", "b"], {}
    )


@pytest.mark.parametrize(
    ("names", "existing", "expected"),
    [
        # Adding a node that sorts first must not move the others.
        (
            ["a", "b", "c"],
            {"b": net("10.244.0.0/24"), "c": net("10.244.1.0/24")},
            {"a": "10.244.2.0/24", "b": "10.244.0.0/24", "c": "10.244.1.0/24"},
        ),
        # Removing a node frees its range; survivors keep theirs; a newcomer takes the hole.
        (
            ["a", "c", "d"],
            {"a": net("10.244.0.0/24"), "b": net("10.244.1.0/24"), "c": net("10.244.2.0/24")},
            {"a": "10.244.0.0/24", "c": "10.244.2.0/24", "d": "10.244.1.0/24"},
        ),
        # Existing ranges outside the pod CIDR or of the wrong size are reallocated.
        (
            ["a", "b"],
            {"a": net("10.99.0.0/24"), "b": net("10.244.4.0/23")},
            {"a": "10.244.0.0/24", "b": "10.244.1.0/24"},
        ),
        # Two nodes claiming one range: the first by name keeps it.
        (
            ["a", "b"],
            {"a": net("10.244.7.0/24"), "b": net("10.244.7.0/24")},
            {"a": "10.244.7.0/24", "b": "10.244.0.0/24"},
        ),
    ],
)
def test_existing_allocations_stay_stable(
    names: list[str], existing: dict[str, IPv4Network], expected: dict[str, str]
) -> None:
    result = allocate_pod_cidrs(POD_CIDR, 24, names, existing)
    assert {name: str(cidr) for name, cidr in result.items()} == expected


def test_add_and_remove_sequence_never_moves_a_surviving_node() -> None:
    current = allocate_pod_cidrs(POD_CIDR, 24, [f"n{i}" for i in range(10)], {})
    for step in range(20):
        names = [n for n in current if n != f"n{step}"] + [f"m{step}"]
        following = allocate_pod_cidrs(POD_CIDR, 24, names, current)
        for name in names:
            if name in current:
                assert following[name] == current[name]
        assert len(set(following.values())) == len(following)
        current = following


def test_pod_cidr_exhaustion_names_the_problem_and_the_fix() -> None:
    assert len(allocate_pod_cidrs(net("10.0.0.0/24"), 26, ["a", "b", "c", "d"], {})) == 4
    with pytest.raises(PodCidrExhausted) as caught:
        allocate_pod_cidrs(net("10.0.0.0/24"), 26, ["a", "b", "c", "d", "e", "f"], {})
    error = caught.value
    assert error.capacity == 4
    assert error.unserved == ("e", "f")
    message = str(error)
    assert "10.0.0.0/24 holds only 4 per-node /26 range(s)" in message
    assert "2 node(s) got none (e, f)" in message
    assert "shorter than /24" in message
    assert "longer than /26" in message


@pytest.mark.parametrize("mask_size", [15, 33])
def test_mask_size_outside_the_pod_cidr_is_rejected(mask_size: int) -> None:
    with pytest.raises(ValueError, match="mask size"):
        allocate_pod_cidrs(POD_CIDR, mask_size, ["a"], {})


def test_mask_size_equal_to_the_pod_cidr_gives_one_range() -> None:
    assert allocate_pod_cidrs(POD_CIDR, 16, ["a"], {}) == {"a": POD_CIDR}
    with pytest.raises(PodCidrExhausted):
        allocate_pod_cidrs(POD_CIDR, 16, ["a", "b"], {})


def test_underlay_skips_network_gateway_and_broadcast() -> None:
    result = allocate_underlay_addresses(net("192.168.0.0/29"), ["a", "b", "c", "d", "e"], {})
    assert [str(a) for a in result.values()] == [
        "192.168.0.2",
        "192.168.0.3",
        "192.168.0.4",
        "192.168.0.5",
        "192.168.0.6",
    ]
    with pytest.raises(UnderlayExhausted) as caught:
        allocate_underlay_addresses(net("192.168.0.0/29"), list("abcdef"), {})
    assert caught.value.capacity == 5
    assert caught.value.unserved == ("f",)
    assert "192.168.0.0/29 has only 5 node address(es)" in str(caught.value)


def test_underlay_keeps_existing_and_reclaims_reserved_addresses() -> None:
    existing = {
        "a": IPv4Address("172.18.0.9"),
        "b": IPv4Address("172.18.0.1"),  # the lab's own address: never a node's
        "c": IPv4Address("10.0.0.5"),  # outside the underlay
        "gone": IPv4Address("172.18.0.2"),
    }
    result = allocate_underlay_addresses(UNDERLAY, ["a", "b", "c"], existing)
    assert {n: str(a) for n, a in result.items()} == {
        "a": "172.18.0.9",
        "b": "172.18.0.2",
        "c": "172.18.0.3",
    }


def test_build_node_shape() -> None:
    node = build_node(
        "node-1",
        {"zone": "a", "kubernetes.io/hostname": "spoofed"},
        net("10.244.3.0/24"),
        IPv4Address("172.18.0.5"),
    )
    assert node["apiVersion"] == "v1"
    assert node["kind"] == "Node"
    assert node["metadata"]["name"] == "node-1"
    assert node["metadata"]["labels"] == {
        "kubernetes.io/hostname": "node-1",
        "kubernetes.io/os": "linux",
        "zone": "a",
    }
    assert node["spec"] == {"podCIDR": "10.244.3.0/24", "podCIDRs": ["10.244.3.0/24"]}
    assert node["status"]["addresses"] == [
        {"type": "InternalIP", "address": "172.18.0.5"},
        {"type": "Hostname", "address": "node-1"},
    ]
    ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
    assert ready and ready[0]["status"] == "True"
    assert pod_cidr_of(node) == net("10.244.3.0/24")
    assert internal_ip_of(node) == IPv4Address("172.18.0.5")


def test_build_nodes_is_deterministic_and_keeps_allocations_of_existing_nodes() -> None:
    specs = [NodeSpec("worker-2", {"zone": "b"}), NodeSpec("worker-1"), NodeSpec("cp")]
    first = build_nodes(specs, pod_cidr=POD_CIDR, underlay_cidr=UNDERLAY)
    assert [n["metadata"]["name"] for n in first] == ["cp", "worker-1", "worker-2"]
    assert first == build_nodes(list(reversed(specs)), pod_cidr=POD_CIDR, underlay_cidr=UNDERLAY)
    assert first[2]["metadata"]["labels"]["zone"] == "b"
    assert len({n["metadata"]["uid"] for n in first}) == 3

    grown = build_nodes(
        [*specs, NodeSpec("a-first")],
        pod_cidr=POD_CIDR,
        underlay_cidr=UNDERLAY,
        existing_nodes=first,
    )
    before = {n["metadata"]["name"]: n for n in first}
    for node in grown:
        name = node["metadata"]["name"]
        if name in before:
            assert node == before[name]
    newcomer = next(n for n in grown if n["metadata"]["name"] == "a-first")
    assert newcomer["spec"]["podCIDR"] == "10.244.3.0/24"
    assert internal_ip_of(newcomer) == IPv4Address("172.18.0.5")


def test_build_nodes_rejects_duplicate_names() -> None:
    with pytest.raises(DuplicateNodeName, match="'n1' is declared more than once"):
        build_nodes([NodeSpec("n1"), NodeSpec("n1")], pod_cidr=POD_CIDR, underlay_cidr=UNDERLAY)


@pytest.mark.parametrize(
    "node",
    [
        {},
        {"spec": {"podCIDR": "not-a-cidr"}},
        {"spec": {"podCIDR": "10.0.0.1/24"}},
        {"spec": {"podCIDR": "fd00::/64"}},
    ],
)
def test_malformed_pod_cidr_reads_as_none(node: dict[str, object]) -> None:
    assert pod_cidr_of(node) is None
