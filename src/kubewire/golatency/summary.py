"""A whole-trace summary, and the run slices (which goroutine ran on which P, when)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from kubewire.gotrace import Event, Kind

PSEUDO_P = 1000000


def format_ns(ns: int) -> str:
    """A duration for people: 850 ns, 12.3 µs, 4.56 ms, 2.50 s."""
    if ns < 1_000:
        return f"{ns} ns"
    if ns < 1_000_000:
        return f"{ns / 1e3:.1f} µs"
    if ns < 1_000_000_000:
        return f"{ns / 1e6:.2f} ms"
    return f"{ns / 1e9:.2f} s"


@dataclass(frozen=True, slots=True)
class Slice:
    """A goroutine running on a P from ``start`` to ``end`` (ns)."""

    p: int
    g: int
    start: int
    end: int


def iter_slices(events: Iterable[Event]) -> Iterator[Slice]:
    """Run slices in order of their end.

    A slice starts at GoStart (or at a fast syscall return, which keeps the P) and ends when the
    goroutine stops, blocks or exits, when its P is taken in a syscall (ProcSteal, Go 1.19's
    GoSysBlock) or stops, or when the next trace event on that P starts someone else. Syscall
    time that kept the P counts as running: the P could run nothing else meanwhile.
    """
    running: dict[int, tuple[int, int]] = {}  # p -> (g, start)
    where: dict[int, int] = {}  # g -> p
    last_ts = 0

    def close(p: int, ts: int) -> Slice | None:
        cur = running.pop(p, None)
        if cur is None:
            return None
        where.pop(cur[0], None)
        return Slice(p, cur[0], cur[1], ts)

    for ev in events:
        k = ev.kind
        last_ts = ev.ts
        done: Slice | None = None
        if k is Kind.GO_START or k is Kind.GO_SYSCALL_END:
            g = ev.args[0] if k is Kind.GO_START else ev.g
            if 0 <= ev.p < PSEUDO_P and g > 0 and where.get(g) != ev.p:
                done = close(ev.p, ev.ts)
                old_p = where.get(g)
                if old_p is not None and (other := close(old_p, ev.ts)) is not None:
                    yield other
                running[ev.p] = (g, ev.ts)
                where[g] = ev.p
        elif k in _G_ENDS:
            g = ev.args[0] if k is Kind.GO_SYSCALL_END_BLOCKED and ev.version < 22 else ev.g
            p = where.get(g)
            if p is not None:
                done = close(p, ev.ts)
        elif k is Kind.PROC_STOP:
            done = close(ev.p, ev.ts)
        elif k is Kind.PROC_STEAL and ev.version >= 22:
            done = close(ev.args[0], ev.ts)
        if done is not None and done.end > done.start:
            yield done
    for p in sorted(running):
        g, start = running[p]
        if last_ts > start:
            yield Slice(p, g, start, last_ts)


_G_ENDS = frozenset({Kind.GO_STOP, Kind.GO_BLOCK, Kind.GO_DESTROY, Kind.GO_DESTROY_SYSCALL,
                     Kind.GO_SYSCALL_BLOCK, Kind.GO_SYSCALL_END_BLOCKED})


@dataclass(frozen=True, slots=True)
class TraceSummary:
    format: str  # "go 1.26 trace": Go 1.27 still writes the 1.26 format
    events: int
    first_ts: int
    last_ts: int
    gomaxprocs: int  # the last ProcsChange, 0 if none
    goroutines: int  # distinct goroutine ids seen
    gc_count: int  # GC cycles that began during the trace
    by_kind: tuple[tuple[str, int], ...]  # most frequent first
    p_busy: tuple[tuple[int, float], ...]  # per P: fraction of the trace running a goroutine

    @property
    def duration_ns(self) -> int:
        return self.last_ts - self.first_ts

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.format, "events": self.events, "duration_ns": self.duration_ns,
                "first_ts": self.first_ts, "last_ts": self.last_ts,
                "gomaxprocs": self.gomaxprocs, "goroutines": self.goroutines,
                "gc_count": self.gc_count, "by_kind": dict(self.by_kind),
                "p_busy": {str(p): round(f, 4) for p, f in self.p_busy}}


_G_ARG0 = frozenset({Kind.GO_CREATE, Kind.GO_CREATE_BLOCKED, Kind.GO_CREATE_SYSCALL,
                     Kind.GO_START, Kind.GO_UNBLOCK, Kind.GO_STATUS, Kind.GO_WAITING,
                     Kind.GO_IN_SYSCALL})


def summarize(events: Iterable[Event], slices: Iterable[Slice] | None = None) -> TraceSummary:
    """One pass over ``events``; the run slices are computed alongside unless given."""
    counts: dict[Kind, int] = {}
    goroutines: set[int] = set()
    procs = gcs = n = 0
    first = last = 0
    version = 0
    busy: dict[int, int] = {}

    def tap() -> Iterator[Event]:
        nonlocal procs, gcs, n, first, last, version
        for ev in events:
            if n == 0:
                first, version = ev.ts, ev.version
            n += 1
            last = ev.ts
            k = ev.kind
            counts[k] = counts.get(k, 0) + 1
            if k in _G_ARG0:
                goroutines.add(ev.args[0])
            elif ev.g > 0:
                goroutines.add(ev.g)
            if k is Kind.PROCS_CHANGE:
                procs = ev.args[0]
            elif k is Kind.GC_BEGIN:
                gcs += 1
            elif k is Kind.PROC_START or (k is Kind.PROC_STATUS and ev.version >= 22):
                busy.setdefault(ev.args[0] if ev.version >= 22 else ev.p, 0)
            yield ev

    if slices is None:
        slices = iter_slices(tap())
    else:
        for _ in tap():
            pass
    for s in slices:
        busy[s.p] = busy.get(s.p, 0) + (s.end - s.start)
    goroutines.discard(0)
    goroutines.discard(-1)
    span = max(1, last - first)
    return TraceSummary(
        f"go 1.{version} trace", n, first, last, procs, len(goroutines), gcs,
        tuple(sorted(((k.value, c) for k, c in counts.items()), key=lambda kv: (-kv[1], kv[0]))),
        tuple((p, busy[p] / span) for p in sorted(busy) if 0 <= p < max(procs, 1) or busy[p]))
