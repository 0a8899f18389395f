"""Frozen views of Nodes, the BGPConfiguration and BGPPeers: only what the plan needs.

The objects are normally validated already (:mod:`kubewire.api.validation.calico`), but the
views check again what they rely on, because an agent may be handed objects from a store that
someone else filled.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, ip_address, ip_network
from types import MappingProxyType
from typing import Any

from kubewire.api.calicoselectors import (
    All,
    CalicoSelector,
    CalicoSelectorError,
    parse_calico_selector,
)
from kubewire.api.validation.calico import (
    DEFAULT_AS_NUMBER,
    DEFAULT_LISTEN_PORT,
    parse_as_number,
    parse_peer_ip,
)
from kubewire.bgpd.config import BGP_PORT
from kubewire.bgpnet.errors import DuplicateBgpConfiguration, InvalidObject, NodeWithoutAddress

__all__ = [
    "ANNOTATION_AS_NUMBER",
    "ANNOTATION_RR_CLUSTER_ID",
    "SECRETS_NAMESPACE",
    "BgpNode",
    "BgpSettings",
    "PeerSpec",
    "SecretKeyRef",
]

# The annotations Calico's Kubernetes datastore keeps a node's BGP spec in.
ANNOTATION_AS_NUMBER = "projectcalico.org/ASNumber"
ANNOTATION_RR_CLUSTER_ID = "projectcalico.org/RouteReflectorClusterID"


# BGP passwords are keys of Secrets in the namespace calico-node runs in (kube-system in a
# manifest install; calico-system under the operator).
SECRETS_NAMESPACE = "kube-system"


@dataclass(frozen=True, slots=True)
class SecretKeyRef:
    """A password: key ``key`` of the Secret ``name`` in ``SECRETS_NAMESPACE``."""

    name: str
    key: str

    def resolve(self, secrets: Mapping[str, Mapping[str, str]], where: str) -> str:
        """The password, from ``secrets`` (Secret name -> decoded data)."""
        data = secrets.get(self.name)
        if data is None:
            raise InvalidObject(where, f"Secret {SECRETS_NAMESPACE}/{self.name} does not exist")
        if self.key not in data:
            raise InvalidObject(where, f'Secret {SECRETS_NAMESPACE}/{self.name} has no key '
                                f'"{self.key}"')
        return data[self.key]


def _secret_ref(where: str, value: Any) -> SecretKeyRef | None:
    if value is None:
        return None
    ref = _mapping(_mapping(value).get("secretKeyRef"))
    name, key = ref.get("name"), ref.get("key")
    if not isinstance(name, str) or not isinstance(key, str) or not name or not key:
        raise InvalidObject(where, "write secretKeyRef: {name: SECRET, key: KEY}")
    return SecretKeyRef(name, key)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _name(obj: Mapping[str, Any]) -> str:
    return str(_mapping(obj.get("metadata")).get("name") or "")


def _string_map(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in _mapping(value).items()}


@dataclass(frozen=True, slots=True)
class BgpNode:
    """A node as BGP sees it. ``asn`` None means the cluster's AS; ``rr_cluster_id`` set
    makes the node a route reflector."""

    name: str
    address: IPv4Address
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)
    asn: int | None = None
    rr_cluster_id: IPv4Address | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", MappingProxyType(dict(self.labels)))

    @property
    def is_reflector(self) -> bool:
        return self.rr_cluster_id is not None

    @classmethod
    def from_node(cls, obj: Mapping[str, Any]) -> BgpNode:
        """From a v1 Node; per-node AS and reflector cluster ID come from Calico's
        annotations (a kubewire Cluster sets them in spec.nodes[].annotations)."""
        name = _name(obj)
        metadata = _mapping(obj.get("metadata"))
        labels = _string_map(metadata.get("labels"))
        annotations = _string_map(metadata.get("annotations"))
        address = None
        for entry in _mapping(obj.get("status")).get("addresses") or []:
            if isinstance(entry, Mapping) and entry.get("type") == "InternalIP":
                try:
                    candidate = ip_address(str(entry.get("address")))
                except ValueError:
                    continue
                if isinstance(candidate, IPv4Address):
                    address = candidate
                    break
        if address is None:
            raise NodeWithoutAddress(name)
        asn = None
        raw_asn = annotations.get(ANNOTATION_AS_NUMBER)
        if raw_asn is not None:
            asn = parse_as_number(raw_asn)
            if asn is None:
                raise InvalidObject(
                    f"Node/{name} {ANNOTATION_AS_NUMBER}",
                    f"{raw_asn!r} is not an AS number 1-4294967295 (or asdot, e.g. 64512.100)",
                )
        cluster_id = None
        raw_id = annotations.get(ANNOTATION_RR_CLUSTER_ID)
        if raw_id:
            try:
                parsed = ip_address(raw_id)
            except ValueError:
                parsed = None
            if not isinstance(parsed, IPv4Address):
                raise InvalidObject(
                    f"Node/{name} {ANNOTATION_RR_CLUSTER_ID}",
                    f"{raw_id!r} is not a cluster ID; write it as an IPv4 address, e.g. 244.0.0.1",
                )
            cluster_id = parsed
        return cls(name, address, labels, asn, cluster_id)


def _networks(where: str, value: Any) -> tuple[IPv4Network, ...]:
    out = []
    for index, item in enumerate(value or []):
        text = _mapping(item).get("cidr")
        try:
            network = ip_network(str(text))
        except ValueError:
            network = None
        if not isinstance(network, IPv4Network):
            raise InvalidObject(f"{where}[{index}].cidr", f"{text!r} is not an IPv4 CIDR")
        out.append(network)
    return tuple(sorted(set(out)))


@dataclass(frozen=True, slots=True)
class BgpSettings:
    """The cluster-wide BGP settings (Calico's BGPConfiguration "default")."""

    asn: int = DEFAULT_AS_NUMBER
    mesh: bool = True
    listen_port: int = DEFAULT_LISTEN_PORT
    service_cluster_ips: tuple[IPv4Network, ...] = ()
    service_external_ips: tuple[IPv4Network, ...] = ()
    service_load_balancer_ips: tuple[IPv4Network, ...] = ()
    mesh_password: SecretKeyRef | None = None

    @classmethod
    def from_obj(cls, obj: Mapping[str, Any] | None) -> BgpSettings:
        """From a BGPConfiguration; None gives Calico's defaults (AS 64512, mesh on)."""
        if obj is None:
            return cls()
        where = f"BGPConfiguration/{_name(obj)}"
        spec = _mapping(obj.get("spec"))
        asn = DEFAULT_AS_NUMBER
        if spec.get("asNumber") is not None:
            parsed = parse_as_number(spec["asNumber"])
            if parsed is None:
                raise InvalidObject(f"{where} spec.asNumber",
                                    f"{spec['asNumber']!r} is not an AS number")
            asn = parsed
        mesh = spec.get("nodeToNodeMeshEnabled")
        port = spec.get("listenPort")
        return cls(
            asn=asn,
            mesh=True if mesh is None else bool(mesh),
            listen_port=DEFAULT_LISTEN_PORT if port is None else int(port),
            service_cluster_ips=_networks(f"{where} spec.serviceClusterIPs",
                                          spec.get("serviceClusterIPs")),
            service_external_ips=_networks(f"{where} spec.serviceExternalIPs",
                                           spec.get("serviceExternalIPs")),
            service_load_balancer_ips=_networks(f"{where} spec.serviceLoadBalancerIPs",
                                                spec.get("serviceLoadBalancerIPs")),
            mesh_password=_secret_ref(f"{where} spec.nodeMeshPassword",
                                      spec.get("nodeMeshPassword")),
        )

    @classmethod
    def from_objects(cls, objs: list[Mapping[str, Any]]) -> BgpSettings:
        """From every BGPConfiguration in the store: none gives the defaults, two are an
        error (DuplicateBgpConfiguration)."""
        if len(objs) > 1:
            raise DuplicateBgpConfiguration([_name(o) for o in objs])
        return cls.from_obj(objs[0] if objs else None)


def _selector(where: str, value: Any) -> CalicoSelector | None:
    if value is None or value == "":
        return None
    try:
        return parse_calico_selector(str(value))
    except CalicoSelectorError as exc:
        raise InvalidObject(where, f"invalid selector {value!r}: {exc}") from None


@dataclass(frozen=True, slots=True)
class PeerSpec:
    """One BGPPeer. Either ``peer_selector`` (other nodes) or ``peer_ip`` + ``asn`` (an
    external router) is set. ``use_node_ip`` is sourceAddress UseNodeIP (the default)."""

    name: str
    node: str | None = None
    node_selector: CalicoSelector = field(default_factory=All)
    peer_selector: CalicoSelector | None = None
    peer_ip: IPv4Address | None = None
    port: int = BGP_PORT
    asn: int | None = None
    keep_next_hop: bool = False
    ttl_security: int | None = None
    use_node_ip: bool = True
    password: SecretKeyRef | None = None

    def applies_to(self, node: BgpNode) -> bool:
        """Whether ``node`` is a local end of this peering (node, nodeSelector, or all)."""
        if self.node is not None:
            return node.name == self.node
        return self.node_selector.matches(node.labels)

    @classmethod
    def from_obj(cls, obj: Mapping[str, Any]) -> PeerSpec:
        name = _name(obj)
        where = f"BGPPeer/{name}"
        spec = _mapping(obj.get("spec"))
        if spec.get("filters"):
            raise InvalidObject(f"{where} spec.filters", "BGPFilter is not supported")
        node = spec.get("node") or None
        node_selector = _selector(f"{where} spec.nodeSelector", spec.get("nodeSelector"))
        if node is not None and node_selector is not None:
            raise InvalidObject(f"{where} spec.nodeSelector", "node and nodeSelector are exclusive")
        peer_selector = _selector(f"{where} spec.peerSelector", spec.get("peerSelector"))
        raw_ip = spec.get("peerIP") or None
        raw_asn = spec.get("asNumber")
        peer_ip, port, asn = None, BGP_PORT, None
        if peer_selector is not None:
            if raw_ip is not None or raw_asn is not None:
                raise InvalidObject(f"{where} spec.peerSelector",
                                    "peerIP and asNumber must be empty with peerSelector")
        else:
            if raw_ip is None or raw_asn is None:
                raise InvalidObject(f"{where} spec",
                                    "needs peerIP and asNumber, or peerSelector")
            try:
                peer_ip, given_port = parse_peer_ip(str(raw_ip))
            except ValueError as exc:
                raise InvalidObject(f"{where} spec.peerIP", f"{raw_ip!r} {exc}") from None
            port = given_port or BGP_PORT
            asn = parse_as_number(raw_asn)
            if asn is None:
                raise InvalidObject(f"{where} spec.asNumber", f"{raw_asn!r} is not an AS number")
        ttl = spec.get("ttlSecurity")
        return cls(
            name=name,
            node=str(node) if node is not None else None,
            node_selector=node_selector or All(),
            peer_selector=peer_selector,
            peer_ip=peer_ip,
            port=port,
            asn=asn,
            keep_next_hop=bool(spec.get("keepOriginalNextHop", False)),
            ttl_security=int(ttl) if ttl else None,  # 0 is Calico's "off"
            use_node_ip=spec.get("sourceAddress", "UseNodeIP") != "None",
            password=_secret_ref(f"{where} spec.password", spec.get("password")),
        )
