"""The cut-down, frozen views of NetworkPolicies, pods and namespaces that the policy code reads.

Raw Kubernetes JSON is converted here, at the edge, and nowhere else. Only IPv4 is carried
(the policy table is an ``ip`` table): IPv6 pod addresses are left out, IPv6 ipBlocks are
refused. Label selectors are :class:`kubewire.api.selectors.LabelSelector`; policyTypes are
defaulted as the API server does.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from kubewire.api.selectors import LabelSelector, SelectorError
from kubewire.policy.errors import PolicyInputError

METADATA_NAME_LABEL = "kubernetes.io/metadata.name"
PROTOCOLS = ("TCP", "UDP", "SCTP")
INGRESS = "Ingress"
EGRESS = "Egress"

Labels = Mapping[str, str]


def _labels(raw: Any) -> Labels:
    return MappingProxyType({str(k): str(v) for k, v in dict(raw or {}).items()})


def _ipv4(value: Any) -> str | None:
    try:
        return str(ipaddress.IPv4Address(str(value)))
    except ValueError:
        return None


def _meta(obj: Mapping[str, Any], kind: str) -> tuple[str, str, Mapping[str, Any]]:
    meta = obj.get("metadata")
    if not isinstance(meta, Mapping) or not meta.get("name"):
        raise PolicyInputError(f"{kind} without metadata.name: {dict(obj)!r:.200}")
    return str(meta.get("namespace") or "default"), str(meta["name"]), meta


@dataclass(frozen=True, slots=True)
class NamespaceView:
    """A namespace and its labels, including the automatic ``kubernetes.io/metadata.name``."""

    name: str
    labels: Labels = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        labels = dict(self.labels)
        labels[METADATA_NAME_LABEL] = self.name  # the API server sets it and keeps it so
        object.__setattr__(self, "labels", MappingProxyType(labels))

    @classmethod
    def from_k8s(cls, obj: Mapping[str, Any] | str) -> NamespaceView:
        if isinstance(obj, str):
            return cls(obj)
        meta = obj.get("metadata")
        if not isinstance(meta, Mapping) or not meta.get("name"):
            raise PolicyInputError(f"Namespace without metadata.name: {dict(obj)!r:.200}")
        return cls(str(meta["name"]), _labels(meta.get("labels")))


@dataclass(frozen=True, slots=True)
class ContainerPort:
    name: str
    port: int
    protocol: str = "TCP"


@dataclass(frozen=True, slots=True)
class PodView:
    """What policies need of a pod: where it is, what it is called, what it serves."""

    namespace: str
    name: str
    ip: str | None
    node: str | None = None
    labels: Labels = field(default_factory=dict, hash=False)
    ports: tuple[ContainerPort, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", MappingProxyType(dict(self.labels)))

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def named_port(self, name: str, protocol: str) -> int | None:
        """The number of the container port called ``name`` with ``protocol``, if any."""
        for p in self.ports:
            if p.name == name and p.protocol == protocol:
                return p.port
        return None

    @classmethod
    def from_k8s(cls, obj: Mapping[str, Any]) -> PodView:
        namespace, name, meta = _meta(obj, "Pod")
        spec = obj.get("spec") or {}
        status = obj.get("status") or {}
        candidates = [status.get("podIP")] + [
            p.get("ip") for p in status.get("podIPs") or () if isinstance(p, Mapping)]
        ip = next((a for c in candidates if c and (a := _ipv4(c)) is not None), None)
        if status.get("phase") in ("Succeeded", "Failed"):
            ip = None  # finished: its address may already belong to a new pod
        ports = []
        for container in spec.get("containers") or ():
            for p in container.get("ports") or ():
                if p.get("name") and p.get("containerPort"):
                    ports.append(ContainerPort(str(p["name"]), int(p["containerPort"]),
                                               str(p.get("protocol") or "TCP")))
        return cls(namespace, name, ip, spec.get("nodeName"), _labels(meta.get("labels")),
                   tuple(ports))


@dataclass(frozen=True, slots=True)
class ExternalView:
    """A source or destination that is not a pod: an address outside the pod network, a
    node, a load balancer. Only ipBlock peers can match it."""

    ip: str

    @property
    def key(self) -> str:
        return self.ip


Endpoint = PodView | ExternalView


@dataclass(frozen=True, slots=True)
class IPBlockView:
    cidr: ipaddress.IPv4Network
    excepts: tuple[ipaddress.IPv4Network, ...] = ()

    def contains(self, ip: str) -> bool:
        address = ipaddress.IPv4Address(ip)
        return address in self.cidr and not any(address in e for e in self.excepts)

    def __str__(self) -> str:
        rest = f" except {', '.join(map(str, self.excepts))}" if self.excepts else ""
        return f"{self.cidr}{rest}"


@dataclass(frozen=True, slots=True)
class PeerView:
    """One ``from``/``to`` entry. Selectors None are absent; both absent means ipBlock."""

    pod_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    ip_block: IPBlockView | None = None

    def __str__(self) -> str:
        if self.ip_block is not None:
            return f"ipBlock {self.ip_block}"
        parts = []
        if self.namespace_selector is not None:
            parts.append(f"namespaces [{self.namespace_selector}]")
        if self.pod_selector is not None:
            parts.append(f"pods [{self.pod_selector}]")
        return " and ".join(parts)


@dataclass(frozen=True, slots=True)
class PortView:
    """``port`` None: every port of ``protocol``; a str: a named port of the destination."""

    protocol: str = "TCP"
    port: int | str | None = None
    end_port: int | None = None

    def __str__(self) -> str:
        if self.port is None:
            return f"{self.protocol} any port"
        end = f"-{self.end_port}" if self.end_port is not None else ""
        return f"{self.protocol} {self.port}{end}"


@dataclass(frozen=True, slots=True)
class RuleView:
    """An ingress or egress rule. ``peers`` None (or empty in the manifest): every peer;
    ``ports`` empty: every port and protocol."""

    peers: tuple[PeerView, ...] | None = None
    ports: tuple[PortView, ...] = ()


@dataclass(frozen=True, slots=True)
class PolicyView:
    namespace: str
    name: str
    pod_selector: LabelSelector = field(default_factory=LabelSelector)
    types: tuple[str, ...] = (INGRESS,)  # after defaulting; Ingress before Egress
    ingress: tuple[RuleView, ...] = ()
    egress: tuple[RuleView, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def rules(self, direction: str) -> tuple[RuleView, ...]:
        return self.ingress if direction == INGRESS else self.egress

    @classmethod
    def from_k8s(cls, obj: Mapping[str, Any]) -> PolicyView:
        """Raises PolicyInputError naming the field for what the API server would refuse."""
        namespace, name, _ = _meta(obj, "NetworkPolicy")
        where = f"NetworkPolicy {namespace}/{name}"
        spec = obj.get("spec")
        if not isinstance(spec, Mapping):
            raise PolicyInputError(f"{where}: spec is missing")
        pod_selector = _selector(spec.get("podSelector"), "spec.podSelector", where,
                                 required=True)
        assert pod_selector is not None
        raw_types = spec.get("policyTypes")
        if raw_types:
            bad = [t for t in raw_types if t not in (INGRESS, EGRESS)]
            if bad:
                raise PolicyInputError(f"{where}: spec.policyTypes: unknown {bad}")
            types = tuple(t for t in (INGRESS, EGRESS) if t in raw_types)
        else:
            # The API server's defaulting: Ingress always, Egress when egress rules exist.
            types = (INGRESS, EGRESS) if spec.get("egress") else (INGRESS,)
        rules: dict[str, tuple[RuleView, ...]] = {}
        for direction, peers_field in (("ingress", "from"), ("egress", "to")):
            out = []
            for i, raw in enumerate(spec.get(direction) or ()):
                path = f"spec.{direction}[{i}]"
                raw = raw or {}
                peers = raw.get(peers_field)
                out.append(RuleView(
                    None if not peers else tuple(
                        _peer(p, f"{path}.{peers_field}[{n}]", where)
                        for n, p in enumerate(peers)),
                    tuple(_port(p, f"{path}.ports[{n}]", where)
                          for n, p in enumerate(raw.get("ports") or ()))))
            rules[direction] = tuple(out)
        return cls(namespace, name, pod_selector, types, rules["ingress"], rules["egress"])


def _selector(raw: Any, path: str, where: str, required: bool = False) -> LabelSelector | None:
    if raw is None:
        if required:
            raise PolicyInputError(f"{where}: {path} is missing ({{}} selects every pod)")
        return None
    try:
        return LabelSelector.from_dict(raw)
    except SelectorError as exc:
        raise PolicyInputError(f"{where}: {path}.{exc}") from None


def _network(raw: Any, path: str, where: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.ip_network(str(raw), strict=False)
    except ValueError:
        raise PolicyInputError(f"{where}: {path}: {raw!r} is not a CIDR") from None
    if not isinstance(net, ipaddress.IPv4Network) or "/" not in str(raw):
        raise PolicyInputError(f"{where}: {path}: {raw!r} is not an IPv4 CIDR")
    return net


def _peer(raw: Any, path: str, where: str) -> PeerView:
    if not isinstance(raw, Mapping):
        raise PolicyInputError(f"{where}: {path}: a peer must be a mapping")
    block = raw.get("ipBlock")
    if block is not None:
        if raw.get("podSelector") is not None or raw.get("namespaceSelector") is not None:
            raise PolicyInputError(f"{where}: {path}: ipBlock with a selector")
        cidr = _network(block.get("cidr"), f"{path}.ipBlock.cidr", where)
        excepts = []
        for n, e in enumerate(block.get("except") or ()):
            net = _network(e, f"{path}.ipBlock.except[{n}]", where)
            if not net.subnet_of(cidr) or net.prefixlen == cidr.prefixlen:
                raise PolicyInputError(f"{where}: {path}.ipBlock.except[{n}]: {e} is not "
                                       f"inside cidr {block.get('cidr')}")
            excepts.append(net)
        return PeerView(ip_block=IPBlockView(cidr, tuple(excepts)))
    pods = _selector(raw.get("podSelector"), f"{path}.podSelector", where)
    namespaces = _selector(raw.get("namespaceSelector"), f"{path}.namespaceSelector", where)
    if pods is None and namespaces is None:
        raise PolicyInputError(f"{where}: {path}: a peer needs podSelector, "
                               "namespaceSelector or ipBlock")
    return PeerView(pods, namespaces)


def _port(raw: Any, path: str, where: str) -> PortView:
    if not isinstance(raw, Mapping):
        raise PolicyInputError(f"{where}: {path}: a port must be a mapping")
    protocol = str(raw.get("protocol") or "TCP")
    if protocol not in PROTOCOLS:
        raise PolicyInputError(f"{where}: {path}.protocol: {protocol!r} is not one of "
                               f"{', '.join(PROTOCOLS)}")
    port = raw.get("port")
    end = raw.get("endPort")
    if isinstance(port, str) and port.isdigit():
        port = int(port)
    numeric = isinstance(port, int) and not isinstance(port, bool)
    if port is not None and not isinstance(port, str) and not (numeric and 1 <= port <= 65535):
        raise PolicyInputError(f"{where}: {path}.port: {port!r} is not a port number")
    if end is not None and not (isinstance(port, int) and numeric and isinstance(end, int)
                                and port <= end <= 65535):
        raise PolicyInputError(f"{where}: {path}.endPort: {end!r} needs a numeric port "
                               "not above it")
    return PortView(protocol, port, end)


def views(objs: Iterable[Any], cls: type[Any]) -> tuple[list[Any], list[str]]:
    """Convert ``objs`` (dicts or views of ``cls``) and collect the conversion errors: a bad
    object is left out and named, and the rest keep working."""
    out, errors = [], []
    for obj in objs:
        if isinstance(obj, cls):
            out.append(obj)
            continue
        try:
            out.append(cls.from_k8s(obj))
        except PolicyInputError as exc:
            errors.append(str(exc))
    return out, errors
