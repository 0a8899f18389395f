"""The EndpointSlice controller: selection, conditions, ports, slicing and stability."""

from __future__ import annotations

import copy
import random
from collections import Counter
from typing import Any

import pytest

from kubewire.controllers.endpointslices import (
    CONTROLLER_NAME,
    LABEL_HEADLESS,
    LABEL_MANAGED_BY,
    LABEL_SERVICE_NAME,
    EndpointSliceResult,
    InvalidMaxEndpointsPerSlice,
    compute_endpoint_slices,
)
from kubewire.controllers.naming import SAFE_ALPHABET


def service(
    name: str = "web",
    namespace: str = "default",
    selector: dict[str, str] | None = None,
    ports: list[dict[str, Any]] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    if selector is None:
        selector = {"app": name}
    spec.setdefault("clusterIP", "10.96.100.1")
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-svc-{namespace}-{name}"},
        "spec": {
            "selector": selector,
            "ports": ports
            if ports is not None
            else [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}],
            **spec,
        },
    }


def pod(
    name: str,
    ip: str | None,
    labels: dict[str, str] | None = None,
    namespace: str = "default",
    ready: bool = True,
    container_ports: list[dict[str, Any]] | None = None,
    node: str = "node-a",
    **extra: Any,
) -> dict[str, Any]:
    status: dict[str, Any] = {
        "phase": extra.pop("phase", "Running"),
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
    }
    if ip is not None:
        status["podIP"] = ip
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "uid": f"uid-pod-{namespace}-{name}",
        "labels": labels if labels is not None else {"app": "web"},
    }
    if "deletionTimestamp" in extra:
        metadata["deletionTimestamp"] = extra.pop("deletionTimestamp")
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {
            "nodeName": node,
            "containers": [{"name": "main", "image": "busybox", "ports": container_ports or []}],
            **extra,
        },
        "status": status,
    }


def web_pods(count: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        pod(f"web-{i:04d}", f"10.244.{i // 250}.{i % 250 + 2}") for i in range(start, start + count)
    ]


def addresses(result: EndpointSliceResult) -> list[str]:
    return [e["addresses"][0] for s in result.slices for e in s["endpoints"]]


def slice_of_each_address(result: EndpointSliceResult) -> dict[str, str]:
    return {e["addresses"][0]: s["metadata"]["name"] for s in result.slices for e in s["endpoints"]}


# --- selection --------------------------------------------------------------------------------


