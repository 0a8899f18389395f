"""Service address allocation: cluster IPs, node ports and load-balancer IPs, plus API defaults.

Plays three parts of a real control plane at once: the API server's ClusterIP and NodePort
allocators (with its defaulting of Service fields) and a bare-metal load-balancer controller
such as MetalLB, which hands out addresses from a configured pool. :func:`allocate_services`
is pure: the same Services, ranges and previous allocations always give the same result.

Kubernetes picks free values at random, so the same manifests give different clusters on
every run. We pick them from a hash of the Service's namespace and name instead, probing
forward to the next free value, so a Service's address depends neither on the order of the
manifests nor on the run. Like the API server (KEP-3070 for cluster IPs, KEP-3668 for node
ports) we hand out dynamic values from the upper part of each range first, leaving the lower
"static band" to users who ask for a fixed value, which makes collisions with later explicit
requests unlikely.
"""

from __future__ import annotations

import copy
import hashlib
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import AddressValueError, IPv4Address, IPv4Network
from typing import Any, TypeGuard

from kubewire.api.names import iana_svc_name_problems
from kubewire.controllers.objects import metadata_of, name_of, namespace_of, object_key, spec_of

__all__ = [
    "CLUSTER_IP_NONE",
    "DEFAULT_NODE_PORT_RANGE",
    "DEFAULT_SESSION_AFFINITY_TIMEOUT",
    "DNS_SERVICE_HOST_INDEX",
    "KUBERNETES_PROTOCOLS",
    "KUBERNETES_SERVICE_HOST_INDEX",
    "SERVICE_TYPES",
    "SUPPORTED_PROTOCOLS",
    "ServiceAllocation",
    "allocate_services",
    "reserved_cluster_ips",
]

SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
# What the API accepts, and the subset our nftables proxy can serve (SCTP needs a kernel
# module and conntrack helper most lab hosts do not load).
KUBERNETES_PROTOCOLS = ("SCTP", "TCP", "UDP")
SUPPORTED_PROTOCOLS = frozenset({"TCP", "UDP"})
DEFAULT_NODE_PORT_RANGE = (30000, 32767)  # kube-apiserver --service-node-port-range
DEFAULT_SESSION_AFFINITY_TIMEOUT = 10800  # 3 hours, the API server's default
MAX_SESSION_AFFINITY_TIMEOUT = 86400
CLUSTER_IP_NONE = "None"  # how a headless Service spells "no cluster IP"
# Offsets into the service range that dynamic allocation never hands out: the `kubernetes`
# Service takes the first address and installers conventionally give kube-dns the tenth.
KUBERNETES_SERVICE_HOST_INDEX = 1
DNS_SERVICE_HOST_INDEX = 10

_NODE_PORT_TYPES = frozenset({"NodePort", "LoadBalancer"})
_TRAFFIC_POLICIES = ("Cluster", "Local")
_SESSION_AFFINITIES = ("None", "ClientIP")
_FAMILY_POLICIES = ("SingleStack", "PreferDualStack", "RequireDualStack")
_NO_POOL_WARNING = "no loadBalancer pool configured in the Cluster object"


@dataclass(frozen=True, slots=True)
class ServiceAllocation:
    """What :func:`allocate_services` decided.

    ``services`` are defaulted copies with their addresses filled in, sorted by (namespace,
    name). A Service with a problem is left out, as the API server would reject it, and its
    problem is in ``problems`` under ``namespace/name``; a Service in ``existing`` keeps
    holding its old addresses meanwhile, like an object whose update was refused.
    """

    services: list[dict[str, Any]] = field(default_factory=list)
    problems: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def reserved_cluster_ips(service_cidr: IPv4Network) -> tuple[IPv4Address, IPv4Address]:
    """The addresses kept back for the ``kubernetes`` and kube-dns Services (.1 and .10)."""
    base = int(service_cidr.network_address)
    return (
        IPv4Address(base + KUBERNETES_SERVICE_HOST_INDEX),
        IPv4Address(base + DNS_SERVICE_HOST_INDEX),
    )


class _Problem(Exception):
    """One thing wrong with one Service; the message starts with the field."""


