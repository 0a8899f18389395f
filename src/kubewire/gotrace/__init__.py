"""Go execution traces (runtime/trace): a pure, streaming reader. See README.md."""

from kubewire.gotrace.errors import (
    CorruptTraceError,
    GoTraceError,
    TraceError,
    TruncatedTraceError,
    UnsupportedVersionError,
)
from kubewire.gotrace.events import (
    ARG_NAMES,
    NO_STACK,
    Event,
    Frame,
    GoState,
    Kind,
    ProcState,
    Stack,
)
from kubewire.gotrace.reader import TraceReader, iter_events, read_events

__all__ = [
    "ARG_NAMES",
    "NO_STACK",
    "CorruptTraceError",
    "Event",
    "Frame",
    "GoState",
    "GoTraceError",
    "Kind",
    "ProcState",
    "Stack",
    "TraceError",
    "TraceReader",
    "TruncatedTraceError",
    "UnsupportedVersionError",
    "iter_events",
    "read_events",
]
