"""Path attributes (RFC 4271 4.3 and 5, plus RFCs 1997, 4360, 4456, 4760, 6793, 8092).

Each attribute is a frozen value with ``value_to_wire(ctx)``; ``decode_attribute`` turns one
attribute's (flags, type, value) into that value or raises ``Malformed`` naming the RFC 4271
NOTIFICATION subcode. Which RFC 7606 action a malformation gets is decided in ``update.py``.
"""

from __future__ import annotations

import abc
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from typing import ClassVar

from kubewire.bgp.constants import (
    AS_TRANS,
    ATTR_FLAGS,
    Afi,
    AttrFlag,
    AttrType,
    Origin,
    Safi,
    SegmentType,
    UpdateSubcode,
)
from kubewire.bgp.errors import BgpError, EncodeError
from kubewire.bgp.nlri import IPAddress, NlriFormatError, Prefix, decode_prefixes, encode_prefixes


@dataclass(frozen=True, slots=True)
class WireContext:
    """What the session negotiated and who the peer is: the codec's only inputs besides bytes.

    ``as4``: both sides sent the 4-octet AS capability (AS_PATH and AGGREGATOR carry 4-octet
    ASes). ``ebgp``: the peer is external (LOCAL_PREF, ORIGINATOR_ID and CLUSTER_LIST from it
    are discarded, RFC 7606 7.5/7.9/7.10). ``peer_as``: when set on an eBGP session, the
    leftmost AS of AS_PATH must be it (RFC 4271 6.3).
    """

    as4: bool = True
    ebgp: bool = False
    peer_as: int | None = None


DEFAULT_CONTEXT = WireContext()


class Malformed(BgpError):
    """Internal: one attribute (or the attribute list) cannot be accepted as sent."""

    def __init__(self, subcode: UpdateSubcode, reason: str) -> None:
        super().__init__(reason)
        self.subcode = subcode
        self.reason = reason


def _check_as(asn: int, width: int = 4) -> None:
    if not 0 <= asn < (1 << (8 * width)):
        raise EncodeError(f"AS number {asn} does not fit in {width} octets")


class Attribute(abc.ABC):
    """Base of every path attribute value; each attribute type encodes its own value."""

    __slots__ = ()
    TYPE: ClassVar[int]

    @property
    def type_code(self) -> int:
        return self.TYPE

    @property
    def flags(self) -> int:
        return int(ATTR_FLAGS[AttrType(self.TYPE)])

    @abc.abstractmethod
    def value_to_wire(self, ctx: WireContext = DEFAULT_CONTEXT) -> bytes:
        """The attribute's value octets (without flags, type and length)."""

    def to_wire(self, ctx: WireContext = DEFAULT_CONTEXT) -> bytes:
        """Flags, type, length, value; the Extended Length bit only when the value needs it."""
        value = self.value_to_wire(ctx)
        flags = self.flags & ~AttrFlag.EXTENDED_LENGTH
        if len(value) > 255:
            if len(value) > 0xFFFF:
                raise EncodeError(f"attribute {self.TYPE} value of {len(value)} octets is too long")
            return (
                struct.pack("!BBH", flags | AttrFlag.EXTENDED_LENGTH, self.TYPE, len(value)) + value
            )
        return struct.pack("!BBB", flags, self.TYPE, len(value)) + value


@dataclass(frozen=True, slots=True)
class OriginAttr(Attribute):
    TYPE: ClassVar[int] = AttrType.ORIGIN
    origin: Origin

    def value_to_wire(self, ctx: WireContext = DEFAULT_CONTEXT) -> bytes:
        return bytes([self.origin])


@dataclass(frozen=True, slots=True)
class AsSegment:
    type: SegmentType
    asns: tuple[int, ...]


def _encode_segments(segments: Iterable[AsSegment], four: bool) -> bytes:
    out = bytearray()
    for seg in segments:
        asns = seg.asns
        # a segment holds at most 255 ASes: longer ones go out as consecutive segments
        for start in range(0, max(len(asns), 1), 255):
            chunk = asns[start : start + 255]
            out += bytes([seg.type, len(chunk)])
            for a in chunk:
                _check_as(a)
                if four:
                    out += a.to_bytes(4, "big")
                else:
                    out += (a if a <= 0xFFFF else AS_TRANS).to_bytes(2, "big")
    return bytes(out)


