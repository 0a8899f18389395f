"""EndpointSlices written by hand, for Services without a selector: address type, endpoints
(addresses, conditions, names) and ports, with the API server's limits.

kubewire serves IPv4 only, so IPv6 and FQDN slices are refused rather than silently ignored.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from kubewire.api.errors import show_value
from kubewire.api.names import (
    dns1123_label_problems,
    dns1123_subdomain_problems,
    label_key_problems,
)
from kubewire.api.objects import child_path, index_path
from kubewire.api.validation.common import PROTOCOLS, Checker

ADDRESS_TYPES = ("IPv4", "IPv6", "FQDN")
# The label that ties a slice to its Service; kube-proxy and CoreDNS select slices by it.
LABEL_SERVICE_NAME = "kubernetes.io/service-name"
MAX_ENDPOINTS = 1000  # per slice, as the API server enforces
MAX_ADDRESSES = 100  # per endpoint

_ENDPOINT_FIELDS = (
    "addresses",
    "conditions",
    "hostname",
    "nodeName",
    "zone",
    "targetRef",
    "hints",
    "deprecatedTopology",
)
_CONDITION_FIELDS = ("ready", "serving", "terminating")
_PORT_FIELDS = ("name", "protocol", "port", "appProtocol")
# The API server's ValidateEndpointIP: addresses no endpoint can be reached at.
_LINK_LOCAL_MULTICAST = ipaddress.IPv4Network("224.0.0.0/24")


def _endpoint_ip_problem(address: ipaddress.IPv4Address) -> str:
    if address.is_unspecified:
        return "may not be unspecified (0.0.0.0)"
    if address.is_loopback:
        return "may not be in the loopback range (127.0.0.0/8)"
    if address.is_link_local:
        return "may not be in the link-local range (169.254.0.0/16)"
    if address in _LINK_LOCAL_MULTICAST:
        return "may not be in the link-local multicast range (224.0.0.0/24)"
    return ""


def _check_addresses(c: Checker, value: Any, path: str, check_ipv4: bool) -> None:
    addresses = c.sequence(value, path, required="an endpoint needs at least one address")
    if addresses is None:
        return
    if not addresses:
        c.error(path, "must contain at least 1 address")
    elif len(addresses) > MAX_ADDRESSES:
        c.error(path, f"must have at most {MAX_ADDRESSES} addresses, got {len(addresses)}")
    for index, raw in enumerate(addresses):
        address_path = index_path(path, index)
        text = c.string(raw, address_path, required="write the endpoint's address")
        if text is None or not check_ipv4:
            continue
        try:
            address = ipaddress.IPv4Address(text)
        except ValueError:
            c.error(address_path, f"must be a valid IPv4 address, got {show_value(raw)}")
            continue
        problem = _endpoint_ip_problem(address)
        if problem:
            c.error(address_path, f"{text} {problem}")


def _check_endpoint(c: Checker, raw: Any, path: str, check_ipv4: bool) -> None:
    endpoint = c.mapping(raw, path, required="an endpoint needs addresses")
    if endpoint is None:
        return
    c.known_fields(endpoint, path, _ENDPOINT_FIELDS)
    _check_addresses(c, endpoint.get("addresses"), f"{path}.addresses", check_ipv4)
    conditions = c.mapping(endpoint.get("conditions"), f"{path}.conditions")
    if conditions is not None:
        c.known_fields(conditions, f"{path}.conditions", _CONDITION_FIELDS)
        for key in _CONDITION_FIELDS:
            c.boolean(conditions.get(key), f"{path}.conditions.{key}")
    hostname = c.string(endpoint.get("hostname"), f"{path}.hostname")
    if hostname is not None:
        c.names(hostname, f"{path}.hostname", dns1123_label_problems, "hostname")
    node_name = c.string(endpoint.get("nodeName"), f"{path}.nodeName")
    if (
        node_name is not None
        and c.names(node_name, f"{path}.nodeName", dns1123_subdomain_problems, "node name")
        and c.cluster.node(node_name) is None
    ):
        c.warn(
            f"{path}.nodeName",
            f'node "{node_name}" is not one of the cluster\'s nodes '
            f"({', '.join(c.cluster.node_names)}); externalTrafficPolicy: Local and "
            "internalTrafficPolicy: Local never pick this endpoint",
        )
    c.string(endpoint.get("zone"), f"{path}.zone")
    for key in ("targetRef", "hints", "deprecatedTopology"):
        c.mapping(endpoint.get(key), f"{path}.{key}")


def _check_port(c: Checker, raw: Any, path: str, names: dict[str, str]) -> None:
    port = c.mapping(raw, path, required="a port needs a port number")
    if port is None:
        return
    c.known_fields(port, path, _PORT_FIELDS)
    # An unnamed port is named "": a slice may have only one, as in the API server.
    name = c.string(port.get("name"), f"{path}.name") or ""
    if not name or c.names(name, f"{path}.name", dns1123_label_problems, "port name"):
        if name in names:
            what = f'port name "{name}"' if name else "unnamed port"
            c.error(
                f"{path}.name",
                f"duplicate {what} (also {names[name]}); each port of a slice needs its own "
                "name, the name of the Service port it serves",
            )
        names.setdefault(name, path)
    if port.get("port") is None:
        c.warn(
            path,
            "no port number: kube-proxy ignores ports without one, so no traffic reaches it; "
            "set port",
        )
    else:
        c.port(port.get("port"), f"{path}.port")
    c.choice(port.get("protocol"), f"{path}.protocol", PROTOCOLS)
    app_protocol = c.string(port.get("appProtocol"), f"{path}.appProtocol")
    if app_protocol is not None:
        c.names(app_protocol, f"{path}.appProtocol", label_key_problems, "appProtocol")


def check_endpoint_slice(c: Checker) -> None:
    address_type = c.string(
        c.obj.get("addressType"),
        "addressType",
        required='set it to "IPv4" (kubewire serves IPv4 only)',
    )
    chosen = c.choice(address_type, "addressType", ADDRESS_TYPES)
    if chosen is not None and chosen != "IPv4":
        c.error(
            "addressType",
            f"{chosen} EndpointSlices are not supported: kubewire serves IPv4 only; "
            'use addressType "IPv4" with IPv4 addresses',
        )
    check_ipv4 = address_type == "IPv4"
    endpoints = c.sequence(c.obj.get("endpoints"), "endpoints")
    if endpoints is not None and len(endpoints) > MAX_ENDPOINTS:
        c.error(
            "endpoints",
            f"must have at most {MAX_ENDPOINTS} endpoints, got {len(endpoints)}; "
            "split them across several EndpointSlices",
        )
    else:
        for index, raw in enumerate(endpoints or []):
            _check_endpoint(c, raw, index_path("endpoints", index), check_ipv4)
    ports = c.sequence(c.obj.get("ports"), "ports")
    names: dict[str, str] = {}
    for index, raw in enumerate(ports or []):
        _check_port(c, raw, index_path("ports", index), names)
    _warn_unlinked(c)


def _warn_unlinked(c: Checker) -> None:
    metadata = c.obj.get("metadata")
    labels = metadata.get("labels") if isinstance(metadata, Mapping) else None
    service = labels.get(LABEL_SERVICE_NAME) if isinstance(labels, Mapping) else None
    if not service:
        c.warn(
            child_path("metadata.labels", LABEL_SERVICE_NAME),
            f"this EndpointSlice is not linked to a Service: without the {LABEL_SERVICE_NAME} "
            "label no Service sends traffic to its endpoints; set the label to the name of a "
            "Service in the same namespace",
        )
