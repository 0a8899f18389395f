"""The built-in server's sans-I/O HTTP/1.1 request parser and response writer."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubewire.workload.http import (
    MAX_HEAD,
    BadRequest,
    ContinueNeeded,
    Event,
    Request,
    RequestParser,
    canonical_header_name,
    render_response,
)

SIMPLE = b"GET /a?b=c HTTP/1.1\r\nHost: example.com\r\nX-Test: one\r\nx-test: two\r\n\r\n"

PIPELINE = (
    b"GET /first HTTP/1.1\r\nHost: h\r\n\r\n"
    b"POST /second HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
    b"PUT /third HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3;ext=1\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nX-Trailer: t\r\n\r\n"
    b"HEAD /fourth HTTP/1.0\r\n\r\n"
)


def byte_at_a_time(data: bytes) -> list[Event]:
    parser = RequestParser()
    events: list[Event] = []
    for i in range(len(data)):
        events += parser.feed(data[i : i + 1])
    return events


def test_simple_request_fields() -> None:
    (request,) = RequestParser().feed(SIMPLE)
    assert request == Request(
        method="GET",
        target="/a?b=c",
        version="HTTP/1.1",
        headers=(("Host", "example.com"), ("X-Test", "one"), ("x-test", "two")),
        body_length=0,
    )
    assert request.host == "example.com"
    assert request.header("x-TEST") == "one"
    assert request.header_values("X-Test") == ["one", "two"]
    assert request.keep_alive


def test_byte_at_a_time_matches_whole_feed() -> None:
    whole = RequestParser().feed(PIPELINE)
    assert byte_at_a_time(PIPELINE) == whole
    assert [(r.method, r.target, r.body_length) for r in whole if isinstance(r, Request)] == [
        ("GET", "/first", 0),
        ("POST", "/second", 5),
        ("PUT", "/third", 19),
        ("HEAD", "/fourth", 0),
    ]
    assert len(whole) == 4


@settings(max_examples=200, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=len(PIPELINE)), max_size=12))
def test_any_split_gives_the_same_events(cuts: list[int]) -> None:
    parser = RequestParser()
    events: list[Event] = []
    points = [0, *sorted(cuts), len(PIPELINE)]
    for start, end in itertools.pairwise(points):
        events += parser.feed(PIPELINE[start:end])
    assert events == RequestParser().feed(PIPELINE)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    parser = RequestParser()
    events = parser.feed(data)
    for event in events[:-1]:
        assert not isinstance(event, BadRequest)
    if events and isinstance(events[-1], BadRequest):
        assert parser.dead
        assert parser.feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") == []


def test_bare_lf_and_leading_empty_lines_are_accepted() -> None:
    (request,) = RequestParser().feed(b"\r\n\nGET / HTTP/1.1\nHost: x\n\n")
    assert isinstance(request, Request)
    assert request.target == "/"


def test_incomplete_request_waits() -> None:
    parser = RequestParser()
    assert parser.feed(b"GET / HTTP/1.1\r\nHost: x\r\n") == []
    assert not parser.idle
    assert parser.feed(b"Content-Length: 3\r\n\r\nab") == []
    (request,) = parser.feed(b"c")
    assert isinstance(request, Request) and request.body_length == 3
    assert parser.idle


def test_expect_continue_comes_before_the_request() -> None:
    data = b"POST /u HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"
    parser = RequestParser()
    assert parser.feed(data) == [ContinueNeeded()]
    (request,) = parser.feed(b"ok")
    assert isinstance(request, Request) and request.body_length == 2


def test_expect_continue_without_body_is_just_a_request() -> None:
    data = b"GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n"
    events = RequestParser().feed(data)
    assert len(events) == 1 and isinstance(events[0], Request)


@pytest.mark.parametrize(
    ("version", "connection", "keep_alive"),
    [
        ("HTTP/1.1", None, True),
        ("HTTP/1.1", "close", False),
        ("HTTP/1.1", "foo, Close", False),
        ("HTTP/1.0", None, False),
        ("HTTP/1.0", "keep-alive", True),
    ],
)
def test_keep_alive(version: str, connection: str | None, keep_alive: bool) -> None:
    head = f"GET / {version}\r\nHost: x\r\n"
    if connection:
        head += f"Connection: {connection}\r\n"
    (request,) = RequestParser().feed((head + "\r\n").encode())
    assert isinstance(request, Request)
    assert request.keep_alive is keep_alive


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /\r\n\r\n", 400),
        (b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"G(T / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n", 400),
        (b"GET / HTTX/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
        (b"GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n\r\n", 400),  # no Host
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: v\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n folded\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: \xb2\r\n\r\n", 400),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n",
            400,
        ),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n", 400),
    ],
)
def test_malformed_requests(data: bytes, status: int) -> None:
    for events in (RequestParser().feed(data), byte_at_a_time(data)):
        assert len(events) == 1
        assert isinstance(events[0], BadRequest)
        assert events[0].status == status
        assert events[0].reason


def test_identical_duplicate_content_length_is_fine() -> None:
    data = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2, 2\r\n\r\nab"
    (request,) = RequestParser().feed(data)
    assert isinstance(request, Request) and request.body_length == 2


def test_good_requests_before_a_bad_one_are_delivered() -> None:
    events = RequestParser().feed(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\nNOT HTTP\r\n\r\n")
    assert isinstance(events[0], Request) and events[0].target == "/ok"
    assert isinstance(events[1], BadRequest)
    assert len(events) == 2


def test_head_size_is_bounded_even_without_newlines() -> None:
    parser = RequestParser()
    events: list[Event] = []
    for _ in range(10):
        events += parser.feed(b"a" * 4096)
    (event,) = events
    assert isinstance(event, BadRequest) and event.status == 414
    parser = RequestParser()
    events = parser.feed(b"GET / HTTP/1.1\r\nHost: x\r\n")
    for _ in range(MAX_HEAD // 4000 + 2):
        events += parser.feed(b"X-More: " + b"m" * 4000 + b"\r\n")
    (event,) = events
    assert isinstance(event, BadRequest) and event.status == 431


def test_too_many_headers() -> None:
    data = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"A: b\r\n" * 200 + b"\r\n"
    (event,) = RequestParser().feed(data)
    assert isinstance(event, BadRequest) and event.status == 431


def test_large_body_is_counted_not_stored() -> None:
    parser = RequestParser()
    assert parser.feed(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n") == []
    for _ in range(99):
        assert parser.feed(b"x" * 10000) == []
        assert len(parser._buf) == 0
    (request,) = parser.feed(b"x" * 10000)
    assert isinstance(request, Request) and request.body_length == 1_000_000


def test_next_event_hands_out_one_at_a_time() -> None:
    parser = RequestParser()
    parser.receive(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
    first = parser.next_event()
    assert isinstance(first, Request) and first.target == "/1"
    second = parser.next_event()
    assert isinstance(second, Request) and second.target == "/2"
    assert parser.next_event() is None


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("x-forwarded-for", "X-Forwarded-For"),
        ("USER-AGENT", "User-Agent"),
        ("content-type", "Content-Type"),
        ("x", "X"),
        ("a--b", "A--B"),
    ],
)
def test_canonical_header_name(raw: str, canonical: str) -> None:
    assert canonical_header_name(raw) == canonical


def test_render_response() -> None:
    full = render_response(200, b'{"a":1}')
    assert full == (
        b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{"a":1}'
    )
    head = render_response(400, b"abc", keep_alive=False, head_only=True)
    assert head == (
        b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
        b"Content-Length: 3\r\nConnection: close\r\n\r\n"
    )
    old = render_response(200, b"", version="HTTP/1.0")
    assert old.startswith(b"HTTP/1.0 200 OK\r\n")
    assert b"Connection: keep-alive\r\n" in old
