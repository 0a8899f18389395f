"""Netlink sockets bound to a namespace, and per-namespace sysctls."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from pyroute2 import IPRoute

from kubewire.kernel.netns import entered


@contextlib.contextmanager
def ipr_in(netns: Path | str) -> Iterator[IPRoute]:
    """An IPRoute whose socket lives in `netns` (opened there, used from anywhere)."""
    with entered(netns):
        ipr = IPRoute()
    try:
        yield ipr
    finally:
        ipr.close()


def set_sysctl(netns: Path | str, key: str, value: str) -> None:
    """Write a net.* sysctl of `netns` (procfs resolves net sysctls by the opener's netns)."""
    path = "/proc/sys/" + key.replace(".", "/")
    with entered(netns), open(path, "w") as f:
        f.write(value)


def get_sysctl(netns: Path | str, key: str) -> str:
    path = "/proc/sys/" + key.replace(".", "/")
    with entered(netns), open(path) as f:
        return f.read().strip()
