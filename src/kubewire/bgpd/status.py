"""What ``kubewire bgp peers`` and ``kubewire bgp routes`` show, as plain frozen data
(``to_dict()`` gives JSON-ready dicts)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from kubewire.bgp.attributes import AsPath
from kubewire.bgp.constants import SegmentType
from kubewire.bgp.path import Path


@dataclass(frozen=True, slots=True)
class PeerStatus:
    """One neighbour. ``uptime`` is seconds in Established (None when not Established);
    received counts Adj-RIB-In, accepted the paths that passed the loop checks and the
    import policy, advertised Adj-RIB-Out."""

    address: str
    asn: int
    state: str
    description: str
    router_id: str | None
    uptime: float | None
    prefixes_received: int
    prefixes_accepted: int
    prefixes_advertised: int
    updates_received: int
    updates_sent: int
    established_transitions: int
    hold_time: int | None
    keepalive_time: int | None
    last_error: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class PathStatus:
    """One path for a prefix. ``source`` is "local" or the neighbour's address; ``accepted``
    False means the path was received but rejected on import (AS loop, reflection loop or
    import policy) and took no part in the decision."""

    source: str
    source_as: int | None
    next_hop: str | None
    as_path: str
    origin: str
    med: int | None
    local_pref: int | None
    communities: tuple[str, ...]
    accepted: bool
    best: bool
    multipath: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class RouteStatus:
    """Every path for one prefix; ``reason`` is the decision step that chose the best one
    (a ``DecisionReason`` value), None when no path is usable; ``explanation`` the
    step-by-step table."""

    prefix: str
    paths: tuple[PathStatus, ...]
    reason: str | None
    explanation: str

    @property
    def best(self) -> PathStatus | None:
        return next((p for p in self.paths if p.best), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "prefix": self.prefix,
            "reason": self.reason,
            "explanation": self.explanation,
            "paths": [p.to_dict() for p in self.paths],
        }


def format_as_path(path: AsPath) -> str:
    parts: list[str] = []
    for seg in path.segments:
        asns = " ".join(str(a) for a in seg.asns)
        if seg.type == SegmentType.AS_SEQUENCE:
            parts.append(asns)
        elif seg.type == SegmentType.AS_SET:
            parts.append("{" + asns + "}")
        elif seg.type == SegmentType.AS_CONFED_SEQUENCE:
            parts.append("(" + asns + ")")
        else:
            parts.append("[" + asns + "]")
    return " ".join(p for p in parts if p)


def path_status(path: Path, *, accepted: bool, best: bool, multipath: bool) -> PathStatus:
    a = path.attrs
    return PathStatus(
        source="local" if path.peer is None else str(path.peer.address),
        source_as=None if path.peer is None else path.peer.asn,
        next_hop=None if a.next_hop is None else str(a.next_hop),
        as_path=format_as_path(a.as_path),
        origin=a.origin.name,
        med=a.med,
        local_pref=a.local_pref,
        communities=tuple(f"{c >> 16}:{c & 0xFFFF}" for c in a.communities),
        accepted=accepted,
        best=best,
        multipath=multipath,
    )
