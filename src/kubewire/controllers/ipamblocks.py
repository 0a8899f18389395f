"""Calico-style pod IPAM blocks: an IP pool carved into fixed-size blocks, each claimed by
one node (block affinity), pod addresses handed out from the node's own blocks.

Calico's model, which this follows: an IPPool (`cidr`, `blockSize`, default 26 for IPv4)
is split into 2^(blockSize - pool prefix) blocks. A node that needs addresses claims a
free block by creating a BlockAffinity object (`<node>-<cidr with . and / as ->`, spec
`{state: confirmed, node, cidr}`) and allocates pod IPs from it; when all its blocks are
full it claims another. Every block of a node is one route for the rest of the cluster
(a /26 announced over BGP), which is the point of blocks: routes scale with blocks, not
pods.

Deliberate differences:
- Calico does not promise which free block a node gets; here it is always the
  lowest-numbered free block, so a lab's layout is reproducible.
- **No borrowing.** When the pool has no free block, Calico (unless strict affinity is
  set) lets a node take single addresses from another node's block, which then needs a
  /32 route of its own. kubewire does not: `next_free_block` raises `PoolExhaustedError`
  and the pod gets no address until a block is freed or the pool grows.

Pure: no I/O, no clock, no randomness. The lab's IPAM controller keeps the claims (the
BlockAffinity objects in the store) and calls these functions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network
from typing import Any, overload

from kubewire.api.names import DNS1123_SUBDOMAIN_MAX_LENGTH, dns1123_subdomain_problems
from kubewire.controllers.errors import ControllerError

__all__ = [
    "API_VERSION",
    "DEFAULT_BLOCK_SIZE",
    "KIND",
    "LAB_RESERVED_PER_BLOCK",
    "MAX_BLOCK_SIZE",
    "MIN_BLOCK_SIZE",
    "Blocks",
    "InvalidPoolError",
    "PoolExhaustedError",
    "affinity_name",
    "block_affinity_object",
    "block_capacity",
    "blocks_of",
    "needs_new_block",
    "next_free_block",
]

DEFAULT_BLOCK_SIZE = 26  # Calico's IPv4 default: 64 addresses per block
MIN_BLOCK_SIZE, MAX_BLOCK_SIZE = 20, 32  # the IPv4 blockSize range Calico's IPPool accepts
API_VERSION = "crd.projectcalico.org/v1"
KIND = "BlockAffinity"

#: Addresses of each block that never go to a pod in the lab: the network address and
#: the broadcast address (the CNI IPAM plugin's range is network+1 .. broadcast-1, see
#: kubewire.cni.plugins.ipam.Range) and the first host, which the node's bridge holds as
#: the pods' gateway (also excluded by the plugin). A /26 gives 61 pod addresses.
LAB_RESERVED_PER_BLOCK = 3


class InvalidPoolError(ControllerError, ValueError):
    """The pool CIDR or block size cannot be carved into blocks."""


class PoolExhaustedError(ControllerError):
    """Every block of the pool is claimed and this node needs one more."""

    def __init__(
        self, pool: IPv4Network, block_size: int, count: int, owners: Mapping[str, int], node: str
    ) -> None:
        self.pool = pool
        self.block_size = block_size
        self.count = count
        self.owners = dict(owners)
        self.node = node
        by_whom = ", ".join(f"{name}: {n}" for name, n in sorted(self.owners.items()))
        super().__init__(
            f"IP pool {pool} (blockSize {block_size}) has {count} block(s) and all are claimed "
            f"({by_whom}); node {node} needs another one. Use a bigger pool CIDR (a prefix "
            f"shorter than /{pool.prefixlen}) or smaller blocks (a blockSize above {block_size}, "
            f"at most {MAX_BLOCK_SIZE}), or free blocks by removing nodes. kubewire does not "
            f"borrow addresses from other nodes' blocks."
        )


@dataclass(frozen=True, slots=True)
class Blocks(Sequence[IPv4Network]):
    """The blocks of a pool in address order, computed on demand (a /8 in /26s has
    262,144 of them): `len`, iteration, indexing and `index(block)`."""

    pool: IPv4Network
    block_size: int

    def __len__(self) -> int:
        return 1 << (self.block_size - self.pool.prefixlen)

    @overload
    def __getitem__(self, i: int) -> IPv4Network: ...

    @overload
    def __getitem__(self, i: slice) -> Sequence[IPv4Network]: ...

    def __getitem__(self, i: int | slice) -> IPv4Network | Sequence[IPv4Network]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"block {i} is outside pool {self.pool} ({n} blocks)")
        step = 1 << (32 - self.block_size)
        return IPv4Network((int(self.pool.network_address) + i * step, self.block_size))

    def __iter__(self) -> Iterator[IPv4Network]:
        for i in range(len(self)):
            yield self[i]

    def __contains__(self, block: object) -> bool:
        return (
            isinstance(block, IPv4Network)
            and block.prefixlen == self.block_size
            and block.subnet_of(self.pool)
        )

    def index(self, block: Any, start: int = 0, stop: int | None = None) -> int:
        if block not in self:
            raise ValueError(f"{block} is not a /{self.block_size} block of pool {self.pool}")
        i = (int(block.network_address) - int(self.pool.network_address)) >> (32 - self.block_size)
        if i < start or (stop is not None and i >= stop):
            raise ValueError(f"{block} is outside blocks {start}..{stop}")
        return i


def _pool(pool_cidr: IPv4Network | str, block_size: int) -> IPv4Network:
    try:
        pool = IPv4Network(pool_cidr)
    except ValueError as exc:
        raise InvalidPoolError(
            f"IP pool cidr {pool_cidr!r} is not an IPv4 network ({exc}); e.g. 10.244.0.0/16"
        ) from None
    if not MIN_BLOCK_SIZE <= block_size <= MAX_BLOCK_SIZE:
        raise InvalidPoolError(
            f"IP pool {pool}: blockSize {block_size} is outside {MIN_BLOCK_SIZE}..{MAX_BLOCK_SIZE}"
            f" (the default is {DEFAULT_BLOCK_SIZE})"
        )
    if block_size < pool.prefixlen:
        raise InvalidPoolError(
            f"IP pool {pool} is smaller than one /{block_size} block; use blockSize "
            f"{pool.prefixlen} or more, or a bigger pool"
        )
    return pool


def blocks_of(pool_cidr: IPv4Network | str, block_size: int = DEFAULT_BLOCK_SIZE) -> Blocks:
    """The pool's blocks; `len(blocks_of(...))` is their count."""
    return Blocks(_pool(pool_cidr, block_size), block_size)


