"""Node objects and node IPAM: per-node pod CIDRs and underlay addresses.

Allocation works like kube-controller-manager's node-ipam range allocator: a node keeps the
range it already has for as long as it exists, so adding or removing other nodes never moves
a running node's pods; new nodes take the lowest free range. Nodes are served in name order,
which makes the outcome independent of the order nodes are listed in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, ip_address, ip_network
from typing import Any, Protocol

from kubewire.controllers.errors import DuplicateNodeName, PodCidrExhausted, UnderlayExhausted
from kubewire.controllers.objects import derived_uid, name_of, spec_of

__all__ = [
    "DEFAULT_NODE_CIDR_MASK_SIZE",
    "LABEL_HOSTNAME",
    "LABEL_OS",
    "NodeSpec",
    "NodeSpecLike",
    "allocate_pod_cidrs",
    "allocate_underlay_addresses",
    "build_node",
    "build_nodes",
    "internal_ip_of",
    "pod_cidr_of",
]

LABEL_HOSTNAME = "kubernetes.io/hostname"
LABEL_OS = "kubernetes.io/os"
# kube-controller-manager's --node-cidr-mask-size default for IPv4.
DEFAULT_NODE_CIDR_MASK_SIZE = 24


class NodeSpecLike(Protocol):
    """Anything with a node ``name`` and user ``labels`` (a ClusterSpec node, a NodeSpec)."""

    @property
    def name(self) -> str: ...

    @property
    def labels(self) -> Mapping[str, str]: ...


@dataclass(frozen=True, slots=True)
class NodeSpec:
    name: str
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)


class _NoFreeSlot(Exception):
    def __init__(self, unserved: list[str]) -> None:
        self.unserved = unserved


def _allocate_slots(
    names: Iterable[str], claimed: Mapping[str, int | None], capacity: int
) -> dict[str, int]:
    """Give each name a slot in ``range(capacity)``: its claimed one if valid and not taken by
    a name that sorts earlier, else the lowest free slot. Raises _NoFreeSlot.
    """
    ordered = sorted(set(names))
    result: dict[str, int] = {}
    used: set[int] = set()
    waiting = []
    for name in ordered:
        slot = claimed.get(name)
        if slot is not None and 0 <= slot < capacity and slot not in used:
            result[name] = slot
            used.add(slot)
        else:
            waiting.append(name)
    candidate = 0
    for position, name in enumerate(waiting):
        while candidate in used:
            candidate += 1
        if candidate >= capacity:
            raise _NoFreeSlot(waiting[position:])
        result[name] = candidate
        used.add(candidate)
    return {name: result[name] for name in ordered}


def allocate_pod_cidrs(
    pod_cidr: IPv4Network,
    mask_size: int,
    node_names: Iterable[str],
    existing: Mapping[str, IPv4Network],
) -> dict[str, IPv4Network]:
    """A /``mask_size`` range of ``pod_cidr`` per node, sorted by node name.

    ``existing`` (from the Nodes' ``spec.podCIDR``) is kept where it is still a valid, unique
    range of ``pod_cidr``; entries for nodes not in ``node_names`` are released.
    Raises PodCidrExhausted when there are more nodes than ranges.
    """
    if not pod_cidr.prefixlen <= mask_size <= 32:
        raise ValueError(
            f"node CIDR mask size /{mask_size} must lie between the pod CIDR's "
            f"/{pod_cidr.prefixlen} and /32"
        )
    shift = 32 - mask_size
    base = int(pod_cidr.network_address)
    claimed: dict[str, int | None] = {}
    for name, cidr in existing.items():
        inside = cidr.prefixlen == mask_size and cidr.subnet_of(pod_cidr)
        claimed[name] = (int(cidr.network_address) - base) >> shift if inside else None
    try:
        slots = _allocate_slots(node_names, claimed, 1 << (mask_size - pod_cidr.prefixlen))
    except _NoFreeSlot as full:
        raise PodCidrExhausted(
            pod_cidr, mask_size, 1 << (mask_size - pod_cidr.prefixlen), full.unserved
        ) from None
    return {name: IPv4Network((base + (slot << shift), mask_size)) for name, slot in slots.items()}


class _AddressSlots:
    """Numbers the node addresses of an underlay, skipping reserved ranges (holes), so that
    slot ``n`` is the ``n``-th address a node may have."""

    def __init__(self, underlay_cidr: IPv4Network, reserved: Iterable[IPv4Network]) -> None:
        self.first = int(underlay_cidr.network_address) + 2
        self.last = int(underlay_cidr.broadcast_address) - 1
        clipped = sorted(
            (max(int(r.network_address), self.first), min(int(r.broadcast_address), self.last))
            for r in reserved
        )
        holes: list[tuple[int, int]] = []
        for low, high in clipped:
            if low > high:
                continue  # outside the node range
            if holes and low <= holes[-1][1] + 1:
                holes[-1] = (holes[-1][0], max(holes[-1][1], high))
            else:
                holes.append((low, high))
        self.holes = holes
        span = max(0, self.last - self.first + 1)
        self.capacity = max(0, span - sum(high - low + 1 for low, high in holes))

    def address(self, slot: int) -> IPv4Address:
        value = self.first + slot
        for low, high in self.holes:
            if value < low:
                break
            value += high - low + 1
        return IPv4Address(value)

    def slot(self, address: IPv4Address) -> int | None:
        """The slot of ``address``, or None if no node may have it."""
        value = int(address)
        if not self.first <= value <= self.last:
            return None
        skipped = 0
        for low, high in self.holes:
            if value < low:
                break
            if value <= high:
                return None
            skipped += high - low + 1
        return value - self.first - skipped


def allocate_underlay_addresses(
    underlay_cidr: IPv4Network,
    node_names: Iterable[str],
    existing: Mapping[str, IPv4Address],
    *,
    reserved: Sequence[IPv4Network] = (),
) -> dict[str, IPv4Address]:
    """One underlay (InternalIP) address per node, sorted by node name.

    Hands out ``.2`` upwards: the network address, the first host (reserved for the lab's
    gateway), the broadcast address and every address in ``reserved`` (the Cluster's
    load-balancer pool, ``ClusterSpec.reserved_underlay``) are never given to a node; an
    existing node holding one of them gets a new address. Raises UnderlayExhausted.
    """
    slots = _AddressSlots(underlay_cidr, reserved)
    claimed = {name: slots.slot(address) for name, address in existing.items()}
    try:
        allocated = _allocate_slots(node_names, claimed, slots.capacity)
    except _NoFreeSlot as full:
        raise UnderlayExhausted(underlay_cidr, slots.capacity, full.unserved) from None
    return {name: slots.address(slot) for name, slot in allocated.items()}


def build_node(
    name: str, labels: Mapping[str, str], pod_cidr: IPv4Network, internal_ip: IPv4Address
) -> dict[str, Any]:
    """A Ready ``v1/Node`` as the kubelet and node-ipam controller would leave it.

    The kubelet owns the well-known labels, so they win over user labels of the same key.
    """
    all_labels = {**labels, LABEL_HOSTNAME: name, LABEL_OS: "linux"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "uid": derived_uid("Node", name),
            "labels": dict(sorted(all_labels.items())),
        },
        "spec": {"podCIDR": str(pod_cidr), "podCIDRs": [str(pod_cidr)]},
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": str(internal_ip)},
                {"type": "Hostname", "address": name},
            ],
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "kubelet is posting ready status",
                }
            ],
        },
    }


def build_nodes(
    specs: Sequence[NodeSpecLike],
    *,
    pod_cidr: IPv4Network,
    underlay_cidr: IPv4Network,
    node_cidr_mask_size: int = DEFAULT_NODE_CIDR_MASK_SIZE,
    existing_nodes: Iterable[Mapping[str, Any]] = (),
    reserved: Sequence[IPv4Network] = (),
) -> list[dict[str, Any]]:
    """Node objects for ``specs``, sorted by name, keeping the allocations of ``existing_nodes``.
    No node gets an underlay address inside ``reserved`` (see allocate_underlay_addresses).

    Raises DuplicateNodeName, PodCidrExhausted or UnderlayExhausted.
    """
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise DuplicateNodeName(spec.name)
        seen.add(spec.name)
    previous = list(existing_nodes)
    old_cidrs = {name_of(n): c for n in previous if (c := pod_cidr_of(n)) is not None}
    old_addresses = {name_of(n): a for n in previous if (a := internal_ip_of(n)) is not None}
    cidrs = allocate_pod_cidrs(pod_cidr, node_cidr_mask_size, seen, old_cidrs)
    addresses = allocate_underlay_addresses(underlay_cidr, seen, old_addresses, reserved=reserved)
    by_name = {spec.name: spec for spec in specs}
    return [
        build_node(name, by_name[name].labels, cidrs[name], addresses[name])
        for name in sorted(seen)
    ]


def pod_cidr_of(node: Mapping[str, Any]) -> IPv4Network | None:
    """The node's IPv4 ``spec.podCIDR``, or None if it has none (or a malformed one)."""
    value = spec_of(node).get("podCIDR")
    try:
        network = ip_network(str(value)) if value else None
    except ValueError:
        return None
    return network if isinstance(network, IPv4Network) else None


def internal_ip_of(node: Mapping[str, Any]) -> IPv4Address | None:
    """The node's first IPv4 ``InternalIP`` status address, or None."""
    status = node.get("status")
    addresses = status.get("addresses") if isinstance(status, Mapping) else None
    for entry in addresses if isinstance(addresses, list) else []:
        if isinstance(entry, Mapping) and entry.get("type") == "InternalIP":
            try:
                address = ip_address(str(entry.get("address")))
            except ValueError:
                continue
            if isinstance(address, IPv4Address):
                return address
    return None
