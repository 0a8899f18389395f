"""Service advertisement: configured ranges from every node, /32s for Local-policy Services
only from nodes with a ready endpoint and only inside an advertised range."""

from __future__ import annotations

from ipaddress import IPv4Network
from typing import Any

from kubewire.bgpnet import BgpSettings, service_prefixes

SETTINGS = BgpSettings.from_obj({"metadata": {"name": "default"}, "spec": {
    "serviceClusterIPs": [{"cidr": "10.96.0.0/12"}],
    "serviceExternalIPs": [{"cidr": "192.0.2.0/24"}],
    "serviceLoadBalancerIPs": [{"cidr": "172.18.255.0/24"}],
}})
RANGES = ["10.96.0.0/12", "172.18.255.0/24", "192.0.2.0/24"]


def service(name: str, policy: str, cluster_ip: str, external: list[str] | None = None,
            ingress: list[str] | None = None) -> dict[str, Any]:
    return {
        "kind": "Service",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"type": "LoadBalancer", "clusterIP": cluster_ip, "clusterIPs": [cluster_ip],
                 "externalTrafficPolicy": policy, "externalIPs": external or []},
        "status": {"loadBalancer": {"ingress": [{"ip": ip} for ip in ingress or []]}},
    }


def endpoints(service_name: str, *nodes: tuple[str, bool | None]) -> dict[str, Any]:
    eps = []
    for node, ready in nodes:
        ep: dict[str, Any] = {"addresses": ["10.244.1.5"], "nodeName": node}
        if ready is not None:
            ep["conditions"] = {"ready": ready}
        eps.append(ep)
    return {"kind": "EndpointSlice",
            "metadata": {"name": f"{service_name}-x", "namespace": "shop",
                         "labels": {"kubernetes.io/service-name": service_name}},
            "addressType": "IPv4", "endpoints": eps}


SERVICES = [
    service("web", "Cluster", "10.96.0.10", ingress=["172.18.255.10"]),
    service("local", "Local", "10.96.0.20", external=["192.0.2.5", "198.51.100.7"],
            ingress=["172.18.255.20"]),
    service("headless", "Local", "None"),
]
SLICES = [
    endpoints("web", ("node-1", True), ("node-2", True)),
    endpoints("local", ("node-1", True), ("node-2", False), ("node-3", None)),
    endpoints("headless", ("node-2", True)),
]


def shown(prefixes: tuple[IPv4Network, ...]) -> list[str]:
    return [str(p) for p in prefixes]


def test_local_service_host_routes_only_where_a_ready_endpoint_is() -> None:
    local_32s = ["10.96.0.20/32", "172.18.255.20/32", "192.0.2.5/32"]
    assert shown(service_prefixes("node-1", SETTINGS, SERVICES, SLICES)) == sorted(
        RANGES + local_32s, key=lambda t: IPv4Network(t))
    # node-2's endpoint is not ready; node-3's has no ready condition, which means ready.
    assert shown(service_prefixes("node-2", SETTINGS, SERVICES, SLICES)) == RANGES
    assert "10.96.0.20/32" in shown(service_prefixes("node-3", SETTINGS, SERVICES, SLICES))
    # A node without endpoints still advertises the ranges (Cluster policy spreads traffic).
    assert shown(service_prefixes("node-9", SETTINGS, SERVICES, SLICES)) == RANGES


def test_addresses_outside_the_advertised_ranges_are_never_advertised() -> None:
    prefixes = shown(service_prefixes("node-1", SETTINGS, SERVICES, SLICES))
    assert "198.51.100.7/32" not in prefixes
    only_cluster = BgpSettings.from_obj({"metadata": {"name": "default"}, "spec": {
        "serviceClusterIPs": [{"cidr": "10.96.0.0/12"}]}})
    assert shown(service_prefixes("node-1", only_cluster, SERVICES, SLICES)) == [
        "10.96.0.0/12", "10.96.0.20/32"]
    assert service_prefixes("node-1", BgpSettings(), SERVICES, SLICES) == ()


def test_endpoints_of_another_namespace_do_not_count() -> None:
    other = endpoints("local", ("node-2", True))
    other["metadata"]["namespace"] = "elsewhere"
    assert shown(service_prefixes("node-2", SETTINGS, SERVICES, [other])) == RANGES
