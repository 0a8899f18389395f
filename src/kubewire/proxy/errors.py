"""The proxy package's exceptions: one base, one class per failure."""

from __future__ import annotations


class ProxyError(Exception):
    """Base class for everything the proxy package raises."""


class ProxyInputError(ProxyError, ValueError):
    """A Service, EndpointSlice or node context the compiler cannot read."""


class ProxySyncError(ProxyError):
    """nft refused a transaction; the previous ruleset is still in force.

    ``stderr`` holds nft's own message. The syncer keeps its previous state and makes the
    next sync a full one, so calling ``sync`` again is the retry.
    """

    def __init__(self, message: str, stderr: str = "", transaction: str = "") -> None:
        super().__init__(message)
        self.stderr = stderr
        self.transaction = transaction


class FakeNftError(ProxySyncError):
    """The validating fake refused a transaction, as the kernel would (nothing changed)."""
