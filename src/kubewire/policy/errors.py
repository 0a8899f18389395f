"""The policy package's exceptions: one base, a class per failure."""

from __future__ import annotations


class PolicyError(Exception):
    """Base of everything kubewire.policy raises."""


class PolicyInputError(PolicyError, ValueError):
    """An object that cannot be turned into a view (the message names the object and field)."""


class RulesetError(PolicyError):
    """A compiled ruleset the kernel would refuse (raised by the validating fake)."""
