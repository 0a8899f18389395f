"""Cross-node pod routing backends (flannel style): pure compilers plus one applier.

Pure parts are re-exported here; the kernel applier lives in `kubewire.routing.apply`
so that importing the compilers never pulls in netlink.
"""

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
    "vtep_mac_for",
]
