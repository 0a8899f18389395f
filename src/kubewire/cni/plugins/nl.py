"""Small helpers the plugins share around rtnl: namespaces, errors, MACs."""

from __future__ import annotations

import os

from kubewire.cni.plugins.rtnl import NetlinkError
from kubewire.cni.protocol import CniError, ErrorCode


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


def kernel_error(what: str, exc: BaseException) -> CniError:
    """A CniError for an unexpected kernel (or namespace) failure during `what`."""
    known = isinstance(exc, NetlinkError | OSError)
    reason = str(exc) if known else f"{type(exc).__name__}: {exc}"
    return CniError(ErrorCode.KERNEL, f"{what}: {reason}")


def random_mac() -> str:
    """A random unicast, locally administered MAC (what the kernel would pick)."""
    raw = bytearray(os.urandom(6))
    raw[0] = (raw[0] & 0xFE) | 0x02
    return ":".join(f"{b:02x}" for b in raw)
