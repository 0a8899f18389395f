"""The rtnetlink codec, checked against pyroute2's independent decoder and encoder, and
the client's exchange logic against a scripted socket (the kernel side is in tests/root)."""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.ndmsg import ndmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from kubewire.kernel import rtnl
from kubewire.kernel.rtnl import Mode

ipv4 = st.integers(min_value=0, max_value=2**32 - 1).map(lambda n: socket.inet_ntoa(n.to_bytes(4)))
ipv6 = st.integers(min_value=0, max_value=2**128 - 1).map(lambda n: str(ipaddress.IPv6Address(n)))
macs = st.binary(min_size=6, max_size=6).map(lambda b: ":".join(f"{x:02x}" for x in b))
CHANGE = rtnl.NLM_F_REQUEST | rtnl.NLM_F_ACK


def pyroute2_decode(cls: type, data: bytes) -> Any:
    msg = cls(data)
    msg.decode()
    return msg


def one(data: bytes) -> rtnl.NlMsg:
    (msg,) = rtnl.parse_messages(data)
    return msg


# -- attributes ------------------------------------------------------------------------------


def test_attributes_are_padded_to_four_bytes() -> None:
    encoded = rtnl.nla(3, b"eth0\0")
    assert struct.unpack_from("=HH", encoded) == (9, 3)
    assert len(encoded) == 12 and encoded.endswith(b"\0\0\0")


def test_parse_round_trip_strips_the_nested_flag() -> None:
    blob = (
        rtnl.nla(1, b"abc") + rtnl.nla_nested(18, [rtnl.nla_str(1, "veth")]) + rtnl.nla_u32(4, 1400)
    )
    parsed = rtnl.parse_attrs(blob)
    assert parsed[1] == b"abc"
    assert rtnl.parse_attrs(parsed[18]) == {1: b"veth\0"}
    assert struct.unpack("=I", parsed[4]) == (1400,)


def test_attribute_parser_stops_at_garbage() -> None:
    good = rtnl.nla_u32(4, 1500)
    assert rtnl.parse_attrs(good + b"\x02\x00") == {4: struct.pack("=I", 1500)}
    assert rtnl.parse_attrs(b"\xff\x00\x01\x00") == {}  # length beyond the buffer


# -- links ------------------------------------------------------------------------------------


def test_vxlan_link_request_decodes_in_pyroute2() -> None:
    vxlan = rtnl.VxlanInfo(vni=1, link=2, local="172.18.0.2", learning=False, port=8472)
    data = rtnl.new_link(1, "flannel.1", "vxlan", mtu=1450, mac="0e:00:00:00:00:0a", vxlan=vxlan)
    msg = pyroute2_decode(ifinfmsg, data)
    assert msg["header"]["flags"] == CHANGE | rtnl.NLM_F_CREATE | rtnl.NLM_F_EXCL
    assert (msg["flags"], msg["change"]) == (0, 0)  # created down
    assert msg.get_attr("IFLA_IFNAME") == "flannel.1"
    assert msg.get_attr("IFLA_MTU") == 1450
    assert msg.get_attr("IFLA_ADDRESS") == "0e:00:00:00:00:0a"
    info = msg.get_attr("IFLA_LINKINFO")
    assert info.get_attr("IFLA_INFO_KIND") == "vxlan"
    data_attrs = dict(info.get_attr("IFLA_INFO_DATA")["attrs"])
    assert data_attrs == {
        "IFLA_VXLAN_ID": 1,
        "IFLA_VXLAN_LINK": 2,
        "IFLA_VXLAN_LOCAL": "172.18.0.2",
        "IFLA_VXLAN_LEARNING": 0,
        "IFLA_VXLAN_PORT": 8472,  # network byte order on the wire
    }
    # ... and our own decoder reads the same message back.
    link = rtnl.decode_link(one(data))
    assert (link.name, link.mtu, link.mac, link.kind, link.vxlan, link.up) == (
        "flannel.1",
        1450,
        "0e:00:00:00:00:0a",
        "vxlan",
        vxlan,
        False,
    )


