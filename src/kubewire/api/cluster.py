"""The Cluster object: kubewire's own kind describing the cluster to build.

```yaml
apiVersion: kubewire.dev/v1alpha1
kind: Cluster
metadata: {name: demo}
spec:
  nodes: 3                  # or [{name: a, labels: {zone: x}, annotations: {...}}, ...]
  podCIDR: 10.244.0.0/16
  nodeCIDRMaskSize: 24
  serviceCIDR: 10.96.0.0/12
  underlayCIDR: 172.18.0.0/16
  loadBalancerCIDR: 172.18.255.0/24   # LoadBalancer Service addresses; null: none
  network:
    backend: vxlan          # or host-gw, or bgp (Calico style: a BGP speaker per node)
    mtu: 1500
  cni: kubewire             # or reference
  dnsDomain: cluster.local
```

Every field has a default, so no Cluster object at all is a valid three-node cluster. Only
IPv4 is supported for now: every address family decision downstream assumes it.

``loadBalancerCIDR`` is the pool LoadBalancer Services take their ingress addresses from. It
lies inside the underlay, because the lab's external host reaches those addresses over it, and
no node is given an address from it. Left out, it is the top quarter of ``underlayCIDR``, at
most a /24 (172.18.255.0/24 for the default underlay; none for underlays under 16 addresses),
so a Cluster that only changes the underlay stays valid.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from types import MappingProxyType
from typing import Any

from kubewire.api.errors import ApiError, ManifestError, ManifestErrors, show_value
from kubewire.api.kinds import CLUSTER_API_VERSION
from kubewire.api.loader import Manifest
from kubewire.api.names import (
    dns1123_label_problems,
    dns1123_subdomain_problems,
    label_key_problems,
    label_value_problems,
)
from kubewire.api.objects import child_path, index_path

__all__ = [
    "CLUSTER_NAME_MAX_LENGTH",
    "CNI_IMPLEMENTATIONS",
    "NETWORK_BACKENDS",
    "ClusterSpec",
    "ClusterSpecError",
    "NetworkSpec",
    "NodeSpec",
    "default_load_balancer_cidr",
    "default_node_names",
]

NETWORK_BACKENDS = ("vxlan", "host-gw", "bgp")
CNI_IMPLEMENTATIONS = ("kubewire", "reference")
# The cluster name is embedded in namespace and interface names (IFNAMSIZ is 16 with the NUL,
# and each name also carries a role and node part), so it must stay short.
CLUSTER_NAME_MAX_LENGTH = 16
MTU_RANGE = (576, 9000)  # 576: the IPv4 minimum datagram size; 9000: common jumbo frames.
MAX_NODE_CIDR_MASK_SIZE = 30  # a /31 or /32 leaves no room for a pod address
# Kubernetes refuses IPv4 service ranges wider than /12 (2^20 addresses).
MIN_SERVICE_CIDR_PREFIX = 12
DEFAULT_NODE_COUNT = 3
# Far beyond what one machine can emulate, but the offline model can still analyse it.
MAX_NODE_COUNT = 100_000

DEFAULT_POD_CIDR = IPv4Network("10.244.0.0/16")
DEFAULT_SERVICE_CIDR = IPv4Network("10.96.0.0/12")
DEFAULT_UNDERLAY_CIDR = IPv4Network("172.18.0.0/16")
DEFAULT_LOAD_BALANCER_CIDR = IPv4Network("172.18.255.0/24")
# Network address, the first host (the lab's external host, also its gateway) and broadcast:
# the underlay addresses that are neither a node's nor a LoadBalancer Service's.
UNDERLAY_LAB_ADDRESSES = 3

_SPEC_FIELDS = (
    "nodes",
    "podCIDR",
    "nodeCIDRMaskSize",
    "serviceCIDR",
    "underlayCIDR",
    "loadBalancerCIDR",
    "network",
    "cni",
    "dnsDomain",
)
_NODE_FIELDS = ("name", "labels", "annotations")
_NETWORK_FIELDS = ("backend", "mtu")


class ClusterSpecError(ApiError, ValueError):
    """A ClusterSpec built in code breaks a rule that from_manifest would have reported."""


def default_load_balancer_cidr(underlay_cidr: IPv4Network) -> IPv4Network | None:
    """The load-balancer pool a Cluster gets when it declares none: the top quarter of the
    underlay, at most a /24, or None when that would be smaller than a /30."""
    prefix = max(24, underlay_cidr.prefixlen + 2)
    if prefix > 30:
        return None
    size = 1 << (32 - prefix)
    return IPv4Network((int(underlay_cidr.broadcast_address) + 1 - size, prefix))


def default_node_names(count: int) -> tuple[str, ...]:
    return tuple(f"node-{index}" for index in range(1, count + 1))


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """One node to create. ``labels`` and ``annotations`` are read-only (annotations are
    how a bgp lab marks route reflectors: ``projectcalico.org/RouteReflectorClusterID``)."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)
    annotations: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", MappingProxyType(dict(self.labels)))
        object.__setattr__(self, "annotations", MappingProxyType(dict(self.annotations)))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "labels": dict(self.labels)}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


