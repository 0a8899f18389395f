"""Expansion of workload controllers into pods, and the names Kubernetes would give them."""

from __future__ import annotations

import copy
import re
import time
from ipaddress import IPv4Network
from typing import Any

import pytest

from kubewire.controllers import NodeSpec, build_nodes, expand
from kubewire.controllers.naming import (
    SAFE_ALPHABET,
    fnv1a_32,
    generated_name,
    generated_suffix,
    pod_template_hash,
    safe_encode,
)
from kubewire.controllers.workloads import service_warnings

NODES = build_nodes(
    [
        NodeSpec("node-a", {"zone": "east", "role": "edge"}),
        NodeSpec("node-b", {"zone": "east"}),
        NodeSpec("node-c", {"zone": "west"}),
    ],
    pod_cidr=IPv4Network("10.244.0.0/16"),
    underlay_cidr=IPv4Network("172.18.0.0/24"),
)
SUFFIX = f"[{SAFE_ALPHABET}]{{5}}"


def template(labels: dict[str, str], **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"labels": labels},
        "spec": {"containers": [{"name": "main", "image": "busybox"}], **spec},
    }


def workload(kind: str, name: str, labels: dict[str, str], **spec: Any) -> dict[str, Any]:
    spec.setdefault("selector", {"matchLabels": labels})
    spec.setdefault("template", template(labels))
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": spec.pop("namespace", "default")},
        "spec": spec,
    }


def pod_names(objects: list[dict[str, Any]], nodes: list[dict[str, Any]] = NODES) -> list[str]:
    return [p["metadata"]["name"] for p in expand(objects, nodes).pods]


# --- naming primitives ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [(b"", 0x811C9DC5), (b"a", 0xE40C292C), (b"foobar", 0xBF9CF968)],
)
def test_fnv1a_32_reference_vectors(data: bytes, expected: int) -> None:
    assert fnv1a_32(data) == expected


def test_safe_encode_maps_digits_like_kubernetes() -> None:
    # '0'..'9' are code points 48..57; 48 % 27 = 21 -> '4', ..., 57 % 27 = 3 -> 'f'.
    assert safe_encode("0123456789") == "456789bcdf"


def test_pod_template_hash_shape_and_sensitivity() -> None:
    base = template({"app": "web"})
    value = pod_template_hash(base)
    assert re.fullmatch("[456789bcdf]{1,10}", value)
    assert pod_template_hash(copy.deepcopy(base)) == value
    reordered = {"spec": base["spec"], "metadata": base["metadata"]}
    assert pod_template_hash(reordered) == value
    changed = template({"app": "web"}, hostNetwork=True)
    assert pod_template_hash(changed) != value
    assert pod_template_hash(base, collision_count=1) != value


def test_generated_suffix_is_deterministic_and_in_the_safe_alphabet() -> None:
    suffix = generated_suffix("default", "web", "0")
    assert re.fullmatch(SUFFIX, suffix)
    assert suffix == generated_suffix("default", "web", "0")
    assert suffix != generated_suffix("default", "web", "0", attempt=1)
    assert suffix != generated_suffix("default", "web", "1")


def test_generated_name_cuts_long_bases_like_generate_name() -> None:
    assert generated_name("web", "abcde") == "web-abcde"
    long_name = generated_name("x" * 70, "bcdfg")
    assert len(long_name) == 63
    assert long_name == "x" * 58 + "bcdfg"


# --- Deployments --------------------------------------------------------------------------------


def test_deployment_makes_replicaset_and_pods_with_kubernetes_names() -> None:
    deployment = workload("Deployment", "web", {"app": "web"}, replicas=3)
    result = expand([deployment], NODES)
    assert len(result.replicasets) == 1
    replicaset = result.replicasets[0]
    template_hash = pod_template_hash(deployment["spec"]["template"])
    assert replicaset["metadata"]["name"] == f"web-{template_hash}"
    assert replicaset["spec"]["selector"]["matchLabels"] == {
        "app": "web",
        "pod-template-hash": template_hash,
    }
    assert (
        replicaset["spec"]["template"]["metadata"]["labels"]["pod-template-hash"] == template_hash
    )
    assert replicaset["metadata"]["labels"]["pod-template-hash"] == template_hash
    assert replicaset["spec"]["replicas"] == 3
    (rs_owner,) = replicaset["metadata"]["ownerReferences"]
    assert (rs_owner["kind"], rs_owner["name"], rs_owner["controller"]) == (
        "Deployment",
        "web",
        True,
    )

    assert len(result.pods) == 3
    for pod in result.pods:
        assert re.fullmatch(f"web-{template_hash}-{SUFFIX}", pod["metadata"]["name"])
        assert pod["metadata"]["labels"] == {"app": "web", "pod-template-hash": template_hash}
        assert pod["metadata"]["namespace"] == "default"
        (owner,) = pod["metadata"]["ownerReferences"]
        assert owner["kind"] == "ReplicaSet"
        assert owner["name"] == replicaset["metadata"]["name"]
        assert owner["uid"] == replicaset["metadata"]["uid"]
        assert owner["controller"] is True
        assert pod["spec"] == deployment["spec"]["template"]["spec"]
    assert len({p["metadata"]["uid"] for p in result.pods}) == 3
    assert result.warnings == []


