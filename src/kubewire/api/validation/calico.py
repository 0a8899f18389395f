"""Calico's BGP kinds (projectcalico.org/v3, also crd.projectcalico.org/v1): BGPConfiguration,
BGPPeer and IPPool, checked as Calico's validator does for the fields kubewire uses, plus
kubewire's own limits (IPv4 only, no Secrets, no IPIP in this kernel).

The value parsers here (:func:`parse_as_number`, :func:`parse_peer_ip`) are shared with
:mod:`kubewire.bgpnet`, which reads the same objects once they are validated.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any

from kubewire.api.calicoselectors import CalicoSelectorError, parse_calico_selector
from kubewire.api.errors import show_value
from kubewire.api.objects import index_path
from kubewire.api.validation.common import Checker, is_int

__all__ = [
    "DEFAULT_AS_NUMBER",
    "DEFAULT_BLOCK_SIZE",
    "DEFAULT_LISTEN_PORT",
    "check_bgp_configuration",
    "check_bgp_peer",
    "check_ip_pool",
    "parse_as_number",
    "parse_peer_ip",
]

DEFAULT_AS_NUMBER = 64512
DEFAULT_LISTEN_PORT = 179
DEFAULT_BLOCK_SIZE = 26

_BGPCONFIG_FIELDS = (
    "asNumber", "nodeToNodeMeshEnabled", "serviceClusterIPs", "serviceExternalIPs",
    "serviceLoadBalancerIPs", "listenPort", "logSeverityScreen", "nodeMeshPassword",
    "nodeMeshMaxRestartTime", "bindMode",
)
_BGPPEER_FIELDS = (
    "node", "nodeSelector", "peerIP", "asNumber", "peerSelector", "keepOriginalNextHop",
    "ttlSecurity", "sourceAddress", "maxRestartTime", "reachableBy", "password", "filters",
)
_IPPOOL_FIELDS = (
    "cidr", "blockSize", "nodeSelector", "natOutgoing", "disabled", "ipipMode", "vxlanMode",
    "allowedUses", "disableBGPExport",
)
_LOG_SEVERITIES = ("Trace", "Debug", "Info", "Warning", "Error", "Fatal")
_SOURCE_ADDRESSES = ("UseNodeIP", "None")
_ALLOWED_USES = ("Workload", "Tunnel", "LoadBalancer")
# Go's time.ParseDuration units, as Calico's restart times are metav1.Duration.
_DURATION = re.compile(r"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")
_ASDOT = re.compile(r"^(\d+)\.(\d+)$")
AS_RANGE = "an AS number 1-4294967295 (or asdot, e.g. 64512.100)"


def parse_as_number(value: Any) -> int | None:
    """An AS number as Calico's numorstring.ASNumber takes it: an int, a decimal string, or
    asdot ``high.low`` (each part 0-65535); None when it is none of these or out of range."""
    number: int | None = None
    if is_int(value):
        number = int(value)
    elif isinstance(value, str):
        dotted = _ASDOT.match(value)
        if dotted:
            high, low = int(dotted[1]), int(dotted[2])
            number = (high << 16) | low if high <= 0xFFFF and low <= 0xFFFF else None
        elif value.isascii() and value.isdigit():
            number = int(value)
    return number if number is not None and 1 <= number <= 0xFFFFFFFF else None


def parse_peer_ip(value: str) -> tuple[ipaddress.IPv4Address, int | None]:
    """``ip`` or ``ip:port``; raises ValueError with a message that can follow the value."""
    host, sep, port_text = value.rpartition(":") if value.count(":") == 1 else ("", "", "")
    text = host if sep else value
    try:
        address = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        raise ValueError("is not an IPv4 address (write ip or ip:port)") from None
    if not isinstance(address, ipaddress.IPv4Address):
        raise ValueError("is IPv6, which kubewire's BGP does not support yet; use IPv4")
    if not sep:
        return address, None
    if not (port_text.isascii() and port_text.isdigit() and 1 <= int(port_text) <= 65535):
        raise ValueError("has a port that is not 1-65535")
    return address, int(port_text)


def _as_number(c: Checker, value: Any, path: str) -> int | None:
    if value is None:
        return None
    number = parse_as_number(value)
    if isinstance(value, float):
        c.error(path, f"must be {AS_RANGE}, got the number {show_value(value)}; quote an asdot "
                      f'AS number ("64512.100"): unquoted, YAML reads it as a decimal fraction')
    elif number is None:
        c.error(path, f"must be {AS_RANGE}, got {show_value(value)}")
    return number


def _selector(c: Checker, value: Any, path: str) -> None:
    text = c.string(value, path)
    if text is None:
        return
    try:
        parse_calico_selector(text)
    except CalicoSelectorError as exc:
        c.error(path, f"invalid selector {show_value(text)}: {exc}")


def _ipv4_cidr(
    c: Checker, value: Any, path: str, required: str = ""
) -> ipaddress.IPv4Network | None:
    text = c.string(value, path, required=required)
    if text is None:
        return None
    try:
        network = ipaddress.ip_network(text)
    except ValueError:
        try:
            loose = ipaddress.ip_network(text, strict=False)
        except ValueError:
            c.error(path, f"{show_value(text)} is not a CIDR; write e.g. 10.96.0.0/12")
            return None
        c.error(path, f"{show_value(text)} has host bits set; write {loose}")
        return None
    if not isinstance(network, ipaddress.IPv4Network):
        c.error(path, f"{show_value(text)}: IPv6 is not supported yet; use an IPv4 CIDR")
        return None
    return network


def _cidr_list(c: Checker, spec: Mapping[str, Any], field: str) -> None:
    path = f"spec.{field}"
    for index, raw in enumerate(c.sequence(spec.get(field), path) or []):
        item_path = index_path(path, index)
        item = c.mapping(raw, item_path)
        if item is None:
            continue
        c.known_fields(item, item_path, ("cidr",))
        _ipv4_cidr(c, item.get("cidr"), f"{item_path}.cidr", required="e.g. cidr: 10.96.0.0/12")


def _secret_ref(c: Checker, value: Any, path: str) -> None:
    """A password is {secretKeyRef: {name, key}}: a key of a Secret in kube-system, the
    namespace calico-node runs in (the key is the TCP MD5 password, RFC 2385)."""
    if value is None:
        return
    ref = c.mapping(value, path)
    if ref is None:
        return
    c.known_fields(ref, path, ("secretKeyRef",))
    key_ref = c.mapping(ref.get("secretKeyRef"), f"{path}.secretKeyRef",
                        required="write secretKeyRef: {name: ..., key: ...}")
    if key_ref is None:
        return
    c.known_fields(key_ref, f"{path}.secretKeyRef", ("name", "key", "optional"))
    c.string(key_ref.get("name"), f"{path}.secretKeyRef.name", required="the Secret's name")
    c.string(key_ref.get("key"), f"{path}.secretKeyRef.key", required="the key in the Secret")


def _duration(c: Checker, value: Any, path: str) -> None:
    if value is None:
        return
    if not isinstance(value, str) or not _DURATION.match(value):
        c.error(path, f'must be a duration such as "120s" or "2m30s", got {show_value(value)}')


def _spec(c: Checker, fields: tuple[str, ...]) -> Mapping[str, Any]:
    # Calico's kinds may leave spec out entirely: every field has a default.
    spec = c.mapping(c.obj.get("spec"), "spec") or {}
    c.known_fields(spec, "spec", fields)
    return spec


def check_bgp_configuration(c: Checker) -> None:
    spec = _spec(c, _BGPCONFIG_FIELDS)
    name = (c.obj.get("metadata") or {}).get("name")
    if isinstance(name, str) and name != "default":
        c.warn("metadata.name", f'Calico takes cluster-wide settings only from the '
                                f'BGPConfiguration named "default", not "{name}"; kubewire '
                                "uses the one BGPConfiguration it finds, but rename it")
    _as_number(c, spec.get("asNumber"), "spec.asNumber")
    c.boolean(spec.get("nodeToNodeMeshEnabled"), "spec.nodeToNodeMeshEnabled")
    for field in ("serviceClusterIPs", "serviceExternalIPs", "serviceLoadBalancerIPs"):
        _cidr_list(c, spec, field)
    if spec.get("listenPort") is not None:
        c.port(spec["listenPort"], "spec.listenPort")
    c.choice(spec.get("logSeverityScreen"), "spec.logSeverityScreen", _LOG_SEVERITIES)
    c.choice(spec.get("bindMode"), "spec.bindMode", ("None", "NodeIP"))
    _secret_ref(c, spec.get("nodeMeshPassword"), "spec.nodeMeshPassword")
    _duration(c, spec.get("nodeMeshMaxRestartTime"), "spec.nodeMeshMaxRestartTime")


def check_bgp_peer(c: Checker) -> None:
    spec = _spec(c, _BGPPEER_FIELDS)
    node = c.string(spec.get("node"), "spec.node")
    if spec.get("nodeSelector") not in (None, ""):
        _selector(c, spec["nodeSelector"], "spec.nodeSelector")
        if node is not None:
            c.error("spec.nodeSelector", "node and nodeSelector are exclusive; use node for "
                                         "one node, nodeSelector for a set of nodes")
    peer_ip = c.string(spec.get("peerIP"), "spec.peerIP")
    if peer_ip is not None:
        try:
            parse_peer_ip(peer_ip)
        except ValueError as exc:
            c.error("spec.peerIP", f"{show_value(peer_ip)} {exc}")
    asn = spec.get("asNumber")
    _as_number(c, asn, "spec.asNumber")
    has_selector = spec.get("peerSelector") not in (None, "")
    if has_selector:
        _selector(c, spec["peerSelector"], "spec.peerSelector")
        if peer_ip is not None:
            c.error("spec.peerIP", "must be empty when peerSelector is set (the selected "
                                   "nodes' own addresses are used)")
        if asn is not None:
            c.error("spec.asNumber", "must be empty when peerSelector is set (the selected "
                                     "nodes' own AS numbers are used)")
    elif peer_ip is None:
        c.error("spec", "a BGPPeer needs peerIP and asNumber (an external router) or "
                        "peerSelector (other nodes)")
    elif asn is None:
        c.error("spec.asNumber", "required field is missing; peerIP needs the peer's AS number")
    c.boolean(spec.get("keepOriginalNextHop"), "spec.keepOriginalNextHop")
    if spec.get("ttlSecurity") is not None:
        c.integer(spec["ttlSecurity"], "spec.ttlSecurity", 0, 254,
                  "a hop count 0-254 (0 turns TTL security off)")
    c.choice(spec.get("sourceAddress"), "spec.sourceAddress", _SOURCE_ADDRESSES)
    _duration(c, spec.get("maxRestartTime"), "spec.maxRestartTime")
    reachable = c.string(spec.get("reachableBy"), "spec.reachableBy")
    if reachable is not None:
        try:
            parse_peer_ip(reachable)
        except ValueError as exc:
            c.error("spec.reachableBy", f"{show_value(reachable)} {exc}")
        if peer_ip is None:
            c.error("spec.reachableBy", "only applies to a peerIP peer")
    _secret_ref(c, spec.get("password"), "spec.password")
    filters = c.sequence(spec.get("filters"), "spec.filters")
    if filters:
        c.error("spec.filters", "BGPFilter is not supported; remove the filters (every "
                                "route is accepted and advertised)")


def check_ip_pool(c: Checker) -> None:
    spec = _spec(c, _IPPOOL_FIELDS)
    cidr = _ipv4_cidr(c, spec.get("cidr"), "spec.cidr",
                      required="an IPPool needs a cidr, e.g. 10.244.0.0/16")
    block = spec.get("blockSize")
    if block is not None:
        size = c.integer(block, "spec.blockSize", 20, 32, "a prefix length 20-32 for IPv4")
        if size is not None and cidr is not None and size < cidr.prefixlen:
            c.error("spec.blockSize", f"a /{size} block does not fit in the pool {cidr}; use "
                                      f"a block size of at least {cidr.prefixlen}")
    if cidr is not None and not cidr.overlaps(c.cluster.pod_cidr):
        c.warn("spec.cidr", f"{cidr} is outside the Cluster's podCIDR {c.cluster.pod_cidr}; "
                            "pods get addresses from the Cluster's podCIDR")
    if spec.get("nodeSelector") not in (None, ""):
        _selector(c, spec["nodeSelector"], "spec.nodeSelector")
    for field in ("natOutgoing", "disabled", "disableBGPExport"):
        c.boolean(spec.get(field), f"spec.{field}")
    for field, why in (
        ("ipipMode", "this kernel has no ipip support"),
        ("vxlanMode", "kubewire has no Calico-style VXLAN encapsulation"),
    ):
        mode = spec.get(field)
        if mode in ("Always", "CrossSubnet"):
            c.error(f"spec.{field}", f'"{mode}" is not supported: {why}, and the lab routes '
                                     'pod traffic natively with BGP; use "Never"')
        else:
            c.choice(mode, f"spec.{field}", ("Never",))
    seen: dict[str, str] = {}
    for index, use in enumerate(c.sequence(spec.get("allowedUses"), "spec.allowedUses") or []):
        path = index_path("spec.allowedUses", index)
        if c.choice(use, path, _ALLOWED_USES) is not None:
            if use in seen:
                c.error(path, f'duplicate use "{use}" (also {seen[use]})')
            seen.setdefault(use, path)
