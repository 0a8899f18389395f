"""Parse ``GODEBUG=schedtrace=N`` and ``GODEBUG=schedtrace=N,scheddetail=1`` output.

The runtime's ``schedtrace`` function (runtime/proc.go) prints one record every N ms to
stderr. Go 1.19 and Go 1.27 differ in details this parser absorbs:

* 1.27 adds ``needspinning=`` and, without scheddetail, ``schedticks=[ t0 t1 ]``; the local
  queue list is ``[ 0 0 ]`` (1.27) or ``[0 0]`` (1.19).
* an absent P/M/G is ``nil`` in 1.27 and ``-1`` in 1.19; both become ``None``.
* ``gcwaiting``/``sysmonwait`` print as ``true``/``false`` in 1.27 and ``0``/``1`` in 1.19.

Fields are read by name: a field this module does not know is kept in ``extra`` rather
than rejected, so a newer runtime that adds one still parses. The program's own stderr
lines between records are skipped and counted.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from kubewire.gotelemetry.errors import SchedTraceError

# runtime2.go: the G status constants (the same numbers in 1.19 and 1.27; 10 and 11 are
# new in 1.27) and the _Gscan bit a status carries while the GC scans the stack.
G_STATUS = {
    0: "idle", 1: "runnable", 2: "running", 3: "syscall", 4: "waiting", 5: "moribund",
    6: "dead", 7: "enqueue", 8: "copystack", 9: "preempted", 10: "leaked", 11: "deadextra",
}
G_SCAN = 0x1000
# runtime2.go: P status constants; 2 is _Psyscall in 1.19, _Psyscall_unused in 1.27.
P_STATUS = {0: "idle", 1: "running", 2: "syscall", 3: "gcstop", 4: "dead"}

_HEADER = re.compile(r"SCHED (-?\d+)ms:(.*)")
_RECORD = re.compile(r"\s+([PMG])(\d+):(.*)")
# header tokens: key=value, key=[ list ], or a bare [ list ] (the per-P local run queues)
_TOKEN = re.compile(
    r"\s*(?:(?P<key>[A-Za-z_]\w*)=(?P<val>\[[^\]]*\]|[^\s\[]*)|(?P<list>\[[^\]]*\]))"
)
# P/M lines: split before each " key=", so a value with spaces (M's preemptoff is a free
# text reason such as "write heap dump") stays whole.
_SPLIT = re.compile(r" (?=[A-Za-z_]\w*=)")
# G line: the wait reason may itself contain parentheses ("select (no cases)"), so the
# greedy group backtracks to the last ")" that is followed only by key=value fields.
_G_BODY = re.compile(r" status=(\d+)\((.*)\)((?: [A-Za-z_]\w*=\S*)*)")

_HEADER_INTS = ("gomaxprocs", "idleprocs", "threads", "spinningthreads", "idlethreads",
                "runqueue")
_BOOLS = {"gcwaiting", "sysmonwait", "spinning", "blocked"}


Extra = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class PRecord:
    """One ``P<n>:`` line of scheddetail: a processor and its local run queue."""

    id: int
    status: int
    schedtick: int
    syscalltick: int
    m: int | None
    runqsize: int
    gfreecnt: int
    timerslen: int
    extra: Extra = ()

    @property
    def status_name(self) -> str:
        return P_STATUS.get(self.status, f"status{self.status}")


@dataclass(frozen=True, slots=True)
class MRecord:
    """One ``M<n>:`` line: an OS thread, the P it holds and the G it runs."""

    id: int
    p: int | None
    curg: int | None
    mallocing: int
    throwing: int
    preemptoff: str
    locks: int
    dying: int
    spinning: bool
    blocked: bool
    lockedg: int | None
    extra: Extra = ()


@dataclass(frozen=True, slots=True)
class GRecord:
    """One ``G<n>:`` line: a goroutine, its status and why it waits."""

    id: int
    status: int
    wait_reason: str
    m: int | None
    lockedm: int | None
    extra: Extra = ()

    @property
    def scanning(self) -> bool:
        return bool(self.status & G_SCAN)

    @property
    def status_name(self) -> str:
        base = self.status & ~G_SCAN
        return G_STATUS.get(base, f"status{base}")


@dataclass(frozen=True, slots=True)
class SchedSample:
    """One SCHED record. ``local_runqueues`` comes from the ``[...]`` list, or from the
    P lines' ``runqsize`` with scheddetail."""

    line: int
    time_ms: int
    gomaxprocs: int
    idleprocs: int
    threads: int
    spinningthreads: int
    needspinning: int | None  # printed by Go 1.27, not by 1.19 (None)
    idlethreads: int
    runqueue: int
    local_runqueues: tuple[int, ...]
    schedticks: tuple[int, ...] | None = None  # Go 1.27 without scheddetail
    detail: bool = False
    gcwaiting: bool | None = None
    sysmonwait: bool | None = None
    ps: tuple[PRecord, ...] = ()
    ms: tuple[MRecord, ...] = ()
    gs: tuple[GRecord, ...] = ()
    extra: Extra = ()

    @property
    def runnable(self) -> int:
        """Goroutines queued to run: global plus every local queue."""
        return self.runqueue + sum(self.local_runqueues)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "line": self.line, "time_ms": self.time_ms, "gomaxprocs": self.gomaxprocs,
            "idleprocs": self.idleprocs, "threads": self.threads,
            "spinningthreads": self.spinningthreads, "needspinning": self.needspinning,
            "idlethreads": self.idlethreads, "runqueue": self.runqueue,
            "local_runqueues": list(self.local_runqueues),
        }
        if self.schedticks is not None:
            out["schedticks"] = list(self.schedticks)
        if self.detail:
            out["gcwaiting"] = self.gcwaiting
            out["sysmonwait"] = self.sysmonwait
            out["goroutines"] = dict(sorted(Counter(g.status_name for g in self.gs).items()))
            out["ps"] = [{"id": p.id, "status": p.status_name, "schedtick": p.schedtick,
                          "m": p.m, "runqsize": p.runqsize} for p in self.ps]
            out["ms"] = [{"id": m.id, "p": m.p, "curg": m.curg, "spinning": m.spinning,
                          "blocked": m.blocked} for m in self.ms]
        if self.extra:
            out["extra"] = dict(self.extra)
        return out


