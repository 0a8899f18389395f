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


def test_underlay_skips_the_reserved_load_balancer_pool() -> None:
    pool = net("192.168.0.4/30")  # .4-.7
    result = allocate_underlay_addresses(
        net("192.168.0.0/28"), [f"n{i}" for i in range(9)], {}, reserved=[pool]
    )
    assert [str(a) for a in result.values()] == [
        "192.168.0.2",
        "192.168.0.3",
        *(f"192.168.0.{i}" for i in range(8, 15)),
    ]
    assert not any(address in pool for address in result.values())
    # 13 addresses for nodes in a /28, less the 4 of the pool.
    with pytest.raises(UnderlayExhausted) as caught:
        allocate_underlay_addresses(
            net("192.168.0.0/28"), [f"n{i}" for i in range(10)], {}, reserved=[pool]
        )
    assert caught.value.capacity == 9
    assert caught.value.unserved == ("n9",)


def test_underlay_reserved_ranges_may_overlap_touch_or_lie_outside() -> None:
    reserved = [
        net("192.168.0.8/30"),  # .8-.11
        net("192.168.0.10/31"),  # inside the first
        net("192.168.0.12/31"),  # touches it: .8-.13 is one hole
        net("192.168.0.0/31"),  # the lab's own addresses anyway
        net("10.0.0.0/8"),  # outside the underlay
    ]
    result = allocate_underlay_addresses(
        net("192.168.0.0/28"), list("abcdefg"), {}, reserved=reserved
    )
    assert [str(a) for a in result.values()] == [
        "192.168.0.2",
        "192.168.0.3",
        "192.168.0.4",
        "192.168.0.5",
        "192.168.0.6",
        "192.168.0.7",
        "192.168.0.14",
    ]


def test_underlay_capacity_counts_reserved_holes_once() -> None:
    reserved = [net("192.168.0.8/30"), net("192.168.0.10/31"), net("192.168.0.12/31")]
    with pytest.raises(UnderlayExhausted) as caught:
        allocate_underlay_addresses(net("192.168.0.0/28"), list("abcdefgh"), {}, reserved=reserved)
    assert caught.value.capacity == 7  # .2-.7 and .14
    assert caught.value.unserved == ("h",)


def test_underlay_moves_existing_nodes_out_of_the_pool_and_keeps_the_others() -> None:
    pool = net("172.18.0.128/25")
    existing = {
        "a": IPv4Address("172.18.0.130"),  # inside the pool: must move
        "b": IPv4Address("172.18.0.7"),
        "c": IPv4Address("172.18.0.127"),  # just below the pool: kept
    }
    result = allocate_underlay_addresses(UNDERLAY, ["a", "b", "c"], existing, reserved=[pool])
    assert {n: str(a) for n, a in result.items()} == {
        "a": "172.18.0.2",
        "b": "172.18.0.7",
        "c": "172.18.0.127",
    }


def test_build_nodes_never_hands_out_a_load_balancer_address() -> None:
    pool = net("172.18.0.0/26")
    # Without the pool the lowest addresses go first; with it, nodes start above it.
    specs = [NodeSpec(f"n{i}") for i in range(3)]
    nodes = build_nodes(specs, pod_cidr=POD_CIDR, underlay_cidr=UNDERLAY, reserved=[pool])
    assert [str(internal_ip_of(n)) for n in nodes] == ["172.18.0.64", "172.18.0.65", "172.18.0.66"]
    assert build_nodes(specs, pod_cidr=POD_CIDR, underlay_cidr=UNDERLAY, reserved=()) == (
        build_nodes(specs, pod_cidr=POD_CIDR, underlay_cidr=UNDERLAY)
    )


@pytest.mark.parametrize(
    ("underlay", "pool"),
    [
        ("192.168.0.0/28", "192.168.0.12/30"),  # the default pool for a /28
        ("192.168.0.0/28", "192.168.0.4/30"),
        ("192.168.0.0/28", "192.168.0.2/31"),
        ("192.168.0.0/27", "192.168.0.16/28"),
        ("192.168.0.0/27", "192.168.0.30/32"),
        ("192.168.0.0/27", None),
    ],
)
def test_cluster_capacity_check_agrees_with_the_allocator(underlay: str, pool: str | None) -> None:
    """ClusterSpec refuses exactly the node counts the allocator cannot serve."""
    from kubewire.api.cluster import ClusterSpec, ClusterSpecError
    from kubewire.api.cluster import NodeSpec as ClusterNode

    underlay_cidr = net(underlay)
    pool_cidr = None if pool is None else net(pool)
    reserved = [] if pool_cidr is None else [pool_cidr]

    def spec(count: int) -> ClusterSpec:
        return ClusterSpec(
            nodes=tuple(ClusterNode(f"n{i:02}") for i in range(count)),
            underlay_cidr=underlay_cidr,
            load_balancer_cidr=pool_cidr,
        )

    capacity = 0
    while True:
        try:
            allocate_underlay_addresses(
                underlay_cidr, [f"n{i:02}" for i in range(capacity + 1)], {}, reserved=reserved
            )
        except UnderlayExhausted:
            break
        capacity += 1
    assert spec(capacity).reserved_underlay == tuple(reserved)
    with pytest.raises(ClusterSpecError, match=f"has room for {capacity} node addresses"):
        spec(capacity + 1)