def _decode_segments(data: bytes, four: bool) -> tuple[AsSegment, ...]:
    """RFC 7606 7.2: an unknown segment type, a zero-length segment, a header that does not
    fit or a segment overrunning the attribute make the path malformed."""
    width = 4 if four else 2
    segs: list[AsSegment] = []
    i, end = 0, len(data)
    while i < end:
        if end - i < 2:
            raise Malformed(UpdateSubcode.MALFORMED_AS_PATH, "AS_PATH ends inside a segment header")
        stype, count = data[i], data[i + 1]
        if stype not in SegmentType._value2member_map_:
            raise Malformed(
                UpdateSubcode.MALFORMED_AS_PATH, f"unknown AS_PATH segment type {stype}"
            )
        if count == 0:
            raise Malformed(UpdateSubcode.MALFORMED_AS_PATH, "AS_PATH segment of length 0")
        j = i + 2 + count * width
        if j > end:
            raise Malformed(
                UpdateSubcode.MALFORMED_AS_PATH, "AS_PATH segment overruns the attribute"
            )
        raw = data[i + 2 : j]
        asns = tuple(int.from_bytes(raw[k : k + width], "big") for k in range(0, len(raw), width))
        segs.append(AsSegment(SegmentType(stype), asns))
        i = j
    return tuple(segs)


@dataclass(frozen=True, slots=True)
class AsPath(Attribute):
    """AS_PATH. Encoded with 4-octet ASes when ``ctx.as4``, else 2-octet with AS_TRANS."""

    TYPE: ClassVar[int] = AttrType.AS_PATH
    segments: tuple[AsSegment, ...] = ()

    @classmethod
    def sequence(cls, *asns: int) -> AsPath:
        return cls((AsSegment(SegmentType.AS_SEQUENCE, tuple(asns)),) if asns else ())

    def value_to_wire(self, ctx: WireContext = DEFAULT_CONTEXT) -> bytes:
        return _encode_segments(self.segments, ctx.as4)

    def path_length(self) -> int:
        """RFC 4271 9.1.2.2 a: an AS_SET counts 1, confederation segments count 0 (RFC 5065)."""
        n = 0
        for s in self.segments:
            if s.type == SegmentType.AS_SEQUENCE:
                n += len(s.asns)
            elif s.type == SegmentType.AS_SET:
                n += 1
        return n

    def first_as(self) -> int | None:
        """The neighbour AS (leftmost AS of the first AS_SEQUENCE), or None."""
        for s in self.segments:
            if s.type in (SegmentType.AS_CONFED_SEQUENCE, SegmentType.AS_CONFED_SET):
                continue
            return s.asns[0] if s.type == SegmentType.AS_SEQUENCE else None
        return None

    def all_asns(self) -> frozenset[int]:
        return frozenset(a for s in self.segments for a in s.asns)

    def prepend(self, asn: int, times: int = 1) -> AsPath:
        add = (asn,) * times
        if self.segments and self.segments[0].type == SegmentType.AS_SEQUENCE:
            first = self.segments[0]
            return AsPath((AsSegment(first.type, add + first.asns), *self.segments[1:]))
        return AsPath((AsSegment(SegmentType.AS_SEQUENCE, add), *self.segments))


@dataclass(frozen=True, slots=True)
class As4Path(Attribute):
    """AS4_PATH (RFC 6793): the true path alongside a 2-octet AS_PATH; always 4-octet."""

    TYPE: ClassVar[int] = AttrType.AS4_PATH
    segments: tuple[AsSegment, ...] = ()

    def value_to_wire(self, ctx: WireContext = DEFAULT_CONTEXT) -> bytes:
        return _encode_segments(self.segments, True)


@dataclass(frozen=True, slots=True)
class NextHop(Attribute):
    TYPE: ClassVar[int] = AttrType.NEXT_HOP
    address: IPv4Address

    def value_to_wire(self, ctx: WireContext = DEFAULT_CONTEXT) -> bytes:
        return self.address.packed


@dataclass(frozen=True, slots=True)
class MultiExitDisc(Attribute):
    TYPE: ClassVar[int] = AttrType.MULTI_EXIT_DISC
    value: int

    def value_to_wire(self, ctx: WireContext = DEFAULT_CONTEXT) -> bytes:
        _check_as(self.value)
        return self.value.to_bytes(4, "big")


@dataclass(frozen=True, slots=True)
class LocalPref(Attribute):
    TYPE: ClassVar[int] = AttrType.LOCAL_PREF
    value: int

    def value_to_wire(self, ctx: WireContext = DEFAULT_CONTEXT) -> bytes:
        _check_as(self.value)
        return self.value.to_bytes(4, "big")