@dataclass(frozen=True, slots=True)
class SchedSummary:
    """Figures over a whole capture; see README.md for how to read them."""

    samples: int
    detail_samples: int
    duration_ms: int
    gomaxprocs: tuple[int, ...]  # every distinct value, in order of appearance
    global_max: int
    global_avg: float
    local_max: int  # the longest single local queue seen
    local_avg: float  # mean over samples of the summed local queues
    idle_p_fraction: float  # mean of idleprocs / gomaxprocs
    idle_with_work: int  # samples with an idle P while goroutines were queued
    threads_first: int
    threads_last: int
    threads_max: int
    goroutines_max: int | None
    goroutines_last: dict[str, int] | None  # by status, last scheddetail sample
    skipped_lines: int

    @property
    def threads_growth(self) -> int:
        return self.threads_last - self.threads_first

    def findings(self) -> tuple[str, ...]:
        """Plain-language readings of the figures (thresholds in README.md)."""
        if not self.samples:
            return ()
        out: list[str] = []
        procs = max(self.gomaxprocs)
        if self.global_max >= procs and self.global_avg >= 1:
            out.append(
                f"The global run queue reached {self.global_max} (avg {self.global_avg:.1f}): "
                "goroutines that yield or are preempted, overflow a full local queue, or wake "
                "with no P to run on wait there; a P looks at it only when its own queue is "
                "empty or every 61st schedule.")
        if self.local_max >= 2 * procs or self.local_avg >= procs:
            out.append(
                f"Local run queues reached {self.local_max} on one P (avg {self.local_avg:.1f} "
                "queued over all Ps): goroutines waited behind a running one on the same P.")
        if self.idle_with_work:
            out.append(
                f"{self.idle_with_work} of {self.samples} samples show an idle P while "
                "goroutines were queued: work stealing had not yet caught up (often a "
                "momentary burst; persistent, it points at Ms that are slow to wake).")
        if self.idle_p_fraction >= 0.5 and self.global_avg < 1 and self.local_avg < 1:
            out.append(
                f"Ps were idle {self.idle_p_fraction:.0%} of the time with short queues: the "
                "program used less CPU than GOMAXPROCS allows.")
        elif self.idle_p_fraction < 0.05 and (self.global_avg + self.local_avg) >= procs:
            out.append(
                "Every P was busy and work was queued: the program is CPU-bound at this "
                "GOMAXPROCS (more CPU, or less work per request, would cut the queueing).")
        if self.threads_growth > procs:
            out.append(
                f"Threads grew from {self.threads_first} to {self.threads_last}: goroutines "
                "blocked in system calls or cgo hold their thread, and the runtime starts "
                "another to run the P they left.")
        return tuple(out)

    def to_dict(self) -> dict[str, Any]:
        return {
            "samples": self.samples, "detail_samples": self.detail_samples,
            "duration_ms": self.duration_ms, "gomaxprocs": list(self.gomaxprocs),
            "global_runqueue": {"max": self.global_max, "avg": round(self.global_avg, 3)},
            "local_runqueue": {"max": self.local_max, "avg": round(self.local_avg, 3)},
            "idle_p_fraction": round(self.idle_p_fraction, 4),
            "idle_with_work": self.idle_with_work,
            "threads": {"first": self.threads_first, "last": self.threads_last,
                        "max": self.threads_max, "growth": self.threads_growth},
            "goroutines_max": self.goroutines_max, "goroutines_last": self.goroutines_last,
            "skipped_lines": self.skipped_lines, "findings": list(self.findings()),
        }


