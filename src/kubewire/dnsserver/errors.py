"""The dnsserver package's exceptions: one base, one class per failure.

A bad Corefile raises ``kubewire.dns.corefile.CorefileError`` (from the pure parser, or from
here when a file it names cannot be read), so callers catch one class for "fix the Corefile".
"""

from __future__ import annotations


class DnsServerError(Exception):
    """Base class for what the dnsserver package raises besides CorefileError."""


class ListenError(DnsServerError, OSError):
    """An address in the Corefile could not be bound (in use, or a privileged port).

    Nothing changed: the previous configuration keeps serving. Pick another port, or run
    with the privilege to bind below 1024.
    """


class ObjectsError(DnsServerError, ValueError):
    """The --objects file is not JSON or YAML holding Kubernetes objects."""
