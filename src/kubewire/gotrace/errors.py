"""The gotrace package's exceptions: one base, one class per failure."""

from __future__ import annotations


class GoTraceError(Exception):
    """Base class for everything the gotrace package raises."""


class TraceError(GoTraceError, ValueError):
    """A trace the reader cannot read. ``offset`` is the byte offset of the problem.

    The message says what was expected there; regenerate the trace (runtime/trace, ``go test
    -trace``) with a supported toolchain, or check that the file was not cut short.
    """

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(f"Go trace: byte offset {offset}: {message}")
        self.offset = offset
        self.reason = message


class TruncatedTraceError(TraceError):
    """The data ended inside a header, batch, event or generation."""


class UnsupportedVersionError(TraceError):
    """The header names a trace format this reader does not know."""


class CorruptTraceError(TraceError):
    """The bytes are there but do not follow the format (bad event type, size, id, order)."""
