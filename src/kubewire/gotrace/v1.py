"""The Go 1.19 trace format: per-P batches, one stream for the whole file.

The clock frequency and the stack table come at the end of the file, and events are only
ordered across Ps once all are known, so this format is decoded from a whole buffer.
"""

from __future__ import annotations

import gc
from operator import itemgetter

from kubewire.gotrace.errors import CorruptTraceError, TruncatedTraceError
from kubewire.gotrace.events import ARG_NAMES_V1, NO_STACK, Event, Frame, Kind, Stack
from kubewire.gotrace.wire import HEADER_LEN, uvarint

K = Kind
# wire number -> (name, kind, has stack, argument names after the timestamp), from the Go 1.19
# tree's internal/trace/parser.go event descriptions.
SPECS: dict[int, tuple[str, Kind, bool, tuple[str, ...]]] = {
    4: ("Gomaxprocs", K.PROCS_CHANGE, True, ("procs",)),
    5: ("ProcStart", K.PROC_START, False, ("thread",)),
    6: ("ProcStop", K.PROC_STOP, False, ()),
    7: ("GCStart", K.GC_BEGIN, True, ("seq",)),
    8: ("GCDone", K.GC_END, False, ()),
    9: ("GCSTWStart", K.STW_BEGIN, False, ("kindid",)),
    10: ("GCSTWDone", K.STW_END, False, ()),
    11: ("GCSweepStart", K.GC_SWEEP_BEGIN, True, ()),
    12: ("GCSweepDone", K.GC_SWEEP_END, False, ("swept", "reclaimed")),
    13: ("GoCreate", K.GO_CREATE, True, ("g", "stack")),
    14: ("GoStart", K.GO_START, False, ("g", "seq")),
    15: ("GoEnd", K.GO_DESTROY, False, ()),
    16: ("GoStop", K.GO_BLOCK, True, ()),
    17: ("GoSched", K.GO_STOP, True, ()),
    18: ("GoPreempt", K.GO_STOP, True, ()),
    19: ("GoSleep", K.GO_BLOCK, True, ()),
    20: ("GoBlock", K.GO_BLOCK, True, ()),
    21: ("GoUnblock", K.GO_UNBLOCK, True, ("g", "seq")),
    22: ("GoBlockSend", K.GO_BLOCK, True, ()),
    23: ("GoBlockRecv", K.GO_BLOCK, True, ()),
    24: ("GoBlockSelect", K.GO_BLOCK, True, ()),
    25: ("GoBlockSync", K.GO_BLOCK, True, ()),
    26: ("GoBlockCond", K.GO_BLOCK, True, ()),
    27: ("GoBlockNet", K.GO_BLOCK, True, ()),
    28: ("GoSysCall", K.GO_SYSCALL_BEGIN, True, ()),
    29: ("GoSysExit", K.GO_SYSCALL_END_BLOCKED, False, ("g", "seq", "ts")),
    30: ("GoSysBlock", K.GO_SYSCALL_BLOCK, False, ()),
    31: ("GoWaiting", K.GO_WAITING, False, ("g",)),
    32: ("GoInSyscall", K.GO_IN_SYSCALL, False, ("g",)),
    33: ("HeapAlloc", K.HEAP_ALLOC, False, ("mem",)),
    34: ("HeapGoal", K.HEAP_GOAL, False, ("mem",)),
    36: ("FutileWakeup", K.FUTILE_WAKEUP, False, ()),
    38: ("GoStartLocal", K.GO_START, False, ("g",)),
    39: ("GoUnblockLocal", K.GO_UNBLOCK, True, ("g",)),
    40: ("GoSysExitLocal", K.GO_SYSCALL_END_BLOCKED, False, ("g", "ts")),
    41: ("GoStartLabel", K.GO_START, False, ("g", "seq", "labelid")),
    42: ("GoBlockGC", K.GO_BLOCK, True, ()),
    43: ("GCMarkAssistStart", K.GC_MARK_ASSIST_BEGIN, True, ()),
    44: ("GCMarkAssistDone", K.GC_MARK_ASSIST_END, False, ()),
    45: ("UserTaskCreate", K.USER_TASK_BEGIN, True, ("taskid", "pid", "typeid")),
    46: ("UserTaskEnd", K.USER_TASK_END, True, ("taskid",)),
    47: ("UserRegion", K.USER_REGION_BEGIN, True, ("taskid", "mode", "typeid")),
    48: ("UserLog", K.USER_LOG, True, ("id", "keyid")),
    49: ("CPUSample", K.CPU_SAMPLE, True, ("ts", "p", "g")),
}
EV_BATCH = 1
EV_FREQUENCY = 2
EV_STACK = 3
EV_TIMER_GOROUTINE = 35
EV_STRING = 37
# The reason a goroutine stopped or blocked, in the current format's words.
REASONS = {16: "forever", 17: "runtime.Gosched", 18: "preempted", 19: "sleep", 20: "",
           22: "chan send", 23: "chan receive", 24: "select", 25: "sync",
           26: "sync.(*Cond).Wait", 27: "network", 42: "GC mark assist wait for work"}
