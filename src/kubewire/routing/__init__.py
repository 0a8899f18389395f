"""Cross-node pod routing backends (flannel style): pure compilers plus one applier.

The applier's entry points (`sync_node_network`, `read_node_network`) are re-exported
lazily, so importing the pure compilers never loads the kernel-facing modules.
"""

from typing import TYPE_CHECKING, Any

from kubewire.routing.model import (
    RTPROT_KUBEWIRE,
    VTEP_MAC_ANNOTATION,
    Backend,
    DesiredNodeNetwork,
    FdbEntry,
    InvalidNodesError,
    KernelSupportError,
    Link,
    Neighbour,
    NodeInfo,
    Route,
    RoutingError,
    SyncError,
    UnknownBackendError,
    vtep_mac_for,
)
from kubewire.routing.plan import ActualState, Delta, SyncPlan, SyncReport, plan_sync
from kubewire.routing.registry import BACKENDS, DEFAULT_BACKEND, get_backend, pod_mtu

if TYPE_CHECKING:
    from kubewire.routing.apply import read_node_network, sync_node_network

_LAZY = {"sync_node_network", "read_node_network"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from kubewire.routing import apply

        return getattr(apply, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BACKENDS",
    "DEFAULT_BACKEND",
    "RTPROT_KUBEWIRE",
    "VTEP_MAC_ANNOTATION",
    "ActualState",
    "Backend",
    "Delta",
    "DesiredNodeNetwork",
    "FdbEntry",
    "InvalidNodesError",
    "KernelSupportError",
    "Link",
    "Neighbour",
    "NodeInfo",
    "Route",
    "RoutingError",
    "SyncError",
    "SyncPlan",
    "SyncReport",
    "UnknownBackendError",
    "get_backend",
    "plan_sync",
    "pod_mtu",
    "read_node_network",
    "sync_node_network",
    "vtep_mac_for",
]
