"""The one exception base of the BGP driver."""

from __future__ import annotations


class BgpdError(Exception):
    """The speaker cannot do what was asked; the message says what to change."""


class ConfigError(BgpdError, ValueError):
    """A speaker or neighbour configuration that cannot work (duplicate neighbour, bad
    address, a password on a kernel without TCP MD5)."""
