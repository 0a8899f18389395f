"""Desired state of one node's cross-node pod plumbing, as plain frozen data.

Everything here is pure: backends compile `NodeInfo`s into a `DesiredNodeNetwork`, the
applier (`apply.py`) makes the kernel match it, and offline tools can read it directly.
Addresses are kept as canonical strings ("10.244.1.0/24", "172.18.0.2", "0e:..") so that
desired and observed state compare with `==` and print the way `ip` prints them.
"""

from __future__ import annotations

import hashlib
import ipaddress
import itertools
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

#: Routes owned by kubewire's routing backends carry this rtnetlink protocol number, so the
#: applier can find exactly its own routes again (`ip route show proto 75`). 75 is ASCII "K";
#: it is not assigned in iproute2's rt_protos table.
RTPROT_KUBEWIRE = 75

#: Node annotation holding a node's VTEP MAC (flannel publishes its equivalent in
#: flannel.alpha.coreos.com/backend-data).
VTEP_MAC_ANNOTATION = "kubewire.dev/vtep-mac"

_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")

AttrValue = str | int | bool


class RoutingError(Exception):
    """Base class for everything the routing package raises."""


class UnknownBackendError(RoutingError, KeyError):
    """A backend name that is not in the registry."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


class InvalidNodesError(RoutingError, ValueError):
    """The node list cannot describe one cluster (duplicates, overlaps, bad addresses)."""


class KernelSupportError(RoutingError):
    """The running kernel lacks a feature a backend needs."""


class SyncError(RoutingError):
    """The kernel refused a change, or the node namespace cannot hold the desired state."""


# Kernel config symbols, for telling the user exactly what is missing.
KERNEL_CONFIG = {
    "vxlan": "CONFIG_VXLAN",
    "ipip": "CONFIG_NET_IPIP",
    "gre": "CONFIG_NET_IPGRE",
    "geneve": "CONFIG_GENEVE",
    "wireguard": "CONFIG_WIREGUARD",
    "bridge": "CONFIG_BRIDGE",
    "veth": "CONFIG_VETH",
}


def kernel_support_error(kind: str) -> KernelSupportError:
    symbol = KERNEL_CONFIG.get(kind, f"the kernel option providing '{kind}' links")
    return KernelSupportError(
        f"this kernel has no {kind} support ({symbol}); pick another routing backend "
        f"(e.g. host-gw) or run on a kernel built with {symbol}"
    )


def vtep_mac_for(node_name: str) -> str:
    """A stable, locally administered unicast MAC for a node's VTEP.

    Derived from the node name so every node knows every other node's VTEP MAC before
    the device exists (flannel has to publish a random one through the API instead).
    """
    raw = bytearray(hashlib.sha256(node_name.encode()).digest()[:6])
    raw[0] = (raw[0] & 0xFC) | 0x02  # locally administered, unicast
    return ":".join(f"{b:02x}" for b in raw)


def _canonical_ipv4(value: str, what: str) -> str:
    try:
        address = ipaddress.ip_address(value)
    except ValueError as exc:
        raise InvalidNodesError(f"{what}: {value!r} is not an IP address") from exc
    if address.version != 4:
        raise InvalidNodesError(f"{what}: {value} is IPv6; routing backends support IPv4 only")
    return str(address)


def _canonical_mac(value: str, what: str) -> str:
    mac = value.lower()
    if not _MAC_RE.match(mac):
        raise InvalidNodesError(f"{what}: {value!r} is not a MAC address like 0e:00:00:00:00:01")
    return mac


def address_key(address: str) -> int:
    """Numeric sort key for a canonical IPv4 address (inet_aton: ipaddress is 10x slower)."""
    return int.from_bytes(socket.inet_aton(address), "big")


def network_key(cidr: str) -> tuple[int, int]:
    """Numeric sort key for "a.b.c.d/n" (so 10.244.10.0/24 sorts after 10.244.9.0/24)."""
    address, _, prefixlen = cidr.partition("/")
    return (address_key(address), int(prefixlen or 32))


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """What a routing backend needs to know about one node (a cut-down Node object)."""

    name: str
    underlay_ip: str
    pod_cidr: str
    vtep_mac: str

    def __post_init__(self) -> None:
        if not self.name:
            raise InvalidNodesError("node name must not be empty")
        what = f"node {self.name}"
        object.__setattr__(
            self, "underlay_ip", _canonical_ipv4(self.underlay_ip, f"{what} underlay_ip")
        )
        try:
            net = ipaddress.ip_network(self.pod_cidr, strict=True)
        except ValueError as exc:
            raise InvalidNodesError(
                f"{what} pod_cidr: {self.pod_cidr!r} is not a network address with a prefix "
                f"(like 10.244.1.0/24): {exc}"
            ) from exc
        if net.version != 4:
            raise InvalidNodesError(f"{what} pod_cidr: {net} is IPv6; only IPv4 is supported")
        object.__setattr__(self, "pod_cidr", str(net))
        object.__setattr__(self, "vtep_mac", _canonical_mac(self.vtep_mac, f"{what} vtep_mac"))

    @classmethod
    def for_node(
        cls,
        name: str,
        underlay_ip: str | ipaddress.IPv4Address,
        pod_cidr: str | ipaddress.IPv4Network,
        vtep_mac: str | None = None,
    ) -> NodeInfo:
        """Build from strings or ipaddress objects; the VTEP MAC defaults to the derived one."""
        return cls(name, str(underlay_ip), str(pod_cidr), vtep_mac or vtep_mac_for(name))

    @property
    def vtep_ip(self) -> str:
        """The VTEP's own address: the pod CIDR's network address (flannel's x.y.z.0/32)."""
        return self.pod_cidr.partition("/")[0]  # pod_cidr is canonical and strict


@dataclass(frozen=True, slots=True)
class Link:
    """A network device the backend owns. `attrs` are kind-specific, sorted (key, value)."""

    name: str
    kind: str
    mtu: int
    attrs: tuple[tuple[str, AttrValue], ...] = ()
    mac: str | None = None
    addresses: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "attrs", tuple(sorted(self.attrs)))
        object.__setattr__(self, "addresses", tuple(sorted(self.addresses, key=network_key)))

    def attr(self, key: str) -> AttrValue | None:
        return dict(self.attrs).get(key)


