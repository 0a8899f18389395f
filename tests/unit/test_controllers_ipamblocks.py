"""controllers.ipamblocks: carving a pool into blocks, claiming the lowest free one, names
and objects for BlockAffinity, and when a node needs another block."""

from __future__ import annotations

from ipaddress import IPv4Network

import pytest

from kubewire.api.names import dns1123_subdomain_problems
from kubewire.controllers.errors import ControllerError
from kubewire.controllers.ipamblocks import (
    DEFAULT_BLOCK_SIZE,
    LAB_RESERVED_PER_BLOCK,
    InvalidPoolError,
    PoolExhaustedError,
    affinity_name,
    block_affinity_object,
    block_capacity,
    blocks_of,
    needs_new_block,
    next_free_block,
)

POOL = IPv4Network("10.244.0.0/24")


def net(s: str) -> IPv4Network:
    return IPv4Network(s)


def test_blocks_of_counts_indexes_and_iterates() -> None:
    blocks = blocks_of(POOL)
    assert len(blocks) == 4 and DEFAULT_BLOCK_SIZE == 26
    assert list(blocks) == [net(f"10.244.0.{i}/26") for i in (0, 64, 128, 192)]
    assert blocks[-1] == net("10.244.0.192/26") and blocks[1:3] == [blocks[1], blocks[2]]
    assert blocks.index(net("10.244.0.128/26")) == 2
    assert net("10.244.0.128/26") in blocks and net("10.244.0.128/25") not in blocks
    with pytest.raises(IndexError, match="outside pool"):
        blocks[4]
    with pytest.raises(ValueError, match="is not a /26 block"):
        blocks.index(net("10.245.0.0/26"))
    big = blocks_of("10.0.0.0/8", 26)
    assert len(big) == 262_144 and big[262_143] == net("10.255.255.192/26")  # not materialised
    assert len(blocks_of("10.0.0.0/16", 32)) == 65_536


@pytest.mark.parametrize(
    ("pool", "size", "message"),
    [
        ("10.244.0.0/24", 19, "blockSize 19 is outside 20..32"),
        ("10.244.0.0/24", 33, "blockSize 33 is outside 20..32"),
        ("10.244.0.0/28", 26, "smaller than one /26 block; use blockSize 28 or more"),
        ("10.244.0.1/24", 26, "not an IPv4 network"),
        ("fd00::/64", 26, "not an IPv4 network"),
    ],
)
def test_bad_pools_are_refused_with_the_fix(pool: str, size: int, message: str) -> None:
    with pytest.raises(InvalidPoolError, match=message) as info:
        blocks_of(pool, size)
    assert isinstance(info.value, ControllerError) and isinstance(info.value, ValueError)


def test_allocation_takes_the_lowest_free_block() -> None:
    claimed: dict[IPv4Network, str] = {}
    order = []
    for node in ("node-1", "node-2", "node-1", "node-3"):
        block = next_free_block(POOL, 26, claimed, node)
        claimed[block] = node
        order.append((node, str(block)))
    assert order == [
        ("node-1", "10.244.0.0/26"),
        ("node-2", "10.244.0.64/26"),
        ("node-1", "10.244.0.128/26"),
        ("node-3", "10.244.0.192/26"),
    ]
    # Same input, same answer: nothing random, nothing remembered between calls.
    claimed.pop(net("10.244.0.64/26"))
    assert next_free_block(POOL, 26, claimed, "node-4") == net("10.244.0.64/26")
    assert next_free_block(POOL, 26, claimed, "node-5") == net("10.244.0.64/26")


def test_released_blocks_are_reused_lowest_first() -> None:
    claimed = {b: "node-1" for b in blocks_of(POOL)}
    for freed in ("10.244.0.192/26", "10.244.0.64/26"):
        del claimed[net(freed)]
    assert next_free_block(POOL, 26, claimed, "node-2") == net("10.244.0.64/26")
    claimed[net("10.244.0.64/26")] = "node-2"
    assert next_free_block(POOL, 26, claimed, "node-2") == net("10.244.0.192/26")


