"""The bgp package's exceptions: one base, one class per failure."""

from __future__ import annotations

from kubewire.bgp.constants import ErrorCode


class BgpError(Exception):
    """Base class for everything the bgp package raises."""


class MessageError(BgpError, ValueError):
    """A received message that the peer must be told about with a NOTIFICATION.

    ``code``/``subcode``/``data`` are exactly what RFC 4271 section 6 says to send; the FSM
    turns this into the NOTIFICATION and closes the session. Nothing to fix locally: the
    peer (or the link) sent bytes BGP cannot accept.
    """

    def __init__(self, code: ErrorCode, subcode: int, message: str, data: bytes = b"") -> None:
        super().__init__(message)
        self.code = code
        self.subcode = subcode
        self.data = data


class EncodeError(BgpError, ValueError):
    """A value that cannot be put on the wire (an AS number out of range, a message over the
    size limit, a prefix of the wrong family). Fix the caller's data; nothing was sent."""


class FsmError(BgpError, RuntimeError):
    """The FSM was driven in a way the API does not allow (e.g. an event of the wrong type).

    Protocol-level surprises never raise: they are RFC 4271 reactions in the action list."""
