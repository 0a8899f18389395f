"""OPEN, KEEPALIVE, NOTIFICATION, ROUTE-REFRESH, the common header, and the stream framer.

Every message has ``to_wire()`` (a whole message, header included) and a ``from_wire(data)``
classmethod; ``Framer.feed`` cuts a byte stream, however it is chunked, into ``Frame``s after
the RFC 4271 6.1 header checks.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from kubewire.bgp.attributes import DEFAULT_CONTEXT, WireContext
from kubewire.bgp.constants import (
    AS_TRANS,
    BGP_VERSION,
    HEADER_LEN,
    MARKER,
    MAX_MESSAGE_LEN,
    SUBCODES,
    Afi,
    CapabilityCode,
    CeaseSubcode,
    ErrorCode,
    HeaderSubcode,
    MessageType,
    OpenSubcode,
    OptionalParameter,
    RouteRefreshSubcode,
    Safi,
)
from kubewire.bgp.errors import EncodeError, MessageError
from kubewire.bgp.update import Update, decode_update, strict

# Smallest legal message of each type (RFC 4271 4.2-4.5, RFC 2918 3).
MIN_LEN = {
    MessageType.OPEN: 29,
    MessageType.UPDATE: 23,
    MessageType.NOTIFICATION: 21,
    MessageType.KEEPALIVE: 19,
    MessageType.ROUTE_REFRESH: 23,
}


def frame(mtype: MessageType, body: bytes, max_len: int = MAX_MESSAGE_LEN) -> bytes:
    total = HEADER_LEN + len(body)
    if total > max_len:
        raise EncodeError(f"{mtype.name} of {total} octets exceeds the {max_len}-octet limit")
    return MARKER + struct.pack("!HB", total, mtype) + body


def _header_error(sub: HeaderSubcode, msg: str, data: bytes = b"") -> MessageError:
    return MessageError(ErrorCode.MESSAGE_HEADER_ERROR, sub, msg, data)


_MESSAGE_TYPES = {int(t): t for t in MessageType}


def check_header(header: bytes, max_len: int = MAX_MESSAGE_LEN) -> tuple[MessageType, int]:
    """RFC 4271 6.1 on a 19-octet header: returns (type, total length) or raises."""
    if header[:16] != MARKER:
        raise _header_error(HeaderSubcode.CONNECTION_NOT_SYNCHRONIZED, "marker is not all ones")
    length, t = struct.unpack_from("!HB", header, 16)
    if length < HEADER_LEN or length > max_len:
        raise _header_error(
            HeaderSubcode.BAD_MESSAGE_LENGTH, f"message length {length}", header[16:18]
        )
    mtype = _MESSAGE_TYPES.get(t)  # a dict lookup: an enum call costs ~1 us per message
    if mtype is None:
        raise _header_error(HeaderSubcode.BAD_MESSAGE_TYPE, f"message type {t}", bytes([t]))
    if length < MIN_LEN[mtype] or (mtype == MessageType.KEEPALIVE and length != HEADER_LEN):
        raise _header_error(
            HeaderSubcode.BAD_MESSAGE_LENGTH, f"{mtype.name} of length {length}", header[16:18]
        )
    return mtype, length


def split_header(data: bytes, max_len: int = MAX_MESSAGE_LEN) -> tuple[MessageType, bytes]:
    """One whole message -> (type, body); the length field must match ``len(data)``."""
    if len(data) < HEADER_LEN:
        raise _header_error(HeaderSubcode.BAD_MESSAGE_LENGTH, f"{len(data)} octets is no message")
    mtype, length = check_header(data[:HEADER_LEN], max_len)
    if length != len(data):
        raise _header_error(
            HeaderSubcode.BAD_MESSAGE_LENGTH,
            f"length field {length} but {len(data)} octets",
            data[16:18],
        )
    return mtype, bytes(data[HEADER_LEN:])


# --- capabilities (RFC 5492) ----------------------------------------------------------------


def _open_error(sub: OpenSubcode, msg: str, data: bytes = b"") -> MessageError:
    return MessageError(ErrorCode.OPEN_MESSAGE_ERROR, sub, msg, data)


@dataclass(frozen=True, slots=True)
class Multiprotocol:
    afi: int
    safi: int
    code = CapabilityCode.MULTIPROTOCOL

    def value_to_wire(self) -> bytes:
        return struct.pack("!HBB", self.afi, 0, self.safi)


@dataclass(frozen=True, slots=True)
class RouteRefreshCapability:
    code = CapabilityCode.ROUTE_REFRESH

    def value_to_wire(self) -> bytes:
        return b""


@dataclass(frozen=True, slots=True)
class FourOctetAs:
    asn: int
    code = CapabilityCode.FOUR_OCTET_AS

    def value_to_wire(self) -> bytes:
        if not 0 <= self.asn <= 0xFFFFFFFF:
            raise EncodeError(f"AS {self.asn} does not fit in 4 octets")
        return self.asn.to_bytes(4, "big")


@dataclass(frozen=True, slots=True)
class GracefulRestartFamily:
    afi: int
    safi: int
    forwarding_preserved: bool = False


@dataclass(frozen=True, slots=True)
class GracefulRestart:
    """RFC 4724 3 (parsed and built; the restart procedures themselves are not run)."""

    restart_time: int = 120
    restarting: bool = False  # the R bit
    notification: bool = False  # the N bit (RFC 8538)
    families: tuple[GracefulRestartFamily, ...] = ()
    code = CapabilityCode.GRACEFUL_RESTART

    def value_to_wire(self) -> bytes:
        if not 0 <= self.restart_time <= 0xFFF:
            raise EncodeError(f"restart time {self.restart_time} does not fit in 12 bits")
        head = (self.restarting << 15) | (self.notification << 14) | self.restart_time
        out = bytearray(head.to_bytes(2, "big"))
        for f in self.families:
            out += struct.pack("!HBB", f.afi, f.safi, 0x80 if f.forwarding_preserved else 0)
        return bytes(out)


@dataclass(frozen=True, slots=True)
class UnknownCapability:
    """A capability kept as received (ADD-PATH, extended next hop, ...)."""

    code: int
    value: bytes = b""

    def value_to_wire(self) -> bytes:
        return self.value


Capability = (
    Multiprotocol | RouteRefreshCapability | FourOctetAs | GracefulRestart | UnknownCapability
)


def _decode_capability(code: int, value: bytes) -> Capability:
    def need(n: int) -> None:
        if len(value) != n:
            raise _open_error(
                OpenSubcode.UNSPECIFIC, f"capability {code} has length {len(value)}, expected {n}"
            )

    if code == CapabilityCode.MULTIPROTOCOL:
        need(4)
        afi, _res, safi = struct.unpack("!HBB", value)
        return Multiprotocol(afi, safi)
    if code == CapabilityCode.ROUTE_REFRESH:
        need(0)
        return RouteRefreshCapability()
    if code == CapabilityCode.FOUR_OCTET_AS:
        need(4)
        return FourOctetAs(int.from_bytes(value, "big"))
    if code == CapabilityCode.GRACEFUL_RESTART:
        if len(value) < 2 or (len(value) - 2) % 4:
            raise _open_error(
                OpenSubcode.UNSPECIFIC, f"graceful restart capability of {len(value)} octets"
            )
        head = int.from_bytes(value[:2], "big")
        fams = tuple(
            GracefulRestartFamily(
                int.from_bytes(value[i : i + 2], "big"), value[i + 2], bool(value[i + 3] & 0x80)
            )
            for i in range(2, len(value), 4)
        )
        return GracefulRestart(head & 0xFFF, bool(head & 0x8000), bool(head & 0x4000), fams)
    return UnknownCapability(code, bytes(value))


@dataclass(frozen=True, slots=True)
class Open:
    """OPEN. ``my_as`` is the 2-octet field (AS_TRANS for big ASes); ``asn`` the real AS."""

    my_as: int
    hold_time: int
    bgp_id: IPv4Address
    capabilities: tuple[Capability, ...] = ()
    version: int = BGP_VERSION

    @classmethod
    def build(
        cls,
        asn: int,
        hold_time: int,
        bgp_id: IPv4Address,
        capabilities: tuple[Capability, ...] = (),
    ) -> Open:
        """An OPEN for ``asn``, adding the 4-octet AS capability (RFC 6793 requires it)."""
        keep = tuple(c for c in capabilities if not isinstance(c, FourOctetAs))
        caps = (*keep, FourOctetAs(asn))
        return cls(asn if asn <= 0xFFFF else AS_TRANS, hold_time, bgp_id, caps)

    @property
    def asn(self) -> int:
        for c in self.capabilities:
            if isinstance(c, FourOctetAs):
                return c.asn
        return self.my_as

    @property
    def four_octet(self) -> bool:
        return any(isinstance(c, FourOctetAs) for c in self.capabilities)

    def families(self) -> frozenset[tuple[int, int]]:
        """Multiprotocol families offered; none listed means IPv4 unicast (RFC 4760 8)."""
        fams = frozenset((c.afi, c.safi) for c in self.capabilities if isinstance(c, Multiprotocol))
        return fams or frozenset({(Afi.IPV4, Safi.UNICAST)})

    def to_wire(self, ctx: WireContext = DEFAULT_CONTEXT) -> bytes:
        caps = b""
        for c in self.capabilities:
            v = c.value_to_wire()
            if len(v) > 255:
                raise EncodeError(f"capability {c.code} longer than 255 octets")
            caps += bytes([c.code, len(v)]) + v
        if len(caps) > 253:
            raise EncodeError("capabilities exceed the 255-octet optional parameters field")
        params = bytes([OptionalParameter.CAPABILITIES, len(caps)]) + caps if caps else b""
        if not 0 <= self.my_as <= 0xFFFF or not 0 <= self.hold_time <= 0xFFFF:
            raise EncodeError("My AS and Hold Time are 2-octet fields")
        body = (
            struct.pack(
                "!BHH4sB", self.version, self.my_as, self.hold_time, self.bgp_id.packed, len(params)
            )
            + params
        )
        return frame(MessageType.OPEN, body)

    @classmethod
    def from_wire(cls, data: bytes, ctx: WireContext = DEFAULT_CONTEXT) -> Open:
        mtype, body = split_header(data)
        if mtype != MessageType.OPEN:
            raise _header_error(HeaderSubcode.BAD_MESSAGE_TYPE, f"not an OPEN: {mtype.name}")
        return decode_open(body)


def decode_open(body: bytes) -> Open:
    if len(body) < 10:
        raise _header_error(HeaderSubcode.BAD_MESSAGE_LENGTH, "OPEN shorter than 29 octets")
    version, my_as, hold, bid, plen = struct.unpack_from("!BHH4sB", body)
    if 10 + plen != len(body):
        raise _open_error(
            OpenSubcode.UNSPECIFIC,
            f"Optional Parameters Length {plen} but {len(body) - 10} octets follow",
        )
    caps: list[Capability] = []
    i, end = 10, len(body)
    while i < end:
        if end - i < 2:
            raise _open_error(OpenSubcode.UNSPECIFIC, "optional parameter header truncated")
        ptype, pl = body[i], body[i + 1]
        pval = body[i + 2 : i + 2 + pl]
        if len(pval) != pl:
            raise _open_error(OpenSubcode.UNSPECIFIC, "optional parameter overruns the OPEN")
        i += 2 + pl
        if ptype != OptionalParameter.CAPABILITIES:
            raise _open_error(
                OpenSubcode.UNSUPPORTED_OPTIONAL_PARAMETER, f"optional parameter type {ptype}"
            )
        j = 0
        while j < pl:
            if pl - j < 2:
                raise _open_error(OpenSubcode.UNSPECIFIC, "capability header truncated")
            code, cl = pval[j], pval[j + 1]
            cval = pval[j + 2 : j + 2 + cl]
            if len(cval) != cl:
                raise _open_error(
                    OpenSubcode.UNSPECIFIC, f"capability {code} overruns its parameter"
                )
            caps.append(_decode_capability(code, bytes(cval)))
            j += 2 + cl
    return Open(my_as, hold, IPv4Address(bid), tuple(caps), version)


# --- KEEPALIVE, NOTIFICATION, ROUTE-REFRESH -------------------------------------------------


@dataclass(frozen=True, slots=True)
class Keepalive:
    def to_wire(self, ctx: WireContext = DEFAULT_CONTEXT) -> bytes:
        return frame(MessageType.KEEPALIVE, b"")

    @classmethod
    def from_wire(cls, data: bytes, ctx: WireContext = DEFAULT_CONTEXT) -> Keepalive:
        mtype, _ = split_header(data)
        if mtype != MessageType.KEEPALIVE:
            raise _header_error(HeaderSubcode.BAD_MESSAGE_TYPE, f"not a KEEPALIVE: {mtype.name}")
        return cls()


@dataclass(frozen=True, slots=True)
class Notification:
    """NOTIFICATION. ``code``/``subcode`` are enums when known (RFC names), else ints."""

    code: int
    subcode: int = 0
    data: bytes = b""

    def __post_init__(self) -> None:
        if self.code in ErrorCode._value2member_map_:
            code = ErrorCode(self.code)
            object.__setattr__(self, "code", code)
            enum = SUBCODES.get(code)
            if enum is not None and self.subcode in enum._value2member_map_:
                object.__setattr__(self, "subcode", enum(self.subcode))

    def describe(self) -> str:
        c = self.code.name if isinstance(self.code, ErrorCode) else str(self.code)
        s = getattr(self.subcode, "name", str(self.subcode))
        text = f"{c}/{s}"
        msg = self.shutdown_message
        return f"{text}: {msg}" if msg else text

    @property
    def shutdown_message(self) -> str | None:
        """RFC 9003: a length-prefixed UTF-8 reason in Administrative Shutdown/Reset."""
        if self.code != ErrorCode.CEASE or self.subcode not in (
            CeaseSubcode.ADMINISTRATIVE_SHUTDOWN,
            CeaseSubcode.ADMINISTRATIVE_RESET,
        ):
            return None
        if not self.data or self.data[0] != len(self.data) - 1:
            return None
        return self.data[1:].decode("utf-8", "replace")

    def to_wire(self, ctx: WireContext = DEFAULT_CONTEXT) -> bytes:
        return frame(MessageType.NOTIFICATION, bytes([self.code, self.subcode]) + self.data)

    @classmethod
    def from_wire(cls, data: bytes, ctx: WireContext = DEFAULT_CONTEXT) -> Notification:
        mtype, body = split_header(data)
        if mtype != MessageType.NOTIFICATION:
            raise _header_error(HeaderSubcode.BAD_MESSAGE_TYPE, f"not a NOTIFICATION: {mtype.name}")
        return cls(body[0], body[1], bytes(body[2:]))

    @classmethod
    def from_error(cls, err: MessageError) -> Notification:
        return cls(err.code, err.subcode, err.data)


@dataclass(frozen=True, slots=True)
class RouteRefresh:
    """ROUTE-REFRESH (RFC 2918); ``subtype`` is RFC 7313's (0 request, 1 BoRR, 2 EoRR)."""

    afi: int = Afi.IPV4
    safi: int = Safi.UNICAST
    subtype: int = 0

    def to_wire(self, ctx: WireContext = DEFAULT_CONTEXT) -> bytes:
        return frame(
            MessageType.ROUTE_REFRESH, struct.pack("!HBB", self.afi, self.subtype, self.safi)
        )

    @classmethod
    def from_wire(cls, data: bytes, ctx: WireContext = DEFAULT_CONTEXT) -> RouteRefresh:
        mtype, body = split_header(data)
        if mtype != MessageType.ROUTE_REFRESH:
            raise _header_error(
                HeaderSubcode.BAD_MESSAGE_TYPE, f"not a ROUTE-REFRESH: {mtype.name}"
            )
        return decode_route_refresh(body, data)