def test_veth_request_decodes_in_pyroute2() -> None:
    peer = rtnl.VethPeer("eth0", "02:00:00:00:02:09", netns_fd=7, mtu=1450)
    data = rtnl.new_link(
        3, "vh9", "veth", mtu=1450, mac="02:00:00:00:01:09", up=True, master=4, peer=peer
    )
    msg = pyroute2_decode(ifinfmsg, data)
    assert (msg["flags"], msg["change"]) == (rtnl.IFF_UP, rtnl.IFF_UP)
    assert (msg.get_attr("IFLA_IFNAME"), msg.get_attr("IFLA_MASTER")) == ("vh9", 4)
    info = msg.get_attr("IFLA_LINKINFO")
    assert info.get_attr("IFLA_INFO_KIND") == "veth"
    far = info.get_attr("IFLA_INFO_DATA").get_attr("VETH_INFO_PEER")
    assert dict(far["attrs"]) == {
        "IFLA_IFNAME": "eth0",
        "IFLA_ADDRESS": "02:00:00:00:02:09",
        "IFLA_NET_NS_FD": 7,
        "IFLA_MTU": 1450,
    }


def test_bridge_request_has_no_info_data() -> None:
    msg = pyroute2_decode(ifinfmsg, rtnl.new_link(1, "cni0", "bridge", up=True))
    info = msg.get_attr("IFLA_LINKINFO")
    assert dict(info["attrs"]) == {"IFLA_INFO_KIND": "bridge"}
    assert msg.get_attr("IFLA_MTU") is None and msg.get_attr("IFLA_ADDRESS") is None


def test_set_link_changes_only_what_it_is_given() -> None:
    msg = pyroute2_decode(ifinfmsg, rtnl.set_link(1, 5, promisc=True))
    assert (msg["index"], msg["flags"], msg["change"]) == (5, rtnl.IFF_PROMISC, rtnl.IFF_PROMISC)
    assert msg["attrs"] == []
    msg = pyroute2_decode(
        ifinfmsg, rtnl.set_link(2, 5, up=False, mtu=1400, mac="02:00:00:00:00:01", alias="x")
    )
    assert (msg["flags"], msg["change"]) == (0, rtnl.IFF_UP)
    assert dict(msg["attrs"]) == {
        "IFLA_MTU": 1400,
        "IFLA_ADDRESS": "02:00:00:00:00:01",
        "IFLA_IFALIAS": "x",
    }
    assert msg["header"]["flags"] == CHANGE


def test_hairpin_goes_to_the_bridge_port() -> None:
    msg = pyroute2_decode(ifinfmsg, rtnl.set_hairpin(5, 9, True))
    assert (msg["header"]["type"], msg["family"], msg["index"]) == (
        rtnl.RTM_SETLINK,
        socket.AF_BRIDGE,
        9,
    )
    assert msg.get_attr("IFLA_PROTINFO").get_attr("IFLA_BRPORT_MODE") == 1


def test_get_and_delete_link_by_name() -> None:
    get = pyroute2_decode(ifinfmsg, rtnl.get_link(4, "eth0"))
    assert get["header"]["flags"] == rtnl.NLM_F_REQUEST  # one reply, no ack
    assert get.get_attr("IFLA_IFNAME") == "eth0"
    assert get.get_attr("IFLA_EXT_MASK") == rtnl.RTEXT_FILTER_SKIP_STATS
    delete = pyroute2_decode(ifinfmsg, rtnl.del_link(5, name="vh9"))
    assert (delete["header"]["type"], delete["index"]) == (rtnl.RTM_DELLINK, 0)
    assert delete.get_attr("IFLA_IFNAME") == "vh9"


