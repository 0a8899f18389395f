"""Calico-style IPAM blocks for one node: claim a block, and another when it fills.

In a bgp lab a node does not use the pod CIDR the control plane gives it. It takes
address blocks (/26 by default) from an IPPool, as Calico's IPAM plugin does: the first pod
claims the node's first block, and a pod that would find every address of the node's
blocks in use first claims one more. A claim is `create` of a BlockAffinity object named
after node and block, so two nodes racing for one block cannot both win (Calico's
compare-and-swap on its datastore). The node agent then rewrites the node's CNI config
with every block as a range of one range set (host-local semantics: the plugin takes the
first range with a free address), and the BGP agent announces each block.

Not done, and said so: borrowing an address from another node's block when the pool has
no free block left (Calico's strictAffinity: false), and releasing empty blocks.
"""

from __future__ import annotations

import logging
from ipaddress import IPv4Network, ip_address
from pathlib import Path
from typing import Any

from kubewire.controllers.ipamblocks import (
    LAB_RESERVED_PER_BLOCK,
    block_affinity_object,
    needs_new_block,
    next_free_block,
)
from kubewire.store.store import Conflict, StoreClient

log = logging.getLogger(__name__)

DEFAULT_POOL_NAME = "default-ipv4-ippool"
DEFAULT_BLOCK_SIZE = 26


class BlockIpamError(Exception):
    """The node cannot get an address block (no usable IPPool, or the pool is full)."""


def default_pool(pod_cidr: IPv4Network) -> dict[str, Any]:
    """The IPPool a bgp lab starts with, as Calico's installer creates it from
    CALICO_IPV4POOL_CIDR: the whole pod CIDR, /26 blocks, NAT for traffic leaving it."""
    return {"apiVersion": "projectcalico.org/v3", "kind": "IPPool",
            "metadata": {"name": DEFAULT_POOL_NAME},
            "spec": {"cidr": str(pod_cidr), "blockSize": DEFAULT_BLOCK_SIZE,
                     "natOutgoing": True, "nodeSelector": "all()"}}


class NodeBlocks:
    def __init__(self, node: str, client: StoreClient, pod_cidr: IPv4Network,
                 allocations_dir: Path) -> None:
        self.node = node
        self.client = client
        self.pod_cidr = pod_cidr
        self.allocations_dir = allocations_dir  # the IPAM plugin's per-network directory

    def pool(self) -> tuple[IPv4Network, int]:
        """The first enabled IPPool (by name) inside the cluster's pod CIDR."""
        for obj in self.client.list("IPPool"):
            spec = obj.get("spec", {})
            cidr = IPv4Network(spec["cidr"])
            if not spec.get("disabled") and cidr.subnet_of(self.pod_cidr):
                return cidr, int(spec.get("blockSize", DEFAULT_BLOCK_SIZE))
        raise BlockIpamError(
            f"node {self.node}: no enabled IPPool inside the pod CIDR {self.pod_cidr}; apply "
            "one (projectcalico.org/v3 IPPool with spec.cidr inside the Cluster's podCIDR)")

    def mine(self) -> list[IPv4Network]:
        return sorted(IPv4Network(a["spec"]["cidr"]) for a in self.client.list(
            "BlockAffinity", where=lambda a: a.get("spec", {}).get("node") == self.node))

    def in_use(self) -> int:
        """Addresses the IPAM plugin has handed out on this node (one file each)."""
        if not self.allocations_dir.is_dir():
            return 0
        count = 0
        for entry in self.allocations_dir.iterdir():
            try:
                ip_address(entry.name)
            except ValueError:
                continue  # the lock and last_reserved_ip files
            count += 1
        return count

    def claim(self) -> IPv4Network:
        cidr, size = self.pool()
        while True:
            claimed = {IPv4Network(a["spec"]["cidr"]): a["spec"]["node"]
                       for a in self.client.list("BlockAffinity")}
            block = next_free_block(cidr, size, claimed, self.node)
            try:
                self.client.create(block_affinity_object(self.node, block))
            except Conflict:
                continue  # another node won that block: take the next free one
            log.info("node %s claimed IPAM block %s", self.node, block)
            return block

    def ensure(self, starting: int) -> bool:
        """Before a pod's CNI ADD: claim a block if the node has none, or if its blocks are
        full once the `starting` pods already on their way get theirs. True if the node's
        blocks changed."""
        blocks = self.mine()
        if blocks and not needs_new_block(blocks, self.in_use() + starting,
                                         LAB_RESERVED_PER_BLOCK):
            return False
        self.claim()
        return True