@dataclass(frozen=True, slots=True)
class SchedTrace:
    samples: tuple[SchedSample, ...]
    skipped_lines: int
    truncated: bool = False  # the text ended inside a record (the process was killed)
    notes: tuple[str, ...] = field(default=())
    bad_lines: tuple[int, ...] = ()  # strict=False: first bad line of each dropped record

    def summary(self) -> SchedSummary:
        s = self.samples
        if not s:
            return SchedSummary(0, 0, 0, (), 0, 0.0, 0, 0.0, 0.0, 0, 0, 0, 0, None, None,
                                self.skipped_lines)
        n = len(s)
        procs: list[int] = []
        for x in s:
            if x.gomaxprocs not in procs:
                procs.append(x.gomaxprocs)
        detail = [x for x in s if x.detail]
        last_detail = detail[-1] if detail else None
        return SchedSummary(
            samples=n,
            detail_samples=len(detail),
            duration_ms=s[-1].time_ms - s[0].time_ms,
            gomaxprocs=tuple(procs),
            global_max=max(x.runqueue for x in s),
            global_avg=sum(x.runqueue for x in s) / n,
            local_max=max((q for x in s for q in x.local_runqueues), default=0),
            local_avg=sum(sum(x.local_runqueues) for x in s) / n,
            idle_p_fraction=sum(x.idleprocs / x.gomaxprocs for x in s if x.gomaxprocs) / n,
            idle_with_work=sum(1 for x in s if x.idleprocs > 0 and x.runnable > 0),
            threads_first=s[0].threads,
            threads_last=s[-1].threads,
            threads_max=max(x.threads for x in s),
            goroutines_max=max(len(x.gs) for x in detail) if detail else None,
            goroutines_last=(dict(sorted(Counter(g.status_name for g in last_detail.gs).items()))
                             if last_detail else None),
            skipped_lines=self.skipped_lines,
        )


def parse_schedtrace(text: str, *, strict: bool = True) -> SchedTrace:
    """Every SCHED record in ``text`` (captured stderr), in order.

    Raises SchedTraceError naming the line for a record that does not parse. A final
    record cut off without its newline (the process died mid-print) is dropped instead and
    ``truncated`` is set. With ``strict=False`` any record with a bad line is dropped and
    the line listed in ``bad_lines``: a chatty program's write can land in the middle of a
    runtime line, because the runtime prints each piece with its own write().
    """
    lines = text.split("\n")
    unterminated = not text.endswith("\n")
    if lines and lines[-1] == "":
        lines.pop()
    samples: list[SchedSample] = []
    skipped = 0
    bad: list[int] = []
    cur: _Builder | None = None
    discarding = False  # inside a dropped record: swallow its remaining P/M/G lines
    truncated = False
    for idx, raw in enumerate(lines):
        lineno = idx + 1
        line = raw.rstrip("\r")
        last = unterminated and idx == len(lines) - 1
        try:
            head = _HEADER.fullmatch(line)
            if head:
                if cur:
                    samples.append(cur.build())
                cur, discarding = None, False
                cur = _Builder(_parse_header(lineno, int(head.group(1)), head.group(2)))
                continue
            if discarding and _RECORD.fullmatch(line):
                continue
            rec = _RECORD.fullmatch(line) if cur and cur.detail else None
            if rec and cur:
                cur.add(lineno, rec.group(1), int(rec.group(2)), rec.group(3))
                continue
        except SchedTraceError:
            cur = None
            if last:
                truncated = True
                continue
            if strict:
                raise
            bad.append(lineno)
            discarding = True
            continue
        # Anything else is the program's own output. It does not end a detail record:
        # the program's writes can land between the runtime's P/M/G lines.
        skipped += 1
    if cur:
        samples.append(cur.build())
    notes: list[str] = []
    if truncated:
        notes.append("the last record was cut off (no final newline) and was dropped")
    if bad:
        shown = ", ".join(map(str, bad[:10])) + (", ..." if len(bad) > 10 else "")
        notes.append(f"{len(bad)} records with a malformed line were dropped (lines {shown})")
    return SchedTrace(tuple(samples), skipped, truncated, tuple(notes), tuple(bad))


