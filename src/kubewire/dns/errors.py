"""The dns package's exceptions: one base, one class per failure."""

from __future__ import annotations


class DnsError(Exception):
    """Base class for everything the dns package raises."""


class DnsInputError(DnsError, ValueError):
    """A Service, EndpointSlice, Pod or zone option that build_zone cannot read.

    The message names the object and the field; fix the manifest (or the option) and rebuild.
    """
