"""Why each goroutine waited between becoming runnable and running, and for how long."""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from kubewire.gotrace import Event, GoState, Kind

# Go 1.19's toolchain puts wake-ups done outside any P on these pseudo-Ps (see gotrace README).
TIMER_P = 1000001
NETPOLL_P = 1000002
PSEUDO_P = 1000000  # every P id from here up is a pseudo-P, not a real one
# Block reasons whose wake-up by the scheduler itself (no goroutine ran the unblock) is a
# timer firing: time.Sleep, or a send on a timer's channel received directly or in a select.
TIMER_REASONS = frozenset({"sleep", "chan receive", "select"})
BEHIND_KEPT = 5  # ids of the first goroutines a wait was queued behind, kept per wait
# Histogram bucket upper bounds (ns); the last bucket is open-ended.
BUCKETS_NS = (1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000,
              1_000_000, 2_000_000, 5_000_000, 10_000_000, 20_000_000, 50_000_000,
              100_000_000)
_PRUNE_EVERY = 1 << 16


class Cause(Enum):
    """How a goroutine became runnable (the event that started its wait)."""

    CREATED = "created"  # GoCreate: newproc put it in runnext of the creator's P
    NETPOLL = "netpoll"  # the net poller found its fd ready (netpoll -> injectglist)
    TIMER = "timer"  # a timer fired: time.Sleep, or a send on a timer channel
    GOROUTINE = "goroutine"  # another goroutine called ready() (channel, mutex, WaitGroup ...)
    RUNTIME = "runtime"  # readied by runtime code outside any goroutine (GC, scheduler)
    PREEMPTED = "preempted"  # preempted (sysmon's 10 ms or a GC request): global queue
    YIELDED = "yielded"  # runtime.Gosched: global queue
    SYSCALL = "syscall"  # returned from a syscall whose P was taken meanwhile
    STOPPED = "stopped"  # any other GoStop reason a newer runtime may add


class Placement(Enum):
    """Where a goroutine ran relative to the P it was made runnable on."""

    SAME_P = "same-p"
    OTHER_P = "other-p"  # stolen by another P, or taken from the global queue elsewhere
    NO_P = "no-p"  # made runnable where no P was held (net poller without P, syscall exit)


@dataclass(frozen=True, slots=True)
class Wait:
    """One runnable -> running wait of one goroutine."""

    g: int
    cause: Cause
    runnable_ts: int
    start_ts: int
    ready_p: int  # the P it was made runnable on, -1 if none
    start_p: int  # the P that ran it
    waker: int  # the goroutine that readied or created it, -1 if none did
    block_reason: str  # why it was blocked before (GoBlock reason), "" if it was not
    queue_p: int  # the P whose starts it was queued behind (ready_p, else start_p)
    queued_behind: int  # goroutines started on queue_p while it waited
    behind: tuple[int, ...]  # the first few of them, in start order
    offset: int  # byte offset of its GoStart in the trace

    @property
    def wait_ns(self) -> int:
        return self.start_ts - self.runnable_ts

    @property
    def placement(self) -> Placement:
        if self.ready_p < 0:
            return Placement.NO_P
        return Placement.SAME_P if self.ready_p == self.start_p else Placement.OTHER_P

    def to_dict(self) -> dict[str, Any]:
        return {"g": self.g, "cause": self.cause.value, "wait_ns": self.wait_ns,
                "runnable_ts": self.runnable_ts, "start_ts": self.start_ts,
                "ready_p": self.ready_p, "start_p": self.start_p,
                "placement": self.placement.value, "waker": self.waker,
                "block_reason": self.block_reason, "queue_p": self.queue_p,
                "queued_behind": self.queued_behind, "behind": list(self.behind),
                "offset": self.offset}


@dataclass(frozen=True, slots=True)
class Distribution:
    """Wait times of one group: nearest-rank percentiles and a fixed-bucket histogram."""

    count: int
    total_ns: int
    p50_ns: int
    p90_ns: int
    p99_ns: int
    max_ns: int
    histogram: tuple[int, ...]  # counts per BUCKETS_NS bucket, plus one for "longer"

    @classmethod
    def of(cls, waits_ns: Sequence[int]) -> Distribution:
        xs = sorted(waits_ns)
        hist = [0] * (len(BUCKETS_NS) + 1)
        i = 0  # bucket i holds BUCKETS_NS[i-1] < x <= BUCKETS_NS[i]; one walk over sorted xs
        for x in xs:
            while i < len(BUCKETS_NS) and x > BUCKETS_NS[i]:
                i += 1
            hist[i] += 1
        return cls(len(xs), sum(xs), _rank(xs, 0.50), _rank(xs, 0.90), _rank(xs, 0.99),
                   xs[-1] if xs else 0, tuple(hist))

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "total_ns": self.total_ns, "p50_ns": self.p50_ns,
                "p90_ns": self.p90_ns, "p99_ns": self.p99_ns, "max_ns": self.max_ns,
                "histogram": [{"le_ns": b, "count": c} for b, c in
                              zip((*BUCKETS_NS, None), self.histogram, strict=True)]}


