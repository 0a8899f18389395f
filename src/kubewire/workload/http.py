"""A small sans-I/O HTTP/1.1 request parser and response writer.

The parser takes bytes (`receive`) and hands out events one at a time (`next_event`), so
the driver can stop pulling events while its write buffer is full: memory per connection
stays bounded by one socket read plus the head limit. Request bodies (Content-Length or
chunked) are consumed and counted, never stored.

Events: `Request` (a complete request, body consumed), `ContinueNeeded` (the head asked
for `Expect: 100-continue`), `BadRequest` (the connection must answer with its status and
close; the parser is dead afterwards).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from http import HTTPStatus

MAX_LINE = 8192
MAX_HEAD = 32768
MAX_HEADERS = 100
MAX_CHUNK_LINE = 1024

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VERSION = re.compile(rb"HTTP/([0-9])\.([0-9])")
_CTL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_TARGET_BAD = re.compile(rb"[\x00-\x20\x7f]")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    target: str
    version: str
    headers: tuple[tuple[str, str], ...]
    body_length: int = 0

    def header(self, name: str) -> str | None:
        """The first value of a header (case-insensitive), or None."""
        lowered = name.lower()
        for key, value in self.headers:
            if key.lower() == lowered:
                return value
        return None

    def header_values(self, name: str) -> list[str]:
        lowered = name.lower()
        return [value for key, value in self.headers if key.lower() == lowered]

    @property
    def keep_alive(self) -> bool:
        tokens = {
            token.strip().lower()
            for value in self.header_values("connection")
            for token in value.split(",")
        }
        if self.version == "HTTP/1.0":
            return "keep-alive" in tokens
        return "close" not in tokens

    @property
    def host(self) -> str:
        return self.header("host") or ""


@dataclass(frozen=True, slots=True)
class ContinueNeeded:
    """The client waits for `100 Continue` before sending the body."""


@dataclass(frozen=True, slots=True)
class BadRequest:
    status: int
    reason: str


Event = Request | ContinueNeeded | BadRequest


class _State(enum.Enum):
    HEAD = "head"
    BODY = "body"
    CHUNK_SIZE = "chunk-size"
    CHUNK_DATA = "chunk-data"
    CHUNK_END = "chunk-end"
    TRAILER = "trailer"
    DEAD = "dead"


class _Reject(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class RequestParser:
    """Parses a stream of pipelined HTTP/1.x requests from one connection."""

    def __init__(
        self, *, max_line: int = MAX_LINE, max_head: int = MAX_HEAD, max_headers: int = MAX_HEADERS
    ) -> None:
        self._max_line = max_line
        self._max_head = max_head
        self._max_headers = max_headers
        self._buf = bytearray()
        self._scan = 0
        self._state = _State.HEAD
        self._lines: list[bytes] = []
        self._head_size = 0
        self._head: Request | None = None
        self._remaining = 0
        self._body_length = 0

    @property
    def dead(self) -> bool:
        return self._state is _State.DEAD

    @property
    def idle(self) -> bool:
        """True between requests with nothing buffered."""
        return self._state is _State.HEAD and not self._buf and not self._lines

    def receive(self, data: bytes) -> None:
        if self._state is not _State.DEAD:
            self._buf += data

    def next_event(self) -> Event | None:
        """The next event, or None when more bytes are needed (or the parser is dead)."""
        if self._state is _State.DEAD:
            return None
        try:
            return self._step()
        except _Reject as reject:
            self._state = _State.DEAD
            self._buf.clear()
            self._lines.clear()
            return BadRequest(reject.status, reject.reason)

    def feed(self, data: bytes) -> list[Event]:
        """receive() then drain every available event (handy for tests and simple drivers)."""
        self.receive(data)
        events: list[Event] = []
        while (event := self.next_event()) is not None:
            events.append(event)
        return events

    def _take_line(self, limit: int, status: int) -> bytes | None:
        idx = self._buf.find(b"\n", self._scan)
        if idx < 0:
            if len(self._buf) > limit:
                raise _Reject(status, "line too long")
            self._scan = len(self._buf)
            return None
        if idx > limit:
            raise _Reject(status, "line too long")
        line = bytes(self._buf[:idx])
        del self._buf[: idx + 1]
        self._scan = 0
        return line[:-1] if line.endswith(b"\r") else line

    def _step(self) -> Event | None:
        while True:
            state = self._state
            if state is _State.HEAD:
                line = self._take_line(self._max_line, 431 if self._lines else 414)
                if line is None:
                    if self._head_size + len(self._buf) > self._max_head:
                        raise _Reject(431, "request head too large")
                    return None
                self._head_size += len(line) + 2
                if self._head_size > self._max_head:
                    raise _Reject(431, "request head too large")
                if not self._lines and not line:
                    # RFC 9112 2.2: ignore empty lines before the request line.
                    continue
                if line:
                    if len(self._lines) > self._max_headers:
                        raise _Reject(431, "too many header fields")
                    self._lines.append(line)
                    continue
                event = self._finish_head()
                if event is not None:
                    return event
            elif state is _State.BODY:
                if self._remaining and self._buf:
                    take = min(self._remaining, len(self._buf))
                    del self._buf[:take]
                    self._remaining -= take
                    self._body_length += take
                if self._remaining:
                    return None
                return self._complete()
            elif state is _State.CHUNK_SIZE:
                line = self._take_line(MAX_CHUNK_LINE, 400)
                if line is None:
                    return None
                size_text = line.split(b";", 1)[0].strip(b" \t")
                if not _HEX.fullmatch(size_text):
                    raise _Reject(400, "bad chunk size")
                size = int(size_text, 16)
                if size == 0:
                    self._state = _State.TRAILER
                else:
                    self._remaining = size
                    self._state = _State.CHUNK_DATA
            elif state is _State.CHUNK_DATA:
                take = min(self._remaining, len(self._buf))
                del self._buf[:take]
                self._remaining -= take
                self._body_length += take
                if self._remaining:
                    return None
                self._state = _State.CHUNK_END
            elif state is _State.CHUNK_END:
                line = self._take_line(2, 400)
                if line is None:
                    return None
                if line:
                    raise _Reject(400, "chunk data longer than its size")
                self._state = _State.CHUNK_SIZE
            elif state is _State.TRAILER:
                line = self._take_line(self._max_line, 431)
                if line is None:
                    return None
                self._head_size += len(line) + 2
                if self._head_size > self._max_head:
                    raise _Reject(431, "trailer section too large")
                if not line:
                    return self._complete()
            else:  # pragma: no cover - DEAD is handled by next_event
                return None

    def _finish_head(self) -> Event | None:
        request_line, *header_lines = self._lines
        self._lines = []
        parts = request_line.split(b" ")
        if len(parts) != 3 or not all(parts):
            raise _Reject(400, "malformed request line")
        method, target, version = parts
        if not _TOKEN.fullmatch(method):
            raise _Reject(400, "malformed method")
        if _TARGET_BAD.search(target):
            raise _Reject(400, "malformed request target")
        match = _VERSION.fullmatch(version)
        if match is None:
            raise _Reject(400, "malformed HTTP version")
        if match.group(1) != b"1":
            raise _Reject(505, "only HTTP/1.0 and HTTP/1.1 are supported")
        version_text = "HTTP/1.0" if match.group(2) == b"0" else "HTTP/1.1"
        headers = tuple(_parse_header(line) for line in header_lines)
        head = Request(
            method=method.decode("ascii"),
            target=target.decode("latin-1"),
            version=version_text,
            headers=headers,
        )
        if version_text == "HTTP/1.1" and not head.header_values("host"):
            raise _Reject(400, "HTTP/1.1 request without Host header")
        if len(head.header_values("host")) > 1:
            raise _Reject(400, "more than one Host header")
        self._head = head
        self._body_length = 0
        transfer = head.header_values("transfer-encoding")
        lengths = head.header_values("content-length")
        if transfer:
            if lengths:
                # RFC 9112 6.3: both present smells of request smuggling; refuse.
                raise _Reject(400, "both Transfer-Encoding and Content-Length")
            codings = [c.strip().lower() for v in transfer for c in v.split(",")]
            if codings[-1] != "chunked" or codings.count("chunked") != 1:
                raise _Reject(400, "unsupported Transfer-Encoding")
            self._state = _State.CHUNK_SIZE
            body_expected = True
        elif lengths:
            values = {v.strip() for value in lengths for v in value.split(",")}
            if len(values) != 1:
                raise _Reject(400, "conflicting Content-Length values")
            (text,) = values
            if not text.isdigit() or len(text) > 18 or not text.isascii():
                raise _Reject(400, "malformed Content-Length")
            self._remaining = int(text)
            self._state = _State.BODY
            body_expected = self._remaining > 0
        else:
            self._remaining = 0
            self._state = _State.BODY
            body_expected = False
        expect = (head.header("expect") or "").strip().lower()
        if body_expected and version_text == "HTTP/1.1" and expect == "100-continue":
            return ContinueNeeded()
        return None

    def _complete(self) -> Request:
        head = self._head
        assert head is not None
        self._head = None
        self._state = _State.HEAD
        self._head_size = 0
        return Request(head.method, head.target, head.version, head.headers, self._body_length)


def _parse_header(line: bytes) -> tuple[str, str]:
    if line[:1] in (b" ", b"\t"):
        raise _Reject(400, "obsolete header line folding")
    name, sep, value = line.partition(b":")
    if not sep or not _TOKEN.fullmatch(name):
        raise _Reject(400, "malformed header field")
    value = value.strip(b" \t")
    if _CTL.search(value):
        raise _Reject(400, "control character in header value")
    return name.decode("ascii"), value.decode("latin-1")


def canonical_header_name(name: str) -> str:
    """Go's textproto.CanonicalMIMEHeaderKey: `x-forwarded-for` -> `X-Forwarded-For`.

    The Gateway API echo server reports header names this way, so tools that compare
    echoed headers get the same keys from kubewire.
    """
    if not _TOKEN.fullmatch(name.encode("latin-1", "replace")):
        return name
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def reason_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def render_response(
    status: int,
    body: bytes,
    *,
    content_type: str = "application/json",
    keep_alive: bool = True,
    head_only: bool = False,
    version: str = "HTTP/1.1",
) -> bytes:
    """A complete response. HEAD responses carry the Content-Length of the body they omit."""
    lines = [
        f"{version} {status} {reason_phrase(status)}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
    ]
    if not keep_alive:
        lines.append("Connection: close")
    elif version == "HTTP/1.0":
        lines.append("Connection: keep-alive")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + body


CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
