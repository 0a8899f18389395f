"""A node's IPAM blocks: claimed through the store, one more when the pods would not fit."""

from __future__ import annotations

from ipaddress import IPv4Network
from pathlib import Path

import pytest

from kubewire.controllers.ipamblocks import block_affinity_object
from kubewire.lab.blockipam import BlockIpamError, NodeBlocks, default_pool
from kubewire.store.store import ObjectStore

POD_CIDR = IPv4Network("10.244.0.0/16")


def node_blocks(store: ObjectStore, tmp_path: Path, node: str = "node-1") -> NodeBlocks:
    return NodeBlocks(node, store, POD_CIDR, tmp_path / node)


def allocate(blocks: NodeBlocks, count: int) -> None:
    blocks.allocations_dir.mkdir(parents=True, exist_ok=True)
    (blocks.allocations_dir / "lock").touch()  # the plugin's own files are not addresses
    for i in range(count):
        (blocks.allocations_dir / f"10.244.{i // 200}.{i % 200 + 2}").touch()


def test_first_block_then_another_when_full(tmp_path: Path) -> None:
    store = ObjectStore()
    store.put(default_pool(POD_CIDR))
    blocks = node_blocks(store, tmp_path)
    assert blocks.ensure(0) is True
    assert blocks.mine() == [IPv4Network("10.244.0.0/26")]
    allocate(blocks, 60)
    assert blocks.ensure(0) is False  # 60 of 61 in use: the next pod fits
    assert blocks.ensure(1) is True  # one pod already on its way takes the last address
    assert blocks.mine() == [IPv4Network("10.244.0.0/26"), IPv4Network("10.244.0.64/26")]


def test_a_block_another_node_won_is_skipped(tmp_path: Path) -> None:
    store = ObjectStore()
    store.put(default_pool(POD_CIDR))
    store.create(block_affinity_object("node-2", IPv4Network("10.244.0.0/26")))
    blocks = node_blocks(store, tmp_path)
    blocks.ensure(0)
    assert blocks.mine() == [IPv4Network("10.244.0.64/26")]


def test_no_pool_inside_the_pod_cidr_is_a_clear_error(tmp_path: Path) -> None:
    store = ObjectStore()
    outside = default_pool(IPv4Network("192.168.0.0/16"))
    store.put(outside)
    with pytest.raises(BlockIpamError, match="no enabled IPPool inside the pod CIDR"):
        node_blocks(store, tmp_path).ensure(0)
