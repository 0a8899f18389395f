"""Typed, immutable views of trace events, shared by both wire formats."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple


class Kind(Enum):
    """What an event says, in the names of the current (Go 1.22+) format.

    Old-format (Go 1.19) events map onto these; those without a current counterpart keep their
    own member (``GO_SYSCALL_BLOCK``, ``GO_WAITING``, ...). ``Event.wire_name`` keeps the
    format's own name.
    """

    # structural, reported once per generation
    SYNC = "Sync"
    # Ps
    PROCS_CHANGE = "ProcsChange"
    PROC_START = "ProcStart"
    PROC_STOP = "ProcStop"
    PROC_STEAL = "ProcSteal"
    PROC_STATUS = "ProcStatus"
    # goroutines
    GO_CREATE = "GoCreate"
    GO_CREATE_SYSCALL = "GoCreateSyscall"
    GO_CREATE_BLOCKED = "GoCreateBlocked"
    GO_START = "GoStart"
    GO_DESTROY = "GoDestroy"
    GO_DESTROY_SYSCALL = "GoDestroySyscall"
    GO_STOP = "GoStop"
    GO_BLOCK = "GoBlock"
    GO_UNBLOCK = "GoUnblock"
    GO_SYSCALL_BEGIN = "GoSyscallBegin"
    GO_SYSCALL_END = "GoSyscallEnd"
    GO_SYSCALL_END_BLOCKED = "GoSyscallEndBlocked"
    GO_STATUS = "GoStatus"
    GO_SWITCH = "GoSwitch"
    GO_SWITCH_DESTROY = "GoSwitchDestroy"
    # old format only
    GO_SYSCALL_BLOCK = "GoSysBlock"
    GO_WAITING = "GoWaiting"
    GO_IN_SYSCALL = "GoInSyscall"
    FUTILE_WAKEUP = "FutileWakeup"
    TIMER_GOROUTINE = "TimerGoroutine"
    # stop the world, GC, heap
    STW_BEGIN = "STWBegin"
    STW_END = "STWEnd"
    GC_ACTIVE = "GCActive"
    GC_BEGIN = "GCBegin"
    GC_END = "GCEnd"
    GC_SWEEP_ACTIVE = "GCSweepActive"
    GC_SWEEP_BEGIN = "GCSweepBegin"
    GC_SWEEP_END = "GCSweepEnd"
    GC_MARK_ASSIST_ACTIVE = "GCMarkAssistActive"
    GC_MARK_ASSIST_BEGIN = "GCMarkAssistBegin"
    GC_MARK_ASSIST_END = "GCMarkAssistEnd"
    HEAP_ALLOC = "HeapAlloc"
    HEAP_GOAL = "HeapGoal"
    # annotations
    GO_LABEL = "GoLabel"
    USER_TASK_BEGIN = "UserTaskBegin"
    USER_TASK_END = "UserTaskEnd"
    USER_REGION_BEGIN = "UserRegionBegin"
    USER_REGION_END = "UserRegionEnd"
    USER_LOG = "UserLog"
    CPU_SAMPLE = "CPUSample"
    CLOCK_SNAPSHOT = "ClockSnapshot"
    # experimental (AllocFree) events, reported but not interpreted
    EXPERIMENTAL = "Experimental"


class GoState(Enum):
    """A goroutine's state as GoStatus reports it (current format)."""

    BAD = 0
    RUNNABLE = 1
    RUNNING = 2
    SYSCALL = 3
    WAITING = 4


class ProcState(Enum):
    """A P's state as ProcStatus reports it (current format)."""

    BAD = 0
    RUNNING = 1
    IDLE = 2
    SYSCALL = 3
    SYSCALL_ABANDONED = 4


@dataclass(frozen=True, slots=True)
class Frame:
    pc: int
    func: str
    file: str
    line: int


Stack = tuple[Frame, ...]
NO_STACK: Stack = ()


class Event(NamedTuple):
    """One trace event (an immutable, typed record).

    A NamedTuple rather than a frozen dataclass: the reader builds millions of these and a
    tuple is built about seven times faster; it is just as immutable.

    ``ts`` is in nanoseconds: for Go 1.22+ the runtime's clock as the Go toolchain reports it,
    for Go 1.19 relative to the first event (as ``go tool trace -d`` prints it). ``m``, ``p``
    and ``g`` are the thread, P and goroutine the event happened on (-1: none; Go 1.19 records
    no M). ``offset`` is the byte offset of the event in the file.

    ``args`` holds every argument after the timestamp in wire order, ids included (names:
    ``arg_names``); ``stack`` is the event's stack resolved through the stack table,
    ``extra_stack`` the new goroutine's stack of GoCreate, ``strings`` the string arguments
    resolved through the string table (a GoBlock's reason, a label, a log's key and value).
    """

    kind: Kind
    ts: int
    m: int
    p: int
    g: int
    args: tuple[int, ...]
    wire_name: str
    offset: int
    stack: Stack = NO_STACK
    strings: tuple[str, ...] = ()
    extra_stack: Stack = NO_STACK
    version: int = 0  # the format's minor version: 19, 22, ... 26

    def arg(self, name: str) -> int:
        """An argument by its name in the format's spec (``arg_names``)."""
        return self.args[arg_names(self.version, self.wire_name).index(name)]


# Argument names after the timestamp, per wire event name: current format, then Go 1.19.
ARG_NAMES: dict[str, tuple[str, ...]] = {}
ARG_NAMES_V1: dict[str, tuple[str, ...]] = {}


def arg_names(version: int, wire_name: str) -> tuple[str, ...]:
    return (ARG_NAMES_V1 if version < 22 else ARG_NAMES)[wire_name]