@dataclass(frozen=True, slots=True)
class AtomicAggregate(Attribute):
    TYPE: ClassVar[int] = AttrType.ATOMIC_AGGREGATE

    def value_to_wire(self, ctx: WireContext = DEFAULT_CONTEXT) -> bytes:
        return b""


@dataclass(frozen=True, slots=True)
class Aggregator(Attribute):
    """AGGREGATOR: 6 octets on 2-octet sessions (AS_TRANS stands in), 8 on 4-octet ones."""

    TYPE: ClassVar[int] = AttrType.AGGREGATOR
    asn: int
    address: IPv4Address

    def value_to_wire(self, ctx: WireContext = DEFAULT_CONTEXT) -> bytes:
        _check_as(self.asn)
        if ctx.as4:
            return self.asn.to_bytes(4, "big") + self.address.packed
        asn = self.asn if self.asn <= 0xFFFF else AS_TRANS
        return asn.to_bytes(2, "big") + self.address.packed


@dataclass(frozen=True, slots=True)
class As4Aggregator(Attribute):
    TYPE: ClassVar[int] = AttrType.AS4_AGGREGATOR
    asn: int
    address: IPv4Address

    def value_to_wire(self, ctx: WireContext = DEFAULT_CONTEXT) -> bytes:
        _check_as(self.asn)
        return self.asn.to_bytes(4, "big") + self.address.packed


@dataclass(frozen=True, slots=True)
class Communities(Attribute):
    """RFC 1997: each value is ``asn << 16 | local``; see ``WellKnownCommunity``."""

    TYPE: ClassVar[int] = AttrType.COMMUNITIES
    values: tuple[int, ...]

    def value_to_wire(self, ctx: WireContext = DEFAULT_CONTEXT) -> bytes:
        for v in self.values:
            _check_as(v)
        return b"".join(v.to_bytes(4, "big") for v in self.values)


def community(asn: int, local: int) -> int:
    return (asn << 16) | local


@dataclass(frozen=True, slots=True)
class ExtendedCommunities(Attribute):
    """RFC 4360, kept as 8-octet integers (type, subtype and value are the caller's)."""

    TYPE: ClassVar[int] = AttrType.EXTENDED_COMMUNITIES
    values: tuple[int, ...]

    def value_to_wire(self, ctx: WireContext = DEFAULT_CONTEXT) -> bytes:
        for v in self.values:
            _check_as(v, 8)
        return b"".join(v.to_bytes(8, "big") for v in self.values)


@dataclass(frozen=True, slots=True, order=True)
class LargeCommunity:
    """RFC 8092: Global Administrator (an AS), Local Data Part 1, Local Data Part 2."""

    global_admin: int
    local1: int
    local2: int


@dataclass(frozen=True, slots=True)
class LargeCommunities(Attribute):
    TYPE: ClassVar[int] = AttrType.LARGE_COMMUNITIES
    values: tuple[LargeCommunity, ...]

    def value_to_wire(self, ctx: WireContext = DEFAULT_CONTEXT) -> bytes:
        out = bytearray()
        for c in self.values:
            for part in (c.global_admin, c.local1, c.local2):
                _check_as(part)
                out += part.to_bytes(4, "big")
        return bytes(out)


@dataclass(frozen=True, slots=True)
class OriginatorId(Attribute):
    TYPE: ClassVar[int] = AttrType.ORIGINATOR_ID
    router_id: IPv4Address

    def value_to_wire(self, ctx: WireContext = DEFAULT_CONTEXT) -> bytes:
        return self.router_id.packed


@dataclass(frozen=True, slots=True)
class ClusterList(Attribute):
    TYPE: ClassVar[int] = AttrType.CLUSTER_LIST
    cluster_ids: tuple[IPv4Address, ...]

    def value_to_wire(self, ctx: WireContext = DEFAULT_CONTEXT) -> bytes:
        return b"".join(c.packed for c in self.cluster_ids)


def _family(afi: int, safi: int) -> bool:
    return afi in (Afi.IPV4, Afi.IPV6) and safi in (Safi.UNICAST, Safi.MULTICAST)


@dataclass(frozen=True, slots=True)
class MpReachNlri(Attribute):
    """RFC 4760. ``next_hops`` holds one address, or for IPv6 a global and a link-local one
    (a 32-octet next hop). IPv4 NLRI may have IPv6 next hops (RFC 8950)."""

    TYPE: ClassVar[int] = AttrType.MP_REACH_NLRI
    afi: Afi
    safi: Safi
    next_hops: tuple[IPAddress, ...]
    nlri: tuple[Prefix, ...] = ()

    def value_to_wire(self, ctx: WireContext = DEFAULT_CONTEXT) -> bytes:
        nh = b"".join(a.packed for a in self.next_hops)
        if len(nh) > 255:
            raise EncodeError("MP_REACH_NLRI next hop longer than 255 octets")
        return (
            struct.pack("!HBB", self.afi, self.safi, len(nh))
            + nh
            + b"\x00"
            + encode_prefixes(self.nlri, self.afi)
        )


