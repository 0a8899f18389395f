"""The gosched package's exceptions: one base, one class per failure."""

from __future__ import annotations


class GoSchedError(Exception):
    """Base class for everything the gosched package raises."""


class RulesError(GoSchedError, ValueError):
    """A ``Rules`` value the model cannot run with (a queue size of 0, a negative interval).

    The message names the field; pass a positive value, or leave the field at its default (the
    Go runtime's own constant).
    """
