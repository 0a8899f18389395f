"""One exception base for kubewire.gotelemetry."""

from __future__ import annotations


class GoTelemetryError(Exception):
    """Base of every error this package raises; the message says what to do."""


class SchedTraceError(GoTelemetryError):
    """A SCHED record (or one of its P/M/G lines) that does not parse."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


class AdviceInputError(GoTelemetryError):
    """A CPU limit, Go version, GOMAXPROCS or GODEBUG value the advisor cannot use."""


class ProbeError(GoTelemetryError):
    """A live process whose cgroup CPU limit cannot be read."""