class _Builder:
    """Collects one record's header and, with scheddetail, its P/M/G lines."""

    def __init__(self, header: SchedSample) -> None:
        self.header = header
        self.detail = header.detail
        self.ps: list[PRecord] = []
        self.ms: list[MRecord] = []
        self.gs: list[GRecord] = []

    def add(self, lineno: int, kind: str, ident: int, body: str) -> None:
        if kind == "P":
            self.ps.append(_parse_p(lineno, ident, body))
        elif kind == "M":
            self.ms.append(_parse_m(lineno, ident, body))
        else:
            self.gs.append(_parse_g(lineno, ident, body))

    def build(self) -> SchedSample:
        h = self.header
        if not self.detail:
            return h
        return SchedSample(
            line=h.line, time_ms=h.time_ms, gomaxprocs=h.gomaxprocs, idleprocs=h.idleprocs,
            threads=h.threads, spinningthreads=h.spinningthreads,
            needspinning=h.needspinning, idlethreads=h.idlethreads, runqueue=h.runqueue,
            local_runqueues=tuple(p.runqsize for p in self.ps), schedticks=h.schedticks,
            detail=True, gcwaiting=h.gcwaiting, sysmonwait=h.sysmonwait,
            ps=tuple(self.ps), ms=tuple(self.ms), gs=tuple(self.gs), extra=h.extra,
        )


