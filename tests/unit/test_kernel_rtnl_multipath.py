"""RTA_MULTIPATH (struct rtnexthop) in the rtnetlink codec: against bytes the kernel dumped
for a route made by `ip route add`, and against pyroute2's independent codec."""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
from collections.abc import Iterator

import pytest
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from kubewire.kernel import rtnl
from kubewire.kernel.rtnl import Mode, NextHop

# The kernel's RTM_NEWROUTE dump (payload after nlmsghdr) of
#   ip route add 10.1.0.0/24 proto bgp metric 20 \
#       nexthop via 172.30.0.2 dev eth0 nexthop via 172.30.0.3 dev eth0 weight 3
# with eth0 = ifindex 3 (recorded on Debian 12, kernel 6.x, iproute2 6.1).
DUMPED_ROUTE = bytes.fromhex(
    "02180000feba0001"  # rtmsg: AF_INET /24, main, proto 186, universe, unicast
    "00000000"
    "08000f00fe000000"  # RTA_TABLE 254
    "080001000a010000"  # RTA_DST 10.1.0.0
    "0800060014000000"  # RTA_PRIORITY 20
    "24000900"  # RTA_MULTIPATH, 36 bytes
    "1000000003000000"
    "08000500ac1e0002"  # rtnh len 16, hops 0, ifindex 3; via .2
    "1000000203000000"
    "08000500ac1e0003"  # hops 2 (weight 3); via .3
)
DUMPED_MULTIPATH = DUMPED_ROUTE[36:]  # the RTA_MULTIPATH attribute, header included
HOPS = (NextHop("172.30.0.2", 3), NextHop("172.30.0.3", 3, weight=3))


def _msg(payload: bytes) -> rtnl.NlMsg:
    return rtnl.NlMsg(rtnl.RTM_NEWROUTE, rtnl.NLM_F_MULTI, 1, payload)


def test_kernel_dump_decodes() -> None:
    route = rtnl.decode_route(_msg(DUMPED_ROUTE))
    assert (route.network, route.proto, route.priority, route.table) == (
        ipaddress.ip_network("10.1.0.0/24"),
        rtnl.RTPROT_BGP,
        20,
        rtnl.RT_TABLE_MAIN,
    )
    assert route.multipath and route.gateway is None and route.oif is None
    assert route.nexthops == HOPS


def test_encoding_equals_what_the_kernel_dumped() -> None:
    assert rtnl.multipath_attr(HOPS) == DUMPED_MULTIPATH
    assert rtnl.decode_multipath(DUMPED_MULTIPATH[4:]) == HOPS


def test_request_matches_the_dump_attribute_for_attribute() -> None:
    data = rtnl.multipath_route_message(
        9, Mode.REPLACE, "10.1.0.0/24", HOPS, proto=rtnl.RTPROT_BGP, priority=20
    )
    length, msg_type, flags, seq, _pid = struct.unpack_from("=IHHII", data)
    assert (length, msg_type, seq) == (len(data), rtnl.RTM_NEWROUTE, 9)
    assert flags == rtnl.NLM_F_REQUEST | rtnl.NLM_F_ACK | rtnl.NLM_F_CREATE | rtnl.NLM_F_REPLACE
    body = data[16:]
    assert body[:12] == DUMPED_ROUTE[:12]  # same rtmsg header as the kernel keeps
    assert rtnl.parse_attrs(body, 12) == rtnl.parse_attrs(DUMPED_ROUTE, 12)


def test_request_decodes_in_pyroute2() -> None:
    data = rtnl.multipath_route_message(
        7, Mode.ADD, "10.9.0.0/16", HOPS, proto=rtnl.RTPROT_BGP, priority=20, table=1000
    )
    msg = rtmsg(data)
    msg.decode()
    assert (msg["dst_len"], msg["proto"], msg["scope"], msg["type"], msg["table"]) == (
        16,
        186,
        rtnl.RT_SCOPE_UNIVERSE,
        rtnl.RTN_UNICAST,
        rtnl.RT_TABLE_UNSPEC,
    )
    assert msg.get_attr("RTA_TABLE") == 1000 and msg.get_attr("RTA_PRIORITY") == 20
    assert msg.get_attr("RTA_OIF") is None  # each member carries its own device
    hops = [
        (nh["oif"], nh["hops"], nh.get_attr("RTA_GATEWAY")) for nh in msg.get_attr("RTA_MULTIPATH")
    ]
    assert hops == [(3, 0, "172.30.0.2"), (3, 2, "172.30.0.3")]


def test_pyroute2_encoded_multipath_decodes_here() -> None:
    msg = rtmsg()
    msg["family"], msg["dst_len"], msg["table"], msg["proto"], msg["type"] = 2, 24, 254, 186, 1
    msg["attrs"] = [
        ("RTA_DST", "10.2.0.0"),
        (
            "RTA_MULTIPATH",
            [
                {
                    "oif": 5,
                    "hops": 0,
                    "flags": rtnl.RTNH_F_ONLINK,
                    "attrs": [("RTA_GATEWAY", "192.0.2.1")],
                },
                {"oif": 6, "hops": 255, "attrs": [("RTA_GATEWAY", "192.0.2.2")]},
                {"oif": 7, "hops": 0, "attrs": []},
            ],
        ),
    ]
    msg["header"]["type"] = rtnl.RTM_NEWROUTE
    msg.encode()
    (parsed,) = rtnl.parse_messages(msg.data)
    route = rtnl.decode_route(parsed)
    assert route.nexthops == (
        NextHop("192.0.2.1", 5, 1, rtnl.RTNH_F_ONLINK),
        NextHop("192.0.2.2", 6, 256),
        NextHop(None, 7),
    )


