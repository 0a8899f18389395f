"""Services + EndpointSlices + node context -> the node's proxy ruleset (pure).

The shape follows kube-proxy's nftables mode (KEP-3866): one private table, dispatch by
verdict maps keyed on ``daddr . proto . port``, one chain per Service port. Three
deliberate differences, each measured on this kernel (6.18) and nft 1.0.6 - see README.md:

* Endpoint choice among N > 1 endpoints is one lookup of ``ip daddr . th dport . numgen
  random mod N`` in a per-protocol ``typeof`` map (one element per frontend and endpoint),
  done in a chain shared by every Service port with the same protocol and N (the kernel
  walks a map's elements for each rule binding it): elements load ~3x faster than the
  ``numgen random mod (N-i) == 0`` cascade's rules. ClientIP affinity keeps the cascade,
  which can ``update`` the chosen endpoint's affinity set. Not one anonymous
  ``numgen ... vmap { ... }`` per Service: the kernel scans all sets of a table to name
  each anonymous set, so 10k Services took ~30 s to load.
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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from kubewire.proxy import names
from kubewire.proxy.errors import ProxyInputError
from kubewire.proxy.model import (
    Chain,
    Hook,
    NftSet,
    Ruleset,
    RulesetDelta,
    UdpFrontend,
    gc_paused,
)
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
#: Key of ``@service-endpoints-<proto>``: the frontend as the packet carries it (address
#: and port; the protocol is the map's), then a choice.
CHOICE_KEY = "ip daddr . th dport"
#: Local chains choose from [LOCAL_OFFSET, LOCAL_OFFSET + N): a frontend can reach both
#: the service and the local chain of one Service port (externalTrafficPolicy Local).
LOCAL_OFFSET = 1 << 20

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


_Choice = tuple[tuple[str, str], ...]  # (choice value, "ip . port")
_Elements = tuple[tuple[str, str, str], ...]  # (map, element key, value)
_Dispatch = tuple[str, str, str, _Elements]


def _choices(proto: str, frontend: str, choice: _Choice) -> _Elements:
    """``@service-endpoints-<proto>`` elements for one frontend key and one chain's
    choices."""
    m = names.SERVICE_ENDPOINTS[proto]
    return tuple((m, f"{frontend} . {n}", ep) for n, ep in choice)


@dataclass(frozen=True, slots=True)
class _Fragment:
    """Everything one Service contributes. Dispatch entries are (key, verdict, what,
    ``@service-endpoints`` elements the key brings while it is live)."""

    chains: tuple[Chain, ...]
    service_ips: tuple[_Dispatch, ...]
    nodeports: tuple[_Dispatch, ...]
    no_ep_services: tuple[_Dispatch, ...]
    no_ep_nodeports: tuple[_Dispatch, ...]
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
        self.service_ips: list[_Dispatch] = []
        self.nodeports: list[_Dispatch] = []
        self.no_ep_services: list[_Dispatch] = []
        self.no_ep_nodeports: list[_Dispatch] = []
        self.cluster_ports: list[str] = []
        self.affinity: dict[str, int] = {}
        self.hairpin: set[str] = set()
        self.udp: list[UdpFrontend] = []
        self.shared: dict[str, Chain] = {}

    def fragment(self) -> _Fragment:
        return _Fragment(
            tuple(self.chains), tuple(self.service_ips), tuple(self.nodeports),
            tuple(self.no_ep_services), tuple(self.no_ep_nodeports),
            tuple(self.cluster_ports), tuple(self.affinity.items()), tuple(self.hairpin),
            tuple(self.udp), tuple(self.shared.values()))

    def _selection(self, eps: Sequence[_Endpoint], spid: str, proto: str,
                   affinity: int | None, offset: int) -> tuple[list[str], _Choice]:
        """The chain's rules and, when it chooses through ``@service-endpoints``, the
        (choice value, endpoint) pairs every frontend reaching it needs as elements."""
        for e in eps:
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


class _Conflict(Exception):
    """Two Services claim one key: only a full assembly (in name order) settles it."""


_MISSING: Any = object()
_STATIC_SETS = (names.SERVICE_IPS, names.SERVICE_NODEPORTS, names.NO_ENDPOINT_SERVICES,
                names.NO_ENDPOINT_NODEPORTS, names.CLUSTER_IP_PORTS, names.HAIRPIN_ENDPOINTS,
                *names.SERVICE_ENDPOINTS.values())
_TYPEOF = frozenset(names.SERVICE_ENDPOINTS.values())
_SET_TYPES = {**{m: (f"{CHOICE_KEY} . numgen random mod 2", f"ip daddr . {p} dport")
                 for p, m in names.SERVICE_ENDPOINTS.items()},
              names.SERVICE_IPS: (DISPATCH_KEY, "verdict"),
              names.SERVICE_NODEPORTS: (NODEPORT_KEY, "verdict"),
              names.NO_ENDPOINT_SERVICES: (DISPATCH_KEY, "verdict"),
              names.NO_ENDPOINT_NODEPORTS: (NODEPORT_KEY, "verdict"),
              names.CLUSTER_IP_PORTS: (DISPATCH_KEY, None),
              names.HAIRPIN_ENDPOINTS: ("ipv4_addr . ipv4_addr", None)}


class _Assembly:
    """The assembled table as mutable indexes, updated per Service fragment.

    A ``Ruleset`` made from it shares its dicts, so every dict is copied before its first
    change after ``snapshot()`` (copy-on-write); the old ruleset stays as it was. While
    applying a change it remembers each touched chain's and element's old value, which
    gives the delta for the incremental planner without comparing whole rulesets.
    """

    def __init__(self, node: NodeContext) -> None:
        self.chains: dict[str, Chain] = {c.name: c for c in fixed_chains(node)}
        self.elements: dict[str, dict[str, str | None]] = {n: {} for n in _STATIC_SETS}
        self.nodeport_ips = NftSet(names.NODEPORT_IPS, "ipv4_addr",
                                   elements=tuple((ip, None) for ip in node.node_ips))
        self.affinity: dict[str, NftSet] = {}
        self.dispatch_owner: dict[str, str] = {}
        self.nodeport_owner: dict[str, str] = {}
        self.choice_owner: dict[str, str] = {}
        self.shared_refs: dict[str, int] = {}
        self.refs: dict[str, dict[str, int]] = {names.CLUSTER_IP_PORTS: {},
                                                names.HAIRPIN_ENDPOINTS: {}}
        self.udp: dict[tuple[str, str], tuple[UdpFrontend, ...]] = {}
        self.warnings: list[str] = []
        self.strict = False
        self._shared: set[str] = set()  # dicts the last snapshot still refers to
        self._old_chains: dict[str, Chain] = {}
        self._old_elements: dict[str, dict[str, str | None]] = {}
        self._old_sets: dict[str, NftSet] = {}

    def begin(self) -> None:
        """Start recording a change against the last snapshot."""
        self.strict = True
        self._old_chains, self._old_elements, self._old_sets = {}, {}, {}

    def _own(self, what: str) -> None:
        if what in self._shared:
            self._shared.discard(what)
            if what == "chains":
                self.chains = dict(self.chains)
            elif what == "affinity":
                self.affinity = dict(self.affinity)
            else:
                self.elements[what] = dict(self.elements[what])

    def _set_chain(self, name: str, chain: Chain | None) -> None:
        self._own("chains")
        if self.strict and name not in self._old_chains:
            self._old_chains[name] = self.chains.get(name, _MISSING)
        if chain is None:
            del self.chains[name]
        else:
            self.chains[name] = chain

    def _set_element(self, set_name: str, key: str, value: Any) -> None:
        self._own(set_name)
        elements = self.elements[set_name]
        if self.strict:
            old = self._old_elements.setdefault(set_name, {})
            if key not in old:
                old[key] = elements.get(key, _MISSING)
        if value is _MISSING:
            del elements[key]
        else:
            elements[key] = value

    def _set_affinity(self, name: str, s: NftSet | None) -> None:
        self._own("affinity")
        if self.strict and name not in self._old_sets:
            self._old_sets[name] = self.affinity.get(name, _MISSING)
        if s is None:
            del self.affinity[name]
        else:
            self.affinity[name] = s

    def _claim(self, owners: dict[str, str], live_set: str, dead_set: str, owner: str,
               entries: tuple[_Dispatch, ...], live: bool) -> None:
        for key, verdict, what, choices in entries:
            other = owners.get(key)
            if other is not None and other != owner:
                if self.strict:
                    raise _Conflict(key)
                self.warnings.append(f"{owner}: {what} is already used by {other}; ignored")
                continue
            owners[key] = owner
            there, elsewhere = (live_set, dead_set) if live else (dead_set, live_set)
            if key in self.elements[elsewhere]:
                self._set_element(elsewhere, key, _MISSING)
            if self.elements[there].get(key, _MISSING) != verdict:
                self._set_element(there, key, verdict)
            for m, element, endpoint in choices:
                # A node address . nodePort can equal an externalIP . port of another
                # Service: the same element, which only one of them may have.
                other = self.choice_owner.get(element)
                if other is not None and other != owner:
                    if self.strict:
                        raise _Conflict(element)
                    self.warnings.append(f"{owner}: {what} is already used by {other}; "
                                         "ignored")
                    continue
                self.choice_owner[element] = owner
                if self.elements[m].get(element, _MISSING) != endpoint:
                    self._set_element(m, element, endpoint)

    def _unclaim(self, owners: dict[str, str], sets: tuple[str, str], owner: str,
                 entries: tuple[_Dispatch, ...]) -> None:
        for key, _, _, choices in entries:
            for m, element, _endpoint in choices:
                if self.choice_owner.get(element) == owner:
                    del self.choice_owner[element]
                    self._set_element(m, element, _MISSING)
            if owners.get(key) != owner:
                continue
            del owners[key]
            for name in sets:
                if key in self.elements[name]:
                    self._set_element(name, key, _MISSING)

    def _ref(self, set_name: str, keys: Iterable[str], step: int) -> None:
        refs = self.refs[set_name]
        for key in keys:
            n = refs.get(key, 0) + step
            if n:
                refs[key] = n
            else:
                del refs[key]
            if n == 0:
                self._set_element(set_name, key, _MISSING)
            elif n == 1 and step == 1:
                self._set_element(set_name, key, None)

    def add(self, key: tuple[str, str], owner: str, f: _Fragment) -> None:
        for c in f.chains:
            if self.strict and c.name in self.chains:
                raise _Conflict(c.name)
            self._set_chain(c.name, c)
        for c in f.shared:
            n = self.shared_refs.get(c.name, 0) + 1
            self.shared_refs[c.name] = n
            if n == 1:
                self._set_chain(c.name, c)
        self._claim(self.dispatch_owner, names.SERVICE_IPS, names.NO_ENDPOINT_SERVICES,
                    owner, f.service_ips, True)
        self._claim(self.dispatch_owner, names.SERVICE_IPS, names.NO_ENDPOINT_SERVICES,
                    owner, f.no_ep_services, False)
        self._claim(self.nodeport_owner, names.SERVICE_NODEPORTS, names.NO_ENDPOINT_NODEPORTS,
                    owner, f.nodeports, True)
        self._claim(self.nodeport_owner, names.SERVICE_NODEPORTS, names.NO_ENDPOINT_NODEPORTS,
                    owner, f.no_ep_nodeports, False)
        for name, timeout in f.affinity:
            if self.strict and name in self.affinity:
                raise _Conflict(name)
            self._set_affinity(name, NftSet(name, "ipv4_addr", flags=("dynamic", "timeout"),
                                            timeout=timeout))
        self._ref(names.CLUSTER_IP_PORTS, set(f.cluster_ports), 1)
        self._ref(names.HAIRPIN_ENDPOINTS, f.hairpin, 1)
        if f.udp:
            self.udp[key] = f.udp

    def remove(self, key: tuple[str, str], owner: str, f: _Fragment) -> None:
        for c in f.chains:
            self._set_chain(c.name, None)
        for c in f.shared:
            n = self.shared_refs[c.name] - 1
            if n:
                self.shared_refs[c.name] = n
            else:
                del self.shared_refs[c.name]
                self._set_chain(c.name, None)
        self._unclaim(self.dispatch_owner, (names.SERVICE_IPS, names.NO_ENDPOINT_SERVICES),
                      owner, f.service_ips + f.no_ep_services)
        self._unclaim(self.nodeport_owner,
                      (names.SERVICE_NODEPORTS, names.NO_ENDPOINT_NODEPORTS),
                      owner, f.nodeports + f.no_ep_nodeports)
        for name, _ in f.affinity:
            self._set_affinity(name, None)
        self._ref(names.CLUSTER_IP_PORTS, set(f.cluster_ports), -1)
        self._ref(names.HAIRPIN_ENDPOINTS, f.hairpin, -1)
        self.udp.pop(key, None)

    def delta(self, base: object) -> RulesetDelta:
        added, changed, removed = [], [], []
        needs_full = False
        for name, old in self._old_chains.items():
            new = self.chains.get(name, _MISSING)
            if old is _MISSING:
                if new is not _MISSING:
                    added.append(name)
            elif new is _MISSING:
                removed.append(name)
            elif old is not new:
                needs_full = needs_full or old.hook != new.hook
                if old.rules != new.rules:
                    changed.append(name)
        sets_added, sets_removed = [], []
        for name, old_set in self._old_sets.items():
            new_set = self.affinity.get(name, _MISSING)
            if old_set is _MISSING:
                if new_set is not _MISSING:
                    sets_added.append(name)
            elif new_set is _MISSING:
                sets_removed.append(name)
            elif old_set.definition() != new_set.definition():
                needs_full = True
        gone_by_set, came_by_set = [], []
        for name in sorted(self._old_elements):
            elements = self.elements[name]
            gone, came = [], []
            for key, old_value in self._old_elements[name].items():
                value = elements.get(key, _MISSING)
                if value is _MISSING and old_value is _MISSING:
                    continue
                if old_value is _MISSING:
                    came.append((key, value))
                elif value is _MISSING:
                    gone.append((key, old_value))
                elif value != old_value:
                    gone.append((key, old_value))
                    came.append((key, value))
            if gone:
                gone_by_set.append((name, tuple(sorted(gone))))
            if came:
                came_by_set.append((name, tuple(sorted(came))))
        return RulesetDelta(
            base=base, chains_added=tuple(sorted(added)), chains_changed=tuple(sorted(changed)),
            chains_removed=tuple(sorted(removed)), sets_added=tuple(sorted(sets_added)),
            sets_removed=tuple(sorted(sets_removed)), elements_gone=tuple(gone_by_set),
            elements_came=tuple(came_by_set), needs_full=needs_full)

    def snapshot(self, delta: RulesetDelta | None) -> Ruleset:
        sets: dict[str, NftSet] = dict(self.affinity)
        sets[names.NODEPORT_IPS] = self.nodeport_ips
        for name in _STATIC_SETS:
            key_type, data_type = _SET_TYPES[name]
            sets[name] = NftSet.from_dict(name, key_type, self.elements[name], data_type,
                                          typeof=name in _TYPEOF)
        self._shared = {"chains", "affinity", *_STATIC_SETS}
        self.strict = False
        return Ruleset.from_indexes(self.chains, sets, tuple(self.udp.items()),
                                    tuple(self.warnings), delta)


_Key = tuple[str, str]
_Entry = tuple[ServiceView, tuple[SliceView, ...], _Fragment]


def _ordered(found: Sequence[SliceView]) -> tuple[SliceView, ...]:
    return tuple(found) if len(found) < 2 else tuple(sorted(found, key=attrgetter("name")))


class ProxyCompiler:
    """``compile_proxy`` with a memory, for an agent that recompiles on every change.

    Two entry points that give the same rulesets and deltas:

    * ``compile(services, slices)``: the whole current state (first sync, resyncs). A
      Service whose view and EndpointSlice views are unchanged since the last call reuses
      its compiled fragment (and, given dicts with ``metadata.resourceVersion``, its
      views), so a change to one Service of 10k costs one pass over the input.
    * ``update(changed_services, removed_services, changed_slices, removed_slices)``: only
      what changed (watch events); costs the changed Services' fragments, independent of
      the number of Services. The state is the last ``compile`` plus every ``update``
      since.

    The assembled table is kept and only the changed Services' fragments are taken out
    and put back; the result carries a ``delta`` from the previous result for the
    incremental planner. A Service claiming a key another one holds (and any call while
    such a conflict exists) reassembles everything in name order. The output is exactly
    ``compile_proxy``'s for the same (full) input.
    """

    def __init__(self, node: NodeContext) -> None:
        self.node = node
        self._views = ViewCache()
        self._memo: dict[_Key, _Entry] = {}
        # update()'s state: Services not in _memo (none: every Service has an entry), the
        # EndpointSlices by (namespace, name), and by the Service their label names.
        self._slices: dict[_Key, SliceView] = {}
        self._groups: dict[_Key, list[SliceView]] = {}
        self._slice_names_unique = True
        self._assembly: _Assembly | None = None
        self._last: Ruleset | None = None

    def compile(
        self,
        services: Iterable[Mapping[str, Any] | ServiceView],
        slices: Iterable[Mapping[str, Any] | SliceView],
    ) -> Ruleset:
        with gc_paused():
            return self._compile(services, slices)

    def update(
        self,
        changed_services: Iterable[Mapping[str, Any] | ServiceView] = (),
        removed_services: Iterable[tuple[str, str]] = (),
        changed_slices: Iterable[Mapping[str, Any] | SliceView] = (),
        removed_slices: Iterable[tuple[str, str]] = (),
    ) -> Ruleset:
        """Apply watch events and return the ruleset ``compile()`` would return for the
        resulting full state (same ruleset, same delta against the previous result).

        ``changed_*``: the new state of added or modified objects (dicts or views; later
        entries for one key win). ``removed_*``: ``(namespace, name)`` of deleted objects;
        unknown keys are ignored. A key both changed and removed in one call is refused
        (``ProxyInputError``): coalesce events to the last state per key first. A changed
        EndpointSlice affects the Service its ``kubernetes.io/service-name`` label names
        and, when the label changed, the Service it named before. Calling it before any
        ``compile()`` starts from an empty state.
        """
        with gc_paused():
            return self._update(changed_services, removed_services, changed_slices,
                                removed_slices)

    def _compile(
        self,
        services: Iterable[Mapping[str, Any] | ServiceView],
        slices: Iterable[Mapping[str, Any] | SliceView],
    ) -> Ruleset:
        groups: dict[_Key, list[SliceView]] = {}
        index: dict[_Key, SliceView] = {}
        n_slices = 0
        for sl in self._views.slices(slices):
            n_slices += 1
            index[(sl.namespace, sl.name)] = sl
            if sl.service_name:
                skey = (sl.namespace, sl.service_name)
                group = groups.get(skey)
                if group is None:
                    groups[skey] = [sl]
                else:
                    group.append(sl)
        old_memo = self._memo
        memo: dict[_Key, _Entry] = {}
        fragments: list[tuple[_Key, _Fragment]] = []
        changed: list[_Key] = []
        for svc in self._views.services(services):
            key = (svc.namespace, svc.name)
            svc_slices = _ordered(groups.get(key, ()))
            hit = old_memo.get(key)
            # Tuple comparison tests identity first: unchanged views cost no field compare.
            if hit is not None and (hit[0] is svc or hit[0] == svc) and hit[1] == svc_slices:
                fragment = hit[2]
            else:
                fragment = compile_service(svc, svc_slices, self.node)
                changed.append(key)
            memo[key] = (svc, svc_slices, fragment)
            fragments.append((key, fragment))
        self._memo = memo
        self._slices, self._groups = index, groups
        self._slice_names_unique = len(index) == n_slices
        removed = [k for k in old_memo if k not in memo]
        # Duplicate Services: a full assembly of every one, as compile_proxy always did.
        return self._assemble(old_memo, removed, changed, fragments,
                              full=len(memo) != len(fragments))

    def _update(
        self,
        changed_services: Iterable[Mapping[str, Any] | ServiceView],
        removed_services: Iterable[tuple[str, str]],
        changed_slices: Iterable[Mapping[str, Any] | SliceView],
        removed_slices: Iterable[tuple[str, str]],
    ) -> Ruleset:
        if not self._slice_names_unique:
            raise ProxyInputError("the last compile() had two EndpointSlices with one "
                                  "namespace/name, so update() cannot tell them apart; "
                                  "call compile() with the full state")
        svc_views = [self._views.service(o) for o in changed_services]
        slice_views = [self._views.slice(o) for o in changed_slices]
        gone_svcs = {(str(ns), str(name)) for ns, name in removed_services}
        gone_slices = {(str(ns), str(name)) for ns, name in removed_slices}
        for v in slice_views:
            if not v.name:
                raise ProxyInputError(f"EndpointSlice of {v.namespace}/{v.service_name} "
                                      "without a name: update() keys slices by name")
        both = ({(v.namespace, v.name) for v in svc_views} & gone_svcs) \
            | ({(v.namespace, v.name) for v in slice_views} & gone_slices)
        if both:
            raise ProxyInputError(f"{sorted(both)} both changed and removed in one update(); "
                                  "pass only the last state of each object")

        dirty: dict[_Key, None] = {}  # ordered, for a deterministic assembly
        for key in gone_slices:
            self._views.forget(SliceView, key)
            self._drop_slice(key, dirty)
        for sl in slice_views:
            key = (sl.namespace, sl.name)
            self._drop_slice(key, dirty)
            self._slices[key] = sl
            if sl.service_name:
                skey = (sl.namespace, sl.service_name)
                self._groups.setdefault(skey, []).append(sl)
                dirty[skey] = None
        services: dict[_Key, ServiceView | None] = {}
        for key in gone_svcs:
            self._views.forget(ServiceView, key)
            services[key] = None
        for svc in svc_views:
            services[(svc.namespace, svc.name)] = svc
        for key in services:
            dirty[key] = None

        memo = self._memo
        old_entries: dict[_Key, _Entry] = {}
        removed: list[_Key] = []
        changed: list[_Key] = []
        for key in sorted(dirty):
            hit = memo.get(key)
            now = services[key] if key in services else (hit[0] if hit else None)
            if now is None:
                if hit is not None:
                    old_entries[key] = memo.pop(key)
                    removed.append(key)
                continue
            svc_slices = _ordered(self._groups.get(key, ()))
            if hit is not None and (hit[0] is now or hit[0] == now) and hit[1] == svc_slices:
                memo[key] = (now, svc_slices, hit[2])  # the newest equal view, as compile()
                continue
            if hit is not None:
                old_entries[key] = hit
            memo[key] = (now, svc_slices, compile_service(now, svc_slices, self.node))
            changed.append(key)
        return self._assemble(old_entries, removed, changed, None, full=False)

    def _drop_slice(self, key: _Key, dirty: dict[_Key, None]) -> None:
        old = self._slices.pop(key, None)
        if old is None or not old.service_name:
            return
        skey = (old.namespace, old.service_name)
        group = self._groups.get(skey)
        if group is not None:
            group[:] = [s for s in group if s.name != old.name]
            if not group:
                del self._groups[skey]
        dirty[skey] = None

    def _assemble(self, old_memo: Mapping[_Key, _Entry], removed: Sequence[_Key],
                  changed: Sequence[_Key], fragments: list[tuple[_Key, _Fragment]] | None,
                  full: bool) -> Ruleset:
        """Take the removed and changed Services' old fragments (from ``old_memo``) out of
        the kept assembly and put the changed ones' new fragments (``self._memo``) in; or
        assemble ``fragments`` (default: the memo's) from scratch."""
        memo = self._memo
        asm, last = self._assembly, self._last
        if asm is not None and last is not None and not asm.warnings and not full:
            try:
                asm.begin()
                for key in (*removed, *changed):
                    old = old_memo.get(key)
                    if old is not None:
                        asm.remove(key, f"{key[0]}/{key[1]}", old[2])
                for key in changed:
                    asm.add(key, f"{key[0]}/{key[1]}", memo[key][2])
            except _Conflict:
                pass
            else:
                self._last = asm.snapshot(asm.delta(last.token))
                return self._last
        # First call, or a conflict to settle in name order: assemble everything.
        if fragments is None:
            fragments = [(key, entry[2]) for key, entry in memo.items()]
        fragments.sort(key=lambda kf: kf[0])
        asm = _Assembly(self.node)
        for key, fragment in fragments:
            asm.add(key, f"{key[0]}/{key[1]}", fragment)
        self._assembly = asm
        self._last = asm.snapshot(None)
        return self._last


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
