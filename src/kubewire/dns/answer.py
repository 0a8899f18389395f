"""respond: one DNS query in, one reply out, no I/O (the server owns the sockets).

Two parsers: a hand-written one for the shape nearly every stub resolver sends (one question,
no other records but an optional OPT) that feeds precomputed bytes straight out, and dnspython
for everything else, which decides FORMERR, NOTIMP and BADVERS and then rejoins the same path.
The fast parser only ever declines to handle a packet; it never judges one malformed.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Literal

import dns.message
import dns.opcode

from kubewire.dns.names import undash_v4, wire_to_text
from kubewire.dns.zone import ANY, NOERROR, Answer, ClusterZone, Record

EDNS_PAYLOAD = 1232  # DNS Flag Day 2020: fits an IPv6 minimum MTU without fragmenting
MAX_TCP = 65535
FORMERR, NOTIMP, BADVERS = 1, 4, 16
_A = 1
_META_QTYPES = frozenset({251, 252, 253, 254})  # IXFR, AXFR, MAILB, MAILA: not served here
_OPT_QTYPE = 41

_HEADER = struct.Struct("!HHHHHH")
_QTAIL = struct.Struct("!HH")
_OPT = struct.Struct("!HHBBHH")  # type, payload, ext-rcode, version, flags, rdlen
_QR, _AA, _TC, _RD, _CD = 0x8000, 0x0400, 0x0200, 0x0100, 0x0010
_DO = 0x8000


@dataclass(frozen=True, slots=True)
class NotMine:
    """The question is outside the cluster zone: the caller passes ``query`` on (forward)."""

    query: bytes
    qname_wire: bytes  # lowercase, uncompressed
    qtype: int

    @property
    def qname(self) -> str:
        return wire_to_text(self.qname_wire)


Result = bytes | NotMine | None  # None: drop silently (unreadable header, or not a query)


def respond(zone: ClusterZone, wire: bytes, max_udp: int = 512,
            transport: Literal["udp", "tcp"] = "udp", edns_payload: int = EDNS_PAYLOAD) -> Result:
    """Answer ``wire`` from ``zone``.

    ``max_udp`` bounds replies to clients without EDNS0 (RFC 1035: 512). An EDNS0 client's
    advertised size is used instead, capped at ``edns_payload``, which we also advertise.
    TCP replies are bounded only by the 16-bit length prefix.
    """
    n = len(wire)
    if n < 12:
        return None
    qid, flags, qd, an, ns, ar = _HEADER.unpack_from(wire)
    if flags & _QR:
        return None  # never answer a response: that is how reflection loops start
    if flags & 0x7800 or qd != 1 or an or ns or ar > 1:
        return _slow(zone, wire, max_udp, transport, edns_payload)
    pos = 12
    while True:
        if pos >= n:
            return _slow(zone, wire, max_udp, transport, edns_payload)
        length = wire[pos]
        if length == 0:
            break
        if length > 63:  # a compression pointer or a reserved label type
            return _slow(zone, wire, max_udp, transport, edns_payload)
        pos += length + 1
    qend = pos + 5
    if pos - 11 > 255 or qend > n:
        return _slow(zone, wire, max_udp, transport, edns_payload)
    qtype, qclass = _QTAIL.unpack_from(wire, pos + 1)
    edns: tuple[int, int] | None = None
    if ar:
        if n < qend + 11 or wire[qend] != 0:
            return _slow(zone, wire, max_udp, transport, edns_payload)
        rtype, payload, _ext, version, eflags, rdlen = _OPT.unpack_from(wire, qend + 1)
        if rtype != _OPT_QTYPE or version or qend + 11 + rdlen != n or not _options_ok(
                wire, qend + 11, n):
            return _slow(zone, wire, max_udp, transport, edns_payload)
        edns = (payload, eflags & _DO)
    elif qend != n:
        return _slow(zone, wire, max_udp, transport, edns_payload)
    return _answer(zone, wire, qid, flags, wire[12:qend], wire[12:pos + 1].lower(), qtype,
                   qclass, edns, _limit(edns, max_udp, transport, edns_payload), edns_payload)


def _options_ok(wire: bytes, pos: int, end: int) -> bool:
    while pos < end:
        if pos + 4 > end:
            return False
        pos += 4 + int.from_bytes(wire[pos + 2:pos + 4], "big")
    return pos == end


def _limit(edns: tuple[int, int] | None, max_udp: int, transport: str, edns_payload: int) -> int:
    if transport == "tcp":
        return MAX_TCP
    if edns is None:
        return max_udp
    return max(512, min(edns[0], edns_payload))  # RFC 6891 6.2.5: below 512 means 512


def _opt(edns: tuple[int, int] | None, payload: int, rcode: int = 0) -> bytes:
    if edns is None:
        return b""
    # RFC 3225: the DO bit is copied; options (cookies, ...) are not echoed, as RFC 7873
    # allows a server that does not implement them.
    return b"\x00" + _OPT.pack(_OPT_QTYPE, payload, rcode >> 4, 0, edns[1], 0)


def _answer(zone: ClusterZone, wire: bytes, qid: int, qflags: int, question: bytes,
            lname: bytes, qtype: int, qclass: int, edns: tuple[int, int] | None, limit: int,
            payload: int) -> Result:
    ans = zone.answers.get((lname, qtype)) if qclass == 1 else None
    if ans is None:
        if qclass != 1:  # CH, HS, ANY class: not the cluster's business
            return NotMine(wire, lname, qtype)
        found = _miss(zone, lname, qtype)
        if found is None:
            return NotMine(wire, lname, qtype)
        if isinstance(found, int):
            return _header_only(qid, qflags, found, edns, payload)
        ans = found
    flags = _QR | _AA | (qflags & (_RD | _CD)) | ans.rcode
    opt = _opt(edns, payload)
    counts = len(ans.answer), len(ans.authority), len(ans.additional)
    body = ans.body
    if 12 + len(question) + len(body) + len(opt) > limit:
        body, counts = ans.short_body, (counts[0], counts[1], 0)
        if 12 + len(question) + len(body) + len(opt) > limit:
            body, counts, flags = b"", (0, 0, 0), flags | _TC
    return (_HEADER.pack(qid, flags, 1, counts[0], counts[1], counts[2] + (1 if opt else 0))
            + question + body + opt)


def _under(lname: bytes, apex: bytes) -> bool:
    cut = len(lname) - len(apex)
    if cut < 0 or not lname.endswith(apex):
        return False
    pos = 0
    while pos < cut:
        pos += lname[pos] + 1
    return pos == cut  # a suffix match inside a label is not a subdomain


def _miss(zone: ClusterZone, lname: bytes, qtype: int) -> Answer | int | None:
    """The answer for a name/type not in the table: CNAME, negative, pod, error or not ours."""
    cname = zone.cnames.get(lname)
    if cname is not None:
        return cname
    if not _under(lname, zone.apex_wire):
        if lname in zone.reverse_names:
            return zone.reverse_nodata6 if lname.endswith(b"\x03ip6\x04arpa\x00") else \
                zone.reverse_nodata
        return None  # unknown reverse names fall through too, as CoreDNS `fallthrough` does
    if qtype in _META_QTYPES:
        return NOTIMP
    if qtype == _OPT_QTYPE:
        return FORMERR  # RFC 6891 6.1.1: OPT is not a question type
    if lname in zone.names:
        return zone.nodata
    pod = _pod(zone, lname, qtype)
    return pod if pod is not None else zone.nxdomain


def _pod(zone: ClusterZone, lname: bytes, qtype: int) -> Answer | None:
    """``a-b-c-d.<ns>.pod.<domain>`` for any address, as CoreDNS ``pods insecure`` answers."""
    tail = b"\x03pod" + zone.apex_wire
    if not lname.endswith(tail):
        return None
    head = lname[:-len(tail)]
    first = head[1:1 + head[0]] if head else b""
    if head[1 + len(first):] not in zone.pod_namespaces:
        return None
    ip = undash_v4(first.decode("ascii", "replace"))
    if ip is None:
        return None
    if qtype not in (_A, ANY):
        return zone.nodata
    rec = Record("", _A, bytes(map(int, ip.split("."))), ip)  # owner "" = the qname pointer
    # Built per query: the name space is every IPv4 address, so it cannot be precomputed.
    return Answer.build("", NOERROR, (rec,))


def _header_only(qid: int, qflags: int, rcode: int, edns: tuple[int, int] | None,
                 payload: int) -> bytes:
    opt = _opt(edns, payload, rcode)
    flags = _QR | (qflags & (0x7800 | _RD | _CD)) | (rcode & 0xF)
    return _HEADER.pack(qid, flags, 0, 0, 0, 1 if opt else 0) + opt


def _slow(zone: ClusterZone, wire: bytes, max_udp: int, transport: str,
          edns_payload: int) -> Result:
    qid, qflags = _HEADER.unpack_from(wire)[:2]
    try:
        msg = dns.message.from_wire(wire)
    except dns.message.ShortHeader:
        return None
    except Exception:  # dnspython raises many unrelated classes for bad input
        return _header_only(qid, qflags, FORMERR, None, edns_payload)
    edns = (msg.payload, msg.ednsflags & _DO) if msg.edns >= 0 else None
    if msg.edns > 0:
        return _header_only(qid, qflags, BADVERS, edns, edns_payload)
    if msg.opcode() != dns.opcode.QUERY:
        return _header_only(qid, qflags, NOTIMP, edns, edns_payload)
    if len(msg.question) != 1:
        return _header_only(qid, qflags, FORMERR, edns, edns_payload)
    q = msg.question[0]
    qwire = q.name.to_wire() or b"\x00"  # only None without a file; keeps mypy honest
    question = qwire + _QTAIL.pack(q.rdtype, q.rdclass)
    # The reply is rebuilt from the parsed question, so it is always the plain shape: whatever
    # else the query carried (answer records, a second OPT) is not echoed.
    return _answer(zone, wire, qid, qflags, question, qwire.lower(), q.rdtype, q.rdclass, edns,
                   _limit(edns, max_udp, transport, edns_payload), edns_payload)


__all__ = ["EDNS_PAYLOAD", "NotMine", "Result", "respond"]
