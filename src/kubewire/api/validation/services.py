"""Services: type, cluster IP (inside the Cluster's serviceCIDR), ports, node ports, selector
and traffic policies. Clashes between Services are checked in :mod:`across`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubewire.api.names import (
    dns1123_label_problems,
    dns1123_subdomain_problems,
    iana_svc_name_problems,
)
from kubewire.api.objects import index_path
from kubewire.api.validation.common import (
    PORT_NUMBER,
    PROTOCOLS,
    Checker,
    check_ip,
    check_labels,
)

SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
NODE_PORT_RANGE = (30000, 32767)  # the API server's default --service-node-port-range

_TRAFFIC_POLICIES = ("Cluster", "Local")
_SESSION_AFFINITIES = ("None", "ClientIP")
_SERVICE_PORT_FIELDS = ("name", "protocol", "appProtocol", "port", "targetPort", "nodePort")


def _check_cluster_ip(c: Checker, spec: Mapping[str, Any], service_type: str) -> None:
    value = spec.get("clusterIP")
    if value in (None, ""):
        return
    if service_type == "ExternalName":
        c.error("spec.clusterIP", "must be empty for an ExternalName Service")
        return
    if value == "None":
        if service_type != "ClusterIP":
            c.error(
                "spec.clusterIP",
                f'may be "None" (headless) only when type is ClusterIP, not {service_type}',
            )
        return
    address = check_ip(c, value, "spec.clusterIP")
    if address is None:
        return
    cidr = c.cluster.service_cidr
    if address not in cidr:
        c.error(
            "spec.clusterIP",
            f"{address} is not in the service range {cidr} (the Cluster's serviceCIDR); "
            "pick an address inside it, or leave clusterIP unset",
        )
    elif address in (cidr.network_address, cidr.broadcast_address):
        c.error("spec.clusterIP", f"{address} is the network or broadcast address of {cidr}")


def _check_service_port(
    c: Checker,
    raw: Any,
    path: str,
    service_type: str,
    names: dict[str, str],
    seen: dict[tuple[int, str], str],
    named_required: bool,
) -> None:
    port = c.mapping(raw, path, required="a Service port needs port")
    if port is None:
        return
    c.known_fields(port, path, _SERVICE_PORT_FIELDS)
    number = c.port(port.get("port"), f"{path}.port")
    protocol = c.choice(port.get("protocol"), f"{path}.protocol", PROTOCOLS) or "TCP"
    name = c.string(
        port.get("name"),
        f"{path}.name",
        required="ports must be named when a Service has more than one" if named_required else "",
    )
    c.unique_name(name, path, dns1123_label_problems, "port name", names)
    if number is not None:
        if (number, protocol) in seen:
            c.error(path, f"duplicate port {number}/{protocol} (also {seen[number, protocol]})")
        seen.setdefault((number, protocol), path)
    target = port.get("targetPort")
    if isinstance(target, str):
        if target.isdigit():
            c.error(
                f"{path}.targetPort",
                f'"{target}" is a string, so it names a container port; write {target} without '
                "quotes for a port number",
            )
        else:
            c.names(target, f"{path}.targetPort", iana_svc_name_problems, "target port name")
    elif target is not None:
        c.port(target, f"{path}.targetPort", f"{PORT_NUMBER} or a port name")
    if port.get("nodePort") not in (None, 0):
        if service_type not in ("NodePort", "LoadBalancer"):
            c.error(
                f"{path}.nodePort",
                f"may not be used when type is {service_type}; use NodePort or LoadBalancer",
            )
        else:
            low, high = NODE_PORT_RANGE
            c.integer(port["nodePort"], f"{path}.nodePort", low, high, f"in the range {low}-{high}")


def check_service(c: Checker) -> None:
    spec = c.mapping(c.obj.get("spec"), "spec") or {}
    service_type = c.choice(spec.get("type"), "spec.type", SERVICE_TYPES) or "ClusterIP"
    _check_cluster_ip(c, spec, service_type)
    headless = spec.get("clusterIP") == "None"
    if service_type == "ExternalName":
        external = c.string(
            spec.get("externalName"),
            "spec.externalName",
            required="an ExternalName Service needs the DNS name it aliases",
        )
        if external is not None:
            c.names(
                external.removesuffix("."),
                "spec.externalName",
                dns1123_subdomain_problems,
                "externalName",
            )
    ports = c.sequence(spec.get("ports"), "spec.ports")
    if not ports and service_type != "ExternalName" and not headless:
        c.error("spec.ports", "required field is missing; a Service needs at least one port")
    names: dict[str, str] = {}
    seen: dict[tuple[int, str], str] = {}
    for index, raw in enumerate(ports or []):
        _check_service_port(
            c,
            raw,
            index_path("spec.ports", index),
            service_type,
            names,
            seen,
            named_required=len(ports or []) > 1,
        )
    check_labels(c, spec.get("selector"), "spec.selector", "selector")
    c.choice(spec.get("sessionAffinity"), "spec.sessionAffinity", _SESSION_AFFINITIES)
    c.choice(spec.get("internalTrafficPolicy"), "spec.internalTrafficPolicy", _TRAFFIC_POLICIES)
    external_policy = c.choice(
        spec.get("externalTrafficPolicy"), "spec.externalTrafficPolicy", _TRAFFIC_POLICIES
    )
    if external_policy is not None and service_type not in ("NodePort", "LoadBalancer"):
        c.error(
            "spec.externalTrafficPolicy",
            f"may only be set when type is NodePort or LoadBalancer, not {service_type}",
        )