def test_replicaset_name_is_stable_for_the_same_template_and_changes_with_it() -> None:
    first = expand([workload("Deployment", "web", {"app": "web"})], NODES)
    again = expand([workload("Deployment", "web", {"app": "web"})], NODES)
    assert first == again
    changed = workload(
        "Deployment", "web", {"app": "web"}, template=template({"app": "web"}, hostNetwork=True)
    )
    other = expand([changed], NODES)
    assert other.replicasets[0]["metadata"]["name"] != first.replicasets[0]["metadata"]["name"]
    # Scaling is not a template change: same ReplicaSet, and the first pods survive.
    scaled = expand([workload("Deployment", "web", {"app": "web"}, replicas=4)], NODES)
    assert scaled.replicasets[0]["metadata"]["name"] == first.replicasets[0]["metadata"]["name"]
    assert first.pods[0] in scaled.pods


def test_replicas_default_to_one_and_zero_gives_no_pods_and_no_warning() -> None:
    assert len(pod_names([workload("Deployment", "web", {"app": "web"})])) == 1
    result = expand([workload("Deployment", "web", {"app": "web"}, replicas=0)], NODES)
    assert result.pods == []
    assert len(result.replicasets) == 1
    assert result.warnings == []


def test_collision_count_changes_the_hash() -> None:
    deployment = workload("Deployment", "web", {"app": "web"})
    with_collision = copy.deepcopy(deployment)
    with_collision["status"] = {"collisionCount": 1}
    assert (
        expand([deployment], NODES).replicasets[0]["metadata"]["name"]
        != expand([with_collision], NODES).replicasets[0]["metadata"]["name"]
    )


# --- ReplicaSets, StatefulSets, DaemonSets, Pods -----------------------------------------------


def test_replicaset_pods_are_named_owner_dash_five_and_unique() -> None:
    names = pod_names([workload("ReplicaSet", "cache", {"app": "cache"}, replicas=200)])
    assert len(names) == len(set(names)) == 200
    assert all(re.fullmatch(f"cache-{SUFFIX}", name) for name in names)


def test_statefulset_pods_have_ordinals_identity_labels_and_hostnames() -> None:
    sts = workload("StatefulSet", "db", {"app": "db"}, replicas=3, serviceName="db-headless")
    result = expand([sts], NODES)
    assert [p["metadata"]["name"] for p in result.pods] == ["db-0", "db-1", "db-2"]
    for index, pod in enumerate(result.pods):
        assert pod["metadata"]["labels"] == {
            "app": "db",
            "statefulset.kubernetes.io/pod-name": f"db-{index}",
            "apps.kubernetes.io/pod-index": str(index),
        }
        assert pod["spec"]["hostname"] == f"db-{index}"
        assert pod["spec"]["subdomain"] == "db-headless"
        assert pod["metadata"]["ownerReferences"][0]["kind"] == "StatefulSet"
    assert result.replicasets == []


def test_statefulset_ordinals_start_and_sorting_past_ten() -> None:
    sts = workload("StatefulSet", "db", {"app": "db"}, replicas=3, ordinals={"start": 9})
    assert pod_names([sts]) == ["db-10", "db-11", "db-9"]  # sorted by name, as promised


def test_statefulset_template_change_gives_new_uids_for_the_same_names() -> None:
    before = expand([workload("StatefulSet", "db", {"app": "db"})], NODES).pods[0]
    changed = workload("StatefulSet", "db", {"app": "db"}, template=template({"app": "db"}, x=1))
    after = expand([changed], NODES).pods[0]
    assert before["metadata"]["name"] == after["metadata"]["name"] == "db-0"
    assert before["metadata"]["uid"] != after["metadata"]["uid"]


