from __future__ import annotations

from typing import Any

from kubewire.lab.announcer import desired_routes, external_addresses

NODES = {"node-1": "172.18.0.2", "node-2": "172.18.0.3", "node-3": "172.18.0.4"}


def lb(name: str, ip: str, etp: str = "Cluster", external: list[str] | None = None) \
        -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "default"},
            "spec": {"type": "LoadBalancer", "externalTrafficPolicy": etp,
                     "externalIPs": external or []},
            "status": {"loadBalancer": {"ingress": [{"ip": ip}]}}}


def slice_for(svc: str, *nodes: tuple[str, bool]) -> dict[str, Any]:
    return {"metadata": {"name": f"{svc}-x", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": svc}},
            "endpoints": [{"addresses": [f"10.244.0.{i}"], "nodeName": n,
                           "conditions": {"ready": r}} for i, (n, r) in enumerate(nodes)]}


def test_cluster_policy_sends_to_every_node() -> None:
    routes = desired_routes([lb("web", "172.18.255.1", external=["172.18.200.9"])], [], NODES)
    assert routes == {"172.18.200.9": tuple(sorted(NODES.values())),
                      "172.18.255.1": tuple(sorted(NODES.values()))}


def test_local_policy_sends_only_to_nodes_with_ready_local_endpoints() -> None:
    svc = lb("web", "172.18.255.1", etp="Local")
    sl = slice_for("web", ("node-2", True), ("node-3", False))
    assert desired_routes([svc], [sl], NODES) == {"172.18.255.1": ("172.18.0.3",)}
    assert desired_routes([svc], [slice_for("web", ("node-3", False))], NODES) == {}


def test_pending_and_cluster_ip_services_have_no_external_address() -> None:
    pending = lb("web", "")
    pending["status"] = {}
    assert external_addresses(pending) == []
    plain = {"metadata": {"name": "a", "namespace": "default"}, "spec": {"type": "ClusterIP"}}
    assert desired_routes([plain, pending], [], NODES) == {}
