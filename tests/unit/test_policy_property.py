"""Property: for random policies, pods, labels and connections, what the compiled rulesets
do (through the validating fake, on the nodes the packet passes) is what the oracle says,
and every compiled ruleset is one the kernel would accept."""

from __future__ import annotations

import ipaddress
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubewire.policy.compiler import PolicyNode, compile_policy
from kubewire.policy.evaluate import allowed
from kubewire.policy.fake import check_ruleset, cluster_verdict
from kubewire.policy.views import (
    ContainerPort,
    Endpoint,
    ExternalView,
    NamespaceView,
    PodView,
    PolicyView,
)

NAMESPACES = ("a", "b", "c")
NODES = ("n1", "n2")
PROTOCOLS = ("TCP", "UDP", "SCTP")
PORTS = (53, 80, 81, 8080, 9000)
CIDRS = ("10.244.0.0/16", "10.244.1.0/24", "10.244.1.0/25", "0.0.0.0/0", "192.0.2.0/24",
         "10.244.2.64/26")
EXCEPTS = ("10.244.1.0/24", "10.244.1.0/26", "10.244.1.5/32", "10.244.2.0/24",
           "192.0.2.0/25", "10.244.0.0/17", "10.244.2.100/30")
EXTERNAL = (ExternalView("192.0.2.7"), ExternalView("10.244.9.9"), ExternalView("198.51.100.1"))

label_maps = st.dictionaries(st.sampled_from(["app", "tier"]), st.sampled_from(["x", "y"]),
                             max_size=2)


@st.composite
def selectors(draw: st.DrawFn) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if draw(st.integers(0, 2)) == 0:
        return out  # everything: common in real policies, and it makes rules fire
    labels = draw(label_maps)
    if labels:
        out["matchLabels"] = labels
    if draw(st.booleans()):
        op = draw(st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist"]))
        expr: dict[str, Any] = {"key": draw(st.sampled_from(["app", "tier", "team"])),
                                "operator": op}
        if op in ("In", "NotIn"):
            expr["values"] = draw(st.lists(st.sampled_from(["x", "y", "t1"]), min_size=1,
                                           max_size=2))
        out["matchExpressions"] = [expr]
    return out


@st.composite
def peers(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["pod", "ns", "both", "ip"]))
    if kind == "ip":
        cidr = draw(st.sampled_from(CIDRS))
        net = ipaddress.ip_network(cidr)
        inside = [e for e in EXCEPTS if ipaddress.ip_network(e).subnet_of(net)
                  and ipaddress.ip_network(e).prefixlen > net.prefixlen]
        block: dict[str, Any] = {"cidr": cidr}
        excepts = draw(st.lists(st.sampled_from(inside), max_size=2, unique=True)) \
            if inside else []
        if excepts:
            block["except"] = excepts
        return {"ipBlock": block}
    out = {}
    if kind in ("pod", "both"):
        out["podSelector"] = draw(selectors())
    if kind in ("ns", "both"):
        out["namespaceSelector"] = draw(selectors())
    return out


@st.composite
def ports(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["proto", "number", "range", "name", "name"]))
    out: dict[str, Any] = {}
    if draw(st.integers(0, 2)) == 0:
        out["protocol"] = draw(st.sampled_from(PROTOCOLS))
    if kind == "number":
        out["port"] = draw(st.sampled_from(PORTS))
    elif kind == "range":
        out["port"] = draw(st.sampled_from((53, 80)))
        out["endPort"] = draw(st.sampled_from((81, 8080)))
    elif kind == "name":
        out["port"] = draw(st.sampled_from(["http", "dns", "alt"]))
    return out


