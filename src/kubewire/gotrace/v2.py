"""The current trace format (Go 1.22 and later): generations of per-M batches.

A generation is a self-contained slice of the trace: its event batches (one stream per M,
timestamps as deltas from the batch's base), its string and stack tables, and the clock
frequency. The reader holds one generation at a time, so memory is bounded by the largest
generation (the runtime starts a new one about every second), not by the file.
"""

from __future__ import annotations

import gc
from bisect import bisect_right
from dataclasses import dataclass, field
from itertools import compress, islice
from operator import itemgetter, le

from kubewire.gotrace.errors import CorruptTraceError, TruncatedTraceError
from kubewire.gotrace.events import ARG_NAMES, NO_STACK, Event, Frame, Kind, Stack
from kubewire.gotrace.wire import HEADER_LEN, uvarint

EV_EVENT_BATCH = 1
EV_STACKS = 2
EV_STACK = 3
EV_STRINGS = 4
EV_STRING = 5
EV_CPU_SAMPLES = 6
EV_CPU_SAMPLE = 7
EV_FREQUENCY = 8
EV_EXPERIMENTAL_BATCH = 49
EV_SYNC = 50
EV_CLOCK_SNAPSHOT = 51
EV_END_OF_GENERATION = 52

MAX_BATCH_SIZE = 64 << 10
MAX_FRAMES = 128
MAX_STRING = 1 << 10


@dataclass(frozen=True, slots=True)
class Spec:
    """One timed event type: its arguments after the timestamp and which are ids."""

    kind: Kind
    name: str
    args: tuple[str, ...]
    stack: int = -1  # index into args of the event's stack id
    new_stack: int = -1  # GoCreate's new goroutine stack
    strings: tuple[int, ...] = ()
    since: int = 22


_S = Spec
K = Kind
# Wire numbers and argument layouts: internal/trace/tracev2 (events.go) of the Go tree.
SPECS: dict[int, Spec] = {
    9: _S(K.PROCS_CHANGE, "ProcsChange", ("procs_value", "stack"), stack=1),
    10: _S(K.PROC_START, "ProcStart", ("p", "p_seq")),
    11: _S(K.PROC_STOP, "ProcStop", ()),
    12: _S(K.PROC_STEAL, "ProcSteal", ("p", "p_seq", "m")),
    13: _S(K.PROC_STATUS, "ProcStatus", ("p", "pstatus")),
    14: _S(K.GO_CREATE, "GoCreate", ("new_g", "new_stack", "stack"), stack=2, new_stack=1),
    15: _S(K.GO_CREATE_SYSCALL, "GoCreateSyscall", ("new_g",)),
    16: _S(K.GO_START, "GoStart", ("g", "g_seq")),
    17: _S(K.GO_DESTROY, "GoDestroy", ()),
    18: _S(K.GO_DESTROY_SYSCALL, "GoDestroySyscall", ()),
    19: _S(K.GO_STOP, "GoStop", ("reason_string", "stack"), stack=1, strings=(0,)),
    20: _S(K.GO_BLOCK, "GoBlock", ("reason_string", "stack"), stack=1, strings=(0,)),
    21: _S(K.GO_UNBLOCK, "GoUnblock", ("g", "g_seq", "stack"), stack=2),
    22: _S(K.GO_SYSCALL_BEGIN, "GoSyscallBegin", ("p_seq", "stack"), stack=1),
    23: _S(K.GO_SYSCALL_END, "GoSyscallEnd", ()),
    24: _S(K.GO_SYSCALL_END_BLOCKED, "GoSyscallEndBlocked", ()),
    25: _S(K.GO_STATUS, "GoStatus", ("g", "m", "gstatus")),
    26: _S(K.STW_BEGIN, "STWBegin", ("kind_string", "stack"), stack=1, strings=(0,)),
    27: _S(K.STW_END, "STWEnd", ()),
    28: _S(K.GC_ACTIVE, "GCActive", ("gc_seq",)),
    29: _S(K.GC_BEGIN, "GCBegin", ("gc_seq", "stack"), stack=1),
    30: _S(K.GC_END, "GCEnd", ("gc_seq",)),
    31: _S(K.GC_SWEEP_ACTIVE, "GCSweepActive", ("p",)),
    32: _S(K.GC_SWEEP_BEGIN, "GCSweepBegin", ("stack",), stack=0),
    33: _S(K.GC_SWEEP_END, "GCSweepEnd", ("swept_value", "reclaimed_value")),
    34: _S(K.GC_MARK_ASSIST_ACTIVE, "GCMarkAssistActive", ("g",)),
    35: _S(K.GC_MARK_ASSIST_BEGIN, "GCMarkAssistBegin", ("stack",), stack=0),
    36: _S(K.GC_MARK_ASSIST_END, "GCMarkAssistEnd", ()),
    37: _S(K.HEAP_ALLOC, "HeapAlloc", ("heapalloc_value",)),
    38: _S(K.HEAP_GOAL, "HeapGoal", ("heapgoal_value",)),
    39: _S(K.GO_LABEL, "GoLabel", ("label_string",), strings=(0,)),
    40: _S(K.USER_TASK_BEGIN, "UserTaskBegin", ("task", "parent_task", "name_string", "stack"),
           stack=3, strings=(2,)),
    41: _S(K.USER_TASK_END, "UserTaskEnd", ("task", "stack"), stack=1),
    42: _S(K.USER_REGION_BEGIN, "UserRegionBegin", ("task", "name_string", "stack"), stack=2,
           strings=(1,)),
    43: _S(K.USER_REGION_END, "UserRegionEnd", ("task", "name_string", "stack"), stack=2,
           strings=(1,)),
    44: _S(K.USER_LOG, "UserLog", ("task", "key_string", "value_string", "stack"), stack=3,
           strings=(1, 2)),
    45: _S(K.GO_SWITCH, "GoSwitch", ("g", "g_seq"), since=23),
    46: _S(K.GO_SWITCH_DESTROY, "GoSwitchDestroy", ("g", "g_seq"), since=23),
    47: _S(K.GO_CREATE_BLOCKED, "GoCreateBlocked", ("new_g", "new_stack", "stack"), stack=2,
           new_stack=1, since=23),
    48: _S(K.GO_STATUS, "GoStatusStack", ("g", "m", "gstatus", "stack"), stack=3, since=23),
}
for _spec in SPECS.values():
    ARG_NAMES[_spec.name] = _spec.args