@dataclass(frozen=True, slots=True)
class Route:
    """A route in the main table, tagged with RTPROT_KUBEWIRE when programmed."""

    dst: str
    gateway: str | None
    dev: str
    onlink: bool = False


@dataclass(frozen=True, slots=True)
class Neighbour:
    """A permanent neighbour (ARP) entry."""

    ip: str
    mac: str
    dev: str


@dataclass(frozen=True, slots=True)
class FdbEntry:
    """A permanent VXLAN forwarding entry: frames for `mac` go to VTEP `dst_ip`."""

    mac: str
    dst_ip: str
    dev: str


def _route_key(route: Route) -> tuple[tuple[int, int], str, str]:
    return (network_key(route.dst), route.dev, route.gateway or "")


def _neighbour_key(neighbour: Neighbour) -> tuple[str, int, str]:
    return (neighbour.dev, address_key(neighbour.ip), neighbour.mac)


def _fdb_key(entry: FdbEntry) -> tuple[str, str, int]:
    return (entry.dev, entry.mac, address_key(entry.dst_ip))


@dataclass(frozen=True, slots=True)
class DesiredNodeNetwork:
    """Everything one node needs for cross-node pod traffic. Tuples are kept sorted."""

    links: tuple[Link, ...] = ()
    routes: tuple[Route, ...] = ()
    neighbours: tuple[Neighbour, ...] = ()
    fdb: tuple[FdbEntry, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "links", tuple(sorted(self.links, key=lambda link: link.name)))
        object.__setattr__(self, "routes", tuple(sorted(self.routes, key=_route_key)))
        object.__setattr__(self, "neighbours", tuple(sorted(self.neighbours, key=_neighbour_key)))
        object.__setattr__(self, "fdb", tuple(sorted(self.fdb, key=_fdb_key)))

    def to_commands(self) -> list[str]:
        """The iproute2 commands that would build this state by hand (docs, golden tests)."""
        lines: list[str] = []
        for link in self.links:
            spec = _link_spec(link)
            lines.append(f"ip link add {link.name} type {link.kind}{spec}")
            mac = f" address {link.mac}" if link.mac else ""
            lines.append(f"ip link set {link.name} mtu {link.mtu}{mac} up")
            lines.extend(f"ip addr add {addr} dev {link.name}" for addr in link.addresses)
        lines.extend(
            f"ip neigh replace {n.ip} lladdr {n.mac} dev {n.dev} nud permanent"
            for n in self.neighbours
        )
        lines.extend(f"bridge fdb append {f.mac} dev {f.dev} dst {f.dst_ip}" for f in self.fdb)
        for route in self.routes:
            via = f" via {route.gateway}" if route.gateway else ""
            onlink = " onlink" if route.onlink else ""
            lines.append(
                f"ip route replace {route.dst}{via} dev {route.dev}{onlink} proto {RTPROT_KUBEWIRE}"
            )
        return lines