# Special P numbers the Go 1.19 parser reports
TIMER_P = 1000001
NETPOLL_P = 1000002
SYSCALL_P = 1000003
GC_P = 1000004
_STARTS = (14, 38, 41)
_ENDS = (15, 16, 17, 18, 19, 20, 22, 23, 24, 25, 26, 27, 30, 42)

for _name, _k, _stk, _args in SPECS.values():
    ARG_NAMES_V1[_name] = _args


def decode_v1(data: bytes, minor: int) -> list[Event]:
    """Events of a whole Go 1.19 trace (``data`` is the whole file, header included)."""
    # Millions of small tuples, no cycles: pause the cyclic GC while building them.
    gc_was_on = gc.isenabled()
    gc.disable()
    try:
        return _decode(data, minor)
    finally:
        if gc_was_on:
            gc.enable()


def _decode(data: bytes, minor: int) -> list[Event]:
    end = len(data)
    pos = HEADER_LEN
    strings: dict[int, str] = {}
    raw_stacks: dict[int, list[int]] = {}
    timer_gs: set[int] = set()
    ticks_per_sec = 0
    raws: list[tuple[int, int, int, int, int, list[int], str | None]] = []
    last_gs: dict[int, int] = {}
    last_p = 0
    last_g = 0
    last_ts = 0
    seen_batch = False
    while pos < end:
        at = pos
        b = data[pos]
        pos += 1
        typ = b & 0x3F
        narg = (b >> 6) + 1
        off = at
        if typ == EV_STRING:
            sid, pos = _uv(data, pos, end)
            n, pos = _uv(data, pos, end)
            if sid == 0 or n == 0 or n > 1_000_000:
                raise CorruptTraceError(f"bad string entry (id {sid}, length {n})", off)
            if sid in strings:
                raise CorruptTraceError(f"string id {sid} defined twice", off)
            if pos + n > end:
                raise TruncatedTraceError("the data ends inside a string", pos)
            strings[sid] = data[pos : pos + n].decode("utf-8", "replace")
            pos += n
            continue
        if typ not in SPECS and typ not in (EV_BATCH, EV_FREQUENCY, EV_STACK, EV_TIMER_GOROUTINE):
            raise CorruptTraceError(f"unknown event type {typ} (format go 1.{minor})", off)
        args: list[int] = []
        if narg < 4:
            for _ in range(narg):
                if pos >= end:
                    raise TruncatedTraceError("the data ends inside an event", off)
                v = data[pos]
                pos += 1
                if v > 127:  # rare: decode the rest of a multi-byte varint
                    v, pos = _uv(data, pos - 1, end)
                args.append(v)
        else:
            length, pos = _uv(data, pos, end)
            stop = pos + length
            if stop > end:
                raise TruncatedTraceError("the data ends inside an event", off)
            while pos < stop:
                v, pos = _uv(data, pos, stop)
                args.append(v)
        sarg: str | None = None
        if typ == 48:  # UserLog: the message follows as a length-prefixed string
            n, pos = _uv(data, pos, end)
            if pos + n > end:
                raise TruncatedTraceError("the data ends inside a log message", pos)
            sarg = data[pos : pos + n].decode("utf-8", "replace")
            pos += n
        if typ == EV_BATCH:
            _want(args, 2, "Batch", off)
            last_gs[last_p] = last_g
            last_p = args[0]
            last_g = last_gs.get(last_p, 0)
            last_ts = args[1]
            seen_batch = True
            continue
        if typ == EV_FREQUENCY:
            _want(args, 1, "Frequency", off)
            ticks_per_sec = args[0]
            if ticks_per_sec <= 0:
                raise CorruptTraceError("clock frequency 0", off)
            continue
        if typ == EV_TIMER_GOROUTINE:
            _want(args, 1, "TimerGoroutine", off)
            timer_gs.add(args[0])
            continue
        if typ == EV_STACK:
            if len(args) < 2 or args[1] > 1000 or len(args) != 2 + 4 * args[1]:
                raise CorruptTraceError("malformed Stack entry", off)
            if args[0] and args[1]:
                raw_stacks[args[0]] = args[2:]
            continue
        name, _kind, has_stack, names = SPECS[typ]
        _want(args, 1 + len(names) + (1 if has_stack else 0), name, off)
        if not seen_batch:
            raise CorruptTraceError(f"{name} before the first batch", off)
        ts = last_ts + args[0]
        last_ts = ts
        g = last_g
        if typ in _STARTS:
            last_g = g = args[1]
        elif typ in _ENDS:
            last_g = 0
        elif typ in (29, 31, 32, 40):
            g = args[1]
        elif typ in (7, 8, 9, 10):
            g = 0
        raws.append((ts, typ, last_p if typ != 49 else args[2], g if typ != 49 else args[3], off,
                     args, sarg))
    if not seen_batch or not raws:
        raise TruncatedTraceError("the trace has no events", end)
    if not ticks_per_sec:
        raise TruncatedTraceError(
            "no Frequency event (Go 1.19 writes it last: the trace is cut short)",
            end,
        )
    return _finish(raws, strings, raw_stacks, timer_gs, ticks_per_sec, minor, end)