ARG_NAMES["Sync"] = ("n",)
ARG_NAMES["CPUSample"] = ("m", "p", "g", "stack")

# Fast-path table indexed by wire number (None: not an event of a batch).
_CTX_CHANGING = frozenset({10, 11, 12, 13, 15, 16, 17, 18, 19, 20, 24, 25, 45, 46, 48})
# wire number -> (nargs, kind, name, stack arg, new-stack arg, string args, changes M context)
_Info = tuple[int, Kind, str, int, int, tuple[int, ...], bool]
_TABLE: list[_Info | None] = [None] * 256
_TABLE_122: list[_Info | None] = [None] * 256
for _n, _spec in SPECS.items():
    _TABLE[_n] = (len(_spec.args), _spec.kind, _spec.name, _spec.stack, _spec.new_stack,
                  _spec.strings, _n in _CTX_CHANGING)
    if _spec.since <= 22:
        _TABLE_122[_n] = _TABLE[_n]

GO_RUNNING = 2
GO_SYSCALL = 3
PROC_RUNNING = 1
PROC_SYSCALL = 3


@dataclass(slots=True)
class _Batch:
    m: int
    ts: int
    start: int  # offset of the batch's data in the file
    data: bytes
    exp: int = 0


@dataclass(slots=True)
class _MState:
    p: int = -1
    g: int = -1


@dataclass(slots=True)
class Generation:
    """The raw pieces of one generation, before events are decoded."""

    gen: int
    batches: list[_Batch] = field(default_factory=list)


def _event_batches_key(b: _Batch) -> int:
    return b.ts


