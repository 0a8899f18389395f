"""The cut-down, frozen views of Services, EndpointSlices and the node that the proxy reads.

Raw Kubernetes JSON is converted here, at the edge, and nowhere else: the compiler only sees
these views. Only IPv4 is carried (the proxy programs an ``ip`` table); IPv6 addresses and
IPv6/FQDN slices are left out.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from kubewire.proxy.errors import ProxyInputError

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
DEFAULT_AFFINITY_TIMEOUT = 10800  # seconds; the API server's default for ClientIP
PROTOCOLS = ("TCP", "UDP", "SCTP")


_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4_RE = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")


def _ipv4(value: Any) -> str | None:
    """The address if it is an IPv4 address in canonical dotted-quad form, else None.

    A regex rather than ``ipaddress``, which costs ~2 us per address: a quarter of a
    10k-Service compile. Leading zeros are refused, as ``ipaddress`` refuses them.
    """
    text = value if isinstance(value, str) else str(value)
    return text if _IPV4_RE.fullmatch(text) else None


def ipv4_sort_key(ip: str) -> tuple[int, ...]:
    return tuple(map(int, ip.split(".")))


def _ipv4s(values: Any) -> tuple[str, ...]:
    out = {ip for v in values or () if (ip := _ipv4(v)) is not None}
    return tuple(out) if len(out) < 2 else tuple(sorted(out, key=ipv4_sort_key))


def _meta(obj: Mapping[str, Any], kind: str) -> tuple[str, str]:
    meta = obj.get("metadata")
    if not isinstance(meta, Mapping) or not meta.get("name"):
        raise ProxyInputError(f"{kind} without metadata.name: {dict(obj)!r:.200}")
    return str(meta.get("namespace") or "default"), str(meta["name"])


@dataclass(frozen=True, slots=True)
class NodeContext:
    """What the proxy needs to know about the node it programs.

    ``node_ips``: the node's underlay address(es); NodePorts answer on these only.
    ``cluster_cidr``: the pod network; traffic from outside it to a ClusterIP is masqueraded.
    ``masquerade_all``: masquerade all ClusterIP traffic (kube-proxy's --masquerade-all).
    ``service_cidr``: the Service range; new connections still addressed into it after DNAT
    (a port the Service does not define, or an address no Service holds) are rejected.
    """

    node_name: str
    node_ips: tuple[str, ...]
    cluster_cidr: str
    masquerade_all: bool = False
    service_cidr: str | None = None

    def __post_init__(self) -> None:
        ips = (self.node_ips,) if isinstance(self.node_ips, str) else tuple(self.node_ips)
        bad = [ip for ip in ips if _ipv4(ip) is None]
        if bad:
            raise ProxyInputError(f"node {self.node_name}: node_ips {bad} are not IPv4 "
                                  "addresses; give the node's underlay address(es)")
        object.__setattr__(self, "node_ips", _ipv4s(ips))
        try:
            net = ipaddress.IPv4Network(self.cluster_cidr)
        except ValueError as exc:
            raise ProxyInputError(f"node {self.node_name}: cluster_cidr "
                                  f"{self.cluster_cidr!r} is not an IPv4 CIDR ({exc}); "
                                  "give the pod network, e.g. 10.244.0.0/16") from None
        object.__setattr__(self, "cluster_cidr", str(net))
        if self.service_cidr is not None:
            try:
                services = ipaddress.IPv4Network(self.service_cidr)
            except ValueError as exc:
                raise ProxyInputError(f"node {self.node_name}: service_cidr "
                                      f"{self.service_cidr!r} is not an IPv4 CIDR ({exc}); "
                                      "give the Service range, e.g. 10.96.0.0/12") from None
            object.__setattr__(self, "service_cidr", str(services))


@dataclass(frozen=True, slots=True)
class ServicePortView:
    name: str
    port: int
    protocol: str  # TCP, UDP or SCTP
    node_port: int | None = None


@dataclass(frozen=True, slots=True)
class ServiceView:
    namespace: str
    name: str
    type: str = "ClusterIP"
    cluster_ips: tuple[str, ...] = ()
    ports: tuple[ServicePortView, ...] = ()
    external_ips: tuple[str, ...] = ()
    load_balancer_ips: tuple[str, ...] = ()
    affinity_timeout: int | None = None  # seconds when sessionAffinity is ClientIP
    external_local: bool = False  # externalTrafficPolicy: Local
    internal_local: bool = False  # internalTrafficPolicy: Local

    @property
    def proxied(self) -> bool:
        """Headless and ExternalName Services get no rules, as with kube-proxy."""
        return self.type != "ExternalName" and bool(self.cluster_ips)

    @classmethod
    def from_k8s(cls, obj: Mapping[str, Any]) -> ServiceView:
        namespace, name = _meta(obj, "Service")
        spec = obj.get("spec") or {}
        stype = str(spec.get("type") or "ClusterIP")
        raw_ips = list(spec.get("clusterIPs") or ())
        if not raw_ips and spec.get("clusterIP"):
            raw_ips = [spec["clusterIP"]]
        cluster_ips = () if "None" in raw_ips else _ipv4s(raw_ips)
        ports = []
        for p in spec.get("ports") or ():
            proto = str(p.get("protocol") or "TCP").upper()
            if proto not in PROTOCOLS:
                raise ProxyInputError(f"Service {namespace}/{name}: port protocol {proto!r} "
                                      f"is not one of {', '.join(PROTOCOLS)}")
            try:
                port = int(p["port"])
            except (KeyError, TypeError, ValueError):
                raise ProxyInputError(f"Service {namespace}/{name}: a port has no valid "
                                      f"'port' number: {p!r}") from None
            node_port = p.get("nodePort") if stype in ("NodePort", "LoadBalancer") else None
            ports.append(ServicePortView(str(p.get("name") or ""), port, proto,
                                         int(node_port) if node_port else None))
        lb_ips: tuple[str, ...] = ()
        if stype == "LoadBalancer":
            ingress = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress")
            lb_ips = _ipv4s(i.get("ip") for i in ingress or () if i.get("ip"))
        affinity = None
        if spec.get("sessionAffinity") == "ClientIP":
            cfg = ((spec.get("sessionAffinityConfig") or {}).get("clientIP") or {})
            affinity = int(cfg.get("timeoutSeconds") or DEFAULT_AFFINITY_TIMEOUT)
        return cls(
            namespace=namespace, name=name, type=stype, cluster_ips=cluster_ips,
            ports=tuple(sorted(ports, key=lambda p: (p.protocol, p.port))),
            external_ips=_ipv4s(spec.get("externalIPs")), load_balancer_ips=lb_ips,
            affinity_timeout=affinity,
            external_local=spec.get("externalTrafficPolicy") == "Local",
            internal_local=spec.get("internalTrafficPolicy") == "Local",
        )


@dataclass(frozen=True, slots=True)
class EndpointView:
    """One endpoint address with its conditions resolved as the API defines them:
    ready unset means ready, serving unset means "same as ready", terminating unset means
    not terminating."""

    address: str
    node_name: str | None = None
    ready: bool = True
    serving: bool = True
    terminating: bool = False


@dataclass(frozen=True, slots=True)
class SlicePortView:
    name: str
    port: int
    protocol: str


@dataclass(frozen=True, slots=True)
class SliceView:
    namespace: str
    service_name: str
    endpoints: tuple[EndpointView, ...] = ()
    ports: tuple[SlicePortView, ...] = ()
    name: str = ""

    @classmethod
    def from_k8s(cls, obj: Mapping[str, Any]) -> SliceView:
        namespace, name = _meta(obj, "EndpointSlice")
        labels = (obj.get("metadata") or {}).get("labels") or {}
        service = str(labels.get(SERVICE_NAME_LABEL) or "")
        if obj.get("addressType", "IPv4") != "IPv4" or not service:
            return cls(namespace, service, name=name)
        endpoints = []
        for ep in obj.get("endpoints") or ():
            addresses = ep.get("addresses") or ()
            # kube-proxy uses the first address only; the others are for other consumers.
            address = _ipv4(addresses[0]) if addresses else None
            if address is None:
                continue
            cond = ep.get("conditions") or {}
            ready = cond.get("ready") is not False
            serving = ready if cond.get("serving") is None else bool(cond["serving"])
            endpoints.append(EndpointView(address, ep.get("nodeName"), ready, serving,
                                          bool(cond.get("terminating"))))
        ports = []
        for p in obj.get("ports") or ():
            if p.get("port") is None:  # kube-proxy ignores ports without a number
                continue
            ports.append(SlicePortView(str(p.get("name") or ""), int(p["port"]),
                                       str(p.get("protocol") or "TCP").upper()))
        return cls(namespace, service, tuple(endpoints), tuple(ports), name)


_View = TypeVar("_View", ServiceView, SliceView)


class ViewCache:
    """Converts raw objects to views, reusing the view of an object whose
    ``metadata.resourceVersion`` has not changed since the last call (objects without one
    are converted every time). Views pass through untouched."""

    def __init__(self) -> None:
        self._services: dict[tuple[str, str], tuple[str, ServiceView]] = {}
        self._slices: dict[tuple[str, str], tuple[str, SliceView]] = {}

    def services(self, objs: Iterable[Mapping[str, Any] | ServiceView]) -> list[ServiceView]:
        out, self._services = self._convert(objs, ServiceView, self._services)
        return out

    def slices(self, objs: Iterable[Mapping[str, Any] | SliceView]) -> list[SliceView]:
        out, self._slices = self._convert(objs, SliceView, self._slices)
        return out

    def service(self, obj: Mapping[str, Any] | ServiceView) -> ServiceView:
        """One object, converted (or reused) and remembered for the next ``services()``."""
        return self._one(obj, ServiceView, self._services)

    def slice(self, obj: Mapping[str, Any] | SliceView) -> SliceView:
        return self._one(obj, SliceView, self._slices)

    def forget(self, kind: type[ServiceView] | type[SliceView], key: tuple[str, str]) -> None:
        (self._services if kind is ServiceView else self._slices).pop(key, None)

    @staticmethod
    def _one(obj: Mapping[str, Any] | _View, cls: type[_View],
             cache: dict[tuple[str, str], tuple[str, _View]]) -> _View:
        if isinstance(obj, cls):
            return obj
        raw: Mapping[str, Any] = obj  # type: ignore[assignment]  # not a view: a dict
        meta = raw.get("metadata") or {}
        version = meta.get("resourceVersion")
        if version is None:
            return cls.from_k8s(raw)
        key = (meta.get("namespace") or "default", meta.get("name") or "")
        hit = cache.get(key)
        if hit is None or hit[0] != version:
            hit = cache[key] = (str(version), cls.from_k8s(raw))
        return hit[1]

    @staticmethod
    def _convert(
        objs: Iterable[Mapping[str, Any] | _View], cls: type[_View],
        old: dict[tuple[str, str], tuple[str, _View]],
    ) -> tuple[list[_View], dict[tuple[str, str], tuple[str, _View]]]:
        out: list[_View] = []
        new: dict[tuple[str, str], tuple[str, _View]] = {}
        append, get = out.append, old.get
        for obj in objs:
            if isinstance(obj, cls):
                append(obj)
                continue
            raw: Mapping[str, Any] = obj  # type: ignore[assignment]  # not a view: a dict
            meta = raw.get("metadata") or {}
            version = meta.get("resourceVersion")
            if version is None:
                append(cls.from_k8s(raw))
                continue
            key = (meta.get("namespace") or "default", meta.get("name") or "")
            hit = get(key)
            if hit is None or hit[0] != version:
                hit = (str(version), cls.from_k8s(raw))
            new[key] = hit
            append(hit[1])
        return out, new
