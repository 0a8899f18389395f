"""Which nodes a pod may run on: the node filters shared by the scheduler and DaemonSets.

Covers what decides placement in a network lab: ``spec.unschedulable``, taints and
tolerations, ``nodeSelector`` and required node affinity (``matchExpressions`` on labels,
``matchFields`` on ``metadata.name``). Resources, ports, volumes and inter-pod affinity are out
of scope. Each filter returns None when the node fits, else the reason in kube-scheduler's words.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from kubewire.api.selectors import LabelSelector, Operator, Requirement
from kubewire.controllers.objects import labels_of, name_of, spec_of

__all__ = [
    "DAEMONSET_TOLERATIONS",
    "REASON_NODE_AFFINITY",
    "REASON_UNSCHEDULABLE",
    "daemon_pod_fits",
    "fits_node_affinity",
    "node_filter_reason",
    "untolerated_taint",
]

REASON_NODE_AFFINITY = "node(s) didn't match Pod's node affinity/selector"
REASON_UNSCHEDULABLE = "node(s) were unschedulable"

# Tolerations the DaemonSet controller adds to every daemon pod, so daemons keep running on
# nodes that are cordoned or under pressure (network-unavailable is only added for hostNetwork).
DAEMONSET_TOLERATIONS: tuple[Mapping[str, str], ...] = (
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/pid-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"},
)
_HOST_NETWORK_DAEMON_TOLERATION = {
    "key": "node.kubernetes.io/network-unavailable",
    "operator": "Exists",
    "effect": "NoSchedule",
}

# PreferNoSchedule only steers scoring; these two keep a pod off the node.
_BLOCKING_EFFECTS = frozenset({"NoSchedule", "NoExecute"})

_SET_OPERATORS = {
    "In": Operator.IN,
    "NotIn": Operator.NOT_IN,
    "Exists": Operator.EXISTS,
    "DoesNotExist": Operator.DOES_NOT_EXIST,
}


def node_filter_reason(pod_spec: Mapping[str, Any], node: Mapping[str, Any]) -> str | None:
    """Why ``node`` cannot take a pod with ``pod_spec``, in kube-scheduler filter order."""
    if spec_of(node).get("unschedulable") is True and not _tolerates_unschedulable(pod_spec):
        return REASON_UNSCHEDULABLE
    taint = untolerated_taint(_list(pod_spec.get("tolerations")), node)
    if taint is not None:
        return f"node(s) had untolerated taint {{{taint.get('key', '')}: {taint.get('value', '')}}}"
    if not fits_node_affinity(pod_spec, node):
        return REASON_NODE_AFFINITY
    return None


def daemon_pod_fits(pod_spec: Mapping[str, Any], node: Mapping[str, Any]) -> bool:
    """Whether the DaemonSet controller would run a pod with ``pod_spec`` on ``node``."""
    tolerations = [*_list(pod_spec.get("tolerations")), *DAEMONSET_TOLERATIONS]
    if pod_spec.get("hostNetwork") is True:
        tolerations.append(_HOST_NETWORK_DAEMON_TOLERATION)
    return untolerated_taint(tolerations, node) is None and fits_node_affinity(pod_spec, node)


def fits_node_affinity(pod_spec: Mapping[str, Any], node: Mapping[str, Any]) -> bool:
    """``nodeSelector`` and required node affinity, both of which must hold."""
    node_selector = pod_spec.get("nodeSelector")
    node_labels = labels_of(node)
    if isinstance(node_selector, Mapping) and not LabelSelector.from_map(node_selector).matches(
        node_labels
    ):
        return False
    affinity = _mapping(_mapping(pod_spec.get("affinity")).get("nodeAffinity"))
    required = affinity.get("requiredDuringSchedulingIgnoredDuringExecution")
    if not isinstance(required, Mapping):
        return True
    # Terms are ORed; an empty term, or an empty term list, matches no node.
    terms = _list(required.get("nodeSelectorTerms"))
    return any(_term_matches(_mapping(term), node_labels, name_of(node)) for term in terms)


def untolerated_taint(
    tolerations: Iterable[Mapping[str, Any]], node: Mapping[str, Any]
) -> Mapping[str, Any] | None:
    """The first NoSchedule/NoExecute taint of ``node`` no toleration covers, if any."""
    tolerations = list(tolerations)
    for taint in _list(spec_of(node).get("taints")):
        if not isinstance(taint, Mapping) or taint.get("effect") not in _BLOCKING_EFFECTS:
            continue
        if not any(_tolerates(_mapping(toleration), taint) for toleration in tolerations):
            return taint
    return None


def _tolerates(toleration: Mapping[str, Any], taint: Mapping[str, Any]) -> bool:
    effect = toleration.get("effect") or ""
    if effect and effect != taint.get("effect"):
        return False
    key = toleration.get("key") or ""
    operator = toleration.get("operator") or "Equal"
    if operator == "Exists":
        # An empty key with Exists tolerates every taint.
        return not key or key == taint.get("key")
    return key == taint.get("key") and (toleration.get("value") or "") == (taint.get("value") or "")


def _tolerates_unschedulable(pod_spec: Mapping[str, Any]) -> bool:
    taint = {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}
    return any(_tolerates(_mapping(t), taint) for t in _list(pod_spec.get("tolerations")))


def _term_matches(term: Mapping[str, Any], node_labels: Mapping[str, str], node_name: str) -> bool:
    expressions = _list(term.get("matchExpressions"))
    fields = _list(term.get("matchFields"))
    if not expressions and not fields:
        return False
    field_values = {"metadata.name": node_name}
    return all(_requirement_holds(_mapping(e), node_labels) for e in expressions) and all(
        _field_requirement_holds(_mapping(f), field_values) for f in fields
    )


def _requirement_holds(expression: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    key = expression.get("key")
    operator = expression.get("operator")
    values = [str(v) for v in _list(expression.get("values"))]
    if not isinstance(key, str):
        return False
    if operator in ("Gt", "Lt"):
        # Gt/Lt compare integers; a missing or non-numeric label never matches.
        try:
            label_value, bound = int(labels[key]), int(values[0])
        except (KeyError, IndexError, ValueError):
            return False
        return label_value > bound if operator == "Gt" else label_value < bound
    set_operator = _SET_OPERATORS.get(str(operator))
    if set_operator is None:
        return False
    try:
        requirement = Requirement(key, set_operator, tuple(values))
    except ValueError:
        return False
    return requirement.matches(labels)


def _field_requirement_holds(expression: Mapping[str, Any], fields: Mapping[str, str]) -> bool:
    # Only metadata.name is a supported field; In/NotIn are the only valid operators.
    if expression.get("key") not in fields or expression.get("operator") not in ("In", "NotIn"):
        return False
    return _requirement_holds(expression, fields)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> Sequence[Any]:
    return value if isinstance(value, list) else []