class V2Decoder:
    """Turns whole generations into time-ordered events; keeps per-M state across them."""

    def __init__(self, minor: int) -> None:
        self.minor = minor
        self.mstate: dict[int, _MState] = {}
        self.last_ts = 0
        self.syncs = 0
        self.steals = False  # this generation has a ProcSteal from another M

    # -- tables ---------------------------------------------------------------------------
    def _strings(self, batches: list[_Batch]) -> dict[int, str]:
        out: dict[int, str] = {}
        for b in batches:
            d = b.data
            end = len(d)
            pos = 1
            while pos < end:
                if d[pos] != EV_STRING:
                    raise CorruptTraceError(
                        f"expected a String entry (type {EV_STRING}), found type {d[pos]}",
                        b.start + pos,
                    )
                at = pos
                sid, pos = uvarint(d, pos + 1, end)
                n, pos = uvarint(d, pos, end)
                if n > MAX_STRING:
                    raise CorruptTraceError(f"string of {n} bytes (max {MAX_STRING})", b.start + at)
                if pos + n > end:
                    raise TruncatedTraceError("string runs past its batch", b.start + pos)
                if sid in out:
                    raise CorruptTraceError(f"string id {sid} defined twice", b.start + at)
                out[sid] = d[pos : pos + n].decode("utf-8", "replace")
                pos += n
        return out

    def _stacks(self, batches: list[_Batch], strings: dict[int, str]) -> dict[int, Stack]:
        out: dict[int, Stack] = {0: NO_STACK}
        frames: dict[tuple[int, int, int, int], Frame] = {}
        for b in batches:
            d = b.data
            end = len(d)
            pos = 1
            while pos < end:
                if d[pos] != EV_STACK:
                    raise CorruptTraceError(
                        f"expected a Stack entry (type {EV_STACK}), found type {d[pos]}",
                        b.start + pos,
                    )
                at = pos
                sid, pos = uvarint(d, pos + 1, end)
                n, pos = uvarint(d, pos, end)
                if n > MAX_FRAMES:
                    raise CorruptTraceError(f"stack of {n} frames (max {MAX_FRAMES})", b.start + at)
                stack = []
                for _ in range(n):
                    pc, pos = uvarint(d, pos, end)
                    fn, pos = uvarint(d, pos, end)
                    fl, pos = uvarint(d, pos, end)
                    line, pos = uvarint(d, pos, end)
                    key = (pc, fn, fl, line)
                    fr = frames.get(key)
                    if fr is None:
                        fr = frames[key] = Frame(pc, self._str(strings, fn, b.start + at),
                                                 self._str(strings, fl, b.start + at), line)
                    stack.append(fr)
                if sid in out and sid != 0:
                    raise CorruptTraceError(f"stack id {sid} defined twice", b.start + at)
                out[sid] = tuple(stack)
        return out

    @staticmethod
    def _str(strings: dict[int, str], sid: int, off: int) -> str:
        if sid == 0:
            return ""
        s = strings.get(sid)
        if s is None:
            raise CorruptTraceError(f"string id {sid} is not in the string table", off)
        return s

    def _freq(self, b: _Batch) -> float:
        d = b.data
        end = len(d)
        pos = 1 if self.minor >= 25 else 0
        freq = 0
        while pos < end:
            typ = d[pos]
            at = pos
            pos += 1
            if typ == EV_FREQUENCY:
                if freq:
                    raise CorruptTraceError("two Frequency events in one generation", b.start + at)
                freq, pos = uvarint(d, pos, end)
                if freq == 0:
                    raise CorruptTraceError("clock frequency 0", b.start + at)
            elif typ == EV_CLOCK_SNAPSHOT and self.minor >= 25:
                for _ in range(4):
                    _, pos = uvarint(d, pos, end)
            else:
                raise CorruptTraceError(
                    f"expected Frequency or ClockSnapshot in the sync batch, found type {typ}",
                    b.start + at,
                )
        if not freq:
            raise CorruptTraceError("sync batch without a Frequency event", b.start)
        # nanoseconds per timestamp unit, computed as the Go toolchain does
        return 1.0 / (freq / 1e9)

    # -- a generation ---------------------------------------------------------------------
    def decode(self, gen: Generation, end_offset: int) -> list[Event]:
        strings_b: list[_Batch] = []
        stacks_b: list[_Batch] = []
        samples_b: list[_Batch] = []
        sync_b: list[_Batch] = []
        per_m: dict[int, list[_Batch]] = {}
        sync_type = EV_SYNC if self.minor >= 25 else EV_FREQUENCY
        for b in gen.batches:
            if b.exp or not b.data:
                continue
            first = b.data[0]
            if first == EV_STRINGS:
                strings_b.append(b)
            elif first == EV_STACKS:
                stacks_b.append(b)
            elif first == EV_CPU_SAMPLES:
                samples_b.append(b)
            elif first == sync_type:
                sync_b.append(b)
            else:
                per_m.setdefault(b.m, []).append(b)
        if not sync_b:
            raise CorruptTraceError(
                f"generation {gen.gen} has no clock frequency (sync batch)", end_offset
            )
        if len(sync_b) > 1:
            raise CorruptTraceError(f"generation {gen.gen} has two sync batches", sync_b[1].start)
        freq = self._freq(sync_b[0])
        strings = self._strings(strings_b)
        stacks = self._stacks(stacks_b, strings)
        streams: list[list[Event]] = []
        for m, batches in per_m.items():  # in order of first appearance, as Go's reader
            batches.sort(key=_event_batches_key)
            # Millions of small tuples and nothing cyclic: the cyclic collector would only
            # rescan them (a third of the time); paused just for this call, which never yields.
            gc_was_on = gc.isenabled()
            gc.disable()
            try:
                evs = self._decode_m(_sid(m), batches, freq, strings, stacks)
            finally:
                if gc_was_on:
                    gc.enable()
            if evs:
                streams.append(evs)
        samples = self._samples(samples_b, freq, stacks)
        self.syncs += 1
        last = self.last_ts
        sync_ts = int(min(b.ts for b in gen.batches) * freq)
        last = sync_ts if sync_ts > last else last + 1
        sync = Event(Kind.SYNC, last, -1, -1, -1, (self.syncs,), "Sync", end_offset,
                     version=self.minor)
        merged = _merge_like_go(streams)
        streams.clear()
        if self.steals:
            self._apply_steals(merged)
            self.steals = False
        if samples:
            # a CPU sample goes before the next event only if strictly earlier
            merged.extend(samples)
            merged.sort(key=_ts)
        merged.insert(0, sync)
        self.last_ts = _make_increasing(merged)
        return merged

    def _apply_steals(self, merged: list[Event]) -> None:
        """A ProcSteal takes the P from another M (``args[2]``) at that point of the merged
        order; until that M binds a P again (ProcStart, ProcStatus) its events have no P, as
        Go's reader reports them. Only this pass sees both Ms' events in order."""
        lost: dict[int, int] = {}  # victim M -> stolen P
        start = next(i for i, e in enumerate(merged) if e[0] is Kind.PROC_STEAL)
        for i in range(start, len(merged)):
            e = merged[i]
            if lost and e.m in lost:
                if e.p == lost[e.m]:
                    merged[i] = e = e._replace(p=-1)
                if e.kind is Kind.PROC_START or e.kind is Kind.PROC_STATUS:
                    del lost[e.m]
            if e.kind is Kind.PROC_STEAL and e.args[2] != e.m:
                lost[e.args[2]] = e.args[0]
        for m, p in lost.items():
            st = self.mstate.get(m)
            if st is not None and st.p == p:
                st.p = -1

    def final_sync(self, end_offset: int) -> Event:
        """The Sync event that closes the trace (the Go toolchain reports one too)."""
        self.syncs += 1
        self.last_ts += 1
        return Event(Kind.SYNC, self.last_ts, -1, -1, -1, (self.syncs,), "Sync", end_offset,
                     version=self.minor)

    def _samples(self, batches: list[_Batch], freq: float, stacks: dict[int, Stack]) -> list[Event]:
        out: list[Event] = []
        for b in batches:
            d = b.data
            end = len(d)
            pos = 1
            while pos < end:
                at = pos
                if d[pos] != EV_CPU_SAMPLE:
                    raise CorruptTraceError(
                        f"expected a CPUSample entry (type {EV_CPU_SAMPLE}), found type {d[pos]}",
                        b.start + pos,
                    )
                pos += 1
                vals = []
                for _ in range(5):
                    v, pos = uvarint(d, pos, end)
                    vals.append(v)
                t, m, p, g, stk = vals
                out.append(Event(Kind.CPU_SAMPLE, int(t * freq), _sid(m), _sid(p), _sid(g),
                                 (m, p, g, stk), "CPUSample", b.start + at,
                                 self._stack(stacks, stk, b.start + at), version=self.minor))
        out.sort(key=_ts)
        return out

    @staticmethod
    def _stack(stacks: dict[int, Stack], sid: int, off: int) -> Stack:
        s = stacks.get(sid)
        if s is None:
            raise CorruptTraceError(f"stack id {sid} is not in the stack table", off)
        return s

    def _decode_m(self, m: int, batches: list[_Batch], freq: float, strings: dict[int, str],
                  stacks: dict[int, Stack]) -> list[Event]:
        out: list[Event] = []
        append = out.append
        st = self.mstate.get(m)
        if st is None:
            st = self.mstate[m] = _MState()
        cur_p = st.p
        cur_g = st.g
        steals = False
        minor = self.minor
        table = _TABLE_122 if minor < 23 else _TABLE
        new = tuple.__new__
        no_stack = NO_STACK
        stack_get = stacks.get
        # Go converts with float math (ns per tick); when that is a whole number (64 ns on
        # linux/amd64) integer math gives the same result, faster.
        ifreq = int(freq) if freq.is_integer() else 0
        exact = _EXACT
        for b in batches:
            d = b.data
            base = b.start
            last = int(b.ts * freq)
            end = len(d)
            pos = 0
            at = 0
            try:
                while pos < end:
                    at = pos
                    typ = d[pos]
                    info = table[typ]
                    if info is None:
                        raise CorruptTraceError(
                            f"unknown event type {typ} in a batch of M {m} "
                            f"(format go 1.{minor})", base + at,
                        )
                    n, kind, name, si, nsi, sa, cx = info
                    # varints inline: one byte is the common case, longer ones go to slow()
                    pos += 1
                    dt = d[pos]
                    pos += 1
                    if dt > 127:
                        dt &= 127
                        sh = 7
                        while True:
                            y = d[pos]
                            pos += 1
                            dt |= (y & 127) << sh
                            if y < 128:
                                break
                            sh += 7
                            if sh > 63:
                                raise _Overflow(pos)
                    if n == 0:
                        args: tuple[int, ...] = ()
                    elif n == 1:
                        a = d[pos]
                        pos += 1
                        if a > 127:
                            a &= 127
                            sh = 7
                            while True:
                                y = d[pos]
                                pos += 1
                                a |= (y & 127) << sh
                                if y < 128:
                                    break
                                sh += 7
                                if sh > 63:
                                    raise _Overflow(pos)
                        args = (a,)
                    elif n == 2:
                        a = d[pos]
                        pos += 1
                        if a > 127:
                            a &= 127
                            sh = 7
                            while True:
                                y = d[pos]
                                pos += 1
                                a |= (y & 127) << sh
                                if y < 128:
                                    break
                                sh += 7
                                if sh > 63:
                                    raise _Overflow(pos)
                        c = d[pos]
                        pos += 1
                        if c > 127:
                            c &= 127
                            sh = 7
                            while True:
                                y = d[pos]
                                pos += 1
                                c |= (y & 127) << sh
                                if y < 128:
                                    break
                                sh += 7
                                if sh > 63:
                                    raise _Overflow(pos)
                        args = (a, c)
                    elif n == 3:
                        a = d[pos]
                        pos += 1
                        if a > 127:
                            a &= 127
                            sh = 7
                            while True:
                                y = d[pos]
                                pos += 1
                                a |= (y & 127) << sh
                                if y < 128:
                                    break
                                sh += 7
                                if sh > 63:
                                    raise _Overflow(pos)
                        c = d[pos]
                        pos += 1
                        if c > 127:
                            c &= 127
                            sh = 7
                            while True:
                                y = d[pos]
                                pos += 1
                                c |= (y & 127) << sh
                                if y < 128:
                                    break
                                sh += 7
                                if sh > 63:
                                    raise _Overflow(pos)
                        e = d[pos]
                        pos += 1
                        if e > 127:
                            e &= 127
                            sh = 7
                            while True:
                                y = d[pos]
                                pos += 1
                                e |= (y & 127) << sh
                                if y < 128:
                                    break
                                sh += 7
                                if sh > 63:
                                    raise _Overflow(pos)
                        args = (a, c, e)
                    else:
                        lst = []
                        for _ in range(n):
                            a = d[pos]
                            pos += 1
                            if a > 127:
                                a &= 127
                                sh = 7
                                while True:
                                    y = d[pos]
                                    pos += 1
                                    a |= (y & 127) << sh
                                    if y < 128:
                                        break
                                    sh += 7
                                    if sh > 63:
                                        raise _Overflow(pos)
                            lst.append(a)
                        args = tuple(lst)
                    if ifreq and dt < exact:
                        last += dt * ifreq
                    else:
                        last += int(dt * freq)
                    stack = no_stack
                    if si >= 0:
                        stack = stack_get(args[si])  # type: ignore[assignment]
                        if stack is None:
                            raise CorruptTraceError(
                                f"stack id {args[si]} is not in the stack table", base + at
                            )
                    extra = no_stack
                    if nsi >= 0:
                        extra = stack_get(args[nsi])  # type: ignore[assignment]
                        if extra is None:
                            raise CorruptTraceError(
                                f"stack id {args[nsi]} is not in the stack table", base + at
                            )
                    strs: tuple[str, ...] = ()
                    if sa:
                        if len(sa) == 1 and args[sa[0]] in strings:
                            strs = (strings[args[sa[0]]],)
                        else:
                            strs = tuple([self._str(strings, args[k], base + at) for k in sa])
                    append(new(Event, (kind, last, m, cur_p, cur_g, args, name, base + at, stack,
                                       strs, extra, minor)))
                    if not cx:
                        continue
                    # the M's context after this event
                    if typ == 16 or typ == 45 or typ == 46:  # GoStart, GoSwitch(Destroy)
                        cur_g = args[0]
                    elif typ == 17 or typ == 19 or typ == 20 or typ == 18:
                        cur_g = -1
                    elif typ == 10:  # ProcStart
                        cur_p = args[0]
                    elif typ == 11:  # ProcStop
                        cur_p = -1
                    elif typ == 24:  # GoSyscallEndBlocked: the G is runnable, not running
                        cur_g = -1
                    elif typ == 12:  # ProcSteal from itself: like a ProcStop
                        if args[2] == m:
                            cur_p = -1
                        else:
                            steals = True
                    elif typ == 13:  # ProcStatus
                        if args[1] == PROC_RUNNING or args[1] == PROC_SYSCALL:
                            cur_p = args[0]
                    elif typ == 25 or typ == 48:  # GoStatus
                        if args[2] == GO_RUNNING or args[2] == GO_SYSCALL:
                            cur_g = args[0]
                    elif typ == 15:  # GoCreateSyscall
                        cur_g = args[0]
            except IndexError:
                raise TruncatedTraceError("event runs past the end of its batch",
                                          base + at) from None
            except _Overflow:
                raise CorruptTraceError("varint longer than 64 bits", base + at) from None
        st.p = cur_p
        st.g = cur_g
        self.steals = self.steals or steals
        return out


