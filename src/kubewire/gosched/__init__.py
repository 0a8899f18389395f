"""A model of the Go scheduler, replayed against real Go execution traces. See README.md."""

from kubewire.gosched.errors import GoSchedError, RulesError
from kubewire.gosched.model import Replayer, replay
from kubewire.gosched.result import Decision, Miss, ReplayResult
from kubewire.gosched.rules import Rules

__all__ = [
    "Decision",
    "GoSchedError",
    "Miss",
    "ReplayResult",
    "Replayer",
    "Rules",
    "RulesError",
    "replay",
]