def next_free_block(
    pool_cidr: IPv4Network | str,
    block_size: int,
    claimed: Mapping[IPv4Network, str],
    node: str,
) -> IPv4Network:
    """The lowest-numbered block of the pool that no node has claimed, for `node`.

    `claimed` maps every claimed block (any pool) to its node; a released block is simply
    no longer in it, and is handed out again first if it is the lowest. A claim that
    overlaps the pool without being one of its blocks (made with another block size)
    makes every block it touches unavailable. Raises PoolExhaustedError when none is left.
    """
    blocks = blocks_of(pool_cidr, block_size)
    pool = blocks.pool
    shift = 32 - block_size
    base = int(pool.network_address)
    taken: set[int] = set()
    owners: dict[str, int] = {}
    for net, owner in claimed.items():
        if net.version != 4 or not net.overlaps(pool):
            continue
        lo = max(int(net.network_address), base) - base
        hi = min(int(net.broadcast_address), int(pool.broadcast_address)) - base
        touched = set(range(lo >> shift, (hi >> shift) + 1))
        owners[owner] = owners.get(owner, 0) + len(touched - taken)
        taken |= touched
    for i in range(len(blocks)):
        if i not in taken:
            return blocks[i]
    raise PoolExhaustedError(pool, block_size, len(blocks), owners, node)


def block_capacity(block: IPv4Network, reserved_per_block: int = LAB_RESERVED_PER_BLOCK) -> int:
    """Pod addresses one block holds."""
    return max(0, block.num_addresses - reserved_per_block)


def needs_new_block(
    blocks: Sequence[IPv4Network],
    allocated: int,
    reserved_per_block: int = LAB_RESERVED_PER_BLOCK,
) -> bool:
    """Whether a node holding `blocks` with `allocated` pod addresses in use must claim
    another block before its next pod: true when every usable address is taken (and
    for a node without blocks). `reserved_per_block` addresses per block are never
    handed out (LAB_RESERVED_PER_BLOCK in the lab: network, gateway, broadcast)."""
    if allocated < 0 or reserved_per_block < 0:
        raise ValueError(
            f"allocated ({allocated}) and reserved_per_block ({reserved_per_block}) "
            f"cannot be negative"
        )
    return allocated >= sum(block_capacity(b, reserved_per_block) for b in blocks)


def _cidr_part(block: IPv4Network) -> str:
    return str(block).replace(".", "-").replace(":", "-").replace("/", "-")


def affinity_name(node: str, block: IPv4Network) -> str:
    """The BlockAffinity object's name, Calico's `<node>-<cidr>` with `.`, `:` and `/` as
    `-`: node-1 and 10.244.0.64/26 give "node-1-10-244-0-64-26".

    Object names must be DNS-1123 subdomains of at most 253 characters. A node name is one
    already, so the result is valid; only a node name longer than 234 characters pushes it
    past 253, and then (kubewire's rule, not Calico's) the node part is cut and a hash of
    the whole node name keeps names of different nodes apart."""
    problems = dns1123_subdomain_problems(node)
    if problems:
        raise ValueError(f"node name {node!r} is not a valid object name: {'; '.join(problems)}")
    cidr = _cidr_part(block)
    name = f"{node}-{cidr}"
    if len(name) > DNS1123_SUBDOMAIN_MAX_LENGTH:
        digest = hashlib.sha256(node.encode()).hexdigest()[:10]
        keep = DNS1123_SUBDOMAIN_MAX_LENGTH - len(cidr) - len(digest) - 2
        name = f"{node[:keep].rstrip('.-')}-{digest}-{cidr}"
    return name


def block_affinity_object(node: str, block: IPv4Network) -> dict[str, Any]:
    """The cluster-scoped BlockAffinity recording that `node` owns `block`, as Calico's
    IPAM writes it (crd.projectcalico.org/v1, state confirmed)."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": affinity_name(node, block)},
        "spec": {"state": "confirmed", "node": node, "cidr": str(block)},
    }
