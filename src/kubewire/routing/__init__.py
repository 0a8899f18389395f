"""Cross-node pod routing backends (flannel style): pure compilers plus one applier.

The applier's entry points (`sync_node_network`, `read_node_network`) and the egress
masquerade (`egress_ruleset`, `sync_egress_masquerade`, `remove_egress_masquerade`) are
re-exported lazily, so importing the pure compilers never loads the kernel-facing modules.
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
    from kubewire.routing.masquerade import (
        EgressMasqueradeError,
        egress_ruleset,
        remove_egress_masquerade,
        sync_egress_masquerade,
    )

_LAZY = {"sync_node_network", "read_node_network"}
_LAZY_MASQUERADE = {"EgressMasqueradeError", "egress_ruleset", "sync_egress_masquerade",
                    "remove_egress_masquerade"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from kubewire.routing import apply

        return getattr(apply, name)
    if name in _LAZY_MASQUERADE:
        from kubewire.routing import masquerade

        return getattr(masquerade, name)
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
    "EgressMasqueradeError",
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
    "egress_ruleset",
    "get_backend",
    "plan_sync",
    "pod_mtu",
    "read_node_network",
    "remove_egress_masquerade",
    "sync_egress_masquerade",
    "sync_node_network",
    "vtep_mac_for",
]