def test_bridge_port_link_decodes() -> None:
    body = struct.pack("=BxHiII", 0, 1, 7, rtnl.IFF_UP, 0) + b"".join(
        [
            rtnl.nla_str(rtnl.IFLA_IFNAME, "veth0123abcd"),
            rtnl.nla_u32(rtnl.IFLA_MTU, 1400),
            rtnl.nla_mac(rtnl.IFLA_ADDRESS, "02:aa:bb:cc:dd:ee"),
            rtnl.nla_u32(rtnl.IFLA_MASTER, 2),
            rtnl.nla_nested(
                rtnl.IFLA_LINKINFO,
                [
                    rtnl.nla_str(rtnl.IFLA_INFO_KIND, "veth"),
                    rtnl.nla_str(rtnl.IFLA_INFO_SLAVE_KIND, "bridge"),
                    rtnl.nla_nested(
                        rtnl.IFLA_INFO_SLAVE_DATA, [rtnl.nla(rtnl.IFLA_BRPORT_MODE, b"\x01")]
                    ),
                ],
            ),
        ]
    )
    link = rtnl.decode_link(one(rtnl.message(rtnl.RTM_NEWLINK, 0, 1, body)))
    assert link == rtnl.LinkInfo(
        index=7,
        name="veth0123abcd",
        flags=rtnl.IFF_UP,
        mtu=1400,
        mac="02:aa:bb:cc:dd:ee",
        kind="veth",
        master=2,
        slave_kind="bridge",
        hairpin=True,
    )
    assert link.up


def test_pyroute2_encoded_link_decodes_here() -> None:
    msg = ifinfmsg()
    msg["index"], msg["flags"] = 3, rtnl.IFF_UP
    msg["attrs"] = [
        ("IFLA_IFNAME", "flannel.1"),
        ("IFLA_MTU", 1450),
        ("IFLA_ADDRESS", "0e:00:00:00:00:0a"),
        ("IFLA_IFALIAS", "kubewire-routing"),
    ]
    msg["header"]["type"] = rtnl.RTM_NEWLINK
    msg.encode()
    link = rtnl.decode_link(one(msg.data))
    assert (link.index, link.name, link.mtu, link.mac, link.alias, link.up) == (
        3,
        "flannel.1",
        1450,
        "0e:00:00:00:00:0a",
        "kubewire-routing",
        True,
    )
    assert (link.kind, link.master, link.hairpin, link.vxlan) == (None, None, None, None)


# -- addresses --------------------------------------------------------------------------------


def test_address_requests_decode_in_pyroute2() -> None:
    iface = ipaddress.ip_interface("10.99.0.2/24")
    add = pyroute2_decode(
        ifaddrmsg, rtnl.addr_message(2, Mode.ADD, 4, iface, broadcast="10.99.0.255")
    )
    assert add["header"]["flags"] == CHANGE | rtnl.NLM_F_CREATE | rtnl.NLM_F_EXCL
    assert (add["family"], add["prefixlen"], add["index"]) == (socket.AF_INET, 24, 4)
    assert dict(add["attrs"]) == {
        "IFA_LOCAL": "10.99.0.2",
        "IFA_ADDRESS": "10.99.0.2",
        "IFA_BROADCAST": "10.99.0.255",
    }
    # The routing applier's form: a CIDR string, replace semantics.
    replace = pyroute2_decode(ifaddrmsg, rtnl.addr_message(3, Mode.REPLACE, 4, "10.244.1.0/32"))
    assert replace["header"]["flags"] == CHANGE | rtnl.NLM_F_CREATE | rtnl.NLM_F_REPLACE
    assert (replace["prefixlen"], replace.get_attr("IFA_LOCAL")) == (32, "10.244.1.0")
    v6 = pyroute2_decode(
        ifaddrmsg, rtnl.addr_message(4, Mode.DELETE, 4, "fd00::2/64", broadcast="fd00::ff")
    )
    assert (v6["header"]["type"], v6["family"], v6["prefixlen"]) == (
        rtnl.RTM_DELADDR,
        socket.AF_INET6,
        64,
    )
    assert v6.get_attr("IFA_LOCAL") == "fd00::2" and v6.get_attr("IFA_BROADCAST") is None


