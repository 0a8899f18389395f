"""Admission of a set of objects before anything is created: will every pod get an address?

Runs the same pure expansion and scheduling the control plane will run, so `kubewire up`
and `kubewire apply` can refuse input that would exhaust the nodes' pod ranges — with exit
code 2 and nothing changed — instead of leaving pods Pending after the fact.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from kubewire.controllers import scheduler, workloads
from kubewire.controllers.capacity import exhaustion_problems


def pod_range_problems(
    objects: Iterable[Mapping[str, Any]],
    nodes: Sequence[Mapping[str, Any]],
    existing_assignments: Mapping[str, str] | None = None,
) -> list[str]:
    """Messages for workloads whose pods would find no free pod address on any node."""
    objects = list(objects)
    result = workloads.expand(objects, nodes)
    pods = result.pods
    placed = scheduler.schedule(pods, nodes, existing_assignments)
    return exhaustion_problems(placed.unschedulable, pods, result.replicasets, nodes)
