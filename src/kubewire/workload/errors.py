"""Exceptions of the workload package: one base, one class per failure."""

from __future__ import annotations


class WorkloadError(Exception):
    """Base of every error raised by kubewire.workload."""


class ControlError(WorkloadError, ConnectionError):
    """The pod server's control socket could not be reached or answered nonsense.

    Also a ConnectionError, so callers that retry on OSError while the server starts
    keep working.
    """


class RequestRejectedError(WorkloadError):
    """The pod server understood a control request and refused it.

    `code` is a short machine-readable reason (an errno name such as EADDRINUSE, or
    EEXIST/EINVAL/ENOENT for bad requests).
    """

    def __init__(self, message: str, code: str = "EINVAL") -> None:
        super().__init__(message)
        self.code = code


class PortBindError(RequestRejectedError):
    """A container's port could not be bound; nothing was bound for that container."""

    def __init__(self, message: str, code: str, port: int, protocol: str) -> None:
        super().__init__(message, code)
        self.port = port
        self.protocol = protocol


class ContainerSpecError(WorkloadError):
    """A container (or start request) has a field the workload package cannot use."""


class ProcessStartError(WorkloadError):
    """A real command could not be started inside a pod's namespaces."""


class ProcessRecordError(WorkloadError):
    """A pid file is missing, unreadable or not a kubewire process record."""
