"""kernel.rtnl against the real kernel, inside throwaway kwtest-rtnl-* namespaces: the calls
the CNI plugins make one by one, and the routing applier's batched changes and dumps."""

from __future__ import annotations

import errno
import ipaddress
import os
import secrets
import socket
from collections.abc import Iterator

import pytest

from kubewire.kernel import rtnl
from kubewire.kernel.netns import create_netns, delete_netns
from kubewire.kernel.rtnl import Mode, NetlinkError, Rtnl

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create network namespaces"),
]


@pytest.fixture
def two_namespaces() -> Iterator[tuple[str, str]]:
    tag = secrets.token_hex(3)
    names = [f"kwtest-rtnl-{tag}-0", f"kwtest-rtnl-{tag}-1"]
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
        with Rtnl.open(host_ns) as host, Rtnl.open(pod_ns) as pod:
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
            assert peer is not None and peer.up and peer.flags & rtnl.IFF_PROMISC

            iface = ipaddress.ip_interface("10.99.0.2/24")
            pod.add_address(peer.index, iface, ipaddress.ip_address("10.99.0.255"))
            assert [a.interface for a in pod.addresses(peer.index, 4)] == [iface]
            gw = ipaddress.ip_address("10.99.0.1")
            pod.add_route(ipaddress.ip_network("0.0.0.0/0"), peer.index, gw)
            pod.add_route(ipaddress.ip_network("10.96.0.0/12"), peer.index, gw, priority=5)
            routes = {(str(r.network), r.gateway) for r in pod.routes(4)}
            assert routes == {
                ("0.0.0.0/0", "10.99.0.1"),
                ("10.96.0.0/12", "10.99.0.1"),
                ("10.99.0.0/24", None),
            }
            pod.delete_address(peer.index, iface)
            assert pod.addresses(peer.index, 4) == []

            assert host.delete_link("vh9") is True
            assert host.delete_link("vh9") is False
            assert pod.link("eth0") is None  # the peer went with it
    finally:
        os.close(fd)


def test_ipv6_address_and_route_with_metrics(two_namespaces: tuple[str, str]) -> None:
    with Rtnl.open(two_namespaces[0]) as ns:
        ns.add_bridge("br6", "02:00:00:00:00:06")
        index = ns.link("br6").index  # type: ignore[union-attr]
        iface = ipaddress.ip_interface("fd00:6::2/64")
        ns.add_address(index, iface, flags=rtnl.IFA_F_NODAD)
        assert iface in {a.interface for a in ns.addresses(index, 6)}
        dst = ipaddress.ip_network("fd00:7::/64")
        ns.add_route(dst, index, ipaddress.ip_address("fd00:6::1"), table=1000, mtu=1400)
        assert dst not in {r.network for r in ns.routes(6)}  # main table only by default
        (route,) = [r for r in ns.routes(6, table=None) if r.network == dst]
        assert (route.table, route.gateway, route.oif) == (1000, "fd00:6::1", index)


def _setup_vtep(ns: Rtnl) -> tuple[int, int]:
    """An underlay bridge with 172.31.0.1/24 and a VXLAN device on it, both up."""
    (ack,) = ns.transact([lambda seq: rtnl.new_link(seq, "ul0", "bridge", mtu=1500, up=True)])
    assert ack.error == 0
    underlay = ns.link("ul0")
    assert underlay is not None
    vxlan = rtnl.VxlanInfo(
        vni=1, link=underlay.index, local="172.31.0.1", learning=False, port=8472
    )
    acks = ns.transact(
        [
            lambda seq: rtnl.addr_message(seq, Mode.REPLACE, underlay.index, "172.31.0.1/24"),
            lambda seq: rtnl.new_link(
                seq, "flannel.1", "vxlan", mtu=1450, mac="0e:00:00:00:00:0a", vxlan=vxlan
            ),
        ]
    )
    assert [a.error for a in acks] == [0, 0]
    vtep = ns.link("flannel.1")
    assert vtep is not None and vtep.vxlan == vxlan and not vtep.up
    (ack,) = ns.transact(
        [lambda seq: rtnl.set_link(seq, vtep.index, up=True, mtu=1450, alias="kubewire-routing")]
    )
    assert ack.error == 0
    return underlay.index, vtep.index


