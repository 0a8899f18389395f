"""The rtnetlink codec, checked against pyroute2's independent implementation."""

from __future__ import annotations

import ipaddress
import socket
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.ndmsg import ndmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from kubewire.routing import rtnl

ipv4 = st.integers(min_value=0, max_value=2**32 - 1).map(lambda n: socket.inet_ntoa(n.to_bytes(4)))
macs = st.binary(min_size=6, max_size=6).map(lambda b: ":".join(f"{x:02x}" for x in b))


def pyroute2_decode(cls: type, data: bytes) -> Any:
    msg = cls(data)
    msg.decode()
    return msg


def test_route_request_decodes_in_pyroute2() -> None:
    data = rtnl.route_message(
        True, 7, dst="10.244.2.0/24", oif=3, gateway="10.244.2.0", onlink=True, proto=75
    )
    msg = pyroute2_decode(rtmsg, data)
    assert msg["header"]["type"] == rtnl.RTM_NEWROUTE
    assert msg["header"]["sequence_number"] == 7
    flags = rtnl.NLM_F_REQUEST | rtnl.NLM_F_ACK | rtnl.NLM_F_CREATE | rtnl.NLM_F_REPLACE
    assert msg["header"]["flags"] == flags
    assert (msg["family"], msg["dst_len"], msg["proto"], msg["flags"]) == (2, 24, 75, 4)
    assert (msg["scope"], msg["type"]) == (rtnl.RT_SCOPE_UNIVERSE, rtnl.RTN_UNICAST)
    assert msg.get_attr("RTA_DST") == "10.244.2.0"
    assert msg.get_attr("RTA_GATEWAY") == "10.244.2.0"
    assert msg.get_attr("RTA_OIF") == 3
    assert msg.get_attr("RTA_TABLE") == 254


def test_route_delete_uses_kernel_wildcards() -> None:
    data = rtnl.route_message(
        False, 1, dst="10.244.9.0/24", oif=2, gateway=None, onlink=False, proto=75
    )
    msg = pyroute2_decode(rtmsg, data)
    assert msg["header"]["type"] == rtnl.RTM_DELROUTE
    assert (msg["scope"], msg["type"]) == (rtnl.RT_SCOPE_NOWHERE, rtnl.RTN_UNSPEC)
    assert msg.get_attr("RTA_GATEWAY") is None


def test_vxlan_link_request_decodes_in_pyroute2() -> None:
    vxlan = rtnl.VxlanInfo(vni=1, link=2, local="172.18.0.2", learning=False, port=8472)
    data = rtnl.new_link(1, "flannel.1", "vxlan", 1450, "0e:00:00:00:00:0a", vxlan)
    msg = pyroute2_decode(ifinfmsg, data)
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
    (parsed,) = rtnl.parse_messages(data)
    link = rtnl.decode_link(parsed)
    assert (link.name, link.mtu, link.mac, link.kind, link.vxlan) == (
        "flannel.1",
        1450,
        "0e:00:00:00:00:0a",
        "vxlan",
        vxlan,
    )


