"""Named inputs for the golden files (tests/golden/policy/*.nft), from the x/y/z model.

Each scenario is the state after one step of an upstream case (plus a few that mix
features), compiled for ``NODE``: node-1 holds x/a, y/a, z/a and the DNS pod.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from kubewire.policy.cases import Step, load_cases
from kubewire.policy.compiler import PolicyNode
from kubewire.policy.views import ContainerPort, NamespaceView, PodView

NODE = PolicyNode("node-1")

Scenario = tuple[tuple[Mapping[str, Any], ...], tuple[PodView, ...], tuple[NamespaceView, ...]]


def _step(case: str, index: int = 0) -> Callable[[], Scenario]:
    def build() -> Scenario:
        step: Step = next(c for c in load_cases() if c.name == case).steps[index]
        return step.policies, step.pods(), step.namespaces()
    return build


def _mixed() -> Scenario:
    """Several cases' policies at once: shared sets, several namespace chains."""
    policies: list[Mapping[str, Any]] = []
    last: Step | None = None
    for name in ("egress-to-cluster-dns", "named-port-from-namespace", "end-port-ingress",
                 "pod-selector-and-namespace-selector", "egress-denied-on-client-side"):
        step = next(c for c in load_cases() if c.name == name).steps[0]
        policies += [p for p in step.policies
                     if all(p["metadata"] != q["metadata"] for q in policies)]
        last = step
    assert last is not None
    return tuple(policies), last.pods(), last.namespaces()


def _empty() -> Scenario:
    step = load_cases()[0].steps[0]
    return (), step.pods(), step.namespaces()


SCENARIOS: dict[str, Callable[[], Scenario]] = {
    "no_policies": _empty,
    "default_deny_all": _step("default-deny-all"),
    "allow_from_namespace": _step("allow-from-namespace-by-label"),
    "selectors_and_or": _step("pod-selector-or-namespace-selector"),
    "named_ports": _step("named-port-from-namespace"),
    "named_port_egress": _step("egress-named-port-to-dns"),
    "end_port": _step("end-port-ingress"),
    "ipblock_except": _step("egress-cidr-except"),
    "client_side_egress": _step("egress-denied-on-client-side"),
    "dns_egress": _step("egress-to-cluster-dns"),
    "mixed": _mixed,
}


def synthetic(policies: int = 1000, pods: int = 5000, namespaces: int = 100, nodes: int = 10,
              ) -> tuple[list[dict[str, Any]], list[PodView], list[NamespaceView]]:
    """A cluster for scale tests and benchmarks: ``pods`` spread over ``namespaces`` and
    ``nodes`` (node-0...), 50 apps, and ``policies`` mixing namespace-wide and per-app
    targets, namespace+pod peers, ipBlocks with except, named ports and port ranges."""
    pod_views = [PodView(f"ns-{i % namespaces}", f"p{i}",
                         f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}",
                         f"node-{i // 7 % nodes}", {"app": f"app-{i % 50}"},
                         (ContainerPort("http", 8080 + i % 3),))
                 for i in range(pods)]
    ns_views = [NamespaceView(f"ns-{i}", {"team": f"t{i % 10}"}) for i in range(namespaces)]
    raw = [{"metadata": {"name": f"pol-{j}", "namespace": f"ns-{j % namespaces}"},
            "spec": {"podSelector": {} if j % 2 else {"matchLabels": {"app": f"app-{j % 50}"}},
                     "policyTypes": ["Ingress", "Egress"],
                     "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {
                         "team": f"t{j % 10}"}}, "podSelector": {"matchLabels": {
                             "app": f"app-{j % 50}"}}}],
                         "ports": [{"port": "http"}, {"port": 9000, "endPort": 9100}]}],
                     "egress": [{"to": [{"namespaceSelector": {}, "podSelector": {
                         "matchLabels": {"app": f"app-{(j + 1) % 50}"}}},
                         {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.0.1.0/24"]}}],
                         "ports": [{"port": "http"}, {"protocol": "UDP", "port": 53}]}]}}
           for j in range(policies)]
    return raw, pod_views, ns_views