_EXACT = 1 << 53  # below this a float holds an integer exactly


class _Overflow(Exception):
    pass


def _merge_like_go(streams: list[list[Event]]) -> list[Event]:
    """Merge per-M time-ordered streams in the order the Go toolchain's reader does.

    Go keeps one cursor per M in a binary min-heap on the next event's time (built by
    inserting the Ms in order of first appearance; sift-up and sift-down move an entry only
    past a strictly smaller time) and always takes the root. Which of two Ms with the same
    time goes first is decided by that heap, and it decides who gets the +1 ns fix-up, so
    the heap is reproduced here. The root keeps the lead while its next time is <= both
    children's, so whole runs are sliced out at once (bisect) and the heap is touched only
    when the lead changes. Go's reader also skips an event whose ordering preconditions do
    not hold yet; that is not modelled (no trace here needed it).
    """
    if len(streams) == 1:
        return streams[0]
    times: list[list[int]] = [list(map(_ts, s)) for s in streams]
    pos = [0] * len(streams)
    heap: list[int] = []

    def key(i: int) -> int:
        return times[i][pos[i]]

    def sift_up(j: int) -> None:
        while j > 0 and key(heap[(j - 1) // 2]) > key(heap[j]):
            heap[(j - 1) // 2], heap[j] = heap[j], heap[(j - 1) // 2]
            j = (j - 1) // 2

    def sift_down(j: int) -> None:
        n = len(heap)
        while True:
            m = j
            t = key(heap[j])
            for c in (2 * j + 1, 2 * j + 2):
                if c < n and key(heap[c]) < t:
                    m = c
                    t = key(heap[c])
            if m == j:
                return
            heap[j], heap[m] = heap[m], heap[j]
            j = m

    for i in range(len(streams)):
        heap.append(i)
        sift_up(len(heap) - 1)
    out: list[Event] = []
    while heap:
        r = heap[0]
        n = len(heap)
        mc = min(key(heap[c]) for c in (1, 2) if c < n) if n > 1 else None
        ts_r = times[r]
        stop = len(ts_r) if mc is None else max(bisect_right(ts_r, mc, pos[r]), pos[r] + 1)
        out.extend(streams[r][pos[r] : stop])
        pos[r] = stop
        if stop == len(ts_r):
            heap[0] = heap[-1]
            heap.pop()
            if heap:
                sift_down(0)
        else:
            sift_down(0)
    return out


def _make_increasing(evs: list[Event]) -> int:
    """Bump each time that is not after the one before to that + 1 ns, as the Go toolchain
    does; returns the last time. Finds the spots in C, fixes them in Python."""
    if not evs:
        return 0
    ts = list(map(_ts, evs))
    bad = map(le, islice(ts, 1, None), ts)
    last = ts[0]
    done = 0
    for k in compress(range(1, len(ts)), bad):
        if k <= done:
            continue
        last = ts[k - 1]
        while k < len(ts) and ts[k] <= last:
            last += 1
            ts[k] = last
            evs[k] = evs[k]._replace(ts=last)
            k += 1
        done = k
    return int(ts[-1])


_ts = itemgetter(1)  # Event.ts, in C


def _sid(v: int) -> int:
    # CPU samples write "none" as ^0 (all ones) in the varint's 64 bits.
    return -1 if v == (1 << 64) - 1 else v


class V2Splitter:
    """Cuts the byte stream into generations (sans-I/O: feed bytes, take generations)."""

    def __init__(self, minor: int) -> None:
        self.minor = minor
        self.buf = bytearray()
        self.base = HEADER_LEN  # file offset of buf[0]
        self.current: Generation | None = None
        self.ready: list[tuple[Generation, int]] = []

    def feed(self, data: bytes) -> None:
        self.buf += data
        self._scan(final=False)

    def close(self) -> None:
        self._scan(final=True)
        if self.buf:
            raise TruncatedTraceError("the data ends inside a batch header", self.base)
        if self.current is not None:
            if self.minor >= 26:
                raise TruncatedTraceError(
                    f"generation {self.current.gen} has no end-of-generation marker",
                    self.base,
                )
            self.ready.append((self.current, self.base))
            self.current = None

    def _finish(self, at: int) -> None:
        if self.current is not None:
            self.ready.append((self.current, at))
            self.current = None

    def _scan(self, final: bool) -> None:
        buf = self.buf
        end = len(buf)
        pos = 0
        while pos < end:
            at = pos
            typ = buf[pos]
            if typ == EV_END_OF_GENERATION and self.minor >= 26:
                if self.current is None:
                    raise CorruptTraceError("end-of-generation marker outside a generation",
                                            self.base + at)
                pos += 1
                self._finish(self.base + pos)
                continue
            if typ != EV_EVENT_BATCH and not (typ == EV_EXPERIMENTAL_BATCH and self.minor >= 23):
                raise CorruptTraceError(f"expected a batch (type {EV_EVENT_BATCH}), found type "
                                        f"{typ}", self.base + at)
            pos += 1
            try:
                exp = 0
                if typ == EV_EXPERIMENTAL_BATCH:
                    if pos >= end:
                        raise TruncatedTraceError("", 0)
                    exp = buf[pos]
                    pos += 1
                gen, pos = uvarint(buf, pos, end)
                m, pos = uvarint(buf, pos, end)
                ts, pos = uvarint(buf, pos, end)
                size, pos = uvarint(buf, pos, end)  # uvarint reads any bytes-like buffer
            except TruncatedTraceError:
                pos = at
                break
            if size > MAX_BATCH_SIZE:
                raise CorruptTraceError(f"batch of {size} bytes (max {MAX_BATCH_SIZE})",
                                        self.base + at)
            if pos + size > end:
                pos = at
                break
            b = _Batch(m, ts, self.base + pos, bytes(buf[pos : pos + size]), exp)
            pos += size
            cur = self.current
            if cur is not None and cur.gen != gen:
                if self.minor >= 26:
                    raise CorruptTraceError(
                        f"batch of generation {gen} inside generation {cur.gen}", self.base + at
                    )
                if gen < cur.gen:
                    raise CorruptTraceError(
                        f"generation {gen} after generation {cur.gen}", self.base + at
                    )
                self._finish(self.base + at)
                cur = None
            if cur is None:
                cur = self.current = Generation(gen)
            cur.batches.append(b)
        del buf[:pos]
        self.base += pos
        if final and buf:
            raise TruncatedTraceError("the data ends inside a batch", self.base)
