"""The trace reader on its own: streaming, typed events, stacks, bad input."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from kubewire.gotrace import (
    CorruptTraceError,
    Event,
    GoTraceError,
    Kind,
    TraceError,
    TraceReader,
    TruncatedTraceError,
    UnsupportedVersionError,
    iter_events,
    read_events,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "gotrace"
_spec = importlib.util.spec_from_file_location("kubewire_gotrace_oracle", DATA / "oracle.py")
assert _spec and _spec.loader
oracle = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = oracle
_spec.loader.exec_module(oracle)

TRACES = sorted(p.name for p in DATA.glob("*.trace"))


def _bytes(name: str) -> bytes:
    return (DATA / name).read_bytes()


@pytest.mark.parametrize("name", TRACES)
def test_chunked_feed_gives_the_same_events(name: str) -> None:
    data = _bytes(name)
    whole = read_events(data)
    chunks = [data[i : i + 997] for i in range(0, len(data), 997)]
    assert list(iter_events(chunks)) == whole


def test_byte_at_a_time() -> None:
    data = _bytes("ticker-new.trace")
    r = TraceReader()
    out: list[Event] = []
    for i in range(len(data)):
        out.extend(r.feed(data[i : i + 1]))
    out.extend(r.close())
    assert out == read_events(data)


def test_current_format_streams_generation_by_generation() -> None:
    data = _bytes("ticker-new.trace")
    r = TraceReader()
    released = []
    for i in range(0, len(data), 512):
        released.append(len(r.feed(data[i : i + 512])))
    tail = r.close()
    # events come out before the end of the input, one generation at a time
    assert sum(released) > 0 and len(tail) > 0
    syncs = [e for e in read_events(data) if e.kind == Kind.SYNC]
    assert [e.args[0] for e in syncs] == list(range(1, len(syncs) + 1))
    assert len(syncs) >= 3


@pytest.mark.parametrize("name", TRACES)
def test_events_are_typed_and_time_ordered(name: str) -> None:
    evs = read_events(_bytes(name))
    assert all(isinstance(e.kind, Kind) for e in evs)
    ts = [e.ts for e in evs]
    if name.endswith("-new.trace"):
        assert ts == sorted(ts) and len(set(ts)) == len(ts)  # strictly increasing, as Go's
    else:
        assert ts == sorted(ts) and ts[0] == 0
    with pytest.raises(AttributeError):
        evs[0].ts = 1  # type: ignore[misc]


def test_stacks_resolve_to_source_lines() -> None:
    evs = read_events(_bytes("spawn-new.trace"))
    creates = [e for e in evs if e.kind == Kind.GO_CREATE and e.g == 1]
    assert creates
    assert creates[0].stack[-1].func == "main.main"
    assert creates[0].stack[-1].file.endswith("spawn/main.go")
    assert creates[-1].extra_stack[0].func == "main.main.func1"
    assert creates[0].arg("new_g") == creates[0].args[0]
    old = [e for e in read_events(_bytes("spawn-old.trace")) if e.kind == Kind.GO_CREATE]
    assert any(e.stack and e.stack[-1].func == "main.main" for e in old)


def test_block_reasons_are_named() -> None:
    new = {e.strings[0] for e in read_events(_bytes("net-new.trace")) if e.kind == Kind.GO_BLOCK}
    old = {e.strings[0] for e in read_events(_bytes("net-old.trace")) if e.kind == Kind.GO_BLOCK}
    assert "network" in new and "network" in old
    assert "chan receive" in new


# ---- bad input ----------------------------------------------------------------------------

def test_not_a_trace() -> None:
    with pytest.raises(CorruptTraceError, match="byte offset 0: not a Go execution trace"):
        read_events(b"GIF89a..........................")


def test_unknown_version() -> None:
    with pytest.raises(UnsupportedVersionError, match=r"go 1\.21 is not supported"):
        read_events(b"go 1.21 trace\x00\x00\x00" + b"\x01" * 10)
    with pytest.raises(UnsupportedVersionError, match=r"offset 0: .*go 1\.99"):
        read_events(b"go 1.99 trace\x00\x00\x00")


def test_empty_and_short_header() -> None:
    with pytest.raises(TruncatedTraceError, match="offset 0"):
        read_events(b"")
    with pytest.raises(TruncatedTraceError, match="offset 7"):
        read_events(b"go 1.26")


@pytest.mark.parametrize("name", ["spawn-new.trace", "spawn-old.trace", "ticker-new.trace"])
def test_truncation_names_the_offset(name: str) -> None:
    data = _bytes(name)
    for cut in (17, 40, len(data) // 3, len(data) - 1):
        with pytest.raises(TraceError) as ei:
            read_events(data[:cut])
        assert isinstance(ei.value, (TruncatedTraceError, CorruptTraceError))
        assert 0 <= ei.value.offset <= cut
        assert f"byte offset {ei.value.offset}:" in str(ei.value)


def test_corrupt_event_type_names_the_offset() -> None:
    data = bytearray(_bytes("cpu-new.trace"))
    # the first batch header: type, gen, m, ts, size; its first event follows
    r = read_events(bytes(data))
    first = min(e.offset for e in r if e.kind != Kind.SYNC)
    data[first] = 200
    with pytest.raises(CorruptTraceError, match=f"byte offset {first}: unknown event type 200"):
        read_events(bytes(data))


def test_errors_share_one_base() -> None:
    assert issubclass(TraceError, GoTraceError)
    for cls in (TruncatedTraceError, UnsupportedVersionError, CorruptTraceError):
        assert issubclass(cls, TraceError)


@pytest.mark.parametrize("name", [n for n in TRACES if n.endswith("-new.trace")])
def test_goroutine_transitions_are_causally_ordered(name: str) -> None:
    # The merge of the per-M streams must never show a goroutine leaving a state it is not
    # in (e.g. GoStart on one M before the GoUnblock on another): the scheduler model
    # replays this order.
    k = Kind
    moves = {k.GO_CREATE: (None, 1), k.GO_START: (1, 2), k.GO_STOP: (2, 1),
             k.GO_BLOCK: (2, 4), k.GO_UNBLOCK: (4, 1), k.GO_DESTROY: (2, None),
             k.GO_SYSCALL_BEGIN: (2, 3), k.GO_SYSCALL_END: (3, 2),
             k.GO_SYSCALL_END_BLOCKED: (3, 1)}
    state: dict[int, int | None] = {}
    checked = 0
    for e in read_events(_bytes(name)):
        if e.kind == k.GO_STATUS:
            state[e.args[0]] = e.args[2]
            continue
        if e.kind not in moves:
            continue
        gid = e.args[0] if e.kind in (k.GO_CREATE, k.GO_START, k.GO_UNBLOCK) else e.g
        frm, to = moves[e.kind]
        if frm is not None and gid in state:
            assert state[gid] == frm, f"{name}: {e}"
            checked += 1
        state[gid] = to
    assert checked > 500


@pytest.mark.parametrize("name", ["spawn-old.trace", "cpu-old.trace", "net-old.trace",
                                  "ticker-old.trace"])
def test_a_go_1_19_trace_cut_inside_its_stack_table_is_truncated(name: str) -> None:
    """Go 1.19 writes the Frequency event, then the stack table, last: a cut inside the
    table leaves a frequency and may fall between two entries, and then only the missing
    stacks give the cut away."""
    data = _bytes(name)
    by_stacks = 0
    for lost in range(1, 400, 7):
        with pytest.raises(TruncatedTraceError) as ei:
            read_events(data[:-lost])
        assert 0 <= ei.value.offset <= len(data) - lost
        by_stacks += "not in the stack table" in str(ei.value)
    assert by_stacks > 0