def test_delete_matches_any_next_hops() -> None:
    data = rtnl.multipath_route_message(
        3, Mode.DELETE, "10.1.0.0/24", (), proto=rtnl.RTPROT_BGP, priority=20
    )
    msg = rtmsg(data)
    msg.decode()
    assert msg["header"]["type"] == rtnl.RTM_DELROUTE
    assert (msg["proto"], msg["scope"], msg["type"]) == (186, rtnl.RT_SCOPE_NOWHERE, 0)
    assert msg.get_attr("RTA_MULTIPATH") is None and msg.get_attr("RTA_PRIORITY") == 20


def test_single_path_route_has_no_multipath_members() -> None:
    data = rtnl.route_message(1, Mode.ADD, "10.3.0.0/24", 4, "10.0.0.1", proto=186)
    route = rtnl.decode_route(rtnl.NlMsg(rtnl.RTM_NEWROUTE, 0, 1, data[16:]))
    assert not route.multipath and route.nexthops == () and route.gateway == "10.0.0.1"


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match=r"outside 1\.\.256"):
        rtnl.multipath_attr([NextHop("10.0.0.1", 1, weight=0)])
    with pytest.raises(ValueError, match="at least one next hop"):
        rtnl.multipath_route_message(1, Mode.ADD, "10.0.0.0/8", ())


def test_truncated_multipath_stops_cleanly() -> None:
    assert rtnl.decode_multipath(DUMPED_MULTIPATH[4:20]) == HOPS[:1]
    assert rtnl.decode_multipath(DUMPED_MULTIPATH[4:30]) == HOPS[:1]  # second one cut short
    assert rtnl.decode_multipath(b"\x04\x00\x00\x00\x01\x00\x00\x00") == ()  # rtnh_len < 8


# -- transact_packed: only failures and each datagram's last request are acked -------------


def _error(seq: int, code: int) -> bytes:
    echoed = struct.pack("=IHHII", 16, rtnl.RTM_NEWROUTE, 5, seq, 0)
    return rtnl.message(rtnl.NLMSG_ERROR, rtnl.NLM_F_CAPPED, seq, struct.pack("=i", -code) + echoed)


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


def _requests(n: int) -> list[bytes]:
    return [
        rtnl.multipath_route_message(
            0, Mode.REPLACE, f"10.{i // 256}.{i % 256}.0/24", HOPS, proto=186
        )
        for i in range(n)
    ]


def test_packed_batch_reports_failures_and_trusts_the_final_ack(
    scripted: tuple[rtnl.Rtnl, socket.socket],
) -> None:
    client, kernel = scripted
    # The kernel answers the failure (request 2) and the acked last one (3); 1 succeeded.
    kernel.send(_error(2, errno.ENETUNREACH) + _error(3, 0))
    acks = client.transact_packed(_requests(3))
    assert [(a.seq, a.error) for a in acks] == [(1, 0), (2, errno.ENETUNREACH), (3, 0)]
    sent = list(rtnl.parse_messages(kernel.recv(65536)))  # one datagram
    assert [m.seq for m in sent] == [1, 2, 3]
    assert [bool(m.flags & rtnl.NLM_F_ACK) for m in sent] == [False, False, True]
    assert all(m.flags & rtnl.NLM_F_REPLACE for m in sent)  # other flags kept


def test_packed_batch_whose_last_request_fails(
    scripted: tuple[rtnl.Rtnl, socket.socket],
) -> None:
    client, kernel = scripted
    kernel.send(_error(2, errno.EEXIST))
    acks = client.transact_packed(_requests(2))
    assert [(a.seq, a.error) for a in acks] == [(1, 0), (2, errno.EEXIST)]


def test_packed_batches_are_split_per_datagram(
    scripted: tuple[rtnl.Rtnl, socket.socket],
) -> None:
    client, kernel = scripted
    kernel.send(_error(256, 0))
    kernel.send(_error(300, 0))  # a stale reply for nobody is skipped
    kernel.send(_error(260, 0))
    acks = client.transact_packed(_requests(260))
    assert [a.seq for a in acks] == list(range(1, 261)) and not any(a.error for a in acks)
    first, second = kernel.recv(65536), kernel.recv(65536)
    assert len(list(rtnl.parse_messages(first))) == 256
    assert len(list(rtnl.parse_messages(second))) == 4


def test_packed_request_must_be_whole_messages(
    scripted: tuple[rtnl.Rtnl, socket.socket],
) -> None:
    client, _kernel = scripted
    with pytest.raises(ValueError, match="malformed"):
        client.transact_packed([b"\0" * 10])
