"""The deterministic scheduler: nodeName, node selectors, taints, spreading, stability."""

from __future__ import annotations

import copy
from collections import Counter
from ipaddress import IPv4Network
from typing import Any

import pytest

from kubewire.controllers import NodeSpec, build_nodes, schedule


def nodes(*specs: tuple[str, dict[str, str]]) -> list[dict[str, Any]]:
    return build_nodes(
        [NodeSpec(name, labels) for name, labels in specs],
        pod_cidr=IPv4Network("10.244.0.0/16"),
        underlay_cidr=IPv4Network("172.18.0.0/16"),
    )


THREE = nodes(("n1", {"zone": "a"}), ("n2", {"zone": "a"}), ("n3", {"zone": "b", "gpu": "yes"}))


def pod(name: str, namespace: str = "default", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def many(count: int, prefix: str = "p") -> list[dict[str, Any]]:
    return [pod(f"{prefix}-{i:04d}") for i in range(count)]


PLACED = [
    ({"nodeName": "n2"}, "n2"),
    ({"nodeSelector": {"gpu": "yes"}}, "n3"),
    ({"nodeSelector": {"zone": "a"}}, "n1"),
    (
        {
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {"key": "zone", "operator": "In", "values": ["b"]}
                                ]
                            }
                        ]
                    }
                }
            }
        },
        "n3",
    ),
]


@pytest.mark.parametrize(("spec", "node"), PLACED)
def test_pod_lands_on_the_only_or_first_fitting_node(spec: dict[str, Any], node: str) -> None:
    result = schedule([pod("p", **spec)], THREE, {})
    assert result.assignments == {"default/p": node}
    assert result.unschedulable == {}


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        (
            {"nodeName": "n9"},
            'spec.nodeName "n9" is not a node of this cluster (nodes: n1, n2, n3); '
            "the scheduler ignores pods that name a node, so it stays Pending",
        ),
        (
            {"nodeName": "n1", "nodeSelector": {"zone": "b"}},
            "Pod was rejected: Predicate NodeAffinity failed",
        ),
        (
            {"nodeSelector": {"zone": "c"}},
            "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector.",
        ),
    ],
)
def test_pod_that_fits_nowhere_gets_the_reason(spec: dict[str, Any], reason: str) -> None:
    result = schedule([pod("p", **spec)], THREE, {})
    assert result.assignments == {}
    assert result.unschedulable == {"default/p": reason}


def test_reasons_are_counted_per_kind_like_kube_scheduler() -> None:
    tainted = copy.deepcopy(THREE)
    tainted[0]["spec"]["taints"] = [
        {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}
    ]
    tainted[1]["spec"]["unschedulable"] = True
    result = schedule([pod("p", nodeSelector={"zone": "a"})], tainted, {})
    assert result.unschedulable == {
        "default/p": "0/3 nodes are available: "
        "1 node(s) didn't match Pod's node affinity/selector, "
        "1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }, "
        "1 node(s) were unschedulable."
    }
    tolerating = pod(
        "q",
        nodeSelector={"zone": "a"},
        tolerations=[{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}],
    )
    assert schedule([tolerating], tainted, {}).assignments == {"default/q": "n1"}


def test_no_nodes_at_all() -> None:
    assert schedule([pod("p")], [], {}).unschedulable == {
        "default/p": "no nodes available to schedule pods"
    }


def test_spread_of_1000_pods_over_10_nodes_is_even() -> None:
    ten = nodes(*[(f"node-{i}", {}) for i in range(10)])
    result = schedule(many(1000), ten, {})
    load = Counter(result.assignments.values())
    assert len(result.assignments) == 1000
    assert set(load) == {f"node-{i}" for i in range(10)}
    assert max(load.values()) - min(load.values()) <= 1


def test_spread_counts_pods_already_bound() -> None:
    bound = [pod(f"b{i}", nodeName="n1") for i in range(4)]
    result = schedule([*bound, *many(4)], THREE, {})
    load = Counter(result.assignments.values())
    assert load == {"n1": 4, "n2": 2, "n3": 2}


def test_ties_go_to_the_node_name_that_sorts_first() -> None:
    result = schedule(many(4), THREE, {})
    assert list(result.assignments.values()) == ["n1", "n2", "n3", "n1"]


def test_same_input_same_output_regardless_of_order() -> None:
    pods = many(50)
    forward = schedule(pods, THREE, {})
    backward = schedule(list(reversed(pods)), list(reversed(THREE)), {})
    assert forward == backward
    assert list(forward.assignments) == sorted(forward.assignments)


def test_adding_a_node_moves_no_bound_pod_and_new_pods_fill_it() -> None:
    first = schedule(many(30), THREE, {})
    four = nodes(("n1", {"zone": "a"}), ("n2", {"zone": "a"}), ("n3", {"zone": "b"}), ("n4", {}))
    second = schedule([*many(30), *many(10, prefix="q")], four, first.assignments)
    for key, node in first.assignments.items():
        assert second.assignments[key] == node
    new = [node for key, node in second.assignments.items() if key.startswith("default/q-")]
    assert new == ["n4"] * 10


def test_adding_pods_keeps_existing_bindings() -> None:
    first = schedule(many(7), THREE, {})
    second = schedule([*many(7), pod("a-new")], THREE, first.assignments)
    assert {k: v for k, v in second.assignments.items() if k in first.assignments} == (
        first.assignments
    )
    # Without the existing bindings the new pod (sorting first) would have shifted everyone.
    assert schedule([*many(7), pod("a-new")], THREE, {}).assignments != second.assignments


def test_removed_node_reschedules_only_its_pods() -> None:
    first = schedule(many(9), THREE, {})
    two = [n for n in THREE if n["metadata"]["name"] != "n2"]
    second = schedule(many(9), two, first.assignments)
    assert "n2" not in second.assignments.values()
    for key, node in first.assignments.items():
        if node != "n2":
            assert second.assignments[key] == node
    assert len(second.assignments) == 9


def test_existing_binding_that_no_longer_fits_is_redone() -> None:
    existing = {"default/p": "n1"}
    result = schedule([pod("p", nodeSelector={"gpu": "yes"})], THREE, existing)
    assert result.assignments == {"default/p": "n3"}


def test_node_name_wins_over_existing_binding() -> None:
    result = schedule([pod("p", nodeName="n2")], THREE, {"default/p": "n1"})
    assert result.assignments == {"default/p": "n2"}


def test_pods_in_different_namespaces_are_different_pods() -> None:
    result = schedule([pod("p", "a"), pod("p", "b")], THREE, {})
    assert result.assignments == {"a/p": "n1", "b/p": "n2"}
