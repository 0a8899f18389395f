"""The decision process: RFC 4271 9.1.2.2 plus the common vendor steps, as elimination.

Starting from every usable candidate, each step keeps only the candidates best by its
criterion; the step that leaves one candidate decided the route and is recorded as the
``DecisionReason``. Elimination over the whole set (rather than sorting by pairwise
comparison) is what RFC 4271 specifies, and it keeps MED, which only compares paths from the
same neighbour AS, deterministic whatever the input order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from ipaddress import IPv4Address

from kubewire.bgp.path import Path

MAX_MED = 0xFFFFFFFF


class DecisionReason(Enum):
    """Which step chose the best path, in the order the steps run."""

    ONLY_PATH = "only-path"
    NEXT_HOP_RESOLVABLE = "next-hop-resolvable"  # 9.1.2: unresolvable next hops are out
    WEIGHT = "weight"  # vendor: local, higher wins
    LOCAL_PREF = "local-pref"  # 9.1.1: higher wins
    LOCALLY_ORIGINATED = "locally-originated"  # vendor
    AS_PATH_LENGTH = "as-path-length"  # 9.1.2.2 a
    ORIGIN = "origin"  # 9.1.2.2 b: IGP < EGP < INCOMPLETE
    MED = "med"  # 9.1.2.2 c
    EBGP_OVER_IBGP = "ebgp-over-ibgp"  # 9.1.2.2 d
    IGP_COST = "igp-cost"  # 9.1.2.2 e
    OLDEST_EBGP = "oldest-ebgp"  # vendor, optional
    ROUTER_ID = "router-id"  # 9.1.2.2 f; ORIGINATOR_ID when present (RFC 4456 9)
    CLUSTER_LIST_LENGTH = "cluster-list-length"  # RFC 4456 9
    NEIGHBOR_ADDRESS = "neighbor-address"  # 9.1.2.2 g


@dataclass(frozen=True, slots=True)
class DecisionConfig:
    """Knobs of the decision process.

    ``med_missing_as_worst`` False treats a missing MED as 0 (RFC 4271 9.1.2.2 c, and the
    BIRD and FRR default); ``multipath`` is the most ECMP paths to use (1: off);
    ``as_path_relax`` lets paths with different AS_PATHs of equal length share ECMP.
    """

    router_id: IPv4Address
    local_as: int
    default_local_pref: int = 100
    always_compare_med: bool = False
    med_missing_as_worst: bool = False
    multipath: int = 1
    as_path_relax: bool = False
    prefer_oldest_ebgp: bool = False


@dataclass(frozen=True, slots=True)
class Step:
    """One step of the process: each remaining candidate's value, and who survived."""

    reason: DecisionReason
    values: tuple[tuple[int, str], ...]
    kept: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Decision:
    best: Path
    reason: DecisionReason
    multipath: tuple[Path, ...]
    candidates: tuple[Path, ...]
    steps: tuple[Step, ...]

    def explain(self) -> str:
        lines = [f"best: {self.best.describe()} ({self.reason.value})"]
        for i, p in enumerate(self.candidates):
            lines.append(f"  [{i}] {p.describe()}")
        for st in self.steps:
            vals = ", ".join(f"[{i}]={v}" for i, v in st.values)
            kept = ",".join(str(i) for i in st.kept)
            lines.append(f"  {st.reason.value}: {vals} -> keep {kept}")
        if len(self.multipath) > 1:
            lines.append(f"  multipath: {len(self.multipath)} paths")
        return "\n".join(lines)


def neighbor_as(path: Path, local_as: int) -> int:
    """RFC 4271 9.1.2.2 c: the first AS of AS_PATH; a path without one is from our own AS."""
    first = path.attrs.as_path.first_as()
    return local_as if first is None else first


def _canonical(p: Path) -> tuple[int, int, int, int]:
    if p.peer is None:
        return (0, 0, 0, p.received)
    return (1, p.peer.address.version, int(p.peer.address), p.received)