@dataclass(frozen=True, slots=True)
class _Port:
    """A validated Service port. ``node_port`` is the requested one, 0 for "allocate"."""

    index: int
    name: str
    port: int
    protocol: str
    target_port: int | str
    node_port: int
    raw: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class _Request:
    """A validated Service: what it asks for, before any address is handed out."""

    key: str
    service: Mapping[str, Any]
    type: str
    headless: bool
    cluster_ip: int | None  # requested; None when the allocator should pick
    ports: tuple[_Port, ...]
    wants_node_ports: bool  # node ports are allocated for ports that did not request one
    load_balancer_ip: int | None  # spec.loadBalancerIP, when requested

    @property
    def has_cluster_ip(self) -> bool:
        return self.type != "ExternalName" and not self.headless


@dataclass(slots=True)
class _Previous:
    """What a Service held before this call (from ``existing``)."""

    cluster_ip: int | None = None
    node_ports: dict[tuple[int, str], int] = field(default_factory=dict)
    load_balancer_ips: list[int] = field(default_factory=list)


class _Pool:
    """Integers ``first..last``, each held by at most one owner.

    One pool for node ports, whatever the protocol: the API server's allocator ignores it,
    so 30053/UDP in one Service blocks 30053/TCP in any other (ports of one Service may
    share a node port: its owner claiming again is not a conflict).
    Values in ``reserved`` are never handed out dynamically but may be claimed by request.
    Dynamic allocation walks the upper band ``split..last`` first, then the lower band.
    """

    def __init__(
        self, first: int, last: int, static_band: int, reserved: Iterable[int] = ()
    ) -> None:
        self.first = first
        self.last = last
        self.split = min(first + static_band, last + 1)
        self.reserved = frozenset(value for value in reserved if first <= value <= last)
        self.holders: dict[int, str] = {}
        self.free = max(last - first + 1, 0) - len(self.reserved)

    def __contains__(self, value: int) -> bool:
        return self.first <= value <= self.last

    def holder(self, value: int) -> str | None:
        return self.holders.get(value)

    def claim(self, value: int, owner: str) -> str | None:
        """Hold ``value`` for ``owner``; returns the other holder if it is taken."""
        other = self.holders.get(value)
        if other is not None:
            return other if other != owner else None
        self.holders[value] = owner
        if value not in self.reserved:
            self.free -= 1
        return None

    def release(self, value: int, owner: str) -> None:
        if self.holders.get(value) != owner:
            return
        del self.holders[value]
        if value not in self.reserved:
            self.free += 1

    def allocate(self, seed: int, owner: str) -> int | None:
        """A free value, claimed for ``owner``; None when none is left."""
        if self.free <= 0:
            return None
        for low, high in ((self.split, self.last), (self.first, self.split - 1)):
            size = high - low + 1
            if size <= 0:
                continue
            start = seed % size
            for step in range(size):
                value = low + (start + step) % size
                if value not in self.holders and value not in self.reserved:
                    self.claim(value, owner)
                    return value
        return None