def test_fdb_and_neighbour_requests_decode_in_pyroute2() -> None:
    fdb = pyroute2_decode(
        ndmsg, rtnl.fdb_message(True, 1, ifindex=3, mac="0e:00:00:00:00:0b", dst="172.18.0.3")
    )
    assert (fdb["family"], fdb["ifindex"], fdb["state"], fdb["flags"]) == (
        socket.AF_BRIDGE,
        3,
        rtnl.NUD_PERMANENT | rtnl.NUD_NOARP,
        rtnl.NTF_SELF,
    )
    assert fdb.get_attr("NDA_LLADDR") == "0e:00:00:00:00:0b"
    assert fdb.get_attr("NDA_DST") == "172.18.0.3"
    neigh = pyroute2_decode(
        ndmsg, rtnl.neigh_message(True, 2, ifindex=3, ip="10.244.2.0", mac="0e:00:00:00:00:0b")
    )
    assert (neigh["family"], neigh["state"]) == (socket.AF_INET, rtnl.NUD_PERMANENT)
    assert neigh.get_attr("NDA_DST") == "10.244.2.0"


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
    (parsed,) = rtnl.parse_messages(msg.data)
    route = rtnl.decode_route(parsed)
    assert (route.dst, route.dst_len, route.gateway, route.oif) == (
        "10.244.3.0",
        24,
        "10.244.3.0",
        5,
    )
    assert (route.proto, route.table, route.flags, route.priority) == (75, 254, 4, 20)


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
        True, seq, dst=str(network), oif=oif, gateway=gateway, onlink=onlink, proto=75
    )
    (parsed,) = rtnl.parse_messages(data)
    assert parsed.seq == seq
    route = rtnl.decode_route(parsed)
    assert (route.dst, route.dst_len) == (str(network.network_address), prefixlen)
    assert (route.gateway, route.oif, bool(route.flags & rtnl.RTNH_F_ONLINK)) == (
        gateway,
        oif,
        onlink,
    )


@given(ifindex=st.integers(min_value=1, max_value=2**31 - 1), mac=macs, ip=ipv4)
def test_neighbour_and_fdb_round_trip(ifindex: int, mac: str, ip: str) -> None:
    for data in (
        rtnl.neigh_message(True, 1, ifindex=ifindex, ip=ip, mac=mac),
        rtnl.fdb_message(True, 1, ifindex=ifindex, mac=mac, dst=ip),
    ):
        (parsed,) = rtnl.parse_messages(data)
        neigh = rtnl.decode_neigh(parsed)
        assert (neigh.ifindex, neigh.dst, neigh.lladdr) == (ifindex, ip, mac)


def test_several_messages_in_one_datagram() -> None:
    data = b"".join(
        rtnl.neigh_message(False, seq, ifindex=2, ip=f"10.0.0.{seq}", mac="02:00:00:00:00:01")
        for seq in range(1, 4)
    )
    assert [m.seq for m in rtnl.parse_messages(data)] == [1, 2, 3]


def test_truncated_message_is_rejected() -> None:
    data = rtnl.route_message(
        True, 1, dst="10.0.0.0/8", oif=1, gateway=None, onlink=False, proto=75
    )
    with pytest.raises(ValueError, match="truncated"):
        list(rtnl.parse_messages(data[:-3]))


def test_attribute_parser_stops_at_garbage() -> None:
    good = rtnl.nla_u32(4, 1500)
    assert rtnl.parse_attrs(good + b"\x02\x00") == {4: struct.pack("=I", 1500)}
    assert rtnl.parse_attrs(b"\xff\x00\x01\x00") == {}  # length beyond the buffer


def test_error_ack_with_extended_message() -> None:
    request_header = struct.pack("=IHHII", 40, rtnl.RTM_NEWLINK, 0x605, 9, 0)
    tlv = rtnl.nla_str(rtnl.NLMSGERR_ATTR_MSG, "Unknown device type")
    payload = struct.pack("=i", -95) + request_header + tlv
    flags = rtnl.NLM_F_CAPPED | rtnl.NLM_F_ACK_TLVS
    data = rtnl.message(rtnl.NLMSG_ERROR, flags, 9, payload)
    (msg,) = rtnl.parse_messages(data)
    assert rtnl.parse_ack(msg) == rtnl.Ack(seq=9, error=95, text="Unknown device type")


def test_success_ack() -> None:
    payload = struct.pack("=i", 0) + struct.pack("=IHHII", 16, rtnl.RTM_NEWROUTE, 5, 3, 0)
    (msg,) = rtnl.parse_messages(rtnl.message(rtnl.NLMSG_ERROR, rtnl.NLM_F_CAPPED, 3, payload))
    assert rtnl.parse_ack(msg) == rtnl.Ack(seq=3, error=0)
