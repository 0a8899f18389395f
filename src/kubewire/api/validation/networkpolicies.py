"""NetworkPolicies (networking.k8s.io/v1): pod selector, policy types, rules, peers and ports,
as the API server checks them. What a policy *means* lives in :mod:`kubewire.policy`."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from kubewire.api.errors import show_value
from kubewire.api.names import iana_svc_name_problems
from kubewire.api.objects import index_path
from kubewire.api.selectors import LabelSelector, SelectorError
from kubewire.api.validation.common import PROTOCOLS, Checker, is_int

POLICY_TYPES = ("Ingress", "Egress")

_SPEC_FIELDS = ("podSelector", "policyTypes", "ingress", "egress")
_INGRESS_RULE_FIELDS = ("from", "ports")
_EGRESS_RULE_FIELDS = ("to", "ports")
_PEER_FIELDS = ("podSelector", "namespaceSelector", "ipBlock")
_IPBLOCK_FIELDS = ("cidr", "except")
_PORT_FIELDS = ("protocol", "port", "endPort")


def check_selector(c: Checker, raw: Any, path: str) -> LabelSelector | None:
    """A ``metav1.LabelSelector`` at ``path``; errors name the field inside it."""
    try:
        return LabelSelector.from_dict(raw)
    except SelectorError as exc:
        field = exc.field
        c.error(path + (field if field.startswith("[") or not field else f".{field}"),
                exc.message)
        return None


def _cidr(c: Checker, value: Any, path: str) -> ipaddress.IPv4Network | None:
    text = c.string(value, path, required="an ipBlock needs a cidr, e.g. 10.0.0.0/16")
    if text is None:
        return None
    if "/" not in text:
        c.error(path, f"must be a CIDR such as {text}/32, got {show_value(value)}")
        return None
    try:
        # Host bits may be set (10.0.0.5/8), as the API server accepts; the network counts.
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        c.error(path, f"must be a CIDR such as 10.0.0.0/16, got {show_value(value)}")
        return None
    if not isinstance(network, ipaddress.IPv4Network):
        c.error(path, f"{text}: IPv6 is not supported yet; use an IPv4 CIDR")
        return None
    return network


def _check_ip_block(c: Checker, raw: Any, path: str) -> None:
    block = c.mapping(raw, path)
    if block is None:
        return
    c.known_fields(block, path, _IPBLOCK_FIELDS)
    cidr = _cidr(c, block.get("cidr"), f"{path}.cidr")
    for index, item in enumerate(c.sequence(block.get("except"), f"{path}.except") or []):
        item_path = index_path(f"{path}.except", index)
        excepted = _cidr(c, item, item_path)
        if excepted is None or cidr is None:
            continue
        if not excepted.subnet_of(cidr) or excepted.prefixlen == cidr.prefixlen:
            c.error(item_path, f"{item} is not inside cidr {block.get('cidr')} (an except "
                               "must be a smaller block within cidr)")


def _check_peer(c: Checker, raw: Any, path: str) -> None:
    peer = c.mapping(raw, path, required="a peer needs podSelector, namespaceSelector or ipBlock")
    if peer is None:
        return
    c.known_fields(peer, path, _PEER_FIELDS)
    present = [f for f in _PEER_FIELDS if peer.get(f) is not None]
    if not present:
        c.error(path, "a peer needs podSelector, namespaceSelector or ipBlock; for every "
                      "source or destination leave the whole list out instead")
        return
    if "ipBlock" in present and len(present) > 1:
        c.error(path, "ipBlock may not be combined with podSelector or namespaceSelector in "
                      "one peer; write them as separate peers")
    for field in ("podSelector", "namespaceSelector"):
        if peer.get(field) is not None:
            check_selector(c, peer[field], f"{path}.{field}")
    if peer.get("ipBlock") is not None:
        _check_ip_block(c, peer["ipBlock"], f"{path}.ipBlock")


def _check_port(c: Checker, raw: Any, path: str) -> None:
    port = c.mapping(raw, path)
    if port is None:
        return
    c.known_fields(port, path, _PORT_FIELDS)
    c.choice(port.get("protocol"), f"{path}.protocol", PROTOCOLS)
    value = port.get("port")
    number: int | None = None
    if isinstance(value, str):
        if value.isdigit():
            c.error(f"{path}.port", f'"{value}" is a string, so it names a container port; '
                                    f"write {value} without quotes for a port number")
        else:
            c.names(value, f"{path}.port", iana_svc_name_problems, "port name")
    elif value is not None:
        number = c.port(value, f"{path}.port", "a port number (1-65535) or a port name")
    end = port.get("endPort")
    if end is None:
        return
    if value is None:
        c.error(f"{path}.endPort", "may only be set together with a numeric port")
    elif isinstance(value, str):
        c.error(f"{path}.endPort", f'may not be used with the named port "{value}"; a range '
                                   "needs a numeric port")
    elif not is_int(end) or not 1 <= end <= 65535:
        c.error(f"{path}.endPort", f"must be a port number (1-65535), got {show_value(end)}")
    elif number is not None and end < number:
        c.error(f"{path}.endPort", f"must be greater than or equal to port ({number}), got {end}")


def _check_rules(c: Checker, spec: Mapping[str, Any], direction: str) -> None:
    peers_field = "from" if direction == "ingress" else "to"
    fields = _INGRESS_RULE_FIELDS if direction == "ingress" else _EGRESS_RULE_FIELDS
    for index, raw in enumerate(c.sequence(spec.get(direction), f"spec.{direction}") or []):
        path = index_path(f"spec.{direction}", index)
        rule = c.mapping(raw, path)
        if rule is None:
            continue
        c.known_fields(rule, path, fields)
        peers_path = f"{path}.{peers_field}"
        for n, peer in enumerate(c.sequence(rule.get(peers_field), peers_path) or []):
            _check_peer(c, peer, index_path(peers_path, n))
        for n, port in enumerate(c.sequence(rule.get("ports"), f"{path}.ports") or []):
            _check_port(c, port, index_path(f"{path}.ports", n))


def check_network_policy(c: Checker) -> None:
    spec = c.mapping(c.obj.get("spec"), "spec",
                     required="a NetworkPolicy needs spec.podSelector ({} selects every pod)")
    if spec is None:
        return
    c.known_fields(spec, "spec", _SPEC_FIELDS)
    if spec.get("podSelector") is None:
        c.error("spec.podSelector", "required field is missing; write podSelector: {} to "
                                    "select every pod in the namespace")
    else:
        check_selector(c, spec["podSelector"], "spec.podSelector")
    seen: dict[str, str] = {}
    for index, value in enumerate(c.sequence(spec.get("policyTypes"), "spec.policyTypes") or []):
        path = index_path("spec.policyTypes", index)
        kind = c.choice(value, path, POLICY_TYPES)
        if kind is not None:
            if kind in seen:
                c.error(path, f'duplicate policy type "{kind}" (also {seen[kind]})')
            seen.setdefault(kind, path)
    for direction in ("ingress", "egress"):
        _check_rules(c, spec, direction)