class _Claims:
    """The claims one Service made during one step, so they can be undone on failure."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.made: list[tuple[_Pool, int]] = []

    def claim(self, pool: _Pool, value: int) -> str | None:
        if pool.holder(value) == self.owner:
            return None
        other = pool.claim(value, self.owner)
        if other is None:
            self.made.append((pool, value))
        return other

    def allocate(self, pool: _Pool, seed: int) -> int | None:
        value = pool.allocate(seed, self.owner)
        if value is not None:
            self.made.append((pool, value))
        return value

    def undo(self) -> None:
        for pool, value in reversed(self.made):
            pool.release(value, self.owner)
        self.made.clear()


@dataclass(slots=True)
class _Decision:
    """The values a Service ends up with."""

    cluster_ip: int | None = None
    node_ports: dict[int, int] = field(default_factory=dict)  # port index -> node port
    load_balancer_ip: int | None = None


def allocate_services(
    services: Sequence[Mapping[str, Any]],
    service_cidr: IPv4Network,
    lb_pool: IPv4Network | None,
    existing: Sequence[Mapping[str, Any]] = (),
    *,
    node_port_range: tuple[int, int] = DEFAULT_NODE_PORT_RANGE,
    supported_protocols: Collection[str] = SUPPORTED_PROTOCOLS,
) -> ServiceAllocation:
    """Default ``services`` and give them cluster IPs, node ports and load-balancer IPs.

    ``existing`` are Services as previously stored (with their allocations). Each keeps what
    it held unless its new spec asks for something else, and those not in ``services`` go on
    holding theirs: leave a Service out of both to release its addresses. Explicit requests
    (``spec.clusterIP``, ``nodePort``, ``spec.loadBalancerIP``) are honoured when free; the
    rest are allocated from a hash of the Service's name, so the result does not depend on
    the order of ``services``.
    """
    allocator = _Allocator(service_cidr, lb_pool, node_port_range, frozenset(supported_protocols))
    return allocator.run(services, existing)


class _Allocator:
    def __init__(
        self,
        service_cidr: IPv4Network,
        lb_pool: IPv4Network | None,
        node_port_range: tuple[int, int],
        supported_protocols: frozenset[str],
    ) -> None:
        self.service_cidr = service_cidr
        self.lb_pool = lb_pool
        self.node_port_range = node_port_range
        self.supported_protocols = supported_protocols
        network = int(service_cidr.network_address)
        size = service_cidr.num_addresses
        # The network and broadcast addresses are never Service IPs.
        self.cluster_ips = _Pool(
            network + 1,
            network + size - 2,
            _static_band(size, step=16, maximum=256),
            reserved=(network + KUBERNETES_SERVICE_HOST_INDEX, network + DNS_SERVICE_HOST_INDEX),
        )
        low, high = node_port_range
        self.node_ports = _Pool(low, high, _static_band(high - low + 1, step=32, maximum=128))
        self.lb_ips: _Pool | None = None
        if lb_pool is not None:
            first, last = int(lb_pool.network_address), int(lb_pool.broadcast_address)
            if lb_pool.prefixlen <= 30:
                # A pool announced on a LAN cannot use its network and broadcast addresses.
                first, last = first + 1, last - 1
            self.lb_ips = _Pool(first, last, static_band=0)
        self.problems: dict[str, list[str]] = {}
        self.warnings: list[str] = []

    # -- the phases ------------------------------------------------------------------------

    def run(
        self, services: Sequence[Mapping[str, Any]], existing: Sequence[Mapping[str, Any]]
    ) -> ServiceAllocation:
        counts = Counter(object_key(service) for service in services)
        requests: dict[str, _Request] = {}
        for service in sorted(services, key=_sort_key):
            key = object_key(service)
            if counts[key] > 1:
                # Neither copy wins: which came first is the kind of order we do not depend on.
                if key not in self.problems:
                    self.problem(
                        key,
                        f"the Service is defined {counts[key]} times; give each Service in a "
                        "namespace its own name",
                    )
                continue
            try:
                requests[key] = self.validate(service)
            except _Problem as problem:
                self.problem(key, str(problem))
        previous = self.seed(requests, existing)
        decisions = {key: _Decision() for key in requests}
        # Explicit requests before dynamic allocation, each phase in name order, so that a
        # Service never loses the value it asked for to one allocated dynamically.
        for key in sorted(requests):
            self.claim_requested(requests[key], decisions[key])
        for key in sorted(requests):
            if key not in self.problems:
                self.allocate_dynamic(requests[key], previous.get(key), decisions[key])
        results = []
        for key in sorted(requests):
            if key not in self.problems:
                results.append(self.render(requests[key], decisions[key]))
        return ServiceAllocation(
            services=results,
            problems={key: "; ".join(texts) for key, texts in sorted(self.problems.items())},
            warnings=sorted(self.warnings),
        )

    def seed(
        self, requests: Mapping[str, _Request], existing: Sequence[Mapping[str, Any]]
    ) -> dict[str, _Previous]:
        """Let existing Services hold what they held, as far as they will still use it."""
        previous: dict[str, _Previous] = {}
        for service in sorted(existing, key=_sort_key):
            key = object_key(service)
            if key in previous:
                continue
            held = previous[key] = _previous_allocation(service)
            request = requests.get(key)
            if request is not None and key not in self.problems:
                held = _still_used(held, request, self.lb_ips)
            if held.cluster_ip is not None and held.cluster_ip in self.cluster_ips:
                self.cluster_ips.claim(held.cluster_ip, key)
            for node_port in held.node_ports.values():
                if node_port in self.node_ports:
                    self.node_ports.claim(node_port, key)
            if self.lb_ips is not None:
                for address in held.load_balancer_ips:
                    if address in self.lb_ips:
                        self.lb_ips.claim(address, key)
        return previous

    def claim_requested(self, request: _Request, decision: _Decision) -> None:
        claims = _Claims(request.key)
        problems = []
        if request.cluster_ip is not None:
            other = claims.claim(self.cluster_ips, request.cluster_ip)
            if other is not None:
                problems.append(
                    f"spec.clusterIP: {IPv4Address(request.cluster_ip)} is already allocated "
                    f"to service {other}; pick another address or leave clusterIP unset"
                )
            decision.cluster_ip = request.cluster_ip
        for port in request.ports:
            if not port.node_port:
                continue
            other = claims.claim(self.node_ports, port.node_port)
            if other is not None:
                problems.append(
                    f"spec.ports[{port.index}].nodePort: {port.node_port}/{port.protocol} is "
                    f"already allocated to service {other}; pick another port or leave "
                    "nodePort unset"
                )
            decision.node_ports[port.index] = port.node_port
        if request.load_balancer_ip is not None and self.lb_ips is not None:
            other = claims.claim(self.lb_ips, request.load_balancer_ip)
            if other is not None:
                problems.append(
                    f"spec.loadBalancerIP: {IPv4Address(request.load_balancer_ip)} is already "
                    f"allocated to service {other}; pick another address or leave "
                    "loadBalancerIP unset"
                )
            decision.load_balancer_ip = request.load_balancer_ip
        if problems:
            claims.undo()
            for text in problems:
                self.problem(request.key, text)

    def allocate_dynamic(
        self, request: _Request, previous: _Previous | None, decision: _Decision
    ) -> None:
        claims = _Claims(request.key)
        key = request.key
        try:
            if request.has_cluster_ip and decision.cluster_ip is None:
                decision.cluster_ip = self.kept_or_new_cluster_ip(request, previous, claims)
            if request.type in _NODE_PORT_TYPES:
                self.allocate_node_ports(request, previous, decision, claims)
            if request.type == "LoadBalancer":
                decision.load_balancer_ip = self.kept_or_new_lb_ip(
                    request, previous, decision, claims
                )
        except _Problem as problem:
            claims.undo()
            self.problem(key, str(problem))

    def kept_or_new_cluster_ip(
        self, request: _Request, previous: _Previous | None, claims: _Claims
    ) -> int:
        held = previous.cluster_ip if previous is not None else None
        if held is not None and self.cluster_ips.holder(held) == request.key:
            return held
        value = claims.allocate(self.cluster_ips, _seed("clusterIP", request.key))
        if value is None:
            raise _Problem(
                f"spec.clusterIP: the service range {self.service_cidr} is exhausted (no free "
                "address is left); use a larger serviceCIDR in the Cluster object or delete "
                "unused Services"
            )
        return value

    def allocate_node_ports(
        self,
        request: _Request,
        previous: _Previous | None,
        decision: _Decision,
        claims: _Claims,
    ) -> None:
        kept = previous.node_ports if previous is not None else {}
        # Ports with the same number (53/TCP and 53/UDP) share one node port, as in Kubernetes.
        by_number: dict[int, list[_Port]] = {}
        for port in request.ports:
            if port.index in decision.node_ports:
                continue
            node_port = kept.get((port.port, port.protocol))
            if node_port is not None and self.node_ports.holder(node_port) == (
                request.key
            ):
                decision.node_ports[port.index] = node_port
            elif request.wants_node_ports:
                by_number.setdefault(port.port, []).append(port)
        for number, ports in sorted(by_number.items()):
            value = claims.allocate(
                self.node_ports, _seed("nodePort", request.key, str(number))
            )
            if value is None:
                low, high = self.node_port_range
                raise _Problem(
                    f"spec.ports[{ports[0].index}].nodePort: no free node port is left in "
                    f"{low}-{high}; delete unused NodePort/LoadBalancer Services or use type "
                    "ClusterIP"
                )
            for port in ports:
                decision.node_ports[port.index] = value

    def kept_or_new_lb_ip(
        self,
        request: _Request,
        previous: _Previous | None,
        decision: _Decision,
        claims: _Claims,
    ) -> int | None:
        if self.lb_ips is None or self.lb_pool is None:
            self.warnings.append(
                f"service {request.key}: {_NO_POOL_WARNING}; its EXTERNAL-IP stays <pending> "
                "until the Cluster object configures one"
            )
            return None
        if decision.load_balancer_ip is not None:
            return decision.load_balancer_ip
        if previous is not None:
            for address in previous.load_balancer_ips:
                if self.lb_ips.holder(address) == request.key:
                    return address
        value = claims.allocate(self.lb_ips, _seed("loadBalancerIP", request.key))
        if value is None:
            raise _Problem(
                f"status.loadBalancer: the loadBalancer pool {self.lb_pool} is exhausted (every "
                "address is taken); use a larger pool or delete unused LoadBalancer Services"
            )
        return value

    # -- validation and output -------------------------------------------------------------

    def validate(self, service: Mapping[str, Any]) -> _Request:
        """The Service's request, or :class:`_Problem` with every problem found."""
        key = object_key(service)
        spec = spec_of(service)
        problems: list[str] = []
        service_type = spec.get("type") or "ClusterIP"
        if service_type not in SERVICE_TYPES:
            supported = ", ".join(f'"{name}"' for name in SERVICE_TYPES)
            raise _Problem(f"spec.type: unsupported value {service_type!r}: supported: {supported}")
        headless, cluster_ip = self.requested_cluster_ip(spec, service_type, problems)
        if headless and service_type in _NODE_PORT_TYPES:
            problems.append(
                f'spec.clusterIP: may be "None" (headless) only when type is ClusterIP, '
                f"not {service_type}"
            )
        self.check_families(spec, service_type, problems)
        ports = self.validate_ports(spec, service_type, headless, problems)
        allocate_lb_ports = spec.get("allocateLoadBalancerNodePorts")
        if allocate_lb_ports is not None and not isinstance(allocate_lb_ports, bool):
            problems.append("spec.allocateLoadBalancerNodePorts: must be true or false")
        wants_node_ports = service_type == "NodePort" or (
            service_type == "LoadBalancer" and allocate_lb_ports is not False
        )
        lb_ip = self.requested_lb_ip(key, spec, service_type, problems)
        _check_choice(spec, "sessionAffinity", _SESSION_AFFINITIES, problems)
        _check_choice(spec, "internalTrafficPolicy", _TRAFFIC_POLICIES, problems)
        _check_choice(spec, "externalTrafficPolicy", _TRAFFIC_POLICIES, problems)
        timeout = _affinity_timeout(spec)
        if timeout is not None and not (
            _is_int(timeout) and 1 <= timeout <= MAX_SESSION_AFFINITY_TIMEOUT
        ):
            problems.append(
                "spec.sessionAffinityConfig.clientIP.timeoutSeconds: must be a number of "
                f"seconds from 1 to {MAX_SESSION_AFFINITY_TIMEOUT}, got {timeout!r}"
            )
        if problems:
            raise _Problem("; ".join(problems))
        return _Request(
            key=key,
            service=service,
            type=service_type,
            headless=headless,
            cluster_ip=cluster_ip,
            ports=tuple(ports),
            wants_node_ports=wants_node_ports,
            load_balancer_ip=lb_ip,
        )

    def requested_cluster_ip(
        self, spec: Mapping[str, Any], service_type: str, problems: list[str]
    ) -> tuple[bool, int | None]:
        """(headless, requested address) from spec.clusterIP and spec.clusterIPs."""
        value = spec.get("clusterIP")
        values = spec.get("clusterIPs")
        if values is not None and not isinstance(values, list):
            problems.append("spec.clusterIPs: must be a list of addresses")
            values = None
        if values:
            if len(values) > 1:
                problems.append(
                    "spec.clusterIPs: this cluster is IPv4 single-stack; give one address"
                )
            if value in (None, ""):
                value = values[0]
            elif values[0] != value:
                problems.append(
                    f"spec.clusterIPs[0]: must equal spec.clusterIP ({value}), got {values[0]}"
                )
        if service_type == "ExternalName":
            if value not in (None, ""):
                problems.append("spec.clusterIP: must be empty for an ExternalName Service")
            return False, None
        if value in (None, ""):
            return False, None
        if value == CLUSTER_IP_NONE:
            return True, None
        address = _parse_ipv4(value)
        if address is None:
            problems.append(
                f"spec.clusterIP: {value!r} is not an IPv4 address; give one inside "
                f'{self.service_cidr}, "None" for a headless Service, or leave it unset'
            )
            return False, None
        if address not in self.service_cidr:
            problems.append(
                f"spec.clusterIP: {address} is not in the service range {self.service_cidr} "
                "(the Cluster's serviceCIDR); pick an address inside it or leave it unset"
            )
            return False, None
        if address in (self.service_cidr.network_address, self.service_cidr.broadcast_address):
            problems.append(
                f"spec.clusterIP: {address} is the network or broadcast address of "
                f"{self.service_cidr}; pick another address or leave it unset"
            )
            return False, None
        return False, int(address)

    def check_families(
        self, spec: Mapping[str, Any], service_type: str, problems: list[str]
    ) -> None:
        if service_type == "ExternalName":
            return
        families = spec.get("ipFamilies")
        if families is not None and families != ["IPv4"]:
            problems.append(
                f"spec.ipFamilies: this cluster is IPv4 single-stack, so only [IPv4] is "
                f"possible, got {families!r}"
            )
        policy = spec.get("ipFamilyPolicy")
        if policy is not None and policy not in _FAMILY_POLICIES:
            problems.append(
                f"spec.ipFamilyPolicy: unsupported value {policy!r}: supported: "
                + ", ".join(f'"{name}"' for name in _FAMILY_POLICIES)
            )
        elif policy == "RequireDualStack":
            problems.append(
                "spec.ipFamilyPolicy: RequireDualStack needs a dual-stack cluster and this one "
                "is IPv4 only; use SingleStack or PreferDualStack"
            )

    def validate_ports(
        self,
        spec: Mapping[str, Any],
        service_type: str,
        headless: bool,
        problems: list[str],
    ) -> list[_Port]:
        raw_ports = spec.get("ports")
        if raw_ports is None:
            raw_ports = []
        if not isinstance(raw_ports, list):
            problems.append("spec.ports: must be a list of ports")
            return []
        if not raw_ports and service_type != "ExternalName" and not headless:
            problems.append("spec.ports: a Service needs at least one port")
        ports: list[_Port] = []
        names: dict[str, int] = {}
        numbers: dict[tuple[int, str], int] = {}
        node_ports: dict[tuple[int, str], int] = {}
        low, high = self.node_port_range
        for index, raw in enumerate(raw_ports):
            path = f"spec.ports[{index}]"
            if not isinstance(raw, Mapping):
                problems.append(f"{path}: must be a mapping with at least port")
                continue
            before = len(problems)
            name = raw.get("name") or ""
            if not isinstance(name, str):
                problems.append(f"{path}.name: must be a string")
                name = ""
            if not name and len(raw_ports) > 1:
                problems.append(f"{path}.name: ports must be named when a Service has several")
            elif name in names:
                problems.append(
                    f"{path}.name: duplicate port name {name!r} (also spec.ports[{names[name]}])"
                )
            else:
                names[name] = index
            raw_number = raw.get("port")
            number = raw_number if _is_int(raw_number) and 1 <= raw_number <= 65535 else 0
            if not number:
                problems.append(f"{path}.port: must be a port number (1-65535), got {raw_number!r}")
            protocol = str(raw.get("protocol") or "TCP")
            if protocol not in KUBERNETES_PROTOCOLS:
                supported = ", ".join(f'"{p}"' for p in KUBERNETES_PROTOCOLS)
                problems.append(
                    f"{path}.protocol: unsupported value {protocol!r}: supported: {supported}"
                )
            elif protocol not in self.supported_protocols:
                problems.append(
                    f"{path}.protocol: {protocol} is not supported by this kernel; use "
                    + " or ".join(sorted(self.supported_protocols))
                )
            if number and (number, protocol) in numbers:
                problems.append(
                    f"{path}: duplicate port {number}/{protocol} "
                    f"(also spec.ports[{numbers[number, protocol]}])"
                )
            elif number:
                numbers[number, protocol] = index
            raw_target = raw.get("targetPort")
            target: int | str = number
            if isinstance(raw_target, str):
                target = raw_target
                target_problems = iana_svc_name_problems(raw_target)
                if target_problems:
                    problems.append(
                        f"{path}.targetPort: {raw_target!r} is not a valid port name (an IANA "
                        f"service name): {'; '.join(target_problems)}; use the number without "
                        "quotes or a container port's name"
                    )
            elif _is_int(raw_target) and 1 <= raw_target <= 65535:
                target = raw_target
            elif raw_target is not None:
                problems.append(
                    f"{path}.targetPort: must be a port number (1-65535) or a port name, "
                    f"got {raw_target!r}"
                )
            node_port = raw.get("nodePort") or 0
            if node_port:
                if service_type not in _NODE_PORT_TYPES:
                    problems.append(
                        f"{path}.nodePort: may not be used when type is {service_type}; use "
                        "NodePort or LoadBalancer"
                    )
                elif not (_is_int(node_port) and low <= node_port <= high):
                    problems.append(
                        f"{path}.nodePort: {node_port!r} is not in the node port range "
                        f"{low}-{high}; pick a port inside it or leave nodePort unset"
                    )
                elif (node_port, protocol) in node_ports:
                    problems.append(
                        f"{path}.nodePort: duplicate node port {node_port}/{protocol} "
                        f"(also spec.ports[{node_ports[node_port, protocol]}])"
                    )
                else:
                    node_ports[node_port, protocol] = index
            if len(problems) == before:
                ports.append(_Port(index, name, number, protocol, target, node_port, raw))
        return ports

    def requested_lb_ip(
        self, key: str, spec: Mapping[str, Any], service_type: str, problems: list[str]
    ) -> int | None:
        value = spec.get("loadBalancerIP")
        if value in (None, ""):
            return None
        if service_type != "LoadBalancer":
            # The API server drops type-dependent fields rather than refusing them.
            self.warnings.append(
                f"service {key}: spec.loadBalancerIP is ignored because type is "
                f"{service_type}, not LoadBalancer"
            )
            return None
        address = _parse_ipv4(value)
        if address is None:
            problems.append(f"spec.loadBalancerIP: {value!r} is not an IPv4 address")
            return None
        if self.lb_ips is None:
            return None  # pending anyway; the warning says why
        if int(address) not in self.lb_ips:
            problems.append(
                f"spec.loadBalancerIP: {address} is not in the loadBalancer pool "
                f"{self.lb_pool}; pick an address inside it or leave it unset"
            )
            return None
        return int(address)

    def render(self, request: _Request, decision: _Decision) -> dict[str, Any]:
        """The Service as the API server would store it: defaults and allocations filled."""
        result: dict[str, Any] = _json_copy(request.service)
        metadata = result["metadata"] = dict(metadata_of(result))
        metadata["namespace"] = namespace_of(request.service)
        spec = result["spec"] = dict(spec_of(result))
        spec["type"] = request.type
        ports = []
        for port in request.ports:
            rendered = dict(port.raw)
            rendered["protocol"] = port.protocol
            rendered["targetPort"] = port.target_port
            node_port = decision.node_ports.get(port.index)
            if node_port:
                rendered["nodePort"] = node_port
            else:
                rendered.pop("nodePort", None)
            ports.append(rendered)
        if "ports" in spec or ports:
            spec["ports"] = ports
        spec.setdefault("sessionAffinity", "None")
        if spec["sessionAffinity"] == "ClientIP":
            config = spec["sessionAffinityConfig"] = dict(spec.get("sessionAffinityConfig") or {})
            client_ip = config["clientIP"] = dict(config.get("clientIP") or {})
            client_ip.setdefault("timeoutSeconds", DEFAULT_SESSION_AFFINITY_TIMEOUT)
        if request.type == "ExternalName":
            for absent in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):
                spec.pop(absent, None)
        else:
            if request.headless:
                cluster_ip = CLUSTER_IP_NONE
            else:
                assert decision.cluster_ip is not None
                cluster_ip = str(IPv4Address(decision.cluster_ip))
            spec["clusterIP"] = cluster_ip
            spec["clusterIPs"] = [cluster_ip]
            spec["ipFamilies"] = ["IPv4"]
            spec.setdefault("ipFamilyPolicy", "SingleStack")
            spec.setdefault("internalTrafficPolicy", "Cluster")
        if request.type in _NODE_PORT_TYPES:
            spec.setdefault("externalTrafficPolicy", "Cluster")
        if request.type == "LoadBalancer":
            spec.setdefault("allocateLoadBalancerNodePorts", True)
        status = result["status"] = dict(result.get("status") or {})
        status["loadBalancer"] = {}
        if decision.load_balancer_ip is not None:
            status["loadBalancer"] = {
                "ingress": [{"ip": str(IPv4Address(decision.load_balancer_ip)), "ipMode": "VIP"}]
            }
        return result

    def problem(self, key: str, text: str) -> None:
        self.problems.setdefault(key, []).append(text)


