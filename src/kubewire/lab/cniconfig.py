"""Each node's CNI configuration, written to its net.d for the runtime to read back.

The pod network (bridge + host-local style IPAM on the node's pod CIDR) is a conflist in
the node's CNI config directory, as flannel's or Calico's installers write it; the node
agent reads it from there like containerd does (the first file by name). The loopback
network is the runtime's own built-in config, as in containerd's CRI plugin.
`cni: reference` swaps in the reference plugins from containernetworking-plugins, which
speak CNI up to 1.0.0. The default route comes from `isDefaultGateway` alone: the
reference bridge refuses an IPAM default route on top of it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

from kubewire.api.cluster import ClusterSpec
from kubewire.lab.state import LabDirs
from kubewire.routing import pod_mtu

POD_NETWORK = "kubewire"
LOOPBACK_NETWORK = "cni-loopback"
CONFLIST_NAME = "10-kubewire.conflist"


def _version(spec: ClusterSpec) -> str:
    return "1.0.0" if spec.cni == "reference" else "1.1.0"


def write_pod_network(spec: ClusterSpec, dirs: LabDirs, node: str,
                      pod_cidr: IPv4Network | Sequence[IPv4Network]) -> Path:
    """Write the node's pod network conflist into its net.d; returns the directory.

    `pod_cidr` may be several subnets (a bgp lab's IPAM blocks): they become the ranges of
    one range set, so a pod gets one address from the first subnet with a free one."""
    subnets = [pod_cidr] if isinstance(pod_cidr, IPv4Network) else list(pod_cidr)
    reference = spec.cni == "reference"
    node_dir = dirs.node(node)
    pod_network = {
        "cniVersion": _version(spec),
        "name": POD_NETWORK,
        "plugins": [
            {
                "type": "bridge" if reference else "kubewire-bridge",
                "bridge": "cni0",
                "isGateway": True,
                "isDefaultGateway": True,
                "hairpinMode": True,
                "mtu": pod_mtu(spec.network.backend, spec.network.mtu),
                "ipam": {
                    "type": "host-local" if reference else "kubewire-ipam",
                    "ranges": [[{"subnet": str(subnet)} for subnet in subnets]],
                    "dataDir": str(node_dir / "ipam"),
                },
            }
        ],
    }
    net_d = node_dir / "net.d"
    net_d.mkdir(parents=True, exist_ok=True)
    tmp = net_d / f".{CONFLIST_NAME}.tmp"
    tmp.write_text(json.dumps(pod_network, indent=2))
    tmp.rename(net_d / CONFLIST_NAME)
    return net_d


def loopback_network(spec: ClusterSpec) -> dict[str, Any]:
    """The runtime's built-in loopback network (CNI_IFNAME=lo)."""
    plugin = "loopback" if spec.cni == "reference" else "kubewire-loopback"
    return {"cniVersion": _version(spec), "name": LOOPBACK_NETWORK, "plugins": [{"type": plugin}]}