def decode_route_refresh(body: bytes, whole: bytes) -> RouteRefresh:
    if len(body) != 4:
        raise MessageError(
            ErrorCode.ROUTE_REFRESH_MESSAGE_ERROR,
            RouteRefreshSubcode.INVALID_MESSAGE_LENGTH,
            f"ROUTE-REFRESH body of {len(body)} octets",
            bytes(whole),
        )
    afi, sub, safi = struct.unpack("!HBB", body)
    return RouteRefresh(afi, safi, sub)


Message = Open | Update | Notification | Keepalive | RouteRefresh


# --- the framer ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Frame:
    """One message cut from the stream: header checked, body not yet parsed."""

    type: MessageType
    body: bytes

    @property
    def data(self) -> bytes:
        return MARKER + struct.pack("!HB", HEADER_LEN + len(self.body), self.type) + self.body

    def decode(self, ctx: WireContext = DEFAULT_CONTEXT) -> Message:
        """Strict decode; an UPDATE with any RFC 7606 problem raises (use decode_update)."""
        if self.type == MessageType.OPEN:
            return decode_open(self.body)
        if self.type == MessageType.UPDATE:
            return strict(decode_update(self.body, ctx))
        if self.type == MessageType.NOTIFICATION:
            return Notification(self.body[0], self.body[1], self.body[2:])
        if self.type == MessageType.KEEPALIVE:
            return Keepalive()
        return decode_route_refresh(self.body, self.data)


