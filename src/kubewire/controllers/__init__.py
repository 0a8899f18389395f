"""Controllers: pure functions from API objects to derived objects (see README.md)."""

from kubewire.controllers.diff import ObjectDiff, desired_content, diff_objects
from kubewire.controllers.errors import (
    ControllerError,
    DuplicateNodeName,
    PodCidrExhausted,
    UnderlayExhausted,
)
from kubewire.controllers.nodes import (
    NodeSpec,
    NodeSpecLike,
    allocate_pod_cidrs,
    allocate_underlay_addresses,
    build_node,
    build_nodes,
)
from kubewire.controllers.scheduler import ScheduleResult, schedule
from kubewire.controllers.workloads import ExpansionResult, expand

__all__ = [
    "ControllerError",
    "DuplicateNodeName",
    "ExpansionResult",
    "NodeSpec",
    "NodeSpecLike",
    "ObjectDiff",
    "PodCidrExhausted",
    "ScheduleResult",
    "UnderlayExhausted",
    "allocate_pod_cidrs",
    "allocate_underlay_addresses",
    "build_node",
    "build_nodes",
    "desired_content",
    "diff_objects",
    "expand",
    "schedule",
]
