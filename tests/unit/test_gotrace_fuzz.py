"""Fuzzing the reader: whatever the bytes, it returns events or raises its own TraceError."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubewire.gotrace import TraceError, TraceReader, read_events

DATA = Path(__file__).resolve().parents[1] / "data" / "gotrace"
# small real traces keep each example fast; both formats
SEEDS = [(DATA / n).read_bytes() for n in ("ticker-new.trace", "ticker-old.trace")]
HEADERS = [b"go 1.19 trace\x00\x00\x00", b"go 1.22 trace\x00\x00\x00",
           b"go 1.23 trace\x00\x00\x00", b"go 1.25 trace\x00\x00\x00",
           b"go 1.26 trace\x00\x00\x00"]
FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _read(data: bytes) -> None:
    try:
        read_events(data)
    except TraceError as e:
        assert 0 <= e.offset <= len(data)
        assert str(e).startswith(f"Go trace: byte offset {e.offset}: ")


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes(data: bytes) -> None:
    _read(data)


@FUZZ
@given(st.sampled_from(HEADERS), st.binary(max_size=400))
def test_random_bodies_behind_real_headers(header: bytes, body: bytes) -> None:
    _read(header + body)


@FUZZ
@given(st.sampled_from(range(len(SEEDS))), st.data())
def test_truncations(i: int, data: st.DataObject) -> None:
    seed = SEEDS[i]
    cut = data.draw(st.integers(0, len(seed)))
    _read(seed[:cut])


@FUZZ
@given(st.sampled_from(range(len(SEEDS))), st.data())
def test_mutations(i: int, data: st.DataObject) -> None:
    buf = bytearray(SEEDS[i])
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(buf) - 1))
        op = data.draw(st.sampled_from(["set", "insert", "delete"]))
        if op == "set":
            buf[pos] = data.draw(st.integers(0, 255))
        elif op == "insert":
            buf[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
        else:
            del buf[pos : pos + data.draw(st.integers(1, 16))]
    _read(bytes(buf))


@FUZZ
@given(st.sampled_from(range(len(SEEDS))), st.lists(st.integers(1, 4096), max_size=20))
def test_any_chunking(i: int, sizes: list[int]) -> None:
    seed = SEEDS[i]
    r = TraceReader()
    out = []
    pos = 0
    for s in sizes:
        out.extend(r.feed(seed[pos : pos + s]))
        pos += s
    out.extend(r.feed(seed[pos:]))
    out.extend(r.close())
    assert out == read_events(seed)
