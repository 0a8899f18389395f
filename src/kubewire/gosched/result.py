"""What a replay reports: frozen views, cheap to build and to serialise."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple


class Decision(NamedTuple):
    """One Runnable -> Running decision: a GoStart on P ``p`` at ``ts``.

    ``predicted`` is the goroutine the model's rules chose for that P (-1: the model had
    nothing runnable for it), ``actual`` the one the trace started, ``rule`` the rule that
    chose (or, on a miss, the rule the model would have used).
    """

    ts: int
    p: int
    predicted: int
    actual: int
    rule: str
    explained: bool


@dataclass(frozen=True, slots=True)
class Miss:
    """A decision the model did not explain."""

    ts: int
    p: int
    predicted: int
    actual: int
    rule: str


def _frozen_map(d: Mapping[str, tuple[int, int]]) -> Mapping[str, tuple[int, int]]:
    return MappingProxyType(dict(sorted(d.items())))


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """The model's agreement with one trace.

    ``agreement`` is ``explained / decisions``; a trace without decisions scores 0.0 (there is
    nothing the model got right), not 1.0.
    """

    decisions: int
    explained: int
    agreement: float
    by_rule: Mapping[str, tuple[int, int]]
    misses: tuple[Miss, ...]
    events: int
    version: int = 0
    gomaxprocs: int = 0
    preemptions: int = 0
    preemptions_after_slice: int = 0
    notes: tuple[str, ...] = field(default=())
    # explained decisions the trace cannot settle, where the runtime's rules give several
    # equally possible goroutines and the one started is among them (a random steal victim,
    # puts racing for sched.lock, a steal stamped late): counted in ``explained`` too
    several_possible: int = 0
    # The number (1-based) of the first decision the model got wrong; None: none. The
    # decisions before it are the model predicting the schedule on its own, before any
    # resynchronisation: a rule broken on purpose cuts this run short even where the
    # resynchronised ``agreement`` only dips (each miss costs a decision or two).
    first_miss: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "decisions": self.decisions,
            "explained": self.explained,
            "agreement": self.agreement,
            "by_rule": {k: {"decisions": d, "explained": e} for k, (d, e) in self.by_rule.items()},
            "misses": [
                {"ts": m.ts, "p": m.p, "predicted": m.predicted, "actual": m.actual,
                 "rule": m.rule}
                for m in self.misses
            ],
            "events": self.events,
            "version": self.version,
            "gomaxprocs": self.gomaxprocs,
            "preemptions": self.preemptions,
            "preemptions_after_slice": self.preemptions_after_slice,
            "notes": list(self.notes),
            "several_possible": self.several_possible,
            "first_miss": self.first_miss,
        }


def make_result(
    *, decisions: int, explained: int, by_rule: Mapping[str, tuple[int, int]],
    misses: tuple[Miss, ...], events: int, version: int, gomaxprocs: int, preemptions: int,
    preemptions_after_slice: int, notes: tuple[str, ...], several_possible: int = 0,
    first_miss: int | None = None,
) -> ReplayResult:
    return ReplayResult(
        decisions=decisions,
        explained=explained,
        agreement=explained / decisions if decisions else 0.0,
        by_rule=_frozen_map(by_rule),
        misses=misses,
        events=events,
        version=version,
        gomaxprocs=gomaxprocs,
        preemptions=preemptions,
        preemptions_after_slice=preemptions_after_slice,
        notes=notes,
        several_possible=several_possible,
        first_miss=first_miss,
    )
