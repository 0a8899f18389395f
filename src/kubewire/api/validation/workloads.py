"""The apps/v1 workloads (Deployment, ReplicaSet, StatefulSet, DaemonSet): selector, pod
template, replicas, and the StatefulSet's naming limits."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubewire.api.errors import show_value
from kubewire.api.names import dns1035_label_problems
from kubewire.api.objects import name_of
from kubewire.api.selectors import LabelSelector, SelectorError
from kubewire.api.validation.common import Checker, check_labels
from kubewire.api.validation.pods import check_pod_spec


def _check_workload(c: Checker, *, has_replicas: bool) -> int | None:
    """Checks shared by the apps/v1 workloads; returns the replica count (None if unknown)."""
    kind = c.info.kind
    spec = c.mapping(c.obj.get("spec"), "spec", required=f"a {kind} needs selector and template")
    if spec is None:
        return None
    replicas: int | None = 1
    if has_replicas and spec.get("replicas") is not None:
        replicas = c.integer(spec["replicas"], "spec.replicas", 0, None, "a non-negative integer")
    selector = _check_selector(c, spec.get("selector"))
    template = c.mapping(
        spec.get("template"), "spec.template", required=f"a {kind} needs a pod template"
    )
    if template is None:
        return replicas
    template_metadata = c.mapping(template.get("metadata"), "spec.template.metadata")
    labels_path = "spec.template.metadata.labels"
    labels = check_labels(c, (template_metadata or {}).get("labels"), labels_path)
    if selector is not None and not selector.matches(labels):
        c.error(
            labels_path,
            f'selector does not match template labels: spec.selector "{selector}" must select '
            f"the pods this {kind} creates, whose labels are {show_value(labels)}",
        )
    check_pod_spec(c, template.get("spec"), "spec.template.spec", in_template=True)
    return replicas


def _check_selector(c: Checker, raw: Any) -> LabelSelector | None:
    if raw is None:
        c.error(
            "spec.selector",
            "required field is missing; set it to match the template's labels, "
            "e.g. matchLabels: {app: web}",
        )
        return None
    try:
        selector = LabelSelector.from_dict(raw)
    except SelectorError as exc:
        field = exc.field
        path = "spec.selector" + (field if field.startswith("[") or not field else f".{field}")
        c.error(path, exc.message)
        return None
    if selector.is_everything:
        c.error(
            "spec.selector",
            f"empty selector is invalid for a {c.info.kind}: it would select every pod in the "
            "namespace; set matchLabels",
        )
        return None
    return selector


def check_replicated(c: Checker) -> None:
    _check_workload(c, has_replicas=True)


def check_daemonset(c: Checker) -> None:
    _check_workload(c, has_replicas=False)


def check_statefulset(c: Checker) -> None:
    replicas = _check_workload(c, has_replicas=True)
    spec = c.obj.get("spec")
    if isinstance(spec, Mapping):
        service_name = c.string(spec.get("serviceName"), "spec.serviceName")
        if service_name is not None:
            c.names(service_name, "spec.serviceName", dns1035_label_problems, "Service name")
    name = name_of(c.obj)
    if name and replicas:
        # Pods are named NAME-0 .. NAME-(N-1) and use that as their host name, a DNS label.
        last = f"{name}-{replicas - 1}"
        if len(last) > 63:
            c.error(
                "metadata.name",
                f"too long for its pods' names: pod {last!r} would be {len(last)} characters, "
                "but pod host names are DNS labels of at most 63",
            )
