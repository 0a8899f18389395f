"""bgpnet: each node's BGP plan from Nodes, BGPConfiguration and BGPPeers (Calico's model).

Pure: imports only kubewire.api, kubewire.bgp and kubewire.bgpd.config. See README.md.
"""

from kubewire.bgpnet.errors import (
    BgpNetError,
    DuplicateBgpConfiguration,
    DuplicateNode,
    InvalidObject,
    NodeWithoutAddress,
    UnknownNode,
)
from kubewire.bgpnet.plan import MESH, NodePlan, PeerPlan, plan_node
from kubewire.bgpnet.services import service_prefixes
from kubewire.bgpnet.views import (
    ANNOTATION_AS_NUMBER,
    ANNOTATION_RR_CLUSTER_ID,
    SECRETS_NAMESPACE,
    BgpNode,
    BgpSettings,
    PeerSpec,
    SecretKeyRef,
)

__all__ = [
    "ANNOTATION_AS_NUMBER",
    "ANNOTATION_RR_CLUSTER_ID",
    "MESH",
    "SECRETS_NAMESPACE",
    "BgpNetError",
    "BgpNode",
    "BgpSettings",
    "DuplicateBgpConfiguration",
    "DuplicateNode",
    "InvalidObject",
    "NodePlan",
    "NodeWithoutAddress",
    "PeerPlan",
    "PeerSpec",
    "SecretKeyRef",
    "UnknownNode",
    "plan_node",
    "service_prefixes",
]
