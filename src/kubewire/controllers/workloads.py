"""Workload controllers: Deployments, ReplicaSets, StatefulSets and DaemonSets to Pods.

One pure function, :func:`expand`, plays the Deployment, ReplicaSet, StatefulSet and DaemonSet
controllers at once for the steady state: the pods each workload wants right now, named and
labelled the way Kubernetes names and labels them (see ``naming``). Rollout history (old
ReplicaSets, surge, revision annotations) is not modelled: a changed template simply yields a
new ReplicaSet and new pods.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubewire.api.selectors import LabelSelector, SelectorError, service_selector
from kubewire.controllers.naming import (
    generated_name,
    generated_suffix,
    pod_template_hash,
)
from kubewire.controllers.objects import (
    controller_owner,
    derived_uid,
    labels_of,
    metadata_of,
    name_of,
    namespace_of,
    owner_reference,
    spec_of,
    uid_of,
)
from kubewire.controllers.placement import daemon_pod_fits

__all__ = [
    "EXPANDED_KINDS",
    "LABEL_POD_INDEX",
    "LABEL_POD_TEMPLATE_HASH",
    "LABEL_STATEFULSET_POD_NAME",
    "ExpansionResult",
    "expand",
    "service_warnings",
]

LABEL_POD_TEMPLATE_HASH = "pod-template-hash"
LABEL_STATEFULSET_POD_NAME = "statefulset.kubernetes.io/pod-name"
LABEL_POD_INDEX = "apps.kubernetes.io/pod-index"

# Kinds whose children we generate; children of these found in the input are regenerated,
# not copied, so feeding expand() its own output back changes nothing.
EXPANDED_KINDS = frozenset({"Deployment", "ReplicaSet", "StatefulSet", "DaemonSet"})
# Workload kinds Kubernetes would turn into pods but kubewire does not (yet).
_UNSUPPORTED_WORKLOADS = frozenset({"Job", "CronJob", "ReplicationController"})
# Input order of kinds; pods with fixed names claim them before generated names are chosen.
_KIND_ORDER = {"Pod": 0, "StatefulSet": 1, "Deployment": 2, "ReplicaSet": 3, "DaemonSet": 4}


@dataclass(frozen=True, slots=True)
class ExpansionResult:
    pods: list[dict[str, Any]] = field(default_factory=list)
    replicasets: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class _Skip(Exception):
    """A workload Kubernetes would reject; the message becomes a warning."""


class _Expander:
    def __init__(self, nodes: Sequence[Mapping[str, Any]]) -> None:
        self.nodes = sorted(nodes, key=name_of)
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.replicasets: dict[tuple[str, str], dict[str, Any]] = {}
        self.warnings: list[str] = []

    # -- per kind --------------------------------------------------------------------------

    def pod(self, pod: Mapping[str, Any]) -> None:
        result = copy.deepcopy(dict(pod))
        metadata = result.setdefault("metadata", {})
        metadata["namespace"] = namespace_of(pod)
        metadata.setdefault("uid", uid_of(pod))
        self.add_pod(result, f"pod {namespace_of(pod)}/{name_of(pod)}")

    def deployment(self, deployment: Mapping[str, Any]) -> None:
        namespace, name = namespace_of(deployment), name_of(deployment)
        spec = spec_of(deployment)
        selector_dict, template, replicas = _workload_basics("deployment", deployment)
        status = deployment.get("status")
        collision_count = status.get("collisionCount") if isinstance(status, Mapping) else None
        if not isinstance(collision_count, int):
            collision_count = None
        template_hash = pod_template_hash(template, collision_count)

        rs_template = copy.deepcopy(template)
        rs_template.setdefault("metadata", {})
        rs_template["metadata"]["labels"] = {
            **(rs_template["metadata"].get("labels") or {}),
            LABEL_POD_TEMPLATE_HASH: template_hash,
        }
        rs_selector = copy.deepcopy(selector_dict)
        rs_selector["matchLabels"] = {
            **(rs_selector.get("matchLabels") or {}),
            LABEL_POD_TEMPLATE_HASH: template_hash,
        }
        rs_name = f"{name}-{template_hash}"
        rs_spec: dict[str, Any] = {
            "replicas": replicas,
            "selector": rs_selector,
            "template": rs_template,
        }
        if "minReadySeconds" in spec:
            rs_spec["minReadySeconds"] = spec["minReadySeconds"]
        replicaset = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": rs_name,
                "namespace": namespace,
                "uid": derived_uid("ReplicaSet", namespace, rs_name, uid_of(deployment)),
                "labels": dict(rs_template["metadata"]["labels"]),
                "ownerReferences": [owner_reference(deployment)],
            },
            "spec": rs_spec,
        }
        self.replicaset(replicaset)

    def replicaset(self, replicaset: Mapping[str, Any]) -> None:
        namespace, name = namespace_of(replicaset), name_of(replicaset)
        if (namespace, name) in self.replicasets:
            raise _Skip(f"replicaset {namespace}/{name} is defined twice; keeping the first")
        _, template, replicas = _workload_basics("replicaset", replicaset)
        self.replicasets[(namespace, name)] = copy.deepcopy(dict(replicaset))
        incarnation = _template_fingerprint(template)
        for index in range(replicas):
            pod_name = self.free_generated_name(namespace, name, str(index))
            pod = _pod_from_template(template, replicaset, pod_name, incarnation)
            pod["metadata"]["generateName"] = generated_name(name, "")
            self.add_pod(pod, f"replicaset {namespace}/{name}")

    def statefulset(self, statefulset: Mapping[str, Any]) -> None:
        name = name_of(statefulset)
        spec = spec_of(statefulset)
        _, template, replicas = _workload_basics("statefulset", statefulset)
        ordinals = spec.get("ordinals")
        start = ordinals.get("start", 0) if isinstance(ordinals, Mapping) else 0
        if not isinstance(start, int) or isinstance(start, bool) or start < 0:
            raise _Skip(
                f"statefulset {namespace_of(statefulset)}/{name}: spec.ordinals.start must be "
                f"a non-negative integer, got {start!r}"
            )
        service_name = spec.get("serviceName") or ""
        incarnation = _template_fingerprint(template)
        for ordinal in range(start, start + replicas):
            pod_name = f"{name}-{ordinal}"
            pod = _pod_from_template(template, statefulset, pod_name, incarnation)
            pod["metadata"]["labels"][LABEL_STATEFULSET_POD_NAME] = pod_name
            pod["metadata"]["labels"][LABEL_POD_INDEX] = str(ordinal)
            # Stable network identity: {pod}.{serviceName}.{ns}.svc via the headless Service.
            pod["spec"]["hostname"] = pod_name
            if service_name:
                pod["spec"]["subdomain"] = service_name
            self.add_pod(pod, f"statefulset {namespace_of(statefulset)}/{name}")

    def daemonset(self, daemonset: Mapping[str, Any]) -> None:
        namespace, name = namespace_of(daemonset), name_of(daemonset)
        _, template, _ = _workload_basics("daemonset", daemonset, has_replicas=False)
        pod_spec = template.get("spec") or {}
        incarnation = _template_fingerprint(template)
        for node in self.nodes:
            if not daemon_pod_fits(pod_spec, node):
                continue
            node_name = name_of(node)
            pod_name = self.free_generated_name(namespace, name, f"node={node_name}")
            pod = _pod_from_template(template, daemonset, pod_name, incarnation)
            pod["metadata"]["generateName"] = generated_name(name, "")
            # Daemon pods are bound to their node from birth; the scheduler leaves them alone.
            pod["spec"]["nodeName"] = node_name
            self.add_pod(pod, f"daemonset {namespace}/{name}")

    # -- bookkeeping -------------------------------------------------------------------------

    def free_generated_name(self, namespace: str, owner: str, discriminator: str) -> str:
        attempt = 0
        while True:
            suffix = generated_suffix(namespace, owner, discriminator, attempt=attempt)
            candidate = generated_name(owner, suffix)
            if (namespace, candidate) not in self.pods:
                return candidate
            attempt += 1

    def add_pod(self, pod: dict[str, Any], source: str) -> None:
        key = (namespace_of(pod), name_of(pod))
        if key in self.pods:
            self.warnings.append(
                f"{source}: pod {key[0]}/{key[1]} already exists; keeping the first definition"
            )
            return
        self.pods[key] = pod


def expand(
    objects: Iterable[Mapping[str, Any]], nodes: Sequence[Mapping[str, Any]]
) -> ExpansionResult:
    """The Pods (and Deployment ReplicaSets) that ``objects`` call for on ``nodes``.

    Pods pass through; Deployments, ReplicaSets, StatefulSets and DaemonSets become pods; a
    Service whose selector matches no pod gets a warning. Objects that are themselves children
    of a workload (a controller ownerReference to one of EXPANDED_KINDS) are skipped: they are
    regenerated from their owner, so output fed back in changes nothing. Workloads Kubernetes
    would reject are skipped with a warning. Output lists are sorted by (namespace, name).
    """
    expander = _Expander(nodes)
    workloads: list[Mapping[str, Any]] = []
    services: list[Mapping[str, Any]] = []
    for obj in objects:
        kind = obj.get("kind")
        if (kind in _KIND_ORDER or kind == "Service") and not name_of(obj):
            expander.warnings.append(f"a {kind} without metadata.name was ignored")
            continue
        owner = controller_owner(obj)
        if owner is not None and owner.get("kind") in EXPANDED_KINDS and kind in _KIND_ORDER:
            continue
        if kind in _KIND_ORDER:
            workloads.append(obj)
        elif kind == "Service":
            services.append(obj)
        elif kind in _UNSUPPORTED_WORKLOADS:
            expander.warnings.append(
                f"{str(kind).lower()} {namespace_of(obj)}/{name_of(obj)} is not turned into pods: "
                "kubewire runs Pods, Deployments, ReplicaSets, StatefulSets and DaemonSets"
            )
    workloads.sort(key=lambda o: (_KIND_ORDER[str(o["kind"])], namespace_of(o), name_of(o)))
    handlers = {
        "Pod": expander.pod,
        "Deployment": expander.deployment,
        "ReplicaSet": expander.replicaset,
        "StatefulSet": expander.statefulset,
        "DaemonSet": expander.daemonset,
    }
    for workload in workloads:
        try:
            handlers[str(workload["kind"])](workload)
        except _Skip as skipped:
            expander.warnings.append(str(skipped))
    pods = [expander.pods[key] for key in sorted(expander.pods)]
    expander.warnings.extend(service_warnings(services, pods))
    return ExpansionResult(
        pods=pods,
        replicasets=[expander.replicasets[key] for key in sorted(expander.replicasets)],
        warnings=expander.warnings,
    )


def service_warnings(
    services: Iterable[Mapping[str, Any]], pods: Iterable[Mapping[str, Any]]
) -> list[str]:
    """A warning per Service whose selector matches no pod in its namespace, sorted.

    Services without a selector (endpoints managed by hand) and ExternalName Services are
    never warned about; an invalid selector is.
    """
    pod_labels: dict[str, list[dict[str, str]]] = defaultdict(list)
    for pod in pods:
        pod_labels[namespace_of(pod)].append(labels_of(pod))
    warnings = []
    for service in sorted(services, key=lambda o: (namespace_of(o), name_of(o))):
        namespace, name = namespace_of(service), name_of(service)
        spec = spec_of(service)
        if spec.get("type") == "ExternalName":
            continue
        raw = spec.get("selector")
        try:
            selector = service_selector(raw if isinstance(raw, Mapping) else None)
        except SelectorError as error:
            warnings.append(
                f"service {namespace}/{name}: spec.selector{error.field}: {error.message}"
            )
            continue
        if selector is None:
            continue
        if not any(selector.matches(labels) for labels in pod_labels.get(namespace, [])):
            warnings.append(f"service {namespace}/{name} selects no pods (selector {selector})")
    return warnings


def _workload_basics(
    kind: str, workload: Mapping[str, Any], *, has_replicas: bool = True
) -> tuple[dict[str, Any], dict[str, Any], int]:
    """Selector dict, template and replica count, checked the way the API server checks them."""
    where = f"{kind} {namespace_of(workload)}/{name_of(workload)}"
    spec = spec_of(workload)
    template = spec.get("template")
    if not isinstance(template, Mapping):
        raise _Skip(f"{where}: spec.template is required (the pod to run)")
    template_labels = labels_of(template)
    selector_dict = spec.get("selector")
    if not isinstance(selector_dict, Mapping):
        raise _Skip(f"{where}: spec.selector is required (usually matchLabels of the template)")
    try:
        selector = LabelSelector.from_dict(selector_dict)
    except SelectorError as error:
        raise _Skip(f"{where}: spec.selector.{error.field}: {error.message}") from None
    if selector.is_everything:
        raise _Skip(f"{where}: spec.selector must not be empty; it would select every pod")
    if not selector.matches(template_labels):
        raise _Skip(
            f"{where}: spec.selector ({selector}) does not match the template labels "
            f"{_render_labels(template_labels)}; the API server would reject it"
        )
    replicas = spec.get("replicas", 1) if has_replicas else 0
    if replicas is None:
        replicas = 1
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        raise _Skip(f"{where}: spec.replicas must be a non-negative integer, got {replicas!r}")
    return dict(selector_dict), dict(template), replicas


def _pod_from_template(
    template: Mapping[str, Any], owner: Mapping[str, Any], pod_name: str, incarnation: str
) -> dict[str, Any]:
    namespace = namespace_of(owner)
    template_metadata = metadata_of(template)
    metadata: dict[str, Any] = {
        "name": pod_name,
        "namespace": namespace,
        # A changed template means a new pod in Kubernetes, hence a new uid, even when a
        # StatefulSet or DaemonSet pod keeps its name.
        "uid": derived_uid("Pod", namespace, pod_name, uid_of(owner), incarnation),
        "labels": labels_of(template),
        "ownerReferences": [owner_reference(owner)],
    }
    annotations = template_metadata.get("annotations")
    if isinstance(annotations, Mapping) and annotations:
        metadata["annotations"] = dict(annotations)
    spec = template.get("spec")
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": copy.deepcopy(dict(spec)) if isinstance(spec, Mapping) else {},
        "status": {"phase": "Pending"},
    }


def _template_fingerprint(template: Mapping[str, Any]) -> str:
    canonical = json.dumps(template, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _render_labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return "(none)"
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))
