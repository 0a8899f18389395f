"""Cut-down frozen views of Services, EndpointSlices and Pods: only what DNS answers from.

Raw Kubernetes JSON is converted here and nowhere else. Names are lowercased on the way in:
every DNS comparison is case-insensitive (spec 2.1), so the zone only ever holds lowercase.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubewire.dns.errors import DnsInputError
from kubewire.dns.names import ip_address, is_label, is_port_name

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
PROTOCOLS = ("TCP", "UDP", "SCTP")


def _meta(obj: Mapping[str, Any], kind: str) -> tuple[str, str, Mapping[str, Any]]:
    meta = obj.get("metadata")
    if not isinstance(meta, Mapping) or not meta.get("name"):
        raise DnsInputError(f"{kind} without metadata.name: {dict(obj)!r:.200}")
    ns = str(meta.get("namespace") or "default").lower()
    if not is_label(ns):
        raise DnsInputError(f"{kind} {meta['name']}: namespace {ns!r} is not a DNS label")
    return ns, str(meta["name"]).lower(), meta


def _ports(raw: Any) -> tuple[PortView, ...]:
    out = []
    for p in raw or ():
        if not isinstance(p, Mapping):
            continue
        name = str(p.get("name") or "").lower()
        port = p.get("port")
        proto = str(p.get("protocol") or "TCP").upper()
        # Unnamed ports have no SRV record (spec 2.3.2); keeping them would only cost memory.
        if not is_port_name(name) or not isinstance(port, int) or proto not in PROTOCOLS:
            continue
        if 0 < port < 65536:
            out.append(PortView(name, port, proto.lower()))
    return tuple(sorted(set(out)))


@dataclass(frozen=True, slots=True, order=True)
class PortView:
    name: str
    port: int
    protocol: str  # lowercase: it becomes the `_<proto>` label


@dataclass(frozen=True, slots=True)
class ServiceView:
    """``cluster_ips`` empty and ``external_name`` None means headless."""

    namespace: str
    name: str
    cluster_ips: tuple[str, ...]
    ports: tuple[PortView, ...]
    external_name: str | None = None
    publish_not_ready: bool = False

    @property
    def headless(self) -> bool:
        return not self.cluster_ips and self.external_name is None

    @classmethod
    def from_k8s(cls, obj: Mapping[str, Any]) -> ServiceView:
        ns, name, _ = _meta(obj, "Service")
        if not is_label(name):
            raise DnsInputError(f"Service {ns}/{name}: the name is not a DNS label")
        spec = obj.get("spec") or {}
        if spec.get("type") == "ExternalName":
            target = spec.get("externalName")
            if not target:
                raise DnsInputError(f"Service {ns}/{name}: type ExternalName needs "
                                    "spec.externalName (a DNS name such as db.example.com)")
            return cls(ns, name, (), (), external_name=str(target))
        raw_ips = spec.get("clusterIPs") or [spec.get("clusterIP")]
        ips = tuple(ip for v in raw_ips if v and v != "None" and (ip := ip_address(str(v))))
        return cls(ns, name, ips, _ports(spec.get("ports")),
                   publish_not_ready=bool(spec.get("publishNotReadyAddresses")))


@dataclass(frozen=True, slots=True)
class EndpointView:
    addresses: tuple[str, ...]
    ready: bool
    hostname: str | None = None


@dataclass(frozen=True, slots=True)
class SliceView:
    namespace: str
    service: str
    endpoints: tuple[EndpointView, ...]
    ports: tuple[PortView, ...]

    @classmethod
    def from_k8s(cls, obj: Mapping[str, Any]) -> SliceView:
        ns, _name, meta = _meta(obj, "EndpointSlice")
        service = str((meta.get("labels") or {}).get(SERVICE_NAME_LABEL) or "").lower()
        eps = []
        for ep in obj.get("endpoints") or ():
            if not isinstance(ep, Mapping):
                continue
            addrs = tuple(a for v in ep.get("addresses") or () if (a := ip_address(str(v))))
            # EndpointSlice v1: a missing ready condition means "unknown", read as ready.
            ready = (ep.get("conditions") or {}).get("ready") is not False
            host = ep.get("hostname")
            host = str(host).lower() if host and is_label(str(host).lower()) else None
            if addrs:
                eps.append(EndpointView(addrs, ready, host))
        return cls(ns, service, tuple(eps), _ports(obj.get("ports")))


@dataclass(frozen=True, slots=True)
class PodView:
    namespace: str
    name: str
    ip: str | None

    @classmethod
    def from_k8s(cls, obj: Mapping[str, Any]) -> PodView:
        ns, name, _ = _meta(obj, "Pod")
        ip = (obj.get("status") or {}).get("podIP")
        return cls(ns, name, ip_address(str(ip)) if ip else None)