@st.composite
def rules(draw: st.DrawFn, peer_field: str) -> dict[str, Any]:
    rule: dict[str, Any] = {}
    choice = draw(st.sampled_from(["absent", "empty", "some"]))
    if choice == "empty":
        rule[peer_field] = []
    elif choice == "some":
        rule[peer_field] = draw(st.lists(peers(), min_size=1, max_size=2))
    if draw(st.booleans()):
        rule["ports"] = draw(st.lists(ports(), min_size=1, max_size=2))
    return rule


@st.composite
def policies(draw: st.DrawFn, index: int, spaces: tuple[str, ...]) -> dict[str, Any]:
    spec: dict[str, Any] = {"podSelector": draw(selectors())}
    types = draw(st.sampled_from([None, ["Ingress"], ["Egress"], ["Ingress", "Egress"]]))
    if types is not None:
        spec["policyTypes"] = types
    for direction, field in (("ingress", "from"), ("egress", "to")):
        if draw(st.booleans()):
            spec[direction] = draw(st.lists(rules(field), max_size=2))
    # Mostly namespaces that have pods: a policy elsewhere selects nothing.
    return {"metadata": {"name": f"p{index}", "namespace": draw(st.sampled_from(spaces))},
            "spec": spec}


@st.composite
def clusters(draw: st.DrawFn) -> tuple[list[PodView], list[NamespaceView], list[dict[str, Any]]]:
    hosts = draw(st.lists(st.sampled_from([1, 5, 63, 64, 100, 130, 200]), min_size=2,
                          max_size=6, unique=True))
    pods = []
    for i, host in enumerate(hosts):
        node = draw(st.sampled_from(NODES))
        named = draw(st.lists(st.sampled_from([
            ContainerPort("http", 80), ContainerPort("http", 8080), ContainerPort("dns", 53, "UDP"),
            ContainerPort("alt", 81, "SCTP"), ContainerPort("alt", 9000)]),
            max_size=2, unique_by=lambda p: p.name))
        pods.append(PodView(draw(st.sampled_from(NAMESPACES)), f"pod{i}",
                            f"10.244.{NODES.index(node) + 1}.{host}", node,
                            draw(label_maps), tuple(named)))
    namespaces = [NamespaceView(ns, draw(st.dictionaries(st.just("team"),
                                                          st.sampled_from(["t1", "t2"]))))
                  for ns in NAMESPACES[:2]]  # "c" is not listed: only its name label
    spaces = (*sorted({p.namespace for p in pods}), "c")
    pols = [draw(policies(i, spaces)) for i in range(draw(st.integers(0, 4)))]
    return pods, namespaces, pols


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clusters(), st.lists(st.tuples(st.sampled_from(PROTOCOLS), st.sampled_from(PORTS)),
                            min_size=1, max_size=3))
def test_compiled_rulesets_agree_with_the_oracle(
    cluster: tuple[list[PodView], list[NamespaceView], list[dict[str, Any]]],
    connections: list[tuple[str, int]],
) -> None:
    pods, namespaces, raw = cluster
    views = [PolicyView.from_k8s(p) for p in raw]
    rulesets = {n: compile_policy(raw, pods, namespaces, PolicyNode(n)) for n in NODES}
    for ruleset in rulesets.values():
        assert check_ruleset(ruleset) == []
    # Every port some pod names, so that named-port rules get probed where they resolve.
    named = {(p.protocol, p.port) for pod in pods for p in pod.ports}
    connections = sorted(set(connections) | named)
    ends: list[Endpoint] = [*pods, *EXTERNAL]
    for src in ends:
        for dst in ends:
            if isinstance(src, ExternalView) and isinstance(dst, ExternalView):
                continue
            for protocol, port in connections:
                oracle = allowed(src, dst, protocol, port, views, namespaces)
                compiled = cluster_verdict(rulesets, src, dst, protocol, port)
                want = "accept" if oracle.allowed else "reject"
                assert compiled.verdict == want, (
                    f"{src.key} -> {dst.key} {protocol}/{port}: oracle {oracle}, compiled "
                    f"{compiled.verdict} via {compiled.trace}")
