from __future__ import annotations

from ipaddress import IPv4Network
from typing import Any

from kubewire.controllers.admission import pod_range_problems
from kubewire.controllers.capacity import max_pods, pods_per_range
from kubewire.controllers.nodes import NodeSpec, build_nodes
from kubewire.controllers.scheduler import schedule


def nodes(count: int, mask: int) -> list[dict[str, Any]]:
    return build_nodes([NodeSpec(f"node-{i}", {}) for i in range(1, count + 1)],
                       pod_cidr=IPv4Network("10.244.0.0/16"),
                       underlay_cidr=IPv4Network("172.18.0.0/16"), node_cidr_mask_size=mask)


def deployment(replicas: int) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "c", "image": "x"}]}}}}


def test_a_range_holds_its_addresses_minus_network_gateway_broadcast() -> None:
    assert pods_per_range("10.244.1.0/24") == 253
    assert pods_per_range("10.244.1.0/28") == 13
    assert max_pods(nodes(1, 26)[0]) == 61


def test_a_full_node_is_refused_with_kube_schedulers_words() -> None:
    ns = nodes(2, 29)  # 5 pods per node
    pods = [{"metadata": {"name": f"p{i}", "namespace": "default"}, "spec": {}}
            for i in range(12)]
    result = schedule(pods, ns)
    assert len(result.assignments) == 10
    assert set(result.unschedulable.values()) == {
        "0/2 nodes are available: 2 Too many pods."}


def test_admission_names_the_workload_that_exhausts_the_ranges() -> None:
    assert pod_range_problems([deployment(10)], nodes(2, 29)) == []
    problems = pod_range_problems([deployment(13)], nodes(2, 29))
    assert len(problems) == 1
    assert problems[0].startswith("deployment/web in namespace default: 3 pod(s) would get no "
                                  "IP address: 0/2 nodes are available: 2 Too many pods")
