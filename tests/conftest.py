"""Shared test set-up: root tests are skipped (with the reason shown) when not root, and
the session checks at the end that no test leaked a namespace (and so no link: every link
the lab makes lives in one of its namespaces), a kubewire process or a lab state dir."""

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


def _our_processes() -> set[tuple[int, str]]:
    """kubewire daemons and pod servers (and anything left in CNI shims) by pid+cmdline."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(m in cmd for m in ("kubewire.lab.daemon", "kubewire.workload.server",
                                  "kubewire-bridge", "kubewire-ipam", "kubewire-loopback")):
            found.add((int(entry.name), cmd))
    return found


def _our_state_dirs() -> set[str]:
    root = Path(os.environ.get("KUBEWIRE_STATE_DIR", "/run/kubewire"))
    return {p.name for p in root.iterdir() if p.is_dir()} if root.is_dir() else set()


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
    before = (_our_namespaces(), _our_processes(), _our_state_dirs())
    yield
    leaked = _our_namespaces() - before[0]
    assert not leaked, f"tests leaked network namespaces: {sorted(leaked)}"
    procs = _our_processes() - before[1]
    assert not procs, f"tests leaked processes: {sorted(procs)}"
    dirs = _our_state_dirs() - before[2]
    assert not dirs, f"tests leaked lab state directories: {sorted(dirs)}"
