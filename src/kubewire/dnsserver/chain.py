"""The plugin chain: order as data, requests, the pending marker and small wire helpers.

A handler is a plain function ``handle(req) -> bytes | None | Pending``: bytes is the reply,
None drops the query, and ``Pending`` hands the query to an async continuation (only
``forward`` makes one). Handlers run synchronously inside the socket callback, so a query the
cluster zone answers costs a few function calls and no task. Plugins that must see the reply
of a pending query (rewrite maps names back, cache stores it, metrics count it) attach a sync
transform with ``Pending.then``; the server applies them in order once the reply exists.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any

import dns.message
import dns.rcode

# Execution order, whatever order the Corefile lists them in (CoreDNS's plugin.cfg, cut down
# to the plugins kubewire implements; the relative order is CoreDNS's).
PLUGIN_ORDER: tuple[str, ...] = (
    "reload",
    "ready",
    "health",
    "prometheus",
    "errors",
    "log",
    "loadbalance",
    "cache",
    "rewrite",
    "hosts",
    "kubernetes",
    "loop",
    "forward",
)

_QR, _AA, _TC, _RD, _CD = 0x8000, 0x0400, 0x0200, 0x0100, 0x0010
SERVFAIL, NXDOMAIN, REFUSED = 2, 3, 5
_HEADER = struct.Struct("!HHHHHH")
_QTAIL = struct.Struct("!HH")


class Request:
    """One query as it travels the chain; ``wire`` is never modified (rewrite makes a copy)."""

    __slots__ = ("addr", "family", "max_udp", "proto", "start", "wire")

    def __init__(self, wire: bytes, addr: Any, proto: str, max_udp: int = 512,
                 family: int = 1, start: float | None = None) -> None:
        self.wire = wire
        self.addr = addr
        self.proto = proto  # "udp" or "tcp"
        self.max_udp = max_udp
        self.family = family  # 1 IPv4, 2 IPv6 (the metric label CoreDNS uses)
        self.start = time.perf_counter() if start is None else start

    def copy(self, wire: bytes) -> Request:
        return Request(wire, self.addr, self.proto, self.max_udp, self.family, self.start)


Resolve = Callable[[bytes], Awaitable[bytes | None]]


class Pending:
    """A query that needs I/O: ``resolve(query)`` then every ``then`` transform in order."""

    __slots__ = ("after", "query", "resolve")

    def __init__(self, query: bytes, resolve: Resolve) -> None:
        self.query = query
        self.resolve = resolve
        self.after: list[Callable[[bytes], bytes]] = []

    def then(self, fn: Callable[[bytes], bytes]) -> Pending:
        self.after.append(fn)
        return self

    def finish(self, out: bytes) -> bytes:
        for fn in self.after:
            out = fn(out)
        return out


Result = bytes | Pending | None
Handler = Callable[[Request], Result]
Observer = Callable[[Request, bytes | None], None]


# -- wire helpers (hand-written: these run per query on paths that must stay cheap) ---------


def question(wire: bytes) -> tuple[bytes, int, int, int] | None:
    """(lowercase qname wire, qtype, qclass, end offset) of an uncompressed first question."""
    n = len(wire)
    if n < 17 or wire[4:6] == b"\x00\x00":
        return None
    pos = 12
    while True:
        if pos >= n:
            return None
        length = wire[pos]
        if length == 0:
            break
        if length > 63:
            return None
        pos += length + 1
    if pos + 5 > n:
        return None
    qtype, qclass = _QTAIL.unpack_from(wire, pos + 1)
    return wire[12:pos + 1].lower(), qtype, qclass, pos + 5


def qtype_of(wire: bytes) -> int:
    """The question type, found cheaply (metrics only: a zero byte inside a label misleads it)."""
    z = wire.find(0, 12)
    return (wire[z + 1] << 8) | wire[z + 2] if 0 < z < len(wire) - 2 else 0


def name_text(lname: bytes) -> str:
    """Absolute text of an uncompressed wire name: b"\\x03www\\x00" -> "www."."""
    labels, pos = [], 0
    while pos < len(lname) and lname[pos]:
        ln = lname[pos]
        labels.append(lname[pos + 1:pos + 1 + ln].decode("ascii", "backslashreplace"))
        pos += ln + 1
    return ".".join(labels) + "." if labels else "."


def name_wire(text: str) -> bytes | None:
    """Wire form of a plain absolute name, or None if a label is empty or too long."""
    text = text.rstrip(".")
    if not text:
        return b"\x00"
    out = bytearray()
    for label in text.split("."):
        raw = label.encode("ascii", "replace")
        if not 0 < len(raw) < 64:
            return None
        out.append(len(raw))
        out += raw
    out.append(0)
    return bytes(out) if len(out) <= 255 else None


def edns_of(wire: bytes, qend: int) -> tuple[int, bool] | None:
    """(payload size, DO bit) of an OPT record right after the question, or None."""
    if wire[10:12] != b"\x00\x01" or len(wire) < qend + 11 or wire[qend] != 0 \
            or wire[qend + 1:qend + 3] != b"\x00\x29":
        return None
    return (wire[qend + 3] << 8) | wire[qend + 4], bool(wire[qend + 7] & 0x80)


def reply(query: bytes, rcode: int, aa: bool = False) -> bytes | None:
    """An empty reply with ``rcode`` echoing the question and EDNS (dnspython: rare paths)."""
    if len(query) < 12:
        return None
    try:
        msg = dns.message.from_wire(query)
        out = dns.message.make_response(msg)
        out.set_rcode(dns.rcode.Rcode.make(rcode))
        if aa:
            out.flags |= _AA
        wire: bytes = out.to_wire()
        return wire
    except Exception:  # no readable question: a bare header still tells the client the verdict
        qid, flags = _HEADER.unpack_from(query)[:2]
        return _HEADER.pack(qid, _QR | (flags & (0x7800 | _RD | _CD)) | rcode, 0, 0, 0, 0)


def end_of_chain(req: Request) -> Result:
    """Past the last plugin: nobody owned the name (CoreDNS answers SERVFAIL too)."""
    return reply(req.wire, SERVFAIL)


__all__ = ["PLUGIN_ORDER", "Handler", "Observer", "Pending", "Request", "Resolve", "Result",
           "edns_of", "end_of_chain", "name_text", "name_wire", "qtype_of", "question",
           "reply"]
