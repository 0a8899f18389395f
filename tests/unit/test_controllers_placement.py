"""Node filters: node affinity operators, taints and tolerations."""

from __future__ import annotations

from typing import Any

import pytest

from kubewire.controllers.placement import (
    daemon_pod_fits,
    fits_node_affinity,
    node_filter_reason,
    untolerated_taint,
)

NODE: dict[str, Any] = {
    "metadata": {"name": "n1", "labels": {"zone": "a", "cores": "8"}},
    "spec": {},
}


def required(*terms: dict[str, Any]) -> dict[str, Any]:
    return {
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": list(terms)}
            }
        }
    }


def expr(key: str, operator: str, *values: str) -> dict[str, Any]:
    return {"matchExpressions": [{"key": key, "operator": operator, "values": list(values)}]}


@pytest.mark.parametrize(
    ("pod_spec", "fits"),
    [
        ({}, True),
        ({"nodeSelector": {}}, True),
        ({"nodeSelector": {"zone": "a"}}, True),
        ({"nodeSelector": {"zone": "b"}}, False),
        (required(expr("cores", "Gt", "4")), True),
        (required(expr("cores", "Gt", "8")), False),
        (required(expr("cores", "Lt", "9")), True),
        (required(expr("zone", "Gt", "1")), False),  # non-numeric label never matches
        (required(expr("missing", "Lt", "1")), False),
        (required(expr("missing", "NotIn", "x")), True),
        (required(expr("zone", "Bogus", "a")), False),
        (required({}), False),  # an empty term matches no node
        (required(), False),
        (required(expr("zone", "In", "b"), expr("zone", "In", "a")), True),  # terms are ORed
        (
            required(
                {"matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["n1"]}]}
            ),
            False,
        ),
        (
            required({"matchFields": [{"key": "metadata.uid", "operator": "In", "values": ["x"]}]}),
            False,
        ),
        ({"nodeSelector": {"zone": "a"}, **required(expr("zone", "In", "b"))}, False),
    ],
)
def test_fits_node_affinity(pod_spec: dict[str, Any], fits: bool) -> None:
    assert fits_node_affinity(pod_spec, NODE) is fits


TAINT = {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}


@pytest.mark.parametrize(
    ("toleration", "tolerated"),
    [
        ({"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}, True),
        ({"key": "dedicated", "operator": "Equal", "value": "gpu"}, True),
        ({"key": "dedicated", "operator": "Exists"}, True),
        ({"operator": "Exists"}, True),
        ({"key": "dedicated", "value": "cpu"}, False),
        ({"key": "dedicated", "value": "gpu", "effect": "NoExecute"}, False),
        ({"key": "other", "operator": "Exists"}, False),
    ],
)
def test_tolerations(toleration: dict[str, Any], tolerated: bool) -> None:
    node = {"metadata": {"name": "n"}, "spec": {"taints": [TAINT]}}
    assert (untolerated_taint([toleration], node) is None) is tolerated


def test_prefer_no_schedule_does_not_block() -> None:
    node = {
        "metadata": {"name": "n"},
        "spec": {"taints": [{"key": "k", "effect": "PreferNoSchedule"}]},
    }
    assert node_filter_reason({}, node) is None


def test_daemon_pods_tolerate_cordoned_nodes_but_regular_pods_do_not() -> None:
    cordoned = {
        "metadata": {"name": "n"},
        "spec": {
            "unschedulable": True,
            "taints": [{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}],
        },
    }
    assert node_filter_reason({}, cordoned) == "node(s) were unschedulable"
    assert daemon_pod_fits({}, cordoned)
