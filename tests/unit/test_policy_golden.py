"""Compiled policy rulesets of named scenarios against tests/golden/policy/*.nft.

KUBEWIRE_REGEN_GOLDEN=1 rewrites the files; review the diff before committing it.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest

from kubewire.policy.compiler import compile_policy
from kubewire.policy.fake import check_ruleset
from kubewire.policy.scenarios import NODE, SCENARIOS

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "policy"


def normalise(text: str) -> str:
    """Trailing blanks and blank lines do not matter; everything else does."""
    lines = [line.rstrip() for line in text.strip().splitlines()]
    return "\n".join(line for line in lines if line) + "\n"


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_golden(name: str) -> None:
    policies, pods, namespaces = SCENARIOS[name]()
    ruleset = compile_policy(policies, pods, namespaces, NODE)
    assert check_ruleset(ruleset) == []
    assert ruleset.warnings == ()
    actual = normalise(ruleset.render())
    path = GOLDEN / f"{name}.nft"
    if os.environ.get("KUBEWIRE_REGEN_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual)
    assert path.exists(), f"{path} is missing: run with KUBEWIRE_REGEN_GOLDEN=1 to create it"
    expected = normalise(path.read_text())
    if actual != expected:
        diff = "".join(difflib.unified_diff(
            expected.splitlines(keepends=True), actual.splitlines(keepends=True),
            fromfile=f"golden/policy/{name}.nft", tofile="compiled"))
        pytest.fail(f"compiled ruleset differs from {path.name} (KUBEWIRE_REGEN_GOLDEN=1 "
                    f"regenerates it):\n{diff}")


def test_every_golden_file_has_a_scenario() -> None:
    stray = sorted(p.stem for p in GOLDEN.glob("*.nft"))
    assert set(stray) <= set(SCENARIOS), f"golden files without a scenario: {stray}"


def test_compiling_is_deterministic() -> None:
    policies, pods, namespaces = SCENARIOS["mixed"]()
    first = compile_policy(policies, pods, namespaces, NODE).render()
    again = compile_policy(tuple(reversed(policies)), tuple(reversed(pods)),
                           tuple(reversed(namespaces)), NODE).render()
    assert first == again