def _int(lineno: int, what: str, key: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise SchedTraceError(
            lineno, f"{what}: {key}={value!r} is not a whole number; expected the runtime's "
            "schedtrace format (is this line cut or mixed with other output?)") from None


def _ref(lineno: int, what: str, key: str, value: str) -> int | None:
    """An id that may be absent: ``nil`` (Go 1.27) or ``-1`` (Go 1.19)."""
    if value == "nil":
        return None
    n = _int(lineno, what, key, value)
    return None if n == -1 else n


def _bool(lineno: int, what: str, key: str, value: str) -> bool:
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise SchedTraceError(lineno, f"{what}: {key}={value!r}; expected true/false or 0/1")


def _need(lineno: int, what: str, fields: dict[str, str], names: tuple[str, ...]) -> None:
    missing = [n for n in names if n not in fields]
    if missing:
        raise SchedTraceError(
            lineno, f"{what} lacks {', '.join(missing)}; expected "
            f"{' '.join(n + '=' for n in names)} (is the line cut off?)")


def _list(lineno: int, text: str) -> tuple[int, ...]:
    inner = text.strip()[1:-1].split()
    return tuple(_int(lineno, "SCHED record", "list", v) for v in inner)


def _parse_header(lineno: int, time_ms: int, rest: str) -> SchedSample:
    what = "SCHED record"
    fields: dict[str, str] = {}
    lists: list[tuple[int, ...]] = []
    pos = 0
    rest = rest.rstrip()
    while pos < len(rest):
        m = _TOKEN.match(rest, pos)
        if not m or m.end() == pos:
            raise SchedTraceError(
                lineno, f"{what}: unexpected text {rest[pos:pos + 30]!r}; expected key=value "
                "fields and a [ ... ] list of local run queue lengths")
        if m.group("list") is not None:
            lists.append(_list(lineno, m.group("list")))
        else:
            fields[m.group("key")] = m.group("val")
        pos = m.end()
    _need(lineno, what, fields, _HEADER_INTS)
    ints = {k: _int(lineno, what, k, fields[k]) for k in _HEADER_INTS}
    # Without scheddetail the local queue lengths follow runqueue=; with it, they come on
    # the P lines and the header instead carries gcwaiting/sysmonwait.
    detail = not lists
    ticks = fields.get("schedticks")
    known = set(_HEADER_INTS) | {"needspinning", "schedticks", "gcwaiting", "sysmonwait"}
    return SchedSample(
        line=lineno, time_ms=time_ms, gomaxprocs=ints["gomaxprocs"],
        idleprocs=ints["idleprocs"], threads=ints["threads"],
        spinningthreads=ints["spinningthreads"], idlethreads=ints["idlethreads"],
        runqueue=ints["runqueue"],
        needspinning=(_int(lineno, what, "needspinning", fields["needspinning"])
                      if "needspinning" in fields else None),
        local_runqueues=lists[0] if lists else (),
        schedticks=_list(lineno, ticks) if ticks and ticks.startswith("[") else None,
        detail=detail,
        gcwaiting=(_bool(lineno, what, "gcwaiting", fields["gcwaiting"])
                   if "gcwaiting" in fields else None),
        sysmonwait=(_bool(lineno, what, "sysmonwait", fields["sysmonwait"])
                    if "sysmonwait" in fields else None),
        extra=tuple((k, v) for k, v in fields.items() if k not in known),
    )


def _fields(lineno: int, what: str, body: str) -> dict[str, str]:
    out: dict[str, str] = {}
    body = body.rstrip()
    if not body.startswith(" "):
        raise SchedTraceError(lineno, f"{what}: expected ' key=value' fields after ':'")
    for part in _SPLIT.split(body[1:]):
        key, eq, value = part.partition("=")
        if not eq or not re.fullmatch(r"[A-Za-z_]\w*", key):
            raise SchedTraceError(lineno, f"{what}: {part!r} is not a key=value field")
        out[key] = value
    return out


_P_KEYS = ("status", "schedtick", "syscalltick", "m", "runqsize", "gfreecnt", "timerslen")
_M_KEYS = ("p", "curg", "mallocing", "throwing", "preemptoff", "locks", "dying", "spinning",
           "blocked", "lockedg")
_G_KEYS = ("m", "lockedm")


def _parse_p(lineno: int, ident: int, body: str) -> PRecord:
    what = f"P{ident} line"
    f = _fields(lineno, what, body)
    _need(lineno, what, f, _P_KEYS)
    return PRecord(
        id=ident, status=_int(lineno, what, "status", f["status"]),
        schedtick=_int(lineno, what, "schedtick", f["schedtick"]),
        syscalltick=_int(lineno, what, "syscalltick", f["syscalltick"]),
        m=_ref(lineno, what, "m", f["m"]),
        runqsize=_int(lineno, what, "runqsize", f["runqsize"]),
        gfreecnt=_int(lineno, what, "gfreecnt", f["gfreecnt"]),
        timerslen=_int(lineno, what, "timerslen", f["timerslen"]),
        extra=tuple((k, v) for k, v in f.items() if k not in _P_KEYS),
    )


def _parse_m(lineno: int, ident: int, body: str) -> MRecord:
    what = f"M{ident} line"
    f = _fields(lineno, what, body)
    _need(lineno, what, f, _M_KEYS)
    return MRecord(
        id=ident, p=_ref(lineno, what, "p", f["p"]), curg=_ref(lineno, what, "curg", f["curg"]),
        mallocing=_int(lineno, what, "mallocing", f["mallocing"]),
        throwing=_int(lineno, what, "throwing", f["throwing"]),
        preemptoff=f["preemptoff"],
        locks=_int(lineno, what, "locks", f["locks"]),
        dying=_int(lineno, what, "dying", f["dying"]),
        spinning=_bool(lineno, what, "spinning", f["spinning"]),
        blocked=_bool(lineno, what, "blocked", f["blocked"]),
        lockedg=_ref(lineno, what, "lockedg", f["lockedg"]),
        extra=tuple((k, v) for k, v in f.items() if k not in _M_KEYS),
    )


def _parse_g(lineno: int, ident: int, body: str) -> GRecord:
    what = f"G{ident} line"
    m = _G_BODY.fullmatch(body.rstrip())
    if not m:
        raise SchedTraceError(
            lineno, f"{what}: expected 'status=N(wait reason) m=... lockedm=...'")
    f = _fields(lineno, what, m.group(3)) if m.group(3) else {}
    _need(lineno, what, f, _G_KEYS)
    return GRecord(
        id=ident, status=int(m.group(1)), wait_reason=m.group(2),
        m=_ref(lineno, what, "m", f["m"]), lockedm=_ref(lineno, what, "lockedm", f["lockedm"]),
        extra=tuple((k, v) for k, v in f.items() if k not in _G_KEYS),
    )
