"""The host-gw backend: plain routes, each node is the gateway for its own pod CIDR.

For every other node: `<their podCIDR> via <their underlay ip> dev eth0`. No encapsulation,
so no MTU overhead, but the gateway must be directly reachable: every node has to sit on
one L2 segment (true in the lab, where all nodes hang off one underlay bridge). The
applier refuses a gateway that is not inside eth0's own subnet rather than programming a
route the kernel would reject or blackhole.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kubewire.routing.model import DesiredNodeNetwork, NodeInfo, Route, check_mtu, check_nodes

UNDERLAY_DEVICE = "eth0"


@dataclass(frozen=True, slots=True)
class HostGwBackend:
    name: str = "host-gw"
    mtu_overhead: int = 0
    underlay_device: str = UNDERLAY_DEVICE

    def compile(
        self, self_node: NodeInfo, all_nodes: Sequence[NodeInfo], mtu: int
    ) -> DesiredNodeNetwork:
        check_mtu(mtu, self.mtu_overhead, self.name)
        others = check_nodes(self_node, all_nodes)
        return DesiredNodeNetwork(
            routes=tuple(
                Route(dst=n.pod_cidr, gateway=n.underlay_ip, dev=self.underlay_device)
                for n in others
            )
        )
