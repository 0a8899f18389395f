"""The rtnetlink codec used by the plugins (pure parts; the kernel side is in tests/root)."""

from __future__ import annotations

import errno
import struct

from kubewire.cni.plugins import rtnl
from kubewire.cni.plugins.rtnl import NetlinkError, attr, nested, parse_attrs


def test_attributes_are_padded_to_four_bytes() -> None:
    encoded = attr(3, b"eth0\0")
    assert struct.unpack_from("=HH", encoded) == (9, 3)
    assert len(encoded) == 12 and encoded.endswith(b"\0\0\0")


def test_parse_round_trip_strips_the_nested_flag() -> None:
    blob = attr(1, b"abc") + nested(18, attr(1, b"veth\0")) + attr(4, struct.pack("=I", 1400))
    parsed = parse_attrs(blob)
    assert parsed[1] == b"abc"
    assert parse_attrs(parsed[18]) == {1: b"veth\0"}
    assert struct.unpack("=I", parsed[4]) == (1400,)


def test_parse_stops_at_a_truncated_attribute() -> None:
    assert parse_attrs(attr(1, b"x") + b"\x02\x00") == {1: b"x"}


def test_link_message_parsing() -> None:
    header = struct.pack("=BxHiII", 0, 1, 7, rtnl.IFF_UP, 0)
    body = header + b"".join(
        [
            attr(rtnl.IFLA_IFNAME, b"veth0123abcd\0"),
            attr(rtnl.IFLA_MTU, struct.pack("=I", 1400)),
            attr(rtnl.IFLA_ADDRESS, bytes.fromhex("02aabbccddee")),
            attr(rtnl.IFLA_MASTER, struct.pack("=I", 2)),
            nested(
                rtnl.IFLA_LINKINFO,
                attr(rtnl.IFLA_INFO_KIND, b"veth\0"),
                attr(rtnl.IFLA_INFO_SLAVE_KIND, b"bridge\0"),
                nested(rtnl.IFLA_INFO_SLAVE_DATA, attr(rtnl.IFLA_BRPORT_MODE, b"\x01")),
            ),
        ]
    )
    link = rtnl._parse_link(body)
    assert link == rtnl.Link(
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


def test_netlink_error_carries_errno() -> None:
    err = NetlinkError(errno.EEXIST, "add address 10.0.0.1/24")
    assert err.errno == errno.EEXIST
    assert str(err).endswith("add address 10.0.0.1/24: File exists")