@dataclass(slots=True)
class Framer:
    """Cuts a TCP byte stream into frames; any chunking gives the same frames.

    A header error raises ``MessageError`` (send it as NOTIFICATION, close the session); the
    framer then stays failed and raises the same error on every later ``feed``.
    """

    max_len: int = MAX_MESSAGE_LEN
    _buf: bytearray = field(default_factory=bytearray)
    _error: MessageError | None = None

    def feed(self, data: bytes) -> list[Frame]:
        if self._error is not None:
            raise self._error
        self._buf += data
        buf = self._buf
        out: list[Frame] = []
        pos = 0
        try:
            while True:
                have = len(buf) - pos
                # check the marker as soon as its octets arrive, not only at 19
                n = min(have, 16)
                if buf[pos : pos + n] != MARKER[:n]:
                    raise _header_error(
                        HeaderSubcode.CONNECTION_NOT_SYNCHRONIZED, "marker is not all ones"
                    )
                if have < HEADER_LEN:
                    break
                mtype, length = check_header(bytes(buf[pos : pos + HEADER_LEN]), self.max_len)
                if have < length:
                    break
                out.append(Frame(mtype, bytes(buf[pos + HEADER_LEN : pos + length])))
                pos += length
        except MessageError as e:
            self._error = e
            raise
        finally:
            del buf[:pos]  # once per feed: no quadratic copying on a big read
        return out

    @property
    def buffered(self) -> int:
        return len(self._buf)
