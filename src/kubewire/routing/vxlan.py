"""The vxlan backend: one VTEP per node, static FDB and neighbour entries (flannel style).

Each node gets `flannel.1` (VNI 1, UDP 8472, learning off) whose address is its pod CIDR's
network address /32. For every other node it programs three kernel objects:

    route  <podCIDR> via <their VTEP ip> dev flannel.1 onlink   (L3: which VTEP)
    neigh  <their VTEP ip> lladdr <their VTEP mac>              (L3 -> L2, no ARP on the overlay)
    fdb    <their VTEP mac> dst <their underlay ip>             (L2 -> underlay, no flooding)

so nothing on the overlay is ever learned or flooded, and a node joining or leaving
changes exactly three objects on every other node.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kubewire.routing.model import (
    DesiredNodeNetwork,
    FdbEntry,
    Link,
    Neighbour,
    NodeInfo,
    Route,
    check_mtu,
    check_nodes,
)

VXLAN_DEVICE = "flannel.1"
VXLAN_VNI = 1
#: The Linux kernel's historical VXLAN port, which flannel uses (IANA's is 4789).
VXLAN_PORT = 8472
#: Outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14) headers.
VXLAN_OVERHEAD = 50
UNDERLAY_DEVICE = "eth0"


@dataclass(frozen=True, slots=True)
class VxlanBackend:
    name: str = "vxlan"
    mtu_overhead: int = VXLAN_OVERHEAD
    device: str = VXLAN_DEVICE
    vni: int = VXLAN_VNI
    port: int = VXLAN_PORT
    underlay_device: str = UNDERLAY_DEVICE

    def compile(
        self, self_node: NodeInfo, all_nodes: Sequence[NodeInfo], mtu: int
    ) -> DesiredNodeNetwork:
        check_mtu(mtu, self.mtu_overhead, self.name)
        others = check_nodes(self_node, all_nodes)
        vtep = Link(
            name=self.device,
            kind="vxlan",
            mtu=mtu - self.mtu_overhead,
            attrs=(
                ("dev", self.underlay_device),
                ("dstport", self.port),
                ("learning", False),
                ("local", self_node.underlay_ip),
                ("vni", self.vni),
            ),
            mac=self_node.vtep_mac,
            addresses=(f"{self_node.vtep_ip}/32",),
        )
        return DesiredNodeNetwork(
            links=(vtep,),
            routes=tuple(
                Route(dst=n.pod_cidr, gateway=n.vtep_ip, dev=self.device, onlink=True)
                for n in others
            ),
            neighbours=tuple(
                Neighbour(ip=n.vtep_ip, mac=n.vtep_mac, dev=self.device) for n in others
            ),
            fdb=tuple(
                FdbEntry(mac=n.vtep_mac, dst_ip=n.underlay_ip, dev=self.device) for n in others
            ),
        )
