"""The bgp backend (Calico's design): no static routes at all.

Each node runs a BGP speaker (`kubewire.bgpd`, started by the node agent from the plan
`kubewire.bgpnet` compiles out of Nodes, BGPConfiguration and BGPPeer objects). It announces
the node's own pod address blocks and installs what it learns as plain kernel routes
(`routing.bgproutes`, protocol 186 "bgp", ECMP where paths tie). So this backend's share of
the flannel-style applier is empty: compiling it removes any vxlan or host-gw state a node
still holds, and the routes come from the speaker instead. Like host-gw it needs every BGP
next hop on the node's own L2 segment (true in the lab: one underlay bridge), and it adds no
encapsulation overhead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kubewire.routing.model import DesiredNodeNetwork, NodeInfo, check_mtu, check_nodes


@dataclass(frozen=True, slots=True)
class BgpBackend:
    name: str = "bgp"
    mtu_overhead: int = 0

    def compile(
        self, self_node: NodeInfo, all_nodes: Sequence[NodeInfo], mtu: int
    ) -> DesiredNodeNetwork:
        check_mtu(mtu, self.mtu_overhead, self.name)
        check_nodes(self_node, all_nodes)
        return DesiredNodeNetwork()
