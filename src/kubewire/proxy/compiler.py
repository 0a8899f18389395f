"""Services + EndpointSlices + node context -> the node's proxy ruleset (pure).

The shape follows kube-proxy's nftables mode (KEP-3866): one private table, dispatch by
verdict maps keyed on ``daddr . proto . port``, one chain per Service port. Three
deliberate differences, each measured on this kernel (6.18) and nft 1.0.6 - see README.md:

* Endpoint choice is a cascade of ``numgen random mod (N-i) == 0`` rules (exactly uniform,
  like iptables-mode's ``statistic`` cascade) rather than one anonymous
  ``numgen ... vmap { ... }`` per Service: the kernel scans all sets of a table to name each
  anonymous set, so 10k Services took ~30 s to load instead of ~1.5 s.
* DNAT happens in the service chain itself; there are no per-endpoint chains. nft fetches
  the table's whole chain list before every transaction and that fetch grows faster than
  linearly (30k chains ~75 ms, 100k ~1 s), which made one-Service incremental syncs at 10k
  Services x 10 endpoints take a second.
* Hairpin traffic (a pod reaching itself through a Service) is recognised at postrouting,
  by ``ip saddr . ip daddr`` in a set of ``endpoint . endpoint`` pairs, instead of by an
  ``ip saddr <endpoint>`` rule in each endpoint chain.

Likewise, ClusterIP traffic from outside the pod network is marked for masquerade by one
lookup in ``@cluster-ip-ports`` in the ``services`` chain rather than by a rule in each
service chain: set elements are far cheaper for nft to load than rules.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from kubewire.proxy import names
from kubewire.proxy.model import Chain, Hook, NftSet, Ruleset, UdpFrontend, gc_paused
from kubewire.proxy.views import (
    NodeContext,
    ServicePortView,
    ServiceView,
    SliceView,
    ViewCache,
    ipv4_sort_key,
)

DISPATCH_KEY = "ipv4_addr . inet_proto . inet_service"
NODEPORT_KEY = "inet_proto . inet_service"
MARK = f"{names.MASQUERADE_MARK:#x}"

# Base chains. DNAT at priority dstnat on prerouting (traffic from pods and other hosts) and
# output (host processes); masquerade at srcnat on postrouting, after the routing decision
# picked the outgoing interface. Rejects/drops for Services without usable endpoints run in
# filter chains at priority filter on input, forward and output (the hooks kube-proxy uses):
# `reject` is not allowed in prerouting before Linux 5.9, and a packet whose Service has
# endpoints was already DNATed at dstnat (-100), so by priority filter (0) only traffic
# for Services without endpoints still carries a service address.
HOOKS: dict[str, Hook] = {
    names.NAT_PREROUTING: Hook("nat", "prerouting", "dstnat"),
    # -100 is dstnat; nft 1.0.6 takes that keyword for prerouting only.
    names.NAT_OUTPUT: Hook("nat", "output", "-100"),
    names.NAT_POSTROUTING: Hook("nat", "postrouting", "srcnat"),
    names.FILTER_INPUT: Hook("filter", "input", "filter"),
    names.FILTER_FORWARD: Hook("filter", "forward", "filter"),
    names.FILTER_OUTPUT: Hook("filter", "output", "filter"),
}


def _fixed_chains(node: NodeContext) -> dict[str, tuple[str, ...]]:
    svc_check = f"ct state new jump {names.SERVICE_ENDPOINTS_CHECK}"
    # ClusterIP traffic from outside the pod network (host processes, other hosts) is
    # masqueraded so that replies come back through this node: one set lookup here
    # rather than one rule per Service (elements are far cheaper to load than rules).
    outside = "" if node.masquerade_all else f"ip saddr != {node.cluster_cidr} "
    return {
        names.NAT_PREROUTING: (f"jump {names.SERVICES}",),
        names.NAT_OUTPUT: (f"jump {names.SERVICES}",),
        names.NAT_POSTROUTING: (f"jump {names.MASQUERADING}",),
        names.FILTER_INPUT: (f"ct state new jump {names.NODEPORT_ENDPOINTS_CHECK}", svc_check),
        names.FILTER_FORWARD: (svc_check,),
        names.FILTER_OUTPUT: (svc_check,),
        names.SERVICES: (
            f"{outside}ip daddr . meta l4proto . th dport @{names.CLUSTER_IP_PORTS} "
            f"jump {names.MARK_FOR_MASQUERADE}",
            f"ip daddr . meta l4proto . th dport vmap @{names.SERVICE_IPS}",
            f"ip daddr @{names.NODEPORT_IPS} meta l4proto . th dport "
            f"vmap @{names.SERVICE_NODEPORTS}",
        ),
        names.SERVICE_ENDPOINTS_CHECK: (
            f"ip daddr . meta l4proto . th dport vmap @{names.NO_ENDPOINT_SERVICES}",
        ),
        names.NODEPORT_ENDPOINTS_CHECK: (
            f"ip daddr @{names.NODEPORT_IPS} meta l4proto . th dport "
            f"vmap @{names.NO_ENDPOINT_NODEPORTS}",
        ),
        names.MARK_FOR_MASQUERADE: (f"meta mark set meta mark or {MARK}",),
        names.MASQUERADING: (
            f"ct status dnat ip saddr . ip daddr @{names.HAIRPIN_ENDPOINTS} "
            f"jump {names.MARK_FOR_MASQUERADE}",
            f"meta mark & {MARK} == 0 return",
            f"meta mark set meta mark xor {MARK}",
            "masquerade fully-random",
        ),
        # TCP clients get a reset, everything else ICMP port unreachable: both make
        # connect() fail at once with ECONNREFUSED (Linux maps either to it; some stacks
        # retry a SYN that drew only an ICMP error).
        names.REJECT_CHAIN: (
            "meta l4proto tcp reject with tcp reset",
            "reject with icmp type port-unreachable",
        ),
    }


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


@dataclass(frozen=True, slots=True)
class _Fragment:
    """Everything one Service contributes. Dispatch entries are (key, verdict, what)."""

    chains: tuple[Chain, ...]
    service_ips: tuple[tuple[str, str, str], ...]
    nodeports: tuple[tuple[str, str, str], ...]
    no_ep_services: tuple[tuple[str, str, str], ...]
    no_ep_nodeports: tuple[tuple[str, str, str], ...]
    cluster_ports: tuple[str, ...]  # cluster-ip-ports keys ("ip . proto . port")
    affinity: tuple[tuple[str, int], ...]
    hairpin: tuple[str, ...]  # hairpin-endpoints keys ("ip . ip")
    udp: tuple[UdpFrontend, ...]


class _ServiceCompiler:
    """Compiles one Service (all its ports) into a fragment."""

    def __init__(self, node: NodeContext) -> None:
        self.node = node
        self.chains: list[Chain] = []
        self.service_ips: list[tuple[str, str, str]] = []
        self.nodeports: list[tuple[str, str, str]] = []
        self.no_ep_services: list[tuple[str, str, str]] = []
        self.no_ep_nodeports: list[tuple[str, str, str]] = []
        self.cluster_ports: list[str] = []
        self.affinity: dict[str, int] = {}
        self.hairpin: set[str] = set()
        self.udp: list[UdpFrontend] = []

    def fragment(self) -> _Fragment:
        return _Fragment(
            tuple(self.chains), tuple(self.service_ips), tuple(self.nodeports),
            tuple(self.no_ep_services), tuple(self.no_ep_nodeports),
            tuple(self.cluster_ports), tuple(self.affinity.items()), tuple(self.hairpin),
            tuple(self.udp))

    def _selection(self, eps: Sequence[_Endpoint], spid: str, proto: str,
                   affinity: int | None) -> list[str]:
        rules: list[str] = []
        sets = [names.affinity_set(spid, e.ip, e.port) if affinity is not None else ""
                for e in eps]
        if affinity is not None:
            # A client seen recently goes back to the same endpoint (refreshing its
            # timeout) before any random choice.
            for e, s in zip(eps, sets, strict=True):
                self.affinity[s] = affinity
                rules.append(f"meta l4proto {proto} ip saddr @{s} update @{s} {{ ip saddr }} "
                             f"dnat to {e.ip}:{e.port}")
        n = len(eps)
        for i, (e, s) in enumerate(zip(eps, sets, strict=True)):
            self.hairpin.add(f"{e.ip} . {e.ip}")
            pick = f"numgen random mod {n - i} == 0 " if i < n - 1 else ""
            update = f"update @{s} {{ ip saddr }} " if s else ""
            rules.append(f"meta l4proto {proto} {pick}{update}dnat to {e.ip}:{e.port}")
        return rules

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

        if cluster and (not svc.internal_local or (exposed and external)):
            self.chains.append(Chain(service_chain, tuple(self._selection(
                cluster, spid, proto, svc.affinity_timeout))))
        if local and (svc.internal_local or (exposed and svc.external_local)):
            self.chains.append(Chain(local_chain, tuple(self._selection(
                local, spid, proto, svc.affinity_timeout))))
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
                self.service_ips.append((key, f"goto {internal_chain}", what))
                self.cluster_ports.append(key)
            else:
                self.no_ep_services.append((key, no_endpoints, what))
        for eip in ext_ips:
            key = f"{eip} . {proto} . {port.port}"
            what = f"external address {eip} {proto}/{port.port}"
            if external:
                self.service_ips.append((key, f"goto {external_chain}", what))
            else:
                self.no_ep_services.append((key, no_endpoints, what))
        if port.node_port is not None:
            key = f"{proto} . {port.node_port}"
            what = f"nodePort {proto}/{port.node_port}"
            if external:
                self.nodeports.append((key, f"goto {external_chain}", what))
            else:
                self.no_ep_nodeports.append((key, no_endpoints, what))

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
                    node: NodeContext) -> _Fragment:
    sc = _ServiceCompiler(node)
    if svc.proxied:
        for port in svc.ports:
            sc.add_port(svc, port, slices)
    return sc.fragment()


@functools.lru_cache(maxsize=16)
def fixed_chains(node: NodeContext) -> tuple[Chain, ...]:
    """The chains every node has (cached: the same objects each compile, which lets the
    incremental planner skip them by identity)."""
    return tuple(Chain(name, rules, HOOKS.get(name))
                 for name, rules in _fixed_chains(node).items())


class ProxyCompiler:
    """``compile_proxy`` with a memory, for an agent that recompiles on every change.

    A Service whose view and EndpointSlice views are unchanged since the last call reuses
    its compiled fragment (and, given dicts with ``metadata.resourceVersion``, its views),
    so a change to one Service of 10k costs little more than assembling the result.
    The output is exactly ``compile_proxy``'s for the same input.
    """

    def __init__(self, node: NodeContext) -> None:
        self.node = node
        self._views = ViewCache()
        self._memo: dict[tuple[str, str],
                         tuple[ServiceView, tuple[SliceView, ...], _Fragment]] = {}

    def compile(
        self,
        services: Iterable[Mapping[str, Any] | ServiceView],
        slices: Iterable[Mapping[str, Any] | SliceView],
    ) -> Ruleset:
        with gc_paused():
            return self._compile(services, slices)

    def _compile(
        self,
        services: Iterable[Mapping[str, Any] | ServiceView],
        slices: Iterable[Mapping[str, Any] | SliceView],
    ) -> Ruleset:
        by_service: dict[tuple[str, str], list[SliceView]] = defaultdict(list)
        for sl in self._views.slices(slices):
            if sl.service_name:
                by_service[(sl.namespace, sl.service_name)].append(sl)
        memo: dict[tuple[str, str], tuple[ServiceView, tuple[SliceView, ...], _Fragment]] = {}
        fragments: list[tuple[str, _Fragment]] = []
        for svc in sorted(self._views.services(services), key=lambda s: (s.namespace, s.name)):
            key = (svc.namespace, svc.name)
            found = by_service.get(key, ())
            svc_slices = tuple(found) if len(found) < 2 else tuple(sorted(
                found, key=attrgetter("name")))
            hit = self._memo.get(key)
            if (hit is not None and (hit[0] is svc or hit[0] == svc)
                    and _same(hit[1], svc_slices)):
                fragment = hit[2]
            else:
                fragment = compile_service(svc, svc_slices, self.node)
            memo[key] = (svc, svc_slices, fragment)
            fragments.append((f"{svc.namespace}/{svc.name}", fragment))
        self._memo = memo
        return _assemble(fragments, self.node)


def _same(a: tuple[SliceView, ...], b: tuple[SliceView, ...]) -> bool:
    return len(a) == len(b) and all(x is y or x == y for x, y in zip(a, b, strict=True))


def _assemble(fragments: Sequence[tuple[str, _Fragment]], node: NodeContext) -> Ruleset:
    chains: list[Chain] = list(fixed_chains(node))
    dispatch: dict[str, tuple[str, str, bool]] = {}  # key -> (verdict, owner, has endpoints)
    nodeport: dict[str, tuple[str, str, bool]] = {}
    affinity: list[tuple[str, int]] = []
    cluster_ports: set[str] = set()
    hairpin: set[str] = set()
    udp: list[UdpFrontend] = []
    warnings: list[str] = []

    def claim(table: dict[str, tuple[str, str, bool]], owner: str,
              entries: tuple[tuple[str, str, str], ...], live: bool) -> None:
        for key, verdict, what in entries:
            other = table.get(key)
            if other is not None and other[1] != owner:
                warnings.append(f"{owner}: {what} is already used by {other[1]}; ignored")
                continue
            table[key] = (verdict, owner, live)

    for owner, f in fragments:
        chains.extend(f.chains)
        claim(dispatch, owner, f.service_ips, True)
        claim(dispatch, owner, f.no_ep_services, False)
        claim(nodeport, owner, f.nodeports, True)
        claim(nodeport, owner, f.no_ep_nodeports, False)
        affinity.extend(f.affinity)
        cluster_ports.update(f.cluster_ports)
        hairpin.update(f.hairpin)
        udp.extend(f.udp)

    def vmap(name: str, key_type: str, table: dict[str, tuple[str, str, bool]],
             live: bool) -> NftSet:
        elements = sorted((k, v[0]) for k, v in table.items() if v[2] is live)
        return NftSet(name, key_type, "verdict", elements=tuple(elements))

    sets = [
        vmap(names.SERVICE_IPS, DISPATCH_KEY, dispatch, True),
        vmap(names.SERVICE_NODEPORTS, NODEPORT_KEY, nodeport, True),
        vmap(names.NO_ENDPOINT_SERVICES, DISPATCH_KEY, dispatch, False),
        vmap(names.NO_ENDPOINT_NODEPORTS, NODEPORT_KEY, nodeport, False),
        NftSet(names.CLUSTER_IP_PORTS, DISPATCH_KEY,
               elements=tuple((key, None) for key in sorted(cluster_ports))),
        NftSet(names.NODEPORT_IPS, "ipv4_addr",
               elements=tuple((ip, None) for ip in node.node_ips)),
        NftSet(names.HAIRPIN_ENDPOINTS, "ipv4_addr . ipv4_addr",
               elements=tuple((key, None) for key in sorted(hairpin))),
    ]
    sets.extend(NftSet(name, "ipv4_addr", flags=("dynamic", "timeout"), timeout=timeout)
                for name, timeout in affinity)
    return Ruleset(
        chains=tuple(sorted(chains, key=attrgetter("name"))),
        sets=tuple(sorted(sets, key=attrgetter("name"))),
        udp_frontends=tuple(sorted(udp, key=lambda f: f.key)),
        warnings=tuple(warnings),
    )


def compile_proxy(
    services: Iterable[Mapping[str, Any] | ServiceView],
    slices: Iterable[Mapping[str, Any] | SliceView],
    node: NodeContext,
) -> Ruleset:
    """The proxy ruleset for one node. Pure and deterministic: same input, same output.

    ``services``/``slices`` are Kubernetes JSON dicts (Service v1, EndpointSlice
    discovery.k8s.io/v1) or views (``ServiceView.from_k8s``, ``SliceView.from_k8s``).
    Headless and ExternalName Services produce nothing. Two Services claiming the same
    address and port: the first in (namespace, name) order wins and the other is named in
    ``Ruleset.warnings``.
    """
    return ProxyCompiler(node).compile(services, slices)
