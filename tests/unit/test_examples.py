"""Every example directory loads and validates as `kubewire up -f DIR` would read it."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubewire.cli.manifests import load_input

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# Examples applied on top of another one (`make demo` applies services/ to quickstart/'s lab).
APPLIED_ON = {"services": "quickstart"}


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.iterdir() if p.is_dir()))
def test_example_validates_without_warnings(example: str) -> None:
    base = [str(EXAMPLES / APPLIED_ON[example])] if example in APPLIED_ON else []
    loaded = load_input([*base, str(EXAMPLES / example)])
    assert loaded.objects, f"examples/{example} declares no objects"
    assert not loaded.warnings, loaded.warnings


def test_the_bgp_example_declares_what_its_tour_shows() -> None:
    loaded = load_input([str(EXAMPLES / "bgp")])
    assert loaded.cluster is not None
    assert loaded.cluster["spec"]["network"]["backend"] == "bgp"
    kinds = sorted(o["kind"] for o in loaded.objects)
    assert kinds.count("BGPPeer") == 2 and "BGPConfiguration" in kinds