def test_batched_routes_neighbours_and_fdb(two_namespaces: tuple[str, str]) -> None:
    with Rtnl.open(two_namespaces[0]) as ns:
        underlay, vtep = _setup_vtep(ns)
        link = ns.link(index=vtep)
        assert link is not None and (link.up, link.alias, link.mtu) == (
            True,
            "kubewire-routing",
            1450,
        )
        mac = "0e:00:00:00:00:0b"
        changes: list[rtnl.Builder] = [
            lambda seq: rtnl.neigh_message(seq, Mode.REPLACE, vtep, "10.244.2.0", mac),
            lambda seq: rtnl.fdb_message(seq, Mode.APPEND, vtep, mac, "172.31.0.3"),
            lambda seq: rtnl.route_message(
                seq, Mode.REPLACE, "10.244.2.0/24", vtep, "10.244.2.0", onlink=True, proto=75
            ),
            lambda seq: rtnl.route_message(
                seq, Mode.REPLACE, "10.244.3.0/24", underlay, "172.31.0.4", proto=75
            ),
        ]
        assert [a.error for a in ns.transact(changes)] == [0, 0, 0, 0]
        assert [a.error for a in ns.transact(changes)] == [0, 0, 0, 0]  # replace is idempotent

        ours = [
            r
            for r in map(rtnl.decode_route, ns.dump(rtnl.RTM_GETROUTE, socket.AF_INET))
            if r.proto == 75
        ]
        assert sorted(
            (r.dst, r.dst_len, r.gateway, r.oif, bool(r.flags & rtnl.RTNH_F_ONLINK)) for r in ours
        ) == [
            ("10.244.2.0", 24, "10.244.2.0", vtep, True),
            ("10.244.3.0", 24, "172.31.0.4", underlay, False),
        ]
        neighbours = map(rtnl.decode_neigh, ns.dump(rtnl.RTM_GETNEIGH, socket.AF_INET))
        assert ("10.244.2.0", mac) in {
            (n.dst, n.lladdr)
            for n in neighbours
            if n.ifindex == vtep and n.state & rtnl.NUD_PERMANENT
        }
        fdb = map(rtnl.decode_neigh, ns.dump(rtnl.RTM_GETNEIGH, socket.AF_BRIDGE))
        assert (mac, "172.31.0.3") in {(e.lladdr, e.dst) for e in fdb if e.ifindex == vtep}

        removals: list[rtnl.Builder] = [
            lambda seq: rtnl.neigh_message(seq, Mode.DELETE, vtep, "10.244.2.0"),
            lambda seq: rtnl.fdb_message(seq, Mode.DELETE, vtep, mac, "172.31.0.3"),
            lambda seq: rtnl.route_message(seq, Mode.DELETE, "10.244.2.0/24", vtep, proto=75),
            # The wildcard scope finds the route whatever scope it was added with; a
            # different protocol does not match.
            lambda seq: rtnl.route_message(seq, Mode.DELETE, "10.244.3.0/24", underlay, proto=3),
            lambda seq: rtnl.route_message(seq, Mode.DELETE, "10.244.3.0/24", underlay, proto=75),
        ]
        acks = ns.transact(removals)
        assert [a.error for a in acks] == [0, 0, 0, errno.ESRCH, 0]
        routes = map(rtnl.decode_route, ns.dump(rtnl.RTM_GETROUTE, socket.AF_INET))
        assert not [r for r in routes if r.proto == 75]


def test_refusals_come_with_the_kernels_reason(two_namespaces: tuple[str, str]) -> None:
    with Rtnl.open(two_namespaces[0]) as ns:
        (ack,) = ns.transact([lambda seq: rtnl.new_link(seq, "x0", "no-such-kind")])
        assert ack.error == errno.EOPNOTSUPP
        assert ack.text  # e.g. "Unknown device type"
        with pytest.raises(NetlinkError) as info:
            ns.request(lambda seq: rtnl.del_link(seq, 0, "x0"), "delete link x0")
        assert info.value.errno == errno.ENODEV
        assert str(info.value).startswith("[Errno 19] delete link x0: No such device")


def test_big_batches_and_dumps(two_namespaces: tuple[str, str]) -> None:
    """More changes than fit one datagram, and dumps that span several."""
    with Rtnl.open(two_namespaces[0]) as ns:
        _underlay, vtep = _setup_vtep(ns)
        count = 600
        adds = [
            (
                lambda seq, i=i: rtnl.neigh_message(
                    seq, Mode.REPLACE, vtep, f"10.{i // 256}.{i % 256}.1", "02:00:00:00:00:01"
                )
            )
            for i in range(count)
        ]
        assert not [a for a in ns.transact(adds) if a.error]
        neighbours = [
            n
            for n in map(rtnl.decode_neigh, ns.dump(rtnl.RTM_GETNEIGH, socket.AF_INET))
            if n.ifindex == vtep
        ]
        assert len(neighbours) == count
        assert {"lo", "ul0", "flannel.1"} <= {link.name for link in ns.links()}
