"""Each node's CNI configuration, written to its net.d as a real runtime would read it.

Two networks per pod, as containerd does: the loopback network, then the pod network
(bridge + host-local style IPAM on the node's pod CIDR). `cni: reference` swaps in the
reference plugins from containernetworking-plugins, which speak CNI up to 1.0.0.
The default route comes from `isDefaultGateway` alone: the reference bridge refuses an
IPAM default route on top of it.
"""

from __future__ import annotations

import json
from ipaddress import IPv4Network
from typing import Any

from kubewire.api.cluster import ClusterSpec
from kubewire.lab.state import LabDirs
from kubewire.routing import pod_mtu

POD_NETWORK = "kubewire"
LOOPBACK_NETWORK = "cni-loopback"


def cni_conflists(
    spec: ClusterSpec, dirs: LabDirs, node: str, pod_cidr: IPv4Network
) -> list[dict[str, Any]]:
    reference = spec.cni == "reference"
    version = "1.0.0" if reference else "1.1.0"
    node_dir = dirs.node(node)
    ipam: dict[str, Any] = {
        "type": "host-local" if reference else "kubewire-ipam",
        "ranges": [[{"subnet": str(pod_cidr)}]],
        "dataDir": str(node_dir / "ipam"),
    }
    pod_network = {
        "cniVersion": version,
        "name": POD_NETWORK,
        "plugins": [
            {
                "type": "bridge" if reference else "kubewire-bridge",
                "bridge": "cni0",
                "isGateway": True,
                "isDefaultGateway": True,
                "hairpinMode": True,
                "mtu": pod_mtu(spec.network.backend, spec.network.mtu),
                "ipam": ipam,
            }
        ],
    }
    loopback = {
        "cniVersion": version,
        "name": LOOPBACK_NETWORK,
        "plugins": [{"type": "loopback" if reference else "kubewire-loopback"}],
    }
    net_d = node_dir / "net.d"
    net_d.mkdir(parents=True, exist_ok=True)
    (net_d / "10-kubewire.conflist").write_text(json.dumps(pod_network, indent=2))
    (net_d / "99-loopback.conflist").write_text(json.dumps(loopback, indent=2))
    return [loopback, pod_network]