@dataclass(frozen=True, slots=True)
class MpUnreachNlri(Attribute):
    TYPE: ClassVar[int] = AttrType.MP_UNREACH_NLRI
    afi: Afi
    safi: Safi
    withdrawn: tuple[Prefix, ...] = ()

    def value_to_wire(self, ctx: WireContext = DEFAULT_CONTEXT) -> bytes:
        return struct.pack("!HB", self.afi, self.safi) + encode_prefixes(self.withdrawn, self.afi)


@dataclass(frozen=True, slots=True)
class UnknownAttribute(Attribute):
    """An attribute this codec does not interpret (or an MP attribute of a family it does not
    know), kept byte for byte. ``flags`` never holds the Extended Length bit."""

    TYPE: ClassVar[int] = -1
    code: int
    attr_flags: int
    value: bytes = field(default=b"")

    @property
    def type_code(self) -> int:
        return self.code

    @property
    def flags(self) -> int:
        return self.attr_flags & ~AttrFlag.EXTENDED_LENGTH & 0xF0

    def value_to_wire(self, ctx: WireContext = DEFAULT_CONTEXT) -> bytes:
        return self.value

    def to_wire(self, ctx: WireContext = DEFAULT_CONTEXT) -> bytes:
        v = self.value
        if len(v) > 255:
            return struct.pack("!BBH", self.flags | AttrFlag.EXTENDED_LENGTH, self.code, len(v)) + v
        return struct.pack("!BBB", self.flags, self.code, len(v)) + v

    def forwarded(self) -> UnknownAttribute | None:
        """RFC 4271 5: pass an unrecognized optional transitive attribute on with the Partial
        bit set; drop an optional non-transitive one."""
        if not self.attr_flags & AttrFlag.TRANSITIVE:
            return None
        return UnknownAttribute(self.code, self.flags | AttrFlag.PARTIAL, self.value)


def _ipv4(value: bytes, what: str, subcode: UpdateSubcode) -> IPv4Address:
    if len(value) != 4:
        raise Malformed(subcode, f"{what} length {len(value)}, expected 4")
    return IPv4Address(value)


def _u32(value: bytes, what: str) -> int:
    if len(value) != 4:
        raise Malformed(
            UpdateSubcode.ATTRIBUTE_LENGTH_ERROR, f"{what} length {len(value)}, expected 4"
        )
    return int.from_bytes(value, "big")


def _multiple(value: bytes, unit: int, what: str) -> None:
    if not value or len(value) % unit:
        raise Malformed(
            UpdateSubcode.OPTIONAL_ATTRIBUTE_ERROR,
            f"{what} length {len(value)} is not a non-zero multiple of {unit}",
        )


def _decode_mp_reach(value: bytes) -> Attribute:
    if len(value) < 5:
        raise Malformed(
            UpdateSubcode.OPTIONAL_ATTRIBUTE_ERROR, "MP_REACH_NLRI shorter than 5 octets"
        )
    afi, safi, nhlen = struct.unpack_from("!HBB", value)
    if not _family(afi, safi):
        return UnknownAttribute(AttrType.MP_REACH_NLRI, ATTR_FLAGS[AttrType.MP_REACH_NLRI], value)
    if 4 + nhlen + 1 > len(value):
        raise Malformed(
            UpdateSubcode.OPTIONAL_ATTRIBUTE_ERROR, "MP_REACH_NLRI next hop overruns it"
        )
    nh = value[4 : 4 + nhlen]
    hops: tuple[IPAddress, ...]
    if nhlen == 4 and afi == Afi.IPV4:
        hops = (IPv4Address(nh),)
    elif nhlen == 16:
        hops = (IPv6Address(nh),)
    elif nhlen == 32:
        hops = (IPv6Address(nh[:16]), IPv6Address(nh[16:]))
    else:
        raise Malformed(
            UpdateSubcode.OPTIONAL_ATTRIBUTE_ERROR,
            f"MP_REACH_NLRI next hop length {nhlen} is wrong for AFI {afi}",
        )
    try:
        nlri = decode_prefixes(value[5 + nhlen :], Afi(afi))
    except NlriFormatError as e:
        raise Malformed(UpdateSubcode.OPTIONAL_ATTRIBUTE_ERROR, f"MP_REACH_NLRI: {e}") from None
    return MpReachNlri(Afi(afi), Safi(safi), hops, nlri)


