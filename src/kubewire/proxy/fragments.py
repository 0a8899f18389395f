"""One Service's share of the proxy table (a fragment): endpoint selection per port and
the chains, set elements and UDP frontends that Service contributes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kubewire.proxy import names
from kubewire.proxy.layout import CHOICE_KEY, LOCAL_OFFSET
from kubewire.proxy.model import (
    Chain,
    UdpFrontend,
)
from kubewire.proxy.views import (
    NodeContext,
    ServicePortView,
    ServiceView,
    SliceView,
    ipv4_sort_key,
)


@dataclass(frozen=True, slots=True)
class _Endpoint:
    ip: str
    port: int
    node_name: str | None
    ready: bool
    serving: bool
    terminating: bool

    def sort_key(self) -> tuple[tuple[int, ...], int]:
        return (ipv4_sort_key(self.ip), self.port)


def _usable(endpoints: Sequence[_Endpoint]) -> list[_Endpoint]:
    """Ready endpoints; if none is ready, those still serving while terminating (so a
    rolling update or scale-down does not black-hole traffic), as kube-proxy does."""
    ready = [e for e in endpoints if e.ready]
    return ready or [e for e in endpoints if e.serving and e.terminating]


def endpoints_for_port(port: ServicePortView, slices: Sequence[SliceView]) -> list[_Endpoint]:
    """The endpoints of one Service port: slice ports are matched by name (and protocol);
    the slice port's number is the resolved target port. Duplicates (one endpoint in two
    slices while they are being rebalanced) count once, ready winning."""
    found: dict[tuple[str, int], _Endpoint] = {}
    for sl in slices:
        target = next((sp.port for sp in sl.ports
                       if sp.name == port.name and sp.protocol == port.protocol), None)
        if target is None:
            continue
        for ep in sl.endpoints:
            key = (ep.address, target)
            old = found.get(key)
            if old is None or (ep.ready and not old.ready):
                found[key] = _Endpoint(ep.address, target, ep.node_name, ep.ready,
                                       ep.serving, ep.terminating)
    return sorted(found.values(), key=_Endpoint.sort_key)


_Choice = tuple[tuple[str, str], ...]  # (choice value, "ip . port")
_Elements = tuple[tuple[str, str, str], ...]  # (map, element key, value)
Dispatch = tuple[str, str, str, _Elements]


def _choices(proto: str, frontend: str, choice: _Choice) -> _Elements:
    """``@service-endpoints-<proto>`` elements for one frontend key and one chain's
    choices."""
    m = names.SERVICE_ENDPOINTS[proto]
    return tuple((m, f"{frontend} . {n}", ep) for n, ep in choice)


@dataclass(frozen=True, slots=True)
class Fragment:
    """Everything one Service contributes. Dispatch entries are (key, verdict, what,
    ``@service-endpoints`` elements the key brings while it is live)."""

    chains: tuple[Chain, ...]
    service_ips: tuple[Dispatch, ...]
    nodeports: tuple[Dispatch, ...]
    no_ep_services: tuple[Dispatch, ...]
    no_ep_nodeports: tuple[Dispatch, ...]
    cluster_ports: tuple[str, ...]  # cluster-ip-ports keys ("ip . proto . port")
    affinity: tuple[tuple[str, int], ...]
    hairpin: tuple[str, ...]  # hairpin-endpoints keys ("ip . ip")
    udp: tuple[UdpFrontend, ...]
    shared: tuple[Chain, ...] = ()  # endpoint-choice chains (reference counted)


class _ServiceCompiler:
    """Compiles one Service (all its ports) into a fragment."""

    def __init__(self, node: NodeContext) -> None:
        self.node = node
        self.chains: list[Chain] = []
        self.service_ips: list[Dispatch] = []
        self.nodeports: list[Dispatch] = []
        self.no_ep_services: list[Dispatch] = []
        self.no_ep_nodeports: list[Dispatch] = []
        self.cluster_ports: list[str] = []
        self.affinity: dict[str, int] = {}
        self.hairpin: set[str] = set()
        self.udp: list[UdpFrontend] = []
        self.shared: dict[str, Chain] = {}

    def fragment(self) -> Fragment:
        return Fragment(
            tuple(self.chains), tuple(self.service_ips), tuple(self.nodeports),
            tuple(self.no_ep_services), tuple(self.no_ep_nodeports),
            tuple(self.cluster_ports), tuple(self.affinity.items()), tuple(self.hairpin),
            tuple(self.udp), tuple(self.shared.values()))

    def _may_hairpin(self, e: _Endpoint) -> bool:
        """Only an endpoint on this node can send itself hairpin traffic here: the packet
        is DNATed on the sender's own node. Endpoints with no nodeName (hand-written
        slices) and host-network ones at the node's address are kept to be safe; remote
        endpoints are left out, which keeps the set proportional to the node's pods."""
        return (e.node_name is None or e.node_name == self.node.node_name
                or e.ip in self.node.node_ips)

    def _selection(self, eps: Sequence[_Endpoint], spid: str, proto: str,
                   affinity: int | None, offset: int) -> tuple[list[str], _Choice]:
        """The chain's rules and, when it chooses through ``@service-endpoints``, the
        (choice value, endpoint) pairs every frontend reaching it needs as elements."""
        for e in eps:
            if self._may_hairpin(e):
                self.hairpin.add(f"{e.ip} . {e.ip}")
        if affinity is None and len(eps) > 1:
            # One rule: the frontend (the packet's own daddr . proto . dport, whatever path
            # brought it here) and a random number in [offset, offset + N) pick the
            # endpoint from one shared map; ``offset`` keeps this chain's choices apart
            # from another chain's reached by the same frontend (Local policies).
            # The map lookup itself lives in a chain shared by every chain with the same
            # (protocol, N, offset): the kernel walks all of a map's elements each time a
            # rule binds it, so 10k rules using one 100k-element map loaded in minutes.
            at = f" offset {offset}" if offset else ""
            shared = names.choice_chain(proto, len(eps), bool(offset))
            self.shared[shared] = Chain(shared, (
                f"meta l4proto {proto} dnat ip to {CHOICE_KEY} . numgen random mod "
                f"{len(eps)}{at} map @{names.SERVICE_ENDPOINTS[proto]}",))
            return [f"goto {shared}"], tuple((str(offset + i), f"{e.ip} . {e.port}")
                                 for i, e in enumerate(eps))
        rules: list[str] = []
        sets = [names.affinity_set(spid, e.ip, e.port) if affinity is not None else ""
                for e in eps]
        if affinity is not None:
            # A client seen recently goes back to the same endpoint (refreshing its
            # timeout) before any random choice. The map cannot say which endpoint it
            # chose, so affinity keeps a cascade that updates the chosen one's set.
            for e, s in zip(eps, sets, strict=True):
                self.affinity[s] = affinity
                rules.append(f"meta l4proto {proto} ip saddr @{s} update @{s} {{ ip saddr }} "
                             f"dnat to {e.ip}:{e.port}")
        n = len(eps)
        for i, (e, s) in enumerate(zip(eps, sets, strict=True)):
            pick = f"numgen random mod {n - i} == 0 " if i < n - 1 else ""
            update = f"update @{s} {{ ip saddr }} " if s else ""
            rules.append(f"meta l4proto {proto} {pick}{update}dnat to {e.ip}:{e.port}")
        return rules, ()

    def add_port(self, svc: ServiceView, port: ServicePortView,
                 slices: Sequence[SliceView]) -> None:
        node = self.node
        proto = port.protocol.lower()
        spid = names.service_port_id(svc.namespace, svc.name, proto, port.port)
        eps = endpoints_for_port(port, slices)
        cluster = _usable(eps)
        local = _usable([e for e in eps if e.node_name == node.node_name])
        internal = local if svc.internal_local else cluster
        external = local if svc.external_local else cluster
        ext_ips = sorted(set(svc.external_ips) | set(svc.load_balancer_ips), key=ipv4_sort_key)
        exposed = bool(ext_ips) or port.node_port is not None
        # No usable endpoint anywhere: reject, so clients fail at once instead of timing
        # out. Usable endpoints, but none here for a Local policy: drop, as kube-proxy does.
        no_endpoints = "drop" if cluster else f"goto {names.REJECT_CHAIN}"

        service_chain = names.service_chain(spid)
        local_chain = names.local_chain(spid)
        external_chain = names.external_chain(spid)
        internal_chain = local_chain if svc.internal_local else service_chain

        service_choice: _Choice = ()
        local_choice: _Choice = ()
        if cluster and (not svc.internal_local or (exposed and external)):
            rules_, service_choice = self._selection(cluster, spid, proto,
                                                     svc.affinity_timeout, 0)
            self.chains.append(Chain(service_chain, tuple(rules_)))
        if local and (svc.internal_local or (exposed and svc.external_local)):
            rules_, local_choice = self._selection(local, spid, proto,
                                                   svc.affinity_timeout, LOCAL_OFFSET)
            self.chains.append(Chain(local_chain, tuple(rules_)))
        internal_choice = local_choice if svc.internal_local else service_choice
        # ETP Local: pods and host processes go to the service chain, the rest local.
        external_choice = (service_choice + local_choice if svc.external_local
                           else service_choice)
        if exposed and external:
            if svc.external_local:
                rules: tuple[str, ...] = (
                    # Pods keep cluster-wide load balancing, and host processes are
                    # masqueraded (their replies must come back here); only traffic from
                    # outside is confined to local endpoints and keeps its source address.
                    f"ip saddr {node.cluster_cidr} goto {service_chain}",
                    f"fib saddr type local jump {names.MARK_FOR_MASQUERADE}",
                    f"fib saddr type local goto {service_chain}",
                    f"goto {local_chain}",
                )
            else:
                rules = (f"jump {names.MARK_FOR_MASQUERADE}", f"goto {service_chain}")
            self.chains.append(Chain(external_chain, rules))

        for cip in svc.cluster_ips:
            key = f"{cip} . {proto} . {port.port}"
            what = f"{cip} {proto}/{port.port}"
            if internal:
                self.service_ips.append((key, f"goto {internal_chain}", what,
                                         _choices(proto, f"{cip} . {port.port}", internal_choice)))
                self.cluster_ports.append(key)
            else:
                self.no_ep_services.append((key, no_endpoints, what, ()))
        for eip in ext_ips:
            key = f"{eip} . {proto} . {port.port}"
            what = f"external address {eip} {proto}/{port.port}"
            if external:
                self.service_ips.append((key, f"goto {external_chain}", what,
                                         _choices(proto, f"{eip} . {port.port}", external_choice)))
            else:
                self.no_ep_services.append((key, no_endpoints, what, ()))
        if port.node_port is not None:
            key = f"{proto} . {port.node_port}"
            what = f"nodePort {proto}/{port.node_port}"
            if external:
                # NodePort packets carry a node address: one set of choices per address.
                choices = tuple(c for nip in node.node_ips for c in _choices(
                    proto, f"{nip} . {port.node_port}", external_choice))
                self.nodeports.append((key, f"goto {external_chain}", what, choices))
            else:
                self.no_ep_nodeports.append((key, no_endpoints, what, ()))

        if proto == "udp":
            inside = tuple(sorted({e.ip for e in internal}, key=ipv4_sort_key))
            reachable = {e.ip for e in external}
            if svc.external_local:  # pods and host processes are sent cluster-wide
                reachable.update(e.ip for e in cluster)
            outside = tuple(sorted(reachable, key=ipv4_sort_key))
            self.udp.extend(UdpFrontend(cip, port.port, inside) for cip in svc.cluster_ips)
            self.udp.extend(UdpFrontend(eip, port.port, outside) for eip in ext_ips)
            if port.node_port is not None:
                self.udp.append(UdpFrontend(None, port.node_port, outside))


def compile_service(svc: ServiceView, slices: Sequence[SliceView],
                    node: NodeContext) -> Fragment:
    sc = _ServiceCompiler(node)
    if svc.proxied:
        for port in svc.ports:
            sc.add_port(svc, port, slices)
    return sc.fragment()