def test_claims_elsewhere_or_of_another_size_are_accounted_for() -> None:
    claimed = {
        net("10.99.0.0/26"): "node-9",  # another pool: irrelevant
        net("10.244.0.0/25"): "node-1",  # made with blockSize 25: covers blocks 0 and 1
        net("10.244.0.130/32"): "node-2",  # a /32 inside block 2: the block is taken
    }
    assert next_free_block(POOL, 26, claimed, "node-3") == net("10.244.0.192/26")


def test_exhaustion_names_the_pool_the_owners_and_the_fix() -> None:
    claimed = {b: ("node-1" if i < 3 else "node-2") for i, b in enumerate(blocks_of(POOL))}
    with pytest.raises(PoolExhaustedError) as info:
        next_free_block(POOL, 26, claimed, "node-3")
    err = info.value
    assert isinstance(err, ControllerError)
    assert str(err) == (
        "IP pool 10.244.0.0/24 (blockSize 26) has 4 block(s) and all are claimed (node-1: 3, "
        "node-2: 1); node node-3 needs another one. Use a bigger pool CIDR (a prefix shorter "
        "than /24) or smaller blocks (a blockSize above 26, at most 32), or free blocks by "
        "removing nodes. kubewire does not borrow addresses from other nodes' blocks."
    )
    assert (err.count, err.owners, err.node) == (4, {"node-1": 3, "node-2": 1}, "node-3")


def test_affinity_names_follow_calico_and_are_valid() -> None:
    assert affinity_name("node-1", net("10.244.0.64/26")) == "node-1-10-244-0-64-26"
    assert affinity_name("kw-lab.node-2", net("10.244.1.0/26")) == "kw-lab.node-2-10-244-1-0-26"
    for block in blocks_of("10.244.0.0/22"):
        name = affinity_name("worker-07", block)
        assert dns1123_subdomain_problems(name) == []
    # A 253-character node name (the longest valid one) is cut, with a hash kept apart.
    long_a = ".".join(["a" * 63] * 3) + "." + "b" * 61
    long_b = long_a[:-1] + "c"
    assert dns1123_subdomain_problems(long_a) == []
    names = {affinity_name(n, net("10.244.0.64/26")) for n in (long_a, long_b)}
    assert len(names) == 2
    for name in names:
        assert len(name) <= 253 and dns1123_subdomain_problems(name) == []
        assert name.endswith("-10-244-0-64-26")
    with pytest.raises(ValueError, match="not a valid object name"):
        affinity_name("Node_1", net("10.244.0.64/26"))


def test_block_affinity_object() -> None:
    assert block_affinity_object("node-1", net("10.244.0.64/26")) == {
        "apiVersion": "crd.projectcalico.org/v1",
        "kind": "BlockAffinity",
        "metadata": {"name": "node-1-10-244-0-64-26"},
        "spec": {"state": "confirmed", "node": "node-1", "cidr": "10.244.0.64/26"},
    }


def test_needs_new_block_counts_usable_addresses() -> None:
    one = [net("10.244.0.0/26")]
    two = [*one, net("10.244.0.128/26")]
    assert LAB_RESERVED_PER_BLOCK == 3 and block_capacity(one[0]) == 61
    assert needs_new_block([], 0)  # a node without blocks must claim one first
    assert not needs_new_block(one, 0)
    assert not needs_new_block(one, 60)
    assert needs_new_block(one, 61)
    assert not needs_new_block(two, 61) and needs_new_block(two, 122)
    assert not needs_new_block(one, 63, reserved_per_block=0) and needs_new_block(one, 64, 0)
    assert block_capacity(net("10.244.0.0/32")) == 0
    with pytest.raises(ValueError, match="cannot be negative"):
        needs_new_block(one, -1)


def test_a_node_filling_up_claims_blocks_one_at_a_time() -> None:
    """The whole loop as the lab's IPAM controller runs it: 130 pods on one node."""
    claimed: dict[IPv4Network, str] = {next_free_block(POOL, 26, {}, "node-2"): "node-2"}
    mine: list[IPv4Network] = []
    for pod in range(130):
        if needs_new_block(mine, pod):
            block = next_free_block(POOL, 26, claimed, "node-1")
            claimed[block] = "node-1"
            mine.append(block)
    assert [str(b) for b in mine] == ["10.244.0.64/26", "10.244.0.128/26", "10.244.0.192/26"]
