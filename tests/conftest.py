"""Shared test set-up: root tests are skipped (with the reason shown) when not root, and
the session checks at the end that no test leaked a namespace, link or process."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

LAB_PREFIXES = ("kw-", "kwtest-")


def _our_namespaces() -> set[str]:
    d = Path("/run/netns")
    if not d.is_dir():
        return set()
    return {p.name for p in d.iterdir() if p.name.startswith(LAB_PREFIXES)}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root_dir = Path(__file__).parent / "root"
    for item in items:
        if Path(str(item.fspath)).is_relative_to(root_dir):
            item.add_marker(pytest.mark.root)
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="needs root: creates real network namespaces")
        for item in items:
            if "root" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def no_leaks() -> Iterator[None]:
    before = _our_namespaces()
    yield
    leaked = _our_namespaces() - before
    assert not leaked, f"tests leaked network namespaces: {sorted(leaked)}"