def _rank(xs: Sequence[int], q: float) -> int:
    if not xs:
        return 0
    return xs[max(0, min(len(xs) - 1, -(-int(q * 1000) * len(xs) // 1000) - 1))]


@dataclass(frozen=True, slots=True)
class CauseStats:
    cause: Cause
    dist: Distribution
    other_p: int  # waits that ended on another P than the one they were readied on
    no_p: int

    def to_dict(self) -> dict[str, Any]:
        return {"cause": self.cause.value, **self.dist.to_dict(), "other_p": self.other_p,
                "no_p": self.no_p}


@dataclass(frozen=True, slots=True)
class GoroutineStats:
    """Totals for one goroutine (``g``) or one start function (``g`` is -1)."""

    g: int
    func: str
    goroutines: int
    dist: Distribution
    by_cause: tuple[tuple[Cause, int], ...]  # wait count per cause, most frequent first

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"g": self.g} if self.g >= 0 else {"goroutines": self.goroutines}
        return {**d, "func": self.func, **self.dist.to_dict(),
                "by_cause": {c.value: n for c, n in self.by_cause}}


@dataclass(frozen=True, slots=True)
class LatencyReport:
    waits: tuple[Wait, ...]
    overall: Distribution
    causes: tuple[CauseStats, ...]  # in Cause order, only causes that occurred
    goroutines: tuple[GoroutineStats, ...]  # by total wait, longest first
    functions: tuple[GoroutineStats, ...]  # by total wait, longest first
    unattributed: int  # GoStarts of goroutines already runnable when the trace began

    def cause(self, cause: Cause) -> CauseStats | None:
        return next((c for c in self.causes if c.cause is cause), None)

    def to_dict(self, waits: bool = False, top: int | None = None) -> dict[str, Any]:
        d: dict[str, Any] = {
            "overall": self.overall.to_dict(),
            "buckets_ns": list(BUCKETS_NS),
            "causes": [c.to_dict() for c in self.causes],
            "goroutines": [g.to_dict() for g in self.goroutines[:top]],
            "functions": [f.to_dict() for f in self.functions[:top]],
            "unattributed": self.unattributed,
        }
        if waits:
            d["waits"] = [w.to_dict() for w in self.waits]
        return d


@dataclass(slots=True)
class _Pending:
    ts: int
    cause: Cause
    ready_p: int
    waker: int
    reason: str


def start_function(ev: Event) -> str:
    """A GoCreate's new goroutine's start function, "" if the trace does not say."""
    return ev.extra_stack[0].func if ev.extra_stack else ""


def root_function(ev: Event) -> str:
    """The outermost frame of an event's stack: names a goroutine that began before the trace."""
    return ev.stack[-1].func if ev.stack else ""


def attribute(events: Iterable[Event]) -> LatencyReport:
    """Attribute every runnable -> running wait in ``events`` (one pass, any length)."""
    pending: dict[int, _Pending] = {}
    last_reason: dict[int, str] = {}
    funcs: dict[int, str] = {}
    # per P: the times and goroutines of its GoStarts (pruned to what pending waits need)
    start_ts: dict[int, list[int]] = {}
    start_g: dict[int, list[int]] = {}
    waits: list[Wait] = []
    unattributed = 0
    old_format_preamble = True  # Go 1.19 lists existing goroutines as GoCreates at first
    since_prune = 0
    for ev in events:
        k = ev.kind
        if k not in _RELEVANT:
            continue
        if k is Kind.GO_START:
            g, p = ev.args[0], ev.p
            ts_list = start_ts.setdefault(p, [])
            g_list = start_g.setdefault(p, [])
            pend = pending.pop(g, None)
            if pend is None:
                unattributed += 1
            else:
                qp = pend.ready_p if pend.ready_p >= 0 else p
                qts, qg = start_ts.get(qp, ts_list), start_g.get(qp, g_list)
                i = bisect_right(qts, pend.ts)
                waits.append(Wait(g, pend.cause, pend.ts, ev.ts, pend.ready_p, p, pend.waker,
                                  pend.reason, qp, len(qts) - i,
                                  tuple(qg[i:i + BEHIND_KEPT]), ev.offset))
            ts_list.append(ev.ts)
            g_list.append(g)
            since_prune += 1
            if since_prune >= _PRUNE_EVERY:
                since_prune = 0
                _prune(start_ts, start_g, pending)
        elif k is Kind.GO_UNBLOCK:
            g = ev.args[0]
            reason = last_reason.get(g, "")
            waker = ev.g if ev.g > 0 else -1
            if ev.p == NETPOLL_P or reason == "network":
                cause = Cause.NETPOLL
            elif ev.p == TIMER_P or reason == "sleep" or (waker < 0 and reason in TIMER_REASONS):
                cause = Cause.TIMER
            elif waker < 0:
                cause = Cause.RUNTIME
            else:
                cause = Cause.GOROUTINE
            pending[g] = _Pending(ev.ts, cause, _real_p(ev.p), waker, reason)
        elif k is Kind.GO_BLOCK:
            last_reason[ev.g] = ev.strings[0] if ev.strings else ""
            pending.pop(ev.g, None)
            if ev.g not in funcs and ev.stack:
                funcs[ev.g] = root_function(ev)
        elif k is Kind.GO_CREATE:
            g = ev.args[0]
            funcs[g] = start_function(ev)
            if ev.version < 22 and old_format_preamble:
                continue  # it existed before the trace: when it became runnable is unknown
            pending[g] = _Pending(ev.ts, Cause.CREATED, _real_p(ev.p),
                                  ev.g if ev.g > 0 else -1, "")
        elif k is Kind.GO_STOP:
            reason = ev.strings[0] if ev.strings else ""
            cause = {"preempted": Cause.PREEMPTED, "runtime.Gosched": Cause.YIELDED}.get(
                reason, Cause.STOPPED)
            pending[ev.g] = _Pending(ev.ts, cause, _real_p(ev.p), ev.g, reason)
            if ev.g not in funcs and ev.stack:
                funcs[ev.g] = root_function(ev)
        elif k is Kind.GO_SYSCALL_END_BLOCKED:
            g = ev.g if ev.version >= 22 else ev.args[0]
            pending[g] = _Pending(ev.ts, Cause.SYSCALL, _real_p(ev.p), -1, "syscall")
        elif k is Kind.GO_CREATE_BLOCKED or k is Kind.GO_CREATE_SYSCALL:
            funcs[ev.args[0]] = start_function(ev)
        elif k is Kind.GO_STATUS:
            if GoState(ev.args[2]) is not GoState.RUNNABLE:
                pending.pop(ev.args[0], None)
        elif k is Kind.GO_WAITING or k is Kind.GO_IN_SYSCALL:
            pending.pop(ev.args[0], None)
        elif k is Kind.GO_SWITCH or k is Kind.GO_SWITCH_DESTROY:
            pending.pop(ev.args[0], None)  # a direct switch (iter.Pull): no run queue
        elif k is Kind.GO_DESTROY:
            pending.pop(ev.g, None)
        if k is Kind.PROC_START:
            old_format_preamble = False
    return _report(waits, funcs, unattributed)


_RELEVANT = frozenset({
    Kind.GO_START, Kind.GO_UNBLOCK, Kind.GO_BLOCK, Kind.GO_CREATE, Kind.GO_STOP,
    Kind.GO_SYSCALL_END_BLOCKED, Kind.GO_CREATE_BLOCKED, Kind.GO_CREATE_SYSCALL, Kind.GO_STATUS,
    Kind.GO_WAITING, Kind.GO_IN_SYSCALL, Kind.GO_SWITCH, Kind.GO_SWITCH_DESTROY, Kind.GO_DESTROY,
    Kind.PROC_START})


def _real_p(p: int) -> int:
    return p if 0 <= p < PSEUDO_P else -1


def _prune(start_ts: dict[int, list[int]], start_g: dict[int, list[int]],
           pending: dict[int, _Pending]) -> None:
    """Drop starts older than every pending wait: no future wait can be queued behind them."""
    oldest = min((pd.ts for pd in pending.values()), default=None)
    for p, ts_list in start_ts.items():
        cut = len(ts_list) if oldest is None else bisect_right(ts_list, oldest)
        if cut:
            del ts_list[:cut]
            del start_g[p][:cut]


def _report(waits: list[Wait], funcs: dict[int, str], unattributed: int) -> LatencyReport:
    by_cause: dict[Cause, list[Wait]] = {}
    by_g: dict[int, list[Wait]] = {}
    for w in waits:
        by_cause.setdefault(w.cause, []).append(w)
        by_g.setdefault(w.g, []).append(w)
    causes = tuple(
        CauseStats(c, Distribution.of([w.start_ts - w.runnable_ts for w in ws]),
                   sum(1 for w in ws if w.placement is Placement.OTHER_P),
                   sum(1 for w in ws if w.placement is Placement.NO_P))
        for c in Cause if (ws := by_cause.get(c)))
    goroutines = sorted((_group(g, funcs.get(g, ""), 1, ws) for g, ws in by_g.items()),
                        key=lambda s: (-s.dist.total_ns, s.g))
    by_func: dict[str, list[Wait]] = {}
    members: dict[str, set[int]] = {}
    for g, ws in by_g.items():
        name = funcs.get(g, "")
        by_func.setdefault(name, []).extend(ws)
        members.setdefault(name, set()).add(g)
    functions = sorted((_group(-1, f, len(members[f]), ws) for f, ws in by_func.items()),
                       key=lambda s: (-s.dist.total_ns, s.func))
    return LatencyReport(tuple(waits),
                         Distribution.of([w.start_ts - w.runnable_ts for w in waits]), causes,
                         tuple(goroutines), tuple(functions), unattributed)


def _group(g: int, func: str, n: int, ws: list[Wait]) -> GoroutineStats:
    counts = Counter(w.cause.value for w in ws)
    ranked = tuple((Cause(v), c) for v, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    return GoroutineStats(g, func or "?", n,
                          Distribution.of([w.start_ts - w.runnable_ts for w in ws]), ranked)