def decide(paths: Iterable[Path], config: DecisionConfig) -> Decision | None:
    """Choose the best path (and the ECMP set); None when no candidate is usable."""
    cands = tuple(paths)
    if not cands:
        return None
    if len(cands) > 1:
        cands = tuple(sorted(cands, key=_canonical))
    steps: list[Step] = []
    if len(cands) == 1:
        if cands[0].igp_cost is None:
            return None
        return Decision(cands[0], DecisionReason.ONLY_PATH, cands, cands, ())
    alive = [i for i, p in enumerate(cands) if p.igp_cost is not None]
    if not alive:
        return None
    if len(alive) < len(cands):
        steps.append(
            Step(
                DecisionReason.NEXT_HOP_RESOLVABLE,
                tuple(
                    (i, "yes" if cands[i].igp_cost is not None else "no") for i in range(len(cands))
                ),
                tuple(alive),
            )
        )
        if len(alive) == 1:
            return _done(cands, alive, DecisionReason.NEXT_HOP_RESOLVABLE, steps, alive, config)

    missing_med = MAX_MED if config.med_missing_as_worst else 0

    def med(p: Path) -> int:
        return missing_med if p.attrs.med is None else p.attrs.med

    def router_id(p: Path) -> int:
        if p.attrs.originator_id is not None:
            return int(p.attrs.originator_id)
        return int(p.peer.router_id if p.peer else config.router_id)

    order: list[tuple[DecisionReason, Callable[[Path], int], Callable[[Path], str]]] = [
        (DecisionReason.WEIGHT, lambda p: -p.weight, lambda p: str(p.weight)),
        (
            DecisionReason.LOCAL_PREF,
            lambda p: (
                -(config.default_local_pref if p.attrs.local_pref is None else p.attrs.local_pref)
            ),
            lambda p: str(
                p.attrs.local_pref
                if p.attrs.local_pref is not None
                else f"{config.default_local_pref} (default)"
            ),
        ),
        (
            DecisionReason.LOCALLY_ORIGINATED,
            lambda p: 0 if p.local else 1,
            lambda p: "yes" if p.local else "no",
        ),
        (
            DecisionReason.AS_PATH_LENGTH,
            lambda p: p.attrs.as_path.path_length(),
            lambda p: str(p.attrs.as_path.path_length()),
        ),
        (DecisionReason.ORIGIN, lambda p: int(p.attrs.origin), lambda p: p.attrs.origin.name),
        (DecisionReason.MED, med, lambda p: str(med(p))),  # grouped below
        (
            DecisionReason.EBGP_OVER_IBGP,
            lambda p: 0 if p.ebgp else 1,
            lambda p: "eBGP" if p.ebgp else ("local" if p.local else "iBGP"),
        ),
        (DecisionReason.IGP_COST, lambda p: p.igp_cost or 0, lambda p: str(p.igp_cost)),
        (DecisionReason.OLDEST_EBGP, lambda p: p.received, lambda p: f"#{p.received}"),
        (DecisionReason.ROUTER_ID, router_id, lambda p: str(IPv4Address(router_id(p)))),
        (
            DecisionReason.CLUSTER_LIST_LENGTH,
            lambda p: len(p.attrs.cluster_list),
            lambda p: str(len(p.attrs.cluster_list)),
        ),
        (
            DecisionReason.NEIGHBOR_ADDRESS,
            lambda p: _canonical(p)[2],
            lambda p: str(p.peer.address) if p.peer else "local",
        ),
    ]
    ecmp = alive
    for reason, key, show in order:
        if reason == DecisionReason.OLDEST_EBGP and not (
            config.prefer_oldest_ebgp and all(cands[i].ebgp for i in alive)
        ):
            continue
        if reason == DecisionReason.MED:
            groups: dict[int, int] = {}
            for i in alive:
                g = 0 if config.always_compare_med else neighbor_as(cands[i], config.local_as)
                groups[g] = min(groups.get(g, MAX_MED + 1), med(cands[i]))
            kept = [
                i
                for i in alive
                if med(cands[i])
                == groups[
                    0 if config.always_compare_med else neighbor_as(cands[i], config.local_as)
                ]
            ]
            values = tuple(
                (i, f"{med(cands[i])} (AS {neighbor_as(cands[i], config.local_as)})") for i in alive
            )
        else:
            best = min(key(cands[i]) for i in alive)
            kept = [i for i in alive if key(cands[i]) == best]
            values = tuple((i, show(cands[i])) for i in alive)
        steps.append(Step(reason, values, tuple(kept)))
        alive = kept
        if reason == DecisionReason.IGP_COST:
            ecmp = list(alive)
        if len(alive) == 1:
            if reason.value in _BEFORE_ECMP:
                ecmp = alive
            return _done(cands, alive, reason, steps, ecmp, config)
    return _done(cands, alive[:1], DecisionReason.NEIGHBOR_ADDRESS, steps, ecmp, config)


_BEFORE_ECMP = {r.value for r in DecisionReason} - {
    DecisionReason.OLDEST_EBGP.value,
    DecisionReason.ROUTER_ID.value,
    DecisionReason.CLUSTER_LIST_LENGTH.value,
    DecisionReason.NEIGHBOR_ADDRESS.value,
}


def _done(
    cands: tuple[Path, ...],
    alive: list[int],
    reason: DecisionReason,
    steps: list[Step],
    ecmp: list[int],
    config: DecisionConfig,
) -> Decision:
    best = cands[alive[0]]
    multi = [best]
    if config.multipath > 1:
        for i in ecmp:
            p = cands[i]
            if p is best or len(multi) >= config.multipath:
                continue
            if config.as_path_relax or p.attrs.as_path == best.attrs.as_path:
                multi.append(p)
    return Decision(best, reason, tuple(multi), cands, tuple(steps))
