"""The sans-I/O front door: feed bytes, take events."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from kubewire.gotrace.errors import TruncatedTraceError
from kubewire.gotrace.events import Event
from kubewire.gotrace.v1 import decode_v1
from kubewire.gotrace.v2 import V2Decoder, V2Splitter
from kubewire.gotrace.wire import HEADER_LEN, OLD_VERSIONS, check_header_prefix, read_header


class TraceReader:
    """Incremental reader. ``feed(chunk)`` returns the events that chunk completed.

    Current-format traces come out one generation at a time, so memory stays bounded by a
    generation. The Go 1.19 format writes the clock frequency at the very end and orders
    events only across the whole file, so its events come out at ``close()``.
    """

    def __init__(self) -> None:
        self.minor = 0
        self._head = bytearray()
        self._split: V2Splitter | None = None
        self._dec: V2Decoder | None = None
        self._old = bytearray()
        self._closed = False

    def feed(self, data: bytes) -> list[Event]:
        if not self.minor:
            self._head += data
            if len(self._head) < HEADER_LEN:
                check_header_prefix(bytes(self._head))  # fail early on a wrong prefix
                return []
            self.minor = read_header(bytes(self._head[:HEADER_LEN]))
            data = bytes(self._head[HEADER_LEN:])
            if self.minor in OLD_VERSIONS:
                self._old += self._head[:HEADER_LEN]
            self._head.clear()
            if self.minor not in OLD_VERSIONS:
                self._split = V2Splitter(self.minor)
                self._dec = V2Decoder(self.minor)
        if self._split is None:
            self._old += data
            return []
        self._split.feed(data)
        return self._drain()

    def close(self) -> list[Event]:
        if not self.minor:
            if not self._head:
                raise TruncatedTraceError("empty input: no trace header", 0)
            read_header(bytes(self._head))
            raise TruncatedTraceError("the header is cut short", len(self._head))
        if self._split is None:
            return decode_v1(bytes(self._old), self.minor)
        self._split.close()
        out = self._drain()
        assert self._dec is not None
        out.append(self._dec.final_sync(self._split.base))
        return out

    def _drain(self) -> list[Event]:
        assert self._split is not None and self._dec is not None
        out: list[Event] = []
        ready = self._split.ready
        while ready:
            gen, end = ready.pop(0)
            out.extend(self._dec.decode(gen, end))
        return out


def iter_events(chunks: Iterable[bytes]) -> Iterator[Event]:
    """Events of a trace given as chunks of bytes (e.g. ``iter(partial(f.read, 1 << 20), b"")``)."""
    r = TraceReader()
    for chunk in chunks:
        yield from r.feed(chunk)
    yield from r.close()


def read_events(data: bytes) -> list[Event]:
    """All events of a whole trace in memory."""
    return list(iter_events((data,)))