@pytest.mark.parametrize(
    ("pod_spec", "expected_nodes"),
    [
        ({}, ["node-a", "node-b", "node-c"]),
        ({"nodeSelector": {"zone": "east"}}, ["node-a", "node-b"]),
        ({"nodeSelector": {"zone": "north"}}, []),
        (
            {
                "affinity": {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [
                                {"matchExpressions": [{"key": "role", "operator": "Exists"}]},
                                {"matchFields": [
                                    {"key": "metadata.name", "operator": "In",
                                     "values": ["node-c"]}]},
                            ]
                        }
                    }
                }
            },
            ["node-a", "node-c"],
        ),
        (
            {
                "affinity": {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [
                                {"matchExpressions": [
                                    {"key": "zone", "operator": "NotIn", "values": ["west"]},
                                    {"key": "role", "operator": "DoesNotExist"}]}
                            ]
                        }
                    }
                }
            },
            ["node-b"],
        ),
    ],
)  # fmt: skip
def test_daemonset_runs_one_pod_per_eligible_node(
    pod_spec: dict[str, Any], expected_nodes: list[str]
) -> None:
    ds = workload(
        "DaemonSet", "agent", {"app": "agent"}, namespace="kube-system",
        template=template({"app": "agent"}, **pod_spec),
    )  # fmt: skip
    result = expand([ds], NODES)
    assert sorted(p["spec"]["nodeName"] for p in result.pods) == expected_nodes
    for pod in result.pods:
        assert re.fullmatch(f"agent-{SUFFIX}", pod["metadata"]["name"])
        assert pod["metadata"]["namespace"] == "kube-system"
        assert pod["metadata"]["ownerReferences"][0]["kind"] == "DaemonSet"


def test_daemonset_pod_names_do_not_depend_on_other_nodes() -> None:
    ds = workload("DaemonSet", "agent", {"app": "agent"})
    all_nodes = {p["spec"]["nodeName"]: p["metadata"]["name"] for p in expand([ds], NODES).pods}
    fewer = {p["spec"]["nodeName"]: p["metadata"]["name"] for p in expand([ds], NODES[1:]).pods}
    assert fewer == {name: all_nodes[name] for name in fewer}


def test_daemonset_respects_taints_but_tolerates_cordoned_nodes() -> None:
    nodes = copy.deepcopy(NODES)
    nodes[0]["spec"]["taints"] = [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]
    nodes[1]["spec"]["unschedulable"] = True
    nodes[1]["spec"]["taints"] = [
        {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}
    ]
    nodes[2]["spec"]["taints"] = [{"key": "soft", "effect": "PreferNoSchedule"}]
    ds = workload("DaemonSet", "agent", {"app": "agent"})
    assert sorted(p["spec"]["nodeName"] for p in expand([ds], nodes).pods) == ["node-b", "node-c"]
    tolerant = workload(
        "DaemonSet", "agent", {"app": "agent"},
        template=template({"app": "agent"}, tolerations=[{"operator": "Exists"}]),
    )  # fmt: skip
    assert len(expand([tolerant], nodes).pods) == 3


def test_plain_pods_pass_through_with_namespace_defaulted() -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "solo"}, "spec": {"x": 1}}
    (result,) = expand([pod], NODES).pods
    assert result["metadata"]["namespace"] == "default"
    assert result["spec"] == {"x": 1}
    assert result["metadata"]["uid"]
    assert "namespace" not in pod["metadata"], "input must not be mutated"


def test_output_fed_back_changes_nothing() -> None:
    objects = [
        workload("Deployment", "web", {"app": "web"}, replicas=2),
        workload("StatefulSet", "db", {"app": "db"}, replicas=2),
        workload("DaemonSet", "agent", {"app": "agent"}),
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "solo"}, "spec": {}},
    ]
    first = expand(objects, NODES)
    # What a store would hold: the user's workloads plus everything the controllers made
    # (the plain pod is among first.pods, so it is not repeated).
    store = [*objects[:3], *first.replicasets, *first.pods]
    assert expand(store, NODES) == first


def test_output_is_sorted_and_independent_of_input_order() -> None:
    objects = [
        workload("Deployment", "web", {"app": "web"}, replicas=2, namespace="b"),
        workload("StatefulSet", "db", {"app": "db"}, replicas=2, namespace="a"),
        workload("ReplicaSet", "api", {"app": "api"}, replicas=2, namespace="a"),
    ]
    forward = expand(objects, NODES)
    backward = expand(list(reversed(objects)), list(reversed(NODES)))
    assert forward == backward
    keys = [(p["metadata"]["namespace"], p["metadata"]["name"]) for p in forward.pods]
    assert keys == sorted(keys)


