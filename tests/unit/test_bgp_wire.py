"""bgp codec: hand-computed byte strings, round trips of every message and attribute, the
framer under any chunking, and header/OPEN errors mapped to their NOTIFICATION codes."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any

import pytest

from kubewire.bgp.attributes import (
    Aggregator,
    As4Aggregator,
    As4Path,
    AsPath,
    AsSegment,
    AtomicAggregate,
    Attribute,
    ClusterList,
    Communities,
    ExtendedCommunities,
    LargeCommunities,
    LargeCommunity,
    LocalPref,
    MpReachNlri,
    MpUnreachNlri,
    MultiExitDisc,
    NextHop,
    OriginatorId,
    OriginAttr,
    UnknownAttribute,
    WireContext,
    community,
)
from kubewire.bgp.constants import (
    AS_TRANS,
    Afi,
    AttrFlag,
    CapabilityCode,
    CeaseSubcode,
    ErrorCode,
    HeaderSubcode,
    OpenSubcode,
    Origin,
    RouteRefreshSubcode,
    Safi,
    SegmentType,
    WellKnownCommunity,
)
from kubewire.bgp.errors import BgpError, EncodeError, MessageError
from kubewire.bgp.messages import (
    FourOctetAs,
    Framer,
    GracefulRestart,
    GracefulRestartFamily,
    Keepalive,
    Message,
    Multiprotocol,
    Notification,
    Open,
    RouteRefresh,
    RouteRefreshCapability,
    UnknownCapability,
)
from kubewire.bgp.update import Update

M = b"\xff" * 16
A1 = IPv4Address("10.0.0.1")
AS2 = WireContext(as4=False)


# --- known-good bytes, computed by hand from the RFC layouts -------------------------------

KEEPALIVE = M + bytes.fromhex("0013 04")
OPEN = M + bytes.fromhex(
    "002d 01"  # length 45, OPEN
    "04 fde9 005a 0a000001"  # version 4, AS 65001, hold 90, id 10.0.0.1
    "10 02 0e"  # opt params 16 octets: one capabilities parameter of 14
    "01 04 0001 00 01"  # multiprotocol IPv4 unicast
    "02 00"  # route refresh
    "41 04 0000fde9"  # 4-octet AS 65001
)
UPDATE = M + bytes.fromhex(
    "002e 02"  # length 46, UPDATE
    "0000"  # no withdrawn routes
    "0014"  # 20 octets of attributes
    "40 01 01 00"  # ORIGIN IGP
    "40 02 06 02 01 0000fde9"  # AS_PATH: AS_SEQUENCE [65001], 4-octet
    "40 03 04 0a000001"  # NEXT_HOP 10.0.0.1
    "10 0a01"  # 10.1.0.0/16
)
NOTIFICATION = M + bytes.fromhex("0015 03 06 02")  # Cease / Administrative Shutdown
ROUTE_REFRESH = M + bytes.fromhex("0017 05 0001 00 01")


def test_keepalive_bytes() -> None:
    assert Keepalive().to_wire() == KEEPALIVE
    assert Keepalive.from_wire(KEEPALIVE) == Keepalive()


def test_open_bytes() -> None:
    o = Open(65001, 90, A1, (Multiprotocol(Afi.IPV4, Safi.UNICAST), RouteRefreshCapability(),
                              FourOctetAs(65001)))
    assert o.to_wire() == OPEN
    assert Open.from_wire(OPEN) == o
    assert o.asn == 65001 and o.four_octet


def test_update_bytes() -> None:
    u = Update(
        attributes=(OriginAttr(Origin.IGP), AsPath.sequence(65001), NextHop(A1)),
        nlri=(IPv4Network("10.1.0.0/16"),),
    )
    assert u.to_wire() == UPDATE
    assert Update.from_wire(UPDATE) == u


def test_notification_bytes() -> None:
    n = Notification(ErrorCode.CEASE, CeaseSubcode.ADMINISTRATIVE_SHUTDOWN)
    assert n.to_wire() == NOTIFICATION
    got = Notification.from_wire(NOTIFICATION)
    assert got == n
    assert got.code is ErrorCode.CEASE and got.subcode is CeaseSubcode.ADMINISTRATIVE_SHUTDOWN
    assert got.describe() == "CEASE/ADMINISTRATIVE_SHUTDOWN"


def test_route_refresh_bytes() -> None:
    assert RouteRefresh().to_wire() == ROUTE_REFRESH
    assert RouteRefresh.from_wire(ROUTE_REFRESH) == RouteRefresh(Afi.IPV4, Safi.UNICAST)


def test_as_path_two_octet_bytes_with_as_trans() -> None:
    # a 4-octet AS on a 2-octet session is written as AS_TRANS (RFC 6793 4.2.2)
    p = AsPath.sequence(65001, 4200000000)
    assert p.value_to_wire(AS2) == bytes.fromhex("02 02 fde9 5ba0")
    assert AS_TRANS == 0x5BA0


def test_big_as_open_uses_as_trans_in_my_as() -> None:
    o = Open.build(4200000000, 90, A1)
    assert o.my_as == AS_TRANS and o.asn == 4200000000
    wire = o.to_wire()
    assert wire[20:22] == AS_TRANS.to_bytes(2, "big")
    assert Open.from_wire(wire).asn == 4200000000


# --- round trips ----------------------------------------------------------------------------

V6 = IPv6Address("2001:db8::1")
LL = IPv6Address("fe80::1")
ATTRS: list[Attribute] = [
    OriginAttr(Origin.INCOMPLETE),
    AsPath((AsSegment(SegmentType.AS_SEQUENCE, (65001, 4200000000)),
            AsSegment(SegmentType.AS_SET, (1, 2, 3)))),
    AsPath((AsSegment(SegmentType.AS_CONFED_SEQUENCE, (64512,)),
            AsSegment(SegmentType.AS_CONFED_SET, (64513, 64514)),
            AsSegment(SegmentType.AS_SEQUENCE, (65001,)))),
    AsPath(),
    NextHop(A1),
    MultiExitDisc(0xFFFFFFFF),
    LocalPref(100),
    AtomicAggregate(),
    Aggregator(65001, A1),
    As4Aggregator(4200000000, A1),
    As4Path((AsSegment(SegmentType.AS_SEQUENCE, (4200000000,)),)),
    Communities((community(65001, 1), WellKnownCommunity.NO_EXPORT,
                 WellKnownCommunity.NO_ADVERTISE)),
    ExtendedCommunities((0x0002FDE900000064,)),
    LargeCommunities((LargeCommunity(4200000000, 1, 2), LargeCommunity(65001, 0, 0xFFFFFFFF))),
    OriginatorId(A1),
    ClusterList((A1, IPv4Address("10.0.0.2"))),
    MpReachNlri(Afi.IPV6, Safi.UNICAST, (V6,), (IPv6Network("2001:db8:1::/48"),)),
    MpReachNlri(Afi.IPV6, Safi.UNICAST, (V6, LL),
                (IPv6Network("::/0"), IPv6Network("2001:db8::1/128"))),
    MpReachNlri(Afi.IPV4, Safi.UNICAST, (A1,), (IPv4Network("192.0.2.0/24"),)),
    MpReachNlri(Afi.IPV4, Safi.UNICAST, (V6,), (IPv4Network("192.0.2.0/24"),)),  # RFC 8950
    MpUnreachNlri(Afi.IPV6, Safi.UNICAST, (IPv6Network("2001:db8:1::/48"),)),
    MpUnreachNlri(Afi.IPV4, Safi.UNICAST, ()),
    UnknownAttribute(99, AttrFlag.OPTIONAL | AttrFlag.TRANSITIVE, b"hello"),
    UnknownAttribute(100, AttrFlag.OPTIONAL, b"x" * 300),  # extended length
]


@pytest.mark.parametrize("attr", ATTRS, ids=lambda a: type(a).__name__)
def test_every_attribute_round_trips(attr: Attribute) -> None:
    base = (OriginAttr(Origin.IGP), AsPath.sequence(1))
    u = Update(attributes=(attr,) if isinstance(attr, (OriginAttr, AsPath)) else (*base, attr))
    wire = u.to_wire()
    assert Update.from_wire(wire) == u
    assert Update.from_wire(wire).to_wire() == wire


def test_two_octet_session_round_trip() -> None:
    u = Update(attributes=(OriginAttr(Origin.IGP), AsPath.sequence(65001, 65002),
                           Aggregator(65001, A1), NextHop(A1)),
               nlri=(IPv4Network("10.0.0.0/8"),))
    wire = u.to_wire(AS2)
    assert Update.from_wire(wire, AS2) == u
    assert wire != u.to_wire()  # 2-octet ASes and a 6-octet AGGREGATOR


def test_extended_length_is_used_over_255_octets_and_accepted_when_not_needed() -> None:
    c = Communities(tuple(range(70)))  # 280 octets
    wire = c.to_wire()
    assert wire[0] & AttrFlag.EXTENDED_LENGTH and int.from_bytes(wire[2:4], "big") == 280
    # a short attribute sent with the Extended Length bit anyway is fine (RFC 7606 5.1)
    short = bytes([0x40 | 0x10, 1, 0, 1, 2])  # ORIGIN INCOMPLETE, 2-octet length
    body = b"\x00\x00" + len(short).to_bytes(2, "big") + short
    u = Update.from_wire(M + (19 + len(body)).to_bytes(2, "big") + b"\x02" + body)
    assert u.attributes == (OriginAttr(Origin.INCOMPLETE),)


def test_long_as_sequence_is_split_into_255_as_segments() -> None:
    p = AsPath.sequence(*range(1, 301))
    u = Update.from_wire(Update(attributes=(p,)).to_wire())
    got = u.attributes[0]
    assert isinstance(got, AsPath)
    assert [len(s.asns) for s in got.segments] == [255, 45]
    assert got.path_length() == 300


def test_withdrawn_and_nlri_round_trip() -> None:
    u = Update(withdrawn=(IPv4Network("0.0.0.0/0"), IPv4Network("10.0.0.0/9"),
                          IPv4Network("10.0.0.1/32")))
    assert Update.from_wire(u.to_wire()) == u
    assert Update().is_end_of_rib and Update.from_wire(Update().to_wire()).is_end_of_rib
    eor6 = Update(attributes=(MpUnreachNlri(Afi.IPV6, Safi.UNICAST),))
    assert eor6.is_end_of_rib and not u.is_end_of_rib


def test_trailing_nlri_bits_are_ignored() -> None:
    body = bytes.fromhex("0004 17 0a0101 0000")  # 10.1.1.0/23: a bit set past the prefix
    u = Update.from_wire(M + (19 + len(body)).to_bytes(2, "big") + b"\x02" + body)
    assert u.withdrawn == (IPv4Network("10.1.0.0/23"),) and u.nlri == ()


OPENS = [
    Open(65001, 0, A1),
    Open.build(4200000000, 3, A1, (
        Multiprotocol(Afi.IPV4, Safi.UNICAST), Multiprotocol(Afi.IPV6, Safi.UNICAST),
        RouteRefreshCapability(),
        GracefulRestart(300, restarting=True, notification=True, families=(
            GracefulRestartFamily(Afi.IPV4, Safi.UNICAST, True),
            GracefulRestartFamily(Afi.IPV6, Safi.UNICAST, False))),
        UnknownCapability(CapabilityCode.ADD_PATH, bytes.fromhex("00010103")),
        UnknownCapability(200, b""),
    )),
]

MESSAGES: list[Message] = [
    *OPENS,
    Keepalive(),
    Notification(ErrorCode.OPEN_MESSAGE_ERROR, OpenSubcode.BAD_PEER_AS, b"\xfd\xe9"),
    Notification(99, 42, b"odd"),
    Notification(ErrorCode.CEASE, CeaseSubcode.ADMINISTRATIVE_SHUTDOWN, b"\x05maint"),
    RouteRefresh(Afi.IPV6, Safi.UNICAST),
    RouteRefresh(Afi.IPV4, Safi.UNICAST, 2),
    Update(attributes=(OriginAttr(Origin.IGP), AsPath.sequence(1), NextHop(A1),
                       Communities((1,)), LargeCommunities((LargeCommunity(1, 2, 3),))),
           nlri=(IPv4Network("10.0.0.0/8"),), withdrawn=(IPv4Network("10.9.0.0/16"),)),
]


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips_and_frames_byte_at_a_time(msg: Message) -> None:
    wire = msg.to_wire()
    f = Framer()
    frames = []
    for b in wire:
        frames += f.feed(bytes([b]))
    assert len(frames) == 1 and f.buffered == 0
    assert frames[0].data == wire
    assert frames[0].decode() == msg
    assert frames[0].decode().to_wire() == wire


def test_shutdown_communication() -> None:
    n = Notification(ErrorCode.CEASE, CeaseSubcode.ADMINISTRATIVE_SHUTDOWN, b"\x05maint")
    assert n.shutdown_message == "maint"
    assert n.describe() == "CEASE/ADMINISTRATIVE_SHUTDOWN: maint"
    assert Notification(99, 42).describe() == "99/42"


def test_framer_any_chunking_gives_the_same_frames() -> None:
    stream = b"".join(m.to_wire() for m in MESSAGES) * 2
    whole = Framer().feed(stream)
    assert [fr.decode() for fr in whole] == MESSAGES * 2
    for size in (1, 2, 3, 7, 18, 19, 20, 64, 1000):
        f = Framer()
        got = []
        for i in range(0, len(stream), size):
            got += f.feed(stream[i : i + size])
        assert got == whole, size


def _err(fn: object, *args: object) -> MessageError:
    with pytest.raises(MessageError) as ei:
        fn(*args)  # type: ignore[operator]
    return ei.value


@pytest.mark.parametrize(("data", "subcode", "errdata"), [
    (b"\xfe", HeaderSubcode.CONNECTION_NOT_SYNCHRONIZED, b""),
    (M[:5] + b"\x00", HeaderSubcode.CONNECTION_NOT_SYNCHRONIZED, b""),
    (M + b"\x00\x12\x04", HeaderSubcode.BAD_MESSAGE_LENGTH, b"\x00\x12"),
    (M + b"\x10\x01\x02", HeaderSubcode.BAD_MESSAGE_LENGTH, b"\x10\x01"),
    (M + b"\x00\x14\x04", HeaderSubcode.BAD_MESSAGE_LENGTH, b"\x00\x14"),  # KEEPALIVE != 19
    (M + b"\x00\x13\x01", HeaderSubcode.BAD_MESSAGE_LENGTH, b"\x00\x13"),  # OPEN < 29
    (M + b"\x00\x13\x02", HeaderSubcode.BAD_MESSAGE_LENGTH, b"\x00\x13"),  # UPDATE < 23
    (M + b"\x00\x14\x03", HeaderSubcode.BAD_MESSAGE_LENGTH, b"\x00\x14"),  # NOTIFICATION < 21
    (M + b"\x00\x13\x09", HeaderSubcode.BAD_MESSAGE_TYPE, b"\x09"),
])
def test_header_errors(data: bytes, subcode: HeaderSubcode, errdata: bytes) -> None:
    f = Framer()
    e = _err(lambda: [f.feed(bytes([b])) for b in data])
    assert (e.code, e.subcode, e.data) == (ErrorCode.MESSAGE_HEADER_ERROR, subcode, errdata)
    e2 = _err(f.feed, KEEPALIVE)  # the framer stays failed
    assert e2 is e


def test_extended_message_limit_is_configurable() -> None:
    big = Update(attributes=(UnknownAttribute(99, 0xC0, b"x" * 5000),))
    with pytest.raises(EncodeError):
        big.to_wire()
    wire = big.to_wire(max_len=65535)
    with pytest.raises(MessageError):
        Framer().feed(wire)
    assert Framer(max_len=65535).feed(wire)[0].decode() == big


def test_route_refresh_bad_length_is_route_refresh_error() -> None:
    data = M + b"\x00\x18\x05" + b"\x00\x01\x00\x01\x00"
    fr = Framer().feed(data)[0]
    e = _err(fr.decode)
    assert (e.code, e.subcode) == (ErrorCode.ROUTE_REFRESH_MESSAGE_ERROR,
                                   RouteRefreshSubcode.INVALID_MESSAGE_LENGTH)
    assert e.data == data


def _open(body_hex: str) -> bytes:
    body = bytes.fromhex(body_hex)
    return M + (19 + len(body)).to_bytes(2, "big") + b"\x01" + body


@pytest.mark.parametrize(("data", "subcode"), [
    (_open("04 fde9 005a 0a000001 05 02 03 02 00"), OpenSubcode.UNSPECIFIC),  # param overruns
    (_open("04 fde9 005a 0a000001 02 01 00"), OpenSubcode.UNSUPPORTED_OPTIONAL_PARAMETER),
    (_open("04 fde9 005a 0a000001 04 02 02 41 03"), OpenSubcode.UNSPECIFIC),  # cap overruns
    (_open("04 fde9 005a 0a000001 05 02 03 41 01 00"), OpenSubcode.UNSPECIFIC),  # 4-octet AS len 1
    (_open("04 fde9 005a 0a000001 03 02 01 41"), OpenSubcode.UNSPECIFIC),  # cap header cut
    (_open("04 fde9 005a 0a000001 01 02"), OpenSubcode.UNSPECIFIC),  # param header cut
    (_open("04 fde9 005a 0a000001 05 02 03 40 01 00"), OpenSubcode.UNSPECIFIC),  # GR len 1
    (_open("04 fde9 005a 0a000001 09"), OpenSubcode.UNSPECIFIC),  # length disagrees
])
def test_malformed_open(data: bytes, subcode: OpenSubcode) -> None:
    e = _err(Open.from_wire, data)
    assert (e.code, e.subcode) == (ErrorCode.OPEN_MESSAGE_ERROR, subcode)


def test_open_lists_families_and_defaults_to_ipv4_unicast() -> None:
    assert Open(1, 90, A1).families() == {(Afi.IPV4, Safi.UNICAST)}
    assert OPENS[1].families() == {(Afi.IPV4, Safi.UNICAST), (Afi.IPV6, Safi.UNICAST)}
    assert not Open(1, 90, A1).four_octet


def test_message_from_wire_checks_type_and_length() -> None:
    e = _err(Open.from_wire, KEEPALIVE)
    assert e.subcode == HeaderSubcode.BAD_MESSAGE_TYPE
    e = _err(Keepalive.from_wire, KEEPALIVE + b"\x00")
    assert e.subcode == HeaderSubcode.BAD_MESSAGE_LENGTH
    for cls in (Update, Notification, RouteRefresh):
        assert _err(cls.from_wire, KEEPALIVE).subcode == HeaderSubcode.BAD_MESSAGE_TYPE
    assert _err(Keepalive.from_wire, b"\xff").subcode == HeaderSubcode.BAD_MESSAGE_LENGTH


_V6_AS_V4: Any = (IPv6Network("::/0"),)


@pytest.mark.parametrize("bad", [
    lambda: AsPath.sequence(1 << 32).to_wire(),
    lambda: MultiExitDisc(-1).to_wire(),
    lambda: Open(70000, 90, A1).to_wire(),
    lambda: Open(1, 90, A1, (FourOctetAs(1 << 32),)).to_wire(),
    lambda: Open(1, 90, A1, (UnknownCapability(9, b"x" * 256),)).to_wire(),
    lambda: Open(1, 90, A1, tuple(UnknownCapability(9, b"x" * 60) for _ in range(5))).to_wire(),
    lambda: GracefulRestart(5000).value_to_wire(),
    lambda: Update(nlri=_V6_AS_V4).to_wire(),
    lambda: ExtendedCommunities((1 << 64,)).to_wire(),
])
def test_encode_errors(bad: object) -> None:
    with pytest.raises(EncodeError) as ei:
        bad()  # type: ignore[operator]
    assert isinstance(ei.value, BgpError)