def _default_nodes(count: int = DEFAULT_NODE_COUNT) -> tuple[NodeSpec, ...]:
    return tuple(NodeSpec(name) for name in default_node_names(count))


@dataclass(frozen=True, slots=True)
class NetworkSpec:
    """How nodes reach each other's pods: the routing backend and the underlay MTU."""

    backend: str = "vxlan"
    mtu: int = 1500

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "mtu": self.mtu}


DEFAULT_NETWORK = NetworkSpec()


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    """The validated Cluster object; build it with :meth:`from_manifest` or :meth:`default`."""

    name: str = "kubewire"
    nodes: tuple[NodeSpec, ...] = field(default_factory=_default_nodes)
    pod_cidr: IPv4Network = DEFAULT_POD_CIDR
    node_cidr_mask_size: int = 24
    service_cidr: IPv4Network = DEFAULT_SERVICE_CIDR
    underlay_cidr: IPv4Network = DEFAULT_UNDERLAY_CIDR
    # In code the default does not follow underlay_cidr: pass it with a custom underlay.
    load_balancer_cidr: IPv4Network | None = DEFAULT_LOAD_BALANCER_CIDR
    network: NetworkSpec = DEFAULT_NETWORK
    cni: str = "kubewire"
    dns_domain: str = "cluster.local"

    def __post_init__(self) -> None:
        values = self._checked_values()
        problems = _value_problems(values) + _relation_problems(values, frozenset())
        if problems:
            raise ClusterSpecError("; ".join(f"{path}: {message}" for path, message in problems))

    def _checked_values(self) -> dict[str, Any]:
        return {
            "metadata.name": self.name,
            "spec.nodes": self.nodes,
            "spec.podCIDR": self.pod_cidr,
            "spec.nodeCIDRMaskSize": self.node_cidr_mask_size,
            "spec.serviceCIDR": self.service_cidr,
            "spec.underlayCIDR": self.underlay_cidr,
            "spec.loadBalancerCIDR": self.load_balancer_cidr,
            "spec.network.backend": self.network.backend,
            "spec.network.mtu": self.network.mtu,
            "spec.cni": self.cni,
            "spec.dnsDomain": self.dns_domain,
        }

    @classmethod
    def default(cls) -> ClusterSpec:
        return cls()

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> ClusterSpec:
        """Read and check a Cluster manifest; raises ManifestErrors naming every problem."""
        values, defaulted, problems = _read_manifest(manifest.obj)
        problems += _value_problems(values)
        problems += _relation_problems(values, defaulted)
        if problems:
            raise ManifestErrors(
                ManifestError(manifest.source, manifest.line_of(path), path, message)
                for path, message in problems
            )
        return cls(
            name=values["metadata.name"],
            nodes=values["spec.nodes"],
            pod_cidr=values["spec.podCIDR"],
            node_cidr_mask_size=values["spec.nodeCIDRMaskSize"],
            service_cidr=values["spec.serviceCIDR"],
            underlay_cidr=values["spec.underlayCIDR"],
            load_balancer_cidr=values["spec.loadBalancerCIDR"],
            network=NetworkSpec(values["spec.network.backend"], values["spec.network.mtu"]),
            cni=values["spec.cni"],
            dns_domain=values["spec.dnsDomain"],
        )

    @classmethod
    def from_obj(cls, obj: Mapping[str, Any], source: str = "<cluster>") -> ClusterSpec:
        """from_manifest for a plain Cluster object (errors name ``source``, no lines)."""
        return cls.from_manifest(Manifest(dict(obj), source))

    @property
    def node_range_count(self) -> int:
        """How many per-node pod ranges (of nodeCIDRMaskSize) the pod CIDR holds."""
        return 1 << (self.node_cidr_mask_size - self.pod_cidr.prefixlen)

    @property
    def node_names(self) -> tuple[str, ...]:
        return tuple(node.name for node in self.nodes)

    @property
    def reserved_underlay(self) -> tuple[IPv4Network, ...]:
        """Underlay ranges no node may take an address from (the load-balancer pool); pass
        them as ``reserved`` to the controllers' underlay allocation."""
        return () if self.load_balancer_cidr is None else (self.load_balancer_cidr,)

    @property
    def dns_service_ip(self) -> IPv4Address:
        """The kube-dns Service's ClusterIP: the service range's tenth address, as kubeadm
        and kind choose it (10.96.0.10 by default)."""
        net = self.service_cidr
        return net.network_address + min(10, max(net.num_addresses - 2, 1))

    def node(self, name: str) -> NodeSpec | None:
        return next((node for node in self.nodes if node.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        """The Cluster object as a manifest; from_manifest reads it back to an equal spec."""
        return {
            "apiVersion": CLUSTER_API_VERSION,
            "kind": "Cluster",
            "metadata": {"name": self.name},
            "spec": {
                "nodes": [node.to_dict() for node in self.nodes],
                "podCIDR": str(self.pod_cidr),
                "nodeCIDRMaskSize": self.node_cidr_mask_size,
                "serviceCIDR": str(self.service_cidr),
                "underlayCIDR": str(self.underlay_cidr),
                "loadBalancerCIDR": (
                    None if self.load_balancer_cidr is None else str(self.load_balancer_cidr)
                ),
                "network": self.network.to_dict(),
                "cni": self.cni,
                "dnsDomain": self.dns_domain,
            },
        }


def _defaults() -> dict[str, Any]:
    """Default value per manifest field, taken from the dataclass so there is one source."""
    fields = ClusterSpec.__dataclass_fields__
    return {
        "metadata.name": fields["name"].default,
        "spec.podCIDR": fields["pod_cidr"].default,
        "spec.nodeCIDRMaskSize": fields["node_cidr_mask_size"].default,
        "spec.serviceCIDR": fields["service_cidr"].default,
        "spec.underlayCIDR": fields["underlay_cidr"].default,
        "spec.network.backend": DEFAULT_NETWORK.backend,
        "spec.network.mtu": DEFAULT_NETWORK.mtu,
        "spec.cni": fields["cni"].default,
        "spec.dnsDomain": fields["dns_domain"].default,
    }


Problems = list[tuple[str, str]]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _read_manifest(obj: Mapping[str, Any]) -> tuple[dict[str, Any], frozenset[str], Problems]:
    """Parse field types; returns values by manifest path (absent when unreadable),
    the paths that took their default, and the problems found."""
    problems: Problems = []
    values: dict[str, Any] = {}
    defaulted: set[str] = set()
    defaults = _defaults()

    metadata = obj.get("metadata")
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    if name is None:
        values["metadata.name"] = defaults["metadata.name"]
        defaulted.add("metadata.name")
    elif isinstance(name, str):
        values["metadata.name"] = name
    else:
        problems.append(("metadata.name", f"must be a string, got {show_value(name)}"))

    spec = obj.get("spec")
    if spec is None:
        spec = {}
    if not isinstance(spec, Mapping):
        problems.append(("spec", f"must be a mapping, got {show_value(spec)}"))
        spec = {}
    for key in spec:
        if key not in _SPEC_FIELDS:
            problems.append(
                (
                    child_path("spec", key),
                    f"unknown field; a Cluster spec has: {', '.join(_SPEC_FIELDS)}",
                )
            )

    for path in ("spec.podCIDR", "spec.serviceCIDR", "spec.underlayCIDR"):
        key = path.removeprefix("spec.")
        if key not in spec:
            values[path] = defaults[path]
            defaulted.add(path)
            continue
        network, problem = _parse_cidr(spec[key])
        if problem:
            problems.append((path, problem))
        else:
            values[path] = network
    _read_load_balancer_cidr(spec, values, defaulted, problems)

    network_fields = spec.get("network")
    if network_fields is None:
        network_fields = {}
    if not isinstance(network_fields, Mapping):
        problems.append(
            (
                "spec.network",
                f"must be a mapping with backend and mtu, got {show_value(network_fields)}",
            )
        )
        network_fields = {}
    for key in network_fields:
        if key not in _NETWORK_FIELDS:
            problems.append(
                (child_path("spec.network", key), "unknown field; network has backend and mtu")
            )

    for path, kind in (
        ("spec.nodeCIDRMaskSize", int),
        ("spec.network.mtu", int),
        ("spec.network.backend", str),
        ("spec.cni", str),
        ("spec.dnsDomain", str),
    ):
        parent, _, key = path.rpartition(".")
        container = network_fields if parent == "spec.network" else spec
        if key not in container:
            values[path] = defaults[path]
            defaulted.add(path)
        elif kind is int and not _is_int(container[key]):
            problems.append((path, f"must be an integer, got {show_value(container[key])}"))
        elif kind is str and not isinstance(container[key], str):
            problems.append((path, f"must be a string, got {show_value(container[key])}"))
        else:
            values[path] = container[key]

    nodes, node_problems = _read_nodes(spec.get("nodes", DEFAULT_NODE_COUNT))
    problems += node_problems
    if nodes is not None:
        values["spec.nodes"] = nodes
    if "nodes" not in spec:
        defaulted.add("spec.nodes")
    return values, frozenset(defaulted), problems


def _read_load_balancer_cidr(
    spec: Mapping[str, Any], values: dict[str, Any], defaulted: set[str], problems: Problems
) -> None:
    """``null`` or ``""`` turn the pool off (the value None); left out, it follows the
    underlay, so it is only known when the underlay parsed."""
    path = "spec.loadBalancerCIDR"
    if "loadBalancerCIDR" not in spec:
        defaulted.add(path)
        if "spec.underlayCIDR" in values:
            values[path] = default_load_balancer_cidr(values["spec.underlayCIDR"])
        return
    raw = spec["loadBalancerCIDR"]
    if raw is None or raw == "":
        values[path] = None
        return
    network, problem = _parse_cidr(raw)
    if problem:
        problems.append((path, f"{problem}; or null for no LoadBalancer addresses"))
    else:
        values[path] = network


def _parse_cidr(value: Any) -> tuple[IPv4Network | None, str]:
    if not isinstance(value, str) or "/" not in value:
        return None, f"must be a CIDR like 10.244.0.0/16, got {show_value(value)}"
    try:
        network = ipaddress.ip_network(value, strict=False)
    except ValueError:
        return None, f"must be a CIDR like 10.244.0.0/16, got {show_value(value)}"
    if not isinstance(network, IPv4Network):
        return None, f"{value}: IPv6 is not supported yet; use an IPv4 CIDR"
    if network.network_address != ipaddress.ip_address(value.partition("/")[0]):
        return None, f"{value} has host bits set; did you mean {network}?"
    return network, ""


def _read_nodes(raw: Any) -> tuple[tuple[NodeSpec, ...] | None, Problems]:
    if _is_int(raw):
        # The bound keeps a typo like 10000000 from building millions of names.
        if not 1 <= raw <= MAX_NODE_COUNT:
            return None, [("spec.nodes", f"must be between 1 and {MAX_NODE_COUNT}, got {raw}")]
        return _default_nodes(raw), []
    if not isinstance(raw, list):
        return None, [
            (
                "spec.nodes",
                f"must be a node count or a list of {{name, labels}}, got {show_value(raw)}",
            )
        ]
    if not raw:
        return None, [("spec.nodes", "must declare at least one node")]
    problems: Problems = []
    nodes: list[NodeSpec] = []
    for index, item in enumerate(raw):
        path = index_path("spec.nodes", index)
        if not isinstance(item, Mapping):
            problems.append(
                (path, f"must be a mapping with name and labels, got {show_value(item)}")
            )
            continue
        for key in item:
            if key not in _NODE_FIELDS:
                problems.append(
                    (child_path(path, key),
                     "unknown field; a node has name, labels and annotations")
                )
        name = item.get("name")
        if not isinstance(name, str) or not name:
            problems.append((f"{path}.name", "required: the node's name, e.g. node-1"))
            continue
        labels = item.get("labels") or {}
        annotations = item.get("annotations") or {}
        own_problems = _label_problems(labels, f"{path}.labels")
        own_problems += _annotation_problems(annotations, f"{path}.annotations")
        problems += own_problems
        if not own_problems:
            nodes.append(NodeSpec(name, labels, annotations))
    if problems:
        return None, problems
    return tuple(nodes), []


def _annotation_problems(annotations: Any, path: str) -> Problems:
    """Annotation keys follow the label key rules; values are any string."""
    if not isinstance(annotations, Mapping):
        return [(path, "must be a mapping of annotation key to value, got "
                 f"{show_value(annotations)}")]
    problems: Problems = []
    for key, value in annotations.items():
        key_path = child_path(path, key)
        problems += [(key_path, f"annotation key {show_value(key)}: {p}")
                     for p in label_key_problems(key)]
        if not isinstance(value, str):
            problems.append((key_path, "annotation values must be strings, got "
                             f"{show_value(value)}; quote it"))
    return problems


def _label_problems(labels: Any, path: str) -> Problems:
    if not isinstance(labels, Mapping):
        return [(path, f"must be a mapping of label key to value, got {show_value(labels)}")]
    problems: Problems = []
    for key, value in labels.items():
        key_path = child_path(path, key)
        problems += [
            (key_path, f"label key {show_value(key)}: {p}") for p in label_key_problems(key)
        ]
        if not isinstance(value, str):
            problems.append(
                (key_path, f"label values must be strings, got {show_value(value)}; quote it")
            )
            continue
        problems += [
            (key_path, f"label value {show_value(value)}: {p}") for p in label_value_problems(value)
        ]
    return problems


def _value_problems(values: Mapping[str, Any]) -> Problems:
    """Checks of single fields, once their types are right."""
    problems: Problems = []
    name = values.get("metadata.name")
    if name is not None:
        problems += [("metadata.name", p) for p in dns1123_label_problems(name)]
        if len(name) > CLUSTER_NAME_MAX_LENGTH:
            problems.append(
                (
                    "metadata.name",
                    f"must be at most {CLUSTER_NAME_MAX_LENGTH} characters (it has {len(name)}), "
                    "because it is part of network namespace and interface names",
                )
            )
    nodes = values.get("spec.nodes")
    if nodes is not None:
        seen: dict[str, int] = {}
        for index, node in enumerate(nodes):
            path = f"{index_path('spec.nodes', index)}.name"
            problems += [
                (path, f"node name {show_value(node.name)}: {p}")
                for p in dns1123_subdomain_problems(node.name)
            ]
            if node.name in seen:
                problems.append(
                    (
                        path,
                        f'duplicate node name "{node.name}" (also spec.nodes[{seen[node.name]}])',
                    )
                )
            seen.setdefault(node.name, index)
    mask = values.get("spec.nodeCIDRMaskSize")
    if mask is not None and not 1 <= mask <= MAX_NODE_CIDR_MASK_SIZE:
        problems.append(
            (
                "spec.nodeCIDRMaskSize",
                f"must be between 1 and {MAX_NODE_CIDR_MASK_SIZE}, got {mask}",
            )
        )
    service_cidr = values.get("spec.serviceCIDR")
    if service_cidr is not None and service_cidr.prefixlen < MIN_SERVICE_CIDR_PREFIX:
        problems.append(
            (
                "spec.serviceCIDR",
                f"{service_cidr} is too large: Kubernetes allows at most a "
                f"/{MIN_SERVICE_CIDR_PREFIX} for IPv4 service ranges",
            )
        )
    for path, allowed in (
        ("spec.network.backend", NETWORK_BACKENDS),
        ("spec.cni", CNI_IMPLEMENTATIONS),
    ):
        value = values.get(path)
        if value is not None and value not in allowed:
            problems.append(
                (path, f"unsupported value {show_value(value)}; allowed: {', '.join(allowed)}")
            )
    mtu = values.get("spec.network.mtu")
    if mtu is not None and not MTU_RANGE[0] <= mtu <= MTU_RANGE[1]:
        problems.append(
            ("spec.network.mtu", f"must be between {MTU_RANGE[0]} and {MTU_RANGE[1]}, got {mtu}")
        )
    domain = values.get("spec.dnsDomain")
    if domain is not None:
        problems += [("spec.dnsDomain", p) for p in dns1123_subdomain_problems(domain)]
    return problems


def _shown(values: Mapping[str, Any], defaulted: frozenset[str], path: str) -> str:
    """``serviceCIDR 10.96.0.0/12`` plus "(the default)" when the user did not write it."""
    label = f"{path.rpartition('.')[2]} {values[path]}"
    return f"{label} (the default)" if path in defaulted else label


def _capacity_problem(values: Mapping[str, Any], node_count: int) -> tuple[str, str] | None:
    """Whether the pod and underlay ranges have room for every node; returns the limiting
    field and the message, or None."""
    pod_cidr = values.get("spec.podCIDR")
    mask = values.get("spec.nodeCIDRMaskSize")
    underlay = values.get("spec.underlayCIDR")
    if pod_cidr is not None and mask is not None and pod_cidr.prefixlen < mask <= 32:
        ranges = 1 << (mask - pod_cidr.prefixlen)
        if node_count > ranges:
            return "spec.podCIDR", (
                f"podCIDR {pod_cidr} with nodeCIDRMaskSize {mask} holds {ranges} node ranges, "
                f"but {node_count} nodes are declared"
            )
    if underlay is not None:
        room = max(underlay.num_addresses - UNDERLAY_LAB_ADDRESSES, 0)
        pool = values.get("spec.loadBalancerCIDR")
        kept = 0 if pool is None else _node_addresses_in(underlay, pool)
        if node_count > room - kept:
            kept_note = f" ({kept} are kept for loadBalancerCIDR {pool})" if kept else ""
            # Blame the pool when the underlay alone would have had room.
            limit = "spec.loadBalancerCIDR" if node_count <= room else "spec.underlayCIDR"
            return limit, (
                f"underlayCIDR {underlay} has room for {room - kept} node addresses"
                f"{kept_note}, but {node_count} nodes are declared"
            )
    return None


def _node_addresses_in(underlay: IPv4Network, pool: IPv4Network) -> int:
    """How many of the addresses nodes may get (all but the lab's three) lie in ``pool``."""
    low = max(int(pool.network_address), int(underlay.network_address) + 2)
    high = min(int(pool.broadcast_address), int(underlay.broadcast_address) - 1)
    return max(high - low + 1, 0)


def _load_balancer_problems(values: Mapping[str, Any], defaulted: frozenset[str]) -> Problems:
    """The pool must be reachable from the external host over the underlay, and so inside
    it, without taking the lab's own addresses or clashing with the cluster's ranges."""
    path = "spec.loadBalancerCIDR"
    pool = values.get(path)
    # A default pool is cut from the underlay, so it could only repeat the underlay's problems.
    if pool is None or path in defaulted:
        return []
    problems: Problems = []
    underlay = values.get("spec.underlayCIDR")
    if underlay is not None and not pool.subnet_of(underlay):
        suggestion = default_load_balancer_cidr(underlay)
        example = f"e.g. {suggestion}, " if suggestion is not None else ""
        problems.append(
            (
                path,
                f"loadBalancerCIDR {pool} is not inside "
                f"{_shown(values, defaulted, 'spec.underlayCIDR')}: the lab's external host "
                "reaches LoadBalancer addresses over the underlay; "
                f"pick a range inside it ({example}or null for no LoadBalancer addresses)",
            )
        )
    elif underlay is not None:
        # LoadBalancer addresses are the pool's hosts(): all of a /31 or /32, else all but
        # the pool's own network and broadcast addresses.
        usable = pool.num_addresses <= 2
        lab = (
            (underlay.network_address, "the underlay's network address"),
            (underlay.network_address + 1, "the lab's external host"),
            (underlay.broadcast_address, "the underlay's broadcast address"),
        )
        for address, role in lab:
            edge = address in (pool.network_address, pool.broadcast_address)
            if address in pool and (usable or not edge):
                problems.append(
                    (
                        path,
                        f"loadBalancerCIDR {pool} includes {address}, {role}; "
                        "move the pool away from it",
                    )
                )
    for other in ("spec.podCIDR", "spec.serviceCIDR"):
        if other in values and pool.overlaps(values[other]):
            problems.append(
                (
                    path,
                    f"loadBalancerCIDR {pool} overlaps {_shown(values, defaulted, other)}; "
                    "the ranges must not overlap",
                )
            )
    return problems


def _relation_problems(values: Mapping[str, Any], defaulted: frozenset[str]) -> Problems:
    """Checks that involve more than one field; each skips fields that failed to parse."""
    problems: Problems = []
    cidr_paths = ("spec.podCIDR", "spec.serviceCIDR", "spec.underlayCIDR")
    for i, first in enumerate(cidr_paths):
        for second in cidr_paths[i + 1 :]:
            if first in values and second in values and values[first].overlaps(values[second]):
                # Report on the one the user wrote, so the line points at something real.
                where = second if second not in defaulted or first in defaulted else first
                problems.append(
                    (
                        where,
                        f"{_shown(values, defaulted, first)} overlaps "
                        f"{_shown(values, defaulted, second)}; the ranges must not overlap",
                    )
                )
    pod_cidr = values.get("spec.podCIDR")
    mask = values.get("spec.nodeCIDRMaskSize")
    if pod_cidr is not None and mask is not None and mask <= pod_cidr.prefixlen:
        problems.append(
            (
                "spec.nodeCIDRMaskSize",
                f"must be longer than the podCIDR prefix (/{pod_cidr.prefixlen}), got {mask}, "
                "so that each node gets a slice of the pod range",
            )
        )
    problems += _load_balancer_problems(values, defaulted)
    nodes = values.get("spec.nodes")
    capacity = None if nodes is None else _capacity_problem(values, len(nodes))
    if capacity is not None:
        limit, message = capacity
        # Point at what the user wrote: the node list, or else the range that is too small.
        where = "spec.nodes" if "spec.nodes" not in defaulted or limit in defaulted else limit
        problems.append((where, message))
    return problems
