"""NetworkPolicies + pods + namespaces + node -> the node's ``ip kubewire-policy`` table (pure).

The shape (README.md has the why):

* ``policy-forward`` (filter, forward, priority 10 - after the proxy's DNAT at prerouting,
  so rules see pod addresses, and after its own filter chains at 0): established/related
  accepted, invalid dropped, then ``ip saddr vmap @isolated-egress`` (local pods isolated
  for egress -> ``jump egress-<namespace>``) and ``ip daddr vmap @isolated-ingress`` (->
  ``goto ingress-<namespace>``). ``policy-input`` does the egress half for pods talking
  to their own node.
* A namespace chain holds the rules of that namespace's policies only (a policy selects
  pods of its own namespace), one nft rule per policy rule (two when a rule lists both
  numeric and named ports), and ends in ``goto policy-deny``. Allowed egress ``return``s
  to the ingress check; allowed ingress ``accept``s.
* Each rule is set lookups: ``ip daddr @pods-...`` (the policy's local targets),
  ``ip saddr @peers-...`` (peer pods' addresses and ipBlocks as merged intervals),
  ``meta l4proto . th dport @ports-...`` (numeric ports and ranges) or ``ip daddr .
  meta l4proto . th dport @named-...`` (named ports resolved per destination pod).
  Pod churn changes elements, not rules; identical selectors share one set.
* ``policy-deny`` rejects: TCP with a reset, the rest (and connections the proxy DNATed,
  whose reset would escape un-NATed) with ICMP admin-prohibited, so a denied connection
  fails at once instead of timing out.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubewire.policy import names
from kubewire.policy.evaluate import namespace_labels, selects
from kubewire.policy.model import Chain, Hook, NftSet, Ruleset
from kubewire.policy.views import (
    INGRESS,
    NamespaceView,
    PeerView,
    PodView,
    PolicyView,
    PortView,
    RuleView,
    views,
)

PRIORITY = 10
PROTO_ORDER = {"tcp": 0, "udp": 1, "sctp": 2}
ALL_ADDRESSES = (0, (1 << 32) - 1)

Interval = tuple[int, int]


@dataclass(frozen=True, slots=True)
class PolicyNode:
    """The node a ruleset is for: its pods (``PodView.node == name``) are the local ones."""

    name: str


# ---------------------------------------------------------------- intervals and rendering


def _ip_int(ip: str) -> int:
    # Views hold canonical dotted quads; ipaddress costs ~4 us per address.
    a, b, c, d = ip.split(".")
    return (int(a) << 24) | (int(b) << 16) | (int(c) << 8) | int(d)


def _ip_str(value: int) -> str:
    return f"{value >> 24}.{(value >> 16) & 255}.{(value >> 8) & 255}.{value & 255}"


def merge(intervals: Iterable[Interval]) -> list[Interval]:
    """Sorted, disjoint, non-adjacent intervals covering the same values."""
    out: list[Interval] = []
    for lo, hi in sorted(intervals):
        if out and lo <= out[-1][1] + 1:
            if hi > out[-1][1]:
                out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return out


def subtract(base: Interval, holes: Iterable[Interval]) -> list[Interval]:
    out = [base]
    for hlo, hhi in merge(holes):
        nxt = []
        for lo, hi in out:
            if hhi < lo or hlo > hi:
                nxt.append((lo, hi))
                continue
            if lo < hlo:
                nxt.append((lo, hlo - 1))
            if hhi < hi:
                nxt.append((hhi + 1, hi))
        out = nxt
    return out


def render_ip_interval(lo: int, hi: int) -> str:
    if lo == hi:
        return _ip_str(lo)
    size = hi - lo + 1
    if size & (size - 1) == 0 and lo % size == 0:
        return f"{_ip_str(lo)}/{32 - size.bit_length() + 1}"
    return f"{_ip_str(lo)}-{_ip_str(hi)}"


def render_port_interval(lo: int, hi: int) -> str:
    return str(lo) if lo == hi else f"{lo}-{hi}"


def _network_interval(net: ipaddress.IPv4Network) -> Interval:
    return int(net.network_address), int(net.broadcast_address)


# ---------------------------------------------------------------- the compiler


class _Compiler:
    def __init__(self, pods: Sequence[PodView], namespaces: Mapping[str, NamespaceView],
                 node: PolicyNode) -> None:
        self.node = node
        self.namespaces = namespaces
        self.pods_by_ns: dict[str, list[PodView]] = {}
        for pod in pods:
            if pod.ip is not None:
                self.pods_by_ns.setdefault(pod.namespace, []).append(pod)
        self.all_pods = [p for ns in sorted(self.pods_by_ns) for p in self.pods_by_ns[ns]]
        self.local_pods = [p for p in self.all_pods if p.node == node.name]
        self.local_by_ns: dict[str, list[PodView]] = {}
        for pod in self.local_pods:
            self.local_by_ns.setdefault(pod.namespace, []).append(pod)
        # Pods by namespace and label set: selectors are matched once per distinct label
        # set (a Deployment's pods share one), not once per pod.
        groups: dict[str, dict[frozenset[tuple[str, str]], list[int]]] = {}
        for pod in self.all_pods:
            assert pod.ip is not None
            labels = frozenset(pod.labels.items())
            groups.setdefault(pod.namespace, {}).setdefault(labels, []).append(_ip_int(pod.ip))
        self.groups = groups
        self.sets: dict[str, NftSet] = {}
        self._set_keys: dict[str, str] = {}
        self._peer_cache: dict[tuple[str, str], list[Interval]] = {}
        self._named_memo: dict[tuple[str, tuple[tuple[str, str], ...]], str | None] = {}
        self._peers_memo: dict[tuple[str, str], str | None] = {}
        self.chains: dict[str, list[str]] = {}
        self.isolated: dict[str, dict[int, str]] = {"Ingress": {}, "Egress": {}}

    def _add_set(self, name: str, key: str, nft_set: NftSet) -> str:
        """Register a set under ``name``; a different key with the same name (a hash
        collision) gets a longer name."""
        while name in self._set_keys and self._set_keys[name] != key:
            name = f"{name}-{names.short_hash(key + name)[:4]}"
        if name not in self._set_keys:
            self._set_keys[name] = key
            self.sets[name] = NftSet(name, nft_set.key_type, nft_set.elements,
                                     nft_set.data_type, nft_set.interval)
        return name

    # -- what the selectors pick

    def _targets(self, policy: PolicyView) -> list[PodView]:
        return [p for p in self.local_by_ns.get(policy.namespace, ()) if selects(policy, p)]

    def _peer_intervals(self, peer: PeerView, policy_ns: str) -> list[Interval]:
        key = (policy_ns, str(peer))
        hit = self._peer_cache.get(key)
        if hit is not None:
            return hit
        out: list[Interval]
        if peer.ip_block is not None:
            out = subtract(_network_interval(peer.ip_block.cidr),
                           (_network_interval(e) for e in peer.ip_block.excepts))
        else:
            if peer.namespace_selector is None:
                spaces = [policy_ns]
            else:
                sel = peer.namespace_selector
                spaces = [ns for ns in sorted(self.pods_by_ns)
                          if sel.matches(namespace_labels(ns, self.namespaces))]
            pods = peer.pod_selector
            out = [(ip, ip) for ns in spaces for labels, ips in self.groups.get(ns, {}).items()
                   if pods is None or pods.matches(dict(labels)) for ip in ips]
        out = merge(out)
        self._peer_cache[key] = out
        return out

    # -- sets

    def _pods_set(self, policy: PolicyView, targets: Sequence[PodView]) -> str:
        ips = sorted({_ip_int(p.ip) for p in targets if p.ip is not None})
        key = f"{policy.namespace}|{policy.pod_selector}"
        return self._add_set(
            names.pods_set(policy.namespace, str(policy.pod_selector)), "pods|" + key,
            NftSet("", "ipv4_addr", tuple((_ip_str(i), None) for i in ips)))

    def _peers_set(self, rule: RuleView, policy_ns: str) -> str | None:
        """The set of the rule's peers, or None when they match no address at all."""
        assert rule.peers is not None
        text = " | ".join(sorted({str(p) for p in rule.peers}))
        memo_key = (policy_ns, text)
        if memo_key in self._peers_memo:  # the same peers in another rule or policy
            return self._peers_memo[memo_key]
        intervals = merge(i for p in rule.peers for i in self._peer_intervals(p, policy_ns))
        name = None if not intervals else self._add_set(
            names.peers_set(policy_ns, text), f"peers|{policy_ns}|{text}",
            NftSet("", "ipv4_addr", tuple((render_ip_interval(lo, hi), None)
                                          for lo, hi in intervals), interval=True))
        self._peers_memo[memo_key] = name
        return name

    def _ports_set(self, ports: Sequence[PortView]) -> str:
        by_proto: dict[str, list[Interval]] = {}
        for p in ports:
            assert not isinstance(p.port, str)
            span = (0, 65535) if p.port is None else (p.port, p.end_port or p.port)
            by_proto.setdefault(p.protocol.lower(), []).append(span)
        elements = [(f"{proto} . {render_port_interval(lo, hi)}", None)
                    for proto in sorted(by_proto, key=PROTO_ORDER.__getitem__)
                    for lo, hi in merge(by_proto[proto])]
        text = ", ".join(k for k, _ in elements)
        return self._add_set(names.ports_set(text), f"ports|{text}",
                             NftSet("", "inet_proto . inet_service", tuple(elements),
                                    interval=True))

    def _named_set(self, direction: str, ports: Sequence[PortView]) -> str | None:
        wanted = sorted({(p.protocol, str(p.port)) for p in ports})
        memo_key = (direction, tuple(wanted))
        if memo_key in self._named_memo:
            return self._named_memo[memo_key]
        self._named_memo[memo_key] = name = self._make_named_set(direction, wanted)
        return name

    def _make_named_set(self, direction: str, wanted: Sequence[tuple[str, str]]) -> str | None:
        scope = self.local_pods if direction == INGRESS else self.all_pods
        found: set[tuple[int, int, int]] = set()
        for pod in scope:
            assert pod.ip is not None
            for protocol, name in wanted:
                number = pod.named_port(name, protocol)
                if number is not None:
                    found.add((_ip_int(pod.ip), PROTO_ORDER[protocol.lower()], number))
        if not found:
            return None
        protos = {v: k for k, v in PROTO_ORDER.items()}
        elements = tuple((f"{_ip_str(ip)} . {protos[proto]} . {port}", None)
                         for ip, proto, port in sorted(found))
        text = ", ".join(f"{proto}/{name}" for proto, name in wanted)
        # Shared by every rule naming the same ports; an ingress rule also checks its
        # targets, so the local pods' resolutions are all it needs.
        return self._add_set(names.named_set(direction, text), f"named|{direction}|{text}",
                             NftSet("", "ipv4_addr . inet_proto . inet_service", elements,
                                    interval=True))

    # -- rules

    def add_policy(self, policy: PolicyView) -> None:
        targets = self._targets(policy)
        if not targets:
            return
        pods_set = self._pods_set(policy, targets)
        for direction in policy.types:
            ingress = direction == INGRESS
            chain = (names.ingress_chain if ingress else names.egress_chain)(policy.namespace)
            rules = self.chains.setdefault(chain, [])
            isolated = self.isolated[direction]
            for pod in targets:
                assert pod.ip is not None
                isolated[_ip_int(pod.ip)] = chain
            own, other = ("daddr", "saddr") if ingress else ("saddr", "daddr")
            verdict = "accept" if ingress else "return"
            word = "ingress" if ingress else "egress"
            for i, rule in enumerate(policy.rules(direction)):
                head = [f"ip {own} @{pods_set}"]
                if rule.peers is not None:
                    peers = self._peers_set(rule, policy.namespace)
                    if peers is None:
                        continue  # its peers match no address: the rule allows nothing
                    head.append(f"ip {other} @{peers}")
                tail = [verdict, names.comment(f"{policy.key} {word}[{i}]")]
                if not rule.ports:
                    rules.append(" ".join(head + tail))
                    continue
                numeric = [p for p in rule.ports if not isinstance(p.port, str)]
                named = [p for p in rule.ports if isinstance(p.port, str)]
                if numeric:
                    match = f"meta l4proto . th dport @{self._ports_set(numeric)}"
                    rules.append(" ".join([*head, match, *tail]))
                if named:
                    named_set = self._named_set(direction, named)
                    if named_set is not None:
                        match = f"ip daddr . meta l4proto . th dport @{named_set}"
                        rules.append(" ".join([*head, match, *tail]))

    def ruleset(self, warnings: Sequence[str]) -> Ruleset:
        chains = [
            Chain(names.FORWARD, (
                "ct state established,related accept",
                "ct state invalid drop",
                f"ip saddr vmap @{names.EGRESS_ISOLATED}",
                f"ip daddr vmap @{names.INGRESS_ISOLATED}",
            ), Hook("filter", "forward", PRIORITY)),
            Chain(names.INPUT, (
                "ct state established,related accept",
                f"ip saddr vmap @{names.EGRESS_ISOLATED}",
            ), Hook("filter", "input", PRIORITY)),
            Chain(names.DENY, (
                # A reset for a bridged packet is sent straight out of the port it came
                # in by, past NAT, so a connection the proxy DNATed would see a reset from
                # the pod's address and hang; an ICMP error is NATed back like any reply.
                "ct status dnat reject with icmp type admin-prohibited",
                "meta l4proto tcp reject with tcp reset",
                "reject with icmp type admin-prohibited",
            )),
        ]
        chains += [Chain(name, (*rules, f"goto {names.DENY}"))
                   for name, rules in self.chains.items()]
        sets = list(self.sets.values())
        for name, direction, verb in ((names.INGRESS_ISOLATED, "Ingress", "goto"),
                                      (names.EGRESS_ISOLATED, "Egress", "jump")):
            elements = tuple((_ip_str(ip), f"{verb} {chain}")
                             for ip, chain in sorted(self.isolated[direction].items()))
            sets.append(NftSet(name, "ipv4_addr", elements, data_type="verdict"))
        return Ruleset(tuple(sorted(chains, key=lambda c: c.name)),
                       tuple(sorted(sets, key=lambda s: s.name)), tuple(warnings))


def compile_policy(
    policies: Iterable[Mapping[str, Any] | PolicyView],
    pods: Iterable[Mapping[str, Any] | PodView],
    namespaces: Iterable[Mapping[str, Any] | NamespaceView | str],
    node: PolicyNode,
) -> Ruleset:
    """The policy ruleset for one node. Pure and deterministic: same input, same output.

    Inputs are Kubernetes JSON dicts or views. A policy (or pod, namespace) that cannot be
    converted is left out and named in ``Ruleset.warnings``; the others keep working.
    Pods without an IPv4 address match nothing and are never isolated (they have no
    traffic). Namespaces not listed have only their ``kubernetes.io/metadata.name`` label.
    """
    policy_views, errors = views(policies, PolicyView)
    pod_views, pod_errors = views(pods, PodView)
    ns_views, ns_errors = views(namespaces, NamespaceView)
    compiler = _Compiler(pod_views, {ns.name: ns for ns in ns_views}, node)
    for policy in sorted(policy_views, key=lambda p: (p.namespace, p.name)):
        compiler.add_policy(policy)
    return compiler.ruleset([*errors, *pod_errors, *ns_errors])