def _decode_mp_unreach(value: bytes) -> Attribute:
    if len(value) < 3:
        raise Malformed(
            UpdateSubcode.OPTIONAL_ATTRIBUTE_ERROR, "MP_UNREACH_NLRI shorter than 3 octets"
        )
    afi, safi = struct.unpack_from("!HB", value)
    if not _family(afi, safi):
        return UnknownAttribute(
            AttrType.MP_UNREACH_NLRI, ATTR_FLAGS[AttrType.MP_UNREACH_NLRI], value
        )
    try:
        withdrawn = decode_prefixes(value[3:], Afi(afi))
    except NlriFormatError as e:
        raise Malformed(UpdateSubcode.OPTIONAL_ATTRIBUTE_ERROR, f"MP_UNREACH_NLRI: {e}") from None
    return MpUnreachNlri(Afi(afi), Safi(safi), withdrawn)


_ATTR_TYPE = {int(t): t for t in AttrType}  # a dict lookup instead of an enum call
_ORIGIN = {int(o): o for o in Origin}


def decode_attribute(code: int, value: bytes, ctx: WireContext) -> Attribute:
    """One known attribute's value (flags already checked). Raises ``Malformed``."""
    t = _ATTR_TYPE[code]
    L = UpdateSubcode.ATTRIBUTE_LENGTH_ERROR
    if t == AttrType.ORIGIN:
        if len(value) != 1:
            raise Malformed(L, f"ORIGIN length {len(value)}, expected 1")
        if value[0] > Origin.INCOMPLETE:
            raise Malformed(UpdateSubcode.INVALID_ORIGIN_ATTRIBUTE, f"ORIGIN value {value[0]}")
        return OriginAttr(_ORIGIN[value[0]])
    if t == AttrType.AS_PATH:
        return AsPath(_decode_segments(value, ctx.as4))
    if t == AttrType.AS4_PATH:
        return As4Path(_decode_segments(value, True))
    if t == AttrType.NEXT_HOP:
        return NextHop(_ipv4(value, "NEXT_HOP", L))
    if t == AttrType.MULTI_EXIT_DISC:
        return MultiExitDisc(_u32(value, "MULTI_EXIT_DISC"))
    if t == AttrType.LOCAL_PREF:
        return LocalPref(_u32(value, "LOCAL_PREF"))
    if t == AttrType.ATOMIC_AGGREGATE:
        if value:
            raise Malformed(L, f"ATOMIC_AGGREGATE length {len(value)}, expected 0")
        return AtomicAggregate()
    if t == AttrType.AGGREGATOR:
        want = 8 if ctx.as4 else 6
        if len(value) != want:
            raise Malformed(L, f"AGGREGATOR length {len(value)}, expected {want}")
        return Aggregator(int.from_bytes(value[:-4], "big"), IPv4Address(value[-4:]))
    if t == AttrType.AS4_AGGREGATOR:
        if len(value) != 8:
            raise Malformed(L, f"AS4_AGGREGATOR length {len(value)}, expected 8")
        return As4Aggregator(int.from_bytes(value[:4], "big"), IPv4Address(value[4:]))
    if t == AttrType.COMMUNITIES:
        _multiple(value, 4, "COMMUNITIES")
        return Communities(
            tuple(int.from_bytes(value[i : i + 4], "big") for i in range(0, len(value), 4))
        )
    if t == AttrType.EXTENDED_COMMUNITIES:
        _multiple(value, 8, "EXTENDED_COMMUNITIES")
        return ExtendedCommunities(
            tuple(int.from_bytes(value[i : i + 8], "big") for i in range(0, len(value), 8))
        )
    if t == AttrType.LARGE_COMMUNITIES:
        _multiple(value, 12, "LARGE_COMMUNITIES")
        return LargeCommunities(
            tuple(
                LargeCommunity(*struct.unpack_from("!III", value, i))
                for i in range(0, len(value), 12)
            )
        )
    if t == AttrType.ORIGINATOR_ID:
        return OriginatorId(_ipv4(value, "ORIGINATOR_ID", L))
    if t == AttrType.CLUSTER_LIST:
        _multiple(value, 4, "CLUSTER_LIST")
        return ClusterList(tuple(IPv4Address(value[i : i + 4]) for i in range(0, len(value), 4)))
    if t == AttrType.MP_REACH_NLRI:
        return _decode_mp_reach(value)
    return _decode_mp_unreach(value)