def _missing_stack(sid: int, name: str, off: int, end: int) -> TruncatedTraceError:
    # Go 1.19 dumps its stack table after the Frequency event, so a file cut inside the
    # table still has a frequency: the missing stacks are what give the cut away.
    return TruncatedTraceError(
        f"stack {sid} of the {name} event at byte offset {off} is not in the stack table "
        "(Go 1.19 writes the table last: the trace is cut short)", end)


def _finish(raws: list[tuple[int, int, int, int, int, list[int], str | None]],
            strings: dict[int, str], raw_stacks: dict[int, list[int]], timer_gs: set[int],
            ticks_per_sec: int, minor: int, end: int) -> list[Event]:
    stacks: dict[int, Stack] = {0: NO_STACK}
    for sid, flat in raw_stacks.items():
        stacks[sid] = tuple(
            Frame(flat[i], strings.get(flat[i + 1], ""), strings.get(flat[i + 2], ""),
                  flat[i + 3])
            for i in range(0, len(flat), 4)
        )
    # A blocked syscall's exit carries the real exit time; the toolchain reports that time.
    fixed = [((r[5][-1] if r[5][-1] else r[0]) if r[1] in (29, 40) else
              r[5][1] if r[1] == 49 else r[0], r) for r in raws]
    fixed.sort(key=_first)
    min_ts = fixed[0][0]
    freq = 1e9 / ticks_per_sec
    blocked_net: set[int] = set()  # goroutines whose last transition was GoBlockNet
    out: list[Event] = []
    append = out.append
    new = tuple.__new__
    for ts, (_t, typ, p, g, off, args, sarg) in fixed:
        name, kind, has_stack, names = SPECS[typ]
        vals = tuple(args[1 : 1 + len(names)])
        stack = NO_STACK
        if has_stack:
            found = stacks.get(args[-1])
            if found is None:
                raise _missing_stack(args[-1], name, off, end)
            stack = found
        if p >= 1 << 63:
            p -= 1 << 64  # the runtime writes "no P" as -1
        if typ in (29, 40):
            p = SYSCALL_P
        elif typ == 7:
            p = GC_P  # the toolchain attributes GC to the global GC state
        elif typ == 21 and g in timer_gs:
            p = TIMER_P
        if typ == 27:
            blocked_net.add(g)
        elif typ in (21, 39) and vals[0] in blocked_net:
            blocked_net.discard(vals[0])
            if p != TIMER_P:
                p = NETPOLL_P  # woken by the net poller, as the toolchain reports it
        strs: tuple[str, ...] = ()
        if typ in REASONS:
            strs = (REASONS[typ],)
        elif typ == 41:
            strs = (strings.get(vals[2], ""),)
        elif typ in (45, 47):
            strs = (strings.get(vals[2], ""),)
            if typ == 47 and vals[1] == 1:
                kind = Kind.USER_REGION_END
        elif typ == 48:
            strs = (strings.get(vals[1], ""), sarg or "")
        elif typ == 9:
            strs = ({0: "mark termination", 1: "sweep termination"}.get(vals[0], "unknown"),)
        extra = NO_STACK
        if typ == 13:
            found = stacks.get(vals[1])
            if found is None:
                raise _missing_stack(vals[1], name, off, end)
            extra = found
        append(new(Event, (kind, int((ts - min_ts) * freq), -1, p, g, vals, name, off, stack,
                           strs, extra, minor)))
    return out


_first = itemgetter(0)


def _uv(data: bytes, pos: int, end: int) -> tuple[int, int]:
    return uvarint(data, pos, end) if pos < end else _eof(pos)


def _eof(pos: int) -> tuple[int, int]:
    raise TruncatedTraceError("the data ends inside an event", pos)


def _want(args: list[int], n: int, name: str, off: int) -> None:
    if len(args) != n:
        raise CorruptTraceError(f"{name} has {len(args)} arguments, expected {n}", off)