def test_generated_names_avoid_names_already_taken() -> None:
    taken = generated_name("web", generated_suffix("default", "web", "0"))
    squatter = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": taken}, "spec": {}}
    names = pod_names([squatter, workload("ReplicaSet", "web", {"app": "web"}, replicas=1)])
    assert len(names) == 2
    assert taken in names


# --- warnings -----------------------------------------------------------------------------------


def service(name: str, selector: dict[str, str] | None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = dict(spec)
    if selector is not None:
        body["selector"] = selector
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": body}


@pytest.mark.parametrize(
    ("svc", "warning"),
    [
        (service("web", {"app": "web"}), None),
        (
            service("web", {"app": "nope"}),
            "service default/web selects no pods (selector app=nope)",
        ),
        (service("manual", None), None),
        (service("manual", {}), None),
        (service("ext", {"app": "nope"}, type="ExternalName"), None),
        (
            service("web", {"app": "web", "tier": "db"}),
            "service default/web selects no pods (selector app=web,tier=db)",
        ),
    ],
)
def test_service_selecting_no_pods_is_warned_about(
    svc: dict[str, Any], warning: str | None
) -> None:
    result = expand([workload("Deployment", "web", {"app": "web"}), svc], NODES)
    assert result.warnings == ([warning] if warning else [])


def test_service_in_another_namespace_does_not_count() -> None:
    svc = service("web", {"app": "web"})
    svc["metadata"]["namespace"] = "other"
    result = expand([workload("Deployment", "web", {"app": "web"}), svc], NODES)
    assert result.warnings == ["service other/web selects no pods (selector app=web)"]


@pytest.mark.parametrize(
    ("obj", "fragment"),
    [
        (
            workload("Deployment", "web", {"app": "web"}, selector={"matchLabels": {"app": "x"}}),
            "deployment default/web: spec.selector (app=x) does not match the template labels "
            "app=web",
        ),
        (workload("Deployment", "web", {"app": "web"}, selector={}), "must not be empty"),
        (workload("ReplicaSet", "web", {"app": "web"}, replicas=-1), "non-negative integer"),
        (workload("ReplicaSet", "web", {"app": "web"}, replicas="2"), "non-negative integer"),
        (
            workload(
                "StatefulSet",
                "db",
                {"app": "db"},
                selector={"matchExpressions": [{"key": "app", "operator": "In"}]},
            ),
            "statefulset default/db: spec.selector.matchExpressions[0].values: must be specified",
        ),
        (
            {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "once"}, "spec": {}},
            "job default/once is not turned into pods",
        ),
    ],
)
def test_invalid_workloads_are_skipped_with_a_warning(obj: dict[str, Any], fragment: str) -> None:
    result = expand([obj], NODES)
    assert result.pods == []
    assert len(result.warnings) == 1
    assert fragment in result.warnings[0]


def test_duplicate_fixed_pod_names_warn_and_keep_the_first() -> None:
    solo = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "db-0"}, "spec": {}}
    result = expand([solo, workload("StatefulSet", "db", {"app": "db"})], NODES)
    assert len(result.pods) == 1
    assert result.pods[0]["spec"] == {}
    assert result.warnings == [
        "statefulset default/db: pod default/db-0 already exists; keeping the first definition"
    ]


# --- scale ------------------------------------------------------------------------------------


def test_expanding_a_thousand_pods_is_fast() -> None:
    objects = [
        workload("Deployment", f"app-{i}", {"app": f"app-{i}"}, replicas=10) for i in range(50)
    ] + [workload("StatefulSet", f"db-{i}", {"db": f"db-{i}"}, replicas=10) for i in range(50)]
    objects += [service(f"svc-{i}", {"app": f"app-{i}"}) for i in range(50)]
    started = time.perf_counter()
    result = expand(objects, NODES)
    elapsed = time.perf_counter() - started
    assert len(result.pods) == 1000
    assert result.warnings == []
    assert elapsed < 1.0, f"expanding 1,000 pods took {elapsed:.2f}s"


def test_service_warnings_on_their_own_count_plain_pods_too() -> None:
    plain = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "solo", "namespace": "default", "labels": {"app": "solo"}},
        "spec": {},
    }
    services = [service("b-none", {"app": "none"}), service("a-solo", {"app": "solo"})]
    services.append(service("bad", {"app": "not valid"}))
    assert service_warnings(services, [plain]) == [
        "service default/b-none selects no pods (selector app=none)",
        "service default/bad: spec.selector[app]: label value 'not valid': must be empty or at "
        "most 63 characters of alphanumerics, '-', '_' or '.', starting and ending with an "
        "alphanumeric",
    ]
