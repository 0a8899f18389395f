"""A deterministic stand-in for kube-scheduler: bind pods to nodes.

Filters are kube-scheduler's node filters that matter for networking (see ``placement``)
plus its "Too many pods" capacity filter (see ``capacity``);
scoring is plain spreading: the eligible node with the fewest pods wins, ties go to the node
whose name sorts first. Pods are scheduled in ``namespace/name`` order, so the same pods and
nodes always give the same bindings. A bound pod never moves while its node exists and still
fits it, which keeps bindings stable as pods and nodes come and go.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubewire.controllers.capacity import REASON_TOO_MANY_PODS, max_pods
from kubewire.controllers.objects import name_of, object_key, spec_of
from kubewire.controllers.placement import fits_node_affinity, node_filter_reason

__all__ = ["ScheduleResult", "schedule"]


@dataclass(frozen=True, slots=True)
class ScheduleResult:
    """``assignments`` maps ``namespace/name`` to a node; ``unschedulable`` to the reason.

    Both are sorted by pod key; every input pod is in exactly one of them.
    """

    assignments: dict[str, str] = field(default_factory=dict)
    unschedulable: dict[str, str] = field(default_factory=dict)


def schedule(
    pods: Iterable[Mapping[str, Any]],
    nodes: Iterable[Mapping[str, Any]],
    existing_assignments: Mapping[str, str] | None = None,
) -> ScheduleResult:
    """Bind every pod to a node, or say why it cannot be bound.

    Pods with ``spec.nodeName`` are bound there by definition (as the kubelet sees it), if that
    node exists and admits them. Pods in ``existing_assignments`` keep their node if it still
    exists and passes the filters. The rest go to the least loaded eligible node.
    """
    existing_assignments = existing_assignments or {}
    node_by_name = {name_of(node): node for node in nodes}
    node_names = sorted(node_by_name)
    load: Counter[str] = Counter({name: 0 for name in node_names})
    capacity = {name: max_pods(node_by_name[name]) for name in node_names}
    assignments: dict[str, str] = {}
    unschedulable: dict[str, str] = {}

    by_key = {object_key(pod): pod for pod in pods}
    pending: list[str] = []
    for key in sorted(by_key):
        pod_spec = spec_of(by_key[key])
        node_name = pod_spec.get("nodeName")
        if node_name:
            reason = _bound_pod_problem(pod_spec, str(node_name), node_by_name)
            if reason is None:
                assignments[key] = str(node_name)
                load[str(node_name)] += 1
            else:
                unschedulable[key] = reason
            continue
        previous = existing_assignments.get(key)
        if (
            previous in node_by_name
            and node_filter_reason(pod_spec, node_by_name[previous]) is None
        ):
            assignments[key] = previous
            load[previous] += 1
            continue
        pending.append(key)

    # Pods with the same constraints see the same filter outcome; compute it once per shape.
    filter_cache: dict[str, tuple[list[str], dict[str, str]]] = {}
    for key in pending:
        pod_spec = spec_of(by_key[key])
        shape = _constraint_shape(pod_spec)
        if shape not in filter_cache:
            eligible, rejected = [], {}
            for name in node_names:
                reason = node_filter_reason(pod_spec, node_by_name[name])
                if reason is None:
                    eligible.append(name)
                else:
                    rejected[name] = reason
            filter_cache[shape] = (eligible, rejected)
        eligible, rejected = filter_cache[shape]
        # NodeResourcesFit: a full node is rejected like kube-scheduler does.
        fitting = [n for n in eligible if _has_room(capacity[n], load[n])]
        if not fitting:
            full = {n: REASON_TOO_MANY_PODS for n in eligible}
            unschedulable[key] = _unschedulable_message(len(node_names), {**rejected, **full})
            continue
        eligible = fitting
        chosen = min(eligible, key=lambda name: (load[name], name))
        assignments[key] = chosen
        load[chosen] += 1

    return ScheduleResult(
        assignments=dict(sorted(assignments.items())),
        unschedulable=dict(sorted(unschedulable.items())),
    )


def _has_room(capacity: int | None, load: int) -> bool:
    return capacity is None or load < capacity


def _bound_pod_problem(
    pod_spec: Mapping[str, Any], node_name: str, node_by_name: Mapping[str, Mapping[str, Any]]
) -> str | None:
    node = node_by_name.get(node_name)
    if node is None:
        known = ", ".join(sorted(node_by_name)) or "none"
        return (
            f'spec.nodeName "{node_name}" is not a node of this cluster (nodes: {known}); '
            "the scheduler ignores pods that name a node, so it stays Pending"
        )
    # The kubelet re-checks node affinity when admitting a pod that bypassed the scheduler.
    if not fits_node_affinity(pod_spec, node):
        return "Pod was rejected: Predicate NodeAffinity failed"
    return None


def _unschedulable_message(node_count: int, rejected: Mapping[str, str]) -> str:
    """kube-scheduler's FitError wording: counts per reason, sorted as strings."""
    if node_count == 0:
        return "no nodes available to schedule pods"
    counts = Counter(rejected.values())
    reasons = sorted(f"{count} {reason}" for reason, count in counts.items())
    return f"0/{node_count} nodes are available: {', '.join(reasons)}."


def _constraint_shape(pod_spec: Mapping[str, Any]) -> str:
    relevant = {key: pod_spec.get(key) for key in ("nodeSelector", "affinity", "tolerations")}
    return json.dumps(relevant, sort_keys=True, default=str)