# -- helpers ---------------------------------------------------------------------------------


def _json_copy(value: Any) -> Any:
    """A deep copy of JSON-shaped data, several times faster than copy.deepcopy."""
    if isinstance(value, dict):
        return {key: _json_copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_copy(item) for item in value]
    if value is None or isinstance(value, str | int | float):
        return value
    if isinstance(value, Mapping):
        return {key: _json_copy(item) for key, item in value.items()}
    return copy.deepcopy(value)


def _static_band(size: int, *, step: int, maximum: int) -> int:
    """Size of the lower band kept for explicit requests: min(max(16, size/step), maximum).

    The API server's formula; ranges smaller than 16 have no static band.
    """
    if size < 16:
        return 0
    return min(max(16, size // step), maximum)


def _seed(*parts: str) -> int:
    digest = hashlib.sha256("\x00".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _sort_key(service: Mapping[str, Any]) -> tuple[str, str]:
    return (namespace_of(service), name_of(service))


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_ipv4(value: Any) -> IPv4Address | None:
    if not isinstance(value, str):
        return None
    try:
        return IPv4Address(value)
    except AddressValueError:
        return None


def _check_choice(
    spec: Mapping[str, Any], name: str, choices: Sequence[str], problems: list[str]
) -> None:
    value = spec.get(name)
    if value is not None and value not in choices:
        supported = ", ".join(f'"{choice}"' for choice in choices)
        problems.append(f"spec.{name}: unsupported value {value!r}: supported: {supported}")


def _affinity_timeout(spec: Mapping[str, Any]) -> Any:
    config = spec.get("sessionAffinityConfig")
    if not isinstance(config, Mapping):
        return None
    client_ip = config.get("clientIP")
    if not isinstance(client_ip, Mapping):
        return None
    return client_ip.get("timeoutSeconds")


def _previous_allocation(service: Mapping[str, Any]) -> _Previous:
    """What a stored Service holds, read defensively: invalid values are simply not held."""
    spec = spec_of(service)
    held = _Previous()
    cluster_ip = _parse_ipv4(spec.get("clusterIP"))
    if cluster_ip is not None:
        held.cluster_ip = int(cluster_ip)
    ports = spec.get("ports")
    for port in ports if isinstance(ports, list) else []:
        if not isinstance(port, Mapping):
            continue
        number, node_port = port.get("port"), port.get("nodePort")
        if _is_int(number) and _is_int(node_port) and node_port:
            held.node_ports[number, str(port.get("protocol") or "TCP")] = node_port
    status = service.get("status")
    load_balancer = status.get("loadBalancer") if isinstance(status, Mapping) else None
    ingress = load_balancer.get("ingress") if isinstance(load_balancer, Mapping) else None
    for entry in ingress if isinstance(ingress, list) else []:
        address = _parse_ipv4(entry.get("ip")) if isinstance(entry, Mapping) else None
        if address is not None:
            held.load_balancer_ips.append(int(address))
    return held


def _still_used(held: _Previous, request: _Request, lb_ips: _Pool | None) -> _Previous:
    """The part of a Service's previous allocation its new spec goes on using.

    Dropping the rest before anyone claims anything lets another Service take, in the same
    call, an address this one gave up (say, by becoming headless).
    """
    kept = _Previous()
    if request.has_cluster_ip and request.cluster_ip in (None, held.cluster_ip):
        kept.cluster_ip = held.cluster_ip
    if request.type in _NODE_PORT_TYPES:
        for port in request.ports:
            node_port = held.node_ports.get((port.port, port.protocol))
            if node_port is not None and port.node_port in (0, node_port):
                kept.node_ports[port.port, port.protocol] = node_port
    if request.type == "LoadBalancer" and lb_ips is not None:
        kept.load_balancer_ips = [
            address
            for address in held.load_balancer_ips
            if request.load_balancer_ip in (None, address)
        ]
    return kept