def test_pyroute2_encoded_address_decodes_here() -> None:
    msg = ifaddrmsg()
    msg["family"], msg["prefixlen"], msg["index"], msg["scope"] = socket.AF_INET6, 64, 2, 253
    msg["attrs"] = [("IFA_ADDRESS", "fe80::1")]
    msg["header"]["type"] = rtnl.RTM_NEWADDR
    msg.encode()
    addr = rtnl.decode_addr(one(msg.data))
    assert (addr.index, addr.address, addr.scope) == (2, "fe80::1", 253)
    assert addr.interface == ipaddress.ip_interface("fe80::1/64")


# -- routes -----------------------------------------------------------------------------------


def test_route_request_decodes_in_pyroute2() -> None:
    data = rtnl.route_message(
        7, Mode.REPLACE, "10.244.2.0/24", 3, "10.244.2.0", onlink=True, proto=75
    )
    msg = pyroute2_decode(rtmsg, data)
    assert msg["header"]["type"] == rtnl.RTM_NEWROUTE
    assert msg["header"]["sequence_number"] == 7
    assert msg["header"]["flags"] == CHANGE | rtnl.NLM_F_CREATE | rtnl.NLM_F_REPLACE
    assert (msg["family"], msg["dst_len"], msg["proto"], msg["flags"]) == (2, 24, 75, 4)
    assert (msg["scope"], msg["type"]) == (rtnl.RT_SCOPE_UNIVERSE, rtnl.RTN_UNICAST)
    assert msg.get_attr("RTA_DST") == "10.244.2.0"
    assert msg.get_attr("RTA_GATEWAY") == "10.244.2.0"
    assert msg.get_attr("RTA_OIF") == 3
    assert msg.get_attr("RTA_TABLE") == 254


def test_route_delete_uses_kernel_wildcards() -> None:
    data = rtnl.route_message(1, Mode.DELETE, "10.244.9.0/24", 2, None, proto=75)
    msg = pyroute2_decode(rtmsg, data)
    assert msg["header"]["type"] == rtnl.RTM_DELROUTE
    assert msg["header"]["flags"] == CHANGE
    assert (msg["scope"], msg["type"], msg["proto"]) == (
        rtnl.RT_SCOPE_NOWHERE,
        rtnl.RTN_UNSPEC,
        75,
    )
    assert msg.get_attr("RTA_GATEWAY") is None


def test_plugin_route_with_metrics_decodes_in_pyroute2() -> None:
    data = rtnl.route_message(
        2,
        Mode.ADD,
        ipaddress.ip_network("fd00::/64"),
        3,
        ipaddress.ip_address("fd00::1"),
        priority=5,
        mtu=1400,
        advmss=1360,
        table=1000,
    )
    msg = pyroute2_decode(rtmsg, data)
    assert msg["header"]["flags"] == CHANGE | rtnl.NLM_F_CREATE | rtnl.NLM_F_EXCL
    assert (msg["family"], msg["dst_len"], msg["proto"], msg["table"]) == (
        socket.AF_INET6,
        64,
        rtnl.RTPROT_BOOT,
        rtnl.RT_TABLE_UNSPEC,  # a table id above 255 only fits RTA_TABLE
    )
    assert msg.get_attr("RTA_TABLE") == 1000
    assert (msg.get_attr("RTA_DST"), msg.get_attr("RTA_GATEWAY")) == ("fd00::", "fd00::1")
    assert msg.get_attr("RTA_PRIORITY") == 5
    metrics = msg.get_attr("RTA_METRICS")
    assert (metrics.get_attr("RTAX_MTU"), metrics.get_attr("RTAX_ADVMSS")) == (1400, 1360)


def test_default_route_without_gateway_is_scope_link_and_has_no_dst() -> None:
    msg = pyroute2_decode(rtmsg, rtnl.route_message(1, Mode.ADD, "0.0.0.0/0", 2))
    assert (msg["dst_len"], msg["scope"]) == (0, rtnl.RT_SCOPE_LINK)
    assert msg.get_attr("RTA_DST") is None
    route = rtnl.decode_route(one(rtnl.route_message(1, Mode.ADD, "::/0", 2)))
    assert route.network == ipaddress.ip_network("::/0")


