"""Reachability matrices: from -> to for every ordered pair of pods, as upstream's e2e suite
prints them (rows are sources, columns destinations, ``.`` reachable, ``X`` blocked), and
their comparison (``.`` same, ``X`` different). For ``check --policy`` and lab tests.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from kubewire.policy.evaluate import allowed
from kubewire.policy.fake import cluster_verdict
from kubewire.policy.model import Ruleset
from kubewire.policy.views import NamespaceView, PodView, PolicyView

Matrix = Mapping[tuple[str, str], bool]


def oracle_matrix(pods: Sequence[PodView], protocol: str, port: int,
                  policies: Iterable[PolicyView], namespaces: Iterable[NamespaceView] = (),
                  ) -> dict[tuple[str, str], bool]:
    """What Kubernetes says, for every ordered pair of ``pods`` (keys ``ns/name``)."""
    pols, spaces = list(policies), list(namespaces)
    return {(a.key, b.key): allowed(a, b, protocol, port, pols, spaces).allowed
            for a in pods for b in pods}


def compiled_matrix(pods: Sequence[PodView], protocol: str, port: int,
                    rulesets: Mapping[str, Ruleset]) -> dict[tuple[str, str], bool]:
    """What the compiled node tables do (through the validating fake)."""
    return {(a.key, b.key): cluster_verdict(rulesets, a, b, protocol, port).verdict == "accept"
            for a in pods for b in pods}


def differences(expected: Matrix, observed: Matrix, ignore_loopback: bool = True
                ) -> list[tuple[str, str, bool, bool]]:
    """(from, to, expected, observed) where they differ; self-pairs are skipped by default
    (a pod reaching itself never leaves its namespace, and upstream ignores loopback)."""
    return [(a, b, want, observed.get((a, b), not want))
            for (a, b), want in sorted(expected.items())
            if not (ignore_loopback and a == b) and observed.get((a, b)) != want]


def render(matrix: Matrix, order: Sequence[str] | None = None) -> str:
    keys = list(order) if order is not None else sorted({k for pair in matrix for k in pair})
    lines = ["-\t" + "\t".join(keys)]
    for a in keys:
        cells = ["?" if (a, b) not in matrix else "." if matrix[a, b] else "X" for b in keys]
        lines.append(f"{a}\t" + "\t".join(cells))
    return "\n".join(lines) + "\n"


def render_comparison(expected: Matrix, observed: Matrix,
                      order: Sequence[str] | None = None) -> str:
    """Expected, observed, and which cells differ, one table after the other."""
    same = {k: observed.get(k) == v for k, v in expected.items()}
    return (f"expected:\n{render(expected, order)}\nobserved:\n{render(observed, order)}\n"
            f"comparison:\n{render(same, order)}")
