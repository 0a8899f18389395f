"""The oracle: Kubernetes NetworkPolicy semantics, evaluated directly (pure, deterministic).

``allowed(src, dst, protocol, port, policies, namespaces)`` answers whether a new connection
is allowed and says why, from the API's definitions alone; it shares nothing with the
compiler but these small predicates, so the compiled ruleset (through ``fake.py``) and real
packets in the lab can both be checked against it.

The rules, as upstream defines them:

* A pod is isolated for ingress (egress) if any policy in its namespace selects it and has
  ``Ingress`` (``Egress``) in its (defaulted) policyTypes.
* A connection is allowed iff the source side allows it (the source is not a pod, is not
  isolated for egress, or some egress rule of a policy selecting it matches the destination
  and port) AND the destination side allows it (same for ingress and the source).
* Rules are a union: over policies, over rules; peers in a rule are OR'd; a peer with
  both namespaceSelector and podSelector needs both; podSelector alone means the policy's
  own namespace; ipBlock matches the address (pods included) outside every ``except``.
* Ports: none listed matches every port and protocol; a number with ``endPort`` a range;
  a name is looked up among the destination pod's container ports (protocol too) - for
  egress too, since the port named is the destination's.

Traffic from a pod's own node to the pod is always allowed in Kubernetes; the oracle has
no node endpoints (an ExternalView is an outside address), and the compiled rules never
see that traffic (it does not pass the forward hook).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from kubewire.policy.views import (
    EGRESS,
    INGRESS,
    Endpoint,
    ExternalView,
    Labels,
    NamespaceView,
    PeerView,
    PodView,
    PolicyView,
    PortView,
    RuleView,
)


class Cause(enum.Enum):
    """Why one side (egress of the source, ingress of the destination) decided as it did."""

    NOT_A_POD = "not a pod"  # external addresses have no policies of their own
    NOT_ISOLATED = "not isolated"
    RULE_MATCHES = "allowed by a rule"
    NO_RULE_MATCHES = "isolated, no rule matches"


@dataclass(frozen=True, slots=True)
class SideVerdict:
    direction: str  # Ingress | Egress
    allowed: bool
    cause: Cause
    isolated_by: tuple[str, ...] = ()  # ns/name of the policies isolating the pod
    allowed_by: str = ""  # "ns/name ingress[0]" of the first matching rule

    def __str__(self) -> str:
        word = "ingress" if self.direction == INGRESS else "egress"
        if self.cause is Cause.NOT_A_POD:
            return f"{word}: not a pod"
        if self.cause is Cause.NOT_ISOLATED:
            return f"{word}: not isolated"
        if self.cause is Cause.RULE_MATCHES:
            return f"{word}: allowed by {self.allowed_by}"
        return f"isolated for {word} by {', '.join(self.isolated_by)}, no rule matches"


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    egress: SideVerdict
    ingress: SideVerdict

    @property
    def reason(self) -> str:
        if not self.egress.allowed:
            return str(self.egress)
        if not self.ingress.allowed:
            return str(self.ingress)
        return f"{self.egress}; {self.ingress}"

    def __str__(self) -> str:
        return f"{'allowed' if self.allowed else 'denied'}: {self.reason}"


# ---------------------------------------------------------------- predicates (shared)


def namespace_labels(name: str, namespaces: Mapping[str, NamespaceView]) -> Labels:
    ns = namespaces.get(name)
    return (ns if ns is not None else NamespaceView(name)).labels


def selects(policy: PolicyView, pod: PodView) -> bool:
    return pod.namespace == policy.namespace and policy.pod_selector.matches(pod.labels)


def peer_matches(peer: PeerView, policy_namespace: str, other: Endpoint,
                 namespaces: Mapping[str, NamespaceView]) -> bool:
    """Whether ``other`` (the source for ingress, the destination for egress) is ``peer``."""
    if peer.ip_block is not None:
        ip = other.ip
        return ip is not None and peer.ip_block.contains(ip)
    if not isinstance(other, PodView):
        return False
    if peer.namespace_selector is None:
        if other.namespace != policy_namespace:
            return False
    elif not peer.namespace_selector.matches(namespace_labels(other.namespace, namespaces)):
        return False
    return peer.pod_selector is None or peer.pod_selector.matches(other.labels)


def port_matches(spec: PortView, protocol: str, port: int, dst: Endpoint) -> bool:
    if spec.protocol != protocol:
        return False
    if spec.port is None:
        return True
    if isinstance(spec.port, str):
        return isinstance(dst, PodView) and dst.named_port(spec.port, protocol) == port
    if spec.end_port is None:
        return port == spec.port
    return spec.port <= port <= spec.end_port


def rule_matches(rule: RuleView, policy_namespace: str, peer: Endpoint, protocol: str,
                 port: int, dst: Endpoint, namespaces: Mapping[str, NamespaceView]) -> bool:
    if rule.ports and not any(port_matches(p, protocol, port, dst) for p in rule.ports):
        return False
    return rule.peers is None or any(
        peer_matches(p, policy_namespace, peer, namespaces) for p in rule.peers)


# ---------------------------------------------------------------- the oracle


def _side(direction: str, pod: Endpoint, other: Endpoint, protocol: str, port: int,
          dst: Endpoint, policies: Iterable[PolicyView],
          namespaces: Mapping[str, NamespaceView]) -> SideVerdict:
    if not isinstance(pod, PodView):
        return SideVerdict(direction, True, Cause.NOT_A_POD)
    isolating = sorted((p for p in policies if direction in p.types and selects(p, pod)),
                       key=lambda p: p.key)
    if not isolating:
        return SideVerdict(direction, True, Cause.NOT_ISOLATED)
    names = tuple(p.key for p in isolating)
    word = "ingress" if direction == INGRESS else "egress"
    for policy in isolating:
        for i, rule in enumerate(policy.rules(direction)):
            if rule_matches(rule, policy.namespace, other, protocol, port, dst, namespaces):
                return SideVerdict(direction, True, Cause.RULE_MATCHES, names,
                                   f"{policy.key} {word}[{i}]")
    return SideVerdict(direction, False, Cause.NO_RULE_MATCHES, names)


def as_namespace_map(namespaces: Iterable[NamespaceView] | Mapping[str, NamespaceView]
                     ) -> Mapping[str, NamespaceView]:
    if isinstance(namespaces, Mapping):
        return namespaces
    return {ns.name: ns for ns in namespaces}


def allowed(src: Endpoint, dst: Endpoint, protocol: str, port: int,
            policies: Iterable[PolicyView],
            namespaces: Iterable[NamespaceView] | Mapping[str, NamespaceView] = (),
            ) -> Verdict:
    """Whether a new ``protocol``/``port`` connection from ``src`` to ``dst`` is allowed.

    ``namespaces`` gives namespace labels; a namespace not listed has only its automatic
    ``kubernetes.io/metadata.name`` label.
    """
    ns_map = as_namespace_map(namespaces)
    pols = list(policies)
    egress = _side(EGRESS, src, dst, protocol, port, dst, pols, ns_map)
    ingress = _side(INGRESS, dst, src, protocol, port, dst, pols, ns_map)
    return Verdict(egress.allowed and ingress.allowed, egress, ingress)


def external(ip: str) -> ExternalView:
    return ExternalView(ip)