def _link_spec(link: Link) -> str:
    if link.kind != "vxlan":
        return "".join(f" {key} {value}" for key, value in link.attrs)
    parts = [
        f" id {link.attr('vni')}",
        f" local {link.attr('local')}",
        f" dev {link.attr('dev')}",
        f" dstport {link.attr('dstport')}",
    ]
    if link.attr("learning") is False:
        parts.append(" nolearning")
    return "".join(parts)


class Backend(Protocol):
    """A routing backend: a pure function from the node list to one node's desired state."""

    @property
    def name(self) -> str: ...

    @property
    def mtu_overhead(self) -> int: ...

    def compile(
        self, self_node: NodeInfo, all_nodes: Sequence[NodeInfo], mtu: int
    ) -> DesiredNodeNetwork: ...


def check_nodes(self_node: NodeInfo, all_nodes: Sequence[NodeInfo]) -> list[NodeInfo]:
    """Validate a cluster's node list and return the *other* nodes, sorted by name.

    `self_node` may be missing from `all_nodes` (a node that is leaving); if present it
    must be identical.
    """
    by_name: dict[str, NodeInfo] = {}
    for node in [*all_nodes, self_node]:
        seen = by_name.get(node.name)
        if seen is not None and seen != node:
            raise InvalidNodesError(f"node {node.name} appears twice with different data")
        by_name[node.name] = node
    nodes = sorted(by_name.values(), key=lambda n: n.name)
    for field_name in ("underlay_ip", "vtep_mac"):
        owners: dict[str, str] = {}
        for node in nodes:
            value = getattr(node, field_name)
            if value in owners:
                raise InvalidNodesError(
                    f"nodes {owners[value]} and {node.name} share {field_name} {value}"
                )
            owners[value] = node.name
    # Sorted by start, two CIDRs overlap iff one starts before the previous one ends.
    ranges = sorted((*network_key(n.pod_cidr), n.name, n.pod_cidr) for n in nodes)
    for (start_a, len_a, name_a, net_a), (start_b, _, name_b, net_b) in itertools.pairwise(ranges):
        if start_b < start_a + (1 << (32 - len_a)):
            raise InvalidNodesError(
                f"pod CIDRs of nodes {name_a} ({net_a}) and {name_b} ({net_b}) overlap; "
                "every node needs its own podCIDR"
            )
    return [n for n in nodes if n.name != self_node.name]


def check_mtu(mtu: int, overhead: int, backend: str) -> None:
    if mtu - overhead < 576:
        raise RoutingError(
            f"underlay MTU {mtu} is too small for backend {backend} (it needs {overhead} bytes "
            f"of headroom and pods need at least 576); raise the underlay MTU"
        )
