"""What a node advertises for Services (Calico's service IP advertisement)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from ipaddress import IPv4Address, IPv4Network, ip_address
from typing import Any

from kubewire.bgpnet.views import BgpSettings

__all__ = ["LABEL_SERVICE_NAME", "service_prefixes"]

LABEL_SERVICE_NAME = "kubernetes.io/service-name"


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _ipv4(text: Any) -> IPv4Address | None:
    try:
        address = ip_address(str(text))
    except ValueError:
        return None  # "None" (headless), "", hostnames: nothing to advertise
    return address if isinstance(address, IPv4Address) else None


def _nodes_with_ready_endpoints(
    endpointslices: Iterable[Mapping[str, Any]],
) -> dict[tuple[str, str], set[str]]:
    """(namespace, service) -> nodes hosting a ready endpoint. A missing ``ready`` condition
    means ready, as the EndpointSlice API defines it."""
    out: dict[tuple[str, str], set[str]] = {}
    for eps in endpointslices:
        metadata = _mapping(eps.get("metadata"))
        service = _mapping(metadata.get("labels")).get(LABEL_SERVICE_NAME)
        if not service:
            continue
        key = (str(metadata.get("namespace") or "default"), str(service))
        for endpoint in eps.get("endpoints") or []:
            endpoint = _mapping(endpoint)
            ready = _mapping(endpoint.get("conditions")).get("ready")
            node = endpoint.get("nodeName")
            if node and ready is not False:
                out.setdefault(key, set()).add(str(node))
    return out


def _inside(address: IPv4Address, ranges: tuple[IPv4Network, ...]) -> bool:
    return any(address in r for r in ranges)


def service_prefixes(
    node_name: str,
    settings: BgpSettings,
    services: Iterable[Mapping[str, Any]],
    endpointslices: Iterable[Mapping[str, Any]],
) -> tuple[IPv4Network, ...]:
    """Sorted, without duplicates: every configured service range (from every node), plus a
    /32 for each cluster IP, external IP and LoadBalancer ingress IP of a Service with
    ``externalTrafficPolicy: Local`` when this node hosts a ready endpoint of it and the
    address lies inside the matching advertised range. The /32 draws traffic (longest
    prefix wins) only to nodes that can serve it without a second hop, which keeps the
    client's source address."""
    prefixes: set[IPv4Network] = {
        *settings.service_cluster_ips,
        *settings.service_external_ips,
        *settings.service_load_balancer_ips,
    }
    hosts = _nodes_with_ready_endpoints(endpointslices)
    for svc in services:
        spec = _mapping(svc.get("spec"))
        if spec.get("externalTrafficPolicy") != "Local":
            continue
        metadata = _mapping(svc.get("metadata"))
        key = (str(metadata.get("namespace") or "default"), str(metadata.get("name")))
        if node_name not in hosts.get(key, ()):
            continue
        cluster_ips = spec.get("clusterIPs") or [spec.get("clusterIP")]
        ingress = _mapping(_mapping(svc.get("status")).get("loadBalancer")).get("ingress")
        candidates = [
            *((ip, settings.service_cluster_ips) for ip in cluster_ips),
            *((ip, settings.service_external_ips) for ip in spec.get("externalIPs") or []),
            *((_mapping(i).get("ip"), settings.service_load_balancer_ips) for i in ingress or []),
        ]
        for text, ranges in candidates:
            address = _ipv4(text)
            if address is not None and _inside(address, ranges):
                prefixes.add(IPv4Network(address))
    return tuple(sorted(prefixes))
