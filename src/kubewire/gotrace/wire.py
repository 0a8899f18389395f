"""Bits both formats share: the header and unsigned LEB128 varints."""

from __future__ import annotations

import re

from kubewire.gotrace.errors import CorruptTraceError, TruncatedTraceError, UnsupportedVersionError

HEADER_LEN = 16
_HEADER = re.compile(rb"go 1\.(\d+) trace\x00\x00\x00")
_HEADER_PREFIX = re.compile(rb"(g(o( (1(\.(\d+( (t(r(a(c(e\x00{0,3})?)?)?)?)?)?)?)?)?)?)?)?\Z")
OLD_VERSIONS = frozenset({19})
NEW_VERSIONS = frozenset({22, 23, 24, 25, 26, 27})


def read_header(buf: bytes) -> int:
    """The minor version (19, 22, ...) named by the 16-byte header at the start of ``buf``."""
    if len(buf) < HEADER_LEN:
        check_header_prefix(buf)
        raise TruncatedTraceError(
            f"the header is cut short ({len(buf)} of {HEADER_LEN} bytes)", len(buf)
        )
    m = _HEADER.fullmatch(buf[:HEADER_LEN])
    if m is None:
        raise CorruptTraceError("not a Go execution trace (no 'go 1.N trace' header)", 0)
    minor = int(m.group(1))
    if minor not in OLD_VERSIONS and minor not in NEW_VERSIONS:
        supported = ", ".join(f"1.{v}" for v in sorted(OLD_VERSIONS | NEW_VERSIONS))
        raise UnsupportedVersionError(
            f"trace format go 1.{minor} is not supported (supported: {supported})", 0
        )
    return minor


def check_header_prefix(buf: bytes) -> None:
    """Raise unless ``buf`` could be the start of a trace header."""
    if not _HEADER_PREFIX.match(buf):
        raise CorruptTraceError("not a Go execution trace (no 'go 1.N trace' header)", 0)


def uvarint(buf: bytes | bytearray, pos: int, end: int) -> tuple[int, int]:
    """Decode one varint at ``pos``; returns (value, next position)."""
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise TruncatedTraceError("the data ends inside a varint", pos)
        b = buf[pos]
        pos += 1
        if b < 0x80:
            if shift > 63 or (shift == 63 and b > 1):
                raise CorruptTraceError("varint overflows 64 bits", pos - 1)
            return result | (b << shift), pos
        result |= (b & 0x7F) << shift
        shift += 7
        if shift > 63:
            raise CorruptTraceError("varint longer than 10 bytes", pos - 1)
