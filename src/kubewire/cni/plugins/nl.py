"""rtnetlink helpers for the plugins (pyroute2, one socket per namespace per call).

A socket opened while the thread sits in a namespace stays bound to it, so a plugin
opens one IPRoute in the host namespace and one in the container namespace, leaves
both namespaces at once, and then talks to each through its socket. Nothing here
touches the namespace the calling thread lives in.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from kubewire.cni.protocol import CniError, ErrorCode
from kubewire.kernel.netns import NamespaceError, entered

IFF_UP = 0x1
IFF_PROMISC = 0x100
IFA_F_NODAD = 0x02
RT_SCOPE_LINK = 253

__all__ = [
    "IFA_F_NODAD",
    "IFF_PROMISC",
    "IFF_UP",
    "RT_SCOPE_LINK",
    "IPRoute",
    "NetlinkError",
    "get_link",
    "ignore_errno",
    "iproute_in",
    "kernel_error",
    "link_kind",
    "random_mac",
]


@contextlib.contextmanager
def iproute_in(netns: str) -> Iterator[IPRoute]:
    """An rtnetlink socket bound to `netns`; the calling thread is back home on entry."""
    with entered(netns):
        ipr = IPRoute()
    try:
        yield ipr
    finally:
        ipr.close()


def open_netns_fd(netns: str) -> int:
    """An fd for the container namespace; a missing namespace is CNI error 3."""
    try:
        return os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise CniError(
            ErrorCode.UNKNOWN_CONTAINER, f"network namespace {netns} does not exist"
        ) from None


def netns_exists(netns: str) -> bool:
    return bool(netns) and os.path.exists(netns)


def get_link(ipr: IPRoute, name: str) -> Any | None:
    """The RTM_NEWLINK message for `name`, or None when there is no such link."""
    try:
        return ipr.link("get", ifname=name)[0]
    except NetlinkError as exc:
        if exc.code == errno.ENODEV:
            return None
        raise


def link_kind(link: Any) -> str | None:
    kind = link.get(("IFLA_LINKINFO", "IFLA_INFO_KIND"))
    return kind if isinstance(kind, str) else None


@contextlib.contextmanager
def ignore_errno(*codes: int) -> Iterator[None]:
    try:
        yield
    except NetlinkError as exc:
        if exc.code not in codes:
            raise


def kernel_error(what: str, exc: BaseException) -> CniError:
    if isinstance(exc, NetlinkError):
        reason = os.strerror(exc.code) if exc.code else str(exc)
    elif isinstance(exc, NamespaceError | OSError):
        reason = str(exc)
    else:
        reason = f"{type(exc).__name__}: {exc}"
    return CniError(ErrorCode.KERNEL, f"{what}: {reason}")


def random_mac() -> str:
    """A random unicast, locally administered MAC (what the kernel would pick)."""
    raw = bytearray(os.urandom(6))
    raw[0] = (raw[0] & 0xFE) | 0x02
    return ":".join(f"{b:02x}" for b in raw)
