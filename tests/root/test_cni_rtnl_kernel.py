"""The plugins' rtnetlink client against the kernel, inside a throwaway namespace."""

from __future__ import annotations

import errno
import ipaddress
import os
import secrets
from collections.abc import Iterator

import pytest

from kubewire.cni.plugins.rtnl import NetlinkError, Rtnl
from kubewire.kernel.netns import create_netns, delete_netns

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create network namespaces"),
]


@pytest.fixture
def two_namespaces() -> Iterator[tuple[str, str]]:
    tag = secrets.token_hex(3)
    names = [f"kwtest-cni-{tag}-rt0", f"kwtest-cni-{tag}-rt1"]
    paths: list[str] = []
    try:
        for name in names:
            paths.append(str(create_netns(name)))
        yield paths[0], paths[1]
    finally:
        for name in names:
            delete_netns(name)


def test_links_addresses_and_routes(two_namespaces: tuple[str, str]) -> None:
    host_ns, pod_ns = two_namespaces
    fd = os.open(pod_ns, os.O_RDONLY)
    try:
        with Rtnl.opened_in(host_ns) as host, Rtnl.opened_in(pod_ns) as pod:
            assert host.link("nothing") is None
            host.add_bridge("br9", "02:00:00:00:00:09", mtu=1450)
            with pytest.raises(NetlinkError) as info:
                host.add_bridge("br9", "02:00:00:00:00:09")
            assert info.value.errno == errno.EEXIST
            bridge = host.link("br9")
            assert bridge is not None
            assert (bridge.kind, bridge.mtu, bridge.mac, bridge.up) == (
                "bridge",
                1450,
                "02:00:00:00:00:09",
                True,
            )

            host.add_veth(
                "vh9", "02:00:00:00:01:09", "eth0", "02:00:00:00:02:09", fd, 1450, bridge.index
            )
            port = host.link("vh9")
            assert port is not None
            assert (port.master, port.slave_kind, port.hairpin, port.up) == (
                bridge.index,
                "bridge",
                False,
                True,
            )
            host.set_hairpin(port.index)
            port = host.link("vh9")
            assert port is not None and port.hairpin is True

            peer = pod.link("eth0")
            assert peer is not None
            assert (peer.kind, peer.mtu, peer.mac, peer.up) == (
                "veth",
                1450,
                "02:00:00:00:02:09",
                False,
            )
            pod.set_link(peer.index, up=True, promisc=True)
            peer = pod.link(index=peer.index)
            assert peer is not None and peer.up and peer.flags & 0x100

            iface = ipaddress.ip_interface("10.99.0.2/24")
            pod.add_address(peer.index, iface, ipaddress.ip_address("10.99.0.255"))
            assert [a.interface for a in pod.addresses(peer.index, 4)] == [iface]
            gw = ipaddress.ip_address("10.99.0.1")
            pod.add_route(ipaddress.ip_network("0.0.0.0/0"), peer.index, gw)
            pod.add_route(ipaddress.ip_network("10.96.0.0/12"), peer.index, gw, priority=5)
            routes = {(str(r.dst), str(r.gateway)) for r in pod.routes(4)}
            assert routes == {
                ("0.0.0.0/0", "10.99.0.1"),
                ("10.96.0.0/12", "10.99.0.1"),
                ("10.99.0.0/24", "None"),
            }
            pod.delete_address(peer.index, iface)
            assert pod.addresses(peer.index, 4) == []

            assert host.delete_link("vh9") is True
            assert host.delete_link("vh9") is False
            assert pod.link("eth0") is None  # the peer went with it
    finally:
        os.close(fd)