def test_pyroute2_encoded_route_decodes_here() -> None:
    msg = rtmsg()
    msg["family"], msg["dst_len"], msg["table"] = 2, 24, 254
    msg["proto"], msg["type"], msg["flags"] = 75, 1, 4
    msg["attrs"] = [
        ("RTA_DST", "10.244.3.0"),
        ("RTA_GATEWAY", "10.244.3.0"),
        ("RTA_OIF", 5),
        ("RTA_PRIORITY", 20),
    ]
    msg["header"]["type"] = rtnl.RTM_NEWROUTE
    msg.encode()
    route = rtnl.decode_route(one(msg.data))
    assert (route.dst, route.dst_len, route.gateway, route.oif) == (
        "10.244.3.0",
        24,
        "10.244.3.0",
        5,
    )
    assert (route.proto, route.table, route.flags, route.priority) == (75, 254, 4, 20)
    assert (route.network, route.gateway_ip) == (
        ipaddress.ip_network("10.244.3.0/24"),
        ipaddress.ip_address("10.244.3.0"),
    )


@given(
    dst=ipv4,
    prefixlen=st.integers(min_value=0, max_value=32),
    gateway=st.none() | ipv4,
    oif=st.integers(min_value=1, max_value=2**31 - 1),
    onlink=st.booleans(),
    seq=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_route_round_trip(
    dst: str, prefixlen: int, gateway: str | None, oif: int, onlink: bool, seq: int
) -> None:
    network = ipaddress.IPv4Network(f"{dst}/{prefixlen}", strict=False)
    data = rtnl.route_message(
        seq, Mode.REPLACE, str(network), oif, gateway, onlink=onlink, proto=75
    )
    parsed = one(data)
    assert parsed.seq == seq
    route = rtnl.decode_route(parsed)
    assert (route.dst, route.dst_len) == (str(network.network_address), prefixlen)
    assert (route.gateway, route.oif, bool(route.flags & rtnl.RTNH_F_ONLINK)) == (
        gateway,
        oif,
        onlink,
    )


@given(dst=ipv6, prefixlen=st.integers(min_value=0, max_value=128), gateway=st.none() | ipv6)
def test_ipv6_route_round_trip(dst: str, prefixlen: int, gateway: str | None) -> None:
    network = ipaddress.IPv6Network(f"{dst}/{prefixlen}", strict=False)
    route = rtnl.decode_route(one(rtnl.route_message(1, Mode.ADD, network, 2, gateway)))
    assert (route.network, route.gateway_ip) == (
        network,
        None if gateway is None else ipaddress.ip_address(gateway),
    )


# -- neighbours and FDB -----------------------------------------------------------------------


def test_fdb_and_neighbour_requests_decode_in_pyroute2() -> None:
    fdb = pyroute2_decode(
        ndmsg, rtnl.fdb_message(1, Mode.APPEND, 3, "0e:00:00:00:00:0b", "172.18.0.3")
    )
    assert fdb["header"]["flags"] == CHANGE | rtnl.NLM_F_CREATE | rtnl.NLM_F_APPEND
    assert (fdb["family"], fdb["ifindex"], fdb["state"], fdb["flags"]) == (
        socket.AF_BRIDGE,
        3,
        rtnl.NUD_PERMANENT | rtnl.NUD_NOARP,
        rtnl.NTF_SELF,
    )
    assert fdb.get_attr("NDA_LLADDR") == "0e:00:00:00:00:0b"
    assert fdb.get_attr("NDA_DST") == "172.18.0.3"
    neigh = pyroute2_decode(
        ndmsg, rtnl.neigh_message(2, Mode.REPLACE, 3, "10.244.2.0", "0e:00:00:00:00:0b")
    )
    assert (neigh["family"], neigh["state"]) == (socket.AF_INET, rtnl.NUD_PERMANENT)
    assert neigh.get_attr("NDA_DST") == "10.244.2.0"
    assert neigh.get_attr("NDA_LLADDR") == "0e:00:00:00:00:0b"
    gone = pyroute2_decode(
        ndmsg, rtnl.neigh_message(3, Mode.DELETE, 3, "10.244.2.0", "0e:00:00:00:00:0b")
    )
    assert gone["header"]["type"] == rtnl.RTM_DELNEIGH
    assert gone.get_attr("NDA_LLADDR") is None  # a neighbour is found by its IP alone


@given(ifindex=st.integers(min_value=1, max_value=2**31 - 1), mac=macs, ip=ipv4 | ipv6)
def test_neighbour_and_fdb_round_trip(ifindex: int, mac: str, ip: str) -> None:
    for data in (
        rtnl.neigh_message(1, Mode.REPLACE, ifindex, ip, mac),
        rtnl.fdb_message(1, Mode.APPEND, ifindex, mac, ip),
    ):
        neigh = rtnl.decode_neigh(one(data))
        assert (neigh.ifindex, neigh.dst, neigh.lladdr) == (ifindex, ip, mac)


# -- framing and acks -------------------------------------------------------------------------


def test_several_messages_in_one_datagram() -> None:
    data = b"".join(rtnl.neigh_message(seq, Mode.DELETE, 2, f"10.0.0.{seq}") for seq in range(1, 4))
    assert [m.seq for m in rtnl.parse_messages(data)] == [1, 2, 3]


def test_truncated_message_is_rejected() -> None:
    data = rtnl.route_message(1, Mode.REPLACE, "10.0.0.0/8", 1, proto=75)
    with pytest.raises(ValueError, match="truncated"):
        list(rtnl.parse_messages(data[:-3]))


def test_dump_requests_decode_in_pyroute2() -> None:
    link = pyroute2_decode(ifinfmsg, rtnl.dump_request(1, rtnl.RTM_GETLINK))
    assert link["header"]["flags"] == rtnl.NLM_F_REQUEST | rtnl.NLM_F_DUMP
    assert link.get_attr("IFLA_EXT_MASK") == rtnl.RTEXT_FILTER_SKIP_STATS
    fdb = pyroute2_decode(ndmsg, rtnl.dump_request(2, rtnl.RTM_GETNEIGH, socket.AF_BRIDGE))
    assert (fdb["family"], fdb["attrs"]) == (socket.AF_BRIDGE, [])


def _error(seq: int, code: int, flags: int = rtnl.NLM_F_CAPPED, tail: bytes = b"") -> bytes:
    echoed = struct.pack("=IHHII", 16, rtnl.RTM_NEWROUTE, 5, seq, 0)
    return rtnl.message(rtnl.NLMSG_ERROR, flags, seq, struct.pack("=i", -code) + echoed + tail)


def test_error_ack_with_extended_message() -> None:
    tlv = rtnl.nla_str(rtnl.NLMSGERR_ATTR_MSG, "Unknown device type")
    msg = one(_error(9, 95, rtnl.NLM_F_CAPPED | rtnl.NLM_F_ACK_TLVS, tlv))
    ack = rtnl.parse_ack(msg)
    assert ack == rtnl.Ack(seq=9, error=95, text="Unknown device type")
    assert ack.describe() == "Operation not supported (kernel: Unknown device type)"


def test_success_ack() -> None:
    assert rtnl.parse_ack(one(_error(3, 0))) == rtnl.Ack(seq=3, error=0)


def test_done_carries_a_dump_error_and_its_text_right_after_it() -> None:
    tlv = rtnl.nla_str(rtnl.NLMSGERR_ATTR_MSG, "filter too big")
    data = rtnl.message(
        rtnl.NLMSG_DONE,
        rtnl.NLM_F_MULTI | rtnl.NLM_F_ACK_TLVS,
        4,
        struct.pack("=i", -errno.EMSGSIZE) + tlv,
    )
    assert rtnl.parse_ack(one(data)) == rtnl.Ack(4, errno.EMSGSIZE, "filter too big")


def test_netlink_error_carries_errno() -> None:
    err = rtnl.NetlinkError(errno.EEXIST, "add address 10.0.0.1/24")
    assert err.errno == errno.EEXIST
    assert str(err).endswith("add address 10.0.0.1/24: File exists")
    assert isinstance(err, OSError)


# -- the client, against a scripted kernel -------------------------------------------------------


@pytest.fixture
def scripted() -> Iterator[tuple[rtnl.Rtnl, socket.socket]]:
    """An Rtnl whose 'kernel' is the other end of a datagram socket pair."""
    ours, kernel = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    kernel.settimeout(1)
    ours.settimeout(1)
    client = rtnl.Rtnl(ours)
    try:
        yield client, kernel
    finally:
        client.close()
        kernel.close()


def _link_reply(seq: int, name: str, flags: int = 0, msg_type: int = rtnl.RTM_NEWLINK) -> bytes:
    body = struct.pack("=BxHiII", 0, 1, 3, 0, 0) + rtnl.nla_str(rtnl.IFLA_IFNAME, name)
    return rtnl.message(msg_type, flags, seq, body)


def _done(seq: int, flags: int = rtnl.NLM_F_MULTI) -> bytes:
    return rtnl.message(rtnl.NLMSG_DONE, flags, seq, struct.pack("=i", 0))


def test_request_skips_late_replies_and_returns_the_single_answer(
    scripted: tuple[rtnl.Rtnl, socket.socket],
) -> None:
    client, kernel = scripted
    kernel.send(_error(99, errno.ENOENT))  # left over from an abandoned earlier request
    kernel.send(_link_reply(1, "eth0"))
    link = client.link("eth0")
    assert link is not None and link.name == "eth0"
    (sent,) = rtnl.parse_messages(kernel.recv(4096))
    assert (sent.type, sent.seq) == (rtnl.RTM_GETLINK, 1)


def test_missing_link_is_none_and_other_errors_raise(
    scripted: tuple[rtnl.Rtnl, socket.socket],
) -> None:
    client, kernel = scripted
    kernel.send(_error(1, errno.ENODEV))
    assert client.link("nothing") is None
    kernel.send(_error(2, errno.EEXIST))
    with pytest.raises(rtnl.NetlinkError, match="create bridge br0: File exists") as info:
        client.add_bridge("br0", "02:00:00:00:00:01")
    assert info.value.errno == errno.EEXIST


def test_dump_is_read_again_when_the_kernel_flags_it_inconsistent(
    scripted: tuple[rtnl.Rtnl, socket.socket],
) -> None:
    client, kernel = scripted
    intr = rtnl.NLM_F_MULTI | rtnl.NLM_F_DUMP_INTR
    # First attempt: one datagram with a link and DONE, both flagged interrupted.
    kernel.send(_link_reply(1, "stale", intr) + _done(1, intr))
    # Second attempt: clean, spread over two datagrams.
    kernel.send(_link_reply(2, "lo", rtnl.NLM_F_MULTI) + _link_reply(2, "eth0", rtnl.NLM_F_MULTI))
    kernel.send(_done(2))
    assert [link.name for link in client.links()] == ["lo", "eth0"]


def test_dump_that_never_settles_raises(scripted: tuple[rtnl.Rtnl, socket.socket]) -> None:
    client, kernel = scripted
    intr = rtnl.NLM_F_MULTI | rtnl.NLM_F_DUMP_INTR
    for seq in range(1, 6):
        kernel.send(_link_reply(seq, "lo", intr) + _done(seq, intr))
    with pytest.raises(rtnl.DumpInterruptedError, match="list links"):
        client.dump(rtnl.RTM_GETLINK)


def test_transact_returns_acks_in_request_order(
    scripted: tuple[rtnl.Rtnl, socket.socket],
) -> None:
    client, kernel = scripted
    kernel.send(_error(2, errno.EEXIST))  # acks arrive out of order
    kernel.send(_error(1, 0))
    kernel.send(_error(3, 0))
    builders = [
        lambda seq, i=i: rtnl.neigh_message(seq, Mode.DELETE, 2, f"10.0.0.{i}") for i in range(3)
    ]
    acks = client.transact(builders)
    assert [(a.seq, a.error) for a in acks] == [(1, 0), (2, errno.EEXIST), (3, 0)]
    assert [m.seq for m in rtnl.parse_messages(kernel.recv(4096))] == [1, 2, 3]  # one datagram