def test_pods_selected_by_label_and_namespace() -> None:
    pods = [
        pod("match", "10.244.0.2"),
        pod("other-app", "10.244.0.3", labels={"app": "db"}),
        pod("other-ns", "10.244.0.4", namespace="prod"),
        pod("superset", "10.244.0.5", labels={"app": "web", "tier": "front"}),
    ]
    result = compute_endpoint_slices([service()], pods)
    assert sorted(addresses(result)) == ["10.244.0.2", "10.244.0.5"]
    (endpoint_slice,) = result.slices
    assert endpoint_slice["endpoints"][0] == {
        "addresses": ["10.244.0.2"],
        "conditions": {"ready": True, "serving": True, "terminating": False},
        "nodeName": "node-a",
        "targetRef": {
            "kind": "Pod",
            "namespace": "default",
            "name": "match",
            "uid": "uid-pod-default-match",
        },
    }
    assert endpoint_slice["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]


def test_slice_metadata_ties_it_to_the_service() -> None:
    svc = service()
    svc["metadata"]["labels"] = {"team": "blue", LABEL_SERVICE_NAME: "spoofed"}
    (endpoint_slice,) = compute_endpoint_slices([svc], [pod("a", "10.244.0.2")]).slices
    metadata = endpoint_slice["metadata"]
    assert endpoint_slice["apiVersion"] == "discovery.k8s.io/v1"
    assert endpoint_slice["kind"] == "EndpointSlice"
    assert endpoint_slice["addressType"] == "IPv4"
    assert metadata["name"].startswith("web-") and len(metadata["name"]) == len("web-") + 5
    assert set(metadata["name"][4:]) <= set(SAFE_ALPHABET)
    assert metadata["labels"] == {
        "team": "blue",
        LABEL_SERVICE_NAME: "web",
        LABEL_MANAGED_BY: CONTROLLER_NAME,
    }
    assert metadata["ownerReferences"] == [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "name": "web",
            "uid": "uid-svc-default-web",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def test_pods_without_ip_or_finished_are_left_out_and_explained() -> None:
    pods = [
        pod("running", "10.244.0.2"),
        pod("pending", None, phase="Pending"),
        pod("done", "10.244.0.3", phase="Succeeded"),
        pod("failed", "10.244.0.4", phase="Failed"),
    ]
    result = compute_endpoint_slices([service()], pods)
    assert addresses(result) == ["10.244.0.2"]
    notes = result.explanations["default/web"]
    assert any(n.startswith("pod default/pending has no IP address yet") for n in notes)
    assert any(n.startswith("pod default/done has finished (Succeeded)") for n in notes)
    assert any(n.startswith("pod default/failed has finished (Failed)") for n in notes)


def test_selector_that_matches_nothing_is_explained() -> None:
    result = compute_endpoint_slices([service(selector={"app": "ghost"})], [pod("a", "10.244.0.2")])
    assert result.slices == []
    assert result.explanations == {
        "default/web": ["selector app=ghost matches no pods in namespace default"]
    }


def test_external_name_services_get_no_slices() -> None:
    svc = service(type="ExternalName", externalName="example.com")
    assert compute_endpoint_slices([svc], [pod("a", "10.244.0.2")]).slices == []


# --- conditions -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ready", "deleting", "publish", "expected"),
    [
        (True, False, False, {"ready": True, "serving": True, "terminating": False}),
        (False, False, False, {"ready": False, "serving": False, "terminating": False}),
        (True, True, False, {"ready": False, "serving": True, "terminating": True}),
        (False, True, False, {"ready": False, "serving": False, "terminating": True}),
        (False, False, True, {"ready": True, "serving": False, "terminating": False}),
        (True, True, True, {"ready": True, "serving": True, "terminating": True}),
    ],
)
def test_endpoint_conditions(
    ready: bool, deleting: bool, publish: bool, expected: dict[str, bool]
) -> None:
    extra: dict[str, Any] = {"deletionTimestamp": "2024-01-01T00:00:00Z"} if deleting else {}
    svc = service(publishNotReadyAddresses=publish)
    result = compute_endpoint_slices([svc], [pod("a", "10.244.0.2", ready=ready, **extra)])
    assert result.slices[0]["endpoints"][0]["conditions"] == expected


def test_pod_without_ready_condition_is_not_ready() -> None:
    unready = pod("a", "10.244.0.2")
    unready["status"]["conditions"] = []
    result = compute_endpoint_slices([service()], [unready])
    assert result.slices[0]["endpoints"][0]["conditions"]["ready"] is False


# --- ports ------------------------------------------------------------------------------------

NAMED = [{"name": "web", "port": 80, "targetPort": "http", "protocol": "TCP"}]


def test_named_target_port_resolved_per_pod_gives_one_slice_per_port_number() -> None:
    pods = [
        pod("old", "10.244.0.2", container_ports=[{"name": "http", "containerPort": 8080}]),
        pod("new", "10.244.0.3", container_ports=[{"name": "http", "containerPort": 9090}]),
        pod(
            "new2",
            "10.244.0.4",
            container_ports=[{"name": "http", "containerPort": 9090, "protocol": "TCP"}],
        ),
    ]
    result = compute_endpoint_slices([service(ports=NAMED)], pods)
    by_port = {
        s["ports"][0]["port"]: sorted(addresses(EndpointSliceResult([s]))) for s in result.slices
    }
    assert by_port == {8080: ["10.244.0.2"], 9090: ["10.244.0.3", "10.244.0.4"]}
    assert all(s["ports"][0]["name"] == "web" for s in result.slices)
    assert result.explanations == {}


@pytest.mark.parametrize(
    ("container_ports", "reason"),
    [
        ([], "no container port named 'http' (TCP)"),
        ([{"name": "metrics", "containerPort": 9100}], "no container port named 'http' (TCP)"),
        (
            [{"name": "http", "containerPort": 8080, "protocol": "UDP"}],
            "no container port named 'http' (TCP)",
        ),
    ],
)
def test_unresolvable_port_name_is_explained(
    container_ports: list[dict[str, Any]], reason: str
) -> None:
    pods = [
        pod("good", "10.244.0.2", container_ports=[{"name": "http", "containerPort": 8080}]),
        pod("web-1", "10.244.0.3", container_ports=container_ports),
    ]
    result = compute_endpoint_slices([service(ports=NAMED)], pods)
    assert result.explanations == {
        "default/web": [f"pod default/web-1: {reason}; service port 'web' leaves this pod out"]
    }
    ports_of = {e["addresses"][0]: s["ports"] for s in result.slices for e in s["endpoints"]}
    assert ports_of["10.244.0.2"] == [{"name": "web", "port": 8080, "protocol": "TCP"}]
    # Like Kubernetes, the pod is grouped with the ports it does have: here none.
    assert ports_of["10.244.0.3"] == []


def test_pod_missing_one_of_two_named_ports_keeps_the_other() -> None:
    ports = [
        {"name": "web", "port": 80, "targetPort": "http"},
        {"name": "admin", "port": 81, "targetPort": "admin"},
    ]
    pods = [
        pod(
            "full",
            "10.244.0.2",
            container_ports=[
                {"name": "http", "containerPort": 8080},
                {"name": "admin", "containerPort": 9000},
            ],
        ),
        pod("partial", "10.244.0.3", container_ports=[{"name": "http", "containerPort": 8080}]),
    ]
    result = compute_endpoint_slices([service(ports=ports)], pods)
    ports_of = {e["addresses"][0]: s["ports"] for s in result.slices for e in s["endpoints"]}
    assert [p["name"] for p in ports_of["10.244.0.2"]] == ["web", "admin"]
    assert [p["name"] for p in ports_of["10.244.0.3"]] == ["web"]


def test_sidecar_container_ports_resolve_names() -> None:
    sidecar_pod = pod("a", "10.244.0.2")
    # Only init containers that keep running (sidecars) serve traffic.
    sidecar_pod["spec"]["initContainers"] = [
        {"name": "setup", "ports": [{"name": "http", "containerPort": 1}]},
        {
            "name": "proxy",
            "restartPolicy": "Always",
            "ports": [{"name": "http", "containerPort": 15001}],
        },
    ]
    result = compute_endpoint_slices([service(ports=NAMED)], [sidecar_pod])
    assert result.slices[0]["ports"][0]["port"] == 15001


def test_app_protocol_is_carried_to_the_slice() -> None:
    ports = [{"name": "h2", "port": 80, "targetPort": 8080, "appProtocol": "kubernetes.io/h2c"}]
    result = compute_endpoint_slices([service(ports=ports)], [pod("a", "10.244.0.2")])
    assert result.slices[0]["ports"] == [
        {"name": "h2", "port": 8080, "protocol": "TCP", "appProtocol": "kubernetes.io/h2c"}
    ]


# --- slicing and stability --------------------------------------------------------------------


def test_250_pods_make_three_slices_of_at_most_100() -> None:
    result = compute_endpoint_slices([service()], web_pods(250))
    sizes = sorted(len(s["endpoints"]) for s in result.slices)
    assert sizes == [50, 100, 100]
    assert len(set(addresses(result))) == 250
    names = [s["metadata"]["name"] for s in result.slices]
    assert len(set(names)) == 3 and names == sorted(names)
    for endpoint_slice in result.slices:
        keys = [
            tuple(int(o) for o in e["addresses"][0].split(".")) for e in endpoint_slice["endpoints"]
        ]
        assert keys == sorted(keys)


@pytest.mark.parametrize("max_per_slice", [1, 7, 1000])
def test_max_per_slice_is_respected(max_per_slice: int) -> None:
    result = compute_endpoint_slices([service()], web_pods(20), max_per_slice=max_per_slice)
    assert all(len(s["endpoints"]) <= max_per_slice for s in result.slices)
    assert len(result.slices) == -(-20 // max_per_slice)


def test_max_per_slice_must_be_positive() -> None:
    with pytest.raises(InvalidMaxEndpointsPerSlice, match="at least 1"):
        compute_endpoint_slices([service()], [], max_per_slice=0)


@pytest.mark.parametrize("removed", [0, 120, 249])
def test_removing_a_pod_keeps_every_other_endpoint_in_its_slice(removed: int) -> None:
    pods = web_pods(250)
    first = compute_endpoint_slices([service()], pods)
    gone = pods.pop(removed)["status"]["podIP"]
    second = compute_endpoint_slices([service()], pods, first.slices)
    before = slice_of_each_address(first)
    del before[gone]
    assert slice_of_each_address(second) == before


def test_a_new_pod_joins_the_slice_it_fills_best_and_nothing_moves() -> None:
    pods = web_pods(250)
    first = compute_endpoint_slices([service()], pods)
    second = compute_endpoint_slices([service()], [*pods, *web_pods(1, start=250)], first.slices)
    before, after = slice_of_each_address(first), slice_of_each_address(second)
    new_address = (set(after) - set(before)).pop()
    assert {a: after[a] for a in before} == before
    half_full = next(s["metadata"]["name"] for s in first.slices if len(s["endpoints"]) == 50)
    assert after[new_address] == half_full


def test_new_endpoints_go_first_into_a_slice_that_changes_anyway() -> None:
    pods = web_pods(250)
    first = compute_endpoint_slices([service()], pods)
    full_slice = next(s for s in first.slices if len(s["endpoints"]) == 100)
    leaving = full_slice["endpoints"][0]["targetRef"]["name"]
    replaced = [p for p in pods if p["metadata"]["name"] != leaving] + web_pods(1, start=300)
    second = compute_endpoint_slices([service()], replaced, first.slices)
    after = slice_of_each_address(second)
    assert after[web_pods(1, start=300)[0]["status"]["podIP"]] == full_slice["metadata"]["name"]


def test_feeding_slices_back_changes_nothing() -> None:
    pods = web_pods(230)
    first = compute_endpoint_slices([service()], pods)
    again = compute_endpoint_slices([service()], pods, first.slices)
    assert again.slices == first.slices


def test_emptied_slice_name_is_reused_for_a_new_port_group() -> None:
    first = compute_endpoint_slices([service()], web_pods(3))
    (old,) = first.slices
    changed = service(ports=[{"name": "http", "port": 80, "targetPort": 9999}])
    (new,) = compute_endpoint_slices([changed], web_pods(3), first.slices).slices
    assert new["metadata"]["name"] == old["metadata"]["name"]
    assert new["ports"][0]["port"] == 9999


def test_output_does_not_depend_on_input_order() -> None:
    services = [service(f"svc-{i}", selector={"app": "web"}) for i in range(5)]
    pods = web_pods(120)
    shuffled_services, shuffled_pods = services[:], pods[:]
    random.Random(7).shuffle(shuffled_services)
    random.Random(8).shuffle(shuffled_pods)
    assert compute_endpoint_slices(shuffled_services, shuffled_pods) == compute_endpoint_slices(
        services, pods
    )


def test_slices_of_a_recreated_service_are_replaced() -> None:
    first = compute_endpoint_slices([service()], web_pods(3))
    recreated = service()
    recreated["metadata"]["uid"] = "uid-new"
    (endpoint_slice,) = compute_endpoint_slices([recreated], web_pods(3), first.slices).slices
    assert endpoint_slice["metadata"]["ownerReferences"][0]["uid"] == "uid-new"


# --- slices the controller does not manage ----------------------------------------------------


def user_slice(name: str, service_name: str, managed_by: str | None = None) -> dict[str, Any]:
    labels = {LABEL_SERVICE_NAME: service_name}
    if managed_by is not None:
        labels[LABEL_MANAGED_BY] = managed_by
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": "default", "labels": labels},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["192.0.2.10"]}],
        "ports": [{"name": "", "port": 5432, "protocol": "TCP"}],
    }


def test_selectorless_service_gets_no_managed_slices_and_user_slices_pass_through() -> None:
    external = service("external-db", selector={})
    mine = user_slice("external-db-1", "external-db")
    theirs = user_slice("external-db-2", "external-db", managed_by="staff.example.com")
    originals = copy.deepcopy([mine, theirs])
    result = compute_endpoint_slices([external], [pod("a", "10.244.0.2")], [mine, theirs])
    assert result.slices == originals
    assert result.explanations == {}


def test_user_slice_for_a_selector_service_is_left_alone_too() -> None:
    mine = user_slice("web-extra", "web")
    result = compute_endpoint_slices([service()], [pod("a", "10.244.0.2")], [mine])
    assert mine in result.slices
    assert len(result.slices) == 2


def test_managed_slices_of_gone_or_selectorless_services_are_dropped() -> None:
    first = compute_endpoint_slices(
        [service("web"), service("api", selector={"app": "web"})], web_pods(3)
    )
    assert len(first.slices) == 2
    result = compute_endpoint_slices([service("api", selector={})], web_pods(3), first.slices)
    assert result.slices == []


# --- headless Services ------------------------------------------------------------------------


def test_headless_service_slices_carry_stateful_hostnames() -> None:
    governing = service("db", selector={"app": "db"}, clusterIP="None", ports=[])
    pods = [
        pod("db-0", "10.244.0.2", labels={"app": "db"}, hostname="db-0", subdomain="db"),
        pod("db-1", "10.244.0.3", labels={"app": "db"}, hostname="db-1", subdomain="other"),
        pod("db-x", "10.244.0.4", labels={"app": "db"}),
    ]
    result = compute_endpoint_slices([governing], pods)
    (endpoint_slice,) = result.slices
    assert endpoint_slice["metadata"]["labels"][LABEL_HEADLESS] == ""
    assert endpoint_slice["ports"] == []
    hostnames = {e["targetRef"]["name"]: e.get("hostname") for e in endpoint_slice["endpoints"]}
    assert hostnames == {"db-0": "db-0", "db-1": None, "db-x": None}


def test_service_with_cluster_ip_is_not_labelled_headless() -> None:
    (endpoint_slice,) = compute_endpoint_slices([service()], [pod("a", "10.244.0.2")]).slices
    assert LABEL_HEADLESS not in endpoint_slice["metadata"]["labels"]


# --- scale ------------------------------------------------------------------------------------


def test_many_services_each_get_their_own_pods() -> None:
    services = [service(f"s{i}", selector={"app": f"a{i}"}) for i in range(300)]
    pods = [
        pod(f"p{i}-{j}", f"10.{i // 200}.{i % 200}.{j + 2}", labels={"app": f"a{i}"})
        for i in range(300)
        for j in range(4)
    ]
    result = compute_endpoint_slices(services, pods)
    assert len(result.slices) == 300
    owners = Counter(s["metadata"]["labels"][LABEL_SERVICE_NAME] for s in result.slices)
    assert set(owners.values()) == {1}
    for endpoint_slice in result.slices:
        service_name = endpoint_slice["metadata"]["labels"][LABEL_SERVICE_NAME]
        pod_names = {e["targetRef"]["name"] for e in endpoint_slice["endpoints"]}
        assert pod_names == {f"p{service_name[1:]}-{j}" for j in range(4)}
