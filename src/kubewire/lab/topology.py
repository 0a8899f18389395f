"""The lab's physical layer: an underlay L2 segment and one namespace per node.

The underlay is a bridge inside a lab-owned namespace, never connected to the machine's
own interfaces: a missing route can only ever drop lab traffic, not leak it.
"""

from __future__ import annotations

import os
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path

from kubewire.kernel import netns
from kubewire.kernel.netlink import ipr_in, set_sysctl
from kubewire.lab import names

UNDERLAY_BRIDGE = "br0"
NODE_UPLINK = "eth0"


class TopologyError(Exception):
    """The lab's underlay or a node namespace could not be built."""


def create_underlay(lab: str) -> Path:
    path = netns.create_netns(names.underlay_netns(lab))
    with ipr_in(path) as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        ipr.link("add", ifname=UNDERLAY_BRIDGE, kind="bridge")
        ipr.link("set", index=ipr.link_lookup(ifname=UNDERLAY_BRIDGE)[0], state="up")
    return path


def add_node(lab: str, node: str, address: IPv4Interface,
             gateway: IPv4Address | None = None) -> Path:
    """Create a node namespace wired to the underlay with `address` on its eth0.

    With `gateway`, the node gets a default route to it, as a kind node has one to its
    Docker network's gateway: traffic for no known destination (a Service address kube-proxy
    did not translate, say) then reaches the forward hook and is answered there, instead of
    failing with "network unreachable" before any rule sees it. The gateway is the lab's
    external host, which does not forward, so nothing leaves the lab.
    """
    path = _attached_namespace(names.node_netns(lab, node), lab, node, address)
    try:
        if gateway is not None:
            with ipr_in(path) as ipr:
                ipr.route("add", dst="0.0.0.0/0", gateway=str(gateway))
        # A node routes for its pods; rp_filter off because VXLAN/host-gw replies may
        # arrive on a different interface than the one the request left by.
        set_sysctl(path, "net.ipv4.ip_forward", "1")
        set_sysctl(path, "net.ipv4.conf.all.rp_filter", "0")
        set_sysctl(path, "net.ipv4.conf.default.rp_filter", "0")
        # Pods on one bridge talk at L2; the proxy's NAT must still see those packets
        # (a Service reply from a pod on the same node), as kubeadm's preflight demands.
        set_sysctl(path, "net.bridge.bridge-nf-call-iptables", "1")
    except OSError as exc:
        netns.delete_netns(names.node_netns(lab, node))
        raise TopologyError(f"could not configure node {node}: {exc}") from exc
    return path


def add_host(lab: str, host: str, address: IPv4Interface) -> Path:
    """A plain host on the underlay (the "external client" outside the cluster)."""
    return _attached_namespace(names.host_netns(lab, host), lab, f"host/{host}", address)


def _attached_namespace(ns_name: str, lab: str, owner: str, address: IPv4Interface) -> Path:
    path = netns.create_netns(ns_name)
    try:
        port = names.underlay_port(owner)
        with ipr_in(netns.netns_path(names.underlay_netns(lab))) as under:
            fd = os.open(path, os.O_RDONLY)
            try:
                under.link(
                    "add", ifname=port, kind="veth", peer={"ifname": NODE_UPLINK, "net_ns_fd": fd}
                )
            finally:
                os.close(fd)
            bridge = under.link_lookup(ifname=UNDERLAY_BRIDGE)[0]
            under.link("set", index=under.link_lookup(ifname=port)[0], master=bridge, state="up")
        with ipr_in(path) as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
            uplink = ipr.link_lookup(ifname=NODE_UPLINK)[0]
            ipr.addr("add", index=uplink, address=str(address.ip),
                     prefixlen=address.network.prefixlen)
            ipr.link("set", index=uplink, state="up")
    except Exception as exc:
        netns.delete_netns(ns_name)
        raise TopologyError(f"could not attach {owner} to the underlay: {exc}") from exc
    return path


def remove_node(lab: str, node: str) -> None:
    # Deleting the namespace takes its uplink veth (and the underlay end) with it.
    netns.delete_netns(names.node_netns(lab, node))

